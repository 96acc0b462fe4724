"""A compact network in one small file: its nonzero weights and where they are.

:func:`~tcmplib.compact.save_compact` writes the compact tensors dense, zeros included.
Compaction drops dead units, not single weights: the dense layer keeps a whole row for
every live input, so at random 99% its compact tensors are only 2.7% nonzero and
``compact.safetensors`` takes 1,692,228 bytes, 148 bytes per nonzero weight. This format
stores the nonzero values and a bitmap of their positions.

One safetensors file (``.tcmps``), no pickle. Its tensors, for each weight ``W`` of
``wq``, ``wk``, ``wv``, ``fc`` (the compact shapes of
:meth:`~tcmplib.compact.CompactGCN.expected_shapes`):

* ``W.values``: float32, the nonzero entries of ``W`` in row-major order;
* ``W.bytes``, ``W.index``: uint8, the pattern of ``W``, two-level (below).

and ``kept.fc_inputs.bytes``, ``kept.fc_inputs.index``: the kept dense-layer inputs as the
same two-level bitmap over the original ``nodes * heads * channels`` axis (43,008 bits
at full size). The safetensors metadata holds one string, ``description``: a JSON object
with the format name and version, the :class:`~tcmplib.model.GCNConfig`, the small kept
index lists ``value_inputs``, ``channels``, ``heads``, ``qk_columns``, the tensor shapes,
and ``sha256``, the digest of the rest of the description (keys sorted, no spaces) and of
every tensor (name, length, bytes). One key, because safetensors writes metadata keys in
no fixed order: this way the same network always gives the same bytes.

The pattern of ``W`` is ``numpy.packbits(W.reshape(-1) != 0)``: one bit per entry,
most significant bit first, the last byte padded with zero bits. Stored as is, it costs
``1 / density`` bits per nonzero: at random 99% the compact dense layer is ~2.8% nonzero,
so 4.5 bytes per weight on top of the 4 of its value, over 8 in all. So only its
nonzero bytes are stored (``W.bytes``), with a bitmap of which bytes those are
(``W.index = packbits(pattern != 0)``, padded likewise). At random 99% the four patterns
then take 1.5 bytes per nonzero instead of 4.6; a dense pattern costs at most 1/8 more
than the plain bitmap (the index adds one bit per pattern byte).

Measured on the full-size network under random masks (each weight kept with probability
``1 - rate``; the whole file divided by the nonzero weights of the compact network, which
are fewer than those kept since compaction drops dead units). The dense safetensors of
the four original tensors is 7,870,760 bytes:

=====  ===============  ==========  ================  ============  ===============
rate   nonzero weights  file bytes  bytes per weight  dense / file  plain bitmap
=====  ===============  ==========  ================  ============  ===============
99%    11,468           70,778      6.17              111x          9.24 B/weight
95%    96,667           503,795     5.21              15.6x         6.35 B/weight
50%    983,369          4,217,725   4.29              1.9x          4.26 B/weight
=====  ===============  ==========  ================  ============  ===============

Two more draws of weights and masks give the same bytes per weight within 0.01. Of the
99% file, 45,872 bytes are values, 17,637 the four weight bitmaps (52,874 as plain
bitmaps), 5,277 the fc_inputs bitmap and 1,992 the header. Values are float32, so 4 bytes
per weight is the floor; a signed zero is a zero and reads back as ``+0.0``. Trained
networks keep fewer, fuller rows: TCMP at 99% on the synthetic data (book profile, selected
recipe) takes 91,998 bytes, 4.67 per weight, against 481,296 for ``compact.safetensors``.

:func:`load_sparse` checks everything against everything else (format, digest, tensor
names and dtypes, bitmap lengths and padding bits, bit counts against value counts, the
kept indices through :mod:`tcmplib.compact`'s own checks) and raises
:class:`~tcmplib.compact.CompactFormatError` with one line naming the file and the
expectation.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.numpy import load, save

from tcmplib.compact import FORMAT_NAME as COMPACT_FORMAT_NAME
from tcmplib.compact import FORMAT_VERSION as COMPACT_FORMAT_VERSION
from tcmplib.compact import (
    CompactFormatError,
    CompactGCN,
    _config_json,
    _expected_shapes,
    _parse_description,
    check_format,
)
from tcmplib.model import PRUNABLE, GCNConfig

__all__ = [
    "SPARSE_FORMAT_NAME",
    "SPARSE_FORMAT_VERSION",
    "encode_sparse",
    "sparse_bytes",
    "save_sparse",
    "load_sparse",
    "pack_pattern",
]

SPARSE_FORMAT_NAME = "tcmplib-sparse-gcn"
SPARSE_FORMAT_VERSION = 1
FC_INPUTS = "kept.fc_inputs"
#: The parts of one stored bitmap, and of one stored weight (its bitmap and its values).
BITMAP_PARTS = ("bytes", "index")
WEIGHT_PARTS = ("values", *BITMAP_PARTS)


def _expected_names() -> set[str]:
    names = {f"{name}.{part}" for name in PRUNABLE for part in WEIGHT_PARTS}
    return names | {f"{FC_INPUTS}.{part}" for part in BITMAP_PARTS}


# --------------------------------------------------------------------------- bitmaps


def pack_pattern(bits: np.ndarray) -> dict[str, np.ndarray]:
    """The two-level bitmap of a flat boolean array: ``bytes`` (the nonzero bytes of
    ``packbits(bits)``) and ``index`` (``packbits`` of which bytes those are)."""
    pattern = np.packbits(np.asarray(bits, dtype=bool).reshape(-1))
    nonzero = pattern != 0
    return {"bytes": pattern[nonzero], "index": np.packbits(nonzero)}


def _check_padding(packed: np.ndarray, bits: int, where: str, path: Path) -> None:
    """Bits past the ``bits`` that count must be zero: one file per network, not several."""
    tail = np.unpackbits(packed)[bits:] if packed.size else packed
    if tail.any():
        raise CompactFormatError(
            f"{path}: {where}: expected zero padding bits after the first {bits} bits"
        )


def _unpack_pattern(
    parts: Mapping[str, np.ndarray], bits: int, where: str, path: Path
) -> np.ndarray:
    """The flat boolean array of ``bits`` entries that :func:`pack_pattern` encoded, checked."""
    length = math.ceil(bits / 8)
    index, stored = parts["index"], parts["bytes"]
    if index.size != math.ceil(length / 8):
        raise CompactFormatError(
            f"{path}: {where}.index: expected {math.ceil(length / 8)} bytes for a bitmap of "
            f"{bits} bits, got {index.size}"
        )
    _check_padding(index, length, f"{where}.index", path)
    present = np.unpackbits(index)[:length].astype(bool)
    if stored.size != int(present.sum()):
        raise CompactFormatError(
            f"{path}: {where}.bytes: expected {int(present.sum())} bytes (the set bits of "
            f"{where}.index), got {stored.size}"
        )
    if not stored.all():
        raise CompactFormatError(f"{path}: {where}.bytes: expected nonzero bytes only")
    pattern = np.zeros(length, dtype=np.uint8)
    pattern[present] = stored
    _check_padding(pattern, bits, where, path)
    return np.unpackbits(pattern)[:bits].astype(bool)


# --------------------------------------------------------------------------- writing


def _digest(description: Mapping[str, Any], tensors: Mapping[str, np.ndarray]) -> str:
    """sha256 of the description (less its digest, keys sorted) and of every tensor:
    safetensors has no checksum, and a damaged weight or index would otherwise load as
    another network."""
    rest = {key: value for key, value in description.items() if key != "sha256"}
    digest = hashlib.sha256(json.dumps(rest, sort_keys=True, separators=(",", ":")).encode())
    for name in sorted(tensors):
        data = np.ascontiguousarray(tensors[name]).tobytes()
        digest.update(name.encode() + b"\0" + len(data).to_bytes(8, "little") + data)
    return digest.hexdigest()


def _encode(description: Mapping[str, Any], tensors: Mapping[str, np.ndarray]) -> bytes:
    # One metadata key: safetensors writes its keys in no fixed order, and the same network
    # should give the same bytes.
    signed = {**description, "sha256": _digest(description, tensors)}
    return save(dict(tensors), metadata={"description": json.dumps(signed, separators=(",", ":"))})


def encode_sparse(compact: CompactGCN) -> bytes:
    """The bytes of ``compact``'s sparse file (what :func:`save_sparse` writes)."""
    tensors: dict[str, np.ndarray] = {}
    for name in PRUNABLE:
        weight = getattr(compact, name).detach().cpu()
        if weight.dtype != torch.float32:
            raise ValueError(f"{name}: expected float32 weights to store, got {weight.dtype}")
        flat = weight.reshape(-1).numpy()
        nonzero = flat != 0
        tensors[f"{name}.values"] = flat[nonzero].astype(np.float32)
        tensors.update({f"{name}.{part}": v for part, v in pack_pattern(nonzero).items()})
    fc_inputs = np.zeros(compact.config.fc_in, dtype=bool)
    fc_inputs[list(compact.kept.fc_inputs)] = True
    tensors.update({f"{FC_INPUTS}.{part}": v for part, v in pack_pattern(fc_inputs).items()})
    kept = compact.kept
    description = {
        "format": SPARSE_FORMAT_NAME,
        "format_version": SPARSE_FORMAT_VERSION,
        "config": _config_json(compact.config),
        "kept": {
            "value_inputs": list(kept.value_inputs),
            "channels": list(kept.channels),
            "heads": list(kept.heads),
            "qk_columns": [list(columns) for columns in kept.qk_columns],
        },
        "tensors": {name: list(shape) for name, shape in compact.expected_shapes().items()},
    }
    return _encode(description, tensors)


