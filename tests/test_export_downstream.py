"""Exports read the way downstream code reads them: SPD's model pickles and mug re-alignment, the intrinsics
refusal, plain ``webdataset`` decoding, and a dataset that is self-contained (its object folder moved away)."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")
wds = pytest.importorskip("webdataset")
trimesh = pytest.importorskip("trimesh")

import hoigen.datasets  # noqa: E402
from hoigen.config import RunConfig  # noqa: E402
from hoigen.datasets.meshes import object_mesh  # noqa: E402
from hoigen.datasets.reader import open_sequences, resolve_shards  # noqa: E402
from hoigen.exports.bop import export_bop  # noqa: E402
from hoigen.exports.nocs import export_nocs  # noqa: E402
from hoigen.geometry.transforms import umeyama  # noqa: E402
from hoigen.objects.categories import NOCS_SYNSETS  # noqa: E402
from hoigen.synth.run import SynthJob, run_synth  # noqa: E402

MUG_SYNSET = NOCS_SYNSETS["mug"]
NOCS_K = np.array([[577.5, 0.0, 319.5], [0.0, 577.5, 239.5], [0.0, 0.0, 1.0]])


def _run(out: Path, config: RunConfig, n: int) -> Path:
    run_synth(SynthJob(config, out, n=n, samples_per_shard=n), workers=1, progress=False)
    return out


@pytest.fixture(scope="module")
def mug_run(tmp_path_factory) -> Path:
    """Two built-in mugs (handle at +x) seen by the NOCS camera, one frame each."""
    config = RunConfig().replace(
        camera={"preset": "nocs-camera"},
        trajectory={"frames": 1},
        grasp={"candidates": 4},
        objects={"categories": ("mug",)},
        seed=3,
    )
    return _run(tmp_path_factory.mktemp("mug") / "run", config, 2)


@pytest.fixture(scope="module")
def mug_export(mug_run, tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("mug_export") / "nocs"
    return root, export_nocs(mug_run, root)


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory) -> Path:
    """A folder run (square camera) whose object folder the tests move away afterwards."""
    base = tmp_path_factory.mktemp("folder")
    objects = base / "objects"
    objects.mkdir()
    trimesh.creation.cylinder(radius=0.035, height=0.11, sections=48).export(
        objects / "005_tomato_soup_can.ply"
    )
    config = RunConfig().replace(
        objects={"source": str(objects)},
        camera={"preset": "square-96"},
        trajectory={"frames": 2},
        grasp={"candidates": 2, "max_attempts": 40},
    )
    return _run(base / "run", config, 1)


def _pickle(path: Path):
    with open(path, "rb") as fh:
        return pickle.load(fh)


def _spd_model_points(path: Path, n: int = 1024) -> np.ndarray:
    """SPD ``shape_data.py``: points sampled on ``model.obj`` (FPS-free here: dense), then "flip z-axis in CAMERA"."""
    mesh = trimesh.load(path, force="mesh", process=False)
    points, _ = trimesh.sample.sample_surface(mesh, 20 * n, seed=5)
    return np.asarray(points) * np.array([1.0, 1.0, -1.0])


def _spd_model_points_exact(path: Path) -> np.ndarray:
    """The model's vertices, z flipped as SPD does: the limit of dense sampling for the re-alignment's extremes."""
    mesh = trimesh.load(path, force="mesh", process=False)
    return np.asarray(mesh.vertices) * np.array([1.0, 1.0, -1.0])


def _spd_mug_meta(points: np.ndarray) -> tuple[np.ndarray, float]:
    """SPD's re-alignment, written from its description (REFERENCE.md), independent of the exporter."""
    shift = np.array([(points[:, 2].min() - points[:, 2].max()) / 2 - points[:, 0].min(), 0.0, 0.0])
    return shift, 1.0 / np.linalg.norm(2 * np.abs(points + shift).max(axis=0))


def _read_coord(path: Path) -> np.ndarray:
    coord = cv2.imread(str(path))[:, :, (2, 1, 0)].astype(np.float64) / 255.0
    coord[:, :, 2] = 1.0 - coord[:, :, 2]
    return coord - 0.5


