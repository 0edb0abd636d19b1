"""Contact grasps: the quality gate holds on the built-in categories, the YCB samples and a MANO-shaped hand;
metrics (penetration, contacts, finger overlap) are re-checked independently with trimesh; the same seed gives the
same grasp; the baseline ``contact-v1`` stays selectable."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import trimesh
from test_contact import exact_overlap_mm

from hoigen.grasping import (
    ContactGraspSampler,
    ContactV1Sampler,
    GraspConfig,
    GraspError,
    SurfaceSDF,
    grasp_metrics,
    sample_contact_grasp,
)
from hoigen.grasping.metrics import HandLinks
from hoigen.hands import BuiltinHand, load_hand
from hoigen.hands.lbs import shaped_rest
from hoigen.hands.model import FINGERS, HandParams
from hoigen.objects import BuiltinSource, FolderSource, make_asset

YCB = Path(__file__).resolve().parents[2] / "shared" / "data" / "ycb"
CATEGORIES = ("bottle", "bowl", "camera", "can", "laptop", "mug")


@pytest.fixture(scope="module")
def hand():
    return BuiltinHand()


def _check_grasp(g, obj, hand, config: GraspConfig):
    """Re-derive the gate from the posed mesh with trimesh's exact signed distance, not the sampler's SDF."""
    verts = hand.forward(g.params).vertices[0]
    exact = -trimesh.proximity.signed_distance(obj.mesh, verts)  # trimesh: positive inside
    labels = hand.part_labels
    depth_mm = max(0.0, -exact.min()) * 1000.0
    assert depth_mm <= config.max_penetration_mm + 0.5, f"{obj.id}: penetration {depth_mm:.2f} mm"
    in_contact = {f for k, f in enumerate(FINGERS) if exact[labels == k + 1].min() <= 0.0035}
    assert "thumb" in in_contact, f"{obj.id}: thumb not in contact ({in_contact})"
    assert len(in_contact) >= 3, f"{obj.id}: only {sorted(in_contact)} in contact"
    assert g.metrics["num_fingers_in_contact"] >= config.min_fingers_in_contact
    assert g.metrics["thumb_opposition"] >= config.min_thumb_opposition
    assert g.passed >= 1 and g.attempts >= g.passed
    if g.method == "contact":
        rest_v, rest_j = shaped_rest(hand.data, g.params.betas[0])
        links = HandLinks.from_rest(hand.data.weights, rest_v, rest_j, hand.data.tip_vertex_ids)
        assert g.metrics["finger_overlap_mm"] <= config.max_finger_overlap_mm
        assert exact_overlap_mm(hand, verts, links) <= config.max_finger_overlap_mm + 1.0
        floor = config.fallback_force_closure if g.metrics["gate_relaxed"] else config.min_force_closure
        assert g.metrics["force_closure"] >= floor
        assert g.metrics["grasp_type"] in ("power", "precision", "lateral")


@pytest.mark.parametrize("category", CATEGORIES)
def test_builtin_categories_get_gated_grasps(category, hand):
    obj = BuiltinSource((category,)).object_for(0, np.random.default_rng([7, 0]))
    config = GraspConfig()
    g = ContactGraspSampler(obj, hand, config).sample(np.random.default_rng([7, 1]))  # the open laptop too
    assert g.method == "contact" and g.hand == hand.name and g.object_id == obj.id
    _check_grasp(g, obj, hand, config)


@pytest.mark.ycb
@pytest.mark.parametrize("name", ["013_apple", "025_mug", "031_spoon"])
def test_ycb_objects_get_gated_grasps(name, hand):
    if not (YCB / name).is_dir():
        pytest.skip(f"YCB sample {name} not found in {YCB}")
    source = FolderSource(YCB)
    obj = source.load([e.id for e in source.entries].index(name))
    config = GraspConfig()
    g = ContactGraspSampler(obj, hand, config).sample(np.random.default_rng([7, 2]))
    _check_grasp(g, obj, hand, config)


def test_same_seed_same_grasp_different_seed_different(hand):
    obj = BuiltinSource(("can",)).object_for(0, np.random.default_rng(3))
    config = GraspConfig(candidates=4)
    a = ContactGraspSampler(obj, hand, config).sample(np.random.default_rng([1, 2]))
    b = ContactGraspSampler(obj, hand, config).sample(np.random.default_rng([1, 2]))
    c = ContactGraspSampler(obj, hand, config).sample(np.random.default_rng([1, 3]))
    for name in ("global_orient", "hand_pose", "transl", "betas"):
        assert getattr(a.params, name).tobytes() == getattr(b.params, name).tobytes()
    assert a.metrics == b.metrics
    assert not np.allclose(a.params.transl, c.params.transl)


@pytest.mark.skipif(
    importlib.util.find_spec("smplx") is None or importlib.util.find_spec("torch") is None,
    reason="needs torch and smplx (pip install hoigen[mano])",
)
def test_mano_shaped_hand_grasps(tmp_path):
    """The same sampler drives a MANO model (a synthetic MANO-shaped file, never the licensed one)."""
    from hoigen.hands.synthetic import write_synthetic_mano

    write_synthetic_mano(tmp_path / "MANO_RIGHT.pkl", np.random.default_rng(0))
    mano = load_hand("mano", tmp_path)
    obj = BuiltinSource(("bottle",)).object_for(0, np.random.default_rng(5))
    config = GraspConfig()
    g = ContactGraspSampler(obj, mano, config).sample(np.random.default_rng([2, 0]))
    assert g.hand == "mano"
    _check_grasp(g, obj, mano, config)


def test_metrics_on_a_known_configuration(hand):
    """A flat hand pressed 2 mm into a slab: penetration 2 mm, palm in contact, no opposition."""
    slab = trimesh.creation.box((0.4, 0.02, 0.4))
    obj = make_asset(
        slab, object_id="slab", source="t", category="slab", class_id=0, symmetry=None, up=(0, 1, 0)
    )
    sdf = SurfaceSDF(obj.mesh)
    rest = hand.forward(HandParams.zeros()).vertices[0]
    # palm faces -y: put the lowest vertex 2 mm below the slab's top face (y = 0.01)
    shift = 0.01 - 0.002 - rest[:, 1].min()
    verts = rest + np.array([0.0, shift, 0.0])
    m = grasp_metrics(verts, hand.faces, hand.part_labels, sdf, 0.003)
    assert m["max_penetration_mm"] == pytest.approx(2.0, abs=0.05)
    assert m["palm_contact"] or m["num_fingers_in_contact"] > 0
    assert m["thumb_opposition"] <= 0.0 + 1e-9
    assert m["intersection_volume_cm3"] > 0.0


def test_gate_failure_is_a_clear_error(hand):
    obj = BuiltinSource(("can",)).object_for(0, np.random.default_rng(0))
    impossible = GraspConfig(
        candidates=2, max_attempts=1, min_fingers_in_contact=5, min_thumb_opposition=0.999
    )
    with pytest.raises(GraspError, match="quality gate") as info:
        ContactGraspSampler(obj, hand, impossible).sample(np.random.default_rng(0))
    assert info.value.candidates == 2


def test_contact_v1_stays_selectable(hand):
    obj = BuiltinSource(("can",)).object_for(0, np.random.default_rng([7, 0]))
    config = GraspConfig(method="contact-v1")
    g = sample_contact_grasp(obj, hand, config, np.random.default_rng([7, 1]))
    assert g.method == "contact-v1"
    _check_grasp(g, obj, hand, config)
    same = ContactV1Sampler(obj, hand, config).sample(np.random.default_rng([7, 1]))
    assert same.params.hand_pose.tobytes() == g.params.hand_pose.tobytes()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"method": "diffusion"}, "'contact', 'contact-v1' or 'grabnet'"),
        ({"candidates": 0}, "candidates"),
        ({"max_penetration_mm": -1.0}, "max_penetration_mm"),
        ({"min_fingers_in_contact": 6}, "min_fingers_in_contact"),
        ({"edge_bias": 1.5}, "edge_bias"),
    ],
)
def test_grasp_config_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GraspConfig(**kwargs)
