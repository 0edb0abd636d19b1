"""``hoigen eval photo|video RUN_OR_SHARDS``: image/video quality and condition fidelity, offline.

Inputs:

- **shards** (a hoigen output folder, e.g. of ``hoigen generate`` on real-data or render shards): generated =
  ``photo`` (photo) or the decoded ``video`` frames (video); reference = ``rgb`` (the real frame of a
  ``dexycb:``/``ho3d:`` run, or the render); region = hand ∪ object of ``hoimask``; 2D keypoints from the labels.
- **a training run** (``RUN/`` with ``config.yaml``): the latest sample set ``RUN/samples/step-*.npz`` the trainer
  wrote (generated vs target of its fixed validation examples).

Metrics, and which local files they need:

| metric | needs |
|---|---|
| ``psnr``, ``ssim`` (full frame), ``psnr_masked``, ``ssim_masked`` (hand ∪ object region; the HVG-3D paper's
  Table 2 idea) | nothing |
| ``mask_iou`` (condition fidelity: a two-class colour segmentation of the generated image, seeded by the
  eroded mask and the dilated background, against the condition mask; ``mask_iou_reference`` = the same check on
  the reference image, its ceiling) | nothing |
| ``lpips`` | ``--lpips FILE``: a TorchScript module ``f(x, y) -> distance`` on (B, 3, H, W) in [-1, 1] (e.g. an
  LPIPS network you exported; the ``lpips`` package would download its backbone) |
| ``fid`` | ``--fid-features FILE``: a TorchScript feature extractor (B, 3, H, W) in [0, 1] -> (B, D) (e.g. an
  Inception-v3 pool3 you exported); the Fréchet distance is computed here |
| ``keypoint_error_px``, ``pck@5px`` (2D skeleton agreement) | ``--keypoints FILE``: TorchScript (B, 3, H, W) in
  [0, 1] -> (B, 21, 2) px in OpenPose order; shards only (labels' ``joints2d``) |

SSIM is Wang et al.'s: Gaussian window σ = 1.5 (11 taps), C1 = (0.01·255)², C2 = (0.03·255)², per RGB channel,
averaged; the masked version averages the SSIM map over the region.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

KINDS = ("photo", "video")


def psnr(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    """PSNR (dB) of two (H, W, 3) uint8 images, over ``mask`` (H, W) bool pixels if given (inf if equal)."""
    diff = (np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2
    if mask is not None:
        if not mask.any():
            return float("nan")
        diff = diff[mask]
    mse = float(diff.mean())
    return float("inf") if mse == 0 else float(10.0 * np.log10(255.0**2 / mse))


def ssim_map(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(H, W) SSIM map of two (H, W, 3) uint8 images (channel mean)."""
    from scipy.ndimage import gaussian_filter

    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    out = []
    for ch in range(a.shape[2]):
        x = np.asarray(a[..., ch], np.float64)
        y = np.asarray(b[..., ch], np.float64)

        def blur(z):
            return gaussian_filter(z, 1.5, truncate=3.5)

        mx, my = blur(x), blur(y)
        sxx = blur(x * x) - mx * mx
        syy = blur(y * y) - my * my
        sxy = blur(x * y) - mx * my
        out.append(((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2)))
    return np.mean(out, axis=0)


