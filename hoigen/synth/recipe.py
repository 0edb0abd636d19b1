"""One sample = one grasp sequence, planned from (run config, sample index) alone.

Randomness (SPEC §2): sample ``i`` of a run with seed ``s`` uses ``numpy.random.default_rng([s, i])``; each stage
gets its own sub-stream spawned from it (``STAGES``), so changing one stage's configuration does not change the
random draws of the others, and samples are independent of how they are split across workers.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from hoigen.config import RunConfig
from hoigen.geometry.camera import CameraSample, sample_camera
from hoigen.grasping.contact import ContactGraspSampler, Grasp
from hoigen.grasping.trajectory import Trajectory, make_trajectory
from hoigen.hands.model import HandModel
from hoigen.objects.asset import ObjectAsset

logger = logging.getLogger(__name__)

STAGES = ("object", "grasp", "trajectory", "camera", "render")


def stage_rngs(seed: int, index: int) -> dict[str, np.random.Generator]:
    """The per-stage generators of sample ``index``: children of ``default_rng([seed, index])``."""
    root = np.random.default_rng([seed, index])
    return dict(zip(STAGES, root.spawn(len(STAGES))))


@dataclass(frozen=True)
class SequencePlan:
    """Everything a sequence needs before rendering.

    Attributes:
        index: sample index; object: the object (canonical frame); grasp: object-frame grasp; trajectory: world
        frame = object canonical frame at frame 0; camera: intrinsics and ``T_cam_world``; render_rng: the render
        stage's generator (appearance, point samples).
    """

    index: int
    object: ObjectAsset
    grasp: Grasp
    trajectory: Trajectory
    camera: CameraSample
    render_rng: np.random.Generator


class SequencePlanner:
    """Plans sequences for one run; keeps the last object's grasp sampler (and its distance field) for reuse."""

    def __init__(self, config: RunConfig, source, hand: HandModel):
        self.config = config
        self.source = source
        self.hand = hand
        self._sampler: tuple[int, ContactGraspSampler] | None = None

    def plan(self, index: int) -> SequencePlan:
        """Raises ``ObjectError`` (bad object file) or ``GraspError`` (no grasp passed the gate)."""
        cfg = self.config
        rngs = stage_rngs(cfg.seed, index)
        obj = self.source.object_for(index, rngs["object"])
        if self._sampler is None or self._sampler[1].obj is not obj:
            self._sampler = (index, ContactGraspSampler(obj, self.hand, cfg.grasp))
        grasp = self._sampler[1].sample(rngs["grasp"])
        trajectory = make_trajectory(grasp.params, self.hand, cfg.trajectory, rngs["trajectory"], obj.up)
        camera = sample_camera(cfg.camera, rngs["camera"], target=np.zeros(3), up=obj.up)
        return SequencePlan(index, obj, grasp, trajectory, camera, rngs["render"])
