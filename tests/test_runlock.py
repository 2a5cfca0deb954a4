"""The run-folder lock: one holder at a time, and a dead holder does not keep it."""

import json
import socket
import subprocess
import sys

import pytest

from dgm_cli.errors import DgmError
from dgm_cli.runlock import LOCK_FILE, run_lock


def test_the_lock_is_held_inside_and_released_after(tmp_path):
    with run_lock(tmp_path):
        holder = json.loads((tmp_path / LOCK_FILE).read_text())
        assert holder["host"] == socket.gethostname()
        with pytest.raises(DgmError, match="in use by another training"):
            with run_lock(tmp_path):
                pass
        assert (tmp_path / LOCK_FILE).exists()  # the refused attempt did not remove the holder's lock
    assert not (tmp_path / LOCK_FILE).exists()


def test_a_lock_of_a_live_process_is_respected_and_of_a_dead_one_taken_over(tmp_path):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock = tmp_path / LOCK_FILE
        lock.write_text(json.dumps({"pid": sleeper.pid, "host": socket.gethostname(), "started": "then"}))
        with pytest.raises(DgmError, match=f"process {sleeper.pid}"):
            with run_lock(tmp_path):
                pass
    finally:
        sleeper.kill()
        sleeper.wait()
    with run_lock(tmp_path):  # the holder is dead now
        assert json.loads(lock.read_text())["pid"] != sleeper.pid
    assert not lock.exists()


def test_a_lock_from_another_host_is_not_guessed_at(tmp_path):
    (tmp_path / LOCK_FILE).write_text(json.dumps({"pid": 1, "host": "elsewhere", "started": "then"}))
    with pytest.raises(DgmError, match="on elsewhere"):
        with run_lock(tmp_path):
            pass


def test_an_unreadable_old_lock_is_stale(tmp_path):
    import os

    lock = tmp_path / LOCK_FILE
    lock.write_text("garbage")
    os.utime(lock, (0, 0))
    with run_lock(tmp_path):
        pass
    assert not lock.exists()
