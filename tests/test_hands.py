"""Hands: the built-in hand and MANO (smplx) on a synthetic MANO-shaped file — keypoints, kinematics, the numpy
LBS against smplx, the restricted MANO unpickler, path resolution and the light-core import rule."""

from __future__ import annotations

import importlib.util
import os
import pickle
import pickletools
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hoigen.geometry.rotations import axis_angle_to_matrix
from hoigen.hands import FINGER_JOINTS, FINGERS, OPENPOSE_NAMES, BuiltinHand, HandParams, load_hand
from hoigen.hands.builtin import build_hand_data
from hoigen.hands.lbs import lbs
from hoigen.hands.model import MANO_PARENTS, MANO_TIP_VERTEX_IDS, OPENPOSE_FROM_MANO
from hoigen.hands.synthetic import MANO_WRIST, make_synthetic_mano_dict, write_synthetic_mano

HAVE_SMPLX = importlib.util.find_spec("smplx") is not None and importlib.util.find_spec("torch") is not None
needs_smplx = pytest.mark.skipif(not HAVE_SMPLX, reason="needs torch and smplx (pip install hoigen[mano])")

# OpenPose keypoint k (1..20) -> the finger and its position along the chain (1..4, 4 = tip)
OPENPOSE_CHAINS = {finger: [1 + 4 * k + i for i in range(4)] for k, finger in enumerate(FINGERS)}


def _descendants(joint: int) -> set[int]:
    out = {joint}
    for j in range(len(MANO_PARENTS)):
        p = MANO_PARENTS[j]
        while p >= 0:
            if p == joint:
                out.add(j)
            p = MANO_PARENTS[p]
    return out


def _params(
    batch=1, rng=None, pose_scale=0.0, orient_scale=0.0, transl_scale=0.0, betas_scale=0.0
) -> HandParams:
    rng = rng if rng is not None else np.random.default_rng(0)
    return HandParams(
        rng.normal(0.0, 1.0, (batch, 3)) * orient_scale,
        rng.normal(0.0, 1.0, (batch, 45)) * pose_scale,
        rng.normal(0.0, 1.0, (batch, 3)) * transl_scale,
        rng.normal(0.0, 1.0, (batch, 10)) * betas_scale,
    )


@pytest.fixture(scope="module")
def mano_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("mano_models")
    write_synthetic_mano(root / "mano" / "MANO_RIGHT.pkl", np.random.default_rng(0))
    return root


@pytest.fixture(scope="module")
def mano_hand(mano_dir):
    if not HAVE_SMPLX:
        pytest.skip("needs torch and smplx (pip install hoigen[mano])")
    from hoigen.hands.mano import ManoHand

    return ManoHand(mano_dir)


@pytest.fixture(scope="module")
def builtin_hand():
    return BuiltinHand()  # the default built-in hand (v2)


@pytest.fixture(scope="module")
def builtin_v1_hand():
    return BuiltinHand(version=1)


@pytest.fixture(params=["builtin", "builtin_v1", "mano"])
def hand(request):
    return request.getfixturevalue(f"{request.param}_hand")


# --- keypoints and kinematics, both hands ---------------------------------------------------------------------


