"""``hoigen.exports.nocs`` read back the way NOCS / SPD readers read the CAMERA layout.

Ground truth is a tiny real run at NOCS's 640 x 480 camera (3 samples x 4 frames, so 12 images: one full folder of
10 and a second one) and a folder run at 128 x 128 with a NOCS-class object (``025_mug``, a cylinder) and a class-0
object (``box``), exported with a centre crop + resize to 640 x 480. The exported files are parsed here with the
readers' conventions — ``_meta.txt`` split on spaces, mask = channel 2 of the BGR image (255 = background), coord
= BGR -> RGB, / 255, z = 1 - z, - 0.5, depth uint16 mm or CAMERA's G * 256 + R (uint8 channels cast to uint16
first), models parsed like NOCS's ``load_mesh`` with its z flip — and the pose is recovered from NOCS + depth with
Umeyama, as SPD's data preparation does, then compared with the shard's ``T_cam_obj``.
"""

from __future__ import annotations

import io
import json
import pickle
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")
pytest.importorskip("webdataset")
trimesh = pytest.importorskip("trimesh")

from hoigen.config import RunConfig  # noqa: E402
from hoigen.datasets.reader import open_sequences  # noqa: E402
from hoigen.exports.nocs import adjust_intrinsics, crop_resize_geometry, export_nocs  # noqa: E402
from hoigen.geometry.transforms import umeyama  # noqa: E402
from hoigen.objects.categories import NOCS_SYNSETS  # noqa: E402
from hoigen.render.png import decode_png, encode_png  # noqa: E402
from hoigen.synth.recipe import object_for_sample  # noqa: E402
from hoigen.synth.run import SynthJob, run_synth  # noqa: E402

N_SAMPLES, FRAMES = 3, 4
NOCS_K = np.array([[577.5, 0.0, 319.5], [0.0, 577.5, 239.5], [0.0, 0.0, 1.0]])
MAX_T_MM, MAX_R_DEG, MAX_S_REL = 2.0, 1.0, 0.01


# --------------------------------------------------------------------------------------------------------------
# fixtures


def _run(out: Path, config: RunConfig, n: int) -> Path:
    run_synth(SynthJob(config, out, n=n, samples_per_shard=2), workers=1, progress=False)
    return out


@pytest.fixture(scope="module")
def nocs_run(tmp_path_factory) -> Path:
    config = RunConfig().replace(
        camera={"preset": "nocs-camera"}, trajectory={"frames": FRAMES}, grasp={"candidates": 2, "max_attempts": 40}
    )
    return _run(tmp_path_factory.mktemp("nocs") / "run", config, N_SAMPLES)


@pytest.fixture(scope="module")
def truth(nocs_run) -> dict:
    """(key, frame) -> (meta, images) read from the shards."""
    return _truth(nocs_run)


def _truth(run: Path) -> dict:
    out = {}
    for seq in open_sequences(run):
        for t, frame in enumerate(seq["frames"]):
            out[(seq["key"], t)] = (seq["meta"], frame)
    return out


@pytest.fixture(scope="module")
def export(nocs_run, tmp_path_factory) -> tuple[Path, dict, dict]:
    """One output root holding split ``train`` (uint16 depth) and split ``val`` (CAMERA 3-channel depth)."""
    root = tmp_path_factory.mktemp("export") / "nocs"
    train = export_nocs(nocs_run, root)
    val = export_nocs(nocs_run, root, split="val", camera_depth=True)
    return root, train, val


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("folder")
    objects = base / "objects"
    objects.mkdir()
    trimesh.creation.cylinder(radius=0.04, height=0.1, sections=48).export(objects / "025_mug.ply")  # class 6
    trimesh.creation.box(extents=(0.06, 0.08, 0.12)).export(objects / "box.ply")  # class 0
    config = RunConfig().replace(
        objects={"source": str(objects)},
        camera={"preset": "square-128"},
        trajectory={"frames": 2},
        grasp={"candidates": 2, "max_attempts": 40},
    )
    return _run(base / "run", config, 2)


@pytest.fixture(scope="module")
def folder_exports(folder_run, tmp_path_factory) -> dict:
    base = tmp_path_factory.mktemp("folder_export")
    return {
        mode: (base / mode, export_nocs(folder_run, base / mode, class0=mode, allow_intrinsics=True))
        for mode in ("skip", "keep")
    }


