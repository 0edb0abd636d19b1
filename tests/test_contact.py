"""The ``contact`` sampler's parts: force closure on hand-made contacts, finger overlap, grasp types from local
geometry (cylinder, thin plate, small sphere), the SDF grid against trimesh's exact distance, determinism."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh

from hoigen.grasping import ContactGraspSampler, GraspConfig, GridSDF, MeshSDF, force_closure_epsilon
from hoigen.grasping.contact import _hand_rotation, classify_approach
from hoigen.grasping.metrics import HandLinks, finger_overlap_mm
from hoigen.hands import BuiltinHand
from hoigen.hands.model import FINGER_JOINTS, FINGERS, HandParams
from hoigen.objects import BuiltinSource, make_asset

MM = 1e-3
PAD = np.array([[0.0, 0.0, 0.0], [0.0, 0.004, 0.0], [0.0, -0.002, 0.0035]])  # a finger pad's contact patch


@pytest.fixture(scope="module")
def hand():
    return BuiltinHand()


def _asset(mesh, name):
    return make_asset(
        mesh, object_id=name, source="t", category=name, class_id=0, symmetry=None, up=(0, 1, 0)
    )


# -- force closure --------------------------------------------------------------------------------------------
def test_antipodal_pinch_on_a_box_is_force_closure():
    points = np.concatenate([PAD + [0.02, 0, 0], PAD + [-0.02, 0, 0]])
    normals = np.repeat([[1.0, 0, 0], [-1.0, 0, 0]], 3, axis=0)  # outward normals of the two faces
    eps = force_closure_epsilon(points, normals, np.zeros(3), 0.05, friction=0.5)
    assert eps > 0.01
    # more friction, a firmer grasp
    assert force_closure_epsilon(points, normals, np.zeros(3), 0.05, friction=1.0) > eps


def test_two_fingers_on_one_face_are_not_force_closure():
    points = np.concatenate([PAD + [0.02, 0, 0], PAD + [0.02, 0, 0.02]])
    normals = np.repeat([[1.0, 0, 0]], 6, axis=0)
    assert force_closure_epsilon(points, normals, np.zeros(3), 0.05) == 0.0


def test_two_point_contacts_cannot_resist_torsion():
    # hard point contacts on one axis leave the twist about that axis free: not force closure
    points = np.array([[0.02, 0, 0], [-0.02, 0, 0]])
    normals = np.array([[1.0, 0, 0], [-1.0, 0, 0]])
    assert force_closure_epsilon(points, normals, np.zeros(3), 0.05) == 0.0


def test_face_centre_contacts_on_a_box_need_friction_against_twist():
    # a box held at its 6 faces' centres resists a twist only through friction: epsilon grows from ~0 with it
    normals = np.array([[1.0, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]])
    points = normals * 0.02
    assert force_closure_epsilon(points, normals, np.zeros(3), 0.05, friction=1e-6) < 1e-5
    assert force_closure_epsilon(points, normals, np.zeros(3), 0.05, friction=0.5) > 0.05


# -- finger overlap -------------------------------------------------------------------------------------------
def _links(hand):
    data = hand.data
    rest = data.v_template
    return HandLinks.from_rest(data.weights, rest, hand.rest_joints(), data.tip_vertex_ids)


def exact_overlap_mm(hand, vertices: np.ndarray, links: HandLinks) -> float:
    """Independent check with trimesh: the deepest outer vertex of one finger inside the convex hull of another
    finger's link (a link is a near-convex tube: its hull bounds the solid from outside)."""
    dominant = links.dominant
    finger_of = {j: k for k, f in enumerate(FINGERS) for j in FINGER_JOINTS[f]}
    depth = 0.0
    for j, k in finger_of.items():
        hull = trimesh.convex.convex_hull(vertices[dominant == j])
        others = np.flatnonzero(links.outer & np.isin(dominant, [i for i, m in finger_of.items() if m != k]))
        lo, hi = hull.bounds
        others = others[
            np.all((vertices[others] > lo) & (vertices[others] < hi), axis=1)
        ]  # the rest is outside
        if len(others) == 0:
            continue
        d = trimesh.proximity.signed_distance(hull, vertices[others])  # positive inside
        depth = max(depth, float(d.max()))
    return depth * 1000.0


