"""Geometry core: rotations against scipy and closed forms, rigid/similarity transforms, pinhole intrinsics,
look-at poses in the OpenCV convention and the HOIDiffusion camera sampler."""

from __future__ import annotations

import numpy as np
import pytest
from geometry_helpers import geodesic_angle, random_rotation
from scipy.spatial.transform import Rotation

from hoigen.geometry import (
    apply_transform,
    axis_angle_to_matrix,
    invert_transform,
    make_transform,
    matrix_to_axis_angle,
    rotation_about,
    slerp_axis_angle,
    umeyama,
)
from hoigen.geometry.camera import (
    CameraConfig,
    Intrinsics,
    intrinsics_preset,
    look_at,
    sample_camera,
    square_intrinsics,
)


def random_rotvecs(rng: np.random.Generator, n: int, max_angle: float = np.pi) -> np.ndarray:
    axis = rng.normal(size=(n, 3))
    axis /= np.linalg.norm(axis, axis=1, keepdims=True)
    return axis * rng.uniform(0.0, max_angle, size=(n, 1))


# ---------------------------------------------------------------------------------------------- rotations


def test_axis_angle_to_matrix_matches_scipy_on_batches():
    rng = np.random.default_rng(0)
    special = np.array(
        [
            [0.0, 0.0, 0.0],  # identity
            [np.pi, 0.0, 0.0],  # half turns about each axis and a skew axis
            [0.0, -np.pi, 0.0],
            [0.0, 0.0, np.pi],
            np.pi * np.array([1.0, 2.0, -2.0]) / 3.0,
            [1e-13, -2e-13, 0.0],  # tiny angle
            [4.0, 0.5, -1.0],  # angle above pi
        ]
    )
    rotvecs = np.concatenate([special, random_rotvecs(rng, 113, max_angle=2.0 * np.pi)])
    batch = rotvecs.reshape(4, 30, 3)
    got = axis_angle_to_matrix(batch)
    assert got.shape == (4, 30, 3, 3)
    want = Rotation.from_rotvec(rotvecs).as_matrix().reshape(4, 30, 3, 3)
    np.testing.assert_allclose(got, want, atol=1e-12)
    np.testing.assert_array_equal(axis_angle_to_matrix(np.zeros(3)), np.eye(3))
    # a half turn about x, written out
    np.testing.assert_allclose(
        axis_angle_to_matrix([np.pi, 0.0, 0.0]), np.diag([1.0, -1.0, -1.0]), atol=1e-15
    )
    # proper rotations throughout
    np.testing.assert_allclose(
        got @ np.swapaxes(got, -1, -2), np.broadcast_to(np.eye(3), got.shape), atol=1e-12
    )
    np.testing.assert_allclose(np.linalg.det(got), 1.0, atol=1e-12)


def test_axis_angle_to_matrix_rotates_by_the_angle_about_the_axis():
    rng = np.random.default_rng(1)
    for rotvec in random_rotvecs(rng, 20):
        angle = np.linalg.norm(rotvec)
        axis = rotvec / angle
        mat = axis_angle_to_matrix(rotvec)
        np.testing.assert_allclose(mat @ axis, axis, atol=1e-12)  # the axis is fixed
        ortho = np.cross(axis, rng.normal(size=3))
        ortho /= np.linalg.norm(ortho)
        turned = mat @ ortho
        # counter-clockwise about the axis by exactly the angle
        np.testing.assert_allclose(
            turned, np.cos(angle) * ortho + np.sin(angle) * np.cross(axis, ortho), atol=1e-12
        )
    np.testing.assert_allclose(
        rotation_about([0.0, 0.0, 2.0], np.pi / 2) @ [1.0, 0.0, 0.0], [0, 1, 0], atol=1e-15
    )


def test_matrix_to_axis_angle_round_trip():
    rng = np.random.default_rng(2)
    rotvecs = random_rotvecs(rng, 60, max_angle=np.pi - 1e-6).reshape(3, 20, 3)
    back = matrix_to_axis_angle(axis_angle_to_matrix(rotvecs))
    assert back.shape == (3, 20, 3)
    np.testing.assert_allclose(back, rotvecs, atol=1e-10)
    # angles above pi come back as the equivalent rotation with angle in [0, pi]
    big = random_rotvecs(rng, 30, max_angle=2.0 * np.pi)
    back = matrix_to_axis_angle(axis_angle_to_matrix(big))
    assert (np.linalg.norm(back, axis=1) <= np.pi + 1e-12).all()
    np.testing.assert_allclose(axis_angle_to_matrix(back), axis_angle_to_matrix(big), atol=1e-10)
    # identity and half turns
    np.testing.assert_allclose(matrix_to_axis_angle(np.eye(3)), np.zeros(3), atol=1e-15)
    half = np.pi * np.array([0.0, 0.6, 0.8])
    back = matrix_to_axis_angle(axis_angle_to_matrix(half))
    assert np.linalg.norm(back) == pytest.approx(np.pi, abs=1e-9)
    np.testing.assert_allclose(axis_angle_to_matrix(back), axis_angle_to_matrix(half), atol=1e-9)


