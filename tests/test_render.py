"""Renderer: every label re-derived from the rendered pixels (never compared with itself), and robustness.

Label truth: NOCS + depth -> Umeyama gives back ``T_cam_obj`` and ``scale``; joints2d = K joints3d and the skeleton
discs sit on them; depth lies on the posed mesh; normals match normals estimated from depth; visible point tracks
land in their instance's mask; images agree with the mask; point tracks are fixed surface points; amodal labels
equal the masks of renders with the other instance moved out of view; flat lighting exposes the albedo.

Robustness: a YCB mug whose texture file is missing, a textured YCB apple, no GL platform, a 327k-face mesh (face
ids over 16 bits), an object cut by the image border, determinism.

One GL context (one ``Renderer``) serves the whole module: contexts are slow to make and leak when made per test.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import logging
import os
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import trimesh

pytest.importorskip("cv2")  # the render extra

from hoigen.geometry.camera import CameraConfig, Intrinsics, sample_camera  # noqa: E402
from hoigen.geometry.transforms import apply_transform, invert_transform, make_transform, umeyama  # noqa: E402
from hoigen.grasping import (  # noqa: E402
    ContactGraspSampler,
    GraspConfig,
    Trajectory,
    TrajectoryConfig,
    make_trajectory,
)
from hoigen.hands import BuiltinHand, HandParams  # noqa: E402
from hoigen.objects import FolderSource, make_asset, open_source  # noqa: E402
from hoigen.render import conditions, gl  # noqa: E402
from hoigen.render.config import AppearanceConfig, RenderConfig  # noqa: E402
from hoigen.render.renderer import HAND_ID, OBJECT_ID, Renderer  # noqa: E402

YCB_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "ycb"
CAMERA = CameraConfig(preset="square-256")
# Ambient 1 and no lights: the rendered sRGB colour is exactly the albedo.
FLAT_LIGHT = RenderConfig(
    points_object=256,
    points_hand=128,
    appearance=AppearanceConfig(lights=(1, 1), ambient=(1.0, 1.0), intensity=(0.0, 0.0)),
)
MIN_OBJECT_PIXELS = 500


# ------------------------------------------------------------------------------------------------ decoding helpers


def _depth_m(frame, depth_scale: float) -> np.ndarray:
    """Depth image -> (H, W) float metres (value * depth_scale = mm)."""
    return frame.depth.astype(np.float64) * depth_scale / 1000.0


def _backproject(K: np.ndarray, xs: np.ndarray, ys: np.ndarray, z: np.ndarray) -> np.ndarray:
    """(n, 3) camera-frame points of pixels (xs, ys) at depth z; pixel centres at integer coordinates."""
    return np.stack([(xs - K[0, 2]) * z / K[0, 0], (ys - K[1, 2]) * z / K[1, 1], z], axis=1)


def _instance_points(frame, K: np.ndarray, depth_scale: float, instance: int):
    """Rows, columns and back-projected depth points of the pixels of ``instance``."""
    ys, xs = np.nonzero((frame.mask == instance) & (frame.depth > 0))
    z = _depth_m(frame, depth_scale)[ys, xs]
    return ys, xs, _backproject(K, xs.astype(np.float64), ys.astype(np.float64), z)


def _decode_nocs(image: np.ndarray) -> np.ndarray:
    return image.astype(np.float64) / 65535.0 - 0.5


def _decode_normals(image: np.ndarray) -> np.ndarray:
    n = image.astype(np.float64) / 255.0 * 2.0 - 1.0
    return n / np.maximum(np.linalg.norm(n, axis=-1, keepdims=True), 1e-12)


def _angle_deg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    cos = np.einsum("...i,...i->...", a, b) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


def _rotation_error_deg(R_a: np.ndarray, R_b: np.ndarray) -> float:
    return float(np.degrees(np.arccos(np.clip((np.trace(R_a.T @ R_b) - 1.0) / 2.0, -1.0, 1.0))))


def _tight_box(mask: np.ndarray) -> list[int]:
    """[x, y, w, h] of a boolean mask, [-1, -1, -1, -1] when empty (computed here, not with hoigen's helper)."""
    cols = np.flatnonzero(mask.any(axis=0))
    rows = np.flatnonzero(mask.any(axis=1))
    if cols.size == 0:
        return [-1, -1, -1, -1]
    return [int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)]


def _box_contains(outer: list[int], inner: list[int]) -> bool:
    if inner[2] <= 0:
        return True
    ox, oy, ow, oh = outer
    ix, iy, iw, ih = inner
    return ox <= ix and oy <= iy and ix + iw <= ox + ow and iy + ih <= oy + oh


