"""The built-in hand v2: one closed, oriented skin; anthropometric dimensions from the cited tables; the shape space
as documented; joints inside, tips on the skin; volume kept and no self-intersection under flexion and on accepted
contact grasps; numpy skinning equals smplx on the v2 arrays; the disk cache is deterministic."""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import trimesh
from hand_measure import finger_measures, hand_measures, self_intersections, winding_numbers

from hoigen.hands import FINGER_JOINTS, FINGERS, BuiltinHand, HandParams
from hoigen.hands import builtin_v2 as v2
from hoigen.hands.builtin_v2 import BuiltinHandV2
from hoigen.hands.lbs import lbs

HAVE_SMPLX = importlib.util.find_spec("smplx") is not None and importlib.util.find_spec("torch") is not None


@pytest.fixture(scope="module")
def hand():
    return BuiltinHandV2()


def _params(betas=None, pose=None, batch=1) -> HandParams:
    return HandParams(
        np.zeros((batch, 3)),
        np.zeros((batch, 45)) if pose is None else np.atleast_2d(pose),
        np.zeros((batch, 3)),
        np.zeros((batch, 10)) if betas is None else np.atleast_2d(betas),
    )


def _flexion_pose(
    hand, angles, fingers=("index", "middle", "ring", "pinky"), thumb=(0.0, 0.0, 0.0)
) -> np.ndarray:
    """(45,) pose turning each joint about its flexion axis (the contact sampler's: bone x palm normal)."""
    data = hand.data
    joints = data.J_regressor @ data.v_template
    tips = data.v_template[data.tip_vertex_ids]
    normal = np.cross(joints[1] - joints[7], joints[4] - joints[0])
    normal /= np.linalg.norm(normal)
    pose = np.zeros(45)
    for k, finger in enumerate(FINGERS):
        chain = FINGER_JOINTS[finger]
        values = thumb if finger == "thumb" else (angles if finger in fingers else (0.0, 0.0, 0.0))
        for i, j in enumerate(chain):
            nxt = joints[chain[i + 1]] if i < 2 else tips[k]
            axis = np.cross(nxt - joints[j], normal)
            pose[(j - 1) * 3 : j * 3] = axis / np.linalg.norm(axis) * values[i]
    return pose


@pytest.fixture(scope="module")
def grasps(hand):
    """An accepted contact grasp with v2 on a built-in mug (the SDF/contact machinery works with v2)."""
    from hoigen.grasping import ContactGraspSampler, GraspConfig
    from hoigen.objects import BuiltinSource

    out = []
    for k, category in enumerate(("mug",)):
        obj = BuiltinSource((category,)).object_for(0, np.random.default_rng([11, k]))
        config = GraspConfig()
        g = ContactGraspSampler(obj, hand, config).sample(np.random.default_rng([11, k, 1]))
        assert g.hand == "hoigen-builtin-v2" and config.passes(g.metrics)
        out.append(g)
    return out


def _volume(vertices, faces) -> float:
    return float(trimesh.Trimesh(vertices, faces, process=False).volume)


# --- the mesh ---------------------------------------------------------------------------------------------------


def test_one_closed_oriented_genus0_skin(hand):
    data = hand.data
    mesh = trimesh.Trimesh(data.v_template, data.faces, process=False)
    assert data.name == "hoigen-builtin-v2" and hand.metadata()["model"] == "hoigen-builtin-v2"
    assert 5000 <= data.num_vertices <= 10000
    assert len(mesh.split(only_watertight=False)) == 1  # no seams: palm and digits are one surface
    assert mesh.is_watertight and mesh.is_winding_consistent
    assert mesh.euler_number == 2  # a sphere's topology: no handles, no bridges between fingers
    edges = np.sort(mesh.edges, axis=1)
    assert (np.unique(edges, axis=0, return_counts=True)[1] == 2).all()  # every edge in exactly two faces
    assert 2.5e-4 < mesh.volume < 4.5e-4  # adult hand volume, m^3 (outward faces give a positive volume)
    assert mesh.area_faces.min() > 1e-10
    labels = hand.part_labels
    assert set(np.unique(labels)) == set(range(6))
    for k, vid in enumerate(data.tip_vertex_ids):
        assert labels[vid] == k + 1


def test_posed_skin_stays_closed_and_oriented(hand, grasps):
    data = hand.data
    rest = _volume(data.v_template, data.faces)
    rng = np.random.default_rng(0)
    poses = [g.params for g in grasps]
    for _ in range(3):  # the contact sampler's pre-shape and closing ranges
        angles = rng.uniform(0.0, [1.6, 1.9, 1.4])
        pose = _flexion_pose(hand, angles, thumb=rng.uniform(0.0, [0.9, 1.1, 1.4]))
        poses.append(_params(rng.normal(0.0, 0.5, 10), pose))
    for params in poses:
        verts = hand.forward(params).vertices[0]
        mesh = trimesh.Trimesh(verts, data.faces, process=False)
        assert mesh.is_watertight and mesh.is_winding_consistent
        assert 0.8 * rest < mesh.volume < 1.6 * rest  # still outward; betas scale it


