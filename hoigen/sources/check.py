"""Label truth against a dataset's own labels (``hoigen doctor --source dexycb:ROOT``).

For a few annotated frames, hoigen re-renders the ground truth at the real camera and compares: its 2D joints with
the dataset's ``joint_2d`` (max pixel error over the 21 keypoints), its hand mask with the dataset's hand pixels
(DexYCB ``seg == 255``) and its object mask with the grasped object's (``seg == ycb_id``) as IoU. The dataset's
masks also show other objects occluding the hand or object, which hoigen's two-instance render does not model, so
IoU below 1 on real data is expected where such occlusions occur.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FrameCheck:
    """One frame's figures: ``joints2d_max_px`` / ``joints2d_mean_px`` and ``joints3d_max_mm`` (None without
    dataset keypoints), ``iou_hand`` / ``iou_object`` (None without a dataset segmentation or when both masks are
    empty)."""

    sample: int
    where: str
    joints2d_max_px: float | None
    joints2d_mean_px: float | None
    joints3d_max_mm: float | None
    iou_hand: float | None
    iou_object: float | None


def _iou(a: np.ndarray, b: np.ndarray) -> float | None:
    union = np.count_nonzero(a | b)
    return float(np.count_nonzero(a & b) / union) if union else None


def check_source(spec: str, mano=None, frames: int = 4, split: str = "") -> list[FrameCheck]:
    """Compare hoigen's re-rendered labels with the dataset's for the first ``frames`` annotated frames,
    spread over the source (every ``len // frames``-th sample).

    Args:
        spec: ``dexycb:ROOT`` or ``ho3d:ROOT``. mano: MANO_RIGHT.pkl or its folder (None: ``$HOIGEN_MANO_DIR``).
    """
    from hoigen.config import RunConfig
    from hoigen.hands import load_hand
    from hoigen.sources import open_real_source
    from hoigen.synth.real import RealSampler

    source = open_real_source(spec, split, 1)
    hand = load_hand("mano", mano)
    config = RunConfig().replace(
        objects={"source": spec},
        hand={"model": "mano", "mano": str(mano or "")},
        real={"split": split},
        trajectory={"frames": 1},
    )
    with RealSampler(config, hand) as sampler:
        return _check(sampler, source, frames)


def _check(sampler, source, frames: int) -> list[FrameCheck]:
    from hoigen.sources import MissingAnnotation

    step = max(1, len(source) // max(frames, 1))
    spread = list(range(0, len(source), step))
    order = spread + [i for i in range(len(source)) if i % step]  # unannotated ones are replaced by others
    results: list[FrameCheck] = []
    for index in order:
        if len(results) >= frames:
            break
        try:
            clip = sampler.clip(index)
        except MissingAnnotation as exc:
            logger.info("sample %d has no annotation: %s", index, exc)
            continue
        seq = sampler.render(clip, index)
        frame = seq.frames[0]
        joints_max = joints_mean = joints3d_max = None
        if clip.joints2d is not None:
            error = np.linalg.norm(np.asarray(frame.labels["joints2d"]) - clip.joints2d[0], axis=1)
            joints_max, joints_mean = float(error.max()), float(error.mean())
        if clip.joints3d is not None:
            error = np.linalg.norm(np.asarray(frame.labels["joints3d"]) - clip.joints3d[0], axis=1)
            joints3d_max = float(error.max() * 1000.0)
        iou_hand = iou_obj = None
        if clip.seg is not None:
            iou_hand = _iou(frame.mask == 2, clip.seg[0] == 2)
            iou_obj = _iou(frame.mask == 1, clip.seg[0] == 1)
        where = f"{clip.source['sequence']}" + (
            f"/{clip.source['serial']}" if "serial" in clip.source else ""
        )
        results.append(
            FrameCheck(
                index,
                f"{where} frame {clip.source['frames'][0]}",
                joints_max,
                joints_mean,
                joints3d_max,
                iou_hand,
                iou_obj,
            )
        )
    if not results:
        raise ValueError(f"{source.describe()}: none of the checked frames has an annotation")
    return results


def format_checks(checks: list[FrameCheck]) -> list[str]:
    """Report lines: one per frame, then the worst figures."""

    def num(value, fmt):
        return "n/a" if value is None else format(value, fmt)

    lines = [
        f"{c.where}: joints2d max {num(c.joints2d_max_px, '.2e')} px (mean {num(c.joints2d_mean_px, '.2e')}), "
        f"joints3d max {num(c.joints3d_max_mm, '.2e')} mm, IoU hand {num(c.iou_hand, '.3f')}, object {num(c.iou_object, '.3f')}"
        for c in checks
    ]
    worst = [c.joints2d_max_px for c in checks if c.joints2d_max_px is not None]
    hand = [c.iou_hand for c in checks if c.iou_hand is not None]
    obj = [c.iou_object for c in checks if c.iou_object is not None]
    lines.append(
        f"worst over {len(checks)} frames: joints2d {num(max(worst) if worst else None, '.2e')} px, IoU hand "
        f"{num(min(hand) if hand else None, '.3f')}, object {num(min(obj) if obj else None, '.3f')}"
    )
    return lines


__all__ = ["FrameCheck", "check_source", "format_checks"]