def _distance_to_mesh_m(mesh: trimesh.Trimesh, pose: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Distance (metres) of ``points`` to ``mesh`` posed by ``pose``. trimesh's closest-point search works in
    millimetres here: its absolute tolerances misplace points on sub-millimetre triangles given in metres (errors
    up to ~0.1 mm seen on the built-in mug)."""
    posed = mesh.copy()
    posed.apply_transform(make_transform(1000.0 * pose[:3, :3], 1000.0 * pose[:3, 3]))
    _, distance, _ = trimesh.proximity.closest_point(posed, 1000.0 * np.asarray(points, dtype=np.float64))
    return distance / 1000.0


def _umeyama_pose(frame, K: np.ndarray, depth_scale: float):
    """(s, R, t) from the object's NOCS pixels and back-projected depth."""
    ys, xs, cam = _instance_points(frame, K, depth_scale, OBJECT_ID)
    nocs = _decode_nocs(frame.nocs[ys, xs])
    return umeyama(nocs, cam), len(ys)


def _assert_pose_recovered(frame, K, depth_scale, scale):
    (s, R, t), n = _umeyama_pose(frame, K, depth_scale)
    T = np.asarray(frame.labels["T_cam_obj"])
    assert n >= MIN_OBJECT_PIXELS
    # Tighter than "1 mm, 0.5°, 0.5 %": half a pixel of disagreement between K and the depth/NOCS images moves the
    # recovered translation by ~0.7 mm at 0.4 m.
    assert np.linalg.norm(t - T[:3, 3]) < 0.1e-3, (t, T[:3, 3])
    assert _rotation_error_deg(R, T[:3, :3]) < 0.05
    assert abs(s / scale - 1.0) < 0.0005, (s, scale)
    return np.linalg.norm(t - T[:3, 3]), _rotation_error_deg(R, T[:3, :3]), abs(s / scale - 1.0)


# ------------------------------------------------------------------------------------------------ scene helpers


def _moved_hand(trajectory: Trajectory, offset: np.ndarray) -> Trajectory:
    """The trajectory with the hand translated by ``offset`` (world frame, metres) in every frame."""
    h = trajectory.hand
    return dataclasses.replace(
        trajectory, hand=HandParams(h.global_orient, h.hand_pose, h.transl + offset[None], h.betas)
    )


def _moved_object(trajectory: Trajectory, offset: np.ndarray) -> Trajectory:
    """The trajectory with the object translated by ``offset`` (world frame) in every frame."""
    return dataclasses.replace(
        trajectory, T_world_obj=make_transform(np.eye(3), offset) @ trajectory.T_world_obj
    )


def _out_of_view(T_cam_world: np.ndarray) -> np.ndarray:
    """A world offset of 1 m along the camera's x axis: far outside a 50° view at ~0.4 m."""
    return invert_transform(T_cam_world)[:3, 0] * 1.0


@contextlib.contextmanager
def _config(renderer: Renderer, config: RenderConfig):
    old = renderer.config
    renderer.config = config
    try:
        yield renderer
    finally:
        renderer.config = old


# ------------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def hand():
    return BuiltinHand()


@pytest.fixture(scope="module")
def scene(hand):
    """A built-in mug, a contact grasp, 2 approach + 1 manipulation frames, a 256² camera."""
    rng = np.random.default_rng([2024, 5])
    obj = open_source("builtin:nocs").object_for(5, rng)
    grasp = ContactGraspSampler(obj, hand, GraspConfig(candidates=2)).sample(rng)
    traj = make_trajectory(grasp.params, hand, TrajectoryConfig(frames=2, manipulation_frames=1), rng, obj.up)
    cam = sample_camera(CAMERA, rng, np.zeros(3), obj.up)
    return types.SimpleNamespace(obj=obj, grasp=grasp, traj=traj, cam=cam)


@pytest.fixture(scope="module")
def renderer(scene):
    if importlib.util.find_spec("pyrender") is None:  # not imported: OpenGL must be first imported by hoigen
        pytest.skip("pyrender is not installed (the render extra)")
    try:
        r = Renderer(scene.cam.intrinsics)
    except gl.RenderError as exc:
        pytest.skip(f"no headless OpenGL here: {exc}")
    yield r
    r.close()


SEQ_SEED = [7, 1]


@pytest.fixture(scope="module")
def seq(renderer, scene, hand):
    return renderer.render_sequence(
        scene.obj, hand, scene.traj, scene.cam.T_cam_world, np.random.default_rng(SEQ_SEED)
    )


@pytest.fixture(scope="module")
def seq_object_alone(renderer, scene, hand):
    """The same sequence with the hand moved out of view: its object mask is the amodal object mask."""
    traj = _moved_hand(scene.traj, _out_of_view(scene.cam.T_cam_world))
    return renderer.render_sequence(
        scene.obj, hand, traj, scene.cam.T_cam_world, np.random.default_rng(SEQ_SEED)
    )


@pytest.fixture(scope="module")
def seq_hand_alone(renderer, scene, hand):
    """The same sequence with the object moved out of view: its hand mask is the amodal hand mask."""
    traj = _moved_object(scene.traj, _out_of_view(scene.cam.T_cam_world))
    return renderer.render_sequence(
        scene.obj, hand, traj, scene.cam.T_cam_world, np.random.default_rng(SEQ_SEED)
    )


# ------------------------------------------------------------------------------------------------ label truth


def test_scene_is_meaningful(seq, scene):
    """The checks below need a scene where both instances are seen and the hand occludes the object somewhere."""
    assert len(seq.frames) == 3
    assert all((f.mask == OBJECT_ID).sum() >= MIN_OBJECT_PIXELS for f in seq.frames)
    assert any((f.mask == HAND_ID).sum() >= MIN_OBJECT_PIXELS for f in seq.frames)
    assert any(f.labels["visib_fract_obj"] < 1.0 for f in seq.frames)


def test_nocs_and_depth_recover_pose_and_scale(seq, scene, renderer):
    K, depth_scale = renderer.intrinsics.K, seq.meta["depth_scale"]
    checked = 0
    for frame in seq.frames:
        if (frame.mask == OBJECT_ID).sum() < MIN_OBJECT_PIXELS:
            continue
        _assert_pose_recovered(frame, K, depth_scale, scene.obj.scale)
        checked += 1
    assert checked >= 2


def test_joints2d_project_joints3d_and_skeleton_discs_sit_on_them(seq, renderer):
    K, W, H = renderer.intrinsics.K, renderer.intrinsics.width, renderer.intrinsics.height
    yy, xx = np.mgrid[0:H, 0:W]
    isolated_checked = interiors_checked = 0
    for frame in seq.frames:
        j3 = np.asarray(frame.labels["joints3d"])
        j2 = np.asarray(frame.labels["joints2d"])
        assert j3.shape == (21, 3) and j2.shape == (21, 2)
        assert (j3[:, 2] > 0).all()
        uvw = j3 @ K.T
        np.testing.assert_allclose(j2, uvw[:, :2] / uvw[:, 2:], rtol=0, atol=1e-3)

        # The stored image is the skeleton of these joints, and each joint's disc interior has its colour where no
        # later-drawn disc covers it.
        np.testing.assert_array_equal(frame.skeleton, conditions.draw_skeleton(j2, W, H))
        d2 = (xx[None] - j2[:, 0, None, None]) ** 2 + (yy[None] - j2[:, 1, None, None]) ** 2  # (21, H, W)
        for i in range(21):
            # cv2 draws a radius-3 disc at fixed point: it can reach pixels up to ~4 px from a later joint's centre
            interior = (d2[i] <= 2.0**2) & (d2[i + 1 :] > 4.0**2).all(axis=0)
            inside = 0 <= j2[i, 0] < W and 0 <= j2[i, 1] < H  # a joint outside the image is not drawn
            if interior.any() and inside:
                assert (frame.skeleton[interior] == conditions.SKELETON_JOINT_COLORS[i]).all(), i
                interiors_checked += 1

        # Joint discs alone: for a joint well inside the image with no other joint within 8 px, the centroid of the
        # pixels of its colour within 4 px is the joint.
        discs = conditions.draw_skeleton(j2, W, H, bones=False)
        for i in range(21):
            x, y = j2[i]
            others = np.delete(j2, i, axis=0)
            if not (5 <= x <= W - 6 and 5 <= y <= H - 6) or np.linalg.norm(others - j2[i], axis=1).min() < 8:
                continue
            near = (d2[i] <= 4.0**2) & (discs == conditions.SKELETON_JOINT_COLORS[i]).all(axis=-1)
            assert 20 <= near.sum() <= 49  # a radius-3 disc
            centroid = np.array([xx[near].mean(), yy[near].mean()])
            assert np.linalg.norm(centroid - j2[i]) < 0.5, (i, centroid, j2[i])
            isolated_checked += 1
    assert interiors_checked >= 21 and isolated_checked >= 5


def test_object_depth_lies_on_the_posed_mesh(seq, scene, renderer):
    K, depth_scale = renderer.intrinsics.K, seq.meta["depth_scale"]
    rng = np.random.default_rng(0)
    for frame in seq.frames:
        _, _, pts = _instance_points(frame, K, depth_scale, OBJECT_ID)
        pts = pts[rng.choice(len(pts), size=min(len(pts), 1500), replace=False)]
        distance = _distance_to_mesh_m(scene.obj.mesh, np.asarray(frame.labels["T_cam_obj"]), pts)
        # Depth is rounded to steps of depth_scale mm: z is off by at most half a step, so the point is off along
        # its ray (x/z, y/z, 1) by at most half a step times the ray's length, and no farther from the surface.
        ray_length = np.linalg.norm(pts / pts[:, 2:], axis=1)
        assert (distance <= 0.5 * depth_scale / 1000.0 * ray_length + 1e-7).all(), distance.max()
        assert np.median(distance) < 0.03e-3, np.median(distance)


def _depth_normals(depth_m: np.ndarray, mask: np.ndarray, K: np.ndarray):
    """Normals from central differences of the back-projected depth, on pixels whose four neighbours are on the
    same instance and depth-continuous. Returns (ys, xs, normals) oriented toward the camera."""
    H, W = depth_m.shape
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float64)
    P = _backproject(K, xx.ravel(), yy.ravel(), depth_m.ravel()).reshape(H, W, 3)
    c = (slice(1, -1), slice(1, -1))
    right, left = (slice(1, -1), slice(2, None)), (slice(1, -1), slice(None, -2))
    down, up = (slice(2, None), slice(1, -1)), (slice(None, -2), slice(1, -1))
    m, z = mask[c], depth_m[c]
    ok = m > 0
    step = 2.0 * z / K[0, 0]  # the metric width of two pixels
    for nb in (right, left, down, up):
        ok &= (mask[nb] == m) & (depth_m[nb] > 0) & (np.abs(depth_m[nb] - z) < 2.0 * step)
    n = -np.cross(P[right] - P[left], P[down] - P[up])
    n *= np.where(np.einsum("...i,...i->...", n, P[c]) > 0, -1.0, 1.0)[..., None]
    ys, xs = np.nonzero(ok)
    return ys + 1, xs + 1, n[ok]


