"""Condition images (skeleton, coloured mask, DaS tracking), fixed surface samples and the PNG codec."""

from __future__ import annotations

import io

import numpy as np
import pytest
import trimesh

pytest.importorskip("cv2")  # the render extra

from hoigen.geometry import axis_angle_to_matrix  # noqa: E402
from hoigen.render.conditions import (  # noqa: E402
    FINGER_BASE_COLORS,
    HOI_HAND_COLOR,
    HOI_OBJECT_COLOR,
    SKELETON_BONE_COLORS,
    SKELETON_EDGES,
    SKELETON_JOINT_COLORS,
    SurfaceSamples,
    draw_skeleton,
    hoi_mask,
    sample_surface_points,
    splat_tracks,
    tracking_vertex_colors,
)
from hoigen.render.png import decode_png, encode_png  # noqa: E402

SIZE = 256


# ------------------------------------------------------------------------------------------------ helpers


def _fan_hand(wrist=(128.0, 230.0), bone=25.0, spread_deg=36.0) -> np.ndarray:
    """(21, 2) straight fingers fanned out upwards from the wrist, each bone ``bone`` px long."""
    joints = np.zeros((21, 2))
    joints[0] = wrist
    for f in range(5):
        angle = np.deg2rad(-90.0 + spread_deg * (f - 2))
        direction = np.array([np.cos(angle), np.sin(angle)])
        for k in range(4):
            joints[1 + 4 * f + k] = np.asarray(wrist) + (k + 1) * bone * direction
    return joints


def _separated_joints(rng: np.random.Generator, min_dist: float = 9.0) -> np.ndarray:
    joints: list[np.ndarray] = []
    while len(joints) < 21:
        candidate = rng.uniform(8.0, SIZE - 9.0, size=2)
        if all(np.linalg.norm(candidate - j) >= min_dist for j in joints):
            joints.append(candidate)
    return np.array(joints)


def _pixels_of(image: np.ndarray, color) -> np.ndarray:
    """(M, 2) (x, y) coordinates of the pixels with exactly this colour."""
    ys, xs = np.nonzero(np.all(image == np.asarray(color, dtype=np.uint8), axis=-1))
    return np.stack([xs, ys], axis=1).astype(np.float64)


def _colors_in(image: np.ndarray) -> set[tuple[int, int, int]]:
    return {tuple(int(c) for c in row) for row in np.unique(image.reshape(-1, 3), axis=0)}


# ------------------------------------------------------------------------------------------------ skeleton


def test_skeleton_edges_and_palette():
    assert len(SKELETON_EDGES) == 20
    # every keypoint but the wrist is the child of exactly one bone, and the parent is the previous joint
    children = [b for _, b in SKELETON_EDGES]
    assert sorted(children) == list(range(1, 21))
    for f in range(5):
        chain = [0] + [1 + 4 * f + k for k in range(4)]
        assert SKELETON_EDGES[4 * f : 4 * f + 4] == tuple(zip(chain[:-1], chain[1:]))
    assert FINGER_BASE_COLORS == ((139, 53, 255), (0, 56, 255), (43, 140, 237), (37, 168, 36), (147, 147, 0))
    for f, base in enumerate(FINGER_BASE_COLORS):
        for k in range(4):
            expected = [min(255, c + 35 * k) for c in base]
            assert SKELETON_BONE_COLORS[4 * f + k].tolist() == expected
            assert SKELETON_JOINT_COLORS[1 + 4 * f + k].tolist() == expected
    assert SKELETON_BONE_COLORS[3].tolist() == [244, 158, 255]  # thumb tip: blue clipped at 255
    assert SKELETON_BONE_COLORS[19].tolist() == [252, 252, 105]  # pinky tip
    # all 21 joint colours are distinct and none is black
    assert len({tuple(c) for c in SKELETON_JOINT_COLORS.tolist()}) == 21
    assert SKELETON_JOINT_COLORS.any(axis=1).all()


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_joint_discs_centred_on_float_positions(seed):
    joints = _separated_joints(np.random.default_rng(seed))
    image = draw_skeleton(joints, SIZE, SIZE, bones=False)
    assert image.shape == (SIZE, SIZE, 3) and image.dtype == np.uint8
    assert _colors_in(image) <= {(0, 0, 0)} | {tuple(c) for c in SKELETON_JOINT_COLORS.tolist()}
    errors = []
    for i in range(21):
        pixels = _pixels_of(image, SKELETON_JOINT_COLORS[i])
        # OpenCV fills every pixel its sub-pixel polygon touches: ~28-45 px for a radius-3 disc, all of them
        # within radius + half a pixel diagonal of the centre
        assert 26 <= len(pixels) <= 46, (i, len(pixels))
        assert np.linalg.norm(pixels - joints[i], axis=1).max() <= 3.0 + 0.8
        errors.append(pixels.mean(axis=0) - joints[i])
    errors = np.array(errors)
    assert np.linalg.norm(errors, axis=1).max() < 0.3, errors
    # centred on the float position, not on the rounded pixel (rounding would give an RMS error of ~0.29 px)
    assert np.sqrt(np.mean(errors**2)) < 0.12


