"""The MuJoCo hold test: its controls (no hand: falls; boxed in: held), the collision shell's deviation from the
surface, and a grasp run end to end."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import trimesh

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("mujoco") is None, reason="needs MuJoCo (pip install 'hoigen[physics]')"
)


@pytest.fixture(scope="module")
def box():
    return trimesh.creation.box((0.05, 0.04, 0.03))


def test_no_hand_falls_in_every_direction(box):
    from hoigen.grasping.physics import HoldTest

    result = HoldTest(box, duration=0.3).control_free_fall()
    assert result["held_directions"] == 0 and not result["held"]
    assert all(r["displacement_mm"] > 20.0 for r in result["directions"])


def test_boxed_in_holds_in_every_direction(box):
    from hoigen.grasping.physics import HoldTest

    result = HoldTest(box, duration=0.3).control_boxed()
    assert result["held_directions"] == 6 and result["held"]
    assert all(r["displacement_mm"] < 2.0 for r in result["directions"])
    assert result["deviation_mm"] <= 0.5


def test_shell_of_a_thin_wall_with_another_behind_it_stays_within_half_a_millimetre():
    """A 0.5 mm wall 1.2 mm in front of a 5 mm one: an inset of the front face by the default 3 mm ends 1.3 mm deep
    in the back wall, so checking only its end would build prisms bridging the gap (0.6 mm from both walls in its
    middle); the whole inset is checked."""
    from hoigen.grasping.physics import shell_pieces

    front = trimesh.creation.box((0.06, 0.0005, 0.06))
    back = trimesh.creation.box((0.06, 0.005, 0.06))
    back.apply_translation((0.0, -0.00395, 0.0))
    walls = trimesh.util.concatenate([front, back])
    pieces, deviation = shell_pieces(walls)
    assert deviation <= 0.0005
    gap = np.array([[x, -0.00085, z] for x in (-0.02, 0.0, 0.02) for z in (-0.02, 0.0, 0.02)])
    for p in pieces:  # nothing of the gap between the walls is inside a piece
        hull = trimesh.convex.convex_hull(p)
        assert not hull.contains(gap).any()


def test_the_inside_of_an_open_mesh_with_several_pieces_is_the_whole_mesh():
    """Scans have open fragments: behind an open sheet its own field is negative, so the union-of-closed-parts
    rule (the smallest field) would put a sheet 1 cm behind another 1 cm inside the object."""
    from hoigen.grasping.physics import _Inside

    sheet = trimesh.Trimesh([[0, 0, 0], [0.05, 0, 0], [0.05, 0.05, 0], [0, 0.05, 0]], [[0, 1, 2], [0, 2, 3]])
    behind = sheet.copy()
    behind.apply_translation((0.0, 0.0, -0.01))
    open_mesh = trimesh.util.concatenate([sheet, behind])
    assert not open_mesh.is_watertight
    np.testing.assert_allclose(_Inside(open_mesh)(open_mesh.vertices), 0.0, atol=1e-9)


def test_shell_pieces_cover_the_surface_within_half_a_millimetre():
    from hoigen.grasping.physics import shell_pieces
    from hoigen.grasping.sdf import MeshSDF

    # a bowl-like concave shape: a sphere minus a smaller offset sphere
    outer = trimesh.creation.icosphere(subdivisions=2, radius=0.05)
    inner = trimesh.creation.icosphere(subdivisions=2, radius=0.045)
    inner.apply_translation((0, 0, 0.02))
    solid = trimesh.boolean.difference([outer, inner], engine="manifold")
    pieces, deviation = shell_pieces(solid)
    assert deviation <= 0.0005
    sdf = MeshSDF(solid)
    # independent re-check: the hull of every piece stays within 0.5 mm outside the surface (trimesh's exact)
    worst = 0.0
    for p in pieces[:: max(1, len(pieces) // 20)]:
        hull = trimesh.convex.convex_hull(p)
        samples = np.concatenate([hull.vertices, hull.triangles_center])
        worst = max(worst, float((-trimesh.proximity.signed_distance(solid, samples)).max()))
    assert worst <= 0.0005 + 1e-6
    # and the surface is covered: every face centre lies inside some piece's hull
    centres = solid.triangles_center[::25]
    covered = np.zeros(len(centres), dtype=bool)
    for p in pieces:
        lo, hi = p.min(axis=0) - 1e-6, p.max(axis=0) + 1e-6
        near = np.flatnonzero(np.all((centres >= lo) & (centres <= hi), axis=1) & ~covered)
        if len(near):
            hull = trimesh.convex.convex_hull(p)
            covered[near] |= trimesh.proximity.signed_distance(hull, centres[near]) > -1e-7
    assert covered.mean() > 0.98
    assert sdf(centres).max() < 1e-9


def test_a_grasp_runs_through_the_hold_test():
    from hoigen.grasping import ContactGraspSampler, GraspConfig
    from hoigen.grasping.physics import HoldTest
    from hoigen.hands import BuiltinHand
    from hoigen.objects import make_asset

    can = trimesh.creation.cylinder(radius=0.03, height=0.12, sections=48)
    obj = make_asset(
        can, object_id="can", source="t", category="can", class_id=0, symmetry=None, up=(0, 1, 0)
    )
    hand = BuiltinHand()
    g = ContactGraspSampler(obj, hand, GraspConfig(candidates=4)).sample(np.random.default_rng(0))
    result = HoldTest(obj.mesh, duration=0.3).run(hand, g.params)
    assert 0 <= result["held_directions"] <= 6
    assert [r["direction"] for r in result["directions"]] == ["+x", "-x", "+y", "-y", "+z", "-z"]
    assert result["deviation_mm"] <= 0.5


def test_gate_physics_keeps_only_grasps_that_hold():
    from hoigen.grasping import ContactGraspSampler, GraspConfig, GraspError
    from hoigen.hands import BuiltinHand
    from hoigen.objects import make_asset

    can = trimesh.creation.cylinder(radius=0.03, height=0.12, sections=48)
    obj = make_asset(
        can, object_id="can", source="t", category="can", class_id=0, symmetry=None, up=(0, 1, 0)
    )
    config = GraspConfig(candidates=4, max_attempts=3, gate_physics=True)
    try:
        g = ContactGraspSampler(obj, BuiltinHand(), config).sample(np.random.default_rng(0))
    except GraspError as exc:  # allowed, but then it must say why
        assert "quality gate" in str(exc)
        return
    assert g.metrics["physics_held"] and g.metrics["physics_held_directions"] >= 4