def test_slerp_hits_endpoints_exactly():
    rng = np.random.default_rng(3)
    start = random_rotvecs(rng, 16)
    end = random_rotvecs(rng, 16)
    out = slerp_axis_angle(start, end, np.array([0.0, 0.3, 1.0]))
    assert out.shape == (3, 16, 3)
    np.testing.assert_array_equal(out[0], start)
    np.testing.assert_array_equal(out[2], end)


def test_slerp_has_constant_angular_speed_on_the_geodesic():
    rng = np.random.default_rng(4)
    start = random_rotvecs(rng, 16)
    end = random_rotvecs(rng, 16)
    t = np.linspace(0.0, 1.0, 13)
    r = axis_angle_to_matrix(slerp_axis_angle(start, end, t))  # (T, J, 3, 3)
    r0, r1 = axis_angle_to_matrix(start), axis_angle_to_matrix(end)
    total = geodesic_angle(r0, r1)  # (J,), <= pi
    from_start = geodesic_angle(r0[None], r)
    to_end = geodesic_angle(r, r1[None])
    np.testing.assert_allclose(from_start, t[:, None] * total[None], atol=1e-9)
    # on the geodesic: the two legs add up to the whole arc
    np.testing.assert_allclose(from_start + to_end, np.broadcast_to(total, from_start.shape), atol=1e-9)
    steps = geodesic_angle(r[:-1], r[1:])
    np.testing.assert_allclose(steps, np.broadcast_to(total / 12.0, steps.shape), atol=1e-9)


def test_slerp_takes_the_shortest_arc():
    # 0.9 pi and -0.9 pi about z are 0.2 pi apart through the half turn, not 1.8 pi apart through zero
    start = np.array([[0.0, 0.0, 0.9 * np.pi]])
    end = np.array([[0.0, 0.0, -0.9 * np.pi]])
    out = slerp_axis_angle(start, end, np.array([0.25, 0.5, 0.75]))
    np.testing.assert_allclose(
        axis_angle_to_matrix(out[1, 0]), axis_angle_to_matrix([0.0, 0.0, np.pi]), atol=1e-12
    )
    for k, t in enumerate((0.25, 0.5, 0.75)):
        want = rotation_about([0.0, 0.0, 1.0], 0.9 * np.pi + t * 0.2 * np.pi)
        np.testing.assert_allclose(axis_angle_to_matrix(out[k, 0]), want, atol=1e-12)
        assert geodesic_angle(axis_angle_to_matrix(start[0]), want) == pytest.approx(
            t * 0.2 * np.pi, abs=1e-12
        )
    # an end given with an angle above pi is reached the short way too
    start = np.array([[0.0, 0.0, 0.0]])
    end = np.array([[0.0, 1.5 * np.pi, 0.0]])  # = -0.5 pi about y
    mid = slerp_axis_angle(start, end, np.array([0.5]))[0, 0]
    np.testing.assert_allclose(
        axis_angle_to_matrix(mid), rotation_about([0, 1, 0], -0.25 * np.pi), atol=1e-12
    )


# ---------------------------------------------------------------------------------------------- transforms