def test_finger_overlap_is_zero_at_rest_and_seen_when_fingers_cross(hand):
    links = _links(hand)
    rest = hand.forward(HandParams.zeros())
    assert finger_overlap_mm(rest.vertices[0], rest.joints_mano[0], links) < 0.5
    # abduct the index 0.35 rad toward the middle finger: the tubes interpenetrate
    pose = np.zeros(45)
    pose[0:3] = [0.0, 0.35, 0.0]
    crossed = None
    for sign in (1.0, -1.0):
        out = hand.forward(HandParams(np.zeros(3), pose * sign, np.zeros(3), np.zeros(10)))
        ov = finger_overlap_mm(out.vertices[0], out.joints_mano[0], links)
        if crossed is None or ov > crossed[0]:
            crossed = (ov, out)
    ov, out = crossed
    assert ov > 2.0
    exact = exact_overlap_mm(hand, out.vertices[0], links)
    assert exact > 1.0 and abs(ov - exact) < 2.5  # capsules vs the links' hulls


# -- grasp types ----------------------------------------------------------------------------------------------
def test_classify_rules():
    t = np.array([0.06, 0.004, 0.2, 0.2, 0.03, 0.06, 0.06])
    e = np.array([0.015, 0.05, 0.003, 0.12, 0.012, 0.08, 0.04])
    # the last two: the middle of a box's big face (no flat hand) and its side 4 cm from an edge
    assert list(classify_approach(t, e, 0.2)) == ["power", "", "lateral", "", "power", "", "power"]
    assert classify_approach(t, e, 0.2, flat_grasps=True)[1] == "power"
    assert list(classify_approach(t[:1], e[:1], 0.05)) == ["precision"]


def _types_at(sampler, points, normals):
    t, exit_at, _ = sampler._local_geometry(np.asarray(points, float), np.asarray(normals, float))
    line = np.maximum(exit_at[:, :6], exit_at[:, 6:]).min(axis=1)
    return classify_approach(t, exit_at.min(axis=1), sampler.diagonal, exit_line=line)


def _drawn_types(sampler, seed: int) -> list[str]:
    kin = sampler._kinematics(np.zeros(10))
    return [a["type"] for a in sampler._approaches(kin, np.random.default_rng(seed), 12)]


def test_grasp_types_on_a_cylinder_a_thin_plate_and_a_small_sphere(hand):
    config = GraspConfig(candidates=4)
    cylinder = _asset(trimesh.creation.cylinder(radius=0.03, height=0.15, sections=64), "cylinder")
    s = ContactGraspSampler(cylinder, hand, config)
    assert list(_types_at(s, [[0.03, 0, 0], [0, 0.03, 0.02]], [[1, 0, 0], [0, 1, 0]])) == ["power", "power"]
    drawn = _drawn_types(s, 0)
    assert drawn.count("power") >= 0.75 * len(drawn)
    g = s.sample(np.random.default_rng(0))
    assert g.metrics["grasp_type"] == "power"

    plate = _asset(trimesh.creation.box((0.16, 0.004, 0.16)), "plate")
    s = ContactGraspSampler(plate, hand, config)
    # its face: no flat hand; its rim: lateral
    assert list(_types_at(s, [[0.0, 0.002, 0.0], [0.08, 0.0, 0.01]], [[0, 1, 0], [1, 0, 0]])) == [
        "",
        "lateral",
    ]
    kin = s._kinematics(np.zeros(10))
    approaches = s._approaches(kin, np.random.default_rng(1), 24)
    lateral = [a for a in approaches if a["type"] == "lateral"]
    wraps = [a for a in approaches if a["type"] != "lateral"]
    assert lateral and wraps
    # never a flat hand on the face: lateral pinches at the rim (approach points within 1 cm of the plate's edge)
    # and, from a face within 3 cm of the rim, power wraps of the rim (the palm on the face moved back so the
    # fingers' middle joints are over the edge)
    assert all(np.abs(a["point"][[0, 2]]).max() > 0.07 for a in lateral)
    assert all(a["type"] == "power" and abs(a["normal"][1]) > 0.99 and a["edge_mm"] <= 30.0 for a in wraps)
    for a in wraps:  # the middle joints (pip_reach ahead of the palm point along the fingers) are at the rim
        fingers = _hand_rotation(kin, a["normal"], a["roll"]) @ kin.forward
        pip = a["point"] + fingers * kin.pip_reach
        assert abs(np.abs(pip[[0, 2]]).max() - 0.08) < 0.015, (a, pip)
    assert s.rejected.get("flat face of a thin part", 0) > 0

    sphere = _asset(trimesh.creation.icosphere(subdivisions=4, radius=0.02), "sphere")
    s = ContactGraspSampler(sphere, hand, config)
    assert list(_types_at(s, [[0.02, 0, 0]], [[1, 0, 0]])) == ["precision"]
    assert set(_drawn_types(s, 2)) == {"precision"}


