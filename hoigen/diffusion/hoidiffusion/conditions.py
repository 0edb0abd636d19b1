"""The three HOIDiffusion condition images of a frame, in the convention the released adapters were trained on.

One path for inference and training (``hoigen train hoidiffusion`` builds its conditions here too).

Order of the MultiAdapter (and of every condition stack here): **[skeleton, normal, mask]**.

- skeleton: hoigen's ``fNNN.skeleton.png`` as rendered (black background, 21 OpenPose keypoints, HOIDiffusion's
  finger palette — ``hoigen.render.conditions``).
- mask: ``fNNN.hoimask.png`` as rendered: hand (128, 128, 128), object (153, 51, 51), background black.
- normal: HOIDiffusion never saw analytic normals. Its adapter was trained on normals made from MiDaS disparity
  ``d`` of the RGB image: ``n = normalise(Sobel_x(d), Sobel_y(d), 2π)``, zero where the min-max normalised
  disparity is < 0.1, stored as ``(n + 1) / 2`` and multiplied by the binary hand∪object mask. Disparity grows
  toward the camera, so the gradient of ``d`` in the image points *against* the surface normal's image-plane
  component: for a plane ``n·X = c`` (``c < 0`` when it faces the camera) ``1/z = (n_x u' + n_y v' + n_z) / c``
  with ``u' = (u - c_x) / f``, hence ``∇d ∝ -(n_x, n_y)`` exactly. hoigen's exact normals (OpenCV camera frame,
  facing the camera so ``n_z < 0``) are therefore mapped to ``(-n + 1) / 2``: R = (-n_x+1)/2, G = (-n_y+1)/2,
  B = (-n_z+1)/2 > 0.5 — the sign convention of the MiDaS-Sobel map (its tilt magnitude depends on MiDaS's
  arbitrary disparity scale; the direction does not). ``midas_sobel_normals`` implements the paper's recipe and is
  used for ``--normals midas`` (disparity from transformers' ``DPTForDepthEstimation``) and by the tests that
  compare both conventions.

All images are float32 in [0, 1], (3, H, W) channel-first, as the adapters take them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CONDITION_ORDER = ("skeleton", "normal", "mask")
NORMAL_MODES = ("exact", "midas")
MIDAS_Z = 2.0 * np.pi
MIDAS_BACKGROUND_THRESHOLD = 0.1
MIDAS_INPUT_SIZE = 384
CROP_MARGIN_PX = 50


def binary_seg(mask: np.ndarray) -> np.ndarray:
    """(H, W) bool hand ∪ object from an instance-id mask (0 = background) or a hoimask RGB image."""
    mask = np.asarray(mask)
    if mask.ndim == 3:
        return mask.any(axis=2)
    return mask > 0


def exact_normal_condition(normal_png: np.ndarray, seg: np.ndarray) -> np.ndarray:
    """Map hoigen's stored normals to the adapters' MiDaS-Sobel convention.

    Args:
        normal_png: (H, W, 3) uint8, OpenCV camera-frame unit normal stored as (n + 1) / 2.
        seg: (H, W) bool hand ∪ object.
    Returns:
        (H, W, 3) float32 in [0, 1]: (-n + 1) / 2 on ``seg``, 0 elsewhere.
    """
    normal_png = np.asarray(normal_png)
    if normal_png.ndim != 3 or normal_png.shape[2] != 3 or normal_png.dtype != np.uint8:
        raise ValueError(f"normal image must be (H, W, 3) uint8, got {normal_png.shape} {normal_png.dtype}")
    n = normal_png.astype(np.float32) / 255.0 * 2.0 - 1.0
    norm = np.linalg.norm(n, axis=2, keepdims=True)
    n = np.where(norm > 1e-6, n / np.maximum(norm, 1e-6), 0.0)
    out = (1.0 - n) * 0.5
    return (out * seg[..., None]).astype(np.float32)


def midas_sobel_normals(disparity: np.ndarray, seg: np.ndarray | None = None) -> np.ndarray:
    """HOIDiffusion's normal map from a (relative) disparity map.

    Args:
        disparity: (H, W) float, larger = closer (MiDaS output or 1/depth).
        seg: optional (H, W) bool hand ∪ object; the map is multiplied by it.
    Returns:
        (H, W, 3) float32 in [0, 1]: (n + 1) / 2 with n = normalise(Sobel_x d, Sobel_y d, 2π), 0 where the min-max
        normalised disparity is below 0.1.
    """
    import cv2

    d = np.asarray(disparity, dtype=np.float64)
    if d.ndim != 2:
        raise ValueError(f"disparity must be (H, W), got {d.shape}")
    gx = cv2.Sobel(d, cv2.CV_64F, 1, 0, ksize=3)
    gy = cv2.Sobel(d, cv2.CV_64F, 0, 1, ksize=3)
    n = np.stack([gx, gy, np.full_like(d, MIDAS_Z)], axis=2)
    n /= np.linalg.norm(n, axis=2, keepdims=True)
    out = (n + 1.0) * 0.5
    span = d.max() - d.min()
    rel = (d - d.min()) / span if span > 0 else np.zeros_like(d)
    out[rel < MIDAS_BACKGROUND_THRESHOLD] = 0.0
    if seg is not None:
        out *= seg[..., None]
    return out.astype(np.float32)


def disparity_from_depth(depth_png: np.ndarray, max_value: float = 1000.0) -> np.ndarray:
    """(H, W) disparity ∝ 1/depth (0 on background) from a depth map in any positive unit, scaled so its maximum is
    ``max_value`` (the order of ``dpt-hybrid-midas``'s raw outputs, which the Sobel recipe with z = 2π assumes)."""
    depth = np.asarray(depth_png, dtype=np.float64)
    disp = np.where(depth > 0, 1.0 / np.maximum(depth, 1e-12), 0.0)
    peak = disp.max()
    return disp * (max_value / peak) if peak > 0 else disp


class MidasDepth:
    """transformers' ``DPTForDepthEstimation`` (the user's local ``dpt-hybrid-midas`` copy) as the paper used it.

    The RGB image is resized to 384² (bicubic), normalised with mean = std = 0.5, and the predicted relative
    disparity resized back to the frame size.
    """

    def __init__(self, model_dir, device: str = "cpu"):
        from pathlib import Path

        import torch
        from transformers import DPTForDepthEstimation

        path = Path(model_dir)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(
                f"--midas {model_dir}: no config.json there; give a local copy of a DPT depth model "
                "(e.g. Intel/dpt-hybrid-midas saved with save_pretrained); nothing is downloaded"
            )
        self.device = device
        self.model = DPTForDepthEstimation.from_pretrained(path, local_files_only=True).to(device).eval()
        self._torch = torch

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        """(H, W) float32 relative disparity of an (H, W, 3) uint8 image."""
        torch = self._torch
        import torch.nn.functional as F  # noqa: N812

        h, w = rgb.shape[:2]
        x = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None].float() / 255.0
        x = F.interpolate(x, size=(MIDAS_INPUT_SIZE, MIDAS_INPUT_SIZE), mode="bicubic", align_corners=False)
        x = (x.clamp(0, 1) - 0.5) / 0.5
        with torch.no_grad():
            pred = self.model(pixel_values=x.to(self.device)).predicted_depth
        pred = F.interpolate(pred[:, None].float().cpu(), size=(h, w), mode="bicubic", align_corners=False)
        return pred[0, 0].numpy().astype(np.float32)