# --------------------------------------------------------------------------------------------------------------
# NOCS / SPD-style readers (independent of the writer)


def read_meta_txt(path: Path) -> list[tuple[int, int, str, str]]:
    rows = []
    for line in path.read_text().splitlines():
        words = line.strip().split(" ")
        assert len(words) == 4, line  # CAMERA style: inst_id class_id synset model_id
        rows.append((int(words[0]), int(words[1]), words[2], words[3]))
    return rows


def read_mask(path: Path) -> np.ndarray:
    return cv2.imread(str(path))[:, :, 2]


def read_coord(path: Path) -> np.ndarray:
    coord = cv2.imread(str(path))[:, :, :3]
    coord = coord[:, :, (2, 1, 0)].astype(np.float64) / 255.0
    coord[:, :, 2] = 1.0 - coord[:, :, 2]
    return coord - 0.5


def read_depth(path: Path) -> np.ndarray:
    depth = cv2.imread(str(path), -1)
    if depth.ndim == 3:  # CAMERA encoding; cast before multiplying (NumPy 2 keeps uint8 and overflows)
        return depth[:, :, 1].astype(np.uint16) * np.uint16(256) + depth[:, :, 2].astype(np.uint16)
    assert depth.dtype == np.uint16
    return depth


def read_obj_nocs_style(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """NOCS ``utils.load_mesh(path, is_flipped=True)``: ``v`` / ``f`` lines split on single spaces, z negated."""
    vertices, faces = [], []
    for line in path.read_text().splitlines():
        words = line.strip().split(" ")
        if words[0] == "v":
            vertices.append([float(words[1]), float(words[2]), float(words[3])])
        elif words[0] == "f":
            faces.append([int(w.split("/")[0]) - 1 for w in words[1:4]])
    v = np.asarray(vertices)
    v[:, 2] = -v[:, 2]
    return v, np.asarray(faces)


def recover_pose(stem: Path, K: np.ndarray, inst_id: int = 1) -> tuple[float, np.ndarray, np.ndarray, int]:
    """SPD ``align_nocs_to_depth`` without RANSAC: Umeyama of NOCS -> back-projected depth on the instance."""
    mask = read_mask(Path(f"{stem}_mask.png"))
    coord = read_coord(Path(f"{stem}_coord.png"))
    depth = read_depth(Path(f"{stem}_depth.png"))
    ys, xs = np.nonzero((mask == inst_id) & (depth > 0))
    z = depth[ys, xs].astype(np.float64) / 1000.0
    points = np.stack([(xs - K[0, 2]) * z / K[0, 0], (ys - K[1, 2]) * z / K[1, 1], z], axis=1)
    scale, R, t = umeyama(coord[ys, xs], points)
    return scale, R, t, len(ys)


def pose_errors(R, t, s, T_gt, scale_gt) -> tuple[float, float, float]:
    cos = np.clip((np.trace(R.T @ T_gt[:3, :3]) - 1.0) / 2.0, -1.0, 1.0)
    return (
        1000.0 * float(np.linalg.norm(t - T_gt[:3, 3])),
        float(np.degrees(np.arccos(cos))),
        abs(s / scale_gt - 1.0),
    )


def sources(root: Path, split: str = "train") -> list[dict]:
    return json.loads((root / "CAMERA" / split / "sources.json").read_text())


def intrinsics(root: Path, split: str = "train") -> np.ndarray:
    return np.asarray(json.loads((root / "CAMERA" / split / "intrinsics.json").read_text())["K"])


# --------------------------------------------------------------------------------------------------------------
# layout


def test_layout_folders_of_ten_and_list_files(export, truth):
    root, summary, _ = export
    n = N_SAMPLES * FRAMES
    assert summary["images"] == summary["instances"] == summary["frames"] == n
    assert summary["samples"] == N_SAMPLES and summary["skipped"] == {} and summary["models"] == N_SAMPLES
    expected = [f"train/{i // 10:05d}/{i % 10:04d}" for i in range(n)]
    all_lines = (root / "CAMERA" / "train_list_all.txt").read_text().splitlines()
    assert all_lines == expected
    assert sorted(p.name for p in (root / "CAMERA" / "train").iterdir() if p.is_dir()) == ["00000", "00001"]
    assert len(list((root / "CAMERA" / "train" / "00000").glob("*_color.png"))) == 10
    for line in all_lines:
        stem = root / "CAMERA" / line
        assert stem.parent.is_dir()
        for suffix in ("color.png", "coord.png", "depth.png", "mask.png", "meta.txt", "label.pkl"):
            assert Path(f"{stem}_{suffix}").is_file(), f"{line}_{suffix}"
    listed = (root / "CAMERA" / "train_list.txt").read_text().splitlines()
    assert set(listed) <= set(all_lines) and len(listed) == summary["listed"]
    # frames of all samples in order
    assert [(s["key"], s["frame"]) for s in sources(root)] == list(truth)
    # NOCS's loader enumerates 10 * folders ids and skips missing colour files: every listed image is found
    folders = [p for p in (root / "CAMERA" / "train").iterdir() if p.is_dir()]
    found = [
        f"train/{i // 10:05d}/{i % 10:04d}"
        for i in range(10 * len(folders))
        if (root / "CAMERA" / "train" / f"{i // 10:05d}" / f"{i % 10:04d}_color.png").exists()
    ]
    assert found == expected


def test_intrinsics_are_the_nocs_camera(export):
    root, summary, _ = export
    np.testing.assert_allclose(intrinsics(root), NOCS_K)
    assert summary["resized"] is False and summary["size"] == [640, 480]


def test_meta_txt_lines_and_spd_list_rule(export, truth):
    root, _, _ = export
    listed = set((root / "CAMERA" / "train_list.txt").read_text().splitlines())
    for src in sources(root):
        meta, _ = truth[(src["key"], src["frame"])]
        stem = root / "CAMERA" / src["image"]
        ((inst, cls, synset, model),) = read_meta_txt(Path(f"{stem}_meta.txt"))
        assert inst == 1 and cls == meta["object"]["class_id"] > 0
        assert synset == NOCS_SYNSETS[meta["object"]["category"]]
        assert model == meta["object"]["id"]
        assert (root / "obj_models" / "train" / synset / model / "model.obj").is_file()
        # SPD's gen_data keeps an image with an instance of >= 64 valid depth pixels and a box <= 600 x 440
        mask = read_mask(Path(f"{stem}_mask.png"))
        depth = read_depth(Path(f"{stem}_depth.png"))
        ys, xs = np.nonzero(mask == 1)
        ok = ((mask == 1) & (depth > 0)).sum() >= 64 and np.ptp(xs) + 1 <= 600 and np.ptp(ys) + 1 <= 440
        assert (src["image"] in listed) == bool(ok)


# --------------------------------------------------------------------------------------------------------------
# pose recovery (the NOCS ground-truth path)


@pytest.mark.parametrize("split", ["train", "val"])
def test_umeyama_on_nocs_and_depth_recovers_the_shard_pose(export, truth, split):
    root = export[0]
    K = intrinsics(root, split)
    worst = np.zeros(3)
    for src in sources(root, split):
        meta, _ = truth[(src["key"], src["frame"])]
        T = np.asarray(meta["frames"][src["frame"]]["T_cam_obj"])
        s, R, t, count = recover_pose(root / "CAMERA" / src["image"], K)
        assert count >= 64, src
        errors = pose_errors(R, t, s, T, meta["object"]["scale"])
        worst = np.maximum(worst, errors)
    assert worst[0] < MAX_T_MM and worst[1] < MAX_R_DEG and worst[2] < MAX_S_REL, (
        f"worst errors: {worst[0]:.3f} mm, {worst[1]:.3f} deg, {100 * worst[2]:.3f} %"
    )


def test_label_pkl_equals_shard_meta_and_mask(export, truth):
    root, _, _ = export
    for src in sources(root):
        meta, _ = truth[(src["key"], src["frame"])]
        stem = root / "CAMERA" / src["image"]
        with open(f"{stem}_label.pkl", "rb") as fh:
            label = pickle.load(fh)
        T = np.asarray(meta["frames"][src["frame"]]["T_cam_obj"])
        obj = meta["object"]
        np.testing.assert_array_equal(label["class_ids"], [obj["class_id"]])
        np.testing.assert_array_equal(label["instance_ids"], [1])
        assert label["model_list"] == [obj["id"]]
        np.testing.assert_allclose(label["scales"], [obj["scale"]], rtol=1e-6)
        np.testing.assert_allclose(label["rotations"][0], T[:3, :3], atol=1e-6)
        np.testing.assert_allclose(label["translations"][0], T[:3, 3], atol=1e-6)
        np.testing.assert_allclose(label["size"][0], obj["size"], atol=1e-6)
        srt = T.copy()
        srt[:3, :3] *= obj["scale"]
        np.testing.assert_allclose(label["poses"][0], srt, atol=1e-6)
        np.testing.assert_array_equal(label["handle_visibility"], [1])
        mask = read_mask(Path(f"{stem}_mask.png"))
        rows, cols = np.nonzero(np.any(mask == 1, axis=1))[0], np.nonzero(np.any(mask == 1, axis=0))[0]
        np.testing.assert_array_equal(label["bboxes"], [[rows[0], cols[0], rows[-1] + 1, cols[-1] + 1]])
        for name in ("class_ids", "bboxes", "scales", "rotations", "translations", "instance_ids", "size"):
            assert isinstance(label[name], np.ndarray) and len(label[name]) == 1, name


# --------------------------------------------------------------------------------------------------------------
# images against the shard


def test_images_match_the_shard_and_the_hand_only_occludes(export, truth):
    root, _, _ = export
    hand_seen = False
    for src in sources(root):
        meta, frame = truth[(src["key"], src["frame"])]
        stem = root / "CAMERA" / src["image"]
        ids = {v: int(k) for k, v in meta["instances"].items()}
        color = cv2.imread(f"{stem}_color.png")[:, :, ::-1]  # readers: BGR -> RGB
        np.testing.assert_array_equal(color, frame["rgb"])
        mask = read_mask(Path(f"{stem}_mask.png"))
        obj, hand = frame["mask"] == ids["object"], frame["mask"] == ids["hand"]
        np.testing.assert_array_equal(mask == 1, obj)
        assert set(np.unique(mask)) <= {1, 255} and (mask[~obj] == 255).all()
        depth = read_depth(Path(f"{stem}_depth.png"))
        assert np.abs(depth.astype(np.float64) - frame["depth_m"] * 1000.0).max() <= 0.5 + 1e-3
        if hand.any():
            hand_seen = True
            assert (mask[hand] == 255).all()  # the hand is background in the mask...
            assert (depth[hand] > 0).all()  # ...but its depth is kept
        coord = read_coord(Path(f"{stem}_coord.png"))
        nocs = frame["nocs"].astype(np.float64) / 65535.0 - 0.5
        assert np.abs(coord[obj] - nocs[obj]).max() <= 0.5 / 255 + 1e-9
        assert (cv2.imread(f"{stem}_coord.png")[~obj] == 0).all()
    assert hand_seen


def test_camera_depth_variant(export):
    root, _, val = export
    assert val["camera_depth"] is True
    assert [s["image"][len("val/") :] for s in sources(root, "val")] == [
        s["image"][len("train/") :] for s in sources(root)
    ]
    for src in sources(root, "val"):
        name = src["image"][len("val/") :]
        raw = cv2.imread(str(root / "CAMERA" / "val" / f"{name}_depth.png"), -1)
        assert raw.ndim == 3 and raw.dtype == np.uint8 and (raw[:, :, 0] == 0).all()
        decoded = read_depth(root / "CAMERA" / "val" / f"{name}_depth.png")
        real_style = read_depth(root / "CAMERA" / "train" / f"{name}_depth.png")
        composed = cv2.imread(str(root / "camera_full_depths" / "val" / f"{name}_composed.png"), -1)
        assert composed.dtype == np.uint16
        np.testing.assert_array_equal(composed, real_style)
        surface = real_style > 0
        np.testing.assert_array_equal(decoded[surface], real_style[surface])
        assert (decoded[~surface] == 32001).all()
        # NOCS's decoder as widely copied, np.uint16(bgr[..., 1] * 256) + ..., is broken under NumPy 2: the uint8
        # product either raises (Python int 256 does not fit uint8) or wraps around
        if np.lib.NumpyVersion(np.__version__) >= "2.0.0" and (raw[:, :, 1] > 0).any():
            try:
                naive = np.uint16(raw[:, :, 1] * 256) + np.uint16(raw[:, :, 2])
            except OverflowError:
                naive = None
            assert naive is None or not np.array_equal(naive, decoded)


# --------------------------------------------------------------------------------------------------------------
# models


def test_obj_models_are_normalised_and_in_the_nocs_frame(export, truth):
    root, _, _ = export
    seen = set()
    for src in sources(root):
        meta, _ = truth[(src["key"], src["frame"])]
        ((_, _, synset, model),) = read_meta_txt(root / "CAMERA" / f"{src['image']}_meta.txt")
        if model in seen:
            continue
        seen.add(model)
        folder = root / "obj_models" / "train" / synset / model
        vertices, faces = read_obj_nocs_style(folder / "model.obj")
        lo, hi = vertices.min(axis=0), vertices.max(axis=0)
        assert abs(np.linalg.norm(hi - lo) - 1.0) < 1e-5
        np.testing.assert_allclose((lo + hi) / 2.0, 0.0, atol=1e-6)
        np.testing.assert_allclose(hi - lo, meta["object"]["size"], atol=1e-5)
        bbox = np.loadtxt(folder / "bbox.txt")  # NOCS: scale_factor = bbox[0] - bbox[1]
        assert bbox.shape == (2, 3)
        np.testing.assert_allclose(bbox[0] - bbox[1], meta["object"]["size"], atol=1e-5)
        # after the readers' z flip the model is the canonical mesh / scale: the frame of the coord maps
        obj = object_for_sample(RunConfig.from_dict(meta["config"]), meta["index"])
        np.testing.assert_allclose(vertices, obj.mesh.vertices / obj.scale, atol=1e-6)
        # the file itself (before the readers' flip) is a proper mesh, faces wound outward, as ShapeNet's are
        as_stored = trimesh.Trimesh(vertices * [1.0, 1.0, -1.0], faces, process=False)
        assert np.sign(as_stored.volume) == np.sign(obj.mesh.volume)
    assert len(seen) == N_SAMPLES


# --------------------------------------------------------------------------------------------------------------
# class 0, crop / resize


def test_class0_skip_and_keep(folder_exports, folder_run):
    truth = _truth(folder_run)
    classes = {key: meta["object"]["class_id"] for (key, _), (meta, _) in truth.items()}
    assert sorted(set(classes.values())) == [0, 6], classes
    class0_frames = sum(1 for (key, _) in truth if classes[key] == 0)

    root, summary = folder_exports["skip"]
    assert summary["skipped"] == {"class0": class0_frames}
    assert all(item["reason"] == "class0" and classes[item["key"]] == 0 for item in summary["skipped_frames"])
    assert summary["images"] == len(truth) - class0_frames
    for src in sources(root):
        ((_, cls, synset, _),) = read_meta_txt(root / "CAMERA" / f"{src['image']}_meta.txt")
        assert cls == 6 and synset == NOCS_SYNSETS["mug"]

    root, summary = folder_exports["keep"]
    assert summary["skipped"] == {} and summary["images"] == len(truth)
    assert summary["nocs_instances"] == len(truth) - class0_frames
    listed = (root / "CAMERA" / "train_list.txt").read_text().splitlines()
    all_lines = (root / "CAMERA" / "train_list_all.txt").read_text().splitlines()
    assert len(all_lines) == len(truth)
    kept = 0
    for src in sources(root):
        stem = root / "CAMERA" / src["image"]
        ((inst, cls, synset, model),) = read_meta_txt(Path(f"{stem}_meta.txt"))
        with open(f"{stem}_label.pkl", "rb") as fh:
            label = pickle.load(fh)
        if classes[src["key"]] == 0:
            kept += 1
            assert (inst, cls, model) == (1, 0, "box")
            assert (read_mask(Path(f"{stem}_mask.png")) == 1).any()  # still an instance in the mask
            assert len(label["class_ids"]) == 0 and label["model_list"] == []  # distractors are not labelled
            assert src["image"] not in listed
            # NOCS's loader reads bbox.txt for every meta line, distractors included
            assert np.loadtxt(root / "obj_models" / "train" / synset / model / "bbox.txt").shape == (2, 3)
        else:
            assert cls == 6 and len(label["class_ids"]) == 1
    assert kept == class0_frames


def test_crop_and_resize_keep_the_pose_recoverable(folder_exports, folder_run):
    truth = _truth(folder_run)
    root, summary = folder_exports["keep"]
    assert summary["resized"] is True
    meta = next(iter(truth.values()))[0]
    geometry = crop_resize_geometry(128, 128, 640, 480)
    assert geometry == {"crop": [0, 16, 128, 96], "scale": [5.0, 5.0]}
    K_src = np.asarray(meta["camera"]["K"])
    K = intrinsics(root)
    np.testing.assert_allclose(K, adjust_intrinsics(K_src, geometry))
    np.testing.assert_allclose(K[0, 0], 5 * K_src[0, 0])
    np.testing.assert_allclose(K[:2, 2], [319.5, 239.5])  # a centred camera stays centred
    for src in sources(root):
        meta, frame = truth[(src["key"], src["frame"])]
        stem = root / "CAMERA" / src["image"]
        assert cv2.imread(f"{stem}_color.png").shape == (480, 640, 3)
        # nearest neighbour: every output mask pixel is the source pixel under its centre
        ids = {v: int(k) for k, v in meta["instances"].items()}
        src_mask = frame["mask"][16:112][np.arange(480) // 5][:, np.arange(640) // 5] == ids["object"]
        np.testing.assert_array_equal(read_mask(Path(f"{stem}_mask.png")) == 1, src_mask)
        T = np.asarray(meta["frames"][src["frame"]]["T_cam_obj"])
        s, R, t, count = recover_pose(stem, K)
        assert count >= 64
        t_mm, r_deg, s_rel = pose_errors(R, t, s, T, meta["object"]["scale"])
        assert t_mm < MAX_T_MM and r_deg < MAX_R_DEG and s_rel < MAX_S_REL, (src, t_mm, r_deg, s_rel)


def test_intrinsics_follow_a_point_through_crop_and_resize():
    K = np.array([[600.0, 0.0, 641.3], [0.0, 610.0, 355.2], [0.0, 0.0, 1.0]])
    for (src_w, src_h), (w, h) in (
        ((1280, 720), (640, 480)),
        ((1280, 960), (640, 480)),
        ((100, 300), (64, 48)),
    ):
        geometry = crop_resize_geometry(src_w, src_h, w, h)
        x0, y0, cw, ch = geometry["crop"]
        assert abs(cw / ch - w / h) < 0.02 and 0 <= x0 <= src_w - cw and 0 <= y0 <= src_h - ch
        point = np.array([0.03, -0.02, 0.7])
        u, v, _ = K @ point / point[2]
        sx, sy = geometry["scale"]
        u2, v2, _ = adjust_intrinsics(K, geometry) @ point / point[2]
        # pixel centres at integers: source pixel edge -0.5 maps to output edge -0.5
        np.testing.assert_allclose([u2, v2], [(u - x0 + 0.5) * sx - 0.5, (v - y0 + 0.5) * sy - 0.5])


# --------------------------------------------------------------------------------------------------------------
# photo frames and errors


def _rewrite_shard(src: Path, dst: Path, drop=(), replace=None, add=None) -> None:
    """Copy a shard with members dropped / replaced / added (member order kept sorted, so samples stay grouped)."""
    members = {}
    with tarfile.open(src) as tar:
        for info in tar:
            members[info.name] = tar.extractfile(info).read()
    for name in drop:
        del members[name]
    members.update(replace or {})
    members.update(add or {})
    with tarfile.open(dst, "w") as tar:
        for name in sorted(members):
            info = tarfile.TarInfo(name)
            info.size = len(members[name])
            info.mtime = 1_700_000_000
            tar.addfile(info, io.BytesIO(members[name]))
    store = src.parent.parent / "objects"  # the dataset's mesh store goes with the edited shard
    if store.is_dir() and not (dst.parent / "objects").exists():
        shutil.copytree(store, dst.parent / "objects")


def _shard(run: Path) -> Path:
    (path,) = sorted((run / "shards").glob("*.tar"))
    return path


def test_photo_frames_are_used_when_present(folder_run, tmp_path):
    shard = _shard(folder_run)
    with tarfile.open(shard) as tar:
        rgb = {i.name: decode_png(tar.extractfile(i).read()) for i in tar if i.name.endswith(".rgb.png")}
    photos = {name.replace(".rgb.png", ".photo.png"): encode_png(255 - image) for name, image in rgb.items()}
    edited = tmp_path / "photo.tar"
    _rewrite_shard(shard, edited, add=photos)
    summary = export_nocs(
        [str(edited)],
        tmp_path / "out",
        image="photo",
        class0="keep",
        width=128,
        height=128,
        allow_intrinsics=True,
    )
    assert summary["image"] == "photo" and summary["resized"] is False
    for src in sources(tmp_path / "out"):
        color = cv2.imread(str(tmp_path / "out" / "CAMERA" / f"{src['image']}_color.png"))[:, :, ::-1]
        expected = 255 - rgb[f"{src['key']}.f{src['frame']:03d}.rgb.png"]
        np.testing.assert_array_equal(color, expected)


def test_photo_missing_is_a_clear_error(folder_run, tmp_path):
    with pytest.raises(ValueError, match=r"s00000000.*f000\.photo\.png"):
        export_nocs(folder_run, tmp_path / "out", image="photo")


def test_missing_member_names_key_and_member(folder_run, tmp_path):
    edited = tmp_path / "broken.tar"
    _rewrite_shard(_shard(folder_run), edited, drop=["s00000000.f001.nocs.png"])
    with pytest.raises(ValueError, match=r"s00000000.*f001\.nocs\.png"):
        export_nocs([str(edited)], tmp_path / "out", allow_intrinsics=True)


def test_missing_meta_field_names_key_and_field(folder_run, tmp_path):
    shard = _shard(folder_run)
    with tarfile.open(shard) as tar:
        meta = json.loads(tar.extractfile("s00000000.meta.json").read())
    del meta["object"]["scale"]
    edited = tmp_path / "no_scale.tar"
    _rewrite_shard(shard, edited, replace={"s00000000.meta.json": json.dumps(meta).encode()})
    with pytest.raises(ValueError, match=r"s00000000.*object\.scale"):
        export_nocs([str(edited)], tmp_path / "out", allow_intrinsics=True)


def test_refuses_a_used_output_and_bad_arguments(export, nocs_run, tmp_path):
    root = export[0]
    with pytest.raises(FileExistsError, match="CAMERA"):
        export_nocs(nocs_run, root)
    for kwargs in ({"image": "depth"}, {"class0": "drop"}, {"split": "a/b"}, {"width": 0}):
        with pytest.raises(ValueError):
            export_nocs(nocs_run, tmp_path / "bad", **kwargs)


def test_frames_without_visible_object_are_skipped_and_reported(folder_run, tmp_path):
    shard = _shard(folder_run)
    with tarfile.open(shard) as tar:
        mask = decode_png(tar.extractfile("s00000000.f000.mask.png").read())
    edited = tmp_path / "hidden.tar"
    _rewrite_shard(shard, edited, replace={"s00000000.f000.mask.png": encode_png(np.zeros_like(mask))})
    summary = export_nocs([str(edited)], tmp_path / "out", class0="keep", allow_intrinsics=True)
    assert summary["skipped"] == {"object_not_visible": 1}
    assert summary["skipped_frames"] == [{"key": "s00000000", "frame": 0, "reason": "object_not_visible"}]
    assert [(s["key"], s["frame"]) for s in sources(tmp_path / "out")][0] == ("s00000000", 1)
    assert summary["images"] == summary["frames"] - 1


def test_camera_model_round_trip_undoes_the_z_flip(tmp_path):
    """CAMERA ships model.obj with z negated; writing then reading the NOCS way returns the canonical model."""
    import trimesh

    from hoigen.exports.nocs import read_camera_model, write_camera_model
    from hoigen.objects.builtin import make_builtin_object

    camera = make_builtin_object("camera", np.random.default_rng(0))  # asymmetric: a mirror image would show
    vertices = np.asarray(camera.mesh.vertices) / camera.scale
    path = write_camera_model(tmp_path / "model", vertices, camera.mesh.faces)
    raw = trimesh.load(path, force="mesh", process=False)
    np.testing.assert_allclose(raw.vertices[:, 2], -vertices[:, 2], atol=1e-6)
    back = read_camera_model(path)
    np.testing.assert_allclose(back.vertices, vertices, atol=1e-6)
    assert back.volume > 0  # faces still wind outward
    hi, lo = np.loadtxt(path.parent / "bbox.txt")
    np.testing.assert_allclose(hi - lo, np.ptp(raw.vertices, axis=0), atol=1e-6)
