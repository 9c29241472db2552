"""uvicorn's httptools protocol, each answer's writes sent in one system call.

uvicorn writes an answer's status line and headers (at ``http.response.start``) and its body (at
``http.response.body``) as two writes of the transport, and uvloop sends each at once: two ``send``
calls, two TCP segments, and a client woken twice, for every answer. Under load that second system call
and the client's extra wake-up were a tenth of the service's CPU per ``/rank`` request. Here the writes a
connection makes during one step of the event loop are gathered and handed to the transport together, at
the end of that step (one ``writelines``: one system call); closing the connection sends them first.
"""
from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class _GatheredWrites:
    """A transport whose writes of one loop step go out together; everything else is the transport's."""

    __slots__ = ("_transport", "_loop", "_parts")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop):
        self._transport, self._loop = transport, loop
        self._parts: list[bytes] = []

    def write(self, data: bytes) -> None:
        if not data:
            return
        if not self._parts:
            self._loop.call_soon(self._flush)
        self._parts.append(data)

    def writelines(self, parts) -> None:
        for data in parts:
            self.write(data)

    def _flush(self) -> None:
        parts, self._parts = self._parts, []
        if parts and not self._transport.is_closing():
            self._transport.writelines(parts)

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def write_eof(self) -> None:
        self._flush()
        self._transport.write_eof()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class GatheredWritesProtocol(HttpToolsProtocol):
    """``uvicorn.run(..., http=GatheredWritesProtocol)``: uvicorn's httptools protocol over :class:`_GatheredWrites`."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(_GatheredWrites(transport, self.loop))  # type: ignore[arg-type]
