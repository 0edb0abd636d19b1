"""SurfaceSDF against analytic signed distances (sphere, box), trimesh's exact mesh distance, determinism and
open (non-watertight) meshes."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh
from scipy.spatial import cKDTree

from hoigen.grasping.sdf import SurfaceSDF, stratified_surface_samples

MM = 1e-3
RADIUS = 0.05
HALF = np.array([0.05, 0.03, 0.02])  # box half extents, metres


@pytest.fixture(scope="module")
def sphere():
    return trimesh.creation.icosphere(subdivisions=5, radius=RADIUS)


@pytest.fixture(scope="module")
def sphere_sdf(sphere):
    return SurfaceSDF(sphere)


@pytest.fixture(scope="module")
def box():
    return trimesh.creation.box(extents=2.0 * HALF)


@pytest.fixture(scope="module")
def box_sdf(box):
    return SurfaceSDF(box)


def sphere_points(rng, n, lo, hi):
    direction = rng.normal(size=(n, 3))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    radius = rng.uniform(lo, hi, size=n)
    return direction * radius[:, None], radius


def box_sdf_analytic(points: np.ndarray) -> np.ndarray:
    """Exact signed distance to the axis-aligned box with half extents HALF (negative inside)."""
    q = np.abs(points) - HALF
    outside = np.linalg.norm(np.maximum(q, 0.0), axis=1)
    inside = np.minimum(q.max(axis=1), 0.0)
    return outside + inside


def test_sphere_near_surface_matches_the_analytic_sdf(sphere_sdf):
    rng = np.random.default_rng(0)
    points, radius = sphere_points(rng, 20000, RADIUS - 0.01, RADIUS + 0.01)
    got = sphere_sdf(points)
    assert got.shape == (20000,)
    # faceting of a level-5 icosphere (edges ~1.6 mm) is below 0.01 mm, so |p| - r is the truth here
    err = np.abs(got - (radius - RADIUS))
    assert err.max() < 0.5 * MM
    assert np.median(err) < 0.05 * MM
    # the sign is right wherever the point is not within a hair of the surface
    clear = np.abs(radius - RADIUS) > 0.05 * MM
    np.testing.assert_array_equal(np.sign(got[clear]), np.sign(radius[clear] - RADIUS))


def test_sphere_near_surface_matches_trimesh_exact_distance(sphere, sphere_sdf):
    rng = np.random.default_rng(1)
    points, _ = sphere_points(rng, 400, RADIUS - 0.01, RADIUS + 0.01)
    # trimesh: positive inside, so flip to the SDF convention (negative inside)
    exact = -trimesh.proximity.signed_distance(sphere, points)
    assert np.abs(sphere_sdf(points) - exact).max() < 0.5 * MM


def test_sphere_deep_and_far(sphere_sdf):
    rng = np.random.default_rng(2)
    deep, r_deep = sphere_points(rng, 2000, 0.0, RADIUS - 0.02)
    far, r_far = sphere_points(rng, 2000, RADIUS + 0.02, 0.3)
    for points, radius in ((deep, r_deep), (far, r_far)):
        got = sphere_sdf(points)
        np.testing.assert_array_equal(np.sign(got), np.sign(radius - RADIUS))
        assert np.abs(got - (radius - RADIUS)).max() < 3 * MM
    # the centre is exactly one radius deep (up to faceting and sampling)
    assert sphere_sdf(np.zeros((1, 3)))[0] == pytest.approx(-RADIUS, abs=0.5 * MM)


def test_query_returns_the_nearest_sample_and_keeps_shape(sphere_sdf):
    rng = np.random.default_rng(3)
    points, _ = sphere_points(rng, 60, RADIUS - 0.005, RADIUS + 0.005)
    grid = points.reshape(3, 4, 5, 3)
    dist, idx = sphere_sdf.query(grid)
    assert dist.shape == (3, 4, 5) and idx.shape == (3, 4, 5)
    np.testing.assert_array_equal(dist, sphere_sdf(grid))
    # near the surface the index is the exact nearest neighbour among all samples (brute force)
    flat = points
    brute = np.argmin(((flat[:, None, :] - sphere_sdf.points[None, ::1]) ** 2).sum(-1), axis=1)
    np.testing.assert_allclose(
        np.linalg.norm(flat - sphere_sdf.points[idx.reshape(-1)], axis=1),
        np.linalg.norm(flat - sphere_sdf.points[brute], axis=1),
        atol=1e-15,
    )


def test_box_near_surface_matches_the_analytic_sdf(box_sdf):
    rng = np.random.default_rng(4)
    # points in a shell of +-1 cm around the box surface, corners and edges included
    candidates = rng.uniform(-(HALF + 0.01), HALF + 0.01, size=(60000, 3))
    truth = box_sdf_analytic(candidates)
    near = np.abs(truth) < 0.01
    points, truth = candidates[near], truth[near]
    assert len(points) > 10000
    got = box_sdf(points)
    # error within the sample spacing (about 0.5 mm), edges and corners included
    assert np.abs(got - truth).max() < 0.6 * MM
    assert np.median(np.abs(got - truth)) < 0.05 * MM
    # the sign is right wherever the point is farther from the surface than the sample spacing
    inside, outside = truth < -box_sdf.spacing, truth > box_sdf.spacing
    assert inside.sum() > 1000 and outside.sum() > 1000
    assert (got[inside] < 0).all()
    assert (got[outside] > 0).all()


@pytest.mark.parametrize("height", [0.002, 0.003, 0.005, 0.008])
@pytest.mark.parametrize("below", [0.0, 0.01 * MM, 0.1 * MM, 0.4 * MM])
def test_box_outside_a_convex_edge_is_outside(box_sdf, height, below):
    # points over the +x face just below the +z edge: the nearest surface sample may lie on the +z face, whose
    # tangent plane the point is (barely) under; the field must still say "outside by `height`"
    y = np.linspace(-HALF[1] + 0.001, HALF[1] - 0.001, 301)
    points = np.column_stack([np.full_like(y, HALF[0] + height), y, np.full_like(y, HALF[2] - below)])
    got = box_sdf(points)
    assert (got > 0).all()
    np.testing.assert_allclose(got, height, atol=0.5 * MM)


def test_reflex_edge_of_an_l_shaped_solid():
    # an L: a 8 x 2 cm bar (y in [-2, 0] cm) and a 2 x 8 cm bar (x in [-4, -2] cm), both 4 cm deep in z; the
    # re-entrant edge runs along z at x = -2 cm, y = 0
    bar = trimesh.creation.box(extents=(0.08, 0.02, 0.04))
    bar.apply_translation((0.0, -0.01, 0.0))
    post = trimesh.creation.box(extents=(0.02, 0.08, 0.04))
    post.apply_translation((-0.03, 0.02, 0.0))
    solid = trimesh.boolean.union([bar, post], engine="manifold")
    assert solid.is_watertight
    assert solid.volume == pytest.approx(
        0.08 * 0.02 * 0.04 + 0.02 * 0.06 * 0.04, rel=1e-6
    )  # manifold rounds to float32
    sdf = SurfaceSDF(solid)
    rng = np.random.default_rng(10)
    n = 1500
    points = np.column_stack(
        [-0.02 + rng.uniform(-0.006, 0.006, n), rng.uniform(-0.006, 0.006, n), rng.uniform(-0.015, 0.015, n)]
    )
    exact = -trimesh.proximity.signed_distance(solid, points)
    got = sdf(points)
    assert np.abs(got - exact).max() < 0.6 * MM
    clear = np.abs(exact) > sdf.spacing
    np.testing.assert_array_equal(np.sign(got[clear]), np.sign(exact[clear]))


def test_box_deep_and_far(box_sdf):
    rng = np.random.default_rng(5)
    deep = rng.uniform(-(HALF - 0.012), HALF - 0.012, size=(3000, 3))
    far = rng.uniform(-0.3, 0.3, size=(20000, 3))
    far = far[box_sdf_analytic(far) > 0.02][:3000]
    for points in (deep, far):
        truth = box_sdf_analytic(points)
        got = box_sdf(points)
        np.testing.assert_array_equal(np.sign(got), np.sign(truth))
        assert np.abs(got - truth).max() < 3 * MM
    # the centre is as deep as the half thickness
    assert box_sdf(np.zeros((1, 3)))[0] == pytest.approx(-HALF.min(), abs=0.5 * MM)


def test_box_sdf_is_exact_on_face_normals(box_sdf):
    # straight out of the middle of each face the nearest sample lies on that face: the tangent-plane distance is
    # exact to rounding
    for axis in range(3):
        for sign in (-1.0, 1.0):
            for offset in (-0.008, -0.002, 0.001, 0.006):
                p = np.zeros((1, 3))
                p[0, axis] = sign * (HALF[axis] + offset)
                assert box_sdf(p)[0] == pytest.approx(offset, abs=1e-12)


def test_samples_cover_the_surface_at_the_requested_spacing(box):
    points, normals, spacing = stratified_surface_samples(box, 0.001)
    assert spacing == pytest.approx(np.sqrt(box.area / len(points)))
    assert 0.8 * MM < spacing < 1.2 * MM
    # every sample lies on the surface with a unit normal
    np.testing.assert_allclose(np.abs(box_sdf_analytic(points)), 0.0, atol=1e-15)
    np.testing.assert_allclose(np.linalg.norm(normals, axis=1), 1.0, atol=1e-12)
    # no surface point is far from a sample: the covering radius is close to the spacing
    probe, _ = trimesh.sample.sample_surface(box, 2000, seed=7)
    gap, _ = cKDTree(points).query(probe)
    assert gap.max() < 1.5 * spacing


def test_deterministic_and_free_of_global_random_state(sphere):
    np.random.seed(1)  # noqa: NPY002 - the legacy global state must not matter
    a = SurfaceSDF(sphere)
    np.random.seed(2)  # noqa: NPY002
    b = SurfaceSDF(sphere)
    np.testing.assert_array_equal(a.points, b.points)
    np.testing.assert_array_equal(a.normals, b.normals)
    assert a.spacing == b.spacing
    rng = np.random.default_rng(8)
    query, _ = sphere_points(rng, 500, 0.0, 0.2)
    da, ia = a.query(query)
    db, ib = b.query(query)
    np.testing.assert_array_equal(da, db)
    np.testing.assert_array_equal(ia, ib)


def test_open_mesh_near_the_remaining_surface(box):
    # remove the two triangles of the +z face: the mesh is an open box
    top = np.flatnonzero(np.isclose(box.face_normals[:, 2], 1.0))
    assert len(top) == 2
    keep = np.setdiff1d(np.arange(len(box.faces)), top)
    open_box = trimesh.Trimesh(box.vertices.copy(), box.faces[keep].copy(), process=False)
    assert not open_box.is_watertight
    sdf = SurfaceSDF(open_box)
    rng = np.random.default_rng(9)
    candidates = rng.uniform(-(HALF + 0.006), HALF + 0.006, size=(60000, 3))
    truth = box_sdf_analytic(candidates)
    # within 5 mm of the surface, at least 1 cm below the missing face, and nearer a remaining face than the
    # missing one (inside, the distance to the missing face is HALF_z - z)
    keep_pts = (np.abs(truth) < 0.005) & (candidates[:, 2] < HALF[2] - 0.01)
    points, truth = candidates[keep_pts], truth[keep_pts]
    assert len(points) > 5000
    got = sdf(points)
    assert np.abs(got - truth).max() < 0.6 * MM
    clear = np.abs(truth) > sdf.spacing
    np.testing.assert_array_equal(np.sign(got[clear]), np.sign(truth[clear]))


def test_spacing_must_be_positive(box):
    for spacing in (0.0, -0.001):
        with pytest.raises(ValueError, match="spacing"):
            SurfaceSDF(box, spacing=spacing)
