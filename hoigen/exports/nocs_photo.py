"""HOIDiffusion's photo pass over ``hoigen nocs-augment`` frames (``--photo hoidiffusion``): the paper's recipe.

For each HOI frame the augmentation wrote (``CAMERA/<name>_{color,mask,hand_mask,depth}.png`` + ``_hoi.json``),
the three conditions are built in the frame's own camera: the skeleton from the hand's 2D keypoints (hoigen's
HOIDiffusion palette), the hand-object mask from the hand mask and the grasped instance's mask, and the normal map
by HOIDiffusion's own recipe (Sobel of the disparity, z = 2π, × the hand∪object mask) applied to the frame's exact
depth. HOIDiffusion generates the hand-object region as it was trained (box ± 50 px, square, ``crop_size``²); the
photo replaces the colour image's pixels **only on the hand and the grasped object** (their masks), so every label
of the frame — coordinates, masks, depth, poses — is unchanged and still describes every pixel. ``_hoi.json`` gains
``photo`` (how the pixels were made); the colour file is replaced atomically.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

HAND_RGB = (128, 128, 128)
OBJECT_RGB = (153, 51, 51)


def _read(path: Path) -> np.ndarray:
    import cv2

    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise ValueError(f"{path} cannot be read as an image; rerun hoigen nocs-augment")
    return image[..., ::-1].copy() if image.ndim == 3 else image


def frame_conditions_from_nocs(base: Path, record: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """([skeleton, normal, mask] (3, 3, H, W) float32, hand∪object (H, W) bool, colour (H, W, 3) uint8)."""
    from hoigen.diffusion.hoidiffusion.conditions import midas_sobel_normals
    from hoigen.exports.nocs_augment import decode_camera_depth
    from hoigen.render.conditions import draw_skeleton

    color = _read(Path(f"{base}_color.png"))
    mask = _read(Path(f"{base}_mask.png"))
    mask = mask[..., 0] if mask.ndim == 3 else mask
    hand = _read(Path(f"{base}_hand_mask.png"))
    hand = (hand[..., 0] if hand.ndim == 3 else hand) > 0
    depth_mm = decode_camera_depth(_read(Path(f"{base}_depth.png"))).astype(np.float64)
    h, w = mask.shape
    obj = (mask == int(record["grasped"]["inst_id"])) & ~hand
    seg = hand | obj
    hoimask = np.zeros((h, w, 3), np.uint8)
    hoimask[obj] = OBJECT_RGB
    hoimask[hand] = HAND_RGB
    skeleton = draw_skeleton(np.asarray(record["hand"]["joints2d"], dtype=np.float64), w, h)
    disparity = np.where(seg & (depth_mm > 0), 1.0 / np.maximum(depth_mm, 1e-9), 0.0)
    if disparity.max() > 0:
        disparity *= 1000.0 / disparity.max()
    normal = midas_sobel_normals(disparity, seg)
    stack = np.stack([skeleton.astype(np.float32) / 255.0, normal, hoimask.astype(np.float32) / 255.0])
    return np.ascontiguousarray(stack.transpose(0, 3, 1, 2)), seg, color


def photo_pass(report: dict, backend, seed: int) -> dict:
    """Replace the hand and grasped-object pixels of every HOI frame in ``report`` (nocs_augment's return value)
    by HOIDiffusion's; returns counts. ``backend``: a ``HOIDiffusionPhotoBackend`` (crop options are its own)."""
    import cv2

    from hoigen.datasets.photo import photo_in_frame
    from hoigen.diffusion.common import stage_seed
    from hoigen.diffusion.hoidiffusion.conditions import Crop, crop_conditions
    from hoigen.diffusion.hoidiffusion.pipeline import PhotoRequest, build_prompt
    from hoigen.objects.categories import NOCS_CLASSES

    names = {v: k for k, v in NOCS_CLASSES.items()}
    camera_dir = Path(report["out"]) / "CAMERA"
    size, margin = backend.options.crop_size, backend.options.crop_margin
    done = 0
    for i, frame in enumerate(report.get("frames", [])):
        base = camera_dir / frame["name"]
        hoi_path = Path(f"{base}_hoi.json")
        record = json.loads(hoi_path.read_text())
        if "photo" in record:
            done += 1
            continue
        stack, seg, color = frame_conditions_from_nocs(base, record)
        ys, xs = np.nonzero(seg)
        if len(xs) == 0:
            logger.warning("HOI frame %s has no hand or object pixels; kept as rendered", frame["name"])
            continue
        x0, x1 = xs.min() - margin, xs.max() + 1 + margin
        y0, y1 = ys.min() - margin, ys.max() + 1 + margin
        side = int(max(x1 - x0, y1 - y0))
        crop = Crop(int((x0 + x1 - side) // 2), int((y0 + y1 - side) // 2), side, size)
        K = record["camera"]["K"]  # noqa: N806
        category = names.get(int(record["grasped"]["class_id"]), "object")
        meta = {"key": frame["name"], "camera": {"K": K}, "object": {"category": category}}
        request = PhotoRequest({}, meta, stage_seed(seed, i, "photo"))
        request.conditions = crop_conditions(stack, crop)[None]
        request.crop = crop
        request.frames = [0]
        request.prompt = build_prompt(meta, backend.options, np.random.default_rng(request.seed))
        ((members, gen),) = backend.generate([request])
        from hoigen.render.png import decode_png

        photo = decode_png(members["f000.photo.png"])
        pasted = photo_in_frame(photo, color, crop.to_dict(K))
        out = color.copy()
        out[seg] = pasted[seg]
        tmp = Path(f"{base}_color.png.partial.png")
        cv2.imwrite(str(tmp), np.ascontiguousarray(out[..., ::-1]))
        os.replace(tmp, f"{base}_color.png")
        record["photo"] = {**gen, "replaced": "hand and grasped object pixels"}
        tmp = Path(f"{hoi_path}.partial")
        tmp.write_text(json.dumps(record, indent=1))
        os.replace(tmp, hoi_path)
        done += 1
    return {"photo_frames": done, "frames": len(report.get("frames", []))}