def _spd_label(stem: str) -> tuple[float, np.ndarray, np.ndarray]:
    """SPD ``pose_data.py``: Umeyama of NOCS -> back-projected depth on instance 1 (CAMERA intrinsics)."""
    mask = cv2.imread(f"{stem}_mask.png")[:, :, 2]
    coord = _read_coord(Path(f"{stem}_coord.png"))
    depth = cv2.imread(f"{stem}_depth.png", -1)
    ys, xs = np.nonzero((mask == 1) & (depth > 0))
    z = depth[ys, xs].astype(np.float64) / 1000.0
    K = NOCS_K
    points = np.stack([(xs - K[0, 2]) * z / K[0, 0], (ys - K[1, 2]) * z / K[1, 1], z], axis=1)
    return umeyama(coord[ys, xs], points)


# --------------------------------------------------------------------------------------------------------------
# SPD


def test_spd_files_are_all_there(mug_export):
    root, summary = mug_export
    assert summary["images"] >= 1
    for split in ("train", "val"):
        assert sorted(p.name for p in (root / "obj_models" / split).iterdir()) == sorted(
            NOCS_SYNSETS.values()
        )
        assert (root / "CAMERA" / f"{split}_list.txt").is_file()
        assert isinstance(_pickle(root / "obj_models" / f"camera_{split}.pkl"), dict)
    models = _pickle(root / "obj_models" / "camera_train.pkl")
    written = sorted(p.name for p in (root / "obj_models" / "train" / MUG_SYNSET).iterdir())
    assert sorted(models) == written
    for points in models.values():
        assert points.shape == (1024, 3) and np.isfinite(points).all()


def test_mug_meta_and_labels_agree_with_what_spd_derives(mug_export, mug_run):
    root, _ = mug_export
    mug_meta = _pickle(root / "obj_models" / "mug_meta.pkl")
    models = _pickle(root / "obj_models" / "camera_train.pkl")
    scales = {seq["meta"]["object"]["id"]: seq["meta"]["object"]["scale"] for seq in open_sequences(mug_run)}
    assert sorted(mug_meta) == sorted(models) and mug_meta
    for model_id, (shift, scale) in mug_meta.items():
        obj_scale = scales[model_id]
        spd_shift, spd_scale = _spd_mug_meta(
            _spd_model_points(root / "obj_models" / "train" / MUG_SYNSET / model_id / "model.obj")
        )
        assert abs(shift[0] - spd_shift[0]) * obj_scale < 1e-3  # metres
        assert abs(scale / spd_scale - 1) < 0.005
        assert shift[0] > 0  # the body's axis (x = -shift) is on the -x side: the handle is at +x
        # camera_train.pkl holds the re-aligned points: centred body, unit diagonal
        points = models[model_id]
        assert np.linalg.norm(2 * np.abs(points).max(axis=0)) == pytest.approx(1.0, abs=0.01)
    for line in (root / "CAMERA" / "train_list_all.txt").read_text().split():
        stem = str(root / "CAMERA" / line)
        label = _pickle(Path(f"{stem}_label.pkl"))
        model_id = label["model_list"][0]
        s, R, t = _spd_label(stem)
        shift, scale = mug_meta[model_id]
        spd_t, spd_s = t - s * R @ shift, s / scale  # pose_data.py's mug relabelling
        assert np.linalg.norm(label["translations"][0] - spd_t) < 1e-3
        assert abs(label["scales"][0] / spd_s - 1) < 0.005
        np.testing.assert_allclose(label["poses"][0][:3, 3], label["translations"][0], atol=1e-6)


YCB_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "ycb"