def test_subpixel_shift_moves_disc():
    joints = _fan_hand()
    shifted = joints + np.array([0.5, 0.25])
    a = _pixels_of(draw_skeleton(joints, SIZE, SIZE, bones=False), SKELETON_JOINT_COLORS[0]).mean(axis=0)
    b = _pixels_of(draw_skeleton(shifted, SIZE, SIZE, bones=False), SKELETON_JOINT_COLORS[0]).mean(axis=0)
    np.testing.assert_allclose(b - a, [0.5, 0.25], atol=0.2)


def test_bone_colors_and_geometry():
    joints = _fan_hand()
    full = draw_skeleton(joints, SIZE, SIZE)
    palette = {tuple(c) for c in SKELETON_JOINT_COLORS.tolist()}
    assert _colors_in(full) == {(0, 0, 0)} | palette  # exact palette, no anti-aliasing
    bones_only = draw_skeleton(joints, SIZE, SIZE, joints=False)
    assert _colors_in(bones_only) == {(0, 0, 0)} | {tuple(c) for c in SKELETON_BONE_COLORS.tolist()}
    for (a, b), color in zip(SKELETON_EDGES, SKELETON_BONE_COLORS):
        midpoint = np.round(0.5 * (joints[a] + joints[b])).astype(int)
        assert full[midpoint[1], midpoint[0]].tolist() == color.tolist()
        pixels = _pixels_of(bones_only, color)
        direction = (joints[b] - joints[a]) / 25.0
        normal = np.array([-direction[1], direction[0]])
        rel = pixels - 0.5 * (joints[a] + joints[b])
        assert np.abs(rel @ normal).max() <= 3.0 + 0.8  # half-thickness 3, rotated along the bone
        along = rel @ direction
        assert along.min() >= -12.5 - 0.8 and along.max() <= 12.5 + 0.8 and np.ptp(along) >= 22.0
        assert len(pixels) >= 0.8 * np.pi * 12.5 * 3.0


@pytest.mark.parametrize(("length", "drawn"), [(4.9, False), (5.0, True), (150.0, True), (150.1, False)])
def test_bone_length_limits(length, drawn):
    joints = np.full((21, 2), -100.0)
    joints[0] = (50.0, 100.0)
    joints[1] = (50.0 + length, 100.0)
    visible = np.zeros(21, dtype=bool)
    visible[[0, 1]] = True
    with_bones = draw_skeleton(joints, SIZE, SIZE, visible)
    without = draw_skeleton(joints, SIZE, SIZE, visible, bones=False)
    assert (not np.array_equal(with_bones, without)) == drawn


