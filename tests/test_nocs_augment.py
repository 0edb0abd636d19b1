"""nocs_augment: HOI frames in the NOCS (CAMERA) layout and mixed training lists.

A tiny CAMERA-layout root is built in a temporary folder: two procedural models (a can and a mug) normalised to a
bounding-box diagonal of 1 under ``obj_models/train``, four frames in two folders whose SPD labels put both objects
about 0.55 m in front of the CAMERA camera, a class-0 distractor in every meta (a rectangle in the original mask and
depth, no pose), noise colour images and a 0.9 m depth plane.

Every written file is read back the way NOCS readers read it (``cv2.imread``: BGR; coord / 255 with z = 1 - z;
mask channel 2 with 255 = background; depth G * 256 + R in mm), and the object poses are recovered from coord and
depth with Umeyama — they must equal the original labels within 2 mm, 1° and 1 %.
"""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import trimesh

from hoigen.exports.nocs import write_camera_model

cv2 = pytest.importorskip("cv2")  # the render extra

from hoigen.exports.nocs_augment import (  # noqa: E402
    CAMERA_DEPTH_INVALID,
    MIN_HAND_PIXELS,
    nocs_augment,
    read_label,
)
from hoigen.geometry.rotations import rotation_about  # noqa: E402
from hoigen.geometry.transforms import umeyama  # noqa: E402
from hoigen.grasping import GraspConfig  # noqa: E402
from hoigen.objects.builtin import make_builtin_object  # noqa: E402
from hoigen.render.png import encode_png  # noqa: E402

K = np.array([[577.5, 0.0, 319.5], [0.0, 577.5, 239.5], [0.0, 0.0, 1.0]])
FAST_GRASP = GraspConfig(candidates=4, max_attempts=6)
MODELS = (("can", 4, "02946921", "can0001", 1), ("mug", 6, "03797390", "mug0001", 2))
FRAMES = ("train/00000/0000", "train/00000/0001", "train/00001/0000", "train/00001/0001")
DISTRACTOR = (slice(20, 80), slice(20, 100))  # rows, columns of the class-0 distractor in the originals
PLANE_MM, DISTRACTOR_MM = 900, 700


# ------------------------------------------------------------------------------------------------ the fixture


def _save(path: Path, image: np.ndarray) -> None:
    path.write_bytes(encode_png(image))


def _build_root(root: Path) -> None:
    scales = {}
    for category, _, synset, model_id, seed in MODELS:
        obj = make_builtin_object(category, np.random.default_rng(seed))
        folder = root / "obj_models" / "train" / synset / model_id
        folder.mkdir(parents=True)
        write_camera_model(
            folder, obj.mesh.vertices / obj.scale, obj.mesh.faces
        )  # z-flipped, as NOCS ships them
        scales[category] = obj.scale
    # the camera looks 30° down at objects standing upright (object y up -> image up, tilted)
    tilted = rotation_about(np.array([1.0, 0.0, 0.0]), np.deg2rad(30.0)) @ np.diag([1.0, -1.0, -1.0])
    rng = np.random.default_rng(0)
    for name in FRAMES:
        stem = root / "CAMERA" / name
        stem.parent.mkdir(parents=True, exist_ok=True)
        rotations = [
            tilted @ rotation_about(np.array([0.0, 1.0, 0.0]), rng.uniform(0, 2 * np.pi)) for _ in MODELS
        ]
        translations = [
            np.array([-0.09, 0.03, 0.55]) + rng.uniform(-0.01, 0.01, 3),
            np.array([0.10, 0.02, 0.60]) + rng.uniform(-0.01, 0.01, 3),
        ]
        label = {
            "class_ids": [m[1] for m in MODELS],
            "bboxes": np.zeros((2, 4), np.int32),
            "scales": np.array([scales[m[0]] for m in MODELS], np.float32),
            "rotations": np.array(rotations, np.float32),
            "translations": np.array(translations, np.float32),
            "instance_ids": [1, 2],
            "model_list": [m[3] for m in MODELS],
        }
        with open(f"{stem}_label.pkl", "wb") as handle:
            pickle.dump(label, handle)
        Path(f"{stem}_meta.txt").write_text(
            "1 4 02946921 can0001\n2 6 03797390 mug0001\n3 0 04379243 clutter01\n"
        )
        depth = np.full((480, 640), PLANE_MM, np.uint16)
        depth[DISTRACTOR] = DISTRACTOR_MM
        mask = np.full((480, 640), 255, np.uint8)
        mask[DISTRACTOR] = 3
        depth_rgb = np.zeros((480, 640, 3), np.uint8)
        depth_rgb[..., 0], depth_rgb[..., 1] = depth & 0xFF, depth >> 8
        _save(Path(f"{stem}_color.png"), rng.integers(0, 256, (480, 640, 3), dtype=np.uint8))
        _save(Path(f"{stem}_depth.png"), depth_rgb)
        _save(Path(f"{stem}_mask.png"), np.repeat(mask[..., None], 3, axis=2))
        _save(Path(f"{stem}_coord.png"), np.zeros((480, 640, 3), np.uint8))


