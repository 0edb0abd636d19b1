"""One sample = one grasp sequence, planned from (run config, sample index) alone.

Randomness (SPEC §2): sample ``i`` of a run with seed ``s`` uses ``numpy.random.default_rng([s, i])``; each stage
gets its own sub-stream spawned from it (``STAGES``), so changing one stage's configuration does not change the
random draws of the others, and samples are independent of how they are split across workers.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from hoigen.config import RunConfig
from hoigen.geometry.camera import CameraSample, sample_camera
from hoigen.grasping.contact import Grasp
from hoigen.grasping.grabnet_data import grasp_sampler_factory
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
    """Plans sequences for one run; keeps the grasp samplers (with their distance fields) of recent objects, since
    folder objects come round again every ``#objects`` samples. Reuse changes no result: a sampler's state is a
    pure function of its object and hand.

    ``config.grasp.method`` picks the sampler (``contact`` or ``grabnet``); for ``grabnet`` the MANO hand is checked
    and the weights are loaded here, so those errors come before any sample is planned.
    """

    def __init__(self, config: RunConfig, source, hand: HandModel, cache_size: int | None = None):
        from hoigen.objects import BuiltinSource

        self.config = config
        self.source = source
        self.hand = hand
        if cache_size is None:  # built-in objects never come round again: keep only the current one
            cache_size = 1 if isinstance(source, BuiltinSource) else 8
        self._new_sampler = grasp_sampler_factory(config.grasp, hand)
        self._samplers: OrderedDict = OrderedDict()
        self._cache_size = cache_size

    def _sampler(self, obj: ObjectAsset):
        key = id(obj.mesh)
        sampler = self._samplers.get(key)
        if sampler is None or sampler.obj is not obj:
            sampler = self._new_sampler(obj)
            self._samplers[key] = sampler
            if len(self._samplers) > self._cache_size:
                self._samplers.popitem(last=False)
        self._samplers.move_to_end(key)
        return sampler

    def plan(self, index: int) -> SequencePlan:
        """Raises ``ObjectError`` (bad object file) or ``GraspError`` (no grasp passed the gate)."""
        cfg = self.config
        rngs = stage_rngs(cfg.seed, index)
        obj = self.source.object_for(index, rngs["object"])
        grasp = self._sampler(obj).sample(rngs["grasp"])
        trajectory = make_trajectory(grasp.params, self.hand, cfg.trajectory, rngs["trajectory"], obj.up)
        camera = sample_camera(
            cfg.camera, rngs["camera"], target=np.zeros(3), up=obj.up, object_scale=obj.scale
        )
        return SequencePlan(index, obj, grasp, trajectory, camera, rngs["render"])


def object_for_sample(config: RunConfig, index: int, source=None) -> ObjectAsset:
    """The object of sample ``index`` of a run, rebuilt from its config (shards store its metadata, not its mesh).

    Built-in objects are regenerated from the object stage's stream; folder objects are reloaded. Pass an opened
    ``source`` to reuse its cache across calls.
    """
    from hoigen.sources import is_real_source, source_for_config

    if is_real_source(config.objects.source):  # sample i = window i of the run's split and clip length
        return source_for_config(config).object_for(index)
    if source is None:
        from hoigen.objects import open_source

        source = open_source(config.objects.source, config.objects.units, config.objects.categories)
    return source.object_for(index, stage_rngs(config.seed, index)["object"])
