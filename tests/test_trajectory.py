"""Trajectories: the HOIDiffusion approach (open start pose, per-joint slerp, linear translation, t = k/11), the
rigid manipulation phase and moving hand parameters by a rigid transform, checked on posed hand meshes."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from geometry_helpers import geodesic_angle, random_rotation

from hoigen.geometry import apply_transform, axis_angle_to_matrix, invert_transform, make_transform
from hoigen.grasping.trajectory import (
    TrajectoryConfig,
    approach_times,
    make_trajectory,
    transform_hand_params,
)
from hoigen.hands import BuiltinHand, HandModel, HandParams


class ShiftedHand(HandModel):
    """The built-in hand moved off the origin, with beta 5 (unused by the built-in hand) translating the whole
    rest shape, so the rest wrist is away from the origin and depends on the betas."""

    OFFSET = np.array([0.03, -0.02, 0.015])
    BETA5_SHIFT = np.array([0.01, -0.02, 0.015])

    def __init__(self):
        base = BuiltinHand().data
        shapedirs = base.shapedirs.copy()
        shapedirs[:, :, 5] = self.BETA5_SHIFT
        self.data = dataclasses.replace(
            base, name="shifted-builtin", v_template=base.v_template + self.OFFSET, shapedirs=shapedirs
        )


@pytest.fixture(scope="module", params=["builtin", "shifted"])
def hand(request):
    return BuiltinHand() if request.param == "builtin" else ShiftedHand()


def make_grasp(seed: int, betas_scale: float = 0.0) -> HandParams:
    """A grasp-like pose in the object frame: wrist ~8-12 cm from the origin, fingers bent up to ~1 rad."""
    rng = np.random.default_rng(seed)
    orient = rng.normal(size=3)
    orient *= rng.uniform(0.3, 2.8) / np.linalg.norm(orient)
    direction = rng.normal(size=3)
    direction /= np.linalg.norm(direction)
    return HandParams(
        orient,
        rng.uniform(-1.0, 1.0, 45) * 0.8,
        direction * rng.uniform(0.08, 0.12),
        rng.normal(size=10) * betas_scale,
    )


def wrist_positions(hand: HandModel, params: HandParams) -> np.ndarray:
    """(B, 3) posed wrist joint, from the posed model itself."""
    return hand.forward(params).joints_mano[:, 0]


# ---------------------------------------------------------------------------------------------- approach


@pytest.mark.parametrize("seed", [0, 1])
def test_open_start_pose_and_exact_grasp_at_the_end(hand, seed):
    grasp = make_grasp(seed, betas_scale=0.8)
    config = TrajectoryConfig(frames=6, start_fraction=0.0, approach_distance=0.3)
    traj = make_trajectory(grasp, hand, config, np.random.default_rng(0))
    assert traj.hand.batch_size == 6
    assert traj.t[0] == 0.0 and traj.t[-1] == 1.0
    np.testing.assert_allclose(traj.t, np.arange(6) / 5.0, rtol=0.0, atol=2e-16)
    np.testing.assert_array_equal(traj.phase, np.zeros(6))
    np.testing.assert_array_equal(traj.T_world_obj, np.broadcast_to(np.eye(4), (6, 4, 4)))
    first, last = traj.hand[0], traj.hand[5]
    # start: the grasp's global orientation, every finger joint open
    np.testing.assert_array_equal(first.global_orient, grasp.global_orient)
    np.testing.assert_array_equal(first.hand_pose, np.zeros((1, 45)))
    np.testing.assert_array_equal(first.betas, grasp.betas)
    # start: the posed wrist is approach_distance from the object centre, on the ray through the grasp's wrist
    wrist_start = wrist_positions(hand, first)[0]
    wrist_end = wrist_positions(hand, grasp)[0]
    assert np.linalg.norm(wrist_start) == pytest.approx(0.3, abs=1e-12)
    np.testing.assert_allclose(wrist_start / 0.3, wrist_end / np.linalg.norm(wrist_end), atol=1e-12)
    # end: the grasp itself, bit for bit
    for name in ("global_orient", "hand_pose", "transl", "betas"):
        np.testing.assert_array_equal(getattr(last, name), getattr(grasp, name))


def test_default_times_are_hoidiffusions():
    config = TrajectoryConfig()
    assert (config.frames, config.approach_distance, config.manipulation_frames) == (8, 0.3, 0)
    t = approach_times(config)
    assert t.shape == (8,)
    assert t[0] == 4.0 / 11.0 and t[-1] == 1.0
    # k / 11 for k = 4..11, up to one rounding of the evenly spaced formula
    np.testing.assert_allclose(t, np.arange(4, 12) / 11.0, rtol=0.0, atol=2e-16)
    traj = make_trajectory(make_grasp(2), BuiltinHand(), config, np.random.default_rng(0))
    np.testing.assert_array_equal(traj.t, t)
    assert traj.hand.batch_size == 8


def test_approach_times_edge_cases():
    np.testing.assert_array_equal(approach_times(TrajectoryConfig(frames=1)), [1.0])
    np.testing.assert_array_equal(
        approach_times(TrajectoryConfig(frames=2, start_fraction=0.25)), [0.25, 1.0]
    )
    np.testing.assert_array_equal(approach_times(TrajectoryConfig(frames=3, start_fraction=1.0)), [1.0] * 3)
    # a single frame is the grasp
    grasp = make_grasp(3, betas_scale=0.5)
    traj = make_trajectory(grasp, BuiltinHand(), TrajectoryConfig(frames=1), np.random.default_rng(0))
    np.testing.assert_array_equal(traj.hand.full_pose(), grasp.full_pose())
    np.testing.assert_array_equal(traj.hand.transl, grasp.transl)


@pytest.mark.parametrize("start_fraction", [0.0, 4.0 / 11.0])
def test_per_joint_slerp_progresses_at_constant_speed(hand, start_fraction):
    grasp = make_grasp(4, betas_scale=0.5)
    config = TrajectoryConfig(frames=8, start_fraction=start_fraction)
    traj = make_trajectory(grasp, hand, config, np.random.default_rng(0))
    t = traj.t
    rot = axis_angle_to_matrix(traj.hand.full_pose())  # (T, 16, 3, 3)
    open_pose = np.concatenate([grasp.global_orient, np.zeros((1, 45))], axis=1).reshape(16, 3)
    r_open = axis_angle_to_matrix(open_pose)
    r_grasp = axis_angle_to_matrix(grasp.full_pose()[0])
    total = geodesic_angle(r_open, r_grasp)  # (16,)
    assert total[0] == pytest.approx(0.0, abs=1e-12)
    assert (total[1:] > 0.05).all()
    # the global orientation never changes during the approach
    np.testing.assert_allclose(rot[:, 0], np.broadcast_to(r_grasp[0], (8, 3, 3)), atol=1e-12)
    # angle from the open pose is t times the whole arc: monotone non-decreasing and linear in t
    from_open = geodesic_angle(r_open[None], rot)
    np.testing.assert_allclose(from_open, t[:, None] * total[None], atol=1e-9)
    assert (np.diff(from_open, axis=0) >= -1e-12).all()
    # equal steps: the angle between consecutive frames is the same for every step of a joint
    steps = geodesic_angle(rot[:-1], rot[1:])  # (T - 1, 16)
    np.testing.assert_allclose(steps, steps[:1].repeat(7, axis=0), atol=1e-9)
    np.testing.assert_allclose(steps[0], (t[1] - t[0]) * total, atol=1e-9)
    # and the frames lie on the geodesic to the grasp
    to_grasp = geodesic_angle(rot, r_grasp[None])
    np.testing.assert_allclose(from_open + to_grasp, np.broadcast_to(total, from_open.shape), atol=1e-9)


def test_translation_is_linear(hand):
    grasp = make_grasp(5, betas_scale=0.7)
    config = TrajectoryConfig(frames=8, approach_distance=0.25)
    traj = make_trajectory(grasp, hand, config, np.random.default_rng(0))
    rest_wrist = hand.rest_joints(grasp.betas[0])[0]
    wrist_end = grasp.transl[0] + rest_wrist
    transl_open = 0.25 * wrist_end / np.linalg.norm(wrist_end) - rest_wrist
    want = transl_open[None] + traj.t[:, None] * (grasp.transl[0] - transl_open)[None]
    np.testing.assert_allclose(traj.hand.transl, want, atol=1e-15)
    # equal time steps give equal displacement steps
    steps = np.diff(traj.hand.transl, axis=0)
    np.testing.assert_allclose(steps, np.broadcast_to(steps[0], steps.shape), atol=1e-15)
    # the posed wrist slides straight in toward the object centre
    wrists = wrist_positions(hand, traj.hand)
    dist = np.linalg.norm(wrists, axis=1)
    assert (np.diff(dist) < 0).all()
    np.testing.assert_allclose(
        wrists / dist[:, None], np.broadcast_to(wrist_end / np.linalg.norm(wrist_end), (8, 3))
    )


def test_approach_does_not_use_the_rng():
    grasp = make_grasp(6)
    config = TrajectoryConfig()
    a = make_trajectory(grasp, BuiltinHand(), config, np.random.default_rng(1))
    b = make_trajectory(grasp, BuiltinHand(), config, np.random.default_rng(2))
    np.testing.assert_array_equal(a.hand.full_pose(), b.hand.full_pose())
    np.testing.assert_array_equal(a.hand.transl, b.hand.transl)


# ---------------------------------------------------------------------------------------------- manipulation


@pytest.mark.parametrize(
    "up", [np.array([0.0, 1.0, 0.0]), np.array([0.0, 0.0, 1.0]), np.array([1.0, 1.0, 0.0]) / np.sqrt(2.0)]
)
def test_manipulation_moves_hand_and_object_together(hand, up):
    grasp = make_grasp(7, betas_scale=0.6)
    config = TrajectoryConfig(manipulation_frames=4)
    traj = make_trajectory(grasp, hand, config, np.random.default_rng(11), up=up)
    n = config.total_frames
    assert n == 12 and traj.hand.batch_size == n and traj.T_world_obj.shape == (n, 4, 4)
    np.testing.assert_array_equal(traj.phase, [0] * 8 + [1] * 4)
    np.testing.assert_array_equal(traj.t[8:], np.ones(4))
    np.testing.assert_array_equal(traj.T_world_obj[:8], np.broadcast_to(np.eye(4), (8, 4, 4)))
    # the object poses are rigid
    rot = traj.T_world_obj[:, :3, :3]
    np.testing.assert_allclose(
        rot @ np.swapaxes(rot, 1, 2), np.broadcast_to(np.eye(3), (n, 3, 3)), atol=1e-12
    )
    np.testing.assert_allclose(np.linalg.det(rot), 1.0, atol=1e-12)
    # in the object's frame the posed hand does not move from the grasp (last approach frame on)
    posed = hand.forward(traj.hand)
    grasp_posed = hand.forward(grasp)
    for k in range(7, n):
        to_obj = invert_transform(traj.T_world_obj[k])
        np.testing.assert_allclose(
            apply_transform(to_obj, posed.vertices[k]), grasp_posed.vertices[0], atol=1e-9
        )
        np.testing.assert_allclose(apply_transform(to_obj, posed.joints[k]), grasp_posed.joints[0], atol=1e-9)
    # the lift is along up and within the configured range; the shift is perpendicular to up
    final = traj.T_world_obj[-1, :3, 3]
    lift = final @ up
    assert 0.05 <= lift <= 0.15
    horizontal = final - lift * up
    assert np.linalg.norm(horizontal) <= 0.08 + 1e-12
    # the object keeps rising frame by frame
    heights = traj.T_world_obj[7:, :3, 3] @ up
    assert (np.diff(heights) > 0).all()


def test_manipulation_follows_the_configured_motion_with_smoothstep_easing():
    up = np.array([0.0, 0.0, 1.0])
    config = TrajectoryConfig(
        frames=3, manipulation_frames=5, lift=(0.1, 0.1), shift=(0.04, 0.04), turn_deg=(20.0, 20.0)
    )
    traj = make_trajectory(make_grasp(8), BuiltinHand(), config, np.random.default_rng(3), up=up)
    motion = traj.T_world_obj[3:]
    final = motion[-1, :3, 3]
    assert final @ up == pytest.approx(0.1, abs=1e-12)
    assert np.linalg.norm(final - (final @ up) * up) == pytest.approx(0.04, abs=1e-12)
    x = np.arange(1, 6) / 5.0
    ease = 3.0 * x**2 - 2.0 * x**3
    np.testing.assert_allclose(motion[:, :3, 3], ease[:, None] * final[None], atol=1e-12)
    angles = geodesic_angle(np.eye(3)[None], motion[:, :3, :3])
    np.testing.assert_allclose(angles, ease * np.deg2rad(20.0), atol=1e-12)


def test_manipulation_is_a_function_of_the_rng():
    grasp = make_grasp(9)
    config = TrajectoryConfig(manipulation_frames=3)
    a = make_trajectory(grasp, BuiltinHand(), config, np.random.default_rng(5))
    b = make_trajectory(grasp, BuiltinHand(), config, np.random.default_rng(5))
    c = make_trajectory(grasp, BuiltinHand(), config, np.random.default_rng(6))
    np.testing.assert_array_equal(a.T_world_obj, b.T_world_obj)
    np.testing.assert_array_equal(a.hand.full_pose(), b.hand.full_pose())
    np.testing.assert_array_equal(a.hand.transl, b.hand.transl)
    assert not np.array_equal(a.T_world_obj, c.T_world_obj)


# ---------------------------------------------------------------------------------------------- rigid moves


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("betas_scale", [0.0, 1.0])
def test_transform_hand_params_moves_the_posed_hand_rigidly(hand, seed, betas_scale):
    rng = np.random.default_rng(100 + seed)
    params = make_grasp(seed, betas_scale=betas_scale)
    transform = make_transform(random_rotation(rng), rng.normal(0.0, 0.2, 3))
    rest_wrist = hand.rest_joints(params.betas[0])[0]
    moved = transform_hand_params(params, transform, rest_wrist)
    np.testing.assert_array_equal(moved.hand_pose, params.hand_pose)
    np.testing.assert_array_equal(moved.betas, params.betas)
    before = hand.forward(params)
    after = hand.forward(moved)
    np.testing.assert_allclose(after.vertices[0], apply_transform(transform, before.vertices[0]), atol=1e-9)
    np.testing.assert_allclose(after.joints[0], apply_transform(transform, before.joints[0]), atol=1e-9)
    # the global orientation composes with the transform's rotation
    np.testing.assert_allclose(
        axis_angle_to_matrix(moved.global_orient[0]),
        transform[:3, :3] @ axis_angle_to_matrix(params.global_orient[0]),
        atol=1e-12,
    )


def test_transform_hand_params_on_a_batch_and_identity():
    hand = ShiftedHand()
    rng = np.random.default_rng(12)
    betas = rng.normal(size=10)
    batch = HandParams.stack([make_grasp(s) for s in range(3)])
    batch = HandParams(batch.global_orient, batch.hand_pose, batch.transl, np.repeat(betas[None], 3, axis=0))
    rest_wrist = hand.rest_joints(betas)[0]
    np.testing.assert_allclose(
        rest_wrist, ShiftedHand.OFFSET + betas[5] * ShiftedHand.BETA5_SHIFT, atol=1e-12
    )
    same = transform_hand_params(batch, np.eye(4), rest_wrist)
    np.testing.assert_allclose(same.transl, batch.transl, atol=1e-15)
    np.testing.assert_allclose(hand.forward(same).vertices, hand.forward(batch).vertices, atol=1e-12)
    transform = make_transform(random_rotation(rng), rng.normal(0.0, 0.2, 3))
    moved = transform_hand_params(batch, transform, rest_wrist)
    before, after = hand.forward(batch).vertices, hand.forward(moved).vertices
    for b in range(3):
        np.testing.assert_allclose(after[b], apply_transform(transform, before[b]), atol=1e-9)


# ---------------------------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"frames": 0}, "frames must be >= 1"),
        ({"start_fraction": -0.1}, "start_fraction"),
        ({"start_fraction": 1.5}, "start_fraction"),
        ({"approach_distance": 0.0}, "approach_distance"),
        ({"approach_distance": -0.3}, "approach_distance"),
        ({"manipulation_frames": -1}, "manipulation_frames"),
        ({"lift": (0.2, 0.1)}, "lift"),
        ({"shift": (0.1, 0.0)}, "shift"),
        ({"turn_deg": (30.0, 10.0)}, "turn_deg"),
    ],
)
def test_trajectory_config_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TrajectoryConfig(**kwargs)


def test_total_frames():
    assert TrajectoryConfig().total_frames == 8
    assert TrajectoryConfig(frames=5, manipulation_frames=3).total_frames == 8