@pytest.mark.parametrize("instance", [OBJECT_ID, HAND_ID])
def test_normals_match_normals_estimated_from_depth(seq, renderer, instance):
    K, depth_scale = renderer.intrinsics.K, seq.meta["depth_scale"]
    angles = []
    for frame in seq.frames:
        mask = np.where(frame.mask == instance, frame.mask, 0)
        ys, xs, n_depth = _depth_normals(_depth_m(frame, depth_scale), mask, K)
        angles.append(_angle_deg(_decode_normals(frame.normal[ys, xs]), n_depth))
    angles = np.concatenate(angles)
    assert len(angles) >= 1000
    assert np.median(angles) < 5.0, np.median(angles)


def test_normals_face_the_camera(seq, renderer):
    K, depth_scale = renderer.intrinsics.K, seq.meta["depth_scale"]
    for frame in seq.frames:
        for instance in (OBJECT_ID, HAND_ID):
            ys, xs, pts = _instance_points(frame, K, depth_scale, instance)
            facing = np.einsum("ij,ij->i", _decode_normals(frame.normal[ys, xs]), pts) < 0
            assert facing.mean() > 0.99


def test_visible_points_project_into_their_instance_mask(seq, renderer):
    intr, depth_scale = renderer.intrinsics, seq.meta["depth_scale"]
    W, H = intr.width, intr.height
    want = np.where(seq.points_label == 0, OBJECT_ID, HAND_ID)
    assert seq.points.dtype == np.float32 and seq.points.shape[0] == len(seq.frames)
    for t, frame in enumerate(seq.frames):
        pts = seq.points[t].astype(np.float64)
        z = pts[:, 2]
        u = np.round(intr.fx * pts[:, 0] / z + intr.cx).astype(np.int64)
        v = np.round(intr.fy * pts[:, 1] / z + intr.cy).astype(np.int64)
        inside = (z > 0) & (u >= 0) & (u < W) & (v >= 0) & (v < H)
        depth = np.zeros(len(z))
        depth[inside] = _depth_m(frame, depth_scale)[v[inside], u[inside]]
        visible = inside & (depth > 0) & (np.abs(depth - z) < 1e-3)
        assert visible.sum() >= 200
        for label, instance in ((0, OBJECT_ID), (1, HAND_ID)):
            if (frame.mask == instance).sum() >= MIN_OBJECT_PIXELS:
                assert (visible & (seq.points_label == label)).sum() >= 20
        hit = frame.mask[v[visible], u[visible]] == want[visible]
        assert hit.mean() >= 0.95, hit.mean()