def test_invisible_joint_and_its_bones_are_skipped():
    joints = _fan_hand()
    visible = np.ones(21, dtype=bool)
    visible[8] = False  # index tip
    image = draw_skeleton(joints, SIZE, SIZE, visible)
    assert len(_pixels_of(image, SKELETON_JOINT_COLORS[8])) == 0  # tip disc and bone 3 of the index
    assert len(_pixels_of(image, SKELETON_JOINT_COLORS[7])) > 0
    visible[0] = False  # the wrist: no first bone of any finger either
    image = draw_skeleton(joints, SIZE, SIZE, visible, joints=False)
    for f in range(5):
        assert len(_pixels_of(image, SKELETON_BONE_COLORS[4 * f])) == 0
        assert len(_pixels_of(image, SKELETON_BONE_COLORS[4 * f + 1])) > 0


def test_joints_outside_the_image_are_not_drawn():
    single = np.full((21, 2), 100.0)
    visible = np.zeros(21, dtype=bool)
    visible[0] = True
    for outside in [(-2.0, 100.0), (100.0, SIZE + 1.0), (-0.6, 50.0), (SIZE - 0.5, 50.0)]:
        single[0] = outside
        assert not draw_skeleton(single, SIZE, SIZE, visible, bones=False).any(), outside
    single[0] = (-0.4, 50.0)  # inside pixel 0
    assert draw_skeleton(single, SIZE, SIZE, visible, bones=False).any()

    far = _fan_hand() + 1e9
    assert not draw_skeleton(far, SIZE, SIZE).any()
    nan = _fan_hand()
    nan[5:9] = np.nan
    image = draw_skeleton(nan, SIZE, SIZE)
    for i in range(5, 9):
        assert len(_pixels_of(image, SKELETON_JOINT_COLORS[i])) == 0
    assert len(_pixels_of(image, SKELETON_JOINT_COLORS[1])) > 0

    # a hand half out of the image: its outside joints leave no disc, nothing crashes
    joints = _fan_hand(wrist=(128.0, 330.0))
    image = draw_skeleton(joints, SIZE, SIZE, bones=False)
    for i in range(21):
        count = len(_pixels_of(image, SKELETON_JOINT_COLORS[i]))
        assert (count > 0) == (joints[i, 1] < SIZE - 0.5), i


def test_skeleton_is_deterministic_and_validates():
    joints = _separated_joints(np.random.default_rng(7))
    first = draw_skeleton(joints, SIZE, 200)
    assert first.shape == (200, SIZE, 3)
    assert np.array_equal(first, draw_skeleton(joints.copy(), SIZE, 200))
    with pytest.raises(ValueError, match=r"\(21, 2\)"):
        draw_skeleton(joints[:20], SIZE, SIZE)
    with pytest.raises(ValueError, match="visible"):
        draw_skeleton(joints, SIZE, SIZE, np.ones(20, dtype=bool))
    with pytest.raises(ValueError, match="width"):
        draw_skeleton(joints, 0, SIZE)


# ------------------------------------------------------------------------------------------------ coloured mask


def test_hoi_mask_colors():
    mask = np.array([[0, 1, 2], [3, 2, 7]], dtype=np.uint8)
    out = hoi_mask(mask, hand_ids=[2], object_ids=[1, 3])
    assert out.dtype == np.uint8 and out.shape == (2, 3, 3)
    assert HOI_HAND_COLOR == (128, 128, 128) and HOI_OBJECT_COLOR == (153, 51, 51)
    expected = np.zeros((2, 3, 3), dtype=np.uint8)
    expected[0, 1] = expected[1, 0] = (153, 51, 51)
    expected[0, 2] = expected[1, 1] = (128, 128, 128)
    assert np.array_equal(out, expected)
    with pytest.raises(ValueError, match="both"):
        hoi_mask(mask, [1, 2], [2])
    with pytest.raises(ValueError, match="mask"):
        hoi_mask(mask.astype(np.float32), [1], [2])


# ------------------------------------------------------------------------------------------------ DaS tracking

W, H = 64, 48
K = np.array([[50.0, 0.0, 31.5], [0.0, 55.0, 23.5], [0.0, 0.0, 1.0]])


def _unproject(u, v, z):
    return np.array([(u - K[0, 2]) * z / K[0, 0], (v - K[1, 2]) * z / K[1, 1], z])


