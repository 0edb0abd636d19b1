"""Grasp trajectories: the HOIDiffusion approach recipe, generalised, plus an optional manipulation phase.

Approach (REFERENCE.md): the end pose is the grasp; the start pose keeps the grasp's global orientation, opens every
finger joint (zero rotation) and puts the wrist ``approach_distance`` (0.3 m) from the object centre along the
direction of the grasp's wrist. In between, each of the 16 joint rotations is slerped independently and the
translation is linear. HOIDiffusion keeps the frames at t = k/11, k = 4..11; here T approach frames span
t in [start_fraction, 1] evenly (start_fraction 4/11 and T = 8 reproduce it exactly).

Manipulation (optional): after the grasp, hand and object move together by one rigid motion that eases in and out
(smoothstep): a lift along the object's up axis, a horizontal shift and a turn about a random axis.

The world frame is the object's canonical frame at the first frame (the object starts at the origin, unrotated).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hoigen.geometry.rotations import (
    axis_angle_to_matrix,
    matrix_to_axis_angle,
    rotation_about,
    slerp_axis_angle,
)
from hoigen.geometry.transforms import make_transform
from hoigen.hands.model import HandModel, HandParams


@dataclass(frozen=True)
class TrajectoryConfig:
    """Trajectory recipe.

    Attributes:
        frames: approach frames T (the last one is the grasp).
        start_fraction: t of the first approach frame (0 = the open start pose itself).
        approach_distance: wrist distance from the object centre at t = 0, metres.
        manipulation_frames: frames after the grasp in which hand and object move together (0 = none).
        lift: range of the lift along the object's up axis, metres.
        shift: range of the horizontal shift, metres.
        turn_deg: range of the turn about a random axis, degrees.
    """

    frames: int = 8
    start_fraction: float = 4.0 / 11.0
    approach_distance: float = 0.3
    manipulation_frames: int = 0
    lift: tuple[float, float] = (0.05, 0.15)
    shift: tuple[float, float] = (0.0, 0.08)
    turn_deg: tuple[float, float] = (0.0, 30.0)

    def __post_init__(self):
        if self.frames < 1:
            raise ValueError(f"trajectory frames must be >= 1, got {self.frames}")
        if not 0.0 <= self.start_fraction <= 1.0:
            raise ValueError(f"start_fraction must be in [0, 1], got {self.start_fraction}")
        if self.approach_distance <= 0:
            raise ValueError(f"approach_distance must be positive metres, got {self.approach_distance}")
        if self.manipulation_frames < 0:
            raise ValueError(f"manipulation_frames must be >= 0, got {self.manipulation_frames}")
        for name in ("lift", "shift", "turn_deg"):
            lo, hi = getattr(self, name)
            if lo > hi:
                raise ValueError(f"trajectory {name} must be (low, high) with low <= high, got {(lo, hi)}")

    @property
    def total_frames(self) -> int:
        return self.frames + self.manipulation_frames


@dataclass(frozen=True)
class Trajectory:
    """A sequence of T frames in the world frame.

    Attributes:
        T_world_obj: (T, 4, 4) object pose per frame (canonical -> world).
        hand: hand parameters (batch T), world frame.
        t: (T,) approach fraction of each frame (1 for manipulation frames).
        phase: (T,) 0 approach, 1 manipulation.
    """

    T_world_obj: np.ndarray
    hand: HandParams
    t: np.ndarray
    phase: np.ndarray


def transform_hand_params(params: HandParams, transform: np.ndarray, rest_wrist: np.ndarray) -> HandParams:
    """Express hand parameters in another frame: the posed hand moves rigidly by ``transform`` (4, 4).

    ``rest_wrist`` (3,) is the rest-pose wrist joint for ``params.betas`` (``HandModel.rest_joints(betas)[0]``),
    the point the global rotation turns about.
    """
    rot, trans = transform[:3, :3], transform[:3, 3]
    global_rot = rot @ axis_angle_to_matrix(params.global_orient)
    wrist = params.transl + rest_wrist  # posed wrist position
    new_wrist = wrist @ rot.T + trans
    return HandParams(
        matrix_to_axis_angle(global_rot), params.hand_pose, new_wrist - rest_wrist, params.betas
    )


def approach_times(config: TrajectoryConfig) -> np.ndarray:
    """(frames,) approach fractions, evenly from ``start_fraction`` to exactly 1."""
    if config.frames == 1:
        return np.ones(1)
    t = config.start_fraction + (1.0 - config.start_fraction) * np.arange(config.frames) / (config.frames - 1)
    t[-1] = 1.0
    return t


def _smoothstep(x: np.ndarray) -> np.ndarray:
    return x * x * (3.0 - 2.0 * x)


def make_trajectory(
    grasp_params: HandParams,
    hand: HandModel,
    config: TrajectoryConfig,
    rng: np.random.Generator,
    up: np.ndarray = (0.0, 1.0, 0.0),
) -> Trajectory:
    """Approach (and optional manipulation) for a grasp given in the object's canonical frame.

    Args:
        grasp_params: the grasp (batch 1), object canonical frame.
        hand: the hand model (for the rest wrist position).
        config: recipe.
        rng: randomness of the manipulation phase.
        up: (3,) the object's up axis (canonical frame).
    """
    end = grasp_params[0]
    rest_wrist = hand.rest_joints(end.betas[0])[0]
    wrist_end = end.transl[0] + rest_wrist
    norm = np.linalg.norm(wrist_end)
    direction = wrist_end / norm if norm > 1e-9 else np.array([0.0, 0.0, 1.0])
    transl_start = direction * config.approach_distance - rest_wrist

    t = approach_times(config)
    pose_start = np.concatenate([end.global_orient[0], np.zeros(45)]).reshape(16, 3)
    pose_end = np.concatenate([end.global_orient[0], end.hand_pose[0]]).reshape(16, 3)
    poses = slerp_axis_angle(pose_start, pose_end, t).reshape(len(t), 48)
    transl = transl_start[None] + t[:, None] * (end.transl[0] - transl_start)[None]
    transl[t == 1.0] = end.transl[0]
    n = len(t)
    hand_params = HandParams(poses[:, :3], poses[:, 3:], transl, np.repeat(end.betas, n, axis=0))
    T_world_obj = np.repeat(np.eye(4)[None], n, axis=0)
    phase = np.zeros(n, dtype=np.int64)

    if config.manipulation_frames:
        up = np.asarray(up, dtype=np.float64)
        up = up / np.linalg.norm(up)
        lift = rng.uniform(*config.lift)
        horizontal = rng.normal(size=3)
        horizontal -= (horizontal @ up) * up
        horizontal /= max(np.linalg.norm(horizontal), 1e-9)
        shift = rng.uniform(*config.shift)
        axis = rng.normal(size=3)
        axis /= np.linalg.norm(axis)
        turn = np.deg2rad(rng.uniform(*config.turn_deg))
        motions, params = [], []
        for k in range(1, config.manipulation_frames + 1):
            s = _smoothstep(k / config.manipulation_frames)
            motion = make_transform(rotation_about(axis, s * turn), s * (lift * up + shift * horizontal))
            motions.append(motion)
            params.append(transform_hand_params(end, motion, rest_wrist))
        hand_params = HandParams.stack([hand_params, *params])
        T_world_obj = np.concatenate([T_world_obj, np.stack(motions)])
        t = np.concatenate([t, np.ones(config.manipulation_frames)])
        phase = np.concatenate([phase, np.ones(config.manipulation_frames, dtype=np.int64)])
    return Trajectory(T_world_obj=T_world_obj, hand=hand_params, t=t, phase=phase)