def sparse_bytes(compact: CompactGCN) -> int:
    """Size in bytes of ``compact``'s sparse file, without writing it."""
    return len(encode_sparse(compact))


def save_sparse(compact: CompactGCN, path: str | Path) -> Path:
    """Write ``compact`` to ``path`` (one file; ``.tcmps`` by convention), atomically."""
    from tcmplib.train import atomic_write  # as in compact.py: train imports neither module

    data = encode_sparse(compact)
    return atomic_write(path, lambda handle: handle.write(data))


# --------------------------------------------------------------------------- reading


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split())


def _read_description(data: bytes, path: Path) -> dict[str, Any]:
    """The description in the safetensors metadata, once the file has loaded (its header is
    then valid JSON)."""
    length = int.from_bytes(data[:8], "little")
    metadata = json.loads(data[8 : 8 + length]).get("__metadata__") or {}
    if "description" not in metadata:
        raise CompactFormatError(
            f"{path}: expected a description in the safetensors metadata of a "
            f"{SPARSE_FORMAT_NAME} file"
        )
    try:
        description = json.loads(metadata["description"])
    except json.JSONDecodeError as error:
        raise CompactFormatError(
            f"{path}: description: expected valid JSON ({_one_line(error)})"
        ) from None
    if not isinstance(description, dict):
        raise CompactFormatError(f"{path}: description: expected a JSON object")
    return description


