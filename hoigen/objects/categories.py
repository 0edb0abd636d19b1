"""Object categories: the NOCS class table and an honest YCB -> NOCS mapping.

NOCS classes (SPEC §2): 1 bottle, 2 bowl, 3 camera, 4 can, 5 laptop, 6 mug; class 0 is "not a NOCS class", in
which case the category is the object's own name (for YCB, the name after the numeric id).
"""

from __future__ import annotations

import re

import numpy as np

NOCS_CLASSES: dict[str, int] = {"bottle": 1, "bowl": 2, "camera": 3, "can": 4, "laptop": 5, "mug": 6}
NOCS_SYNSETS: dict[str, str] = {
    "bottle": "02876657",
    "bowl": "02880940",
    "camera": "02942699",
    "can": "02946921",
    "laptop": "03642806",
    "mug": "03797390",
}
# Rotational symmetry of the category about its canonical up axis ("mug" only while its handle is hidden).
NOCS_SYMMETRY: dict[str, str | None] = {
    "bottle": "continuous-up",
    "bowl": "continuous-up",
    "camera": None,
    "can": "continuous-up",
    "laptop": None,
    "mug": "continuous-up-if-handle-hidden",
}

# Only the YCB objects whose shape really is that NOCS category. Boxy "cans" (potted meat, spam) are not NOCS
# cans (NOCS cans are cylinders); spray and squeeze bottles are bottles.
YCB_TO_NOCS: dict[str, str] = {
    "001_chips_can": "can",
    "002_master_chef_can": "can",
    "005_tomato_soup_can": "can",
    "007_tuna_fish_can": "can",
    "006_mustard_bottle": "bottle",
    "021_bleach_cleanser": "bottle",
    "022_windex_bottle": "bottle",
    "024_bowl": "bowl",
    "025_mug": "mug",
}

_YCB_ID = re.compile(r"^(\d{3})(?:-[a-z])?_([a-z0-9_]+)$")  # 025_mug, 065-a_cups


def is_ycb_id(object_id: str) -> bool:
    """True for ids in the YCB form ``NNN_name``."""
    return bool(_YCB_ID.match(object_id))


def classify(object_id: str) -> tuple[str, int, str | None]:
    """Category, NOCS class id and symmetry for an object id.

    A YCB id in :data:`YCB_TO_NOCS` gets its NOCS class; any other id gets class 0 and, as category, the YCB name
    without its number (``031_spoon`` -> ``spoon``) or the id itself.
    """
    category = YCB_TO_NOCS.get(object_id)
    if category is not None:
        return category, NOCS_CLASSES[category], NOCS_SYMMETRY[category]
    match = _YCB_ID.match(object_id)
    return (match.group(2) if match else object_id), 0, None


# ---------------------------------------------------------------------------------------------------------------
# geometric symmetry of one instance

SYMMETRY_TOLERANCE = 0.01
"""An object is continuously symmetric about its up axis when turning it about that axis (through the canonical
origin) moves its surface by at most this fraction of its scale (bounding-box diagonal), on average, at every
tested angle: 1 % is ~2 mm for a 20 cm bottle. A mustard bottle moves by ~4 % of its scale, a YCB can by < 0.5 %."""
SYMMETRY_ANGLES_DEG = (51.43, 102.86, 154.29, 205.71, 257.14, 308.57, 90.0, 180.0)
_SYMMETRY_POINTS = 2000
_SYMMETRY_REFERENCE_POINTS = 30000


def symmetry_deviation(mesh, axis=(0.0, 1.0, 0.0), angles_deg=SYMMETRY_ANGLES_DEG) -> float:
    """Largest mean surface displacement (metres) when ``mesh`` turns about ``axis`` (3,) through the origin.

    Measured on surface samples: the mean distance from the turned samples to a dense reference sample of the
    surface, minus that distance for unturned samples (the sampling floor), maximised over ``angles_deg``.
    Deterministic (fixed sampling seeds).
    """
    import trimesh
    from scipy.spatial import cKDTree

    axis = np.asarray(axis, dtype=np.float64)
    axis = axis / np.linalg.norm(axis)
    reference, _ = trimesh.sample.sample_surface(mesh, _SYMMETRY_REFERENCE_POINTS, seed=1)
    points, _ = trimesh.sample.sample_surface(mesh, _SYMMETRY_POINTS, seed=2)
    tree = cKDTree(np.asarray(reference))
    points = np.asarray(points, dtype=np.float64)
    floor = float(tree.query(points)[0].mean())
    worst = 0.0
    for angle in angles_deg:
        R = trimesh.transformations.rotation_matrix(np.deg2rad(angle), axis)[:3, :3]
        worst = max(worst, float(tree.query(points @ R.T)[0].mean()) - floor)
    return max(worst, 0.0)


def instance_symmetry(
    mesh, category: str, scale: float, axis=(0.0, 1.0, 0.0), tolerance: float = SYMMETRY_TOLERANCE
) -> tuple[str | None, dict]:
    """Symmetry label of one instance of ``category``: the category's (:data:`NOCS_SYMMETRY`) when its geometry
    has it, else None; plus the measurement ``{"deviation_m", "tolerance_m", "symmetric"}`` ({} when the category
    has no continuous symmetry to test).

    ``"continuous-up"`` categories (bottle, bowl, can) are tested with :func:`symmetry_deviation`; a mug keeps
    ``"continuous-up-if-handle-hidden"`` (its handle breaks the symmetry by design).
    """
    label = NOCS_SYMMETRY.get(category)
    if label != "continuous-up":
        return label, {}
    deviation = symmetry_deviation(mesh, axis)
    limit = tolerance * float(scale)
    symmetric = deviation <= limit
    return (label if symmetric else None), {
        "deviation_m": deviation,
        "tolerance_m": limit,
        "symmetric": bool(symmetric),
    }