def test_boxes_counts_and_visible_fractions(seq, seq_object_alone, seq_hand_alone):
    W, H = seq.frames[0].mask.shape[::-1]
    for frame, obj_alone, hand_alone in zip(seq.frames, seq_object_alone.frames, seq_hand_alone.frames):
        labels = frame.labels
        for name, instance, alone in (("obj", OBJECT_ID, obj_alone), ("hand", HAND_ID, hand_alone)):
            visible = frame.mask == instance
            amodal = alone.mask == instance
            assert not (alone.mask == (HAND_ID if instance == OBJECT_ID else OBJECT_ID)).any()
            # Visible labels from the mask; amodal labels from the render without the other instance.
            assert labels[f"bbox_visib_{name}"] == _tight_box(visible)
            assert labels[f"px_count_visib_{name}"] == int(visible.sum())
            assert not (visible & ~amodal).any()
            assert labels[f"bbox_{name}"] == _tight_box(amodal)
            assert labels[f"px_count_all_{name}"] == int(amodal.sum())
            assert _box_contains(labels[f"bbox_{name}"], labels[f"bbox_visib_{name}"])
            x, y, w, h = labels[f"bbox_{name}"]
            assert 0 <= x and 0 <= y and x + w <= W and y + h <= H
            fract = labels[f"visib_fract_{name}"]
            assert 0.0 <= fract <= 1.0
            assert fract == pytest.approx(labels[f"px_count_visib_{name}"] / labels[f"px_count_all_{name}"])


