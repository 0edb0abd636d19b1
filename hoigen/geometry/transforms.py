"""Rigid and similarity transforms as 4x4 homogeneous matrices (metres)."""

from __future__ import annotations

import numpy as np


def make_transform(rotation: np.ndarray, translation: np.ndarray) -> np.ndarray:
    """(..., 3, 3) rotation and (..., 3) translation -> (..., 4, 4) transform."""
    rotation = np.asarray(rotation, dtype=np.float64)
    translation = np.asarray(translation, dtype=np.float64)
    out = np.zeros(rotation.shape[:-2] + (4, 4))
    out[..., :3, :3] = rotation
    out[..., :3, 3] = translation
    out[..., 3, 3] = 1.0
    return out


def invert_transform(transform: np.ndarray) -> np.ndarray:
    """Inverse of a rigid (..., 4, 4) transform."""
    transform = np.asarray(transform, dtype=np.float64)
    rot_t = np.swapaxes(transform[..., :3, :3], -1, -2)
    return make_transform(rot_t, -(rot_t @ transform[..., :3, 3:])[..., 0])


def apply_transform(transform: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Map ``points`` (N, 3) with a (4, 4) transform -> (N, 3)."""
    transform = np.asarray(transform, dtype=np.float64)
    points = np.asarray(points, dtype=np.float64)
    return points @ transform[:3, :3].T + transform[:3, 3]


def umeyama(
    source: np.ndarray, target: np.ndarray, with_scale: bool = True
) -> tuple[float, np.ndarray, np.ndarray]:
    """Least-squares similarity transform with ``target ≈ s * R @ source + t`` (Umeyama 1991).

    Args:
        source, target: (N, 3) corresponding points, N >= 3 and not collinear.
        with_scale: estimate ``s``; otherwise ``s = 1``.

    Returns:
        ``(s, R, t)`` with R (3, 3) a proper rotation and t (3,).
    """
    source = np.asarray(source, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    if source.shape != target.shape or source.ndim != 2 or source.shape[1] != 3 or source.shape[0] < 3:
        raise ValueError(
            f"umeyama needs two (N, 3) arrays of the same shape with N >= 3, got {source.shape} and {target.shape}"
        )
    mu_s = source.mean(axis=0)
    mu_t = target.mean(axis=0)
    src = source - mu_s
    tgt = target - mu_t
    cov = tgt.T @ src / source.shape[0]
    u, d, vt = np.linalg.svd(cov)
    sign = np.eye(3)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[2, 2] = -1.0
    rot = u @ sign @ vt
    scale = 1.0
    if with_scale:
        var_s = (src**2).sum() / source.shape[0]
        scale = float(np.trace(np.diag(d) @ sign) / var_s)
    trans = mu_t - scale * rot @ mu_s
    return scale, rot, trans