# --- proportions ------------------------------------------------------------------------------------------------


def test_dimensions_match_the_cited_tables(hand):
    data = hand.data
    joints = data.J_regressor @ data.v_template
    mesh = trimesh.Trimesh(data.v_template, data.faces, process=False)
    h = hand_measures(data.v_template, joints, hand.part_labels)
    assert h["length"] == pytest.approx(v2.HAND_LENGTH, rel=0.05)
    assert h["breadth"] == pytest.approx(v2.HAND_BREADTH, rel=0.05)
    f = finger_measures(mesh, joints, hand.part_labels)
    for finger in FINGERS:
        assert f[finger]["length"] == pytest.approx(v2.FINGER_LENGTHS[finger], rel=0.05), finger
        assert f[finger]["breadth"] == pytest.approx(v2.MID_BREADTHS[finger], rel=0.05), finger
    # the published ordering: middle > ring > index > little > thumb
    lengths = [f[n]["length"] for n in ("middle", "ring", "index", "pinky", "thumb")]
    assert lengths == sorted(lengths, reverse=True)


def test_betas_act_as_documented(hand):
    data = hand.data

    def measure(k, value=1.0, fingers=False):
        betas = np.zeros(10)
        if k is not None:
            betas[k] = value
        out = hand.forward(_params(betas))
        verts, joints = out.vertices[0], out.joints_mano[0]
        res = hand_measures(verts, joints, hand.part_labels)
        if fingers:
            res["fingers"] = finger_measures(
                trimesh.Trimesh(verts, data.faces, process=False), joints, hand.part_labels
            )
        return res

    base = measure(None, fingers=True)

    def ratio(m, key):
        return m[key] / base[key]

    def finger_ratio(m, finger, key="length"):
        return m["fingers"][finger][key] / base["fingers"][finger][key]

    size = measure(0)
    assert ratio(size, "length") == pytest.approx(1.06, abs=0.01)
    assert ratio(size, "breadth") == pytest.approx(1.06, abs=0.01)
    longer = measure(1, fingers=True)
    for finger in FINGERS:
        assert 1.06 < finger_ratio(longer, finger) < 1.13, finger
    assert ratio(longer, "breadth") == pytest.approx(1.0, abs=0.01)
    wide = measure(2)
    assert ratio(wide, "breadth") == pytest.approx(1.06, abs=0.01)
    assert ratio(wide, "length") == pytest.approx(1.0, abs=0.005)
    thick = measure(3)
    assert ratio(thick, "thickness") == pytest.approx(1.08, abs=0.01)
    assert ratio(thick, "length") == pytest.approx(1.0, abs=0.005)
    girth = measure(4, fingers=True)
    for finger in FINGERS:
        assert finger_ratio(girth, finger, "breadth") == pytest.approx(1.08, abs=0.015), finger
    palm = measure(5)
    assert 1.025 < ratio(palm, "length") < 1.045  # the palm is about half the hand length
    thumb = measure(6, fingers=True)
    assert finger_ratio(thumb, "thumb") > 1.06
    for finger in ("index", "middle", "ring", "pinky"):
        assert finger_ratio(thumb, finger) == pytest.approx(1.0, abs=0.01)
    assert np.abs(data.shapedirs[:, :, 7:10]).max() == 0.0  # 7-9: no effect
    # the wrist joint stays put for every beta: 0, 2, 3 are centred on it, the others act beyond it
    for k in range(10):
        np.testing.assert_allclose(hand.rest_joints(np.eye(10)[k] * 2.0)[0], 0.0, atol=1e-12)
    # negative betas shrink
    assert measure(0, -1.0)["length"] < base["length"] * 0.95


# --- rig --------------------------------------------------------------------------------------------------------