# -- SDF grid ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def mug():
    return BuiltinSource(("mug",)).object_for(0, np.random.default_rng([0, 1]))


def test_mesh_sdf_matches_trimesh_exact(mug):
    rng = np.random.default_rng(0)
    pts, _ = trimesh.sample.sample_surface(mug.mesh, 600, seed=1)
    q = pts + rng.normal(0.0, 0.004, pts.shape)
    exact = -trimesh.proximity.signed_distance(mug.mesh, q)
    d, closest, normals = MeshSDF(mug.mesh).closest(q)
    assert np.abs(d - exact).max() < 0.05 * MM  # trimesh itself is exact to a few 0.01 mm
    np.testing.assert_allclose(np.linalg.norm(normals, axis=1), 1.0, atol=1e-9)
    np.testing.assert_allclose(np.linalg.norm(q - closest, axis=1), np.abs(d), atol=1e-9)


def test_grid_sdf_error_against_trimesh_and_lower_bound_beyond_the_band(mug):
    grid = GridSDF(mug.mesh, spacing=0.001, band=0.004)
    rng = np.random.default_rng(2)
    pts, _ = trimesh.sample.sample_surface(mug.mesh, 1500, seed=3)
    q = pts + rng.normal(0.0, 0.006, pts.shape)
    exact = -trimesh.proximity.signed_distance(mug.mesh, q)
    got = grid(q)
    near = np.abs(exact) < 0.002
    err = np.abs(got - exact)[near]
    assert near.sum() > 300
    assert np.median(err) < 0.02 * MM and np.percentile(err, 99) < 0.5 * MM and err.max() < 0.8 * MM
    # beyond the band: a lower bound of |d| with the right sign
    far = np.abs(exact) > 0.006
    assert (np.abs(got[far]) <= np.abs(exact[far]) + 0.02 * MM).all()
    assert (np.sign(got[far]) == np.sign(exact[far])).all()
    # exact queries (metrics) agree with trimesh within the band
    d, _, _ = grid.closest(q)
    assert np.abs(d - exact)[near].max() < 0.05 * MM


def test_grid_super_bricks_bound_far_queries_with_one_exact_distance_each(mug):
    """Centimetres out (where a sliding hand spends most queries) the super-brick bound answers: a lower bound of
    |d| with the right sign, within two super-brick half-diagonals of the exact distance, and the fine bricks'
    centres are not asked there."""
    grid = GridSDF(mug.mesh, spacing=0.001, band=0.0015, fill=False)  # exact within the band, as the sampler
    rng = np.random.default_rng(6)
    pts, normals = trimesh.sample.sample_surface(mug.mesh, 600, seed=7)
    normals = mug.mesh.face_normals[normals]
    q = pts + normals * rng.uniform(0.02, 0.035, (len(pts), 1))
    exact = MeshSDF(mug.mesh)(q)
    got = grid(q)
    far = exact > 0.018  # beyond every super-brick's reach from a surface point near it
    assert far.sum() > 200
    assert (got[far] > 0).all() and (got[far] <= exact[far] + 1e-12).all()
    reach = np.sqrt(3) * GridSDF.BRICK * GridSDF.SUPER * grid.spacing  # two half-diagonals
    assert (exact[far] - got[far] <= reach).all()
    assert np.isnan(grid._centre_d).mean() > 0.99  # the fine level hardly touched
    # near the surface the exact values, as before
    near_q = pts + normals * rng.normal(0.0, 0.002, (len(pts), 1))
    e = MeshSDF(mug.mesh)(near_q)
    g = grid(near_q)
    close = np.abs(e) < 0.0015
    np.testing.assert_allclose(g[close], e[close], atol=1e-9)
    assert (np.sign(g) == np.sign(e))[np.abs(e) > 1e-5].all()


