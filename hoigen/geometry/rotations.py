"""Rotation helpers on arrays of any leading batch shape.

Axis-angle vectors are ``(..., 3)`` float (radians, the norm is the angle); rotation matrices are ``(..., 3, 3)``.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation


def axis_angle_to_matrix(rotvec: np.ndarray) -> np.ndarray:
    """Rodrigues' formula. ``rotvec``: (..., 3) radians -> (..., 3, 3)."""
    rotvec = np.asarray(rotvec, dtype=np.float64)
    angle = np.linalg.norm(rotvec, axis=-1, keepdims=True)
    safe = np.where(angle < 1e-12, 1.0, angle)
    axis = rotvec / safe
    x, y, z = axis[..., 0], axis[..., 1], axis[..., 2]
    zeros = np.zeros_like(x)
    skew = np.stack([zeros, -z, y, z, zeros, -x, -y, x, zeros], axis=-1).reshape(rotvec.shape[:-1] + (3, 3))
    s = np.sin(angle)[..., None]
    c = np.cos(angle)[..., None]
    eye = np.broadcast_to(np.eye(3), skew.shape)
    return eye + s * skew + (1.0 - c) * (skew @ skew)


def matrix_to_axis_angle(matrix: np.ndarray) -> np.ndarray:
    """Inverse of :func:`axis_angle_to_matrix`. ``matrix``: (..., 3, 3) -> (..., 3), angle in [0, pi]."""
    matrix = np.asarray(matrix, dtype=np.float64)
    flat = matrix.reshape(-1, 3, 3)
    out = Rotation.from_matrix(flat).as_rotvec()
    return out.reshape(matrix.shape[:-2] + (3,))


def rotation_about(axis: np.ndarray, angle: np.ndarray | float) -> np.ndarray:
    """Rotation matrices about unit ``axis`` (3,) by ``angle`` (...,) radians -> (..., 3, 3)."""
    axis = np.asarray(axis, dtype=np.float64)
    axis = axis / np.linalg.norm(axis)
    angle = np.asarray(angle, dtype=np.float64)
    return axis_angle_to_matrix(angle[..., None] * axis)


def slerp_axis_angle(start: np.ndarray, end: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Spherical linear interpolation of rotations, independently per rotation.

    Args:
        start, end: (J, 3) axis-angle rotations.
        t: (T,) interpolation fractions in [0, 1]; 0 gives ``start`` and 1 gives ``end`` exactly.

    Returns:
        (T, J, 3) axis-angle rotations along the shortest geodesic from ``start`` to ``end``.
    """
    start = np.asarray(start, dtype=np.float64).reshape(-1, 3)
    end = np.asarray(end, dtype=np.float64).reshape(-1, 3)
    t = np.asarray(t, dtype=np.float64).reshape(-1)
    r0 = Rotation.from_rotvec(start)
    delta = (r0.inv() * Rotation.from_rotvec(end)).as_rotvec()  # (J, 3), shortest arc
    out = np.empty((t.size, start.shape[0], 3))
    for k, tk in enumerate(t):
        if tk == 0.0:
            out[k] = start
        elif tk == 1.0:
            out[k] = end
        else:
            out[k] = (r0 * Rotation.from_rotvec(tk * delta)).as_rotvec()
    return out