@pytest.fixture(scope="module")
def nocs_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("nocs") / "root"
    _build_root(root)
    return root


@pytest.fixture(scope="module")
def added(nocs_root, tmp_path_factory):
    """ratio 1.5 over a 2-frame subset: 3 HOI frames, one original used twice (grasping its other object)."""
    out = tmp_path_factory.mktemp("added")
    report = nocs_augment(nocs_root, out, ratio=1.5, mode="add", num_frames=2, seed=0, grasp=FAST_GRASP)
    return out, report


# ------------------------------------------------------------------------------------------------ NOCS reading


def _read_nocs_frame(camera_dir: Path, name: str) -> dict:
    """A frame as NOCS / SPD readers decode it."""
    base = str(camera_dir / name)
    coord = cv2.imread(base + "_coord.png")[:, :, (2, 1, 0)].astype(np.float64) / 255.0
    coord[:, :, 2] = 1.0 - coord[:, :, 2]
    depth = cv2.imread(base + "_depth.png", cv2.IMREAD_UNCHANGED)
    depth = depth[:, :, 1].astype(np.uint16) * 256 + depth[:, :, 2].astype(np.uint16)
    with open(base + "_label.pkl", "rb") as handle:
        label = pickle.load(handle)
    meta = [line.split() for line in Path(base + "_meta.txt").read_text().splitlines()]
    return {
        "color": cv2.imread(base + "_color.png")[:, :, ::-1],
        "coord": coord - 0.5,
        "depth": depth,
        "mask": cv2.imread(base + "_mask.png")[:, :, 2],
        "label": label,
        "meta": meta,
    }


def _recover_pose(frame: dict, inst_id: int) -> tuple[float, np.ndarray, np.ndarray, int]:
    """Umeyama from the instance's NOCS coordinates to its back-projected depth: (scale, R, t, pixels)."""
    ys, xs = np.nonzero((frame["mask"] == inst_id) & (frame["depth"] > 0) & (frame["depth"] < 32001))
    z = frame["depth"][ys, xs] / 1000.0
    points = np.stack([(xs - K[0, 2]) * z / K[0, 0], (ys - K[1, 2]) * z / K[1, 1], z], axis=1)
    s, R, t = umeyama(frame["coord"][ys, xs], points)
    return s, R, t, len(ys)


def _angle_deg(R1: np.ndarray, R2: np.ndarray) -> float:
    return float(np.degrees(np.arccos(np.clip((np.trace(R1.T @ R2) - 1.0) / 2.0, -1.0, 1.0))))


def _check_pose(frame: dict, inst_id: int, scale: float, R: np.ndarray, t: np.ndarray) -> None:
    s_hat, R_hat, t_hat, n = _recover_pose(frame, inst_id)
    assert n >= 64
    assert np.linalg.norm(t_hat - t) < 0.002, (t_hat, t)
    assert _angle_deg(R_hat, R) < 1.0
    assert abs(s_hat / scale - 1.0) < 0.01


# ------------------------------------------------------------------------------------------------ add mode


