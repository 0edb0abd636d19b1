"""MANO (right hand) through the smplx package, loaded safely from the user's licensed ``MANO_RIGHT.pkl``.

MANO is licensed (registration at https://mano.is.tue.mpg.de, non-commercial): hoigen never ships or downloads it.
The file is a Python 2 pickle holding numpy arrays, a scipy sparse joint regressor and ``chumpy`` objects. It is
opened with a restricted unpickler that only builds those (chumpy objects become plain numpy arrays, chumpy itself
is never imported), so a pickle that tries to call anything else is refused before it runs.

Frame: MANO's own, metres — rest pose with fingers along -x, thumb toward +z, palm facing -y, wrist joint at about
(0.0957, 0.0064, 0.0062). Joint order and keypoints follow :mod:`hoigen.hands.model`. torch and smplx are imported
only when a :class:`ManoHand` is built.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import pickle
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from hoigen.hands.model import (
    MANO_TIP_VERTEX_IDS,
    NUM_BETAS,
    NUM_JOINTS,
    OPENPOSE_FROM_MANO,
    HandModel,
    HandModelData,
    HandOutput,
    HandParams,
)

logger = logging.getLogger(__name__)

MANO_ENV_VAR = "HOIGEN_MANO_DIR"
MANO_FILE_NAME = "MANO_RIGHT.pkl"
# Sub-folders of a MANO directory searched for MANO_RIGHT.pkl, in order.
MANO_SUBDIRS = (".", "mano", "models", "models/mano")
MANO_SHAPES = {
    "v_template": (778, 3),
    "f": (1538, 3),
    "shapedirs": (778, 3, NUM_BETAS),
    "posedirs": (778, 3, (NUM_JOINTS - 1) * 9),
    "J_regressor": (NUM_JOINTS, 778),
    "weights": (778, NUM_JOINTS),
    "kintree_table": (2, NUM_JOINTS),
}
_DOWNLOAD_HINT = (
    "MANO is licensed and cannot be shipped with hoigen: register and download it yourself from "
    "https://mano.is.tue.mpg.de (the 'Models & Code' archive contains models/MANO_RIGHT.pkl), then pass "
    f"--mano DIR (or the path to MANO_RIGHT.pkl) or set {MANO_ENV_VAR}=DIR. Without MANO, hoigen uses its "
    "built-in hand (--hand builtin)."
)
# Handedness margin: |cosine| between the dorsal normal and the wrist->thumb direction below this is ambiguous.
_HANDEDNESS_MARGIN = 0.02


class UnsafePickleError(pickle.UnpicklingError, ValueError):
    """A pickle asked for a global that a MANO file never needs (it may be malicious); nothing was executed."""


class _ChumpyStandIn:
    """Stands in for any chumpy class while unpickling; keeps the pickled state so the value can be recovered.

    A chumpy ``Ch`` pickles its ``__dict__`` (value under ``x``); older files may pass the value as an argument.
    """

    chumpy_name = "chumpy"
    args: tuple = ()
    state: dict = {}  # replaced, never mutated

    def __new__(cls, *args, **kwargs):
        obj = super().__new__(cls)
        obj.args = args
        obj.state = {}
        return obj

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        if isinstance(state, tuple) and len(state) == 2 and isinstance(state[1], dict):
            state = {**(state[0] or {}), **state[1]}  # (dict state, slot state)
        self.state = state if isinstance(state, dict) else {"x": state}

    def to_array(self) -> np.ndarray | None:
        """The wrapped value as a float64 array, or None when this is a chumpy expression without a stored value."""
        if "x" in self.state:
            value = self.state["x"]
        elif self.args:
            value = self.args[0]
        else:
            return None
        if isinstance(value, _ChumpyStandIn):
            return value.to_array()
        try:
            return np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError):
            return None


_chumpy_classes: dict[str, type] = {}


def _chumpy_class(module: str, name: str) -> type:
    key = f"{module}.{name}"
    if key not in _chumpy_classes:
        _chumpy_classes[key] = type(name, (_ChumpyStandIn,), {"chumpy_name": key})
    return _chumpy_classes[key]


def _numpy_module(name: str):
    """numpy's ``_core`` submodule ``name`` (``core`` before numpy 2), without the numpy.core deprecation."""
    import importlib

    try:
        return importlib.import_module(f"numpy._core.{name}")
    except ImportError:  # numpy < 2
        return importlib.import_module(f"numpy.core.{name}")


