"""``ho3d:ROOT``: the reader on a fixture root in HO-3D v3's exact layout (OpenGL camera frame, pickled meta,
R + 256 G depth), re-rendered labels against the fixture's own, ``hoigen synth --clip`` end to end and bad roots."""

from __future__ import annotations

import json
import pickle
import shutil
from types import SimpleNamespace

import numpy as np
import pytest
from click.testing import CliRunner

pytest.importorskip("smplx")

from sources_fixtures import HO3D_OBJECT, HO3D_SEQ, corners_match, mano_dir, write_ho3d_root  # noqa: E402

from hoigen.cli import main  # noqa: E402
from hoigen.config import RunConfig  # noqa: E402
from hoigen.geometry.rotations import axis_angle_to_matrix  # noqa: E402
from hoigen.hands import load_hand  # noqa: E402
from hoigen.hands.model import OPENPOSE_FROM_MANO, HandParams  # noqa: E402
from hoigen.sources import MissingAnnotation  # noqa: E402
from hoigen.sources.ho3d import DEPTH_SCALE_M, HO3DSource  # noqa: E402
from hoigen.synth.real import RealSampler  # noqa: E402


@pytest.fixture(scope="module")
def ho3d(tmp_path_factory):
    base = tmp_path_factory.mktemp("ho3d")
    mano = mano_dir(base / "mano")
    hand = load_hand("mano", mano)
    root = base / "root"
    truth = write_ho3d_root(root, hand)
    return SimpleNamespace(root=root, mano=mano, hand=hand, truth=truth)


def test_reader_converts_the_opengl_frame(ho3d):
    source = HO3DSource(ho3d.root)
    assert len(source) == 3 and source.split == "train"
    cam = ho3d.truth
    for f in (0, 1):
        clip = source.load(f, ho3d.hand)
        for name in ("global_orient", "hand_pose", "transl", "betas"):
            np.testing.assert_allclose(
                getattr(clip.hand, name), getattr(cam.hand[f], name), atol=1e-6, rtol=0
            )
        np.testing.assert_allclose(clip.T_cam_obj[0], cam.T_cam_obj[f], atol=1e-6, rtol=0)
        np.testing.assert_allclose(clip.joints2d[0], cam.joints2d[f], atol=1e-3, rtol=0)  # from handJoints3D
        assert clip.object.id == HO3D_OBJECT and clip.seg is None
        meta = pickle.loads((ho3d.root / "train" / HO3D_SEQ / "meta" / f"{f:04d}.pkl").read_bytes())
        T_gl = np.eye(4)
        T_gl[:3, :3] = axis_angle_to_matrix(meta["objRot"].reshape(3))
        T_gl[:3, 3] = meta["objTrans"]
        model = ho3d.root / "models" / HO3D_OBJECT / "textured_simple.obj"
        # the stored OpenGL parameters are genuinely HO-3D's: MANO run on them in the OpenGL frame gives the
        # stored handJoints3D (so the OpenGL -> OpenCV conversion is not checked against itself)
        gl = HandParams(meta["handPose"][:3], meta["handPose"][3:], meta["handTrans"], meta["handBeta"])
        joints_gl = ho3d.hand.forward(gl).joints[0]
        np.testing.assert_allclose(joints_gl, meta["handJoints3D"][OPENPOSE_FROM_MANO], atol=1e-9)
        assert corners_match(model, np.diag([1.0, -1.0, -1.0, 1.0]) @ T_gl, clip.object, clip.T_cam_obj[0])
        assert np.array_equal(clip.rgb[0], cam.rgb[f])
        np.testing.assert_allclose(clip.intrinsics.K, cam.intrinsics.K)
        # depth: (R + 256 G) units, within one unit of the rendered depth
        rendered = clip.depth_m[0]
        assert rendered.max() > 0.3
    with pytest.raises(MissingAnnotation, match=r"frame\(s\) \[2\]"):
        source.load(2, ho3d.hand)


