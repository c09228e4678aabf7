"""PNG files Pillow cannot write (16-bit colour, 16-bit grey with alpha), written from the
PNG specification with zlib: every row filter type 0, samples packed big-endian."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np

COLOUR_TYPES = {"L": 0, "RGB": 2, "P": 3, "LA": 4, "RGBA": 6}


def _chunk(kind: bytes, body: bytes) -> bytes:
    crc = zlib.crc32(kind + body) & 0xFFFFFFFF
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)


def _rows(samples: np.ndarray, depth: int) -> list[bytes]:
    """`samples` (H x W x channels) as the bytes of each row."""
    height = samples.shape[0]
    flat = samples.reshape(height, -1)
    if depth == 16:
        return [row.astype(">u2").tobytes() for row in flat]
    if depth == 8:
        return [row.astype(np.uint8).tobytes() for row in flat]
    bits = np.unpackbits(flat.astype(np.uint8)[..., None], axis=-1)[..., 8 - depth :]
    return [np.packbits(row.ravel()).tobytes() for row in bits]


def write_png(
    path: Path,
    samples: np.ndarray,
    mode: str,
    depth: int,
    palette: bytes | None = None,
    transparency: bytes | None = None,
) -> Path:
    """Write `samples` (H x W, or H x W x channels) as a PNG of `mode` at `depth` bits."""
    samples = np.asarray(samples)
    height, width = samples.shape[:2]
    header = struct.pack(">IIBBBBB", width, height, depth, COLOUR_TYPES[mode], 0, 0, 0)
    body = b"".join(b"\0" + row for row in _rows(samples, depth))
    data = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header)
    if palette is not None:
        data += _chunk(b"PLTE", palette)
    if transparency is not None:
        data += _chunk(b"tRNS", transparency)
    data += _chunk(b"IDAT", zlib.compress(body)) + _chunk(b"IEND", b"")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path
