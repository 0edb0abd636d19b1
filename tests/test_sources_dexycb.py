"""``dexycb:ROOT``: the reader on a fixture root in DexYCB's exact layout (made from hoigen's own renders of the
synthetic MANO-shaped hand), re-rendered labels against the fixture's own, ``hoigen synth`` end to end, clips,
resizing, the s0-s3 split rules and bad roots."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

pytest.importorskip("smplx")

from sources_fixtures import (  # noqa: E402
    GRASP_NAME,
    SEQUENCE,
    SUBJECT,
    corners_match,
    mano_dir,
    write_dexycb_root,
)

from hoigen.cli import main  # noqa: E402
from hoigen.config import RunConfig  # noqa: E402
from hoigen.hands import load_hand  # noqa: E402
from hoigen.sources import MissingAnnotation, open_real_source  # noqa: E402
from hoigen.sources.dexycb import SERIALS, DexYCBSource, split_rule  # noqa: E402
from hoigen.sources.record import cover_crop  # noqa: E402
from hoigen.synth.real import RealSampler, check_real_config  # noqa: E402


@pytest.fixture(scope="module")
def dex(tmp_path_factory):
    base = tmp_path_factory.mktemp("dexycb")
    mano = mano_dir(base / "mano")
    hand = load_hand("mano", mano)
    root = base / "root"
    truth = write_dexycb_root(root, hand)
    return SimpleNamespace(root=root, mano=mano, hand=hand, truth=truth)


def _config(dex, **real) -> RunConfig:
    frames = real.pop("clip", 1)
    return RunConfig().replace(
        objects={"source": f"dexycb:{dex.root}"},
        hand={"model": "mano", "mano": str(dex.mano)},
        trajectory={"frames": frames},
        real=real,
    )


def _where(source, index):
    window = source.window(index)
    return window.sequence.rsplit("/", 1)[1], window.frames


def test_reader_recovers_the_fixture_poses_and_labels(dex):
    source = DexYCBSource(dex.root)
    assert len(source) == 6  # 2 cameras x 3 frames
    skipped = 0
    for index in range(len(source)):
        serial, (f,) = _where(source, index)
        cam = dex.truth[serial]
        if cam.hand[f] is None:
            with pytest.raises(MissingAnnotation, match=r"frame\(s\) \[1\]"):
                source.load(index, dex.hand)
            skipped += 1
            continue
        clip = source.load(index, dex.hand)
        want = cam.hand[f]
        for name in ("global_orient", "hand_pose", "transl", "betas"):
            np.testing.assert_allclose(getattr(clip.hand, name), getattr(want, name), atol=1e-6, rtol=0)
        np.testing.assert_allclose(clip.T_cam_obj[0], cam.T_cam_obj[f], atol=1e-6, rtol=0)
        np.testing.assert_allclose(clip.joints2d[0], cam.joints2d[f], atol=1e-3, rtol=0)
        assert clip.object.id == GRASP_NAME
        labels = np.load(dex.root / SUBJECT / SEQUENCE / serial / f"labels_{f:06d}.npz")
        T_cam_mesh = np.vstack([labels["pose_y"][0].astype(np.float64), [0, 0, 0, 1]])
        model = dex.root / "models" / GRASP_NAME / "textured_simple.obj"
        assert corners_match(model, T_cam_mesh, clip.object, clip.T_cam_obj[0])
        assert np.array_equal(clip.rgb[0], cam.rgb[f])
        assert np.array_equal(clip.seg[0], cam.mask[f])  # 255 -> 2 hand, ycb id -> 1 object
        assert clip.intrinsics.width == 64 and clip.intrinsics.height == 48
        assert clip.depth_m is not None and clip.depth_m.dtype == np.float32
    assert skipped == 1


def test_rerendered_joints_and_masks_equal_the_dataset_labels(dex, request):
    sampler = RealSampler(_config(dex), dex.hand)
    request.addfinalizer(sampler.close)
    made = 0
    for index in range(len(sampler.source)):
        serial, (f,) = _where(sampler.source, index)
        cam = dex.truth[serial]
        if cam.hand[f] is None:
            continue
        clip = sampler.clip(index)
        frame = sampler.render(clip, index).frames[0]
        np.testing.assert_allclose(frame.labels["joints2d"], clip.joints2d[0], atol=1e-3, rtol=0)
        assert np.array_equal(frame.mask, clip.seg[0])
        assert np.array_equal(frame.rgb, cam.rgb[f])  # the real frame replaces the render
        made += 1
    assert made == 5

    from hoigen.sources.check import check_source, format_checks

    checks = check_source(f"dexycb:{dex.root}", dex.mano, frames=3)
    assert len(checks) == 3
    assert all(c.joints2d_max_px < 1e-3 and c.iou_hand == 1.0 and c.iou_object == 1.0 for c in checks)
    assert all(c.joints3d_max_mm < 1e-3 for c in checks)  # the fixture's joint_3d is float32 metres
    assert "IoU hand 1.000" in format_checks(checks)[-1]
    result = CliRunner().invoke(main, ["doctor", "--source", f"dexycb:{dex.root}", "--mano", str(dex.mano)])
    assert result.exit_code == 0, result.output
    assert "joints2d max" in result.output and "worst over 4 frames" in result.output
    result = CliRunner().invoke(main, ["doctor", "--source", f"dexycb:{dex.root / 'nope'}"])
    assert result.exit_code != 0 and "does not exist" in result.output


def test_synth_writes_ordinary_shards_from_real_frames(dex, tmp_path):
    out = tmp_path / "out"
    args = ["synth", "--objects", f"dexycb:{dex.root}", "--hand", "mano", "--mano", str(dex.mano)]
    result = CliRunner().invoke(main, [*args, "--out", str(out), "--samples-per-shard", "4"])
    assert result.exit_code == 0, result.output
    assert "5 samples (5 frames)" in result.output and "1 skipped" in result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["samples"] == 5 and len(manifest["skipped"]) == 1
    assert "no annotation" in manifest["skipped"][0]["reason"]

    from hoigen.datasets.reader import open_sequences

    source = open_real_source(f"dexycb:{dex.root}")
    seen = 0
    for sample in open_sequences(out):
        meta = sample["meta"]
        index = meta["index"]
        serial, (f,) = _where(source, index)
        cam = dex.truth[serial]
        frame, labels = sample["frames"][0], meta["frames"][0]
        src = meta["source"]
        assert src["dataset"] == "dexycb" and src["serial"] == serial and src["frames"] == [f]
        assert src["files"] == [f"{SUBJECT}/{SEQUENCE}/{serial}/color_{f:06d}.jpg"]
        assert meta["grasp"]["method"] == "dataset" and meta["appearance"]["model"] == "real"
        assert np.array_equal(frame["rgb"], cam.rgb[f])
        assert np.array_equal(frame["mask"], cam.mask[f])
        assert np.array_equal(frame["dataset_seg"], cam.mask[f])
        np.testing.assert_allclose(labels["joints2d"], cam.joints2d[f], atol=1e-3, rtol=0)
        for name in ("hand_pose", "transl", "betas"):
            np.testing.assert_allclose(labels["mano"][name], getattr(cam.hand[f], name)[0], atol=1e-6, rtol=0)
        np.testing.assert_allclose(labels["T_cam_obj"], cam.T_cam_obj[f], atol=1e-6, rtol=0)
        import cv2

        depth_file = dex.root / SUBJECT / SEQUENCE / serial / f"aligned_depth_to_color_{f:06d}.png"
        sensor_mm = cv2.imread(str(depth_file), cv2.IMREAD_UNCHANGED).astype(np.int64)
        assert np.array_equal(frame["sensor_depth"].astype(np.int64), sensor_mm * 10)  # depth_scale 0.1
        K = np.asarray(meta["camera"]["K"])
        assert K[0, 0] == dex.truth[serial].intrinsics.fx
        seen += 1
    assert seen == 5

    # the exporters need nothing special: BOP rebuilds the object from the run config
    result = CliRunner().invoke(main, ["export", "bop", str(out), str(tmp_path / "bop")])
    assert result.exit_code == 0, result.output
    scene_gt = next((tmp_path / "bop").rglob("scene_gt.json"))
    assert len(json.loads(scene_gt.read_text())) == 5


def test_clips_resize_and_split_in_process(dex, request):
    config = _config(dex, clip=3, width=32, height=24, split="s2:train")
    sampler = RealSampler(config, dex.hand)
    request.addfinalizer(sampler.close)
    assert len(sampler.source) == 2  # one clip of 3 frames per camera
    members, info = sampler.sample(0)
    assert members is not None and "f002.rgb.png" in members
    with RealSampler(config, dex.hand) as again:  # same config and seed: the same bytes
        assert again.sample(0)[0] == members
    skip_members, skip = sampler.sample(1)  # camera 2 has an unannotated frame inside its clip
    assert skip_members is None and "frame(s) [1]" in skip["reason"]

    meta = json.loads(members["meta.json"])
    K = np.asarray(meta["camera"]["K"])
    want, scaled, crop = cover_crop(dex.truth[SERIALS[0]].intrinsics, (32, 24))
    assert (meta["camera"]["width"], meta["camera"]["height"]) == (32, 24)
    np.testing.assert_allclose(K, want.K)
    assert meta["source"]["resize"] == {"from": [64, 48], "scaled": list(scaled), "crop": list(crop)}
    clip = sampler.clip(0)
    assert clip.rgb.shape == (3, 24, 32, 3) and clip.seg.shape == (3, 24, 32)
    for t, labels in enumerate(meta["frames"]):
        assert labels["source_frame"] == t
        np.testing.assert_allclose(labels["joints2d"], clip.joints2d[t], atol=1e-3, rtol=0)
        joints = np.asarray(labels["joints3d"])
        np.testing.assert_allclose(labels["joints2d"], want.project(joints), atol=1e-9)


def test_split_rules_follow_the_toolkit_index_rules():
    def count(split, n, which):
        return sum(split_rule(split)[which](i) for i in range(n))

    assert count("s0:train", 100, 2) == 80 and count("s0:val", 100, 2) == 20
    assert count("s0:val", 10, 0) == 2 and count("s0:test", 10, 0) == 8
    assert count("s1:train", 10, 0) == 7 and count("s1:val", 10, 0) == 1 and count("s1:test", 10, 0) == 2
    assert count("s2:train", 8, 1) == 6 and split_rule("s2:test")[1](7) and not split_rule("s2:test")[1](6)
    assert (
        count("s3:train", 100, 2) == 75 and count("s3:val", 100, 2) == 10 and count("s3:test", 100, 2) == 15
    )
    with pytest.raises(ValueError, match="s0 \\(seen\\)"):
        split_rule("s4:train")
    with pytest.raises(ValueError, match="split train, val or test"):
        split_rule("s0:eval")


def test_fixture_splits(dex):
    assert len(DexYCBSource(dex.root, "s0:train")) == 6  # subject 0, sequence 0
    assert len(DexYCBSource(dex.root, "s2:train", clip=3)) == 2  # cameras 0-5: both fixture cameras
    with pytest.raises(ValueError, match="no frames selected"):
        DexYCBSource(dex.root, "s0:test")  # subjects 2-9 only
    with pytest.raises(ValueError, match="no frames selected"):
        DexYCBSource(dex.root, "s2:val")  # camera 6 only
    with pytest.raises(ValueError, match="no frames selected"):
        DexYCBSource(dex.root, clip=4)  # 3-frame sequences fill no 4-frame clip


@pytest.fixture
def broken(dex, tmp_path):
    root = tmp_path / "root"
    shutil.copytree(dex.root, root)
    return root


def test_missing_intrinsics_names_the_file(broken):
    path = broken / "calibration" / "intrinsics" / f"{SERIALS[1]}_640x480.yml"
    path.unlink()
    with pytest.raises(FileNotFoundError, match=f"{SERIALS[1]}_640x480.yml"):
        DexYCBSource(broken)


def test_missing_model_and_mano_calibration_name_the_file(broken):
    (broken / "models" / GRASP_NAME / "textured_simple.obj").unlink()
    with pytest.raises(FileNotFoundError, match=f"{GRASP_NAME}/textured_simple.obj"):
        DexYCBSource(broken)
    shutil.rmtree(broken / "calibration" / "mano_20200709_subject_01")
    with pytest.raises(FileNotFoundError, match="mano.yml"):
        DexYCBSource(broken)


def test_left_hand_sequence_is_refused(broken):
    meta_file = broken / SUBJECT / SEQUENCE / "meta.yml"
    meta = yaml.safe_load(meta_file.read_text())
    meta["mano_sides"] = ["left"]
    meta_file.write_text(yaml.safe_dump(meta))
    with pytest.raises(ValueError, match=r"left hand .*meta\.yml.*right hand"):
        DexYCBSource(broken)


def test_truncated_labels_name_the_file(dex, broken):
    path = broken / SUBJECT / SEQUENCE / SERIALS[0] / "labels_000002.npz"
    path.write_bytes(path.read_bytes()[:200])
    source = DexYCBSource(broken)
    with pytest.raises(ValueError, match="labels_000002.npz is truncated or corrupt"):
        source.load(2, dex.hand)


def test_real_sources_need_the_mano_hand(dex):
    builtin = load_hand("builtin")
    with pytest.raises(ValueError, match="--hand mano"):
        check_real_config(_config(dex), builtin)
    result = CliRunner().invoke(
        main, ["synth", "--objects", "builtin:nocs", "--out", "x", "--split", "s0:train"]
    )
    assert result.exit_code != 0 and "dexycb:ROOT / ho3d:ROOT" in result.output


def test_paths_are_relative_to_the_root(dex):
    files = dict(DexYCBSource(dex.root).input_files())
    assert f"models/{GRASP_NAME}/textured_simple.obj" in files
    assert f"calibration/intrinsics/{SERIALS[0]}_640x480.yml" in files
    assert all(Path(p).is_file() for p in files.values())


def test_pca_pose_follows_manopth_and_smplx_mean_convention(dex):
    """DexYCB's MANO is manopth's ``use_pca=True, ncomps=45, flat_hand_mean=False``: hand pose = hands_mean +
    coeffs @ hands_components. smplx cannot express that directly — with ``num_pca_comps=45`` it turns PCA off
    and reads the coefficients as axis-angle — so the check is against smplx's own mean handling: smplx with
    ``flat_hand_mean=False`` fed ``coeffs @ hands_components`` gives the same hand as hoigen's flat-mean MANO fed
    the reader's pose."""
    import contextlib
    import io

    import smplx
    import torch

    from hoigen.hands.mano import load_mano_pickle

    raw = load_mano_pickle(dex.hand.path)
    data = dex.hand.data
    struct = SimpleNamespace(
        v_template=data.v_template,
        f=data.faces,
        shapedirs=data.shapedirs,
        posedirs=np.asarray(raw["posedirs"]),
        J_regressor=data.J_regressor,
        weights=data.weights,
        kintree_table=np.stack([np.where(data.parents < 0, 0, data.parents), np.arange(16)]),
        hands_components=np.asarray(raw["hands_components"]),
        hands_mean=np.asarray(raw["hands_mean"]),
    )

    def build(**kwargs):
        with contextlib.redirect_stdout(io.StringIO()):
            return smplx.MANO(
                model_path=str(dex.hand.path), data_struct=struct, is_rhand=True, num_betas=10,
                dtype=torch.float64, **kwargs,
            )  # fmt: skip

    assert build(use_pca=True, num_pca_comps=45, flat_hand_mean=False).use_pca is False  # the smplx quirk
    with_mean = build(use_pca=False, flat_hand_mean=False)
    clip = DexYCBSource(dex.root).load(0, dex.hand)
    labels = np.load(dex.root / SUBJECT / SEQUENCE / SERIALS[0] / "labels_000000.npz")
    pose_m = labels["pose_m"].astype(np.float64)
    coeffs = pose_m[:, 3:48] @ np.asarray(raw["hands_components"])
    with torch.no_grad():
        out = with_mean(
            betas=torch.from_numpy(clip.hand.betas),
            global_orient=torch.from_numpy(pose_m[:, 0:3]),
            hand_pose=torch.from_numpy(coeffs),
            transl=torch.from_numpy(pose_m[:, 48:51]),
        )
    ours = dex.hand.forward(clip.hand).vertices
    np.testing.assert_allclose(out.vertices.numpy(), ours, atol=1e-5, rtol=0)  # smplx keeps float32 copies