def test_add_writes_hoi_frames_in_nocs_layout(added, nocs_root):
    out, report = added
    camera = out / "CAMERA"
    assert report["originals"] == 2 and report["requested"] == 3 and report["hoi_frames"] == 3
    names = [r["name"] for r in report["frames"]]
    assert names == ["train_hoi/00000/0000", "train_hoi/00000/0001", "train_hoi/00000/0002"]
    sources = [r["source"] for r in report["frames"]]
    assert len(set(sources)) == 2  # the two originals, one of them twice ...
    twice = [s for s in set(sources) if sources.count(s) == 2][0]
    grasped = [r["grasped"] for r in report["frames"] if r["source"] == twice]
    assert sorted(grasped) == [1, 2]  # ... grasping its other object the second time
    for name in names:
        for suffix in ("color", "coord", "depth", "mask", "hand_mask"):
            image = cv2.imread(str(camera / f"{name}_{suffix}.png"), cv2.IMREAD_UNCHANGED)
            assert image.shape[:2] == (480, 640) and image.dtype == np.uint8
        for suffix in ("meta.txt", "label.pkl", "hoi.json"):
            assert (camera / f"{name}_{suffix}").is_file()
    manifest = json.loads((camera / "train_hoi" / "hoi_manifest.json").read_text())
    assert manifest["hoi_frames"] == 3 and manifest["seed"] == 0


def test_add_poses_recovered_from_coord_and_depth_equal_the_original_labels(added, nocs_root):
    out, report = added
    for record in report["frames"]:
        frame = _read_nocs_frame(out / "CAMERA", record["name"])
        original = read_label(nocs_root / "CAMERA" / f"{record['source']}_label.pkl")
        label = frame["label"]
        assert label["instance_ids"] == [1, 2] and label["class_ids"] == [4, 6]
        assert label["model_list"] == ["can0001", "mug0001"]
        assert [m[:2] for m in frame["meta"]] == [["1", "4"], ["2", "6"]]
        for k, inst_id in enumerate(original["instance_ids"]):
            R, t, s = original["rotations"][k], original["translations"][k], original["scales"][k]
            np.testing.assert_allclose(label["rotations"][k], R, atol=1e-5)
            np.testing.assert_allclose(label["translations"][k], t, atol=1e-6)
            assert label["scales"][k] == pytest.approx(s, rel=1e-6)
            _check_pose(frame, inst_id, s, R, t)
            y1, x1, y2, x2 = label["bboxes"][k]
            ys, xs = np.nonzero(frame["mask"] == inst_id)
            assert (y1, x1, y2, x2) == (ys.min(), xs.min(), ys.max() + 1, xs.max() + 1)


def test_add_hand_grasps_the_object_and_the_rest_is_the_original_frame(added, nocs_root):
    out, report = added
    for record in report["frames"]:
        name = record["name"]
        frame = _read_nocs_frame(out / "CAMERA", name)
        hand = cv2.imread(str(out / "CAMERA" / f"{name}_hand_mask.png"), cv2.IMREAD_UNCHANGED) == 255
        assert hand.sum() >= MIN_HAND_PIXELS
        assert (frame["mask"][hand] == 255).all()  # the hand is background for NOCS readers ...
        assert (frame["coord"][hand] == np.array([-0.5, -0.5, 0.5])).all()  # ... with no coordinates
        assert (frame["depth"][hand] < PLANE_MM).all()  # in front of the original background
        # the hand touches the grasped object in the image
        grasped = (frame["mask"] == record["grasped"]).astype(np.uint8)
        assert (cv2.dilate(grasped, np.ones((5, 5), np.uint8)).astype(bool) & hand).any()
        # and changed the image there, while background pixels are the original's
        before = cv2.imread(str(nocs_root / "CAMERA" / f"{record['source']}_color.png"))[:, :, ::-1]
        assert np.abs(frame["color"][hand].astype(int) - before[hand]).mean() > 10
        rest = (frame["mask"] == 255) & ~hand
        np.testing.assert_array_equal(frame["color"][rest], before[rest])
        distractor = np.zeros_like(rest)
        distractor[DISTRACTOR] = True
        assert (frame["depth"][rest & ~distractor] == PLANE_MM).all()
        assert (frame["depth"][rest & distractor] == DISTRACTOR_MM).all()
        extra = json.loads((out / "CAMERA" / f"{name}_hoi.json").read_text())
        assert extra["source"] == record["source"] and extra["grasped"]["inst_id"] == record["grasped"]
        assert np.array(extra["hand"]["joints3d"]).shape == (21, 3)
        assert extra["grasp"]["method"] == "contact"