def test_images_agree_with_the_mask(seq):
    for frame in seq.frames:
        mask = frame.mask
        assert mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, OBJECT_ID, HAND_ID}
        expected = np.zeros(mask.shape + (3,), np.uint8)
        expected[mask == HAND_ID] = (128, 128, 128)
        expected[mask == OBJECT_ID] = (153, 51, 51)
        np.testing.assert_array_equal(frame.hoimask, expected)
        assert frame.depth.dtype == np.uint16
        np.testing.assert_array_equal(frame.depth == 0, mask == 0)
        assert frame.normal.dtype == np.uint8
        np.testing.assert_array_equal(frame.normal.any(axis=-1), mask > 0)
        assert frame.nocs.dtype == np.uint16
        np.testing.assert_array_equal(frame.nocs.any(axis=-1), mask == OBJECT_ID)
        assert not frame.tracking[mask == 0].any()
        nocs = _decode_nocs(frame.nocs[mask == OBJECT_ID])
        assert np.abs(nocs).max() <= 0.5


def test_flat_light_rgb_is_the_albedo(renderer, scene, hand):
    """Ambient 1, no lights: object pixels take the mesh's face colours, hand pixels the skin colour."""
    with _config(renderer, FLAT_LIGHT):
        seq = renderer.render_sequence(
            scene.obj, hand, scene.traj, scene.cam.T_cam_world, np.random.default_rng([3])
        )
    assert seq.meta["object_albedo"] == "face"
    palette = {tuple(c) for c in np.asarray(scene.obj.mesh.visual.face_colors)[:, :3].tolist()}
    skin_linear = np.asarray(seq.meta["appearance"]["skin"])
    skin = np.where(skin_linear <= 0.0031308, skin_linear * 12.92, 1.055 * skin_linear ** (1 / 2.4) - 0.055)
    skin = tuple(np.round(skin * 255).astype(int).tolist())
    for frame in seq.frames:
        obj_colors = {tuple(c) for c in frame.rgb[frame.mask == OBJECT_ID].tolist()}
        assert obj_colors and obj_colors <= palette
        hand_colors = {tuple(c) for c in frame.rgb[frame.mask == HAND_ID].tolist()}
        assert hand_colors == {skin}


def test_point_tracks_are_fixed_surface_points(seq, scene):
    frames = [np.asarray(f.labels["T_cam_obj"]) for f in seq.frames]
    obj_pts = seq.points[:, seq.points_label == 0].astype(np.float64)
    canonical = np.stack([apply_transform(invert_transform(T), p) for T, p in zip(frames, obj_pts)])
    assert np.abs(canonical - canonical[0]).max() < 1e-6
    assert _distance_to_mesh_m(scene.obj.mesh, np.eye(4), canonical[0]).max() < 1e-6
    # From the grasp on (t == 1) the hand moves with the object: its points are fixed in the object's frame too.
    grasped = np.flatnonzero(scene.traj.t == 1.0)
    assert len(grasped) >= 2
    hand_pts = seq.points[:, seq.points_label == 1].astype(np.float64)
    in_object = np.stack([apply_transform(invert_transform(frames[k]), hand_pts[k]) for k in grasped])
    assert np.abs(in_object - in_object[0]).max() < 1e-6


