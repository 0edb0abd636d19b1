"""Sequences a video model can use: non-square 720×480 images with exact labels, manipulation frames, mp4 I/O.

Label truth at 720×480 (the CogVideoX-5B-I2V size), re-derived from the pixels of a synth shard: the stored K is
the one derived as for square sizes (50° across the shorter side); NOCS + depth -> Umeyama gives back
``T_cam_obj`` and the scale; joints2d = K joints3d; visible point tracks lie on the depth; tracking colours encode
x / (W - 1) and y / (H - 1) of the pixel they sit on (the non-square normalisation); during manipulation hand and
object move together (the hand is fixed in the object frame) while the object really moves.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hoigen.geometry.camera import intrinsics_preset, size_preset, sized_intrinsics, square_intrinsics


def test_sized_intrinsics_are_derived_as_for_square_sizes():
    k = sized_intrinsics(720, 480)
    square = square_intrinsics(480)
    assert (k.width, k.height) == (720, 480)
    assert k.fx == k.fy == square.fx  # 50° across the shorter side, square pixels
    assert (k.cx, k.cy) == (359.5, 239.5)
    assert sized_intrinsics(512, 512) == square_intrinsics(512)
    assert size_preset(720, 480) == "720x480" and size_preset(256, 256) == "square-256"
    assert intrinsics_preset("720x480") == k
    assert intrinsics_preset("480x720").cx == 239.5
    with pytest.raises(ValueError, match="'720x480'"):
        intrinsics_preset("720*480")


def test_mp4_round_trip_keeps_frame_order_and_is_deterministic():
    pytest.importorskip("av")
    from hoigen.render.video import decode_mp4, encode_mp4

    rng = np.random.default_rng(0)
    # Smooth, distinct frames: a gradient whose offset encodes the frame index.
    y, x = np.mgrid[0:32, 0:48]
    frames = np.stack([((x * 4 + y * 2 + 20 * t) % 256).astype(np.uint8) for t in range(9)])
    frames = np.repeat(frames[..., None], 3, axis=-1)
    frames[..., 1] = 255 - frames[..., 1]
    data = encode_mp4(frames)
    assert encode_mp4(frames) == data  # same frames, same bytes
    decoded = decode_mp4(data)
    assert decoded.shape == frames.shape and decoded.dtype == np.uint8
    for t in range(9):
        errors = [np.abs(decoded[t].astype(float) - frames[s]).mean() for s in range(9)]
        assert int(np.argmin(errors)) == t and errors[t] < 8.0  # frames differ by >= 29
    lossless = decode_mp4(encode_mp4(frames, crf=0))  # lossless H.264; the yuv420 chroma is what remains
    assert np.abs(lossless.astype(int) - frames).mean() < np.abs(decoded.astype(int) - frames).mean()
    odd = rng.integers(0, 255, (3, 17, 23, 3), dtype=np.uint8)
    assert decode_mp4(encode_mp4(odd)).shape == odd.shape  # odd sizes go through yuv444
    with pytest.raises(ValueError, match="uint8"):
        encode_mp4(frames.astype(np.float32))
    with pytest.raises(ValueError, match="not a decodable mp4"):
        decode_mp4(b"not a video")


# ------------------------------------------------------------------------------------------------ 720x480 labels

W, H, APPROACH, MANIPULATION = 720, 480, 2, 2


@pytest.fixture(scope="module")
def sequence(tmp_path_factory):
    pytest.importorskip("cv2")
    pytest.importorskip("webdataset")
    from hoigen.config import RunConfig
    from hoigen.datasets.reader import open_sequences
    from hoigen.synth.run import SynthJob, run_synth

    out = tmp_path_factory.mktemp("seq720") / "run"
    config = RunConfig().replace(
        camera={"preset": size_preset(W, H)},
        trajectory={"frames": APPROACH, "manipulation_frames": MANIPULATION},
        grasp={"candidates": 2, "max_attempts": 40},
    )
    run_synth(SynthJob(config, Path(out), n=1, samples_per_shard=1), workers=1, progress=False)
    sequences = list(open_sequences(out))
    assert len(sequences) == 1
    return sequences[0]


def _backproject(K, xs, ys, z):
    return np.stack([(xs - K[0, 2]) * z / K[0, 0], (ys - K[1, 2]) * z / K[1, 1], z], axis=1)


def _rotation_error_deg(a, b):
    return float(np.degrees(np.arccos(np.clip((np.trace(a.T @ b) - 1.0) / 2.0, -1.0, 1.0))))


def test_720x480_camera_and_images(sequence):
    meta = sequence["meta"]
    assert (meta["camera"]["width"], meta["camera"]["height"]) == (W, H)
    np.testing.assert_allclose(meta["camera"]["K"], sized_intrinsics(W, H).K)
    assert len(sequence["frames"]) == APPROACH + MANIPULATION
    for frame in sequence["frames"]:
        for name in ("rgb", "depth", "mask", "normal", "nocs", "skeleton", "hoimask", "tracking"):
            assert frame[name].shape[:2] == (H, W), name


def test_720x480_nocs_and_depth_recover_pose_and_scale(sequence):
    from hoigen.geometry.transforms import umeyama

    meta = sequence["meta"]
    K = np.asarray(meta["camera"]["K"])
    scale = meta["object"]["scale"]
    checked = 0
    for t, frame in enumerate(sequence["frames"]):
        ys, xs = np.nonzero((frame["mask"] == 1) & (frame["depth"] > 0))
        if ys.size < 300:
            continue
        cam = _backproject(K, xs.astype(float), ys.astype(float), frame["depth_m"][ys, xs].astype(float))
        nocs = frame["nocs"][ys, xs].astype(np.float64) / 65535.0 - 0.5
        s, R, tvec = umeyama(nocs, cam)
        T = np.asarray(meta["frames"][t]["T_cam_obj"])
        assert np.linalg.norm(tvec - T[:3, 3]) < 0.5e-3
        assert _rotation_error_deg(R, T[:3, :3]) < 0.2
        assert abs(s / scale - 1.0) < 0.002
        checked += 1
    assert checked >= 2


def test_720x480_joints_points_and_tracking_colours(sequence):
    meta = sequence["meta"]
    K = np.asarray(meta["camera"]["K"])
    for t, labels in enumerate(meta["frames"]):
        joints3d = np.asarray(labels["joints3d"])
        projected = joints3d @ K.T
        np.testing.assert_allclose(
            np.asarray(labels["joints2d"]), projected[:, :2] / projected[:, 2:], atol=1e-6
        )
        # visible point tracks lie on the rendered depth, in their instance's mask
        points = sequence["points"][t].astype(np.float64)
        uvw = points @ K.T
        u, v = uvw[:, 0] / uvw[:, 2], uvw[:, 1] / uvw[:, 2]
        col, row = np.round(u).astype(int), np.round(v).astype(int)
        inside = (col >= 0) & (col < W) & (row >= 0) & (row < H)
        depth = sequence["frames"][t]["depth_m"]
        on_surface = inside.copy()
        on_surface[inside] = np.abs(depth[row[inside], col[inside]] - points[inside, 2]) < 2e-3
        assert on_surface.sum() > 20
        instance = sequence["frames"][t]["mask"][row[on_surface], col[on_surface]]
        expected = np.where(sequence["points_label"][on_surface] == 1, 2, 1)
        assert (instance == expected).mean() > 0.95
    # tracking colours: R = x / (W - 1), G = y / (H - 1) of the point's frame-0 pixel; at frame 0 each coloured
    # pixel lies within the disc radius (2 px) of the point drawn there
    tracking = sequence["frames"][0]["tracking"]
    ys, xs = np.nonzero(tracking.any(axis=-1))
    assert ys.size > 100
    x_from_colour = tracking[ys, xs, 0] / 255.0 * (W - 1)
    y_from_colour = tracking[ys, xs, 1] / 255.0 * (H - 1)
    assert np.abs(x_from_colour - xs).max() <= 2.0 + 0.5 * (W - 1) / 255.0 + 1e-6
    assert np.abs(y_from_colour - ys).max() <= 2.0 + 0.5 * (H - 1) / 255.0 + 1e-6


def test_manipulation_moves_hand_and_object_together(sequence):
    meta = sequence["meta"]
    grasp = APPROACH - 1
    poses = [np.asarray(f["T_cam_obj"]) for f in meta["frames"]]
    in_object = [
        (np.linalg.inv(poses[t]) @ np.c_[np.asarray(f["joints3d"]), np.ones(21)].T).T[:, :3]
        for t, f in enumerate(meta["frames"])
    ]
    last = len(poses) - 1
    moved = np.linalg.norm(poses[last][:3, 3] - poses[grasp][:3, 3])
    assert moved > 0.02  # the object is lifted / shifted
    for t in range(grasp, last + 1):
        np.testing.assert_allclose(in_object[t], in_object[grasp], atol=1e-6)  # the grasp is held
