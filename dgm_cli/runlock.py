"""One training per run folder: a lock file that a dead process does not hold forever.

`train.lock` in the run folder records the holder's host and process id. It
is created with O_EXCL, so of two trainings started together exactly one gets
it; the other is refused. A lock left by a process that no longer exists on
this host (killed with SIGKILL, a power cut) is stale and is taken over.
"""

import json
import os
import socket
import time
from contextlib import contextmanager
from pathlib import Path

from dgm_cli.errors import DgmError

LOCK_FILE = "train.lock"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    return True


def _holder(path: Path) -> dict | None:
    try:
        holder = json.loads(path.read_text())
        return holder if isinstance(holder, dict) and isinstance(holder.get("pid"), int) else None
    except (OSError, ValueError):
        return None


@contextmanager
def run_lock(folder: Path):
    path = Path(folder) / LOCK_FILE
    me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
    for _ in range(3):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _holder(path)
            if holder is not None and (holder.get("host") != me["host"] or _alive(holder["pid"])):
                raise DgmError(
                    f"{folder} is in use by another training (process {holder['pid']} on {holder.get('host')}, "
                    f"started {holder.get('started')}); wait for it or choose another --out"
                ) from None
            if holder is None and time.time() - path.stat().st_mtime < 5:
                time.sleep(0.2)  # a lock being written this instant: look again
                continue
            path.unlink(missing_ok=True)  # stale: its process is gone
            continue
        with os.fdopen(fd, "w") as handle:
            handle.write(json.dumps(me))
        break
    else:
        raise DgmError(f"could not take the lock {path}; remove it if no training is using {folder}")
    try:
        yield
    finally:
        if (_holder(path) or {}).get("pid") == me["pid"]:
            path.unlink(missing_ok=True)


def live_holder(folder: Path) -> dict | None:
    """The training that holds `folder`'s lock now ({"pid", "host", "started"}), or None when none does.

    A lock of another host is taken as held: its process cannot be looked at from here.
    """
    holder = _holder(Path(folder) / LOCK_FILE)
    if holder is None:
        return None
    return holder if holder.get("host") != socket.gethostname() or _alive(holder["pid"]) else None