def _allowed_global(module: str, name: str) -> Any:
    """The object for an allowed pickle global, or None when it is not allowed."""
    if module == "chumpy" or module.startswith("chumpy."):
        return _chumpy_class(module, name)
    if module in ("numpy.core.multiarray", "numpy._core.multiarray") and name in ("_reconstruct", "scalar"):
        return getattr(_numpy_module("multiarray"), name)
    if module in ("numpy.core.numeric", "numpy._core.numeric") and name == "_frombuffer":
        return getattr(_numpy_module("numeric"), name)
    if module == "numpy" and name in ("ndarray", "dtype"):
        return getattr(np, name)
    if module in ("copy_reg", "copyreg") and name == "_reconstructor":
        import copyreg

        return copyreg._reconstructor
    if module in ("__builtin__", "builtins") and name in ("object", "set", "frozenset", "slice"):
        import builtins

        return getattr(builtins, name)
    if module == "_codecs" and name == "encode":  # bytes written by Python 3 at protocol 2
        import codecs

        return codecs.encode
    sparse_modules = {
        "csc_matrix": ("scipy.sparse.csc", "scipy.sparse._csc"),
        "csr_matrix": ("scipy.sparse.csr", "scipy.sparse._csr"),
    }
    if name in sparse_modules and module in (*sparse_modules[name], "scipy.sparse"):
        import scipy.sparse

        return getattr(scipy.sparse, name)
    return None


class _RestrictedUnpickler(pickle.Unpickler):
    """Builds only numpy arrays, scipy csc/csr matrices, a few builtins and chumpy stand-ins."""

    def find_class(self, module: str, name: str) -> Any:
        obj = _allowed_global(module, name)
        if obj is None:
            raise UnsafePickleError(
                f"refused to load the global '{module}.{name}': a MANO pickle only holds numpy arrays, scipy sparse "
                "matrices and chumpy objects, so this file is not a MANO model (and may be malicious); nothing "
                "from it was executed"
            )
        return obj


def _to_plain(key: str, value: Any) -> Any:
    if isinstance(value, _ChumpyStandIn):
        array = value.to_array()
        if array is None:
            logger.debug(
                "MANO key %r is a chumpy expression (%s) without a stored value", key, value.chumpy_name
            )
        return array
    return value


