"""Samples from real data: the real frame as ``rgb``, every other member rendered from the ground truth.

For a run whose ``objects.source`` is ``dexycb:ROOT`` or ``ho3d:ROOT``, sample ``i`` is window ``i`` of the
source (``trajectory.frames`` consecutive frames of one camera, :mod:`hoigen.sources`). Its clip record is turned
into a one-camera "trajectory" in the camera frame (``T_cam_world`` = identity) and rendered with hoigen's renderer
at the real camera, so depth, mask, normal, NOCS, skeleton, hand-object mask, points and tracking are exact for the
dataset's ground truth; ``rgb`` is then replaced by the real frame. The members and ``meta.json`` keys are those of
a synthetic sample (SPEC §3), so exports and the reader need no special case; in addition:

- ``meta.source``: dataset, root, sequence, camera, frame numbers and files the frames came from (and any resize);
- ``meta.grasp.method`` = ``dataset``, ``meta.appearance.model`` = ``real``;
- ``fNNN.sensor_depth.png``: the dataset's own depth (uint16 in the run's ``depth_scale`` units), when present;
- ``fNNN.dataset_seg.png``: the dataset's segmentation in hoigen ids (0, 1 object, 2 hand, 255 other objects),
  when the dataset has one (DexYCB).

Frames without annotation make their sample a logged skip (counted in the manifest's ``skipped``).
"""

from __future__ import annotations

import logging
import time

import numpy as np

from hoigen.datasets.shards import SCHEMA_VERSION, sample_key, sequence_members
from hoigen.sources import MissingAnnotation, RealClip, source_for_config
from hoigen.sources.record import resize_clip

logger = logging.getLogger(__name__)


def check_real_config(config, hand) -> None:
    """Refuse run options that real clips cannot honour (before any work)."""
    if config.trajectory.manipulation_frames:
        raise ValueError(
            "--manipulation does not apply to real-data sources: a sample is --clip consecutive real frames"
        )
    if getattr(hand, "path", None) is None:
        raise ValueError(
            f"real-data sources ({config.objects.source}) carry MANO ground truth: use --hand mano --mano DIR "
            "(the built-in hand has other geometry, so its conditions would not match the frames)"
        )


def check_real_job(job, hand) -> None:
    """Fail before any work: real-run options, the split's source (calibration, models) and ``--n``."""
    check_real_config(job.config, hand)
    source = source_for_config(job.config)
    if job.n > len(source):
        raise ValueError(
            f"--n {job.n} is more than the {len(source)} clips of {source.describe()}; omit --n to take them all"
        )


class RealSampler:
    """Makes the samples of a real-data run (one per process; keeps one GL context).

    Args:
        config: the run config (``objects.source`` a real source, ``real`` its options, ``trajectory.frames``
            the clip length).
        hand: the MANO hand.
    """

    def __init__(self, config, hand):
        check_real_config(config, hand)
        self.config = config
        self.hand = hand
        self.source = source_for_config(config)
        self._renderer = None

    def renderer(self, intrinsics):
        from hoigen.render.renderer import Renderer

        r = self._renderer
        if r is not None and (r.intrinsics.width, r.intrinsics.height) != (
            intrinsics.width,
            intrinsics.height,
        ):
            r.close()
            r = None
        if r is None:
            r = self._renderer = Renderer(intrinsics, self.config.render)
        r.intrinsics = intrinsics  # same GL context, this clip's camera
        return r

    def close(self) -> None:
        """Free the GL context now (a context closed later by the garbage collector may interrupt another's
        render in the same process)."""
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def clip(self, index: int) -> RealClip:
        """The (resized) clip record of sample ``index``; raises MissingAnnotation for unannotated frames."""
        clip = self.source.load(index, self.hand)
        size = self.config.real.size
        return resize_clip(clip, size) if size else clip

    def render(self, clip: RealClip, index: int):
        """Render ``clip``'s conditions at its camera -> ``SequenceRender`` whose ``rgb`` is the real frame."""
        from hoigen.grasping.trajectory import Trajectory
        from hoigen.synth.recipe import stage_rngs

        T = clip.num_frames
        trajectory = Trajectory(clip.T_cam_obj, clip.hand, np.ones(T), np.zeros(T, dtype=np.int64))
        rng = stage_rngs(self.config.seed, index)["render"]
        seq = self.renderer(clip.intrinsics).render_sequence(
            clip.object, self.hand, trajectory, np.eye(4), rng
        )
        for frame, rgb in zip(seq.frames, clip.rgb):
            frame.rgb = np.ascontiguousarray(rgb)
        return seq

    def sample(self, index: int, mesh_ref=None):
        """(members, info) of sample ``index``, or (None, skip record) — the ``ShardProducer.sample`` contract.

        ``mesh_ref``: object -> its mesh-store reference (``meta.object.mesh``), when the run stores meshes.
        """
        from hoigen.render.labels import encode_depth

        t0 = time.perf_counter()
        window = self.source.window(index)
        try:
            clip = self.clip(index)
        except MissingAnnotation as exc:
            logger.warning("skipping sample %d (%s): %s", index, window.sequence, exc)
            return None, {"index": index, "object": window.sequence, "reason": str(exc)}
        t1 = time.perf_counter()
        seq = self.render(clip, index)
        t2 = time.perf_counter()
        meta = real_sample_meta(self.config, index, clip, self.hand, seq)
        if mesh_ref is not None:
            meta["object"]["mesh"] = mesh_ref(clip.object)
        members = sequence_members(seq, meta)
        depth_scale = float(seq.meta["depth_scale"])
        for t in range(clip.num_frames):
            from hoigen.render.png import encode_png

            if clip.depth_m is not None:
                members[f"f{t:03d}.sensor_depth.png"] = encode_png(encode_depth(clip.depth_m[t], depth_scale))
            if clip.seg is not None:
                members[f"f{t:03d}.dataset_seg.png"] = encode_png(clip.seg[t])
        t3 = time.perf_counter()
        return members, {
            "seconds": {"grasp": t1 - t0, "render": t2 - t1, "encode": t3 - t2},
            "grasp_candidates": 0,
            "grasp_passed": 0,
        }


def real_sample_meta(config, index: int, clip: RealClip, hand, seq) -> dict:
    """``meta.json`` of a real sample: the keys of a synthetic one (SPEC §3) plus ``source``."""
    T = clip.num_frames
    frames = []
    for t, frame in enumerate(seq.frames):
        labels = dict(frame.labels)
        labels["source_frame"] = int(clip.source["frames"][t])
        frames.append(labels)
    return {
        "schema": SCHEMA_VERSION,
        "seed": config.seed,
        "index": index,
        "key": sample_key(index),
        "object": clip.object.metadata(),
        "hand": {**hand.metadata(), "betas": clip.hand.betas[0].tolist()},
        "camera": {**clip.intrinsics.to_dict(), "T_cam_world": np.eye(4).tolist()},
        "grasp": {"method": "dataset", "metrics": {}, "approach": None},
        "trajectory": {"t": [1.0] * T, "phase": [0] * T},
        "appearance": {"model": "real", "dataset": clip.source.get("dataset")},
        "object_albedo": seq.meta["object_albedo"],
        "depth_scale": seq.meta["depth_scale"],
        "instances": seq.meta["instances"],
        "source": clip.source,
        "frames": frames,
        "config": config.to_dict(),
    }


__all__ = ["RealSampler", "check_real_config", "real_sample_meta"]
