"""Atomic file writes: a file the tool writes is either the old version or the new one, never half of each.

Everything is written to a temporary file in the destination folder (so the
final rename stays on one file system), flushed to disk, then renamed over the
target with os.replace, which POSIX and Windows both make atomic.
"""

import errno
import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from dgm_cli.errors import DgmError


def ensure_writable_dir(folder: Path) -> Path:
    """Create `folder` if needed and prove a file can be written there, before any long work starts."""
    folder = Path(folder)
    blocking = next((above for above in (folder, *folder.parents) if above.exists() and not above.is_dir()), None)
    if blocking is not None:
        raise DgmError(f"cannot write to {folder}: {blocking} is a file, not a folder; choose another path")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".dgm-probe-"):
            pass
    except OSError as error:
        raise DgmError(f"cannot write to {folder}: {error.strerror or error}; choose a writable folder") from None
    return folder


@contextmanager
def atomic_path(path: Path):
    """Yield a temporary path next to `path`; on success it replaces `path`, on failure it is removed."""
    path = Path(path)
    if path.is_dir():
        raise DgmError(f"cannot write {path}: it is a folder; name a file")
    ensure_writable_dir(path.parent)
    # Keep the real suffix last so writers that pick a format by extension (PIL) still can.
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}")
    os.close(fd)
    tmp = Path(tmp_name)
    # mkstemp makes the file private (0600); give it the mode any new file gets here (0666 less the umask),
    # after the writer is done: a writer that replaces the file (safetensors does) would leave it 0600 again.
    umask = os.umask(0)
    os.umask(umask)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~umask)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except Exception as error:  # a full disk or a vanished folder: the old file is still intact
        tmp.unlink(missing_ok=True)
        code = os_error_code(error)
        if code is None:
            raise
        raise DgmError(
            f"cannot write {path}: {why_not_written(code, error, path.parent)}; the previous version is untouched"
        ) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def os_error_code(error: BaseException) -> int | None:
    """The operating system's error number behind a failed write: an OSError's, or the one a writer written in
    another language reports in its text (safetensors: "Os { code: 28, ... }"); None for any other failure."""
    if isinstance(error, OSError):
        return error.errno if error.errno is not None else -1
    found = re.search(r"(?:code: |os error )(\d+)", str(error))
    return int(found.group(1)) if found else None


def why_not_written(code: int, error: BaseException, folder: Path) -> str:
    """The reason in words; for a full disk, how much space is left where the file goes."""
    if code == errno.ENOSPC:
        try:
            free = f"{shutil.disk_usage(folder).free / 1e6:,.1f} MB free"
        except OSError:
            free = "free space unknown"
        return f"no space left on the disk of {folder} ({free}); free some space, then run the same command again"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return os.strerror(code) if code > 0 else str(error)


# The names atomic_path gives its temporaries: "." + stem + "." + mkstemp's 8 random characters + ".tmp" + suffix.
TEMPORARY_NAME = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp(\.[A-Za-z0-9]+)?$")


def remove_stale_temporaries(folder: Path, subfolders: tuple[str, ...] = ()) -> list[Path]:
    """Delete the temporary files a killed writer left in `folder` and the named subfolders (SIGKILL runs no cleanup).

    Only for a folder no one else is writing to (the trainer holds the run's lock). Only names of
    atomic_path's pattern are touched, never a real file: a temporary only replaces its target by rename.
    """
    folders = [Path(folder)] + [Path(folder) / name for name in subfolders]
    stale = [
        path
        for where in folders
        if where.is_dir()
        for path in where.iterdir()
        if path.is_file() and TEMPORARY_NAME.match(path.name)
    ]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
