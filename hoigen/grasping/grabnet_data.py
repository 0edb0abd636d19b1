"""GrabNet's data side, torch-free: the weights folder, the BPS basis and encoding, object preprocessing, and the
factory that picks a grasp sampler for ``GraspConfig.method``.

Conventions (REFERENCE.md, "GrabNet"): metres; GrabNet sees an object centred on its bounding-box centre, as 10 000
surface points, encoded by the distance from each of the 4096 basis points of the user's ``bps.npz`` to the nearest
object point. GrabNet's own pipeline shrinks an object whose largest vertex norm exceeds 0.3 m to 0.08 m; a grasp of
the shrunken object does not touch the real one, so hoigen refuses such objects (:func:`grabnet_size_problem`)
instead. hoigen's canonical frame is already centred on the bounding box, so the GrabNet object frame equals it up to
the optional random rotation the sampler applies.

The networks and the sampler live in :mod:`hoigen.grasping.grabnet` (needs torch).
"""

from __future__ import annotations

import logging
import os
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from scipy.spatial import cKDTree

logger = logging.getLogger(__name__)

GRABNET_ENV_VAR = "HOIGEN_GRABNET_DIR"
COARSENET_FILE = "coarsenet.pt"
REFINENET_FILE = "refinenet.pt"
BPS_FILE = "bps.npz"
GRABNET_FILES = (COARSENET_FILE, REFINENET_FILE, BPS_FILE)
BPS_POINTS = 4096
BPS_RADIUS = 0.15  # metres: the basis lies inside this ball
GRABNET_MAX_RADIUS = 0.3  # metres: GrabNet rescales objects whose largest vertex norm exceeds this ...
GRABNET_RESCALED_RADIUS = 0.08  # ... to this
OBJECT_POINTS = 10_000
MANO_REQUIRED = "GrabNet predicts MANO parameters; pass --hand mano --mano DIR"
FLAG_HINT = f"pass --grabnet DIR (or set {GRABNET_ENV_VAR}=DIR)"
DOWNLOAD_HINT = (
    "GrabNet's weights are not shipped with hoigen: register at https://grab.is.tue.mpg.de, download the GrabNet "
    f"models (coarsenet.pt, refinenet.pt) and its bps.npz, then {FLAG_HINT}; the folder is searched recursively, "
    "so GrabNet's own layout (grabnet/models/*.pt, grabnet/configs/bps.npz) works as is"
)


class GrabNetAssetError(ValueError):
    """A GrabNet file that exists but cannot be used: unreadable, corrupt, or not matching GrabNet's layout."""


# -- the weights folder ---------------------------------------------------------------------------------------
def resolve_grabnet_dir(weights: str | Path | None) -> tuple[Path, str]:
    """The GrabNet folder and how it was given (for messages).

    Args:
        weights: the folder; None or "" reads ``$HOIGEN_GRABNET_DIR``.

    Raises:
        FileNotFoundError: nothing given, or the folder does not exist.
    """
    if weights is None or str(weights) == "":
        env = os.environ.get(GRABNET_ENV_VAR, "")
        if not env:
            raise FileNotFoundError(
                f"no GrabNet weights given: neither --grabnet nor {GRABNET_ENV_VAR} is set. {DOWNLOAD_HINT}"
            )
        weights, source = env, f"{GRABNET_ENV_VAR}={env!r}"
    else:
        source = f"--grabnet {str(weights)!r}"
    root = Path(weights).expanduser()
    if not root.is_dir():
        what = "is a file, not a folder" if root.exists() else "does not exist"
        raise FileNotFoundError(f"{source}: the GrabNet folder {root} {what}. {DOWNLOAD_HINT}")
    return root, source