def test_tracking_colors_image_axes():
    points = np.array([_unproject(0, 0, 0.5), _unproject(W - 1, H - 1, 0.7), _unproject(W - 1, 0, 0.6)])
    colors = tracking_vertex_colors(points, K, W, H)
    assert colors.dtype == np.float32 and colors.shape == (3, 3)
    np.testing.assert_allclose(colors[:, :2], [[0, 0], [1, 1], [1, 0]], atol=1e-6)
    assert colors[0, 2] == 1.0 and colors[1, 2] == 0.0  # nearest and farthest


def test_tracking_colors_inverse_depth():
    rng = np.random.default_rng(3)
    z = rng.uniform(0.3, 1.0, size=200)
    points = np.stack(
        [_unproject(u, v, d) for u, v, d in zip(rng.uniform(0, W - 1, 200), rng.uniform(0, H - 1, 200), z)]
    )
    blue = tracking_vertex_colors(points, K, W, H)[:, 2]
    order = np.argsort(z)
    assert np.all(np.diff(blue[order]) <= 0)  # nearer -> larger B
    inv = 1.0 / z
    lo, hi = np.percentile(inv, [2, 98])
    np.testing.assert_allclose(blue, (np.clip(inv, lo, hi) - lo) / (hi - lo), atol=1e-6)
    assert blue.min() == 0.0 and blue.max() == 1.0
    assert (blue == 1.0).sum() >= 4 and (blue == 0.0).sum() >= 4  # the outer 2 % saturate


def test_tracking_colors_percentile_clipping_ignores_outliers():
    z = np.linspace(0.4, 0.6, 99)
    points = [_unproject(30, 20, d) for d in z]
    far = tracking_vertex_colors(np.array(points + [_unproject(30, 20, 1000.0)]), K, W, H)[:, 2]
    near = tracking_vertex_colors(np.array(points + [_unproject(30, 20, 0.001)]), K, W, H)[:, 2]
    for blue, outlier in ((far, 0.0), (near, 1.0)):
        assert blue[-1] == outlier
        assert np.ptp(blue[:-1]) > 0.9  # without clipping the 99 points would share ~1e-3 of the range
    # all in [0, 1]; points behind the camera are black and do not disturb the rest
    behind = tracking_vertex_colors(np.array(points + [[0.0, 0.0, -1.0], _unproject(-50, 200, 0.5)]), K, W, H)
    assert behind.min() >= 0.0 and behind.max() <= 1.0
    assert behind[-2].tolist() == [0.0, 0.0, 0.0]
    assert behind[-1, :2].tolist() == [0.0, 1.0]  # clipped


def test_splat_painter_order_and_discs():
    near, far = _unproject(20, 20, 0.5), _unproject(20, 20, 1.0)
    colors = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    other = _unproject(45.3, 30.6, 2.0)
    for points, near_index in (([near, far, other], 0), ([far, near, other], 1)):
        image = splat_tracks(np.array(points), colors, K, W, H, radius=2)
        assert image.shape == (H, W, 3) and image.dtype == np.uint8
        expected = np.round(255 * colors[near_index]).astype(np.uint8)
        disc = _pixels_of(image, expected)
        assert len(disc) == 13  # pixel centres within 2 px of an integer centre
        assert len(_pixels_of(image, np.round(255 * colors[1 - near_index]))) == 0  # fully hidden
        blue = _pixels_of(image, [0, 0, 255])
        assert len(blue) > 0
        assert np.linalg.norm(blue - [45.3, 30.6], axis=1).max() <= 2.0
        assert np.array_equal(image, splat_tracks(np.array(points), colors, K, W, H, radius=2))
    # partly overlapping discs: the nearer one is complete, the farther one shows around it
    image = splat_tracks(np.array([_unproject(20, 20, 0.5), _unproject(22, 20, 0.4)]), colors[:2], K, W, H, 3)
    assert len(_pixels_of(image, [0, 255, 0])) == 29
    assert 0 < len(_pixels_of(image, [255, 0, 0])) < 29