def test_invert_and_apply_transform():
    rng = np.random.default_rng(5)
    rot = random_rotation(rng)
    trans = rng.normal(size=3)
    tf = make_transform(rot, trans)
    assert tf.shape == (4, 4)
    np.testing.assert_array_equal(tf[3], [0.0, 0.0, 0.0, 1.0])
    points = rng.normal(size=(50, 3))
    moved = apply_transform(tf, points)
    np.testing.assert_allclose(moved, (rot @ points.T).T + trans, atol=1e-14)
    homog = np.concatenate([points, np.ones((50, 1))], axis=1)
    np.testing.assert_allclose(moved, (tf @ homog.T).T[:, :3], atol=1e-14)
    inv = invert_transform(tf)
    np.testing.assert_allclose(inv, np.linalg.inv(tf), atol=1e-13)
    np.testing.assert_allclose(inv @ tf, np.eye(4), atol=1e-13)
    np.testing.assert_allclose(apply_transform(inv, moved), points, atol=1e-13)
    # batched inversion
    batch = make_transform(np.stack([random_rotation(rng) for _ in range(6)]), rng.normal(size=(6, 3)))
    inv = invert_transform(batch)
    assert inv.shape == (6, 4, 4)
    np.testing.assert_allclose(inv @ batch, np.broadcast_to(np.eye(4), (6, 4, 4)), atol=1e-13)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_umeyama_recovers_a_similarity(seed):
    rng = np.random.default_rng(seed)
    rot = random_rotation(rng)
    scale = rng.uniform(0.2, 5.0)
    trans = rng.normal(size=3)
    source = rng.normal(size=(40, 3))
    target = scale * source @ rot.T + trans
    s, r, t = umeyama(source, target)
    assert s == pytest.approx(scale, rel=1e-12)
    np.testing.assert_allclose(r, rot, atol=1e-12)
    np.testing.assert_allclose(t, trans, atol=1e-12)
    # rigid only: with_scale=False on rigid data
    s, r, t = umeyama(source, source @ rot.T + trans, with_scale=False)
    assert s == 1.0
    np.testing.assert_allclose(r, rot, atol=1e-12)
    np.testing.assert_allclose(t, trans, atol=1e-12)
    # minimal non-collinear set
    s, r, t = umeyama(source[:3], target[:3])
    assert s == pytest.approx(scale, rel=1e-9)
    np.testing.assert_allclose(r, rot, atol=1e-9)


def test_umeyama_returns_a_proper_rotation_for_mirrored_points():
    rng = np.random.default_rng(6)
    source = rng.normal(size=(30, 3))
    target = source * np.array([1.0, 1.0, -1.0])  # a reflection: no rotation fits exactly
    _, r, _ = umeyama(source, target)
    assert np.linalg.det(r) == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-12)


@pytest.mark.parametrize(
    ("source_shape", "target_shape"),
    [((10, 3), (9, 3)), ((10, 2), (10, 2)), ((2, 3), (2, 3)), ((30,), (30,)), ((2, 5, 3), (2, 5, 3))],
)
def test_umeyama_rejects_bad_shapes(source_shape, target_shape):
    with pytest.raises(ValueError, match="umeyama"):
        umeyama(np.ones(source_shape), np.ones(target_shape))


# ---------------------------------------------------------------------------------------------- intrinsics


def test_intrinsics_K_and_project_against_the_pinhole_formula():
    cam = Intrinsics(fx=500.0, fy=480.0, cx=320.5, cy=240.25, width=640, height=480)
    np.testing.assert_array_equal(cam.K, [[500.0, 0.0, 320.5], [0.0, 480.0, 240.25], [0.0, 0.0, 1.0]])
    rng = np.random.default_rng(7)
    pts = np.column_stack([rng.uniform(-0.2, 0.2, 25), rng.uniform(-0.2, 0.2, 25), rng.uniform(0.3, 2.0, 25)])
    uv = cam.project(pts)
    assert uv.shape == (25, 2)
    for p, (u, v) in zip(pts, uv):
        assert u == pytest.approx(500.0 * p[0] / p[2] + 320.5, abs=1e-10)
        assert v == pytest.approx(480.0 * p[1] / p[2] + 240.25, abs=1e-10)
    homog = (cam.K @ pts.T).T
    np.testing.assert_allclose(uv, homog[:, :2] / homog[:, 2:], atol=1e-10)
    # any leading shape
    assert cam.project(pts.reshape(5, 5, 3)).shape == (5, 5, 2)
    assert cam.to_dict() == {"K": cam.K.tolist(), "width": 640, "height": 480}


def test_nocs_camera_preset():
    cam = intrinsics_preset("nocs-camera")
    assert (cam.width, cam.height) == (640, 480)
    assert (cam.fx, cam.fy, cam.cx, cam.cy) == (577.5, 577.5, 319.5, 239.5)
    np.testing.assert_array_equal(cam.K, [[577.5, 0.0, 319.5], [0.0, 577.5, 239.5], [0.0, 0.0, 1.0]])
    # a point on the optical axis lands on the principal point (the image centre with integer pixel centres)
    np.testing.assert_allclose(cam.project([0.0, 0.0, 0.7]), [319.5, 239.5])