def test_real_shards_train_hoidiffusion(dex, tmp_path):
    """Shards made from real frames are ordinary training data: `hoigen train hoidiffusion --data` runs on them
    (target = the real colour frame, conditions re-rendered from the ground truth)."""
    pytest.importorskip("diffusers")
    from hoigen.diffusion.hoidiffusion.fixtures import write_tiny_hoidiffusion

    out = tmp_path / "real"
    args = ["synth", "--objects", f"dexycb:{dex.root}", "--hand", "mano", "--mano", str(dex.mano)]
    assert CliRunner().invoke(main, [*args, "--out", str(out), "--samples-per-shard", "4"]).exit_code == 0
    sd = write_tiny_hoidiffusion(tmp_path / "sd", seed=0)
    run = tmp_path / "run"
    train = ["train", "hoidiffusion", "--data", str(out), "--sd", str(sd), "--out", str(run), "--steps", "2",
             "--resolution", "32", "--crop-margin", "4", "--reg-prob", "0", "--batch-size", "2", "--workers", "0",
             "--sample-every", "0", "--sample-count", "0", "--tracker", "none"]
    result = CliRunner().invoke(main, train, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert (run / "final" / "hoigen_weights.json").is_file()
    losses = [json.loads(line) for line in (run / "logs" / "train.jsonl").read_text().splitlines()]
    steps = [r for r in losses if "loss" in r]
    assert steps and all(np.isfinite(r["loss"]) for r in steps)