def _read_config(description: dict[str, Any], path: Path) -> GCNConfig:
    """The config, needed before the rest to know the length of the fc_inputs bitmap;
    :func:`~tcmplib.compact._parse_description` checks it again with everything else."""
    fields = set(GCNConfig.__dataclass_fields__)
    required = fields - {"dropout", "neighbourhood", "values", "attention"}
    config = description.get("config")
    if not isinstance(config, dict) or not required <= set(config) <= fields:
        raise CompactFormatError(
            f"{path}: config: expected an object with the keys {sorted(required)} (and "
            "optionally dropout, neighbourhood, values, attention)"
        )
    try:
        return GCNConfig(**config)
    except (TypeError, ValueError) as error:
        raise CompactFormatError(f"{path}: {_one_line(error)}") from None


def _check_tensors(tensors: Mapping[str, np.ndarray], path: Path) -> None:
    expected = _expected_names()
    if set(tensors) != expected:
        raise CompactFormatError(
            f"{path}: expected the tensors {sorted(expected)}; missing "
            f"{sorted(expected - set(tensors))}, unexpected {sorted(set(tensors) - expected)}"
        )
    for name, array in sorted(tensors.items()):
        dtype = np.float32 if name.endswith(".values") else np.uint8
        if array.dtype != dtype or array.ndim != 1:
            raise CompactFormatError(
                f"{path}: {name}: expected a 1-D {np.dtype(dtype).name} tensor, got "
                f"{array.dtype.name} of shape {tuple(array.shape)}"
            )


