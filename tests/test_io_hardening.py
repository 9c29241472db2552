"""rerank.io (issue 19): atomic writes reach the disk before and after their rename; locks wait a bounded time."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import REPO
from rerank import io


def _traced(monkeypatch) -> list[tuple]:
    """Record every fsync (with the path of its descriptor) and every rename, in order."""
    events: list[tuple] = []
    fsync, replace = os.fsync, os.replace

    def traced_fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        return fsync(fd)

    def traced_replace(src, dst, *args, **kwargs):
        events.append(("replace", str(src), str(dst)))
        return replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "fsync", traced_fsync)
    monkeypatch.setattr(os, "replace", traced_replace)
    return events


@pytest.mark.parametrize("write", [lambda p: io.write_json(p, {"a": 1}), lambda p: io.write_text(p, "x"),
                                   lambda p: _write_through_atomic_path(p)], ids=["write_json", "write_text", "atomic_path"])
def test_an_atomic_write_is_on_disk_before_its_rename_and_the_rename_after(tmp_path, monkeypatch, write):
    target = tmp_path / "sub" / "file.json"
    events = _traced(monkeypatch)
    write(target)
    renames = [i for i, e in enumerate(events) if e[0] == "replace" and e[2] == str(target)]
    assert len(renames) == 1, events
    r = renames[0]
    tmp = events[r][1]
    assert ("fsync", tmp) in events[:r], f"the file's data was not synced before its rename: {events}"
    assert ("fsync", str(target.parent)) in events[r + 1:], f"the directory was not synced after the rename: {events}"
    assert target.exists() and not Path(tmp).exists()


def _write_through_atomic_path(path: Path) -> None:
    with io.atomic_path(path) as tmp, open(tmp, "w") as f:
        f.write("written by a caller, through its own descriptor")


def test_a_failed_write_leaves_neither_file_nor_temporary(tmp_path):
    target = tmp_path / "file.txt"
    with pytest.raises(RuntimeError):
        with io.atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("disk full")
    assert list(tmp_path.iterdir()) == []


HOLD = """
import sys, time
from rerank.io import file_lock
with file_lock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(60)
"""


def test_a_lock_wait_times_out_naming_the_holder(tmp_path):
    lock = tmp_path / "registry" / ".lock"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(lock)], stdout=subprocess.PIPE, text=True, cwd=REPO,
                              env={**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"})
    try:
        assert holder.stdout.readline().strip() == "held"
        t0 = time.monotonic()
        with pytest.raises(io.LockTimeout) as err:
            with io.file_lock(lock, timeout=0.5):
                pass
        waited = time.monotonic() - t0
        msg = str(err.value)
        assert str(lock) in msg and f"pid {holder.pid}" in msg and socket.gethostname() in msg and "since 20" in msg, msg
        assert 0.5 <= waited < 10, waited
        assert isinstance(err.value, TimeoutError)
    finally:
        holder.kill()
        holder.wait()
    # the holder's death releases the lock: the next one takes it at once
    with io.file_lock(lock, timeout=5):
        assert f'"pid": {os.getpid()}' in lock.read_text()
    assert lock.read_text() == ""  # released: nobody named as the holder any more


def test_the_default_wait_is_600_s_and_settable(tmp_path, monkeypatch):
    lock = tmp_path / ".lock"
    monkeypatch.delenv("RERANK_LOCK_TIMEOUT", raising=False)
    assert io.lock_timeout() == 600.0
    monkeypatch.setenv("RERANK_LOCK_TIMEOUT", "0.2")
    with io.file_lock(lock):  # positional, as every caller uses it
        waiter: list = []

        def wait() -> None:
            try:
                with io.file_lock(lock):
                    waiter.append("acquired")
            except io.LockTimeout as err:
                waiter.append(err)

        t = threading.Thread(target=wait)
        t.start()
        t.join(timeout=10)
        assert len(waiter) == 1 and isinstance(waiter[0], io.LockTimeout) and f"pid {os.getpid()}" in str(waiter[0])
    with io.file_lock(lock):  # released: taken at once
        pass


def test_a_waiter_gets_the_lock_when_it_is_released_within_its_timeout(tmp_path):
    lock = tmp_path / ".lock"
    order: list[str] = []
    with io.file_lock(lock):
        def wait() -> None:
            with io.file_lock(lock, timeout=10):
                order.append("waiter")

        t = threading.Thread(target=wait)
        t.start()
        time.sleep(0.3)
        order.append("holder done")
    t.join(timeout=10)
    assert order == ["holder done", "waiter"]