def load_mano_pickle(path: str | Path) -> dict:
    """Load a MANO ``.pkl`` safely (restricted unpickler, latin1) into a dict of plain numpy / scipy values.

    chumpy objects are replaced by float64 arrays; a chumpy expression without a stored value becomes None.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        UnsafePickleError: (a ``pickle.UnpicklingError`` and ``ValueError``) the file references a global outside
            the MANO allow-list, e.g. ``os.system``.
        ValueError: the file is not a readable pickle of a dict (truncated, random bytes, other content).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"MANO model file {str(path)!r} does not exist. {_DOWNLOAD_HINT}")
    try:
        with open(path, "rb") as handle:
            raw = _RestrictedUnpickler(handle, encoding="latin1").load()
    except UnsafePickleError as exc:
        raise UnsafePickleError(f"{path}: {exc}") from None
    except Exception as exc:  # whatever a corrupt pickle raises means the same to the user
        raise ValueError(
            f"{path} is not a readable MANO pickle ({type(exc).__name__}: {exc}); the file may be truncated or "
            f"corrupt — download {MANO_FILE_NAME} again. {_DOWNLOAD_HINT}"
        ) from exc
    if not isinstance(raw, dict):
        raise ValueError(
            f"{path} is not a readable MANO pickle: it holds a {type(raw).__name__}, expected a dict of arrays "
            f"as in {MANO_FILE_NAME}"
        )
    return {str(key): _to_plain(str(key), value) for key, value in raw.items()}


def _dense(value: Any) -> np.ndarray:
    if hasattr(value, "toarray"):  # scipy sparse
        value = value.toarray()
    return np.asarray(value, dtype=np.float64)


def mano_data_from_dict(d: dict, name: str = "mano") -> HandModelData:
    """Map a loaded MANO dict (see :func:`load_mano_pickle`) to :class:`HandModelData` (metres, MANO frame).

    ``posedirs`` (778, 3, 135) is reshaped to smplx's (135, 778 * 3) layout, ``kintree_table`` row 0 gives the
    parents, ``J_regressor`` may be sparse. Raises ValueError naming the key when one is missing or misshaped.
    """
    values = {}
    for key, want in MANO_SHAPES.items():
        if key not in d or d[key] is None:
            raise ValueError(
                f"MANO key {key!r} is missing (found keys: {sorted(d)}); the file does not look like "
                f"{MANO_FILE_NAME}"
            )
        try:
            value = _dense(d[key])
        except (TypeError, ValueError) as exc:
            raise ValueError(
                f"MANO key {key!r} is not numeric ({type(d[key]).__name__}); the file does not look like "
                f"{MANO_FILE_NAME}"
            ) from exc
        ok = value.shape == want
        if key == "shapedirs":  # more shape components than 10 are allowed, the first 10 are used
            ok = value.ndim == 3 and value.shape[:2] == want[:2] and value.shape[2] >= NUM_BETAS
        if not ok:
            raise ValueError(
                f"MANO key {key!r} has shape {value.shape}, expected {want}; the file does not look like "
                f"{MANO_FILE_NAME}"
            )
        if not np.isfinite(value).all():
            raise ValueError(f"MANO key {key!r} contains NaN or infinite values; the file is corrupt")
        values[key] = value
    posedirs = values["posedirs"]
    parents = values["kintree_table"][0].astype(np.int64)
    parents[0] = -1
    return HandModelData(
        name=name,
        v_template=values["v_template"],
        faces=values["f"].astype(np.int64),
        shapedirs=values["shapedirs"][:, :, :NUM_BETAS].copy(),
        posedirs=np.reshape(posedirs, (-1, posedirs.shape[-1])).T.copy(),  # same reshape as smplx
        J_regressor=values["J_regressor"],
        weights=values["weights"],
        parents=parents,
        tip_vertex_ids=np.array(MANO_TIP_VERTEX_IDS, dtype=np.int64),
    )


def handedness_score(v_template: np.ndarray, J_regressor: np.ndarray) -> float:
    """Signed cosine between the back-of-hand normal and the wrist->thumb direction (rest pose).

    With J the regressed joints (MANO order), a = J[4] - J[0] (wrist -> middle MCP), b = J[1] - J[7] (pinky MCP ->
    index MCP) and dorsal = a x b: the thumb joints J[13:16] lie on the palmar side of a right hand (< 0); a mirrored
    (left) hand gives the opposite sign.

    Args:
        v_template: (V, 3) rest vertices.
        J_regressor: (16, V) joint regressor (dense or scipy sparse).
    """
    joints = np.asarray(J_regressor @ np.asarray(v_template, dtype=np.float64))
    dorsal = np.cross(joints[4] - joints[0], joints[1] - joints[7])
    thumb = joints[13:16].mean(axis=0) - joints[0]
    denom = np.linalg.norm(dorsal) * np.linalg.norm(thumb)
    return float(dorsal @ thumb / denom) if denom > 0 else 0.0


def _left_hand_error(path: Path, reason: str) -> ValueError:
    return ValueError(
        f"{path} is a left-hand MANO model ({reason}); hoigen needs {MANO_FILE_NAME} (the right hand), which is in "
        "the same MANO download. Left hands are produced by mirroring the right hand."
    )


def load_mano_data(path: str | Path) -> tuple[HandModelData, dict]:
    """Load and check a right-hand MANO file: the :class:`HandModelData` and the raw dict (for smplx).

    Raises ValueError for a left-hand model (by file name or geometry), misshaped or corrupt files.
    """
    path = Path(path)
    if re.search(r"(^|[^a-z])left([^a-z]|$)", path.name.lower()):  # MANO_LEFT.pkl, left_hand.pkl, ...
        raise _left_hand_error(path, "by its file name")
    raw = load_mano_pickle(path)
    data = mano_data_from_dict(raw)
    score = handedness_score(data.v_template, data.J_regressor)
    if score > _HANDEDNESS_MARGIN:
        raise _left_hand_error(
            path, f"its thumb lies on the back of the hand: handedness score {score:+.3f} > 0"
        )
    if score > -_HANDEDNESS_MARGIN:
        logger.warning(
            "could not tell the handedness of %s (score %+.3f); assuming a right hand", path, score
        )
    return data, raw


def resolve_mano_path(mano: str | Path | None) -> Path:
    """Find ``MANO_RIGHT.pkl``.

    Args:
        mano: the ``.pkl`` file, or a directory holding ``MANO_RIGHT.pkl`` directly or under ``mano/``,
            ``models/`` or ``models/mano/``; None reads the directory from ``$HOIGEN_MANO_DIR``.

    Raises:
        FileNotFoundError: naming the paths searched and how to get MANO.
    """
    if mano is None or str(mano) == "":
        env = os.environ.get(MANO_ENV_VAR, "")
        if not env:
            raise FileNotFoundError(
                f"no MANO model given: neither --mano nor {MANO_ENV_VAR} is set. {_DOWNLOAD_HINT}"
            )
        mano, source = env, f"{MANO_ENV_VAR}={env!r}"
    else:
        source = f"--mano {str(mano)!r}"
    root = Path(mano).expanduser()
    if root.is_file():
        return root.resolve()
    if root.exists() and not root.is_dir():
        raise FileNotFoundError(f"{source}: {root} is neither a file nor a directory. {_DOWNLOAD_HINT}")
    if not root.exists() and root.suffix == ".pkl":
        raise FileNotFoundError(f"{source}: MANO model file {root} does not exist. {_DOWNLOAD_HINT}")
    searched = [root / sub / MANO_FILE_NAME for sub in MANO_SUBDIRS]
    for candidate in searched:
        if candidate.is_file():
            return candidate.resolve()
    lefts = [p.parent / "MANO_LEFT.pkl" for p in searched if (p.parent / "MANO_LEFT.pkl").is_file()]
    found_left = (
        f" Found only a left-hand model ({lefts[0]}); hoigen needs {MANO_FILE_NAME}." if lefts else ""
    )
    listed = ", ".join(str(p) for p in searched)
    missing = "" if root.is_dir() else f" (the directory {root} does not exist)"
    raise FileNotFoundError(
        f"{source}: {MANO_FILE_NAME} not found{missing}; searched {listed}.{found_left} {_DOWNLOAD_HINT}"
    )


def _import_backend():
    try:
        import smplx
        import torch
    except ImportError as exc:
        raise ImportError(
            f"the MANO hand needs torch and smplx ({exc}); install them with: pip install hoigen[mano]"
        ) from exc
    return torch, smplx


class ManoHand(HandModel):
    """MANO right hand evaluated with smplx (``use_pca=False, flat_hand_mean=True``, 10 betas), float64.

    ``data`` holds the same model as numpy arrays, so :mod:`hoigen.hands.lbs` gives identical results quickly.

    Args:
        mano: path to ``MANO_RIGHT.pkl`` or a directory holding it (see :func:`resolve_mano_path`); None reads
            ``$HOIGEN_MANO_DIR``.
    """

    def __init__(self, mano: str | Path | None = None):
        self.path = resolve_mano_path(mano)
        self.data, raw = load_mano_data(self.path)
        torch, smplx = _import_backend()
        self._model = self._build_smplx(torch, smplx, raw)
        logger.info("loaded MANO from %s", self.path)

    def _build_smplx(self, torch, smplx, raw: dict):
        data = self.data
        components = raw.get("hands_components")
        mean = raw.get("hands_mean")
        n_pose = (NUM_JOINTS - 1) * 3
        struct = SimpleNamespace(
            v_template=data.v_template,
            f=data.faces,
            shapedirs=data.shapedirs,
            posedirs=np.asarray(raw["posedirs"], dtype=np.float64),  # (778, 3, 135); smplx reshapes it
            J_regressor=data.J_regressor,
            weights=data.weights,
            kintree_table=np.stack([np.where(data.parents < 0, 0, data.parents), np.arange(NUM_JOINTS)]),
            hands_components=(
                np.asarray(components, dtype=np.float64)
                if components is not None and np.shape(components) == (n_pose, n_pose)
                else np.eye(n_pose)
            ),
            hands_mean=(
                np.asarray(mean, dtype=np.float64)
                if mean is not None and np.shape(mean) == (n_pose,)
                else np.zeros(n_pose)
            ),
        )
        stdout = io.StringIO()  # smplx prints a warning about having only 10 shape coefficients
        with contextlib.redirect_stdout(stdout):
            model = smplx.MANO(
                model_path=str(self.path),
                data_struct=struct,
                is_rhand=True,
                use_pca=False,
                flat_hand_mean=True,
                num_betas=NUM_BETAS,
                batch_size=1,
                dtype=torch.float64,
            )
        if stdout.getvalue().strip():
            logger.debug("smplx: %s", stdout.getvalue().strip())
        # smplx copies the arrays through float32 (utils.to_np): restore the exact float64 values.
        for buffer, value in (
            ("v_template", data.v_template),
            ("shapedirs", data.shapedirs),
            ("posedirs", data.posedirs),
            ("J_regressor", data.J_regressor),
            ("lbs_weights", data.weights),
        ):
            setattr(model, buffer, torch.from_numpy(np.ascontiguousarray(value, dtype=np.float64)))
        model.eval()
        return model

    def forward(self, params: HandParams) -> HandOutput:
        """Pose the hand with smplx; see :class:`HandOutput` (metres, the frame of ``params``)."""
        from hoigen.geometry.rotations import axis_angle_to_matrix
        from hoigen.hands.lbs import joint_transforms

        torch, _ = _import_backend()

        def tensor(x: np.ndarray):
            return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64))

        with torch.no_grad():
            out = self._model(
                betas=tensor(params.betas),
                global_orient=tensor(params.global_orient),
                hand_pose=tensor(params.hand_pose),
                transl=tensor(params.transl),
            )
        vertices = out.vertices.detach().cpu().numpy().astype(np.float64)
        # smplx 0.1.28 returns the 16 MANO joints; other versions may append 5 tip vertices: keep the first 16.
        joints16 = out.joints.detach().cpu().numpy().astype(np.float64)[:, :NUM_JOINTS]
        tips = vertices[:, np.asarray(self.data.tip_vertex_ids)]
        joints21 = np.concatenate([joints16, tips], axis=1)[:, OPENPOSE_FROM_MANO]
        # smplx does not return the joint transforms: the numpy forward kinematics gives the same ones.
        v_shaped = self.data.v_template[None] + np.einsum("vck,bk->bvc", self.data.shapedirs, params.betas)
        rest_joints = np.einsum("jv,bvc->bjc", self.data.J_regressor, v_shaped)
        world = joint_transforms(self.data.parents, axis_angle_to_matrix(params.full_pose()), rest_joints)
        world[:, :, :3, 3] += params.transl[:, None]
        return HandOutput(vertices=vertices, joints=joints21, joints_mano=joints16, joint_transforms=world)

    def metadata(self) -> dict:
        return {"model": "mano", "path": self.path.name}