def ssim(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    m = ssim_map(a, b)
    if mask is not None:
        return float(m[mask].mean()) if mask.any() else float("nan")
    return float(m.mean())


def colour_mask_iou(image: np.ndarray, mask: np.ndarray, erode: int = 2, dilate: int = 4) -> float:
    """IoU of a two-class colour segmentation of ``image`` with the condition ``mask`` (H, W) bool.

    Foreground / background RGB Gaussians are fitted on the mask eroded by ``erode`` px and on the complement of
    the mask dilated by ``dilate`` px; every pixel goes to the likelier class. An image that ignores the mask has
    the same colours inside and out, so the segmentation (and the IoU) falls apart. NaN when a seed set is empty.
    """
    from scipy.ndimage import binary_dilation, binary_erosion

    mask = np.asarray(mask, bool)
    fg = binary_erosion(mask, iterations=erode) if erode else mask
    bg = ~binary_dilation(mask, iterations=dilate) if dilate else ~mask
    if fg.sum() < 4 or bg.sum() < 4:
        return float("nan")
    pixels = np.asarray(image, np.float64).reshape(-1, 3)
    scores = []
    for seeds in (fg, bg):
        x = pixels[seeds.reshape(-1)]
        mean = x.mean(axis=0)
        cov = np.cov(x.T) + np.eye(3) * 4.0
        inv = np.linalg.inv(cov)
        d = pixels - mean
        scores.append(-0.5 * np.einsum("ni,ij,nj->n", d, inv, d) - 0.5 * np.linalg.slogdet(cov)[1])
    pred = (scores[0] > scores[1]).reshape(mask.shape)
    union = (pred | mask).sum()
    return float((pred & mask).sum() / union) if union else float("nan")


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to features a (N, D) and b (M, D)."""
    from scipy import linalg

    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    covmean, _ = linalg.sqrtm(s1 @ s2, disp=False)
    covmean = np.real(covmean)
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


# ---------------------------------------------------------------------------------------------------------------
# inputs


def _pairs_from_run(run: Path, kind: str):
    """(generated, reference, region, None) per frame from the latest sample set of a training run."""
    files = sorted((run / "samples").glob("step-*.npz"), key=lambda p: int(p.stem.split("-")[1]))
    if not files:
        raise FileNotFoundError(f"{run} has no samples/step-*.npz (the trainer writes them every --sample-every)")
    data = np.load(files[-1])
    gen, ref = data["generated"], data["target"]
    if kind == "photo":
        if "hoimask" not in data:
            raise ValueError(f"{files[-1]} holds video samples; use `hoigen eval video`")
        for g, r, m in zip(gen, ref, data["hoimask"]):
            yield g, r, np.asarray(m).any(axis=2), None
    else:
        if "seg" not in data:
            raise ValueError(f"{files[-1]} holds photo samples; use `hoigen eval photo`")
        for gv, rv, sv in zip(gen, ref, data["seg"]):
            for g, r, s in zip(gv, rv, sv):
                yield g, r, np.asarray(s) > 0, None


def _pairs_from_shards(source, kind: str):
    from hoigen.datasets.reader import open_sequences
    from hoigen.diffusion.hoidiffusion.conditions import binary_seg

    member = "photo" if kind == "photo" else "video"
    found = False
    for sequence in open_sequences(source):
        for t, frame in enumerate(sequence["frames"]):
            if member not in frame:
                continue
            found = True
            joints = sequence["meta"]["frames"][t].get("joints2d")
            yield frame[member], frame["rgb"], binary_seg(frame["hoimask"]), joints
    if not found:
        raise ValueError(
            f"{source}: no {member} frames to evaluate (run `hoigen generate --{kind} ...` on these shards first)"
        )


def _load_script(path, flag: str):
    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{flag} {path} does not exist (a TorchScript file, see `hoigen eval --help`)")
    try:
        return torch.jit.load(str(path), map_location="cpu").eval()
    except Exception as error:  # noqa: BLE001 - any load failure is the user's file
        raise ValueError(f"{flag} {path} is not a loadable TorchScript module: {error}") from error


def _tensor(image: np.ndarray):
    import torch

    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float() / 255.0


def evaluate(source, kind: str, *, lpips: str | None = None, fid_features: str | None = None,
             keypoints: str | None = None, limit: int | None = None) -> dict:
    """Metrics of generated vs reference frames (module docstring); returns {metric: value, 'frames': n}."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    source_path = Path(source)
    if source_path.is_dir() and (source_path / "config.yaml").is_file() and (source_path / "samples").is_dir():
        pairs = _pairs_from_run(source_path, kind)
    else:
        pairs = _pairs_from_shards(source, kind)
    lp = _load_script(lpips, "--lpips") if lpips else None
    fe = _load_script(fid_features, "--fid-features") if fid_features else None
    kp = _load_script(keypoints, "--keypoints") if keypoints else None
    values: dict[str, list[float]] = {}
    feats_gen, feats_ref = [], []
    n = 0

    def add(name, value):
        if value is not None and not np.isnan(value):
            values.setdefault(name, []).append(float(value))

    import torch

    for generated, reference, region, joints in pairs:
        generated, reference = np.asarray(generated), np.asarray(reference)
        if generated.shape != reference.shape:
            raise ValueError(f"generated frame {generated.shape} and reference {reference.shape} differ in size")
        add("psnr", psnr(generated, reference))
        add("ssim", ssim(generated, reference))
        add("psnr_masked", psnr(generated, reference, region))
        add("ssim_masked", ssim(generated, reference, region))
        add("mask_iou", colour_mask_iou(generated, region))
        add("mask_iou_reference", colour_mask_iou(reference, region))
        with torch.no_grad():
            if lp is not None:
                add("lpips", float(lp(_tensor(generated) * 2 - 1, _tensor(reference) * 2 - 1).flatten()[0]))
            if fe is not None:
                feats_gen.append(fe(_tensor(generated)).reshape(1, -1).numpy())
                feats_ref.append(fe(_tensor(reference)).reshape(1, -1).numpy())
            if kp is not None and joints is not None:
                pred = kp(_tensor(generated)).reshape(-1, 2).numpy()
                err = np.linalg.norm(pred - np.asarray(joints, np.float64).reshape(-1, 2), axis=1)
                add("keypoint_error_px", float(err.mean()))
                add("pck@5px", float((err < 5.0).mean()))
        n += 1
        if limit and n >= limit:
            break
    out = {name: float(np.mean(v)) for name, v in sorted(values.items())}
    if fe is not None:
        if n < 2:
            raise ValueError("FID needs at least 2 frames")
        out["fid"] = frechet_distance(np.concatenate(feats_gen), np.concatenate(feats_ref))
    out["frames"] = n
    return out
