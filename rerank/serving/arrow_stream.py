"""A request's Arrow IPC stream, sized before it is decoded.

``pa.ipc.open_stream(body).read_all()`` decompresses every batch before anything can look at
it: a 506 KiB zstd body decodes to a gigabyte before a row limit applies. But each message
of the stream says, in its metadata (a flatbuffer), how many rows its batch holds and where
its buffers lie in the body, and a compressed buffer starts with its decoded length. So
:func:`measure` walks the messages without decoding any (rows, decoded bytes and the schema),
the caller checks them against its limits and the columns' types, and only then
:func:`decode` decodes, on one thread and only the columns asked for.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Sequence

import pyarrow as pa

#: Message.header_type values of the Arrow format (format/Message.fbs)
_SCHEMA, _DICTIONARY_BATCH, _RECORD_BATCH = 1, 2, 3


class BadStream(ValueError):
    """Bytes that are not an Arrow IPC stream, or whose metadata points outside the body."""


@dataclass(frozen=True)
class StreamSize:
    schema: pa.Schema
    rows: int  # rows of the record batches (dictionary batches excluded)
    decoded_bytes: int  # every buffer of every batch and dictionary, decompressed


def _read(buf: memoryview, fmt: str, pos: int):
    if pos < 0 or pos + struct.calcsize(fmt) > len(buf):
        raise BadStream("its metadata points outside itself")
    return struct.unpack_from(fmt, buf, pos)[0]


class _FlatTable:
    """One table of a flatbuffer (what IPC metadata is): just enough to read scalars, tables and vectors of structs."""

    def __init__(self, buf: memoryview, pos: int):
        self.buf, self.pos = buf, pos
        self.vtable = pos - _read(buf, "<i", pos)
        self.vsize = _read(buf, "<H", self.vtable)

    def _offset(self, field: int) -> int:
        at = 4 + 2 * field
        return _read(self.buf, "<H", self.vtable + at) if at < self.vsize else 0

    def scalar(self, field: int, fmt: str, default: int = 0) -> int:
        off = self._offset(field)
        return _read(self.buf, fmt, self.pos + off) if off else default

    def _target(self, field: int) -> int | None:
        off = self._offset(field)
        if not off:
            return None
        return self.pos + off + _read(self.buf, "<I", self.pos + off)

    def table(self, field: int) -> "_FlatTable | None":
        at = self._target(field)
        return None if at is None else _FlatTable(self.buf, at)

    def structs(self, field: int, fmt: str) -> list[tuple]:
        at = self._target(field)
        if at is None:
            return []
        n, size = _read(self.buf, "<I", at), struct.calcsize(fmt)
        if at + 4 + n * size > len(self.buf):
            raise BadStream("its metadata points outside itself")
        return list(struct.iter_unpack(fmt, self.buf[at + 4:at + 4 + n * size]))


def _batch_bytes(batch: _FlatTable, body: pa.Buffer | None) -> int:
    """The decoded size of one RecordBatch's buffers: a compressed buffer's first 8 bytes give it (-1: not compressed)."""
    compressed = batch.table(3) is not None  # RecordBatch.compression
    data = memoryview(body) if body is not None else memoryview(b"")
    total = 0
    for offset, length in batch.structs(2, "<qq"):  # RecordBatch.buffers: (offset, length) in the body
        if length < 0 or offset < 0 or offset + length > len(data):
            raise BadStream("a buffer lies outside its message's body")
        if length == 0:
            continue
        if not compressed:
            total += length
            continue
        decoded = _read(data, "<q", offset)
        if decoded < -1:
            raise BadStream(f"a compressed buffer claims {decoded} bytes")
        total += length - 8 if decoded == -1 else decoded
    return total


def measure(body: bytes | pa.Buffer) -> StreamSize:
    """Schema, rows and decoded size of an IPC stream, from its messages' metadata: nothing is decompressed."""
    schema, rows, decoded = None, 0, 0
    try:
        reader = pa.ipc.MessageReader.open_stream(pa.BufferReader(body))
        for message in reader:
            meta = memoryview(message.metadata)
            root = _FlatTable(meta, _read(meta, "<I", 0))
            kind = root.scalar(1, "<B")  # Message.header_type
            if schema is None:
                if kind != _SCHEMA:
                    raise BadStream("it does not start with a schema")
                schema = pa.ipc.read_schema(message)
                continue
            header = root.table(2)  # Message.header
            if header is None or kind not in (_DICTIONARY_BATCH, _RECORD_BATCH):
                raise BadStream(f"it holds a message of kind {message.type!r}")
            batch = header if kind == _RECORD_BATCH else header.table(1)  # DictionaryBatch.data
            if batch is None:
                raise BadStream("a dictionary message without its data")
            if kind == _RECORD_BATCH:
                rows += max(0, batch.scalar(0, "<q"))  # RecordBatch.length
            decoded += _batch_bytes(batch, message.body)
    except (pa.ArrowException, OSError, struct.error) as err:
        raise BadStream(str(err)) from None
    if schema is None:
        raise BadStream("it is empty")
    return StreamSize(schema, rows, decoded)


def decode(body: bytes | pa.Buffer, columns: Sequence[int]) -> pa.Table:
    """The table of a measured stream, with only ``columns`` (indices of the schema) decoded; checked in full.

    Call it only once :func:`measure` is within the limits: decoding allocates what the stream claims.
    """
    options = pa.ipc.IpcReadOptions(use_threads=False, included_fields=list(columns))
    try:
        table = pa.ipc.open_stream(pa.BufferReader(body), options=options).read_all()
        table.validate(full=True)  # offsets and lengths from a client: checked before any kernel follows them
    except (pa.ArrowException, OSError) as err:  # (an Arrow error here is the body's fault, whatever its kind)
        raise BadStream(str(err)) from None
    return table