def test_square_preset():
    cam = intrinsics_preset("square-512")
    assert (cam.width, cam.height, cam.cx, cam.cy) == (512, 512, 255.5, 255.5)
    assert np.rad2deg(2.0 * np.arctan(0.5 * 512 / cam.fx)) == pytest.approx(50.0, abs=1e-10)
    assert cam == square_intrinsics(512)


@pytest.mark.parametrize("name", ["nocs", "square-", "square-abc", "NOCS-camera", ""])
def test_unknown_preset_is_an_error(name):
    with pytest.raises(ValueError, match="unknown camera preset"):
        intrinsics_preset(name)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"width": 0},
        {"height": -4},
        {"fx": 0.0},
        {"fy": -1.0},
    ],
)
def test_intrinsics_validation(kwargs):
    base = {"fx": 500.0, "fy": 500.0, "cx": 10.0, "cy": 10.0, "width": 20, "height": 20}
    with pytest.raises(ValueError, match="must be positive"):
        Intrinsics(**{**base, **kwargs})


# ---------------------------------------------------------------------------------------------- look-at


def _project_world(T_cam_world, cam, points):
    return cam.project(apply_transform(T_cam_world, np.atleast_2d(points)))


@pytest.mark.parametrize(
    ("eye", "target", "up"),
    [
        ([0.0, 0.0, 1.0], [0.0, 0.0, 0.0], [0.0, 1.0, 0.0]),
        ([0.3, 0.2, -0.4], [0.05, -0.02, 0.01], [0.0, 1.0, 0.0]),
        ([0.3, 0.2, -0.4], [0.05, -0.02, 0.01], [0.0, 0.0, 1.0]),
        ([-1.0, 2.0, 0.5], [0.0, 0.0, 0.0], [1.0, 1.0, 0.0]),
    ],
)
def test_look_at_is_an_opencv_pose(eye, target, up):
    T_world_cam = look_at(np.array(eye), np.array(target), np.array(up))
    rot = T_world_cam[:3, :3]
    np.testing.assert_allclose(rot.T @ rot, np.eye(3), atol=1e-12)
    assert np.linalg.det(rot) == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(T_world_cam[:3, 3], eye, atol=1e-15)
    T_cam_world = invert_transform(T_world_cam)
    cam = intrinsics_preset("nocs-camera")
    # the target is straight ahead (z forward) on the principal point
    tgt_cam = apply_transform(T_cam_world, np.atleast_2d(target))[0]
    assert tgt_cam[2] == pytest.approx(np.linalg.norm(np.subtract(target, eye)), abs=1e-12)
    np.testing.assert_allclose(_project_world(T_cam_world, cam, target)[0], [cam.cx, cam.cy], atol=1e-9)
    # world up points up in the image (negative image y) and has no sideways component (no roll)
    up_unit = np.array(up) / np.linalg.norm(up)
    up_cam = T_cam_world[:3, :3] @ up_unit
    assert up_cam[1] < -1e-3
    assert up_cam[0] == pytest.approx(0.0, abs=1e-12)
    above = _project_world(T_cam_world, cam, np.array(target) + 0.01 * up_unit)[0]
    assert above[1] < cam.cy
    assert above[0] == pytest.approx(cam.cx, abs=1e-9)


def test_look_at_along_the_up_axis_still_gives_a_valid_pose():
    T_world_cam = look_at(np.array([0.0, 0.5, 0.0]), np.zeros(3), np.array([0.0, 1.0, 0.0]))
    rot = T_world_cam[:3, :3]
    np.testing.assert_allclose(rot.T @ rot, np.eye(3), atol=1e-12)
    assert np.linalg.det(rot) == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(rot[:, 2], [0.0, -1.0, 0.0], atol=1e-12)


# ---------------------------------------------------------------------------------------------- camera sampler