def test_add_mixed_list_and_links(added, nocs_root):
    out, report = added
    camera = out / "CAMERA"
    lines = (camera / "train_mixed_list.txt").read_text().splitlines()
    originals = [n for n in lines if n.startswith("train/")]
    hoi = [n for n in lines if n.startswith("train_hoi/")]
    assert len(originals) == 2 and len(hoi) == 3 and len(lines) == 5
    assert lines[:2] == sorted(originals) and set(originals) <= set(FRAMES)
    assert report["list_counts"] == {"original": 2, "hoi": 3}
    for name in lines:  # every line resolves under out/CAMERA (the originals through a link)
        assert (camera / f"{name}_color.png").is_file()
    assert (camera / "train").is_symlink() and (out / "obj_models").is_symlink()


def test_class0_skip_leaves_distractors_out(added):
    out, report = added
    assert report["class0"]["policy"] == "skip" and report["class0"]["skipped"] == 3
    for record in report["frames"]:
        frame = _read_nocs_frame(out / "CAMERA", record["name"])
        assert all(m[1] != "0" for m in frame["meta"])
        assert not (frame["mask"] == 3).any()


# ------------------------------------------------------------------------------------------------ other modes


def test_replace_substitutes_a_fraction_of_the_originals(nocs_root, tmp_path):
    report = nocs_augment(nocs_root, tmp_path, ratio=0.5, mode="replace", seed=1, grasp=FAST_GRASP)
    assert report["originals"] == 4 and report["hoi_frames"] == 2
    lines = (tmp_path / "CAMERA" / "train_mixed_list.txt").read_text().splitlines()
    assert len(lines) == 4 and report["list_counts"] == {"original": 2, "hoi": 2}
    replaced = {r["source"]: r["name"] for r in report["frames"]}
    assert len(replaced) == 2
    assert lines == [replaced.get(name, name) for name in FRAMES]  # each HOI frame takes its original's place


def test_class0_keep_carries_distractors_over(nocs_root, tmp_path):
    report = nocs_augment(nocs_root, tmp_path, ratio=0.25, class0="keep", seed=2, grasp=FAST_GRASP)
    assert report["hoi_frames"] == 1
    assert report["class0"] == {"policy": "keep", "skipped": 0, "kept": 1, "not_visible": 0}
    frame = _read_nocs_frame(tmp_path / "CAMERA", report["frames"][0]["name"])
    assert ["3", "0", "04379243", "clutter01"] in frame["meta"]
    distractor = frame["mask"] == 3
    assert distractor.sum() > 0 and (frame["depth"][distractor] == DISTRACTOR_MM).all()
    assert 3 not in frame["label"]["instance_ids"]  # class 0 is never labelled (as in NOCS)


def test_no_root_generates_nocs_training_data(tmp_path):
    report = nocs_augment(None, tmp_path, num_frames=2, seed=0, categories=("can", "mug"), grasp=FAST_GRASP)
    assert report["hoi_frames"] == 2
    camera = tmp_path / "CAMERA"
    lines = (camera / "train_list.txt").read_text().splitlines()
    assert lines == ["train/00000/0000", "train/00000/0001"]
    for name in lines:
        frame = _read_nocs_frame(camera, name)
        assert frame["color"].shape == (480, 640, 3)
        inst, cls, synset, model_id = frame["meta"][0]
        assert (inst, cls) == ("1", str(frame["label"]["class_ids"][0])) and cls in ("4", "6")
        model = trimesh.load(
            tmp_path / "obj_models" / "train" / synset / model_id / "model.obj", force="mesh"
        )
        lo, hi = model.bounds
        assert np.linalg.norm(hi - lo) == pytest.approx(1.0, abs=1e-6)
        np.testing.assert_allclose((lo + hi) / 2, 0.0, atol=1e-6)
        label = frame["label"]
        _check_pose(frame, 1, label["scales"][0], label["rotations"][0], label["translations"][0])
        assert (frame["depth"][frame["mask"] == 255] != 0).all()
        hand = cv2.imread(str(camera / f"{name}_hand_mask.png"), cv2.IMREAD_UNCHANGED) == 255
        assert hand.sum() >= MIN_HAND_PIXELS
        assert (frame["depth"][(frame["mask"] == 255) & ~hand] == CAMERA_DEPTH_INVALID).all()
    # frame k is a function of (seed, k): a shorter run with the same seed writes the same bytes
    again = tmp_path / "again"
    nocs_augment(None, again, num_frames=1, seed=0, categories=("can", "mug"), grasp=FAST_GRASP)
    first = sorted(p.name for p in (camera / "train" / "00000").glob("0000_*"))
    assert len(first) == 8
    for file in first:
        assert (again / "CAMERA" / "train" / "00000" / file).read_bytes() == (
            camera / "train" / "00000" / file
        ).read_bytes(), file