def test_keypoints_in_openpose_order(hand):
    transl = np.array([0.1, -0.2, 0.5])
    params = HandParams(np.zeros(3), np.zeros(45), transl, np.zeros(10))
    out = hand.forward(params)
    data = hand.data
    assert out.vertices.shape == (1, data.num_vertices, 3)
    assert out.joints.shape == (1, 21, 3) and out.joints_mano.shape == (1, 16, 3)
    assert out.joint_transforms.shape == (1, 16, 4, 4)
    rest_j = data.J_regressor @ data.v_template
    tips = data.v_template[data.tip_vertex_ids]
    np.testing.assert_allclose(out.joints_mano[0], rest_j + transl, atol=1e-9)
    np.testing.assert_allclose(out.vertices[0], data.v_template + transl, atol=1e-9)
    np.testing.assert_allclose(out.joints[0, 0], rest_j[0] + transl, atol=1e-12)
    assert OPENPOSE_NAMES[0] == "wrist"
    for k, finger in enumerate(FINGERS):
        ids = OPENPOSE_CHAINS[finger]
        assert [OPENPOSE_NAMES[i] for i in ids] == [f"{finger}{i}" for i in range(1, 5)]
        expected = np.concatenate([rest_j[list(FINGER_JOINTS[finger])], tips[k : k + 1]]) + transl
        np.testing.assert_allclose(out.joints[0, ids], expected, atol=1e-9)
        chain = out.joints[0, [0, *ids]]
        bones = np.linalg.norm(np.diff(chain, axis=0), axis=1)
        assert (bones > 0.005).all(), (finger, bones)
        # each keypoint lies farther along the finger than the one before; the tip is the farthest
        along = np.linalg.norm(chain[2:] - chain[1], axis=1)
        assert (np.diff(along) > 0).all() and np.argmax(np.linalg.norm(chain - chain[0], axis=1)) == 4
    # the explicit MANO indices: thumb = 13, 14, 15 + tip; index = 1, 2, 3 + tip; pinky = 7, 8, 9 + tip
    full = np.concatenate([rest_j, tips]) + transl
    np.testing.assert_allclose(out.joints[0], full[OPENPOSE_FROM_MANO], atol=1e-9)
    np.testing.assert_allclose(out.joints[0, 1:5], full[[13, 14, 15, 16]], atol=1e-9)
    np.testing.assert_allclose(out.joints[0, 5:9], full[[1, 2, 3, 17]], atol=1e-9)
    np.testing.assert_allclose(out.joints[0, 17:21], full[[7, 8, 9, 20]], atol=1e-9)


@pytest.mark.parametrize("joint", [2, 14])
def test_rotating_one_joint_moves_only_its_descendants(hand, joint):
    rng = np.random.default_rng(3)
    base = _params(rng=rng, transl_scale=0.1, betas_scale=0.5, orient_scale=0.4)
    pose = base.hand_pose.copy()
    axis = np.array([0.3, 0.2, 1.0])
    pose[0, 3 * (joint - 1) : 3 * joint] = 0.5 * axis / np.linalg.norm(axis)
    moved = HandParams(base.global_orient, pose, base.transl, base.betas)
    a, b = hand.forward(base), hand.forward(moved)
    desc = _descendants(joint)
    skinned = hand.data.weights[:, sorted(desc)].sum(axis=1) > 0
    delta = np.linalg.norm(b.vertices - a.vertices, axis=-1)[0]
    assert delta[~skinned].max() <= 1e-12
    assert delta[skinned].max() > 1e-3
    jdelta = np.linalg.norm(b.joints_mano - a.joints_mano, axis=-1)[0]
    for j in range(16):
        if j in desc and j != joint:
            assert jdelta[j] > 1e-3, j
        else:  # the joint itself (its rotation centre), its ancestors and the other fingers stay
            assert jdelta[j] <= 1e-12, j
    finger = next(f for f, js in FINGER_JOINTS.items() if joint in js)
    kdelta = np.linalg.norm(b.joints - a.joints, axis=-1)[0]
    tip = OPENPOSE_CHAINS[finger][3]
    assert kdelta[tip] > 1e-3
    others = [i for i in range(21) if i not in OPENPOSE_CHAINS[finger]]
    assert kdelta[others].max() <= 1e-12


def test_global_orient_turns_about_the_wrist_and_transl_translates(hand):
    rng = np.random.default_rng(4)
    rest = _params(rng=rng, pose_scale=0.3, betas_scale=0.5)
    orient = np.array([0.4, -1.1, 0.7])
    transl = np.array([0.05, 0.3, -0.2])
    posed = HandParams(orient, rest.hand_pose, transl, rest.betas)
    a, b = hand.forward(rest), hand.forward(posed)
    rot = axis_angle_to_matrix(orient)
    wrist = a.joints_mano[0, 0]
    np.testing.assert_allclose(b.joints[0, 0], wrist + transl, atol=1e-12)
    np.testing.assert_allclose(b.vertices[0], (a.vertices[0] - wrist) @ rot.T + wrist + transl, atol=1e-9)
    np.testing.assert_allclose(b.joints[0], (a.joints[0] - wrist) @ rot.T + wrist + transl, atol=1e-9)
    np.testing.assert_allclose(
        b.joint_transforms[0, :, :3, :3], rot @ a.joint_transforms[0, :, :3, :3], atol=1e-9
    )
    shifted = hand.forward(HandParams(orient, rest.hand_pose, transl + [0.0, 0.0, 1.0], rest.betas))
    np.testing.assert_allclose(
        shifted.vertices - b.vertices, np.broadcast_to([0.0, 0.0, 1.0], b.vertices.shape), atol=1e-12
    )
    np.testing.assert_allclose(
        shifted.joints - b.joints, np.broadcast_to([0.0, 0.0, 1.0], b.joints.shape), atol=1e-12
    )