@pytest.mark.parametrize("up", [np.array([0.0, 1.0, 0.0]), np.array([0.0, 0.0, 1.0])])
def test_sample_camera_ranges(up):
    config = CameraConfig()
    target = np.array([0.01, -0.02, 0.03])
    distances, elevations = [], []
    for seed in range(200):
        sample = sample_camera(config, np.random.default_rng(seed), target, up)
        cam = sample.intrinsics
        assert cam == intrinsics_preset("square-512")
        T_cam_world = sample.T_cam_world
        rot = T_cam_world[:3, :3]
        np.testing.assert_allclose(rot @ rot.T, np.eye(3), atol=1e-12)
        assert np.linalg.det(rot) == pytest.approx(1.0, abs=1e-12)
        np.testing.assert_array_equal(T_cam_world[3], [0.0, 0.0, 0.0, 1.0])
        T_world_cam = np.linalg.inv(T_cam_world)
        eye, forward = T_world_cam[:3, 3], T_world_cam[:3, 2]
        # the look-at point sits on the optical axis at the sampled distance, within the jitter of the target
        look = eye + sample.distance * forward
        assert np.abs(look - target).max() <= config.target_jitter + 1e-12
        assert 0.35 <= sample.distance <= 0.45
        # elevation of the camera above the plane perpendicular to up, seen from the look-at point
        offset = eye - look
        elevation = np.rad2deg(np.arcsin(offset @ up / np.linalg.norm(offset)))
        assert elevation == pytest.approx(sample.elevation_deg, abs=1e-9)
        assert 5.0 <= elevation <= 60.0
        assert 0.0 <= sample.azimuth_deg <= 360.0
        # the object centre is in front of the camera and inside the image
        centre_cam = apply_transform(T_cam_world, target[None])[0]
        assert centre_cam[2] > 0.3
        u, v = cam.project(centre_cam)
        assert 0.0 <= u <= cam.width - 1 and 0.0 <= v <= cam.height - 1
        # world up points up in the image
        assert (rot @ up)[1] < 0.0
        distances.append(sample.distance)
        elevations.append(elevation)
    # the ranges are covered, not just respected
    assert min(distances) < 0.36 and max(distances) > 0.44
    assert min(elevations) < 8.0 and max(elevations) > 57.0


@pytest.mark.parametrize("up", [np.array([0.0, 1.0, 0.0]), np.array([0.0, 0.0, 1.0])])
def test_sample_camera_without_jitter_looks_at_the_target(up):
    config = CameraConfig(preset="nocs-camera", target_jitter=0.0)
    target = np.array([0.1, 0.2, -0.1])
    for seed in range(20):
        sample = sample_camera(config, np.random.default_rng(seed), target, up)
        eye = np.linalg.inv(sample.T_cam_world)[:3, 3]
        assert np.linalg.norm(eye - target) == pytest.approx(sample.distance, abs=1e-12)
        offset = eye - target
        assert np.rad2deg(np.arcsin(offset @ up / np.linalg.norm(offset))) == pytest.approx(
            sample.elevation_deg, abs=1e-9
        )
        uv = sample.intrinsics.project(apply_transform(sample.T_cam_world, target[None]))[0]
        np.testing.assert_allclose(uv, [319.5, 239.5], atol=1e-8)


def test_sample_camera_is_a_function_of_the_rng():
    config = CameraConfig()
    target, up = np.zeros(3), np.array([0.0, 1.0, 0.0])
    a = sample_camera(config, np.random.default_rng(42), target, up)
    b = sample_camera(config, np.random.default_rng(42), target, up)
    c = sample_camera(config, np.random.default_rng(43), target, up)
    np.testing.assert_array_equal(a.T_cam_world, b.T_cam_world)
    assert (a.distance, a.elevation_deg, a.azimuth_deg) == (b.distance, b.elevation_deg, b.azimuth_deg)
    assert not np.array_equal(a.T_cam_world, c.T_cam_world)


def test_sample_camera_fixed_ranges_are_exact():
    config = CameraConfig(
        distance=(0.4, 0.4), elevation_deg=(30.0, 30.0), azimuth_deg=(90.0, 90.0), target_jitter=0
    )
    up = np.array([0.0, 0.0, 1.0])
    sample = sample_camera(config, np.random.default_rng(0), np.zeros(3), up)
    eye = np.linalg.inv(sample.T_cam_world)[:3, 3]
    assert np.linalg.norm(eye) == pytest.approx(0.4, abs=1e-12)
    assert eye @ up == pytest.approx(0.4 * np.sin(np.deg2rad(30.0)), abs=1e-12)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"preset": "fisheye"}, "unknown camera preset"),
        ({"distance": (0.5, 0.4)}, "distance range"),
        ({"distance": (0.0, 0.4)}, "distance must be positive"),
        ({"distance": (-0.1, 0.4)}, "distance must be positive"),
        ({"elevation_deg": (30.0, 10.0)}, "elevation_deg range"),
        ({"elevation_deg": (-100.0, 10.0)}, r"\[-90, 90\]"),
        ({"elevation_deg": (10.0, 95.0)}, r"\[-90, 90\]"),
        ({"azimuth_deg": (10.0, 0.0)}, "azimuth_deg range"),
        ({"target_jitter": -0.01}, "target_jitter"),
    ],
)
def test_camera_config_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CameraConfig(**kwargs)