# ------------------------------------------------------------------------------------------------ robustness


@pytest.fixture(scope="module")
def ycb():
    if not YCB_DIR.is_dir():
        pytest.skip(f"YCB samples not found at {YCB_DIR}")
    source = FolderSource(YCB_DIR)
    return source, {entry.id: k for k, entry in enumerate(source.entries)}


def _render_single_grasp(renderer, obj, hand, scene, seed):
    rng = np.random.default_rng(seed)
    traj = make_trajectory(scene.grasp.params, hand, TrajectoryConfig(frames=1), rng, obj.up)
    cam = sample_camera(CAMERA, rng, np.zeros(3), obj.up)
    with _config(renderer, FLAT_LIGHT):
        return renderer.render_sequence(obj, hand, traj, cam.T_cam_world, rng)


@pytest.mark.ycb
def test_mug_with_missing_texture_renders_untextured(ycb, renderer, scene, hand, caplog):
    source, index = ycb
    if "025_mug" not in index:
        pytest.skip("025_mug not among the YCB samples")
    with caplog.at_level(logging.WARNING):
        mug = source.load(index["025_mug"])
    assert any(
        r.levelno == logging.WARNING and "025_mug" in r.getMessage() and "texture" in r.getMessage()
        for r in caplog.records
    )
    assert not mug.textured
    seq = _render_single_grasp(renderer, mug, hand, scene, [5, 25])
    assert seq.meta["object_albedo"] != "texture"
    frame = seq.frames[0]
    colors = np.unique(frame.rgb[frame.mask == OBJECT_ID], axis=0)
    assert (frame.mask == OBJECT_ID).sum() >= MIN_OBJECT_PIXELS
    assert len(colors) == 1  # flat light, one albedo


@pytest.mark.ycb
def test_textured_apple_renders_its_texture(ycb, renderer, scene, hand):
    from scipy.spatial import cKDTree

    source, index = ycb
    if "013_apple" not in index:
        pytest.skip("013_apple not among the YCB samples")
    apple = source.load(index["013_apple"])
    assert apple.textured
    seq = _render_single_grasp(renderer, apple, hand, scene, [5, 13])
    assert seq.meta["object_albedo"] == "texture"
    frame = seq.frames[0]
    obj_rgb = frame.rgb[frame.mask == OBJECT_ID].astype(np.float64)
    assert len(obj_rgb) >= MIN_OBJECT_PIXELS
    assert len(np.unique(obj_rgb, axis=0)) > 50 and obj_rgb.std(axis=0).max() > 3.0
    # Under flat light each pixel is a (bilinear) texture sample: its colour is one the texture holds.
    texture = np.asarray(apple.mesh.visual.material.image.convert("RGB")).reshape(-1, 3).astype(np.int64)
    present = np.zeros(1 << 24, dtype=bool)
    present[(texture[:, 0] << 16) | (texture[:, 1] << 8) | texture[:, 2]] = True
    code = np.flatnonzero(present)
    texels = np.stack([code >> 16, (code >> 8) & 255, code & 255], axis=1).astype(np.float64)
    distance, _ = cKDTree(texels).query(obj_rgb)
    assert np.median(distance) < 3.0, np.median(distance)


def test_select_platform_without_any_gl_names_packages_and_doctor(monkeypatch):
    monkeypatch.delenv("PYOPENGL_PLATFORM", raising=False)
    monkeypatch.delitem(sys.modules, "OpenGL", raising=False)  # as if OpenGL had not been imported yet
    probed = []

    def failing_probe(platform, timeout):
        probed.append(platform)
        return f"libEGL.so.1: cannot open shared object file ({platform})"

    monkeypatch.setattr(gl, "_probe", failing_probe)
    with pytest.raises(gl.RenderError) as info:
        gl.select_platform(timeout=1.0)
    message = str(info.value)
    assert probed == ["egl", "osmesa"]
    for package in ("libegl1", "libegl-mesa0", "libgl1-mesa-dri", "libosmesa6"):
        assert package in message
    assert "hoigen doctor" in message
    assert "cannot open shared object file" in message
    assert "PYOPENGL_PLATFORM" not in os.environ
    # The renderer reports the same error instead of crashing inside OpenGL.
    with pytest.raises(gl.RenderError, match="hoigen doctor"):
        Renderer(Intrinsics(100.0, 100.0, 15.5, 15.5, 32, 32))