def test_joints_inside_and_tips_on_the_skin(hand):
    data = hand.data
    rng = np.random.default_rng(1)
    for betas in (np.zeros(10), rng.normal(0.0, 1.0, 10), np.full(10, -1.5), np.full(10, 1.5)):
        out = hand.forward(_params(betas))
        wn = winding_numbers(out.joints_mano[0], out.vertices[0], data.faces)
        np.testing.assert_allclose(wn, 1.0, atol=1e-6)  # every joint strictly inside the closed skin
    verts = data.v_template
    joints = data.J_regressor @ verts
    for k, finger in enumerate(FINGERS):
        chain = FINGER_JOINTS[finger]
        d = joints[chain[2]] - joints[chain[1]]
        d /= np.linalg.norm(d)
        own = np.flatnonzero(hand.part_labels == k + 1)
        tip = verts[data.tip_vertex_ids[k]]
        assert (tip - joints[chain[2]]) @ d >= ((verts[own] - joints[chain[2]]) @ d).max() - 1e-12
    # the regressor reproduces the skeleton the skin was built around
    np.testing.assert_allclose(joints, v2._skeleton()[0], atol=1e-9)
    np.testing.assert_allclose(data.J_regressor.sum(axis=1), 1.0, atol=1e-9)


def test_weights_are_smooth_sparse_and_local(hand):
    w = hand.data.weights
    np.testing.assert_allclose(w.sum(axis=1), 1.0, atol=1e-12)
    assert (w >= 0).all() and ((w > 0).sum(axis=1) <= 4).all()
    blended = (w.max(axis=1) < 0.9).mean()
    assert 0.1 < blended < 0.6  # a real blend zone around each joint, not a hard split
    # along a digit (its bones and the wrist) neighbouring vertices have similar weights: no skinning seam
    # (only the web crotches between two fingers switch from one finger to the other within an edge)
    edges = trimesh.Trimesh(hand.data.v_template, hand.data.faces, process=False).edges_unique
    for chain in FINGER_JOINTS.values():
        own = w[:, [0, *chain]].sum(axis=1) > 1.0 - 1e-9
        inner = edges[own[edges[:, 0]] & own[edges[:, 1]]]
        assert len(inner) > 3000
        assert np.abs(w[inner[:, 0]] - w[inner[:, 1]]).max() < 0.6  # a hard split would jump by 1


def test_volume_kept_at_90_degrees(hand):
    data = hand.data
    rest = _volume(data.v_template, data.faces)
    bounds = {
        (np.pi / 2, 0, 0): 0.06,
        (0, np.pi / 2, 0): 0.015,
        (0, 0, np.pi / 2): 0.015,
        (np.pi / 2,) * 3: 0.08,
    }
    for angles, bound in bounds.items():
        verts = hand.forward(_params(pose=_flexion_pose(hand, angles))).vertices[0]
        loss = 1.0 - _volume(verts, data.faces) / rest
        assert 0.0 <= loss < bound, (angles, loss)


def test_no_self_intersection_at_rest_flexed_and_on_grasps(hand, grasps):
    data = hand.data
    assert len(self_intersections(data.v_template, data.faces, data.weights)) == 0
    for params in [_params(pose=_flexion_pose(hand, (0.6, 0.8, 0.5), thumb=(0.4, 0.3, 0.3)))] + [
        g.params for g in grasps
    ]:
        verts = hand.forward(params).vertices[0]
        assert len(self_intersections(verts, data.faces, data.weights)) == 0


def test_the_detector_finds_a_crossing(hand):
    """The self-intersection check can fail: the index finger swung through the middle finger is caught."""
    data = hand.data
    joints = data.J_regressor @ data.v_template
    normal = np.cross(joints[1] - joints[7], joints[4] - joints[0])
    pose = np.zeros(45)
    pose[0:3] = normal / np.linalg.norm(normal) * 0.3  # index MCP swung 17 degrees toward the middle finger
    verts = hand.forward(_params(pose=pose)).vertices[0]
    assert verts[data.tip_vertex_ids[1], 2] < data.v_template[data.tip_vertex_ids[1], 2] - 0.02
    hits = self_intersections(verts, data.faces, data.weights)
    assert len(hits) > 10
    assert set(hand.part_labels[hits]) <= {2, 3}  # index and middle


# --- backends and cache -----------------------------------------------------------------------------------------


@pytest.mark.skipif(not HAVE_SMPLX, reason="needs torch and smplx (pip install hoigen[mano])")
def test_numpy_skinning_equals_smplx_on_v2(hand):
    from hoigen.hands.mano import ManoHand, _import_backend

    torch, smplx = _import_backend()
    n = hand.data.num_vertices
    mano = object.__new__(ManoHand)
    mano.path = Path("hoigen-builtin-v2.pkl")  # only a name: smplx is built from the arrays
    mano.data = dataclasses.replace(hand.data, posedirs=np.zeros((135, n * 3)))
    mano._model = mano._build_smplx(torch, smplx, {"posedirs": np.zeros((n, 3, 135))})
    rng = np.random.default_rng(6)
    params = HandParams(
        rng.normal(0.0, 1.0, (3, 3)),
        rng.normal(0.0, 0.6, (3, 45)),
        rng.normal(0.0, 0.2, (3, 3)),
        rng.normal(0.0, 1.0, (3, 10)),
    )
    ref = mano.forward(params)
    fast = lbs(hand.data, params)
    np.testing.assert_allclose(fast.vertices, ref.vertices, atol=1e-9)
    np.testing.assert_allclose(fast.joints, ref.joints, atol=1e-9)
    np.testing.assert_allclose(fast.joints_mano, ref.joints_mano, atol=1e-9)


