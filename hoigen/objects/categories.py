"""Object categories: the NOCS class table and an honest YCB -> NOCS mapping.

NOCS classes (SPEC §2): 1 bottle, 2 bowl, 3 camera, 4 can, 5 laptop, 6 mug; class 0 is "not a NOCS class", in
which case the category is the object's own name (for YCB, the name after the numeric id).
"""

from __future__ import annotations

import re

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
