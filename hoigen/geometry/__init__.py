"""Geometry core: rotations, rigid transforms and cameras (numpy/scipy only).

Conventions (SPEC §2): metres and radians; 4x4 homogeneous rigid transforms named ``T_a_b`` map points from frame
``b`` to frame ``a``; cameras use the OpenCV convention (x right, y down, z forward).
"""

from hoigen.geometry.rotations import (
    axis_angle_to_matrix,
    matrix_to_axis_angle,
    rotation_about,
    slerp_axis_angle,
)
from hoigen.geometry.transforms import (
    apply_transform,
    invert_transform,
    make_transform,
    umeyama,
)

__all__ = [
    "apply_transform",
    "axis_angle_to_matrix",
    "invert_transform",
    "make_transform",
    "matrix_to_axis_angle",
    "rotation_about",
    "slerp_axis_angle",
    "umeyama",
]