@pytest.mark.ycb
def test_ycb_mug_export_reads_as_spd_reads_it(tmp_path):
    """YCB's z-up 025_mug through synth (nocs-camera) and the NOCS export: y-up model, handle toward +x, and the
    pickles and labels SPD derives."""
    if not (YCB_DIR / "025_mug").is_dir():
        pytest.skip(f"YCB 025_mug not found in {YCB_DIR}")
    objects = tmp_path / "objects"
    shutil.copytree(YCB_DIR / "025_mug", objects / "025_mug")
    config = RunConfig().replace(
        objects={"source": str(objects)},
        camera={"preset": "nocs-camera"},
        trajectory={"frames": 1},
        grasp={"candidates": 4},
    )
    run = _run(tmp_path / "run", config, 1)
    meta = next(iter(open_sequences(run)))["meta"]["object"]
    assert meta["up"] == [0.0, 1.0, 0.0] and np.asarray(meta["R_canonical_mesh"]).shape == (3, 3)
    root = tmp_path / "nocs"
    summary = export_nocs(run, root)
    assert summary["images"] == 1
    ((shift, scale),) = _pickle(root / "obj_models" / "mug_meta.pkl").values()
    model = root / "obj_models" / "train" / MUG_SYNSET / "025_mug" / "model.obj"
    # SPD derives the re-alignment from points sampled on the model (hoigen: 3072 samples, FPS to 1024, as SPD),
    # so two samplings agree only to the sampling error: on this 16k-face scan up to about 1 % in scale (0.9 %
    # against the exact vertices with trimesh 5.2, installed by a fresh set-up on 2026-12-02; earlier runs were
    # within the 0.5 % this test used to assert)
    spd_shift, spd_scale = _spd_mug_meta(_spd_model_points(model))
    assert abs(shift[0] - spd_shift[0]) * meta["scale"] < 1e-3 and abs(scale / spd_scale - 1) < 0.015
    exact_shift, exact_scale = _spd_mug_meta(_spd_model_points_exact(model))
    assert abs(shift[0] - exact_shift[0]) * meta["scale"] < 1e-3 and abs(scale / exact_scale - 1) < 0.015
    assert shift[0] > 0  # body axis on -x: the handle is toward +x
    points = _spd_model_points(model)
    assert np.ptp(points[:, 1]) == pytest.approx(meta["size"][1], abs=0.01)  # the mug's height is along y
    stem = str(root / "CAMERA" / "train" / "00000" / "0000")
    label = _pickle(Path(f"{stem}_label.pkl"))
    s, R, t = _spd_label(stem)
    assert np.linalg.norm(label["translations"][0] - (t - s * R @ shift)) < 1e-3
    assert abs(label["scales"][0] / (s / scale) - 1) < 0.005


def test_val_fraction_splits_whole_sequences(mug_run, tmp_path):
    summary = export_nocs(mug_run, tmp_path / "nocs", val_fraction=0.999)
    assert (
        summary["splits"]["val"]["images"] == summary["images"] and summary["splits"]["train"]["images"] == 0
    )
    assert _pickle(tmp_path / "nocs" / "obj_models" / "camera_train.pkl") == {}
    assert (tmp_path / "nocs" / "CAMERA" / "val_list.txt").read_text().split()


# --------------------------------------------------------------------------------------------------------------
# intrinsics


def test_other_intrinsics_are_refused_unless_allowed(folder_run, tmp_path, caplog):
    with pytest.raises(ValueError, match=r"577\.5.*--camera nocs-camera.*--allow-intrinsics"):
        export_nocs(folder_run, tmp_path / "refused")
    with caplog.at_level("WARNING", logger="hoigen.exports.nocs"):
        summary = export_nocs(folder_run, tmp_path / "allowed", allow_intrinsics=True)
    assert any("not CAMERA's" in r.getMessage() for r in caplog.records)
    written = json.loads((tmp_path / "allowed" / "CAMERA" / "train" / "intrinsics.json").read_text())
    assert written["camera_intrinsics"] is False and written["K"] == summary["intrinsics"]["K"]
    assert written["K"][0][0] != 577.5


# --------------------------------------------------------------------------------------------------------------
# plain webdataset


