"""Image bytes <-> arrays, and sample grids. Pure module (Pillow + numpy)."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def encode_png(array: np.ndarray) -> bytes:
    """uint8 array HxW or HxWxC (C in 1, 3) -> PNG bytes."""
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array, dtype=np.uint8)).save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def decode_image(data: bytes, channels: int = 1) -> np.ndarray:
    """PNG/JPEG bytes -> uint8 array HxWxC with C = channels (1 grayscale, 3 RGB)."""
    with Image.open(io.BytesIO(data)) as img:
        img = img.convert("L" if channels == 1 else "RGB")
        arr = np.asarray(img, dtype=np.uint8)
    return arr[:, :, None] if arr.ndim == 2 else arr


def to_uint8(images: np.ndarray) -> np.ndarray:
    """float images in [0, 1], NxCxH xW -> uint8 NxHxWxC."""
    arr = np.clip(np.rint(np.asarray(images, dtype=np.float32) * 255.0), 0, 255).astype(np.uint8)
    return arr.transpose(0, 2, 3, 1)


def make_grid(images: np.ndarray, rows: int, scale: int = 4, pad: int = 1) -> np.ndarray:
    """uint8 NxHxWxC -> one uint8 image with `rows` rows, each cell upscaled by `scale` (nearest)."""
    n, h, w, c = images.shape
    cols = max(1, -(-n // rows))
    hs, ws = h * scale, w * scale
    grid = np.full((rows * (hs + pad) + pad, cols * (ws + pad) + pad, c), 255, dtype=np.uint8)
    for i in range(n):
        r, k = divmod(i, cols)
        cell = images[i].repeat(scale, axis=0).repeat(scale, axis=1)
        y, x = pad + r * (hs + pad), pad + k * (ws + pad)
        grid[y : y + hs, x : x + ws] = cell
    return grid