def test_select_platform_after_opengl_was_imported(monkeypatch):
    monkeypatch.delenv("PYOPENGL_PLATFORM", raising=False)
    monkeypatch.setitem(sys.modules, "OpenGL", sys.modules.get("OpenGL") or types.ModuleType("OpenGL"))
    probed = []
    monkeypatch.setattr(gl, "_probe", lambda platform, timeout: probed.append(platform))
    with pytest.raises(gl.RenderError, match="PYOPENGL_PLATFORM"):
        gl.select_platform(timeout=1.0)
    assert probed == []  # too late to choose: probing would not help


def test_select_platform_keeps_the_users_choice(monkeypatch):
    monkeypatch.setenv("PYOPENGL_PLATFORM", "osmesa")
    monkeypatch.setattr(gl, "_probe", lambda platform, timeout: pytest.fail("probed"))
    assert gl.select_platform() == "osmesa"


def _ray_triangle(tri: np.ndarray, rays: np.ndarray):
    """Intersect rays from the origin with triangles (n, 3, 3): (barycentric (n, 3), points (n, 3))."""
    e1, e2 = tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]
    p = np.cross(rays, e2)
    det = np.einsum("ij,ij->i", e1, p)
    s = -tri[:, 0]
    b1 = np.einsum("ij,ij->i", s, p) / det
    q = np.cross(s, e1)
    b2 = np.einsum("ij,ij->i", rays, q) / det
    t = np.einsum("ij,ij->i", e2, q) / det
    return np.stack([1.0 - b1 - b2, b1, b2], axis=1), rays * t[:, None]


def test_large_mesh_renders_and_face_ids_decode(renderer, hand):
    radius = 0.08
    sphere = make_asset(
        trimesh.creation.icosphere(subdivisions=7, radius=radius),
        object_id="icosphere-7",
        source="test",
        category="sphere",
        class_id=0,
        symmetry=None,
        up=np.array([0.0, 1.0, 0.0]),
    )
    assert len(sphere.mesh.faces) > 3 * 2**16  # ids use all three bytes
    rng = np.random.default_rng([9, 9])
    cam = sample_camera(CAMERA, rng, np.zeros(3), sphere.up)
    traj = Trajectory(
        T_world_obj=np.eye(4)[None],
        hand=_moved_hand(
            Trajectory(np.eye(4)[None], HandParams.zeros(1), np.ones(1), np.ones(1, np.int64)),
            _out_of_view(cam.T_cam_world),
        ).hand,
        t=np.ones(1),
        phase=np.ones(1, np.int64),
    )
    K, depth_scale = renderer.intrinsics.K, renderer.config.depth_scale
    seq = renderer.render_sequence(sphere, hand, traj, cam.T_cam_world, rng)
    frame = seq.frames[0]
    assert not (frame.mask == HAND_ID).any()
    T = np.asarray(frame.labels["T_cam_obj"])
    ys, xs, pts = _instance_points(frame, K, depth_scale, OBJECT_ID)
    assert len(pts) >= 5000
    # Depth on the analytic sphere (tessellation sag ~1 µm, depth steps 0.1 mm), NOCS = canonical / scale.
    assert np.abs(np.linalg.norm(pts - T[:3, 3], axis=1) - radius).max() < 0.1e-3
    canonical = (pts - T[:3, 3]) @ T[:3, :3]
    nocs = _decode_nocs(frame.nocs[ys, xs])
    assert np.abs(nocs * sphere.scale - canonical).max() < 0.1e-3
    _assert_pose_recovered(frame, K, depth_scale, sphere.scale)

    # The id pass itself: the decoded triangle of each pixel holds the ray through the pixel centre, at the
    # rasterised depth.
    instance, face, depth = renderer.raster.rasterize(K)
    sel = instance == OBJECT_ID
    np.testing.assert_array_equal(sel, frame.mask == OBJECT_ID)
    f = face[sel]
    assert f.min() >= 0 and f.max() >= 2 * 2**16 and f.max() < len(sphere.mesh.faces)
    vertices = apply_transform(T, sphere.mesh.vertices)
    py, px = np.nonzero(sel)
    rays = np.stack([(px - K[0, 2]) / K[0, 0], (py - K[1, 2]) / K[1, 1], np.ones(len(px))], axis=1)
    bary, hit = _ray_triangle(vertices[sphere.mesh.faces[f]], rays)
    assert (bary.min(axis=1) > -0.05).mean() > 0.999, np.sort(bary.min(axis=1))[:10]
    assert (bary.min(axis=1) > -0.5).all()
    assert np.abs(hit[:, 2] - depth[sel]).max() < 0.05e-3