def test_joint_transforms_place_the_joints(hand):
    params = _params(
        batch=2, rng=np.random.default_rng(5), pose_scale=0.4, orient_scale=1.0, transl_scale=0.2
    )
    out = hand.forward(params)
    np.testing.assert_allclose(out.joint_transforms[:, :, :3, 3], out.joints_mano, atol=1e-9)
    rotations = out.joint_transforms[:, :, :3, :3]
    np.testing.assert_allclose(
        rotations @ np.swapaxes(rotations, -1, -2), np.broadcast_to(np.eye(3), rotations.shape), atol=1e-12
    )


# --- MANO through smplx ---------------------------------------------------------------------------------------


@needs_smplx
def test_numpy_lbs_matches_smplx(mano_hand):
    params = _params(
        batch=6,
        rng=np.random.default_rng(6),
        pose_scale=0.6,
        orient_scale=1.5,
        transl_scale=0.3,
        betas_scale=1.0,
    )
    ref = mano_hand.forward(params)  # smplx
    fast = lbs(mano_hand.data, params)  # hoigen.hands.lbs
    np.testing.assert_allclose(fast.vertices, ref.vertices, atol=1e-6)
    np.testing.assert_allclose(fast.joints_mano, ref.joints_mano, atol=1e-6)
    np.testing.assert_allclose(fast.joints, ref.joints, atol=1e-6)
    np.testing.assert_allclose(fast.joint_transforms, ref.joint_transforms, atol=1e-6)
    # pose correctives and shape blend shapes are really exercised
    assert (
        np.abs(
            ref.vertices
            - lbs(
                mano_hand.data,
                HandParams(params.global_orient, params.hand_pose, params.transl, np.zeros((6, 10))),
            ).vertices
        ).max()
        > 1e-3
    )


@needs_smplx
def test_smplx_mano_returns_16_joints(mano_hand):
    import smplx
    import torch

    model = mano_hand._model
    assert isinstance(model, smplx.MANO)
    out = model(
        betas=torch.zeros(2, 10, dtype=torch.float64),
        global_orient=torch.zeros(2, 3, dtype=torch.float64),
        hand_pose=torch.zeros(2, 45, dtype=torch.float64),
        transl=torch.zeros(2, 3, dtype=torch.float64),
    )
    assert tuple(out.joints.shape) == (2, 16, 3)  # MANO order, no fingertips
    assert tuple(out.vertices.shape) == (2, 778, 3)


@needs_smplx
def test_mano_model_structure(mano_hand):
    data = mano_hand.data
    assert data.name == "mano" and data.num_vertices == 778 and data.faces.shape == (1538, 3)
    assert tuple(data.tip_vertex_ids) == MANO_TIP_VERTEX_IDS
    np.testing.assert_array_equal(data.parents, MANO_PARENTS)
    np.testing.assert_allclose(data.J_regressor[0] @ data.v_template, MANO_WRIST, atol=1e-12)
    assert data.posedirs.shape == (135, 778 * 3)
    raw = make_synthetic_mano_dict(np.random.default_rng(0))
    # smplx layout: posedirs[p, 3 * v + c] = MANO posedirs[v, c, p]
    np.testing.assert_array_equal(data.posedirs[17, 3 * 320 + 2], raw["posedirs"][320, 2, 17])
    labels = data.part_labels()
    for k, vid in enumerate(MANO_TIP_VERTEX_IDS):
        assert labels[vid] == k + 1


@needs_smplx
def test_mano_hand_pickles(mano_hand):
    # executors send hand models to worker processes
    copy = pickle.loads(pickle.dumps(mano_hand))
    params = _params(batch=2, rng=np.random.default_rng(8), pose_scale=0.5, betas_scale=1.0)
    np.testing.assert_array_equal(copy.forward(params).vertices, mano_hand.forward(params).vertices)


