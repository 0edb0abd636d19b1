"""Independent geometry helpers shared by the tests (deliberately not hoigen's own code)."""

from __future__ import annotations

import numpy as np


def geodesic_angle(r1: np.ndarray, r2: np.ndarray) -> np.ndarray:
    """Angle (radians) of r1^T r2 for (..., 3, 3) rotations, accurate near 0 and near pi."""
    rel = np.swapaxes(r1, -1, -2) @ r2
    cos = (np.trace(rel, axis1=-2, axis2=-1) - 1.0) / 2.0
    sin = np.linalg.norm(rel - np.swapaxes(rel, -1, -2), axis=(-2, -1)) / (2.0 * np.sqrt(2.0))
    return np.arctan2(sin, cos)


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A uniformly random proper rotation (QR of a Gaussian matrix)."""
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q