def find_grabnet_files(weights: str | Path | None) -> dict[str, Path]:
    """Find ``coarsenet.pt``, ``refinenet.pt`` and ``bps.npz`` under the GrabNet folder (recursively).

    Where a name occurs more than once the shallowest path wins (then the alphabetically first).

    Returns:
        {file name: path} for the three files.

    Raises:
        FileNotFoundError: naming the missing files, the folder and the flag.
    """
    root, source = resolve_grabnet_dir(weights)
    found, missing = {}, []
    for name in GRABNET_FILES:
        hits = sorted((p for p in root.rglob(name) if p.is_file()), key=lambda p: (len(p.parts), str(p)))
        if not hits:
            missing.append(name)
            continue
        found[name] = hits[0]
        if len(hits) > 1:
            logger.info("GrabNet: %d copies of %s under %s; using %s", len(hits), name, root, hits[0])
    if missing:
        raise FileNotFoundError(
            f"{source}: {', '.join(missing)} not found under {root} (searched recursively). {DOWNLOAD_HINT}"
        )
    return found


# -- BPS --------------------------------------------------------------------------------------------------------
def load_bps_basis(path: str | Path) -> np.ndarray:
    """GrabNet's BPS basis from ``bps.npz`` (key ``basis``).

    Returns:
        (4096, 3) float64 basis points, metres, GrabNet's object frame.

    Raises:
        FileNotFoundError: no such file.
        GrabNetAssetError: unreadable file, no ``basis`` key, wrong shape or non-finite values.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"GrabNet BPS basis {path} does not exist; {FLAG_HINT}")
    try:
        with np.load(path, allow_pickle=False) as data:
            keys = list(data.files)
            basis = np.asarray(data["basis"], dtype=np.float64) if "basis" in keys else None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise GrabNetAssetError(
            f"{path} is not a readable .npz file ({type(exc).__name__}: {exc}); it may be truncated or corrupt — "
            f"download GrabNet's bps.npz again and {FLAG_HINT}"
        ) from exc
    if basis is None:
        raise GrabNetAssetError(
            f"{path} has no 'basis' array (found {keys}); it is not GrabNet's bps.npz — {FLAG_HINT}"
        )
    shape = basis.shape
    while basis.ndim > 2 and basis.shape[0] == 1:  # tolerate a leading batch axis (1, 4096, 3)
        basis = basis[0]
    if basis.shape != (BPS_POINTS, 3):
        raise GrabNetAssetError(
            f"{path}: the BPS basis has shape {shape}, expected ({BPS_POINTS}, 3); GrabNet's weights only work with "
            f"the exact basis they were trained with (bps.npz from the GrabNet download) — {FLAG_HINT}"
        )
    if not np.isfinite(basis).all():
        raise GrabNetAssetError(f"{path}: the BPS basis contains NaN or infinite values; the file is corrupt")
    radius = float(np.linalg.norm(basis, axis=1).max())
    if radius > 1.5 * BPS_RADIUS:
        logger.warning(
            "%s: BPS basis points reach %.3f m from the centre, GrabNet's lie within %.2f m; is this GrabNet's basis?",
            path,
            radius,
            BPS_RADIUS,
        )
    return basis


def bps_encode(
    basis: np.ndarray, points: np.ndarray | cKDTree, rotation: np.ndarray | None = None
) -> np.ndarray:
    """BPS distances: per basis point, the distance to the nearest object point.

    Args:
        basis: (K, 3) basis points, metres, GrabNet frame.
        points: (N, 3) object points (or a cKDTree of them), metres, object frame.
        rotation: (3, 3) GrabNet frame = ``rotation`` @ object frame; None = identity. The distances are those of
            the rotated object; the basis is turned back instead of the object (same distances, one tree).

    Returns:
        (K,) float64 distances, metres.
    """
    tree = points if isinstance(points, cKDTree) else cKDTree(np.asarray(points, dtype=np.float64))
    query = np.asarray(basis, dtype=np.float64)
    if rotation is not None:
        query = query @ np.asarray(rotation, dtype=np.float64)  # rows: R^T b
    return tree.query(query)[0]


# -- objects ----------------------------------------------------------------------------------------------------
def grabnet_size_problem(mesh) -> str | None:
    """Why GrabNet cannot grasp this object at its real size, or None when it can.

    Args:
        mesh: the object in hoigen's canonical frame (metres, bounding-box centred).
    """
    radius = float(np.linalg.norm(np.asarray(mesh.vertices), axis=1).max())
    if radius > GRABNET_MAX_RADIUS:
        return (
            f"the object reaches {radius:.3f} m from its centre, more than the {GRABNET_MAX_RADIUS} m GrabNet was "
            f"trained for; GrabNet would shrink it to {GRABNET_RESCALED_RADIUS} m and its grasp would not touch the "
            "real-size object, so hoigen refuses it — use --grasp contact for large objects"
        )
    return None


def object_points(mesh, count: int = OBJECT_POINTS, seed: int = 0) -> np.ndarray:
    """``count`` points spread uniformly by area over the surface (deterministic: a fixed ``seed``, so the GrabNet
    input of an object is a function of its mesh alone).

    Args:
        mesh: a trimesh.Trimesh, metres.

    Returns:
        (count, 3) float64 points, the mesh's frame.
    """
    triangles = np.asarray(mesh.triangles, dtype=np.float64)
    areas = 0.5 * np.linalg.norm(
        np.cross(triangles[:, 1] - triangles[:, 0], triangles[:, 2] - triangles[:, 0]), axis=1
    )
    total = float(areas.sum())
    if not np.isfinite(total) or total <= 0.0:
        raise ValueError("the object mesh has no surface area; GrabNet needs surface points")
    gen = np.random.default_rng(seed)
    face = gen.choice(len(areas), size=count, p=areas / total)
    u, v = gen.random((2, count))
    fold = u + v > 1.0
    u[fold], v[fold] = 1.0 - u[fold], 1.0 - v[fold]
    tri = triangles[face]
    return tri[:, 0] + u[:, None] * (tri[:, 1] - tri[:, 0]) + v[:, None] * (tri[:, 2] - tri[:, 0])


def describe_grabnet_folder(weights: str | Path | None) -> str:
    """One line for ``hoigen doctor`` about the GrabNet folder (None reads ``$HOIGEN_GRABNET_DIR``): the files are
    found and the basis checked; with torch installed the checkpoints are also loaded strictly.

    Raises the errors of :func:`find_grabnet_files`, :func:`load_bps_basis` and ``GrabNet.load``.
    """
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        files = find_grabnet_files(weights)
        load_bps_basis(files[BPS_FILE])
        return (
            f"{files[COARSENET_FILE].parent}: files found, BPS basis OK; the checkpoints need torch "
            "(pip install hoigen[mano]) to be checked and used"
        )
    from hoigen.grasping.grabnet import describe_grabnet_dir

    return describe_grabnet_dir(weights)


# -- the sampler factory ----------------------------------------------------------------------------------------
def check_grabnet_hand(hand) -> None:
    """Raise ValueError unless ``hand`` is a MANO right hand (GrabNet predicts MANO parameters)."""
    from hoigen.hands.mano import handedness_score

    name = getattr(hand, "name", type(hand).__name__)
    if name != "mano":
        raise ValueError(f"{MANO_REQUIRED} (the hand is {name!r})")
    score = handedness_score(hand.data.v_template, hand.data.J_regressor)
    if score > 0.0:
        raise ValueError(
            f"the MANO hand is a left hand (handedness score {score:+.3f}); GrabNet predicts right hands — "
            "pass MANO_RIGHT.pkl with --hand mano --mano DIR"
        )


def grasp_sampler_factory(config, hand) -> Callable:
    """A function ``obj -> sampler`` for ``config.method`` (``contact``, ``contact-v1`` or ``grabnet``); samplers have
    ``.sample(rng) -> Grasp``.

    For ``grabnet`` the hand is checked and the weights (``config.grabnet`` or ``$HOIGEN_GRABNET_DIR``) are loaded
    once, here, so a missing MANO model or missing/corrupt weights fail before any sample is planned.

    Args:
        config: a GraspConfig.
        hand: the HandModel grasps are made with.
    """
    if config.method == "grabnet":
        check_grabnet_hand(hand)
        from hoigen.grasping.grabnet import GrabNet, GrabNetSampler

        model = GrabNet.load(config.grabnet or None)
        return lambda obj: GrabNetSampler(obj, hand, config, model)
    if config.method == "contact-v1":
        from hoigen.grasping.contact_v1 import ContactV1Sampler

        return lambda obj: ContactV1Sampler(obj, hand, config)
    from hoigen.grasping.contact import ContactGraspSampler

    return lambda obj: ContactGraspSampler(obj, hand, config)