def test_splat_skips_points_behind_or_outside_and_validates():
    colors = np.full((3, 3), 0.5)
    points = np.array([[0.0, 0.0, -1.0], [0.0, 0.0, 0.0], _unproject(-10, 20, 1.0)])
    assert not splat_tracks(points, colors, K, W, H).any()
    edge = splat_tracks(np.array([_unproject(-1, 20, 1.0)]), colors[:1], K, W, H, radius=2)
    assert len(_pixels_of(edge, [128, 128, 128])) == 4  # 13-pixel disc clipped at the image border
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        splat_tracks(points, colors - 1.0, K, W, H)
    with pytest.raises(ValueError, match="colors"):
        splat_tracks(points, colors[:2], K, W, H)
    with pytest.raises(ValueError, match="radius"):
        splat_tracks(points, colors, K, W, H, radius=0)
    with pytest.raises(ValueError, match="NaN"):
        splat_tracks(np.full((3, 3), np.nan), colors, K, W, H)


# ------------------------------------------------------------------------------------------------ surface samples


def test_surface_samples_lie_on_the_mesh():
    mesh = trimesh.creation.annulus(r_min=0.02, r_max=0.05, height=0.08, sections=24)
    samples = sample_surface_points(mesh.vertices, mesh.faces, 2000, np.random.default_rng(0))
    assert isinstance(samples, SurfaceSamples) and len(samples) == 2000
    assert samples.face_ids.dtype == np.int64 and samples.barycentric.dtype == np.float64
    assert samples.barycentric.min() >= 0.0
    np.testing.assert_allclose(samples.barycentric.sum(axis=1), 1.0, atol=1e-12)
    points = samples.positions(mesh.vertices)
    assert points.shape == (2000, 3)
    _, distance, _ = trimesh.proximity.closest_point(mesh, points)
    assert distance.max() < 1e-9


def test_surface_samples_are_area_weighted_and_uniform():
    # two disjoint triangles with areas 1 and 3
    vertices = np.array([[0, 0, 0], [1, 0, 0], [0, 2, 0], [5, 0, 0], [8, 0, 0], [5, 2, 0]], dtype=np.float64)
    faces = np.array([[0, 1, 2], [3, 4, 5]])
    n = 20000
    samples = sample_surface_points(vertices, faces, n, np.random.default_rng(1))
    fraction = np.mean(samples.face_ids == 1)
    assert abs(fraction - 0.75) < 0.015  # 5 sigma of the binomial
    # uniform inside each triangle: the mean is the centroid, a quarter of the points lie in the corner quarter
    points = samples.positions(vertices)
    for face in range(2):
        inside = points[samples.face_ids == face]
        np.testing.assert_allclose(inside.mean(axis=0), vertices[faces[face]].mean(axis=0), atol=0.05)
        b = samples.barycentric[samples.face_ids == face]
        assert abs(np.mean(b[:, 0] > 0.5) - 0.25) < 0.03  # sub-triangle at corner 0 holds 1/4 of the area


def test_surface_samples_depend_only_on_rng():
    mesh = trimesh.creation.icosphere(subdivisions=2, radius=0.04)
    a = sample_surface_points(mesh.vertices, mesh.faces, 500, np.random.default_rng(42))
    b = sample_surface_points(mesh.vertices, mesh.faces, 500, np.random.default_rng(42))
    c = sample_surface_points(mesh.vertices, mesh.faces, 500, np.random.default_rng(43))
    assert np.array_equal(a.face_ids, b.face_ids) and np.array_equal(a.barycentric, b.barycentric)
    assert not np.array_equal(a.barycentric, c.barycentric)
    assert len(sample_surface_points(mesh.vertices, mesh.faces, 0, np.random.default_rng(0))) == 0
    with pytest.raises(ValueError, match="rng"):
        sample_surface_points(mesh.vertices, mesh.faces, 10, None)
    with pytest.raises(ValueError, match="area"):
        sample_surface_points(np.zeros((3, 3)), np.array([[0, 1, 2]]), 10, np.random.default_rng(0))