# ------------------------------------------------------------------------------------------------ errors


def test_missing_obj_models_is_a_clear_error(nocs_root, tmp_path):
    root = tmp_path / "root"
    shutil.copytree(nocs_root / "CAMERA", root / "CAMERA")
    with pytest.raises(FileNotFoundError, match="obj_models"):
        nocs_augment(root, tmp_path / "out")
    (root / "obj_models" / "train" / "02946921").mkdir(parents=True)  # the can's model is missing
    with pytest.raises(FileNotFoundError, match=r"can0001/model\.obj"):
        nocs_augment(root, tmp_path / "out", ratio=0.25, overwrite=True)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"mode": "mix"}, ValueError, "mode"),
        ({"mode": "replace", "ratio": 1.5}, ValueError, "ratio"),
        ({"ratio": -1.0}, ValueError, "ratio"),
        ({"class0": "drop"}, ValueError, "class0"),
        ({"image": "photo"}, ValueError, "photo"),
        ({"num_frames": 0}, ValueError, "num_frames"),
    ],
)
def test_bad_arguments(nocs_root, tmp_path, kwargs, error, match):
    with pytest.raises(error, match=match):
        nocs_augment(nocs_root, tmp_path, **kwargs)


def test_bad_roots_and_outputs(nocs_root, tmp_path):
    with pytest.raises(ValueError, match="num_frames"):
        nocs_augment(None, tmp_path)
    with pytest.raises(ValueError, match="categories"):
        nocs_augment(None, tmp_path, num_frames=1, categories=("teapot",))
    with pytest.raises(FileNotFoundError, match="CAMERA/train"):
        nocs_augment(tmp_path, tmp_path / "out")
    hoi = tmp_path / "out" / "CAMERA" / "train_hoi"
    hoi.mkdir(parents=True)
    (hoi / "old.txt").write_text("x")
    with pytest.raises(FileExistsError, match="overwrite"):
        nocs_augment(nocs_root, tmp_path / "out")


def test_label_with_per_axis_scales_is_refused(tmp_path):
    path = tmp_path / "0000_label.pkl"
    label = {
        "class_ids": [4],
        "instance_ids": [1],
        "model_list": ["m"],
        "scales": np.ones((1, 3)),
        "rotations": np.eye(3)[None],
        "translations": np.zeros((1, 3)),
    }
    path.write_bytes(pickle.dumps(label))
    with pytest.raises(ValueError, match="NOCS coordinates to metres"):
        read_label(path)


class _Exploit:
    """Unpickling this with plain pickle would create a folder (os.mkdir)."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        import os

        return os.mkdir, (str(self.path),)


def test_bad_labels_are_logged_skips_and_pickles_cannot_run_code(nocs_root, tmp_path, caplog):
    root = tmp_path / "root"
    shutil.copytree(nocs_root, root)
    sentinel = tmp_path / "executed"
    labels = [root / "CAMERA" / f"{name}_label.pkl" for name in FRAMES]
    labels[0].write_bytes(pickle.dumps({"class_ids": [4], "scales": _Exploit(sentinel)}))
    labels[1].write_bytes(b"not a pickle")
    labels[2].write_bytes(pickle.dumps({"class_ids": [4]}))
    labels[3].write_bytes(pickle.dumps([1, 2, 3]))
    report = nocs_augment(root, ratio=0.25, mode="replace", grasp=FAST_GRASP)
    assert not sentinel.exists()
    assert report["hoi_frames"] == 0 and report["shortfall"] == 1 and len(report["failed"]) == 4
    reasons = {f["source"]: f["reason"] for f in report["failed"]}
    assert "refused to load the global" in reasons[FRAMES[0]]
    assert "lacks" in reasons[FRAMES[2]]
    assert (root / "CAMERA" / "train_mixed_list.txt").read_text().splitlines() == list(FRAMES)
    assert "skipping" in caplog.text