def frame_conditions(
    frame: dict,
    normals: str = "exact",
    midas: MidasDepth | None = None,
) -> np.ndarray:
    """The (3, 3, H, W) float32 condition stack [skeleton, normal, mask] of one frame.

    Args:
        frame: decoded frame images: ``skeleton`` (H, W, 3) uint8, ``hoimask`` (H, W, 3) uint8, ``normal``
            (H, W, 3) uint8 (for ``normals='exact'``), ``rgb`` (H, W, 3) uint8 (for ``normals='midas'``).
        normals: 'exact' (hoigen's normals mapped to the trained convention) or 'midas' (the paper's recipe on the
            RGB image, needs ``midas``).
    """
    if normals not in NORMAL_MODES:
        raise ValueError(f"--normals must be one of {NORMAL_MODES}, got {normals!r}")
    for key in ("skeleton", "hoimask"):
        if key not in frame:
            raise ValueError(
                f"frame has no {key!r} image; the photo stage needs skeleton, normal and hoimask"
            )
    skeleton = np.asarray(frame["skeleton"], dtype=np.float32) / 255.0
    hoimask = np.asarray(frame["hoimask"])
    seg = binary_seg(hoimask)
    if normals == "exact":
        if "normal" not in frame:
            raise ValueError("frame has no 'normal' image; use --normals midas or re-render with normals")
        normal = exact_normal_condition(frame["normal"], seg)
    else:
        if midas is None:
            raise ValueError("--normals midas needs --midas DIR (a local DPT depth model)")
        normal = midas_sobel_normals(midas(frame["rgb"]), seg)
    mask = hoimask.astype(np.float32) / 255.0
    stack = np.stack([skeleton, normal, mask])  # (3, H, W, 3)
    return np.ascontiguousarray(stack.transpose(0, 3, 1, 2))