def test_grid_values_do_not_depend_on_query_order(mug):
    rng = np.random.default_rng(4)
    pts, _ = trimesh.sample.sample_surface(mug.mesh, 800, seed=5)
    q = pts + rng.normal(0.0, 0.003, pts.shape)
    a = GridSDF(mug.mesh)
    first = a(q)
    b = GridSDF(mug.mesh)
    b(q[::-1][:300] + 0.001)  # other bricks filled first
    np.testing.assert_array_equal(b(q[::-1])[::-1], first)
    np.testing.assert_array_equal(a(q), first)


def test_a_reused_sampler_gives_the_same_grasp_as_a_fresh_one(hand, mug):
    config = GraspConfig(candidates=4)
    warm = ContactGraspSampler(mug, hand, config)
    warm.sample(np.random.default_rng([5, 0]))  # fills the grid elsewhere first
    a = warm.sample(np.random.default_rng([5, 1]))
    b = ContactGraspSampler(mug, hand, config).sample(np.random.default_rng([5, 1]))
    for name in ("global_orient", "hand_pose", "transl", "betas"):
        assert getattr(a.params, name).tobytes() == getattr(b.params, name).tobytes()
    assert a.metrics == b.metrics


def test_grid_config_is_validated():
    for kwargs in ({"grid_spacing_mm": 0.0}, {"friction": -1.0}, {"max_finger_overlap_mm": 0.0}):
        with pytest.raises(ValueError):
            GraspConfig(**kwargs)
    with pytest.raises(ValueError, match="contact-v1"):
        GraspConfig(method="contact-v3")
    with pytest.raises(ValueError, match="fallback_force_closure"):
        GraspConfig(min_force_closure=0.02, fallback_force_closure=0.05)
    with pytest.raises(ValueError, match="press_mm"):
        GraspConfig(press_mm=6.0)


# -- gate: squeeze, relaxed force closure, early rejection ---------------------------------------------------------
def test_force_closure_gate_relaxes_only_after_half_the_attempts(hand):
    metrics = {
        "max_penetration_mm": 1.0,
        "num_fingers_in_contact": 5,
        "thumb_contact": True,
        "thumb_opposition": 0.9,
        "finger_overlap_mm": 0.0,
        "force_closure": 0.03,
    }
    config = GraspConfig()
    assert not config.passes(metrics) and config.passes(metrics, relaxed=True)
    # an unreachable strict gate: the grasp comes from the relaxed second half, and says so
    cylinder = _asset(trimesh.creation.cylinder(radius=0.03, height=0.15, sections=64), "cylinder")
    config = GraspConfig(candidates=4, max_attempts=2, min_force_closure=5.0, fallback_force_closure=0.01)
    g = ContactGraspSampler(cylinder, hand, config).sample(np.random.default_rng(0))
    assert g.metrics["gate_relaxed"] is True and g.attempts == 8
    assert g.metrics["force_closure"] >= 0.01
    # ``fallback_after`` strict attempts, then the relaxed gate (never later than half of max_attempts)
    config = GraspConfig(
        candidates=4, max_attempts=6, fallback_after=1, min_force_closure=5.0, fallback_force_closure=0.01
    )
    assert config.fallback_start() == 1 and GraspConfig(max_attempts=2, fallback_after=5).fallback_start() == 1
    g = ContactGraspSampler(cylinder, hand, config).sample(np.random.default_rng(0))
    assert g.metrics["gate_relaxed"] is True and g.attempts == 8
    with pytest.raises(ValueError, match="fallback_after"):
        GraspConfig(fallback_after=-1)


def test_early_rejection_never_drops_a_candidate_the_gate_passes(hand):
    obj = BuiltinSource(("mug",)).object_for(0, np.random.default_rng([3, 0]))
    config = GraspConfig(candidates=8, min_thumb_opposition=-1.0, min_force_closure=0.0, fallback_force_closure=0.0)
    s = ContactGraspSampler(obj, hand, config)
    rng = np.random.default_rng(4)
    kin = s._kinematics(np.zeros(10))
    judged = rejected = 0
    for _ in range(2):
        for params, _approach in s._candidates(kin, s._approaches(kin, rng, 8), rng):
            may = s._enough_contacts(kin, kin.vertices_of(params))
            m = s._evaluate(kin, params)
            counts_ok = m["num_fingers_in_contact"] >= config.min_fingers_in_contact and m["thumb_contact"]
            assert may == counts_ok, (may, m["num_fingers_in_contact"], m["thumb_contact"])
            judged += 1
            rejected += not may
    assert judged >= 8