def test_missing_backend_says_what_to_install(mano_dir, monkeypatch):
    from hoigen.hands.mano import ManoHand

    monkeypatch.setitem(sys.modules, "smplx", None)  # makes ``import smplx`` fail
    with pytest.raises(ImportError, match=r"pip install hoigen\[mano\]"):
        ManoHand(mano_dir)


# --- the restricted unpickler ---------------------------------------------------------------------------------


def _globals(payload: bytes) -> set[str]:
    return {str(arg) for op, arg, _ in pickletools.genops(payload) if op.name == "GLOBAL"}


def test_synthetic_file_loads_without_chumpy(mano_dir):
    from hoigen.hands.mano import load_mano_pickle

    path = mano_dir / "mano" / "MANO_RIGHT.pkl"
    assert "chumpy.ch Ch" in _globals(path.read_bytes())  # like a real MANO file
    raw = load_mano_pickle(path)
    assert "chumpy" not in sys.modules and "chumpy.ch" not in sys.modules
    expected = make_synthetic_mano_dict(np.random.default_rng(0))
    for key in ("shapedirs", "J", "v_template", "posedirs", "weights", "kintree_table", "f"):
        assert isinstance(raw[key], np.ndarray), key
        np.testing.assert_array_equal(raw[key], expected[key])
    np.testing.assert_array_equal(raw["J_regressor"].toarray(), expected["J_regressor"].toarray())
    assert raw["bs_style"] == "lbs" and raw["kintree_table"][0, 0] == 4294967295


class _Evil:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _handcrafted(module: str, name: str, marker: Path) -> bytes:
    # protocol 0 opcodes: GLOBAL module name, MARK, STRING arg, TUPLE, REDUCE, STOP
    return f"c{module}\n{name}\n(S'touch {marker}'\ntR.".encode()


@pytest.mark.parametrize("kind", ["reduce", "os.system", "builtins.eval", "subprocess.call"])
def test_malicious_pickle_is_refused_and_not_run(tmp_path, kind):
    from hoigen.hands.mano import load_mano_pickle

    marker = tmp_path / "pwned"
    if kind == "reduce":
        payload = pickle.dumps({"v_template": _Evil(marker)}, protocol=2)
        refused = f"{os.system.__module__}.system"
    else:
        module, name = kind.split(".")
        payload = _handcrafted(module, name, marker)
        refused = kind
    path = tmp_path / "MANO_RIGHT.pkl"
    path.write_bytes(payload)
    with pytest.raises(pickle.UnpicklingError, match=f"refused to load the global '{refused}'"):
        load_mano_pickle(path)
    assert not marker.exists()
    if HAVE_SMPLX:
        from hoigen.hands.mano import ManoHand

        with pytest.raises(pickle.UnpicklingError):
            ManoHand(tmp_path)
        assert not marker.exists()