# ----------------------------------------------------------------------------------------------------------------
# Crop mode: the hand-object region as HOIDiffusion was trained (box ± 50 px, square, 512²)


@dataclass(frozen=True)
class Crop:
    """A square crop ``[x0, x0 + side) × [y0, y0 + side)`` of the frame (may extend past the image) resized to
    ``size`` × ``size``. Pixel centres are at integer coordinates, so u' = (u - x0 + 0.5)·s - 0.5, s = size/side.
    """

    x0: int
    y0: int
    side: int
    size: int

    @property
    def scale(self) -> float:
        return self.size / self.side

    def K(self, K: np.ndarray) -> np.ndarray:  # noqa: N802, N803
        """(3, 3) intrinsics of the crop image."""
        s = self.scale
        K2 = np.array(K, dtype=np.float64).copy()  # noqa: N806
        K2[0, 0] *= s
        K2[0, 1] *= s
        K2[1, 1] *= s
        K2[0, 2] = (K[0][2] - self.x0 + 0.5) * s - 0.5
        K2[1, 2] = (K[1][2] - self.y0 + 0.5) * s - 0.5
        return K2

    def to_dict(self, K) -> dict:  # noqa: N803
        return {"box": [self.x0, self.y0, self.side, self.side], "size": self.size, "K": self.K(K).tolist()}

    def apply(self, image: np.ndarray, nearest: bool = False) -> np.ndarray:
        """Crop (zero-padded outside the image) and resize an (H, W[, C]) image."""
        import cv2

        h, w = image.shape[:2]
        pad = np.zeros((self.side, self.side, *image.shape[2:]), dtype=image.dtype)
        xa, ya = max(self.x0, 0), max(self.y0, 0)
        xb, yb = min(self.x0 + self.side, w), min(self.y0 + self.side, h)
        if xb > xa and yb > ya:
            pad[ya - self.y0 : yb - self.y0, xa - self.x0 : xb - self.x0] = image[ya:yb, xa:xb]
        interp = (
            cv2.INTER_NEAREST if nearest else (cv2.INTER_AREA if self.side > self.size else cv2.INTER_LINEAR)
        )
        return cv2.resize(pad, (self.size, self.size), interpolation=interp)


def sequence_crop(meta: dict, size: int = 512, margin: int = CROP_MARGIN_PX) -> Crop:
    """One square crop for the whole sequence: the union over frames of the object and hand boxes ± ``margin``."""
    boxes = []
    for frame in meta.get("frames", []):
        for key in ("bbox_obj", "bbox_hand"):
            box = frame.get(key)
            if box and box[2] > 0 and box[3] > 0:
                boxes.append(box)
    width, height = int(meta["camera"]["width"]), int(meta["camera"]["height"])
    if not boxes:
        side = min(width, height)
        return Crop((width - side) // 2, (height - side) // 2, side, size)
    b = np.array(boxes, dtype=np.float64)
    x_min = max(b[:, 0].min(), 0.0)
    y_min = max(b[:, 1].min(), 0.0)
    x_max = min((b[:, 0] + b[:, 2]).max(), width)
    y_max = min((b[:, 1] + b[:, 3]).max(), height)
    x_min, y_min, x_max, y_max = x_min - margin, y_min - margin, x_max + margin, y_max + margin
    side = int(np.ceil(max(x_max - x_min, y_max - y_min)))
    cx, cy = (x_min + x_max) / 2.0, (y_min + y_max) / 2.0
    return Crop(int(np.floor(cx - side / 2.0)), int(np.floor(cy - side / 2.0)), max(side, 8), size)


def crop_frame(frame: dict, crop: Crop) -> dict:
    """The frame's images cropped and resized (masks nearest-neighbour)."""
    nearest = {"hoimask", "mask"}
    return {
        k: crop.apply(np.asarray(v), nearest=k in nearest) for k, v in frame.items() if hasattr(v, "shape")
    }


def crop_conditions(stack: np.ndarray, crop: Crop) -> np.ndarray:
    """Crop a (3, 3, H, W) condition stack [skeleton, normal, mask] (mask nearest-neighbour, others linear)."""
    out = []
    for i, name in enumerate(CONDITION_ORDER):
        image = np.ascontiguousarray(stack[i].transpose(1, 2, 0))
        out.append(crop.apply(image, nearest=name == "mask").transpose(2, 0, 1))
    return np.ascontiguousarray(np.stack(out))
