"""The service as a child process on a free local port (tests and the load benchmark start and stop it)."""
from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator, Sequence

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _healthy(port: int) -> bool:
    with contextlib.suppress(OSError):
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(b"GET /health HTTP/1.1\r\nHost: local\r\nConnection: close\r\n\r\n")
            return s.recv(64).startswith(b"HTTP/1.1 200")
    return False


@contextlib.contextmanager
def running_service(overrides: Sequence[str], log: Path, timeout: float = 90.0, env: dict | None = None
                    ) -> Iterator[tuple[int, subprocess.Popen, list[str]]]:
    """``scripts/serve.py`` on 127.0.0.1 and a free port until the block ends; yields (port, process, command)."""
    port = free_port()
    cmd = [sys.executable, str(REPO / "scripts" / "serve.py"), f"port={port}", *overrides]
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=fh, stderr=subprocess.STDOUT, env=env)
        try:
            deadline = time.monotonic() + timeout
            while not _healthy(port):
                if proc.poll() is not None:
                    raise RuntimeError(f"the service exited with {proc.returncode}:\n{Path(log).read_text()[-3000:]}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the service did not start in {timeout:.0f} s:\n{Path(log).read_text()[-3000:]}")
                time.sleep(0.2)
            yield port, proc, cmd
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
