"""Image bytes <-> arrays, and sample grids. Pure module (Pillow + numpy)."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageOps

# How an image of another size is brought to size x size (see resize_image).
RESIZE_POLICIES = ("crop", "fit", "pad", "none")
# Pillow modes without colour: they decode to one channel (LA's alpha is dropped, as decode_image does).
GREY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})


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


def has_colour(data: bytes) -> bool:
    """Whether an image shows colour: a pixel whose red, green and blue differ. Grey modes (L, LA, 1, I, F)
    answer from the header alone; RGB, RGBA, palette and other modes are decoded and looked at, so an RGB
    file of grey pixels is grey."""
    with Image.open(io.BytesIO(data)) as img:
        if img.mode in GREY_MODES:
            return False
        rgb = np.asarray(img.convert("RGB"), dtype=np.uint8)
    return bool((rgb[..., 0] != rgb[..., 1]).any() or (rgb[..., 1] != rgb[..., 2]).any())


def resize_image(data: bytes, size: int, policy: str) -> tuple[bytes, int]:
    """Image bytes of any size -> (PNG bytes of size x size, its channels: 1 grey, 3 colour).

    policy "crop": scale the shorter side to `size`, cut the middle square out of the longer one;
    "fit": scale each side to `size` (the aspect ratio is not kept); "pad": scale the longer side to
    `size` and fill the rest with black, the image centred. Grey modes stay grey (L), every other mode
    becomes RGB (alpha dropped), as decode_image would convert them. Resampling: Lanczos.
    """
    if policy not in RESIZE_POLICIES or policy == "none":
        raise ValueError(f"resize policy must be one of {RESIZE_POLICIES[:-1]}, got {policy!r}")
    if not isinstance(size, int) or size <= 0:
        raise ValueError(f"size must be a positive int, got {size!r}")
    with Image.open(io.BytesIO(data)) as img:
        img = img.convert("L" if img.mode in GREY_MODES else "RGB")
    lanczos = Image.Resampling.LANCZOS
    if policy == "crop":
        out = ImageOps.fit(img, (size, size), method=lanczos, centering=(0.5, 0.5))
    elif policy == "pad":
        out = ImageOps.pad(img, (size, size), method=lanczos, color=0, centering=(0.5, 0.5))
    else:
        out = img.resize((size, size), lanczos)
    buf = io.BytesIO()
    out.save(buf, format="PNG", optimize=False)
    return buf.getvalue(), len(out.getbands())


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