def test_rerendered_masks_and_joints_equal_the_fixture(ho3d, request):
    config = RunConfig().replace(
        objects={"source": f"ho3d:{ho3d.root}"},
        hand={"model": "mano", "mano": str(ho3d.mano)},
        trajectory={"frames": 1},
    )
    sampler = RealSampler(config, ho3d.hand)
    request.addfinalizer(sampler.close)
    for f in (0, 1):
        clip = sampler.clip(f)
        frame = sampler.render(clip, f).frames[0]
        assert np.array_equal(frame.mask, ho3d.truth.mask[f])
        np.testing.assert_allclose(frame.labels["joints2d"], ho3d.truth.joints2d[f], atol=1e-3, rtol=0)
        depth = frame.depth.astype(np.float64) * 0.1 / 1000.0  # rendered, metres
        sensor = clip.depth_m[0]
        both = (depth > 0) & (sensor > 0)
        assert both.sum() == (depth > 0).sum()
        assert np.abs(depth[both] - sensor[both]).max() <= DEPTH_SCALE_M


def test_doctor_checks_ho3d(ho3d):
    from hoigen.sources.check import check_source

    checks = check_source(f"ho3d:{ho3d.root}", ho3d.mano, frames=2)
    assert [c.sample for c in checks] == [0, 1]  # frame 2 has no annotation
    assert all(c.joints2d_max_px < 1e-3 and c.joints3d_max_mm < 1e-3 for c in checks)
    assert all(c.iou_hand is None for c in checks)  # HO-3D has no segmentation


def test_synth_clips_from_ho3d(ho3d, tmp_path):
    out = tmp_path / "out"
    args = ["synth", "--objects", f"ho3d:{ho3d.root}", "--hand", "mano", "--mano", str(ho3d.mano)]
    result = CliRunner().invoke(main, [*args, "--out", str(out), "--clip", "2", "--size", "32", "32"])
    assert result.exit_code == 0, result.output
    assert "1 samples (2 frames)" in result.output  # frames 0-1; frame 2 fills no second clip

    from hoigen.datasets.reader import open_sequences

    (sample,) = list(open_sequences(out))
    meta = sample["meta"]
    assert meta["source"]["frames"] == [0, 1] and meta["source"]["sequence"] == HO3D_SEQ
    assert meta["source"]["files"] == [f"train/{HO3D_SEQ}/rgb/0000.jpg", f"train/{HO3D_SEQ}/rgb/0001.jpg"]
    assert sample["frames"][0]["rgb"].shape == (32, 32, 3)
    assert "sensor_depth" in sample["frames"][0] and "dataset_seg" not in sample["frames"][0]
    K = np.asarray(meta["camera"]["K"])
    for t, labels in enumerate(meta["frames"]):
        j = np.asarray(labels["joints3d"])
        np.testing.assert_allclose(labels["joints2d"], (j @ K.T)[:, :2] / j[:, 2:], atol=1e-9)
        np.testing.assert_allclose(labels["mano"]["hand_pose"], ho3d.truth.hand[t].hand_pose[0], atol=1e-6)
    run = json.loads((out / "run.json").read_text())
    assert sorted(run["inputs"]["objects"]) == [
        "evaluation.txt",
        f"models/{HO3D_OBJECT}/textured_simple.obj",
        "train.txt",
    ]
    assert run["config"]["real"] == {"split": "", "width": 32, "height": 32}


@pytest.fixture
def broken(ho3d, tmp_path):
    root = tmp_path / "root"
    shutil.copytree(ho3d.root, root)
    return root


def test_bad_ho3d_roots(ho3d, broken):
    meta = broken / "train" / HO3D_SEQ / "meta" / "0001.pkl"
    meta.write_bytes(meta.read_bytes()[:50])
    with pytest.raises(ValueError, match="0001.pkl is not a readable annotation pickle"):
        HO3DSource(broken).load(1, ho3d.hand)
    meta.write_bytes(pickle.dumps({"handPose": print}))  # a pickle that would build a callable
    with pytest.raises(ValueError, match="refused the global"):
        HO3DSource(broken).load(1, ho3d.hand)
    (broken / "models" / HO3D_OBJECT / "textured_simple.obj").unlink()
    with pytest.raises(FileNotFoundError, match=f"{HO3D_OBJECT}/textured_simple.obj"):
        HO3DSource(broken).object_for(0)
    (broken / "train.txt").write_text("MISSING1/0000\n")
    with pytest.raises(FileNotFoundError, match="MISSING1"):
        HO3DSource(broken)
    with pytest.raises(ValueError, match="'train' or 'evaluation'"):
        HO3DSource(broken, "test")
    with pytest.raises(FileNotFoundError, match="ho3d root"):
        HO3DSource(broken / "nope")