def test_cache_is_deterministic_and_survives_corruption(hand, tmp_path, monkeypatch):
    monkeypatch.setenv(v2.CACHE_ENV_VAR, str(tmp_path))
    options = v2.BuildOptions()
    fresh = v2.load_v2_data(options)  # built in this process, written to tmp_path
    files = list((tmp_path / "hands").glob("hoigen-builtin-v2-*.npz"))
    assert len(files) == 1
    for name in ("v_template", "faces", "weights", "J_regressor", "shapedirs", "tip_vertex_ids"):
        # the module's hand came from the user cache or another build: byte-identical
        assert getattr(fresh, name).tobytes() == getattr(hand.data, name).tobytes(), name
    calls = []
    monkeypatch.setattr(v2, "build_v2_data", lambda opts: calls.append(opts) or fresh)
    again = v2.load_v2_data(options)  # read from the cache, not rebuilt
    assert again.v_template.tobytes() == fresh.v_template.tobytes() and not calls
    files[0].write_bytes(b"not an npz")
    rebuilt = v2.load_v2_data(options)  # an unreadable cache is rebuilt (and rewritten), not an error
    assert calls == [options] and rebuilt.faces.tobytes() == fresh.faces.tobytes()
    assert v2.load_v2_data(options).faces.tobytes() == fresh.faces.tobytes() and len(calls) == 1


def test_flexion_bends_toward_the_palm(hand):
    """The sampler's flexion axes bend the v2 fingers toward the palm (-y at rest)."""
    out = hand.forward(_params(pose=_flexion_pose(hand, (0.5, 0.5, 0.5))))
    tips = out.joints[0, [8, 12, 16, 20]]
    rest_tips = hand.data.v_template[hand.data.tip_vertex_ids[1:]]
    assert (tips[:, 1] < rest_tips[:, 1] - 0.02).all()


@pytest.mark.slow
def test_forearm_stub_is_cut_from_one_closed_skin_and_follows_the_hand(hand):
    """The skin meshed with the forearm is closed; the stub cut from it is an open, outward sheet outside the plain
    hand whose rim hugs the hand's skin, at rest and posed (random pose and betas); the hand itself is unchanged."""
    merged = v2.load_v2_data(v2.BuildOptions(forearm=True))
    mesh = trimesh.Trimesh(merged.v_template, merged.faces, process=False)
    assert mesh.is_watertight and mesh.is_winding_consistent and mesh.euler_number == 2
    with_arm = BuiltinHandV2(forearm=True)
    assert with_arm.data is hand.data and with_arm.metadata()["forearm"] is True
    skin = with_arm.forearm_skin
    sheet = trimesh.Trimesh(skin.v_template, skin.faces, process=False)
    assert sheet.is_winding_consistent and not sheet.is_watertight
    assert (
        len(trimesh.graph.connected_components(sheet.face_adjacency, nodes=np.arange(len(skin.faces)))) == 1
    )
    edges, counts = np.unique(sheet.edges_sorted, axis=0, return_counts=True)
    rim = np.unique(edges[counts == 1])
    stub = skin.v_template[:, 0] > 0.02  # past the wrist, toward the elbow
    assert stub.sum() > 500 and (skin.weights[stub, 0] == 1.0).all()
    assert skin.v_template[:, 0].max() > 0.09  # about 10 cm of forearm
    axis = skin.v_template[stub] * [0.0, 1.0, 1.0]  # outward = away from the forearm's axis (about y = z = 0)
    assert (np.einsum("ij,ij->i", sheet.vertex_normals[stub], axis) > 0).mean() > 0.99
    rng = np.random.default_rng(3)
    for params in (
        _params(),
        HandParams(rng.normal(size=3), rng.normal(size=45) * 0.4, rng.normal(size=3), rng.normal(size=10)),
    ):
        out = hand.forward(params)
        posed = with_arm.forearm_vertices(params, out)[0]
        skin_mesh = trimesh.Trimesh(out.vertices[0], hand.faces, process=False)
        depth = trimesh.proximity.signed_distance(skin_mesh, posed)  # > 0 inside the hand
        assert depth.max() < 0.0  # every stub vertex outside the hand's skin
        assert -depth[rim].max() >= 0.0001 and -depth[rim].min() < 0.002  # the rim within 2 mm of the skin
    with pytest.raises(ValueError, match="forearm"):
        BuiltinHand(version=1, forearm=True)
