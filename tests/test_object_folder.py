"""Object folders: discovery, loading, canonical frame, units, bad files (procedural meshes + the YCB samples)."""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import trimesh
from PIL import Image

from hoigen.objects import folder
from hoigen.objects.asset import ObjectError
from hoigen.objects.folder import ObjectEntry, discover_objects, load_object, load_objects

YCB_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "ycb"
BOX_EXTENTS = np.array([0.1, 0.2, 0.3])
BOX_SHIFT = np.array([0.5, -0.2, 0.1])


# --------------------------------------------------------------------------------------------------------------
# helpers


def _box(extents=BOX_EXTENTS, shift=BOX_SHIFT) -> trimesh.Trimesh:
    mesh = trimesh.creation.box(extents=extents)
    mesh.apply_translation(shift)
    return mesh


def _write(path: Path, mesh: trimesh.Trimesh | trimesh.Scene | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    (mesh if mesh is not None else _box()).export(path)
    return path


def _write_text(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _entry(root: Path, relpath: str) -> ObjectEntry:
    (entry,) = [e for e in discover_objects(root) if e.relpath == relpath]
    return entry


def _only(root: Path) -> ObjectEntry:
    (entry,) = discover_objects(root)
    return entry


# --------------------------------------------------------------------------------------------------------------
# discovery


def test_ycb_tree_gives_one_entry_per_object_with_the_preferred_file(tmp_path):
    files = [
        "025_mug/google_16k/textured.obj",
        "025_mug/google_16k/nontextured.ply",
        "025_mug/google_16k/nontextured.stl",
        "025_mug/google_512k/nontextured.ply",
        "025_mug/tsdf/textured.obj",
        "025_mug/tsdf/nontextured.ply",
        "025_mug/poisson/nontextured.ply",
        "013_apple/poisson/textured.obj",
        "013_apple/tsdf/nontextured.ply",
        "013_apple/tsdf/nontextured.stl",
        "031_spoon/google_512k/textured.obj",
        "031_spoon/google_64k/nontextured.stl",
        "002_master_chef_can/google_16k/nontextured.stl",
        "002_master_chef_can/google_16k/nontextured.ply",
    ]
    tetra = trimesh.creation.box(extents=(0.05, 0.05, 0.05))
    for relpath in files:
        _write(tmp_path / relpath, tetra)
    _write_text(tmp_path / "025_mug/google_16k/textured.mtl", "newmtl material_0\n")
    _write_text(tmp_path / "025_mug/google_16k/kinbody.xml", "<KinBody/>\n")

    entries = discover_objects(tmp_path)

    assert [(e.id, e.relpath) for e in entries] == [
        ("002_master_chef_can", "002_master_chef_can/google_16k/nontextured.ply"),
        ("013_apple", "013_apple/tsdf/nontextured.ply"),
        ("025_mug", "025_mug/google_16k/textured.obj"),
        ("031_spoon", "031_spoon/google_64k/nontextured.stl"),
    ]
    for entry in entries:
        assert entry.path.is_absolute()
        assert entry.path == tmp_path / entry.relpath
        assert entry.path.is_file()


def test_ycb_preference_order_is_the_documented_one(tmp_path):
    variants = ["google_16k", "google_64k", "google_512k", "", "tsdf", "poisson"]
    names = ["textured.obj", "nontextured.ply", "nontextured.stl"]
    expected = [f"025_mug/{v}/{n}" if v else f"025_mug/{n}" for v in variants for n in names]
    for relpath in reversed(expected):
        _write_text(tmp_path / relpath, "v 0 0 0\n")
    chosen = []
    while any(p.is_file() for p in (tmp_path / "025_mug").rglob("*")):
        (entry,) = discover_objects(tmp_path)
        assert entry.id == "025_mug"
        chosen.append(entry.relpath)
        entry.path.unlink()
    assert chosen == expected


def test_generic_tsdf_folder_outside_ycb_is_a_flat_folder(tmp_path):
    _write(tmp_path / "scans/tsdf/chair.ply")
    _write(tmp_path / "scans/tsdf/table.ply")
    _write(tmp_path / "scans/google_16k/textured.obj")  # google_* marks a YCB-style folder on its own
    assert [(e.id, e.relpath) for e in discover_objects(tmp_path)] == [
        ("chair", "scans/tsdf/chair.ply"),
        ("scans", "scans/google_16k/textured.obj"),
        ("table", "scans/tsdf/table.ply"),
    ]


def test_root_may_be_the_ycb_object_folder_itself(tmp_path):
    _write(tmp_path / "024_bowl/google_16k/nontextured.ply")
    _write(tmp_path / "024_bowl/tsdf/nontextured.ply")
    entry = _only(tmp_path / "024_bowl")
    assert (entry.id, entry.relpath) == ("024_bowl", "google_16k/nontextured.ply")


def test_flat_folder_with_mixed_formats(tmp_path):
    _write(tmp_path / "bunny.ply")
    _write(tmp_path / "cube.obj")
    _write(tmp_path / "kettle.stl")
    _write(tmp_path / "cup.off")
    _write(tmp_path / "duck.glb", trimesh.Scene(_box()))
    for name, data in trimesh.Scene(_box()).export(file_type="gltf").items():
        (tmp_path / "gl" / name).parent.mkdir(exist_ok=True)
        (tmp_path / "gl" / name).write_bytes(data)
    _write(tmp_path / "LOUD.PLY")
    _write_text(tmp_path / "notes.txt", "not a mesh\n")
    _write_text(tmp_path / "cube.mtl", "newmtl x\n")
    Image.new("RGB", (2, 2)).save(tmp_path / "texture.png")
    # hidden files and folders are skipped
    _write(tmp_path / ".hidden.ply")
    _write(tmp_path / ".cache" / "ghost.obj")
    _write(tmp_path / "sub" / ".trash" / "ghost2.obj")

    entries = discover_objects(tmp_path)

    assert [(e.id, e.relpath) for e in entries] == [
        ("LOUD", "LOUD.PLY"),
        ("bunny", "bunny.ply"),
        ("cube", "cube.obj"),
        ("cup", "cup.off"),
        ("duck", "duck.glb"),
        ("kettle", "kettle.stl"),
        ("model", "gl/model.gltf"),
    ]
    assert discover_objects(str(tmp_path)) == entries  # deterministic, str accepted
    assert [e.id for e in entries] == sorted(e.id for e in entries)


def test_id_collisions_get_folder_prefixed_ids(tmp_path, caplog):
    for relpath in ["bunny.ply", "sub/bunny.ply", "sub/bunny.obj", "other/deep/bunny.obj", "cow.obj"]:
        _write(tmp_path / relpath)
    _write(tmp_path / "a/025_mug/google_16k/textured.obj")
    _write(tmp_path / "b/025_mug/google_16k/textured.obj")
    with caplog.at_level(logging.WARNING, logger="hoigen.objects.folder"):
        entries = discover_objects(tmp_path)
    assert {e.id: e.relpath for e in entries} == {
        "a__025_mug": "a/025_mug/google_16k/textured.obj",
        "b__025_mug": "b/025_mug/google_16k/textured.obj",
        "bunny": "bunny.ply",
        "cow": "cow.obj",
        "other__deep__bunny": "other/deep/bunny.obj",
        "sub__bunny": "sub/bunny.obj",
        "sub__bunny__2": "sub/bunny.ply",
    }
    assert [e.id for e in entries] == sorted(e.id for e in entries)
    renamed = [r.getMessage() for r in caplog.records if "is shared by" in r.getMessage()]
    assert len(renamed) == 5
    assert any("'sub__bunny__2'" in message and "sub/bunny.ply" in message for message in renamed)


def test_missing_root_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        discover_objects(tmp_path / "nope")
    with pytest.raises(FileNotFoundError):
        load_objects(tmp_path / "nope")


def test_file_as_root_is_not_a_directory(tmp_path):
    path = _write(tmp_path / "bunny.ply")
    with pytest.raises(NotADirectoryError, match="is a file, not a folder"):
        discover_objects(path)


def test_folder_without_meshes_is_an_object_error(tmp_path):
    _write_text(tmp_path / "readme.txt", "hello\n")
    _write(tmp_path / ".hidden" / "ghost.ply")
    (tmp_path / "empty_sub").mkdir()
    with pytest.raises(ObjectError, match="no mesh files found") as info:
        discover_objects(tmp_path)
    for suffix in (".obj", ".ply", ".stl", ".glb", ".gltf", ".off"):
        assert suffix in str(info.value)
    assert str(tmp_path) in str(info.value)


def test_unreadable_folder_is_an_object_error(tmp_path, monkeypatch):
    _write(tmp_path / "ok.ply")
    locked = tmp_path / "locked"
    locked.mkdir()
    real_scandir = os.scandir

    def scandir(path):
        if Path(path) == locked:
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(folder.os, "scandir", scandir)
    with pytest.raises(ObjectError, match="permission denied") as info:
        discover_objects(tmp_path)
    assert str(locked) in str(info.value)


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root can read any folder")
def test_unreadable_folder_for_real(tmp_path):
    locked = tmp_path / "locked"
    _write(locked / "x.ply")
    locked.chmod(0)
    try:
        with pytest.raises(ObjectError, match="permission denied"):
            discover_objects(tmp_path)
    finally:
        locked.chmod(0o755)


# --------------------------------------------------------------------------------------------------------------
# loading procedural meshes


@pytest.mark.parametrize("suffix", [".obj", ".ply", ".stl", ".off", ".glb"])
def test_box_canonical_frame_and_scale(tmp_path, suffix):
    mesh = _box()
    _write(tmp_path / f"crate{suffix}", trimesh.Scene(mesh) if suffix == ".glb" else mesh)
    asset = load_object(_only(tmp_path))

    lo, hi = asset.mesh.bounds
    np.testing.assert_allclose((lo + hi) / 2, 0.0, atol=1e-9)
    np.testing.assert_allclose(hi - lo, BOX_EXTENTS, atol=1e-7)  # stl stores float32
    assert asset.scale == pytest.approx(np.sqrt(0.01 + 0.04 + 0.09), abs=1e-7)
    assert asset.scale == pytest.approx(np.linalg.norm(hi - lo), abs=1e-12)
    np.testing.assert_allclose(asset.size, BOX_EXTENTS / np.sqrt(0.14), atol=1e-6)
    np.testing.assert_allclose(asset.offset, -BOX_SHIFT, atol=1e-7)
    assert asset.unit_scale == 1.0
    assert (asset.id, asset.source, asset.category, asset.class_id, asset.symmetry) == (
        "crate",
        f"crate{suffix}",
        "crate",
        0,
        None,
    )
    np.testing.assert_array_equal(asset.up, [0.0, 1.0, 0.0])
    assert asset.watertight
    assert not asset.textured
    assert asset.info["texture_missing"] is False
    assert asset.info["format"] == suffix[1:]
    assert len(asset.mesh.faces) == 12
    nocs = asset.to_nocs(asset.mesh.vertices)
    assert np.abs(nocs).max() <= 0.5 + 1e-12


def test_up_override_and_validation(tmp_path):
    entry = ObjectEntry("bunny", _write(tmp_path / "bunny.ply"), "bunny.ply")
    np.testing.assert_array_equal(load_object(entry, up=(0, 0, 2)).up, [0.0, 0.0, 1.0])
    ycb_entry = ObjectEntry("031_spoon", entry.path, "bunny.ply")  # YCB, not a NOCS class: keeps z up
    np.testing.assert_array_equal(load_object(ycb_entry).up, [0.0, 0.0, 1.0])
    np.testing.assert_array_equal(load_object(ycb_entry, up=(0, 1, 0)).up, [0.0, 1.0, 0.0])
    for bad in [(0, 0, 0), (1, 0), (np.nan, 1, 0)]:
        with pytest.raises(ValueError, match="up must be"):
            load_object(entry, up=bad)
    with pytest.raises(TypeError, match="ObjectEntry"):
        load_object(entry.path)


def test_glb_scene_with_several_geometries_is_concatenated_in_place(tmp_path):
    box = trimesh.creation.box(extents=(0.1, 0.1, 0.1))
    ball = trimesh.creation.icosphere(subdivisions=1, radius=0.05)
    scene = trimesh.Scene()
    scene.add_geometry(box, node_name="box", geom_name="box")
    scene.add_geometry(
        ball,
        node_name="ball",
        geom_name="ball",
        transform=trimesh.transformations.translation_matrix([0.3, 0, 0]),
    )
    _write(tmp_path / "pair.glb", scene)

    asset = load_object(_only(tmp_path))

    assert asset.info["geometries"] == 2
    assert len(asset.mesh.faces) == len(box.faces) + len(ball.faces)
    expected = np.array([0.3 + 0.05 + 0.05, 0.1, 0.1])  # box from -0.05, ball up to 0.35
    np.testing.assert_allclose(asset.mesh.extents, expected, atol=1e-7)
    assert asset.scale == pytest.approx(np.linalg.norm(expected), abs=1e-7)
    np.testing.assert_allclose(asset.offset, [-0.15, 0.0, 0.0], atol=1e-7)


def _textured_box(path: Path) -> Path:
    mesh = trimesh.creation.box(extents=(0.1, 0.1, 0.1))
    uv = np.random.default_rng(0).random((len(mesh.vertices), 2))
    image = Image.fromarray(np.full((4, 4, 3), 200, dtype=np.uint8))
    mesh.visual = trimesh.visual.TextureVisuals(uv=uv, image=image)
    return _write(path, mesh)


def test_textured_obj_keeps_its_texture(tmp_path):
    _textured_box(tmp_path / "tbox.obj")
    asset = load_object(_only(tmp_path))
    assert asset.textured
    assert asset.info["texture_missing"] is False
    assert asset.mesh.visual.uv is not None


def test_missing_texture_image_warns_and_loads_untextured(tmp_path, caplog):
    _textured_box(tmp_path / "tbox.obj")
    (image,) = tmp_path.glob("*.png")
    image.unlink()
    with caplog.at_level(logging.WARNING, logger="hoigen.objects.folder"):
        asset = load_object(_only(tmp_path))
    assert not asset.textured
    assert asset.info["texture_missing"] is True
    assert asset.info["missing_textures"] == [image.name]
    (record,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "tbox" in record.getMessage() and image.name in record.getMessage()


def test_nan_normals_and_uvs_are_sanitised_without_numpy_warnings(tmp_path, caplog):
    # the defect of the YCB scans 025_mug / 031_spoon: a "vn nan nan nan" line (and, for good measure, a NaN UV)
    text = (
        "v 0 0 0\nv 0.1 0 0\nv 0 0.1 0\nv 0 0 0.1\n"
        "vt 0 0\nvt 1 0\nvt nan nan\nvt 0 1\n"
        "vn 0 0 -1\nvn nan nan nan\nvn 0 -1 0\nvn 1 1 1\n"
        "f 1/1/1 3/3/2 2/2/3\nf 1/1/1 2/2/3 4/4/4\nf 1/1/1 4/4/4 3/3/2\nf 2/2/3 3/3/2 4/4/4\n"
    )
    _write_text(tmp_path / "tetra.obj", text)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        asset = load_object(_only(tmp_path))
    assert asset.info["nan_normals_replaced"] >= 1
    assert asset.info["nan_uvs_replaced"] >= 1
    assert np.isfinite(asset.mesh.vertex_normals).all()
    assert np.isfinite(asset.mesh.visual.uv).all()
    assert len(asset.mesh.faces) == 4
    assert asset.scale == pytest.approx(np.sqrt(3 * 0.01), abs=1e-12)


# --------------------------------------------------------------------------------------------------------------
# units


def _cylinder_mm(tmp_path: Path) -> tuple[ObjectEntry, float]:
    mesh = trimesh.creation.cylinder(radius=0.04, height=0.08, sections=32)
    scale_m = float(np.linalg.norm(mesh.extents))
    mesh.apply_scale(1000.0)
    return ObjectEntry("mug_mm", _write(tmp_path / "mug_mm.ply", mesh), "mug_mm.ply"), scale_m


def test_millimetre_mesh_is_rescaled_under_auto(tmp_path, caplog):
    entry, scale_m = _cylinder_mm(tmp_path)
    with caplog.at_level(logging.WARNING):
        asset = load_object(entry, units="auto")
    assert asset.unit_scale == 0.001
    assert asset.scale == pytest.approx(scale_m, rel=1e-6)
    assert asset.mesh.extents.max() == pytest.approx(0.08, rel=1e-6)
    assert any("mm" in r.getMessage() and "mug_mm" in r.getMessage() for r in caplog.records)
    assert load_object(entry, units="mm").scale == pytest.approx(scale_m, rel=1e-6)


def test_millimetre_mesh_is_an_error_under_metres(tmp_path):
    entry, _ = _cylinder_mm(tmp_path)
    with pytest.raises(ObjectError, match="mm") as info:
        load_object(entry, units="m")
    assert str(entry.path) in str(info.value)


def test_units_pass_through_load_objects(tmp_path):
    _cylinder_mm(tmp_path)
    (asset,), skipped = load_objects(tmp_path)
    assert asset.unit_scale == 0.001 and skipped == []
    with pytest.raises(ObjectError, match="none of the 1 objects") as info:
        load_objects(tmp_path, units="m")
    assert "mug_mm.ply" in str(info.value) and "mm" in str(info.value)


def test_centimetre_mesh_near_the_metre_range_needs_units(tmp_path):
    cube = trimesh.creation.box(extents=(0.03, 0.02, 0.01))  # a 3 cm eraser saved in cm: extent 3
    cube.apply_scale(100.0)
    entry = ObjectEntry("eraser", _write(tmp_path / "eraser.obj", cube), "eraser.obj")
    with pytest.raises(ObjectError, match="too close to guess") as info:
        load_object(entry)  # 3 m is barely implausible: auto refuses to guess (issue 13)
    assert "--units cm" in str(info.value) and "0.03 m as cm" in str(info.value)
    asset = load_object(entry, units="cm")
    assert asset.unit_scale == 0.01
    np.testing.assert_allclose(asset.mesh.extents, [0.03, 0.02, 0.01], atol=1e-9)
    assert load_object(entry, units="cm").scale == pytest.approx(asset.scale, abs=1e-12)
    with pytest.raises(ObjectError, match="cm"):
        load_object(entry, units="m")


def test_typical_centimetre_mesh_is_detected_as_centimetres(tmp_path):
    mesh = trimesh.creation.cylinder(radius=0.04, height=0.08, sections=32)
    mesh.apply_scale(100.0)
    entry = ObjectEntry("mug_cm", _write(tmp_path / "mug_cm.ply", mesh), "mug_cm.ply")
    assert load_object(entry).unit_scale == 0.01


def test_invalid_units_are_rejected_up_front(tmp_path):
    entry = ObjectEntry("bunny", _write(tmp_path / "bunny.ply"), "bunny.ply")
    for call in (lambda: load_object(entry, units="inch"), lambda: load_objects(tmp_path, units="metres")):
        with pytest.raises(ValueError, match="units must be one of"):
            call()


# --------------------------------------------------------------------------------------------------------------
# bad files


def _bad_folder(root: Path) -> None:
    _write(root / "good_box.ply")
    _write(root / "good_ball.obj", trimesh.creation.icosphere(subdivisions=2, radius=0.05))
    (root / "garbage.obj").write_bytes(np.random.default_rng(7).bytes(4096))
    (root / "empty.ply").write_bytes(b"")
    _write_text(root / "nan.obj", "v nan 0 0\nv 0.1 0 0\nv 0 0.1 0\nv 0 0 0.1\nf 1 2 3\nf 1 2 4\nf 2 3 4\n")
    # all faces zero area: the vertices are collinear
    _write_text(root / "flat.obj", "v 0 0 0\nv 0.1 0 0\nv 0.2 0 0\nv 0.3 0 0\nf 1 2 3\nf 2 3 4\nf 1 2 4\n")


def test_bad_files_are_skipped_with_meaningful_reasons(tmp_path, caplog):
    _bad_folder(tmp_path)
    with caplog.at_level(logging.WARNING, logger="hoigen.objects.folder"):
        assets, skipped = load_objects(tmp_path)

    assert [a.id for a in assets] == ["good_ball", "good_box"]
    reasons = dict(skipped)
    assert sorted(reasons) == ["empty.ply", "flat.obj", "garbage.obj", "nan.obj"]
    for relpath, reason in reasons.items():
        assert str(tmp_path / relpath) in reason
    assert "NaN" in reasons["nan.obj"]
    assert "degenerate" in reasons["flat.obj"] or "zero area" in reasons["flat.obj"]
    # random bytes: undecodable text (or, where trimesh can guess an encoding, text holding no faces)
    assert "not readable" in reasons["garbage.obj"] or "no triangles" in reasons["garbage.obj"]
    assert "not readable" in reasons["empty.ply"]
    messages = [r.getMessage() for r in caplog.records if r.getMessage().startswith("skipping object")]
    assert len(messages) == 4
    assert any(m.startswith("skipping object nan (nan.obj): ") for m in messages)


@pytest.mark.parametrize("name", ["garbage.obj", "empty.ply", "nan.obj", "flat.obj"])
def test_each_bad_file_is_an_object_error(tmp_path, name):
    _bad_folder(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no stray numpy warnings on the way to the error
        with pytest.raises(ObjectError):
            load_object(_entry(tmp_path, name))


def test_point_cloud_is_not_a_mesh(tmp_path):
    points = trimesh.PointCloud(np.random.default_rng(1).random((20, 3)) * 0.1)
    _write(tmp_path / "scan.ply", points)
    _write_text(tmp_path / "dots.obj", "v 0 0 0\nv 0.1 0 0\nv 0 0.1 0\n")
    for entry in discover_objects(tmp_path):
        with pytest.raises(ObjectError, match="no triangle mesh, only PointCloud") as info:
            load_object(entry)
        assert str(entry.path) in str(info.value)


def test_every_object_failing_is_an_object_error_listing_reasons(tmp_path):
    (tmp_path / "empty.ply").write_bytes(b"")
    _write_text(tmp_path / "nan.obj", "v nan 0 0\nv 0.1 0 0\nv 0 0.1 0\nf 1 2 3\n")
    with pytest.raises(ObjectError, match="none of the 2 objects") as info:
        load_objects(tmp_path)
    message = str(info.value)
    assert "empty.ply:" in message and "nan.obj:" in message and "NaN" in message


# --------------------------------------------------------------------------------------------------------------
# the real YCB samples


@pytest.fixture(scope="module")
def ycb_dir() -> Path:
    if not YCB_DIR.is_dir():
        pytest.skip(f"YCB samples not found at {YCB_DIR}")
    return YCB_DIR


def _ycb_entry(ycb_dir: Path, object_id: str) -> ObjectEntry:
    if not (ycb_dir / object_id).is_dir():
        pytest.skip(f"YCB sample {object_id} not found in {ycb_dir}")
    return {e.id: e for e in discover_objects(ycb_dir)}[object_id]


@pytest.fixture(scope="module")
def ycb_assets(ycb_dir):
    return {
        object_id: load_object(_ycb_entry(ycb_dir, object_id)) for object_id in ("013_apple", "031_spoon")
    }


@pytest.mark.ycb
def test_ycb_discovery(ycb_dir):
    entries = discover_objects(ycb_dir)
    by_id = {e.id: e.relpath for e in entries}
    for object_id in ("013_apple", "025_mug", "031_spoon"):
        if (ycb_dir / object_id).is_dir():
            assert by_id[object_id] == f"{object_id}/google_16k/textured.obj"


@pytest.mark.ycb
@pytest.mark.parametrize("object_id", ["013_apple", "031_spoon"])
def test_ycb_canonical_frame_and_scale_are_exact(ycb_dir, ycb_assets, object_id):
    asset = ycb_assets[object_id]
    raw = trimesh.load(str(_ycb_entry(ycb_dir, object_id).path), force="mesh", process=False)
    expected = raw.vertices * asset.unit_scale + asset.offset

    assert asset.unit_scale == 1.0  # YCB meshes are in metres
    lo, hi = asset.mesh.bounds
    np.testing.assert_allclose((lo + hi) / 2, 0.0, atol=1e-9)
    np.testing.assert_array_equal(asset.mesh.bounds, [expected.min(axis=0), expected.max(axis=0)])
    assert asset.scale == pytest.approx(np.linalg.norm(raw.extents), abs=1e-12)
    np.testing.assert_allclose(asset.size, raw.extents / asset.scale, atol=1e-12)
    np.testing.assert_allclose(asset.offset, -raw.bounds.mean(axis=0), atol=1e-12)
    # merging reorders / merges vertices: compare the sets of distinct positions
    np.testing.assert_array_equal(np.unique(asset.mesh.vertices, axis=0), np.unique(expected, axis=0))


@pytest.mark.ycb
def test_ycb_apple_and_spoon_labels(ycb_assets):
    apple, spoon = ycb_assets["013_apple"], ycb_assets["031_spoon"]
    assert (apple.category, apple.class_id, apple.textured) == ("apple", 0, True)
    assert (spoon.category, spoon.class_id, spoon.textured) == ("spoon", 0, True)
    assert apple.source == "013_apple/google_16k/textured.obj"
    for asset in (apple, spoon):
        np.testing.assert_array_equal(asset.up, [0.0, 0.0, 1.0])
        assert asset.info["texture_missing"] is False


@pytest.mark.ycb
def test_ycb_spoon_nan_normal_is_sanitised_without_numpy_warning(ycb_dir):
    entry = _ycb_entry(ycb_dir, "031_spoon")
    with warnings.catch_warnings():
        # trimesh's default load (process=True) merges vertices keyed on the NaN normal: "invalid value
        # encountered in cast"
        warnings.simplefilter("error", RuntimeWarning)
        asset = load_object(entry)
    assert asset.info["nan_normals_replaced"] == 1
    assert np.isfinite(asset.mesh.vertex_normals).all()


@pytest.mark.ycb
def test_ycb_mug_without_its_texture_loads_untextured_with_a_warning(ycb_dir, caplog):
    entry = _ycb_entry(ycb_dir, "025_mug")
    if (entry.path.parent / "texture_map.png").exists():
        pytest.skip("this copy of 025_mug has its texture")
    with caplog.at_level(logging.WARNING, logger="hoigen.objects.folder"):
        asset = load_object(entry)
    assert (asset.category, asset.class_id, asset.textured) == ("mug", 6, False)
    assert asset.symmetry == "continuous-up-if-handle-hidden"
    np.testing.assert_array_equal(
        asset.up, [0.0, 1.0, 0.0]
    )  # NOCS orientation (tests/test_nocs_orientation.py)
    assert asset.info["texture_missing"] is True
    assert asset.info["missing_textures"] == ["texture_map.png"]
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("025_mug" in m and "texture_map.png" in m for m in warned)
    lo, hi = asset.mesh.bounds
    np.testing.assert_allclose((lo + hi) / 2, 0.0, atol=1e-9)
    assert asset.scale == pytest.approx(np.linalg.norm(hi - lo), abs=1e-12)
