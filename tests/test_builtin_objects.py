"""Procedural NOCS objects: watertight solids at real-world sizes, in the canonical NOCS frame (y up)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import trimesh

from hoigen.objects.builtin import BUILTIN_CATEGORIES, make_builtin_mesh, make_builtin_object
from hoigen.objects.categories import NOCS_CLASSES, NOCS_SYMMETRY

SEEDS = (0, 1, 2)
MM = 1e-3


@pytest.fixture(scope="module")
def built():
    """{(category, seed): (raw mesh, params, asset)} for every category and seed."""
    out = {}
    for category in BUILTIN_CATEGORIES:
        for seed in SEEDS:
            mesh, params = make_builtin_mesh(category, np.random.default_rng(seed))
            asset = make_builtin_object(category, np.random.default_rng(seed), index=seed)
            out[category, seed] = (mesh, params, asset)
    return out


CASES = [(c, s) for c in BUILTIN_CATEGORIES for s in SEEDS]


def test_category_table():
    assert BUILTIN_CATEGORIES == ("bottle", "bowl", "camera", "can", "laptop", "mug")
    assert [NOCS_CLASSES[c] for c in BUILTIN_CATEGORIES] == [1, 2, 3, 4, 5, 6]


@pytest.mark.parametrize(("category", "seed"), CASES)
def test_solid(built, category, seed):
    raw, _, asset = built[category, seed]
    for mesh in (raw, asset.mesh):
        assert mesh.is_watertight
        assert mesh.is_winding_consistent
        assert mesh.volume > 0
        assert np.isfinite(mesh.vertices).all()
        assert 1000 <= len(mesh.faces) <= 20000
    assert asset.watertight
    assert asset.info["repair"]["removed_faces"] == 0


@pytest.mark.parametrize(("category", "seed"), CASES)
def test_canonical_frame(built, category, seed):
    raw, params, asset = built[category, seed]
    mesh = asset.mesh
    lo, hi = mesh.bounds
    np.testing.assert_allclose((lo + hi) / 2, 0.0, atol=1e-9)
    extents = hi - lo
    assert asset.scale == pytest.approx(np.linalg.norm(extents), rel=1e-12)
    np.testing.assert_allclose(asset.size * asset.scale, extents, rtol=1e-12)
    np.testing.assert_allclose(extents, raw.extents, rtol=1e-12)  # canonicalisation only translates
    nocs = asset.to_nocs(mesh.vertices)
    assert nocs.min() >= -0.5 - 1e-12 and nocs.max() <= 0.5 + 1e-12
    assert np.abs(nocs).max(axis=0).max() == pytest.approx(0.5 * extents.max() / asset.scale)
    assert asset.id == f"{category}-{seed:06d}"
    assert asset.source == f"builtin:nocs/{category}"
    assert asset.category == category
    assert asset.class_id == NOCS_CLASSES[category]
    assert asset.symmetry == NOCS_SYMMETRY[category]
    np.testing.assert_array_equal(asset.up, [0.0, 1.0, 0.0])
    assert asset.unit_scale == 1.0
    assert asset.info["generator"] == "hoigen.builtin.v1"
    assert asset.info["params"] == params
    json.dumps(asset.metadata())  # JSON-serialisable, params included


@pytest.mark.parametrize("seed", SEEDS)
def test_revolved_sizes_and_axis(built, seed):
    ranges = {  # category: (height range, diameter range), metres
        "bottle": ((0.15, 0.30), (0.05, 0.09)),
        "bowl": ((0.05, 0.09), (0.12, 0.20)),
        "can": ((0.09, 0.16), (0.055, 0.10)),
        "mug": ((0.08, 0.11), (0.07, 0.095)),
    }
    for category, ((h_lo, h_hi), (d_lo, d_hi)) in ranges.items():
        raw, params, _ = built[category, seed]
        dx, dy, dz = raw.extents
        # y is up: the height is the y extent, and the object stands on y = 0
        assert dy == pytest.approx(params["height"], abs=1e-9)
        assert raw.bounds[0, 1] == pytest.approx(0.0, abs=1e-12)
        assert h_lo <= dy <= h_hi
        # the body's symmetry axis is y: the z extent (no handle along z) is the diameter
        assert dz == pytest.approx(params["diameter"], abs=1e-9)
        assert d_lo <= dz <= d_hi
        if category != "mug":
            assert abs(dx - dz) < MM  # rotationally symmetric about y
            np.testing.assert_allclose(raw.bounds.mean(axis=0)[[0, 2]], 0.0, atol=1e-9)
            radius = np.linalg.norm(raw.vertices[:, [0, 2]], axis=1)
            assert radius.max() == pytest.approx(params["diameter"] / 2, abs=1e-9)


@pytest.mark.parametrize("seed", SEEDS)
def test_bottle_has_shoulder_and_neck(built, seed):
    raw, params, _ = built["bottle", seed]
    radius = np.linalg.norm(raw.vertices[:, [0, 2]], axis=1)
    y = raw.vertices[:, 1]
    top = y > params["height"] - params["cap_height"] - 0.01
    assert radius[top].max() < 0.6 * params["diameter"] / 2  # neck + cap much narrower than the body
    assert params["neck_diameter"] < params["cap_diameter"] < params["diameter"]
    assert params["shoulder_y"] < params["neck_y"] < params["height"] - params["cap_height"]


@pytest.mark.parametrize("seed", SEEDS)
def test_can_rims_are_bevelled(built, seed):
    raw, params, _ = built["can", seed]
    radius = np.linalg.norm(raw.vertices[:, [0, 2]], axis=1)
    y = raw.vertices[:, 1]
    r_max = params["diameter"] / 2
    assert radius[y < 1e-9].max() < r_max - 0.002  # foot ring inset from the wall
    assert radius[y > params["height"] - 1e-9].max() < r_max - 0.002  # rim inset (necked top)


@pytest.mark.parametrize("seed", SEEDS)
def test_mug_handle_on_plus_x(built, seed):
    raw, params, asset = built["mug", seed]
    radius = params["diameter"] / 2
    lo, hi = raw.bounds
    assert lo[0] == pytest.approx(-radius, abs=1e-6)  # no handle on -x
    assert hi[0] > radius + params["handle_reach"]  # handle reaches out along +x
    handle = raw.vertices[raw.vertices[:, 0] > radius + 1e-6]
    assert len(handle) > 100
    assert np.abs(handle[:, 2]).max() < params["handle_section"][1] / 2 + 1e-6  # a flat loop in the x-y plane
    # a point in the handle's tube is solid; the handle does not bulge into the cup at its roots
    mesh = asset.mesh
    ax = asset.offset  # the body axis' foot (0, 0, 0 before centring) in the canonical frame
    mid = params["handle_center_y"]
    assert mesh.contains([ax + [radius + params["handle_reach"], mid, 0.0]])[0]
    for y_root in (mid - params["handle_half_height"], mid + params["handle_half_height"]):
        origin = ax + [0.0, y_root, 0.0]
        hit = []
        for direction in ([1.0, 0.0, 0.0], [-1.0, 0.0, 0.0]):
            points, _, _ = mesh.ray.intersects_location([origin], [direction])
            hit.append(np.linalg.norm(points - origin, axis=1).min())
        assert hit[0] == pytest.approx(hit[1], abs=1e-6)  # inner wall as far on the handle side as opposite


@pytest.mark.parametrize("category", ["bowl", "mug"])
@pytest.mark.parametrize("seed", SEEDS)
def test_vessels_are_open_topped(built, category, seed):
    _, params, asset = built[category, seed]
    mesh = asset.mesh
    ax = asset.offset + [
        1e-4,
        0.0,
        2e-4,
    ]  # just off the body axis (x = z = 0 before centring), canonical frame
    height, wall, bottom = params["height"], params["wall"], params["bottom"]
    below_rim = ax + [0.0, height - 0.01, 0.0]
    above_floor = ax + [0.0, bottom + 0.002, 0.0]
    in_floor = ax + [0.0, bottom / 2, 0.0]
    in_wall = ax + [-(params["diameter"] - wall) / 2, height - wall / 2 - 0.001, 0.0]
    inside = mesh.contains([below_rim, above_floor, in_floor, in_wall])
    np.testing.assert_array_equal(inside, [False, False, True, True])
    # the mouth is open: a ray straight down the axis from above first hits the floor, not a lid
    hits, _, _ = mesh.ray.intersects_location([ax + [0.0, 1.0, 0.0]], [[0.0, -1.0, 0.0]])
    assert hits[:, 1].max() == pytest.approx(ax[1] + bottom, abs=1e-6)


@pytest.mark.parametrize("seed", SEEDS)
def test_camera_layout(built, seed):
    raw, params, _ = built["camera", seed]
    width, height, depth = params["body"]
    assert 0.10 <= width <= 0.14 and 0.06 <= height <= 0.09 and 0.035 <= depth <= 0.06
    assert raw.extents[0] == pytest.approx(width, abs=1e-9)
    lo, hi = raw.bounds
    assert hi[2] == pytest.approx(depth / 2 + params["lens_length"] + 0.0005, abs=1e-9)  # lens glass faces +z
    front = raw.vertices[
        raw.vertices[:, 2] > depth / 2 + params["grip"][1] + 1e-6
    ]  # only the lens sticks out this far
    lens_axis = np.array(params["lens_center"])
    assert np.linalg.norm(front[:, :2] - lens_axis, axis=1).max() < params["lens_radius"] * 1.13
    assert hi[1] > height + 0.005  # viewfinder hump on top
    assert lo[1] == pytest.approx(0.0, abs=1e-12)
    grip = raw.vertices[(raw.vertices[:, 2] > depth / 2 + 1e-6) & (raw.vertices[:, 0] < lens_axis[0] - 0.035)]
    assert len(grip) > 0 and grip[:, 0].max() < 0  # the grip is on the -x end of the front


@pytest.mark.parametrize("seed", SEEDS)
def test_laptop_layout(built, seed):
    raw, params, _ = built["laptop", seed]
    assert 0.28 <= params["width"] <= 0.36 and 0.19 <= params["depth"] <= 0.25
    assert 0.012 <= params["base_thickness"] <= 0.02 and 0.005 <= params["screen_thickness"] <= 0.008
    assert 95.0 <= params["screen_angle_deg"] <= 130.0
    lo, hi = raw.bounds
    assert raw.extents[0] == pytest.approx(params["width"], abs=1e-9)  # the hinge runs along x
    assert lo[1] == pytest.approx(0.0, abs=1e-12)
    assert hi[2] == pytest.approx(params["depth"] / 2, abs=1e-9)  # base front edge; nothing in front of it
    # the screen rises toward +y from the hinge at the back (-z) of the base
    angle = np.radians(params["screen_angle_deg"])
    assert hi[1] > params["base_thickness"] + 0.9 * params["depth"] * np.sin(angle)
    screen = raw.vertices[raw.vertices[:, 1] > params["base_thickness"] + 0.005]
    assert screen[:, 2].max() < -params["depth"] / 2 + 0.02
    # the base is a flat slab in the x-z plane
    base = raw.vertices[raw.vertices[:, 2] > -params["depth"] / 2 + 0.03]
    assert base[:, 1].max() == pytest.approx(params["base_thickness"], abs=1e-9)


@pytest.mark.parametrize("category", BUILTIN_CATEGORIES)
def test_surface_orientation(built, category):
    """Points just inside every face are in the solid, points just outside are not (no flipped or crossing faces)."""
    mesh = built[category, 0][2].mesh
    points, face = trimesh.sample.sample_surface(mesh, 200, seed=7)
    normals = mesh.face_normals[face]
    assert mesh.contains(points - 2e-4 * normals).mean() >= 0.99
    assert (~mesh.contains(points + 2e-4 * normals)).mean() >= 0.99


@pytest.mark.parametrize("category", BUILTIN_CATEGORIES)
def test_same_seed_same_mesh(category):
    a, pa = make_builtin_mesh(category, np.random.default_rng(123))
    b, pb = make_builtin_mesh(category, np.random.default_rng(123))
    np.testing.assert_array_equal(a.vertices, b.vertices)
    np.testing.assert_array_equal(a.faces, b.faces)
    np.testing.assert_array_equal(a.visual.face_colors, b.visual.face_colors)
    assert pa == pb


@pytest.mark.parametrize("category", BUILTIN_CATEGORIES)
def test_different_seeds_differ(built, category):
    params = [built[category, seed][1] for seed in SEEDS]
    assert params[0] != params[1] != params[2] != params[0]
    meshes = [built[category, seed][0] for seed in SEEDS]
    assert not np.allclose(meshes[0].extents, meshes[1].extents)


def _colors(asset) -> set[tuple[int, ...]]:
    return {tuple(int(v) for v in c[:3]) for c in asset.mesh.visual.face_colors}


@pytest.mark.parametrize(("category", "seed"), CASES)
def test_colours_survive_make_asset(built, category, seed):
    raw, params, asset = built[category, seed]
    assert asset.mesh.visual.kind == "face"
    colors = asset.mesh.visual.face_colors
    assert colors.dtype == np.uint8 and colors.shape == (len(asset.mesh.faces), 4)
    assert (colors[:, 3] == 255).all()
    np.testing.assert_array_equal(colors, raw.visual.face_colors)
    expected = {tuple(c) for c in params["colors"].values()}
    assert _colors(asset) <= expected
    minimum = {"bottle": 2, "bowl": 1, "camera": 4, "can": 3, "laptop": 3, "mug": 1}[category]
    assert len(_colors(asset)) >= min(minimum, len(expected))


@pytest.mark.parametrize("seed", SEEDS)
def test_colour_regions(built, seed):
    # can: metallic ends, the label (with its stripe) on the straight wall
    can, params, _ = built["can", seed]
    y = can.triangles_center[:, 1]
    colors = [tuple(int(v) for v in c[:3]) for c in can.visual.face_colors]
    ends, label, stripe = (tuple(params["colors"][k]) for k in ("ends", "label", "stripe"))
    assert colors[int(np.argmax(y))] == ends
    assert colors[int(np.argmin(y))] == ends
    wall = (y > params["label"][0]) & (y < params["label"][1])
    in_stripe = (y > params["stripe"][0]) & (y < params["stripe"][1])
    assert {colors[i] for i in np.nonzero(wall & ~in_stripe)[0]} == {label}
    assert {colors[i] for i in np.nonzero(in_stripe)[0]} == {stripe}
    assert {colors[i] for i in np.nonzero(~wall)[0]} == {ends}
    # bottle: the cap colour on top
    bottle, params, _ = built["bottle", seed]
    top = int(np.argmax(bottle.triangles_center[:, 1]))
    assert tuple(int(v) for v in bottle.visual.face_colors[top, :3]) == tuple(params["colors"]["cap"])
    # camera: the front-most faces are the lens glass
    camera, params, _ = built["camera", seed]
    front = int(np.argmax(camera.triangles_center[:, 2]))
    assert tuple(int(v) for v in camera.visual.face_colors[front, :3]) == tuple(params["colors"]["glass"])
    # laptop: the dark display faces the user (+z) and up
    laptop, params, _ = built["laptop", seed]
    screen = (laptop.visual.face_colors[:, :3] == params["colors"]["screen"]).all(axis=1)
    area = laptop.area_faces[screen]
    normal = (laptop.face_normals[screen] * area[:, None]).sum(axis=0) / area.sum()
    assert normal[2] > 0.5 and normal[1] > 0.0
    assert area.sum() > 0.5 * params["width"] * params["depth"]


def test_unknown_category():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="'teapot'") as info:
        make_builtin_mesh("teapot", rng)
    for name in BUILTIN_CATEGORIES:
        assert name in str(info.value)
    with pytest.raises(ValueError, match="unknown built-in category 'Mug'"):
        make_builtin_object("Mug", rng)


def test_bad_arguments():
    with pytest.raises(TypeError, match="numpy.random.Generator"):
        make_builtin_mesh("can", 0)
    with pytest.raises(ValueError, match="index must be >= 0"):
        make_builtin_object("can", np.random.default_rng(0), index=-1)
    with pytest.raises(TypeError, match="index must be an int"):
        make_builtin_object("can", np.random.default_rng(0), index=1.5)