def test_corrupt_files_give_a_clear_error(tmp_path, mano_dir):
    from hoigen.hands.mano import load_mano_pickle

    good = (mano_dir / "mano" / "MANO_RIGHT.pkl").read_bytes()
    cases = {
        "random.pkl": np.random.default_rng(7).integers(0, 256, 4096, dtype=np.uint8).tobytes(),
        "truncated.pkl": good[: len(good) // 2],
        "empty.pkl": b"",
        "list.pkl": pickle.dumps([1, 2, 3], protocol=2),
    }
    for name, payload in cases.items():
        path = tmp_path / name
        path.write_bytes(payload)
        with pytest.raises(ValueError, match="not a readable MANO pickle") as info:
            load_mano_pickle(path)
        assert name in str(info.value)


def test_wrong_structure_names_the_key():
    from hoigen.hands.mano import mano_data_from_dict

    d = make_synthetic_mano_dict(np.random.default_rng(0))
    missing = {k: v for k, v in d.items() if k != "weights"}
    with pytest.raises(ValueError, match=r"'weights' is missing.*MANO_RIGHT\.pkl"):
        mano_data_from_dict(missing)
    bad = dict(d, posedirs=np.zeros((778, 3, 100)))
    with pytest.raises(
        ValueError, match=r"'posedirs' has shape \(778, 3, 100\), expected \(778, 3, 135\).*MANO_RIGHT"
    ):
        mano_data_from_dict(bad)


def test_handedness_rule():
    from hoigen.hands.mano import handedness_score

    mirror = np.array([-1.0, 1.0, 1.0])
    builtin = build_hand_data()
    thumb_y = (builtin.J_regressor @ builtin.v_template)[13:16, 1]
    assert (thumb_y < -0.01).all()  # the built-in thumb is palmar (palm faces -y)
    assert handedness_score(builtin.v_template, builtin.J_regressor) < -0.1
    assert handedness_score(builtin.v_template * mirror, builtin.J_regressor) > 0.1
    right = make_synthetic_mano_dict(np.random.default_rng(0))
    left = make_synthetic_mano_dict(np.random.default_rng(0), left=True)
    assert handedness_score(right["v_template"], right["J_regressor"]) < -0.1
    assert handedness_score(left["v_template"], left["J_regressor"]) > 0.1


@needs_smplx
def test_left_hand_file_is_refused(tmp_path):
    from hoigen.hands.mano import ManoHand

    left = write_synthetic_mano(tmp_path / "left" / "MANO_LEFT.pkl", np.random.default_rng(0), left=True)
    with pytest.raises(ValueError, match="left-hand MANO model.*needs MANO_RIGHT.pkl"):
        ManoHand(left)
    with pytest.raises(FileNotFoundError, match="left-hand"):  # a directory with only the left hand
        ManoHand(tmp_path / "left")
    renamed = tmp_path / "renamed" / "MANO_RIGHT.pkl"
    renamed.parent.mkdir()
    renamed.write_bytes(left.read_bytes())
    with pytest.raises(ValueError, match="left-hand MANO model.*thumb lies on the back"):
        ManoHand(renamed.parent)


# --- finding the file -----------------------------------------------------------------------------------------


def test_missing_mano_says_how_to_get_it(tmp_path, monkeypatch):
    from hoigen.hands.mano import resolve_mano_path

    monkeypatch.delenv("HOIGEN_MANO_DIR", raising=False)
    for arg in (tmp_path / "nowhere", tmp_path, tmp_path / "MANO_RIGHT.pkl", None):
        with pytest.raises(FileNotFoundError) as info:
            resolve_mano_path(arg)
        message = str(info.value)
        for needle in ("HOIGEN_MANO_DIR", "--mano", "licensed", "register", "mano.is.tue.mpg.de"):
            assert needle in message, (arg, needle, message)
    with pytest.raises(FileNotFoundError, match=r"searched .*mano/MANO_RIGHT\.pkl"):
        resolve_mano_path(tmp_path)
    with pytest.raises(FileNotFoundError, match="HOIGEN_MANO_DIR"):
        load_hand("mano", tmp_path / "nowhere")


def test_resolve_layouts_and_env(tmp_path, monkeypatch):
    from hoigen.hands.mano import resolve_mano_path

    for sub in (".", "mano", "models", "models/mano"):
        root = tmp_path / sub.replace("/", "_").replace(".", "flat")
        target = root / sub / "MANO_RIGHT.pkl"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(b"")
        assert resolve_mano_path(root) == target.resolve()
        assert resolve_mano_path(str(target)) == target.resolve()
        monkeypatch.setenv("HOIGEN_MANO_DIR", str(root))
        assert resolve_mano_path(None) == target.resolve()


@needs_smplx
def test_env_var_loads_mano(mano_dir, monkeypatch):
    monkeypatch.setenv("HOIGEN_MANO_DIR", str(mano_dir))
    hand = load_hand("mano")
    assert hand.metadata() == {"model": "mano", "path": "MANO_RIGHT.pkl"}


# --- the factory ----------------------------------------------------------------------------------------------


def test_load_hand(mano_dir):
    builtin = load_hand("builtin")
    assert isinstance(builtin, BuiltinHand)
    assert builtin.metadata()["model"] == "hoigen-builtin-v2" and builtin.name == "hoigen-builtin-v2"
    assert load_hand().name == "hoigen-builtin-v2"
    assert load_hand("builtin-v2").name == "hoigen-builtin-v2"
    v1 = load_hand("builtin-v1")
    assert isinstance(v1, BuiltinHand) and v1.metadata()["model"] == "hoigen-builtin-v1"
    with pytest.raises(ValueError, match=r"'left'.*\['builtin', 'builtin-v1', 'builtin-v2', 'mano'\]"):
        load_hand("left")
    with pytest.raises(ValueError, match="version 3.*builtin-v1"):
        BuiltinHand(version=3)
    if HAVE_SMPLX:
        from hoigen.hands.mano import ManoHand

        mano = load_hand("mano", mano_dir)
        assert isinstance(mano, ManoHand) and mano.name == "mano"
        assert mano.metadata() == {"model": "mano", "path": "MANO_RIGHT.pkl"}
        mano = load_hand("mano", mano_dir / "mano" / "MANO_RIGHT.pkl")
        assert mano.metadata()["path"] == "MANO_RIGHT.pkl"


# --- the built-in hand ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", [1, 2])
def test_builtin_proportions(version, builtin_hand, builtin_v1_hand):
    data = (builtin_v1_hand if version == 1 else builtin_hand).data
    joints = data.J_regressor @ data.v_template
    tips = data.v_template[data.tip_vertex_ids]
    assert 0.16 <= np.linalg.norm(tips[2] - joints[0]) <= 0.21  # wrist -> middle fingertip
    assert 0.04 <= np.linalg.norm(joints[1] - joints[7]) <= 0.07  # index MCP <-> pinky MCP
    np.testing.assert_allclose(joints[0], 0.0, atol=1e-12)


def test_builtin_v1_parts_are_closed_and_labelled(builtin_v1_hand):
    import trimesh

    builtin_hand = builtin_v1_hand
    data = builtin_hand.data
    mesh = trimesh.Trimesh(data.v_template, data.faces, process=False)
    parts = mesh.split(only_watertight=False)
    assert len(parts) == 6
    for part in parts:
        assert part.is_watertight and part.volume > 0
    labels = builtin_hand.part_labels
    assert set(np.unique(labels)) == set(range(6))
    for k, vid in enumerate(data.tip_vertex_ids):
        assert labels[vid] == k + 1, FINGERS[k]


def test_builtin_v1_shape_space(builtin_v1_hand):
    builtin_hand = builtin_v1_hand
    data = builtin_hand.data

    def rest(betas):
        out = builtin_hand.forward(HandParams(np.zeros(3), np.zeros(45), np.zeros(3), betas))
        return out.vertices[0], out.joints[0], out.joints_mano[0]

    v0, k0, j0 = rest(np.zeros(10))
    v1, k1, _ = rest(np.eye(10)[0])
    assert np.linalg.norm(k1[12] - k1[0]) > np.linalg.norm(k0[12] - k0[0]) * 1.02  # wrist -> middle tip
    assert np.ptp(v1, axis=0).prod() > np.ptp(v0, axis=0).prod() * 1.05
    v2, k2, j2 = rest(np.eye(10)[1])
    palm = builtin_hand.part_labels == 0
    np.testing.assert_allclose(v2[palm], v0[palm], atol=1e-12)
    np.testing.assert_allclose(j2[[1, 4, 7, 10, 13]], j0[[1, 4, 7, 10, 13]], atol=1e-12)  # finger bases stay
    for finger, ids in OPENPOSE_CHAINS.items():
        assert np.linalg.norm(k2[ids[3]] - k2[ids[0]]) > np.linalg.norm(k0[ids[3]] - k0[ids[0]]) + 1e-3, (
            finger
        )
    assert data.shapedirs.shape[2] >= 10


# --- the light core -------------------------------------------------------------------------------------------


def test_hands_import_is_light():
    modules = [
        "hoigen.hands",
        "hoigen.objects",
        "hoigen.geometry",
        "hoigen.hands.mano",
        "hoigen.hands.synthetic",
        "hoigen.grasping",
        "hoigen.config",
        "hoigen.render",
        "hoigen.render.config",
        "hoigen.synth",
        "hoigen.datasets",
        "hoigen.cli",
    ]
    heavy = ["torch", "pyrender", "OpenGL", "diffusers", "webdataset", "ray", "smplx", "chumpy", "cv2"]
    code = "import importlib, sys\n"
    code += "".join(f"importlib.import_module({m!r})\n" for m in modules)
    code += f"print(','.join(m for m in {heavy!r} if m in sys.modules))\n"
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=root
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "", f"heavy modules imported by the core: {result.stdout.strip()}"
