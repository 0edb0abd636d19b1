"""``hoigen.exports.bop`` on tiny real datasets: BOP fields, units, models and masks against the shards.

Two small synth runs are made once for the module: a built-in one (3 samples of 2 frames at 128 px: a bottle, a
bowl and a camera, so one model per sample) exported with 2 images per scene, and a folder one (two cylinders,
3 samples, so sample 2 reuses the first object's model).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("webdataset")
pytest.importorskip("cv2")

import trimesh  # noqa: E402
from scipy.spatial.distance import cdist  # noqa: E402

from hoigen.config import RunConfig  # noqa: E402
from hoigen.datasets.reader import open_frames  # noqa: E402
from hoigen.exports.bop import (  # noqa: E402
    export_bop,
    mesh_diameter,
    model_info,
    object_silhouette,
    write_ply,
)
from hoigen.render.png import decode_png  # noqa: E402
from hoigen.synth.run import SynthJob, run_synth  # noqa: E402

N, FRAMES, SIZE, PER_SCENE = 3, 2, 128, 2
OBJECT_ID, HAND_ID = 1, 2


def _config(**objects) -> RunConfig:
    config = RunConfig().replace(
        camera={"preset": f"square-{SIZE}"}, trajectory={"frames": FRAMES}, grasp={"candidates": 2, "max_attempts": 40}
    )
    return config.replace(objects=objects) if objects else config


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bop") / "run"
    run_synth(SynthJob(_config(), out, n=N, samples_per_shard=2), workers=1, progress=False)
    return out


@pytest.fixture(scope="module")
def frames(dataset) -> list[dict]:
    return list(open_frames(dataset))


@pytest.fixture(scope="module")
def export(dataset, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("bop_out")
    return out, export_bop(dataset, out, images_per_scene=PER_SCENE)


def _json(path: Path) -> dict:
    return json.loads(path.read_text())


def _image_of(out: Path, g: int, split: str = "train_pbr") -> tuple[Path, str]:
    """Scene folder and image id (as a JSON key) of the g-th frame."""
    return out / split / f"{g // PER_SCENE:06d}", str(g % PER_SCENE)


def _calc_2d_bbox(box) -> list[int]:
    """hoigen's pixel-extent box -> bop_toolkit's ``calc_2d_bbox`` (w = x_max - x_min); empty stays -1s."""
    box = [int(v) for v in box]
    return box if box[2] <= 0 else [box[0], box[1], box[2] - 1, box[3] - 1]


def _gray(path: Path) -> np.ndarray:
    image = decode_png(path.read_bytes())
    assert image.ndim == 2 and image.dtype == np.uint8
    return image


# ---------------------------------------------------------------------------------------------------------------
# layout


def test_scenes_split_at_images_per_scene(export, frames):
    out, summary = export
    total = N * FRAMES
    assert summary["images"] == total == len(frames)
    assert summary["scenes"] == -(-total // PER_SCENE)
    scenes = sorted(p.name for p in (out / "train_pbr").iterdir())
    assert scenes == [f"{k:06d}" for k in range(summary["scenes"])]
    for g, frame in enumerate(frames):
        scene, im = _image_of(out, g)
        name = f"{int(im):06d}"
        for sub in (f"rgb/{name}.png", f"depth/{name}.png", f"mask/{name}_000000.png"):
            assert (scene / sub).is_file(), sub
        assert (scene / "mask_visib" / f"{name}_000000.png").is_file()
        assert _json(scene / "scene_hand.json")[im]["hoigen_key"] == frame["key"]
    for scene in (out / "train_pbr").iterdir():
        assert len(list((scene / "rgb").iterdir())) <= PER_SCENE
        for table in ("scene_camera.json", "scene_gt.json", "scene_gt_info.json", "scene_hand.json"):
            keys = list(_json(scene / table))
            assert keys == [str(k) for k in range(len(keys))] and 0 < len(keys) <= PER_SCENE


def test_json_fields_are_typed_as_bop_expects(export, frames):
    out, _ = export
    for g, frame in enumerate(frames):
        scene, im = _image_of(out, g)
        cam = _json(scene / "scene_camera.json")[im]
        assert len(cam["cam_K"]) == 9 and all(isinstance(v, float) for v in cam["cam_K"])
        np.testing.assert_allclose(cam["cam_K"], frame["K"].reshape(-1))
        assert isinstance(cam["depth_scale"], float) and cam["depth_scale"] == frame["depth_scale"]
        [gt] = _json(scene / "scene_gt.json")[im]
        assert isinstance(gt["obj_id"], int) and gt["obj_id"] >= 1
        assert len(gt["cam_R_m2c"]) == 9 and len(gt["cam_t_m2c"]) == 3
        assert all(isinstance(v, float) for v in gt["cam_R_m2c"] + gt["cam_t_m2c"])
        [info] = _json(scene / "scene_gt_info.json")[im]
        for key in ("bbox_obj", "bbox_visib"):
            assert len(info[key]) == 4 and all(isinstance(v, int) for v in info[key])
        for key in ("px_count_all", "px_count_valid", "px_count_visib"):
            assert isinstance(info[key], int) and info[key] >= 0
        assert isinstance(info["visib_fract"], float) and 0.0 <= info["visib_fract"] <= 1.0


def test_poses_in_millimetres_with_orthonormal_rotations(export, frames):
    out, _ = export
    for g, frame in enumerate(frames):
        scene, im = _image_of(out, g)
        [gt] = _json(scene / "scene_gt.json")[im]
        T = frame["labels"]["T_cam_obj"]
        R = np.asarray(gt["cam_R_m2c"]).reshape(3, 3)
        np.testing.assert_allclose(gt["cam_t_m2c"], 1000.0 * T[:3, 3], rtol=1e-12, atol=1e-9)
        np.testing.assert_allclose(R, T[:3, :3], atol=1e-12)
        np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-9)
        assert np.linalg.det(R) == pytest.approx(1.0, abs=1e-9)


def test_rgb_and_depth_are_the_shards(export, frames):
    out, _ = export
    for g, frame in enumerate(frames):
        scene, im = _image_of(out, g)
        name = f"{int(im):06d}.png"
        np.testing.assert_array_equal(decode_png((scene / "rgb" / name).read_bytes()), frame["rgb"])
        depth = decode_png((scene / "depth" / name).read_bytes())
        assert depth.dtype == np.uint16
        np.testing.assert_array_equal(depth, frame["depth"])


# ---------------------------------------------------------------------------------------------------------------
# masks and visibility


def test_masks_and_gt_info_against_the_shards(export, frames):
    out, _ = export
    for g, frame in enumerate(frames):
        scene, im = _image_of(out, g)
        name = f"{int(im):06d}_000000.png"
        visib = _gray(scene / "mask_visib" / name)
        amodal = _gray(scene / "mask" / name)
        assert set(np.unique(visib)) <= {0, 255} and set(np.unique(amodal)) <= {0, 255}
        visib, amodal = visib > 0, amodal > 0
        np.testing.assert_array_equal(visib, frame["mask"] == OBJECT_ID)
        assert not (visib & ~amodal).any()
        [info] = _json(scene / "scene_gt_info.json")[im]
        labels = frame["labels"]
        assert info["px_count_visib"] == int(visib.sum()) == labels["px_count_visib_obj"]
        assert info["px_count_all"] >= int(amodal.sum())  # counted on BOP's enlarged canvas
        assert info["px_count_valid"] == int((visib & (frame["depth"] > 0)).sum())
        assert info["visib_fract"] == pytest.approx(info["px_count_visib"] / info["px_count_all"])
        # bop_toolkit's calc_2d_bbox: w = x_max - x_min, one less than hoigen's pixel-extent boxes
        assert info["bbox_visib"] == _calc_2d_bbox(labels["bbox_visib_obj"])
        # the in-image silhouette agrees with the renderer's own amodal pass up to edge ties
        assert abs(int(amodal.sum()) - labels["px_count_all_obj"]) <= max(2, 0.002 * info["px_count_all"])


def test_model_vertices_project_inside_bbox_obj(export, frames):
    out, _ = export
    for g, _frame in enumerate(frames):
        scene, im = _image_of(out, g)
        [gt] = _json(scene / "scene_gt.json")[im]
        [info] = _json(scene / "scene_gt_info.json")[im]
        K = np.asarray(_json(scene / "scene_camera.json")[im]["cam_K"]).reshape(3, 3)
        model = trimesh.load(out / "models" / f"obj_{gt['obj_id']:06d}.ply", process=False)
        R = np.asarray(gt["cam_R_m2c"]).reshape(3, 3)
        p = (np.asarray(model.vertices) @ R.T + np.asarray(gt["cam_t_m2c"])) @ K.T
        uv = p[:, :2] / p[:, 2:3]
        in_image = (uv > -0.5).all(axis=1) & (uv < SIZE - 0.5).all(axis=1)
        uv = uv[in_image]
        x, y, w, h = info["bbox_obj"]
        assert w > 0 and h > 0 and len(uv)
        # pixel (i, j) covers [j - 0.5, j + 0.5]; a thin tip may cover no pixel centre: 1.5 px tolerance
        assert uv[:, 0].min() >= x - 1.5 and uv[:, 0].max() <= x + w + 1.5
        assert uv[:, 1].min() >= y - 1.5 and uv[:, 1].max() <= y + h + 1.5


# ---------------------------------------------------------------------------------------------------------------
# models


def test_models_in_millimetres_one_per_builtin_sample(export, frames):
    out, summary = export
    assert summary["objects"] == N
    info = _json(out / "models" / "models_info.json")
    hoigen = _json(out / "models" / "models_hoigen.json")
    assert sorted(info) == sorted(hoigen) == [str(k) for k in range(1, N + 1)]
    seen = {}
    for g, frame in enumerate(frames):
        scene, im = _image_of(out, g)
        [gt] = _json(scene / "scene_gt.json")[im]
        seen.setdefault(frame["sample_key"], set()).add(gt["obj_id"])
        obj = frame["meta"]["object"]
        assert hoigen[str(gt["obj_id"])]["id"] == obj["id"]
    assert sorted(next(iter(ids)) for ids in seen.values()) == list(range(1, N + 1))
    assert all(len(ids) == 1 for ids in seen.values())
    for frame in frames[::FRAMES]:
        obj = frame["meta"]["object"]
        obj_id = next(int(k) for k, v in hoigen.items() if v["id"] == obj["id"])
        path = out / "models" / f"obj_{obj_id:06d}.ply"
        header = path.read_bytes().split(b"end_header")[0].decode()
        assert "format binary_little_endian 1.0" in header
        assert "property list uchar int vertex_indices" in header
        assert all(f"property float {a}" in header for a in ("x", "y", "z", "nx", "ny", "nz"))
        assert all(f"property uchar {c}" in header for c in ("red", "green", "blue"))
        model = trimesh.load(path, process=False)
        extents_mm = 1000.0 * np.asarray(obj["size"]) * obj["scale"]
        np.testing.assert_allclose(model.extents, extents_mm, atol=1e-3)
        np.testing.assert_allclose(model.bounds.mean(axis=0), 0.0, atol=1e-3)  # canonical frame: box centre
        record = info[str(obj_id)]
        for k, axis in enumerate("xyz"):
            assert record[f"size_{axis}"] == pytest.approx(extents_mm[k], abs=1e-6)
            assert record[f"min_{axis}"] == pytest.approx(-extents_mm[k] / 2, abs=1e-6)
        assert extents_mm.max() - 1e-6 <= record["diameter"] <= np.linalg.norm(extents_mm) + 1e-6
        pairwise = cdist(model.vertices, model.vertices[::7]).max()
        assert pairwise <= record["diameter"] + 1e-3
        if obj["symmetry"] == "continuous-up":
            assert record["symmetries_continuous"] == [{"axis": obj["up"], "offset": [0.0, 0.0, 0.0]}]
        else:
            assert "symmetries_continuous" not in record
    symmetric = {hoigen[k]["category"]: "symmetries_continuous" in v for k, v in info.items()}
    assert symmetric == {"bottle": True, "bowl": True, "camera": False}


def test_hand_labels(export, frames):
    out, _ = export
    for g, frame in enumerate(frames):
        scene, im = _image_of(out, g)
        hand = _json(scene / "scene_hand.json")[im]
        labels = frame["labels"]
        np.testing.assert_allclose(hand["joints2d"], labels["joints2d"])
        np.testing.assert_allclose(hand["joints3d_mm"], 1000.0 * labels["joints3d"])
        assert hand["px_count_visib_hand"] == labels["px_count_visib_hand"]
        assert hand["bbox_visib_hand"] == _calc_2d_bbox(labels["bbox_visib_hand"])
        assert hand["bbox_hand"] == labels["bbox_hand"].tolist()


def test_existing_export_and_bad_arguments(dataset, export, tmp_path):
    out, _ = export
    with pytest.raises(FileExistsError, match="overwrite=True"):
        export_bop(dataset, out)
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="images_per_scene"):
            export_bop(dataset, tmp_path / "x", images_per_scene=bad)
    for bad in ("", "..", "a/b"):
        with pytest.raises(ValueError, match="split"):
            export_bop(dataset, tmp_path / "y", split=bad)


# ---------------------------------------------------------------------------------------------------------------
# a folder run: objects come round again


@pytest.fixture(scope="module")
def folder_dataset(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("bop_folder")
    objects = root / "objects"
    objects.mkdir()
    trimesh.creation.cylinder(radius=0.03, height=0.10, sections=24).export(objects / "tin_a.ply")
    trimesh.creation.cylinder(radius=0.035, height=0.12, sections=24).export(objects / "tin_b.ply")
    out = root / "run"
    config = _config(source=str(objects)).replace(trajectory={"frames": 1})
    run_synth(SynthJob(config, out, n=3, samples_per_shard=3), workers=1, progress=False)
    return out, objects


def test_folder_run_reuses_object_ids(folder_dataset, tmp_path):
    dataset, objects = folder_dataset
    frames = list(open_frames(dataset))
    assert [f["meta"]["object"]["id"] for f in frames] == ["tin_a", "tin_b", "tin_a"]
    summary = export_bop(dataset, tmp_path / "bop")
    assert summary["objects"] == 2 and summary["scenes"] == 1 and summary["images"] == 3
    gt = _json(tmp_path / "bop" / "train_pbr" / "000000" / "scene_gt.json")
    assert [gt[str(k)][0]["obj_id"] for k in range(3)] == [1, 2, 1]
    hoigen = _json(tmp_path / "bop" / "models" / "models_hoigen.json")
    assert {k: v["id"] for k, v in hoigen.items()} == {"1": "tin_a", "2": "tin_b"}
    assert hoigen["1"]["source"] == "tin_a.ply" and hoigen["1"]["class_id"] == 0
    model = trimesh.load(tmp_path / "bop" / "models" / "obj_000002.ply", process=False)
    np.testing.assert_allclose(sorted(model.extents), [70.0, 70.0, 120.0], atol=0.05)

    renamed = objects.with_name("objects_gone")
    objects.rename(renamed)
    try:  # the models come from the dataset's mesh store, not from the object folder
        assert export_bop(dataset, tmp_path / "bop2")["objects"] == 2
        moved = trimesh.load(tmp_path / "bop2" / "models" / "obj_000002.ply", process=False)
        np.testing.assert_allclose(moved.vertices, model.vertices, atol=1e-3)
    finally:
        renamed.rename(objects)


# ---------------------------------------------------------------------------------------------------------------
# helpers on made-up inputs


def test_silhouette_of_a_square_counts_pixel_centres():
    K = np.array([[100.0, 0.0, 10.0], [0.0, 100.0, 10.0], [0.0, 0.0, 1.0]])
    # a square from pixel 2.3 to 7.6 in x and 4.2 to 9.1 in y at 1 m
    corners_px = np.array([[2.3, 4.2], [7.6, 4.2], [7.6, 9.1], [2.3, 9.1]])
    vertices = np.column_stack([(corners_px - 10.0) / 100.0, np.ones(4)])
    faces = np.array([[0, 1, 2], [0, 2, 3]])
    mask = object_silhouette(vertices, faces, K, 20, 20)
    expected = np.zeros((20, 20), dtype=bool)
    expected[5:10, 3:8] = True  # centres 3..7 in x, 5..9 in y
    np.testing.assert_array_equal(mask, expected)
    np.testing.assert_array_equal(object_silhouette(vertices, faces[:, ::-1], K, 20, 20), expected)  # winding
    # partly outside the image, and behind the camera
    np.testing.assert_array_equal(object_silhouette(vertices, faces, K, 6, 7), expected[:7, :6])
    assert not object_silhouette(vertices * [1, 1, -1], faces, K, 20, 20).any()


def test_silhouette_matches_a_dense_point_test():
    rng = np.random.default_rng(0)
    mesh = trimesh.creation.icosphere(subdivisions=2, radius=0.05)
    K = np.array([[300.0, 0.0, 31.5], [0.0, 300.0, 31.5], [0.0, 0.0, 1.0]])
    vertices = mesh.vertices + [0.01, -0.005, 0.4] + rng.normal(scale=0.002, size=mesh.vertices.shape)
    mask = object_silhouette(vertices, mesh.faces, K, 64, 64)
    uv = vertices @ K.T
    uv = uv[:, :2] / uv[:, 2:3]
    ys, xs = np.mgrid[0:64, 0:64]
    inside = np.zeros((64, 64), dtype=bool)
    for tri in uv[mesh.faces]:
        a, b, c = tri
        d = (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0])
        w0 = ((b[0] - a[0]) * (ys - a[1]) - (b[1] - a[1]) * (xs - a[0])) * np.sign(d)
        w1 = ((c[0] - b[0]) * (ys - b[1]) - (c[1] - b[1]) * (xs - b[0])) * np.sign(d)
        w2 = ((a[0] - c[0]) * (ys - c[1]) - (a[1] - c[1]) * (xs - c[0])) * np.sign(d)
        inside |= (w0 >= 0) & (w1 >= 0) & (w2 >= 0)
    np.testing.assert_array_equal(mask, inside)
    assert 500 < mask.sum() < 64 * 64


def test_diameter_and_model_info():
    cube = trimesh.creation.box(extents=[10.0, 20.0, 40.0])
    assert mesh_diameter(cube.vertices) == pytest.approx(np.sqrt(10**2 + 20**2 + 40**2))
    dense = trimesh.creation.icosphere(subdivisions=3, radius=30.0)
    assert mesh_diameter(dense.vertices) == pytest.approx(60.0, rel=1e-3)
    info = model_info(cube.vertices, "continuous-up", [0.0, 2.0, 0.0])
    assert info["symmetries_continuous"] == [{"axis": [0.0, 1.0, 0.0], "offset": [0.0, 0.0, 0.0]}]
    assert (info["min_x"], info["size_z"]) == (-5.0, 40.0)
    assert "symmetries_continuous" not in model_info(
        cube.vertices, "continuous-up-if-handle-hidden", [0, 1, 0]
    )


def test_textured_ply_round_trip(tmp_path):
    from PIL import Image

    mesh = trimesh.creation.box(extents=[1.0, 2.0, 3.0])
    uv = np.random.default_rng(1).uniform(size=(len(mesh.vertices), 2))
    Image.new("RGB", (4, 4), (200, 10, 10)).save(tmp_path / "obj_000001.png")
    write_ply(
        tmp_path / "obj_000001.ply", mesh.vertices * 1000, mesh.faces, uv=uv, texture_file="obj_000001.png"
    )
    header = (tmp_path / "obj_000001.ply").read_bytes().split(b"end_header")[0].decode()
    assert "comment TextureFile obj_000001.png" in header and "property float texture_u" in header
    loaded = trimesh.load(tmp_path / "obj_000001.ply", process=False)
    np.testing.assert_allclose(loaded.vertices, mesh.vertices * 1000, atol=1e-3)
    np.testing.assert_array_equal(loaded.faces, mesh.faces)
    np.testing.assert_allclose(loaded.visual.uv, uv, atol=1e-6)


# ---------------------------------------------------------------------------------------------------------------
# bop_toolkit's gt_info on an enlarged canvas (an object cut by the image border)


def _raster_canvas(vertices_cam, faces, K, width, height, pad):
    """Pixel-centre coverage of the projected triangles on a canvas padded by ``pad`` px on every side, written
    here from scratch (barycentric test per triangle), independent of the exporter's rasteriser."""
    canvas = np.zeros((height + 2 * pad, width + 2 * pad), dtype=bool)
    p = vertices_cam @ np.asarray(K).T
    uv = p[:, :2] / p[:, 2:3] + pad
    for tri in uv[np.asarray(faces)]:
        x0, y0 = np.maximum(np.ceil(tri.min(axis=0)), 0).astype(int)
        x1, y1 = np.minimum(np.floor(tri.max(axis=0)), [canvas.shape[1] - 1, canvas.shape[0] - 1]).astype(int)
        if x1 < x0 or y1 < y0:
            continue
        ys, xs = np.mgrid[y0 : y1 + 1, x0 : x1 + 1]
        a, b, c = tri
        m = np.array([[b[0] - a[0], c[0] - a[0]], [b[1] - a[1], c[1] - a[1]]])
        if abs(np.linalg.det(m)) < 1e-12:
            continue
        lam = np.linalg.solve(m, np.stack([xs.ravel() - a[0], ys.ravel() - a[1]]))
        inside = (lam[0] >= -1e-9) & (lam[1] >= -1e-9) & (lam.sum(axis=0) <= 1 + 1e-9)
        canvas[ys.ravel()[inside], xs.ravel()[inside]] = True
    return canvas


