"""Lossless PNG encoding of uint8 / uint16 images, greyscale or RGB, through OpenCV.

Pillow cannot write (nor faithfully read) 16-bit RGB PNGs, and the stock WebDataset decoder crushes 16-bit images
to 8 bits (REFERENCE.md, "WebDataset facts"), so hoigen encodes every PNG member itself with this module.

Conventions: arrays are (H, W) greyscale or (H, W, 3) **RGB** on the numpy side (OpenCV's BGR order is an internal
detail of this module). The compression level is fixed, so the same array always gives the same bytes for a given
OpenCV build — shards are byte-reproducible. Every row is filtered with libpng's SUB filter instead of its adaptive
choice per row: half the encoding time for about a tenth more bytes on hoigen's images (``benchmarks/synth.py
--frame-cost``'s PNG probe, README "Frame cost").
"""

from __future__ import annotations

import cv2
import numpy as np

PNG_COMPRESSION_LEVEL = 3
PNG_PARAMS = [cv2.IMWRITE_PNG_COMPRESSION, PNG_COMPRESSION_LEVEL, cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_SUB]
_SUPPORTED_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16))


def encode_png(image: np.ndarray) -> bytes:
    """Encode ``image`` losslessly as PNG bytes.

    Args:
        image: (H, W) greyscale or (H, W, 3) RGB array, dtype uint8 or uint16.

    Returns:
        The PNG file content (deterministic for a given array).
    """
    if not isinstance(image, np.ndarray):
        raise ValueError(f"encode_png expects a numpy array, got {type(image).__name__}")
    if image.dtype not in _SUPPORTED_DTYPES:
        hint = ""
        if image.dtype.kind == "f":
            hint = (
                " (float images, which may also hold NaN, are not stored directly: scale and round them to "
                "uint8 or uint16 first, e.g. depth in BOP units or NOCS x 65535)"
            )
        raise ValueError(f"encode_png supports uint8 and uint16 images, got dtype {image.dtype}{hint}")
    if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)):
        raise ValueError(
            f"encode_png expects an (H, W) greyscale or (H, W, 3) RGB image, got shape {image.shape}"
        )
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"encode_png cannot encode an empty image of shape {image.shape}")
    pixels = image[..., ::-1] if image.ndim == 3 else image  # RGB -> BGR for OpenCV
    ok, buffer = cv2.imencode(".png", np.ascontiguousarray(pixels), PNG_PARAMS)
    if not ok:
        raise ValueError(f"OpenCV failed to encode a {image.dtype} image of shape {image.shape} as PNG")
    return buffer.tobytes()


def decode_png(data: bytes) -> np.ndarray:
    """Decode PNG bytes without changing bit depth or channels.

    Args:
        data: PNG file content.

    Returns:
        (H, W) greyscale, (H, W, 3) RGB or (H, W, 4) RGBA array, dtype uint8 or uint16 as stored.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise ValueError(f"decode_png expects bytes, got {type(data).__name__}")
    buffer = np.frombuffer(data, dtype=np.uint8)
    image = None if buffer.size == 0 else cv2.imdecode(buffer, cv2.IMREAD_UNCHANGED)
    if image is None:
        raise ValueError(f"decode_png could not decode {buffer.size} bytes as an image (not a valid PNG?)")
    if image.ndim == 3 and image.shape[2] == 3:
        image = image[..., ::-1]  # BGR -> RGB
    elif image.ndim == 3 and image.shape[2] == 4:
        image = image[..., [2, 1, 0, 3]]  # BGRA -> RGBA
    return np.ascontiguousarray(image)