def test_surface_samples_follow_rigid_motion_and_batches():
    rng = np.random.default_rng(5)
    mesh = trimesh.creation.box(extents=(0.1, 0.05, 0.02))
    samples = sample_surface_points(mesh.vertices, mesh.faces, 300, rng)
    rest = samples.positions(mesh.vertices)
    frames = []
    for _ in range(4):
        R = axis_angle_to_matrix(rng.normal(size=3))  # noqa: N806
        t = rng.normal(size=3)
        moved = samples.positions(mesh.vertices @ R.T + t)
        np.testing.assert_allclose(moved, rest @ R.T + t, rtol=0, atol=1e-12)
        frames.append(mesh.vertices @ R.T + t)
    batched = samples.positions(np.stack(frames))
    assert batched.shape == (4, 300, 3)
    for i, vertices in enumerate(frames):
        np.testing.assert_allclose(batched[i], samples.positions(vertices), rtol=0, atol=1e-15)
    with pytest.raises(ValueError, match="vertices"):
        samples.positions(mesh.vertices[:3])


# ------------------------------------------------------------------------------------------------ PNG


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("shape", [(17, 23), (17, 23, 3)])
def test_png_round_trip(dtype, shape):
    rng = np.random.default_rng(0)
    top = np.iinfo(dtype).max
    image = rng.integers(0, top, size=shape, endpoint=True).astype(dtype)
    image.flat[0] = top
    image.flat[1] = 0
    data = encode_png(image)
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert data[24] == (8 if dtype == np.uint8 else 16)  # IHDR bit depth
    assert data[25] == (0 if len(shape) == 2 else 2)  # IHDR colour type: grey / RGB
    decoded = decode_png(data)
    assert decoded.dtype == dtype and decoded.shape == shape
    assert np.array_equal(decoded, image)
    assert encode_png(image.copy()) == data  # deterministic bytes
    assert encode_png(np.asfortranarray(image)) == data


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_png_channel_order_is_rgb(dtype):
    image = np.zeros((4, 5, 3), dtype=dtype)
    image[..., 0] = np.iinfo(dtype).max
    decoded = decode_png(encode_png(image))
    assert np.all(decoded[..., 0] == np.iinfo(dtype).max) and not decoded[..., 1:].any()
    # a view that is not contiguous (reversed channels) encodes as what it shows
    view = image[..., ::-1]
    assert np.array_equal(decode_png(encode_png(view)), view)


def test_png_matches_pillow_for_8_bit_and_16_bit_grey():
    from PIL import Image

    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 255, size=(6, 7, 3), endpoint=True, dtype=np.uint8)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(encode_png(rgb)))), rgb)
    grey16 = rng.integers(0, 65535, size=(6, 7), endpoint=True, dtype=np.uint16)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(encode_png(grey16)))).astype(np.uint16), grey16)
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    assert np.array_equal(decode_png(buffer.getvalue()), rgb)


def test_png_errors():
    with pytest.raises(ValueError, match="float32"):
        encode_png(np.zeros((4, 4), dtype=np.float32))
    with pytest.raises(ValueError, match="float64"):
        encode_png(np.full((4, 4, 3), np.nan))
    with pytest.raises(ValueError, match="bool"):
        encode_png(np.zeros((4, 4), dtype=bool))
    with pytest.raises(ValueError, match="int32"):
        encode_png(np.zeros((4, 4), dtype=np.int32))
    with pytest.raises(ValueError, match=r"\(4, 4, 4\)"):
        encode_png(np.zeros((4, 4, 4), dtype=np.uint8))
    with pytest.raises(ValueError, match=r"\(4,\)"):
        encode_png(np.zeros(4, dtype=np.uint8))
    with pytest.raises(ValueError, match="empty"):
        encode_png(np.zeros((0, 4), dtype=np.uint8))
    with pytest.raises(ValueError, match="decode"):
        decode_png(b"not a png")
    with pytest.raises(ValueError, match="decode"):
        decode_png(b"")