@pytest.fixture(scope="module")
def cut_export(tmp_path_factory):
    """One close-up frame: the object is cut by the image border."""
    base = tmp_path_factory.mktemp("bop_cut")
    config = RunConfig().replace(
        camera={"preset": "square-48", "distance": (0.1, 0.11), "target_jitter": 0.0, "fill": 0.0},
        trajectory={"frames": 1},
        grasp={"candidates": 2, "max_attempts": 40},
        objects={"categories": ("can",)},
    )
    run_synth(SynthJob(config, base / "run", n=1, samples_per_shard=1), workers=1, progress=False)
    return base / "bop", export_bop(base / "run", base / "bop")


def test_gt_info_matches_bop_toolkit_on_an_enlarged_canvas(cut_export):
    out, summary = cut_export
    assert summary["images"] == 1
    scene = out / "train_pbr" / "000000"
    [gt], [info] = _json(scene / "scene_gt.json")["0"], _json(scene / "scene_gt_info.json")["0"]
    K = np.asarray(_json(scene / "scene_camera.json")["0"]["cam_K"]).reshape(3, 3)
    model = trimesh.load(out / "models" / f"obj_{gt['obj_id']:06d}.ply", process=False)
    R, t = np.asarray(gt["cam_R_m2c"]).reshape(3, 3), np.asarray(gt["cam_t_m2c"])
    vertices = (np.asarray(model.vertices) @ R.T + t) / 1000.0
    pad = 48  # bop_toolkit renders on 3x the image: one image size of margin on each side
    canvas = _raster_canvas(vertices, model.faces, K, 48, 48, pad)
    visib = _gray(scene / "mask_visib" / "000000_000000.png") > 0
    canvas[pad:-pad, pad:-pad] |= visib
    inside = canvas[pad:-pad, pad:-pad]
    assert canvas.sum() > inside.sum()  # the test frame really is cut by the border
    ys, xs = np.nonzero(canvas)
    expected_box = [xs.min() - pad, ys.min() - pad, xs.max() - xs.min(), ys.max() - ys.min()]  # calc_2d_bbox
    # the two rasterisers may differ on pixel centres lying exactly on an edge
    assert abs(info["px_count_all"] - int(canvas.sum())) <= max(2, 0.003 * canvas.sum())
    np.testing.assert_allclose(info["bbox_obj"], expected_box, atol=1)
    assert info["visib_fract"] == pytest.approx(visib.sum() / canvas.sum(), rel=0.01)
    assert info["visib_fract"] < 1.0
    vy, vx = np.nonzero(visib)
    assert info["bbox_visib"] == [vx.min(), vy.min(), vx.max() - vx.min(), vy.max() - vy.min()]
