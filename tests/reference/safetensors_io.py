#!/usr/bin/python3
"""Minimal safetensors reader/writer in pure numpy (no `safetensors` package needed).

File layout (https://github.com/huggingface/safetensors):
  bytes [0, 8)        : N, little-endian u64, the byte length of the JSON header
  bytes [8, 8+N)      : UTF-8 JSON header (may be right-padded with spaces)
                        {"<name>": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]},
                         ..., "__metadata__": {"<key>": "<string value>", ...}}
  bytes [8+N, EOF)    : the data section; offsets are relative to its start, little-endian
                        row-major (C-order) tensor data.

Supported dtypes: F64 F32 F16 BF16 I64 I32 I8 U8 (and BOOL, read as numpy bool).
BF16 has no numpy dtype: it is read into float32 (exact) and written from float32/float64 with
round-to-nearest-even (pass dtype="BF16" explicitly to `save`).

API:
  save(path, tensors: dict[str, np.ndarray], metadata: dict[str, str] | None, dtypes=None)
  load(path) -> (dict[str, np.ndarray], dict[str, str])
"""

import json
import struct

import numpy as np

__all__ = ["save", "load", "DTYPES"]

# safetensors dtype string -> numpy dtype of the stored bytes (little-endian).
DTYPES = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"),  # raw bits; converted to float32 on load
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I8": np.dtype("i1"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}

_NUMPY_TO_ST = {
    np.dtype("float64"): "F64",
    np.dtype("float32"): "F32",
    np.dtype("float16"): "F16",
    np.dtype("int64"): "I64",
    np.dtype("int32"): "I32",
    np.dtype("int8"): "I8",
    np.dtype("uint8"): "U8",
    np.dtype("bool"): "BOOL",
}


def _f32_to_bf16_bits(x):
    """float32 array -> uint16 bf16 bit patterns, round-to-nearest-even (NaN stays NaN)."""
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    rounding = ((bits >> 16) & 1) + np.uint32(0x7FFF)
    out = ((bits + rounding) >> 16).astype(np.uint16)
    nan = np.isnan(x)
    if nan.any():
        out[nan] = 0x7FC0
    return out


def _bf16_bits_to_f32(bits):
    return (bits.astype(np.uint32) << 16).view(np.float32)


def save(path, tensors, metadata=None, dtypes=None):
    """Write `tensors` (name -> array-like) to `path`.

    metadata: optional str -> str map stored as "__metadata__".
    dtypes:   optional name -> safetensors dtype string overriding the array's own dtype
              (e.g. {"w": "BF16"}); otherwise the numpy dtype decides.
    Tensors are written in sorted name order (deterministic files).
    """
    dtypes = dtypes or {}
    header = {}
    blobs = []
    offset = 0
    for name in sorted(tensors):
        if name == "__metadata__":
            raise ValueError("'__metadata__' is reserved")
        arr = np.asarray(tensors[name])
        st = dtypes.get(name) or _NUMPY_TO_ST.get(arr.dtype)
        if st is None:
            raise TypeError(f"tensor {name!r}: unsupported numpy dtype {arr.dtype}")
        if st == "BF16":
            raw = _f32_to_bf16_bits(arr.astype(np.float32))
        else:
            raw = np.ascontiguousarray(arr, dtype=DTYPES[st])
        data = raw.tobytes(order="C")
        header[name] = {
            "dtype": st,
            "shape": [int(s) for s in arr.shape],
            "data_offsets": [offset, offset + len(data)],
        }
        blobs.append(data)
        offset += len(data)
    if metadata:
        for k, v in metadata.items():
            if not isinstance(k, str) or not isinstance(v, str):
                raise TypeError("__metadata__ must map str -> str")
        header["__metadata__"] = dict(metadata)
    hjson = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hjson += b" " * ((8 - len(hjson) % 8) % 8)  # align the data section to 8 bytes
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hjson)))
        f.write(hjson)
        for b in blobs:
            f.write(b)


def load(path):
    """Read `path` -> (tensors: name -> np.ndarray, metadata: str -> str).

    Validates the header (dtype known, offsets inside the data section, byte count equal to
    prod(shape) * itemsize) and raises ValueError naming the file and tensor on any fault.
    BF16 tensors come back as float32.
    """
    with open(path, "rb") as f:
        buf = f.read()
    if len(buf) < 8:
        raise ValueError(f"{path}: truncated (no header length)")
    (hlen,) = struct.unpack("<Q", buf[:8])
    if 8 + hlen > len(buf):
        raise ValueError(f"{path}: header length {hlen} exceeds file size {len(buf)}")
    try:
        header = json.loads(buf[8:8 + hlen].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: bad JSON header: {e}") from e
    data = memoryview(buf)[8 + hlen:]
    metadata = header.pop("__metadata__", None) or {}
    tensors = {}
    for name, info in header.items():
        st = info.get("dtype")
        if st not in DTYPES:
            raise ValueError(f"{path}: tensor {name!r}: unsupported dtype {st!r}")
        shape = tuple(int(s) for s in info["shape"])
        begin, end = (int(o) for o in info["data_offsets"])
        npdt = DTYPES[st]
        count = int(np.prod(shape, dtype=np.int64)) if shape else 1
        if not (0 <= begin <= end <= len(data)) or end - begin != count * npdt.itemsize:
            raise ValueError(
                f"{path}: tensor {name!r}: data_offsets [{begin}, {end}] do not fit shape "
                f"{list(shape)} x {st} in a data section of {len(data)} bytes")
        arr = np.frombuffer(data[begin:end], dtype=npdt, count=count).reshape(shape)
        if st == "BF16":
            arr = _bf16_bits_to_f32(arr)
        tensors[name] = arr.copy()  # own the memory, native byte order
    return tensors, metadata


if __name__ == "__main__":
    import sys
    for p in sys.argv[1:]:
        ts, md = load(p)
        print(f"{p}: {len(ts)} tensors, metadata keys {sorted(md)}")
        for n in sorted(ts):
            print(f"  {n:60s} {str(ts[n].dtype):8s} {list(ts[n].shape)}")
