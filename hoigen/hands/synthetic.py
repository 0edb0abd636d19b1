"""A synthetic MANO-shaped model for tests — never the licensed MANO file.

:func:`make_synthetic_mano_dict` returns what a MANO pickle holds once loaded (same keys, shapes, dtypes, kinematic
tree, fingertip vertex ids and wrist position), with geometry from hoigen's built-in hand: 778 vertices,
1538 faces, MANO's frame (fingers along -x, thumb toward +z, palm facing -y, wrist joint at (0.0957, 0.0064,
0.0062)), metres. :func:`write_synthetic_mano` pickles it like the real file (protocol 2, ``shapedirs`` and ``J``
as ``chumpy.ch.Ch`` objects) so the restricted loader is exercised end to end.
"""

from __future__ import annotations

import pickle
import sys
import threading
import types
from pathlib import Path

import numpy as np
import scipy.sparse

from hoigen.hands.builtin import build_hand_data
from hoigen.hands.model import MANO_TIP_VERTEX_IDS, NUM_BETAS, NUM_JOINTS

MANO_NUM_VERTICES = 778
MANO_NUM_FACES = 1538
MANO_WRIST = np.array([0.0957, 0.0064, 0.0062])  # rest wrist joint of MANO's right hand, metres
_RING_SPACING = 0.012  # gives 772 vertices with 8 points per ring
_UINT32_MINUS_ONE = 4294967295  # MANO's "no parent" in kintree_table
_pickle_lock = threading.Lock()


def make_synthetic_mano_dict(rng: np.random.Generator, left: bool = False) -> dict:
    """A MANO-shaped model dict (plain numpy / scipy values).

    Keys: ``v_template`` (778, 3), ``f`` (1538, 3) uint32, ``shapedirs`` (778, 3, 10), ``posedirs`` (778, 3, 135),
    ``J_regressor`` (16, 778) scipy csc, ``weights`` (778, 16), ``kintree_table`` (2, 16), ``J`` (16, 3),
    ``hands_components`` (45, 45), ``hands_mean`` (45,), ``hands_coeffs`` (64, 45), ``bs_style``, ``bs_type``.

    Args:
        rng: source of the random pose correctives and hand-pose PCA.
        left: mirror x to make a left-hand stand-in (like MANO_LEFT.pkl).
    """
    base = build_hand_data(points_per_ring=8, ring_spacing=_RING_SPACING, name="synthetic-mano")
    n_v, n_f = base.num_vertices, len(base.faces)
    if n_v > MANO_NUM_VERTICES or n_f > MANO_NUM_FACES:
        raise RuntimeError(
            f"built-in hand at spacing {_RING_SPACING} has {n_v} vertices / {n_f} faces, too many"
        )
    # pad: duplicated vertices (unreferenced, same weights) and repeated triangles
    old_ids = np.concatenate([np.arange(n_v), np.arange(MANO_NUM_VERTICES - n_v)])
    faces = np.concatenate([base.faces, base.faces[: MANO_NUM_FACES - n_f]])
    v_template = base.v_template[old_ids]
    weights = base.weights[old_ids]
    shapedirs = base.shapedirs[old_ids][:, :, :NUM_BETAS]
    j_reg = np.zeros((NUM_JOINTS, MANO_NUM_VERTICES))
    j_reg[:, :n_v] = base.J_regressor
    # permute so the fingertips land on MANO's tip vertex ids
    tips = np.asarray(base.tip_vertex_ids)
    new_to_old = np.full(MANO_NUM_VERTICES, -1)
    new_to_old[list(MANO_TIP_VERTEX_IDS)] = tips
    new_to_old[new_to_old < 0] = np.setdiff1d(np.arange(MANO_NUM_VERTICES), tips)
    old_to_new = np.argsort(new_to_old)
    v_template, weights, shapedirs = v_template[new_to_old], weights[new_to_old], shapedirs[new_to_old]
    j_reg = j_reg[:, new_to_old]
    faces = old_to_new[faces]
    v_template = v_template + (MANO_WRIST - j_reg[0] @ v_template)

    # small random pose correctives, each joint's only on the vertices it skins (keeps kinematics local)
    posedirs = rng.normal(0.0, 1e-4, size=(MANO_NUM_VERTICES, 3, (NUM_JOINTS - 1) * 9))
    for j in range(1, NUM_JOINTS):
        posedirs[weights[:, j] == 0, :, 9 * (j - 1) : 9 * j] = 0.0
    n_pose = (NUM_JOINTS - 1) * 3
    components, _ = np.linalg.qr(rng.normal(size=(n_pose, n_pose)))

    if left:
        v_template = v_template * np.array([-1.0, 1.0, 1.0])
        shapedirs = shapedirs * np.array([-1.0, 1.0, 1.0])[None, :, None]
        posedirs = posedirs * np.array([-1.0, 1.0, 1.0])[None, :, None]
        faces = faces[:, ::-1]
    kintree = np.stack([base.parents, np.arange(NUM_JOINTS)]).astype(np.int64)
    kintree[0, 0] = _UINT32_MINUS_ONE
    return {
        "v_template": v_template,
        "f": np.ascontiguousarray(faces, dtype=np.uint32),
        "shapedirs": np.ascontiguousarray(shapedirs),
        "posedirs": posedirs,
        "J_regressor": scipy.sparse.csc_matrix(j_reg),
        "weights": weights,
        "kintree_table": kintree,
        "J": j_reg @ v_template,
        "hands_components": components.T,
        "hands_mean": rng.normal(0.0, 0.1, size=n_pose),
        "hands_coeffs": rng.normal(0.0, 0.5, size=(64, n_pose)),
        "bs_style": "lbs",
        "bs_type": "lrotmin",
    }


def write_synthetic_mano(path: str | Path, rng: np.random.Generator, left: bool = False) -> Path:
    """Pickle :func:`make_synthetic_mano_dict` like a MANO file: protocol 2, ``shapedirs`` and ``J`` as
    ``chumpy.ch.Ch`` objects (value in their state under ``x``). chumpy is neither needed nor imported.

    Returns the path written.
    """
    path = Path(path)
    data = make_synthetic_mano_dict(rng, left=left)
    # A class whose pickled global is exactly chumpy's ``chumpy.ch Ch``; the pickler finds it through stand-in
    # modules registered only while pickling.
    ch_class = types.new_class(
        "Ch", (), {}, lambda ns: ns.update({"__module__": "chumpy.ch", "__qualname__": "Ch"})
    )
    for key in ("shapedirs", "J"):
        obj = ch_class()
        obj.__dict__.update(
            {
                "x": data[key],
                "_dirty_vars": set(),
                "_itr": None,
                "_depends_on_deps": {},
                "_make_dense": False,
                "_make_sparse": False,
            }
        )
        data[key] = obj
    package, module = types.ModuleType("chumpy"), types.ModuleType("chumpy.ch")
    package.ch = module
    module.Ch = ch_class
    with _pickle_lock:
        saved = {name: sys.modules.get(name) for name in ("chumpy", "chumpy.ch")}
        sys.modules.update({"chumpy": package, "chumpy.ch": module})
        try:
            payload = pickle.dumps(data, protocol=2)
        finally:
            for name, previous in saved.items():
                if previous is None:
                    sys.modules.pop(name, None)
                else:
                    sys.modules[name] = previous
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(payload)
    return path
