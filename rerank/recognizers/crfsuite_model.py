"""Reading a trained crfsuite (crf1d) model into numpy: its labels, attributes and weights.

A model is read as:

- ``T[i, j]``: the weight of the transition from label ``i`` to label ``j``;
- one row of ``W`` per attribute (binary feature, value 1): its weight per label.

A labelling ``y`` of a sentence ``x`` of ``n`` tokens scores exactly as in crfsuite
(which has no start/end transition features)::

    score(y) = sum_t E[t, y_t] + sum_{t>0} T[y_{t-1}, y_t],   E[t] = sum of W[a] over t's attributes a

and ``P(y | x) = exp(score(y) - log Z(x))`` (decoding: :mod:`rerank.recognizers.kbest`).

The weights are read from the binary model file (its ``FEAT`` chunk stores them
as IEEE doubles), not from ``Tagger.info()``, whose text dump rounds every weight
to 6 decimals; ``info()`` is only the fallback if the binary layout is not the
expected one.
"""
from __future__ import annotations

import struct
import warnings

import numpy as np

__all__ = ["ModelFormatError", "read_model", "read_model_binary", "read_model_info"]


class ModelFormatError(ValueError):
    """The model file's layout is not the crf1d layout this reader knows."""


_FEATURE_DTYPE = np.dtype([("type", "<u4"), ("src", "<u4"), ("dst", "<u4"), ("weight", "<f8")])
_CQDB_BYTEORDER = 0x62445371


def _read_cqdb_strings(data: bytes, begin: int, count: int) -> list[str]:
    """The strings of ids ``0..count-1`` of the CQDB chunk at ``begin`` (via its backward array)."""
    if data[begin:begin + 4] != b"CQDB":
        raise ModelFormatError("no CQDB chunk")
    _size, _flag, byteorder, bwd_size, bwd_offset = struct.unpack_from("<IIIII", data, begin + 4)
    if byteorder != _CQDB_BYTEORDER:
        raise ModelFormatError("unexpected CQDB byte order")
    if count == 0:
        return []
    if bwd_offset == 0 or bwd_size < count:
        raise ModelFormatError("CQDB without a backward array")
    offsets = struct.unpack_from(f"<{count}I", data, begin + bwd_offset)
    out = []
    for i, off in enumerate(offsets):
        rid, ksize = struct.unpack_from("<iI", data, begin + off)
        if rid != i or ksize == 0:
            raise ModelFormatError("inconsistent CQDB record")
        start = begin + off + 8
        out.append(data[start:start + ksize - 1].decode("utf-8"))
    return out


def read_model_binary(data: bytes) -> tuple[list[str], list[str], np.ndarray, np.ndarray]:
    """``(labels, attributes, T [L, L], W [A, L])`` from a crf1d model file's bytes."""
    if len(data) < 48:
        raise ModelFormatError("truncated header")
    (magic, size, mtype, _version, _n_feat, n_labels, n_attrs,
     off_feat, off_labels, off_attrs, _off_lrefs, _off_arefs) = struct.unpack_from("<4sI4s9I", data, 0)
    if magic != b"lCRF" or mtype != b"FOMC" or size != len(data):
        raise ModelFormatError("not a crf1d model file")
    labels = _read_cqdb_strings(data, off_labels, n_labels)
    attrs = _read_cqdb_strings(data, off_attrs, n_attrs)
    # (crfsuite leaves the header's num_features at 0; the chunk has the count.)
    chunk, csize, num = struct.unpack_from("<4sII", data, off_feat)
    if chunk != b"FEAT" or csize != 12 + _FEATURE_DTYPE.itemsize * num or off_feat + csize > len(data):
        raise ModelFormatError("unexpected FEAT chunk")
    feats = np.frombuffer(data, dtype=_FEATURE_DTYPE, count=num, offset=off_feat + 12)
    ftype, src, dst, w = feats["type"], feats["src"].astype(np.intp), feats["dst"].astype(np.intp), feats["weight"]
    if np.any(ftype > 1) or np.any(dst >= n_labels):
        raise ModelFormatError("unexpected feature record")
    state, trans = ftype == 0, ftype == 1
    if np.any(src[state] >= n_attrs) or np.any(src[trans] >= n_labels):
        raise ModelFormatError("feature refers to an unknown attribute/label")
    T = np.zeros((n_labels, n_labels))
    np.add.at(T, (src[trans], dst[trans]), w[trans])
    W = np.zeros((n_attrs, n_labels))
    np.add.at(W, (src[state], dst[state]), w[state])
    return labels, attrs, T, W


def read_model_info(tagger) -> tuple[list[str], list[str], np.ndarray, np.ndarray]:
    """Fallback: the same from ``Tagger.info()`` (weights rounded to 1e-6 by crfsuite's dump)."""
    info = tagger.info()
    labels = [name for name, _ in sorted(info.labels.items(), key=lambda kv: int(kv[1]))]
    attrs = [name for name, _ in sorted(info.attributes.items(), key=lambda kv: int(kv[1]))]
    lid = {name: i for i, name in enumerate(labels)}
    aid = {name: i for i, name in enumerate(attrs)}
    T = np.zeros((len(labels), len(labels)))
    for (a, b), w in info.transitions.items():
        T[lid[a], lid[b]] = w
    W = np.zeros((len(attrs), len(labels)))
    for (a, b), w in info.state_features.items():
        W[aid[a], lid[b]] = w
    return labels, attrs, T, W


def read_model(path: str) -> tuple[bytes, list[str], list[str], np.ndarray, np.ndarray]:
    """``(file bytes, labels, attributes, T, W)`` of the model file at ``path``.

    The bytes are returned so that the caller can keep the model without the file.
    """
    import pycrfsuite

    with open(path, "rb") as fh:
        data = fh.read()
    tagger = pycrfsuite.Tagger()
    tagger.open(path)
    try:
        api_labels = list(tagger.labels())
        try:
            labels, attrs, T, W = read_model_binary(data)
            # A layout that parses but means something else would otherwise go unnoticed.
            if labels != api_labels:
                raise ModelFormatError("labels differ from Tagger.labels()")
        except (ModelFormatError, struct.error, UnicodeDecodeError) as exc:
            warnings.warn(
                f"could not read the crfsuite model file ({exc}); using Tagger.info(), "
                "whose weights are rounded to 6 decimals",
                RuntimeWarning,
                stacklevel=3,  # the caller of SlotTagger.fit
            )
            labels, attrs, T, W = read_model_info(tagger)
    finally:
        tagger.close()
    return data, labels, attrs, T, W
