"""One writer per folder, no half-written files, no orphan workers: the workbook's file-system safety.

- `FolderLock(folder, what)`: an output folder (the runner's out_dir, a training run_dir) has one writer.
  The lock is an advisory `flock` on `<folder>/.facelift.lock`, a file that holds the holder's PID. The
  kernel drops the flock when the holder dies (even by kill -9), so a second writer fails at once with
  `FolderLockedError` naming the folder and the live PID, and a lock file left by a dead process is
  stale: the next writer takes it over and says so. Linux/macOS (fcntl); local file systems.
- `atomic_write_bytes(path, data)`: write beside the target, then rename; readers never see half a file,
  a failure (disk full) leaves the old file whole and names the file.
- `die_with_parent()`: a torchrun worker dies with its launcher (Linux prctl PR_SET_PDEATHSIG), so killing
  the launcher leaves no orphan workers training on.

Dependencies: the standard library only (the runner imports this without torch).
"""
from __future__ import annotations

import errno
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

LOCK_NAME = ".facelift.lock"
_UMASK = os.umask(0o022)  # read once at import (os.umask can only be read by setting it) ...
os.umask(_UMASK)  # ... and put back at once


class FolderLockedError(RuntimeError):
    """Another live process writes into the folder; the message names the folder and its PID."""


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write `data` to a unique temp file beside `path`, then rename over `path` (no fsync: this guards against
    crashes and full disks, not power loss).

    Readers see the old file or the new one, never half of one; two writers never share a temp name.
    An OSError (disk full, read-only folder) leaves the old file untouched and is re-raised with the
    target's path in the message.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise type(e)(e.errno, f"cannot write {path}: {e.strerror or e}; {_os_error_hint(e)}") from e
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # the mode a plain open() would give, not mkstemp's 0600
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise type(e)(e.errno, f"cannot write {path}: {e.strerror or e}; the previous file (if any) is "
                               f"unchanged; {_os_error_hint(e)}") from e
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _os_error_hint(e: OSError) -> str:
    """What to do about a failed write, by errno."""
    if e.errno == errno.ENOSPC:
        return "the disk is full: free space (or choose another folder) and run again"
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "the folder is not writable: fix its permissions or choose another folder"
    return "check the folder and run again"


def os_error_hint(e: BaseException) -> str:
    """Public form of the errno hint, for callers that wrap other writers (torch.save)."""
    return _os_error_hint(e) if isinstance(e, OSError) else "check the folder and run again"


# --- folder locks ---------------------------------------------------------------------------------------
def pid_alive(pid: int) -> bool:
    """Whether a process with this PID exists (on this machine)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class FolderLock:
    """`with FolderLock(folder, "GS-LRM training"):` -- exclusive writer of `folder` for the block.

    Acquiring creates the folder if needed. A live holder -> `FolderLockedError` at once (no waiting).
    A lock file naming a process that has died -> taken over, with a message on stderr naming that PID
    (`.stale_pid` keeps it for the caller). Read-only or unwritable folder -> PermissionError/OSError
    naming the folder and what to do.
    """

    def __init__(self, folder: str | Path, what: str = "a workbook run") -> None:
        self.folder, self.what = Path(folder), what
        self.path = self.folder / LOCK_NAME
        self.stale_pid: int | None = None  # PID of a dead earlier holder whose lock was taken over
        self._fd: int | None = None

    def acquire(self) -> "FolderLock":
        import fcntl

        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise type(e)(e.errno, f"cannot use {self.folder} as the output folder of {self.what}: "
                                   f"{e.strerror or e}; {_os_error_hint(e)}") from e
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = _read_holder(fd)
            os.close(fd)
            if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise
            who = (f"process {holder.get('pid')} ({holder.get('what', 'a workbook run')}, started "
                   f"{holder.get('started', '?')})") if holder.get("pid") else "another process"
            raise FolderLockedError(
                f"{self.folder} is in use by {who}; two writers into one folder would overwrite each other's "
                f"results. Wait for it to finish, stop it (kill {holder.get('pid', '<pid>')}), or use another "
                "folder.") from None
        previous = _read_holder(fd)
        if previous.get("pid") and int(previous["pid"]) != os.getpid():
            self.stale_pid = int(previous["pid"])
            print(f"note: {self.folder}: the previous {previous.get('what', 'writer')} (process {self.stale_pid}, "
                  f"started {previous.get('started', '?')}) died without releasing its lock; taking it over",
                  file=sys.stderr)
        record = json.dumps({"pid": os.getpid(), "what": self.what,
                             "started": time.strftime("%Y-%m-%d %H:%M:%S")}).encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, record, 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        import fcntl

        try:
            os.ftruncate(self._fd, 0)  # empty = released cleanly (a PID left behind = its holder died)
        except OSError:
            pass
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> "FolderLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _read_holder(fd: int) -> dict:
    try:
        raw = os.pread(fd, 4096, 0)
        return json.loads(raw) if raw.strip() else {}
    except (OSError, ValueError):
        return {}


# --- launched workers ------------------------------------------------------------------------------------
def die_with_parent(sig: int = signal.SIGTERM) -> bool:
    """Ask the kernel to send `sig` to this process when its parent dies (Linux prctl PR_SET_PDEATHSIG).

    For torchrun workers: killing the launcher (even with kill -9) then stops its workers instead of
    leaving them training as orphans. If the parent died before the call, exits at once. Returns whether
    the request was made (False off Linux).
    """
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    parent = os.getppid()
    libc = ctypes.CDLL(None, use_errno=True)
    PR_SET_PDEATHSIG = 1
    if libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
        return False
    if parent == 1 or not pid_alive(parent):  # orphaned before the request took effect
        os.kill(os.getpid(), sig)
    return True


def launched_worker() -> bool:
    """Whether this process is a worker started by torchrun / torch.distributed (it sets TORCHELASTIC_RUN_ID)."""
    return "TORCHELASTIC_RUN_ID" in os.environ or "LOCAL_RANK" in os.environ