def test_fingers_squeeze_by_press_mm(hand, mug):
    """The closing stops once a finger link presses ``press_mm`` into the surface: the same approaches closed with
    2 mm instead of 0.2 mm go about 1.8 mm deeper (before any back-off), and no grasp passes the penetration gate."""
    depth = {}
    for press in (0.2, 2.0):
        s = ContactGraspSampler(mug, hand, GraspConfig(candidates=8, press_mm=press))
        rng = np.random.default_rng(3)
        kin = s._kinematics(np.zeros(10))
        closed = s._candidates(kin, s._approaches(kin, rng, 24), rng)
        rows = []
        for params, _ in closed:
            d = s.sdf.exact(kin.vertices_of(params))
            rows.append([-d[kin.labels == k].min() * 1000.0 for k in range(1, 6)])
        depth[press] = np.array(rows)
    assert depth[0.2].shape == depth[2.0].shape and len(depth[2.0]) >= 4
    both = (depth[0.2] > -0.5) & (depth[2.0] > -0.5)  # fingers touching in both closings
    assert both.sum() >= 10
    gain = depth[2.0][both] - depth[0.2][both]
    assert 1.2 < np.median(gain) < 2.2, gain
    assert depth[2.0].max() <= GraspConfig().max_penetration_mm + 1.0


def test_probe_positions_are_the_dominant_joints_rigid_skinning(hand):
    """The per-joint product gives each probe vertex its dominant joint's rigid transform, in the order asked --
    for the link-grouped finger probes and for the strided hand probes (not grouped by joint)."""
    from hoigen.geometry.rotations import axis_angle_to_matrix
    from hoigen.grasping.contact import _SynergyKinematics
    from hoigen.hands.lbs import joint_transforms

    kin = _SynergyKinematics(hand, np.random.default_rng(0).normal(0.0, 0.5, 10))
    rng = np.random.default_rng(1)
    rot = axis_angle_to_matrix(rng.normal(0.0, 0.4, (3, 16, 3)))
    transl = rng.normal(0.0, 0.05, (3, 3))
    world = joint_transforms(kin.data.parents, rot, np.broadcast_to(kin.rest_j, (3, 16, 3)))
    for ids in (kin.finger_probe, kin.hand_probe, kin.thumb_probe, np.array([40, 7, 3000, 7])):
        j = kin.dominant[ids]
        r, t = world[:, j][..., :3, :3], world[:, j][..., :3, 3]
        want = np.einsum("bpcd,pd->bpc", r, kin.rest_vertices[ids] - kin.rest_j[0, j]) + t + transl[:, None]
        got = kin.probe_positions(rot, transl, ids)
        assert got.shape == (3, len(ids), 3)
        np.testing.assert_allclose(got, want, atol=1e-12)


def test_back_off_reuses_and_returns_the_distances_it_asked(hand, mug):
    """Given the settled hand's distances the back-off does what it does without them, and the distances it
    returns are ``sdf.closest`` of the params it returns (None when its last step was not checked)."""
    from hoigen.grasping.contact import back_off_penetration

    s = ContactGraspSampler(mug, hand, GraspConfig())
    kin = s._kinematics(np.zeros(10))
    rng = np.random.default_rng(3)
    params, _ = s._candidates(kin, s._approaches(kin, rng, 16), rng, keep=1)[0]
    deep = HandParams(params.global_orient, params.hand_pose * 1.25, params.transl, params.betas)  # squeeze
    near = s.sdf.closest(kin.vertices_of(deep))
    assert near[0].min() < -0.002
    plain = back_off_penetration(deep, kin.vertices_of, s.sdf, kin.labels)
    again, last = back_off_penetration(
        deep, kin.vertices_of, s.sdf, kin.labels, distances=near, with_distances=True
    )
    np.testing.assert_array_equal(plain.hand_pose, again.hand_pose)
    np.testing.assert_array_equal(plain.transl, again.transl)
    if last is not None:
        for a, b in zip(last, s.sdf.closest(kin.vertices_of(again))):
            np.testing.assert_array_equal(a, b)
    assert not np.array_equal(again.hand_pose, deep.hand_pose)  # it did open a finger
