"""Ctrl-C and SIGTERM during training: finish the step, save, stop; a second signal stops at once."""

import signal
import threading
import time

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class GracefulInterrupt:
    """While active, the first SIGINT or SIGTERM only sets `requested` (the signal's name).

    The training loop looks at it after every step, writes a resumable state
    and raises Interrupted. A second signal raises KeyboardInterrupt where the
    program is, for a user who will not wait; the files on disk are still
    whole, because every write is atomic. A signal within `duplicate_window`
    seconds of the first counts as the same request (a launcher such as
    torchrun may pass on a Ctrl-C that the terminal delivered already).
    """

    def __init__(self, duplicate_window: float = 0.0):
        self.requested: str | None = None
        self.duplicate_window = duplicate_window
        self._first_at = 0.0
        self._previous = {}

    def _handle(self, signum, frame):
        if self.requested is not None:
            if time.monotonic() - self._first_at < self.duplicate_window:
                return
            raise KeyboardInterrupt
        self.requested = signal.Signals(signum).name
        self._first_at = time.monotonic()

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():  # handlers can only be set there
            self._previous = {sig: signal.signal(sig, self._handle) for sig in SIGNALS}
        return self

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        return False
