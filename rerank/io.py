"""Atomic file writes (a reader never sees a half-written file, a crash never leaves one) that follow the user's umask,
and file locks that wait a bounded time."""
from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import re
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator


def _umask() -> int:
    # Linux shows the umask in /proc; os.umask can only read it by setting it, which
    # would race with other threads creating files.
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode a plain ``open(path, "w")`` would give: ``0o666`` less the umask."""
    return 0o666 & ~_umask()


def dir_mode() -> int:
    return 0o777 & ~_umask()


def make_temp_dir(parent: str | os.PathLike, prefix: str) -> Path:
    """``tempfile.mkdtemp`` in ``parent``, with the umask's mode instead of mkdtemp's 0700."""
    Path(parent).mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    os.chmod(path, dir_mode())
    return path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` on success.

    The temporary file lives in the same directory so that the final
    ``os.replace`` is a rename within one file system, hence atomic. It gets the
    mode of an ordinary new file (mkstemp's 0600 would hide tables and models
    from everyone else on a shared disk). Its data is on disk before the rename
    (else a crash can leave the final name pointing at an empty file), and the
    directory after it (else a crash can undo the rename).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, file_mode())
        fsync_file(tmp_path)
        os.replace(tmp_path, path)
        fsync_dir(path.parent)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def fsync_file(path: str | os.PathLike) -> None:
    """Flush a file's data to disk (whoever wrote it, through whichever descriptor)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: str | os.PathLike) -> None:
    """Flush a directory's entries to disk: a rename, creation or removal in it survives a crash only then."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    except OSError as err:  # some file systems cannot sync a directory; nothing more can be done there
        if err.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def append_line(path: str | os.PathLike, line: str) -> None:
    """Append one line and flush it to disk (an append-only log; the caller holds a lock)."""
    if "\n" in line:
        raise ValueError("append_line writes one line")
    with open(path, "a", encoding="utf-8") as f:
        f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _json_default(obj: Any) -> Any:
    # numpy scalars and arrays appear in metrics; JSON has no type for them.
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


#: how long :func:`file_lock` waits by default (seconds); ``RERANK_LOCK_TIMEOUT`` sets it for a whole run
LOCK_TIMEOUT = 600.0


class LockTimeout(TimeoutError):
    """A lock not acquired in time; the message names the holder (host, PID, since when)."""


def lock_timeout() -> float:
    """The default wait of :func:`file_lock`: ``RERANK_LOCK_TIMEOUT`` if set, else :data:`LOCK_TIMEOUT`."""
    value = os.environ.get("RERANK_LOCK_TIMEOUT")
    try:
        return float(value) if value else LOCK_TIMEOUT
    except ValueError:
        raise ValueError(f"RERANK_LOCK_TIMEOUT={value!r}: not a number of seconds") from None


@contextlib.contextmanager
def file_lock(path: str | os.PathLike, timeout: float | None = None) -> Iterator[None]:
    """An exclusive ``flock`` on ``path`` (created if needed), held for the ``with`` block.

    Waits at most ``timeout`` seconds (``None``: :func:`lock_timeout`, 600 s unless set;
    ``math.inf``: for ever), then raises :class:`LockTimeout` naming the holder: the holder
    writes its host, PID and the time into the file while it holds the lock.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    limit = lock_timeout() if timeout is None else float(timeout)
    with open(path, "a+") as f:
        _acquire(f, path, limit)
        try:
            _write_holder(f)
            yield
        finally:
            with contextlib.suppress(OSError):
                f.truncate(0)  # (held by nobody: a waiter that reads it now must not blame this process)
            fcntl.flock(f, fcntl.LOCK_UN)


def _acquire(f, path: Path, limit: float) -> None:
    # flock cannot wait with a timeout; polling (at most every 0.1 s) can, from any thread
    deadline, delay = time.monotonic() + limit, 0.005
    while True:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            pass
        left = deadline - time.monotonic()
        if left <= 0:
            raise LockTimeout(f"{path}: still locked after {limit:g} s, by {_holder(path)}. A lock is released when its "
                              "holder exits; to wait longer, set RERANK_LOCK_TIMEOUT (seconds)")
        time.sleep(min(delay, left))
        delay = min(2 * delay, 0.1)


def _write_holder(f) -> None:
    f.seek(0)
    f.truncate(0)
    f.write(json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "since": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                        "command": " ".join(sys.argv[:3])[:200]}) + "\n")
    f.flush()


def _holder(path: Path) -> str:
    """Who holds a lock, from what it wrote in the file."""
    try:
        info = json.loads(path.read_text() or "null")
    except (OSError, ValueError):
        info = None
    if not isinstance(info, dict):
        return "a process that did not say who it is (an older rerank, or one that is just starting)"
    return (f"pid {info.get('pid')} on host {info.get('host')} since {info.get('since')}"
            + (f" ({info['command']})" if info.get("command") else ""))


def host_name() -> str:
    """This machine's name, safe in a file name (it tags staging folders: whose are they?)."""
    return re.sub(r"[^A-Za-z0-9.]", "_", socket.gethostname()) or "host"


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError as err:
        return err.errno == errno.EPERM
    return True
