"""Row bytes: little-endian float32 or float16, one row per Redis value."""

from __future__ import annotations

import numpy as np

from core.manifest import ROW_DTYPES

DTYPES = {name: np.dtype(name).newbyteorder("<") for name in ROW_DTYPES}


def encode_rows(rows: np.ndarray, row_dtype: str) -> list[bytes]:
    """(N, D) float array -> N byte strings, without a Python loop over values."""
    blob = np.ascontiguousarray(rows, dtype=DTYPES[row_dtype]).tobytes()
    width = rows.shape[1] * DTYPES[row_dtype].itemsize
    return [blob[start : start + width] for start in range(0, len(blob), width)]


def decode_rows(values: list[bytes], row_dtype: str, dim: int) -> np.ndarray:
    """Equal-length byte strings -> (N, dim) float32, decoded in one call."""
    flat = np.frombuffer(b"".join(values), dtype=DTYPES[row_dtype])
    return flat.reshape(len(values), dim).astype(np.float32, copy=False)


def row_nbytes(dim: int, row_dtype: str) -> int:
    return dim * DTYPES[row_dtype].itemsize
