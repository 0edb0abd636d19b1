"""Photoreal frames in the frame's own camera.

The photo stage writes ``fNNN.photo.png`` either at the frame's size (same camera, same labels) or, in crop mode,
as a square crop of the hand-object region (``meta.generation.photo.crop``: ``box`` = [x0, y0, side, side] in
frame pixels, possibly reaching past the image, ``size``, and the crop's ``K``). :func:`photo_in_frame` puts a
crop back into the frame: the crop is resized to the box and replaces the render's pixels inside the box only, so
every label of the frame (poses, masks, boxes, joints) stays exact.
"""

from __future__ import annotations

import numpy as np


def photo_crop(meta: dict) -> dict | None:
    """The crop record of a sample's photo frames, or None when they are full frames."""
    return (meta.get("generation") or {}).get("photo", {}).get("crop")


def photo_in_frame(photo: np.ndarray, rgb: np.ndarray, crop: dict | None) -> np.ndarray:
    """(H, W, 3) uint8 frame: ``photo`` itself, or a crop pasted into ``rgb`` inside its box.

    Args:
        photo: (h, w, 3) uint8 generated image. rgb: (H, W, 3) uint8 render of the same frame.
        crop: ``meta.generation.photo.crop`` or None.
    """
    photo, rgb = np.asarray(photo), np.asarray(rgb)
    if crop is None:
        if photo.shape != rgb.shape:
            raise ValueError(
                f"photo frame {photo.shape} does not match the render {rgb.shape} and has no crop"
            )
        return photo
    import cv2

    x0, y0, side, _ = (int(v) for v in crop["box"])
    big = cv2.resize(
        photo, (side, side), interpolation=cv2.INTER_AREA if side < photo.shape[0] else cv2.INTER_CUBIC
    )
    out = rgb.copy()
    h, w = rgb.shape[:2]
    xa, ya, xb, yb = max(x0, 0), max(y0, 0), min(x0 + side, w), min(y0 + side, h)
    if xb > xa and yb > ya:
        out[ya:yb, xa:xb] = big[ya - y0 : yb - y0, xa - x0 : xb - x0]
    return out