def _read_weight(
    name: str, shape: tuple[int, ...], tensors: Mapping[str, np.ndarray], path: Path
) -> torch.Tensor:
    parts = {part: tensors[f"{name}.{part}"] for part in BITMAP_PARTS}
    nonzero = _unpack_pattern(parts, math.prod(shape), name, path)
    values = tensors[f"{name}.values"]
    if values.size != int(nonzero.sum()):
        raise CompactFormatError(
            f"{path}: {name}.values: expected {int(nonzero.sum())} values (the set bits of "
            f"its bitmap), got {values.size}"
        )
    if not (values != 0).all():
        raise CompactFormatError(
            f"{path}: {name}.values: expected nonzero values only (zeros are the bitmap's)"
        )
    dense = np.zeros(nonzero.size, dtype=np.float32)
    dense[nonzero] = values
    return torch.from_numpy(dense.reshape(shape))


def load_sparse(path: str | Path) -> CompactGCN:
    """Read a network written by :func:`save_sparse`; every check of the module doc applies."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CompactFormatError(
            f"{path}: expected a {SPARSE_FORMAT_NAME} file, no such file"
        ) from None
    except OSError as error:
        raise CompactFormatError(
            f"{path}: expected a readable {SPARSE_FORMAT_NAME} file ({error.strerror})"
        ) from None
    try:
        tensors = load(data)
    except Exception as error:  # safetensors raises its own error types for damaged files
        raise CompactFormatError(
            f"{path}: expected a safetensors file ({_one_line(error)})"
        ) from None
    description = _read_description(data, path)
    check_format(description, SPARSE_FORMAT_NAME, SPARSE_FORMAT_VERSION, path)
    if description.get("sha256") != _digest(description, tensors):
        raise CompactFormatError(
            f"{path}: expected the sha256 digest the description records; the description "
            "or a tensor is damaged"
        )
    config = _read_config(description, path)
    _check_tensors(tensors, path)
    fc_parts = {part: tensors[f"{FC_INPUTS}.{part}"] for part in BITMAP_PARTS}
    fc_inputs = _unpack_pattern(fc_parts, config.fc_in, FC_INPUTS, path)
    kept = description.get("kept")
    if not isinstance(kept, dict) or "fc_inputs" in kept:
        raise CompactFormatError(
            f"{path}: kept: expected an object without fc_inputs (stored as a bitmap)"
        )
    description.pop("sha256")
    _, indices, _ = _parse_description(
        {
            **description,
            "format": COMPACT_FORMAT_NAME,
            "format_version": COMPACT_FORMAT_VERSION,
            "kept": {**kept, "fc_inputs": np.flatnonzero(fc_inputs).tolist()},
        },
        path,
    )
    weights = {
        name: _read_weight(name, shape, tensors, path)
        for name, shape in _expected_shapes(config, indices).items()
    }
    return CompactGCN(config, indices, weights)