def test_object_cut_by_the_image_border(renderer, scene, hand):
    """The object's centre on the right image border: boxes stay inside the image and labels stay exact.

    hoigen counts ``px_count_all`` (and the amodal box) over in-image pixels only, so ``visib_fract`` measures
    occlusion by the hand, not truncation by the border (the BOP toolkit also counts the truncated part, rendering
    on an enlarged canvas). Asserted here: the amodal count equals the object's in-image mask with the hand moved
    away.
    """
    intr = renderer.intrinsics
    centre = apply_transform(scene.cam.T_cam_world @ scene.traj.T_world_obj[0], np.zeros((1, 3)))[0]
    target_x = (intr.width - 1 - intr.cx) * centre[2] / intr.fx
    T_cam_world = make_transform(np.eye(3), [target_x - centre[0], 0.0, 0.0]) @ scene.cam.T_cam_world
    seq = renderer.render_sequence(scene.obj, hand, scene.traj, T_cam_world, np.random.default_rng([4]))
    alone = renderer.render_sequence(
        scene.obj,
        hand,
        _moved_hand(scene.traj, _out_of_view(T_cam_world)),
        T_cam_world,
        np.random.default_rng([4]),
    )
    W, H = intr.width, intr.height
    obj = seq.frames[0].mask == OBJECT_ID
    assert obj[:, -1].any() and obj[:, : W // 2].sum() < obj.sum()  # cut by the right border
    for frame, frame_alone in zip(seq.frames, alone.frames):
        labels = frame.labels
        obj = frame.mask == OBJECT_ID
        for name in ("obj", "hand"):
            for key in (f"bbox_{name}", f"bbox_visib_{name}"):
                x, y, w, h = labels[key]
                if w > 0:
                    assert x >= 0 and y >= 0 and x + w <= W and y + h <= H
            fract = labels[f"visib_fract_{name}"]
            assert 0.0 <= fract <= 1.0
            if labels[f"px_count_all_{name}"]:
                assert fract == pytest.approx(
                    labels[f"px_count_visib_{name}"] / labels[f"px_count_all_{name}"]
                )
        amodal = frame_alone.mask == OBJECT_ID
        assert labels["px_count_all_obj"] == int(amodal.sum())
        assert labels["bbox_obj"] == _tight_box(amodal)
        if obj[:, -1].any():
            x, _, w, _ = labels["bbox_obj"]
            assert x + w == W
        if obj.sum() >= MIN_OBJECT_PIXELS:
            _assert_pose_recovered(frame, intr.K, seq.meta["depth_scale"], scene.obj.scale)


def test_rendering_is_deterministic(renderer, scene, hand, seq):
    again = renderer.render_sequence(
        scene.obj, hand, scene.traj, scene.cam.T_cam_world, np.random.default_rng(SEQ_SEED)
    )
    assert len(again.frames) == len(seq.frames)
    for a, b in zip(seq.frames, again.frames):
        for name in ("rgb", "depth", "mask", "normal", "nocs", "skeleton", "hoimask", "tracking"):
            x, y = getattr(a, name), getattr(b, name)
            assert x.dtype == y.dtype and x.shape == y.shape and x.tobytes() == y.tobytes(), name
        assert a.labels == b.labels
    assert seq.points.tobytes() == again.points.tobytes()
    assert seq.points_label.tobytes() == again.points_label.tobytes()
    assert seq.meta == again.meta


def test_closing_one_rasterizer_keeps_the_others_working():
    """pyrender terminates the process-wide EGL display when any renderer is deleted; hoigen's must not."""
    import gc

    from hoigen.render.gl import IdRasterizer

    box = trimesh.creation.box((0.1, 0.1, 0.1))
    pose = np.eye(4)
    pose[2, 3] = 0.5
    K = np.array([[40.0, 0.0, 15.5], [0.0, 40.0, 15.5], [0.0, 0.0, 1.0]])
    first, second = IdRasterizer(32, 32), IdRasterizer(32, 32)
    for raster in (first, second):
        raster.set_mesh("box", box.vertices, box.faces, 1, pose)
    expected = second.rasterize(K)[0]
    assert (expected == 1).sum() > 0
    first.close()
    del first
    gc.collect()
    np.testing.assert_array_equal(second.rasterize(K)[0], expected)
    third = IdRasterizer(32, 32)
    third.set_mesh("box", box.vertices, box.faces, 1, pose)
    np.testing.assert_array_equal(third.rasterize(K)[0], expected)
    second.close()
    third.close()