def test_plain_webdataset_with_hoigen_decoder_equals_the_reader(folder_run):
    urls = resolve_shards(folder_run)
    ours = {seq["key"]: seq for seq in open_sequences(folder_run)}
    plain = wds.WebDataset(urls, shardshuffle=False, empty_check=False).decode(
        hoigen.datasets.wds_decoder, "rgb"
    )
    n = 0
    for sample in plain:
        seq = ours[sample["__key__"]]
        for t, frame in enumerate(seq["frames"]):
            for image in ("depth", "nocs", "mask"):
                value = sample[f"f{t:03d}.{image}.png"]
                assert value.dtype == frame[image].dtype
                np.testing.assert_array_equal(value, frame[image])
            rgb = sample[f"f{t:03d}.rgb.png"]  # left to webdataset's "rgb": floats in [0, 1]
            np.testing.assert_allclose(rgb * 255.0, frame["rgb"], atol=0.5)
        n += 1
    assert n == len(ours)
    # what the stock decoder alone does to depth: 8-bit-crushed floats, not millimetres
    stock = next(iter(wds.WebDataset(urls, shardshuffle=False, empty_check=False).decode("rgb")))
    assert stock["f000.depth.png"].dtype != np.uint16


# --------------------------------------------------------------------------------------------------------------
# self-contained datasets


def test_export_after_the_object_folder_moved_away(folder_run, tmp_path):
    manifest = json.loads((folder_run / "manifest.json").read_text())
    assert manifest["meshes"] and all(Path(folder_run / m["name"]).is_file() for m in manifest["meshes"])
    seq = next(iter(open_sequences(folder_run)))
    before = object_mesh(seq)
    objects = Path(seq["meta"]["config"]["objects"]["source"])
    moved = tmp_path / "elsewhere"
    shutil.move(str(objects), moved)
    try:
        copy = tmp_path / "copy"
        shutil.copytree(folder_run, copy)  # the dataset on another machine: shards + mesh store
        summary = export_nocs(copy, tmp_path / "nocs", allow_intrinsics=True)
        assert summary["images"] == 2 and summary["models"] == 1
        bop = export_bop(copy, tmp_path / "bop")
        assert bop["objects"] == 1
        after = object_mesh(next(iter(open_sequences(copy))))
        np.testing.assert_array_equal(after.vertices, before.vertices)
        np.testing.assert_array_equal(after.faces, before.faces)
        info = json.loads((tmp_path / "bop" / "models" / "models_info.json").read_text())["1"]
        assert info["symmetries_continuous"][0]["axis"] == [0.0, 1.0, 0.0]  # a can, y up (NOCS orientation)
    finally:
        shutil.move(str(moved), objects)


def test_missing_mesh_store_is_a_clear_error(folder_run, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(folder_run, copy)
    shutil.rmtree(copy / "objects")
    with pytest.raises(FileNotFoundError, match="objects/"):
        export_bop(copy, tmp_path / "bop", verify=False)


def test_exports_do_not_use_the_synthesis_recipe():
    """Exports are consumers of the shards (SPEC §9): none imports hoigen.synth, even lazily."""
    import subprocess
    import sys

    import hoigen.exports

    folder = Path(hoigen.exports.__file__).parent
    for name in ("nocs.py", "bop.py", "coco.py", "common.py"):
        assert "hoigen.synth" not in (folder / name).read_text(), name
    code = (
        "import sys, hoigen.exports.nocs, hoigen.exports.bop, hoigen.exports.coco, hoigen.datasets.meshes, "
        "hoigen.datasets.decoders; print(sorted(m for m in sys.modules if m.startswith('hoigen.synth') or "
        "m in ('torch', 'webdataset', 'pyrender')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_rerun_restores_a_deleted_mesh_store(folder_run, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(folder_run, copy)
    before = (copy / "shards" / "hoigen-000000.tar").read_bytes()
    shutil.rmtree(copy / "objects")
    pinned = json.loads((copy / "run.json").read_text())
    job = SynthJob(RunConfig.from_dict(pinned["config"]), copy, n=pinned["n"], samples_per_shard=pinned["n"])
    run_synth(job, workers=1, progress=False)  # the shard whose meshes are gone is made again
    manifest = json.loads((copy / "manifest.json").read_text())
    assert manifest["meshes"] and all((copy / m["name"]).is_file() for m in manifest["meshes"])
    assert (copy / "shards" / "hoigen-000000.tar").read_bytes() == before  # byte-identical
    assert len(object_mesh(next(iter(open_sequences(copy)))).faces) > 0
