"""Per-pixel geometry recovered exactly from the id pass.

For every pixel that the rasteriser marked with (instance, triangle), the camera ray through the pixel centre is
intersected with that triangle: this gives the exact 3D point (so depth is not limited by the depth buffer), and
barycentric coordinates with which any per-vertex attribute — normals, canonical coordinates (NOCS), texture
coordinates, colours, tracking colours — is interpolated. OpenCV camera frame, metres, pixel centres at integers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PixelHits:
    """Surface points seen by the camera (n = labelled pixels).

    Attributes:
        ys, xs: (n,) pixel rows and columns.
        instance: (n,) instance id of each pixel; face: (n,) triangle index within that instance's mesh.
        bary: (n, 3) barycentric coordinates of the hit in its triangle.
        points: (n, 3) camera-frame hit points, metres.
        backfacing: (n,) True where the triangle faces away from the camera (open meshes).
    """

    ys: np.ndarray
    xs: np.ndarray
    instance: np.ndarray
    face: np.ndarray
    bary: np.ndarray
    points: np.ndarray
    backfacing: np.ndarray

    def select(self, instance: int) -> np.ndarray:
        return np.flatnonzero(self.instance == instance)


def pixel_rays(xs: np.ndarray, ys: np.ndarray, K: np.ndarray) -> np.ndarray:
    """(n, 3) rays (z = 1) through pixel centres ``(xs, ys)``."""
    return np.stack([(xs - K[0, 2]) / K[0, 0], (ys - K[1, 2]) / K[1, 1], np.ones(len(xs))], axis=1)


def pixel_hits(
    instance_map: np.ndarray,
    face_map: np.ndarray,
    meshes: dict[int, tuple[np.ndarray, np.ndarray]],
    K: np.ndarray,
) -> PixelHits:
    """Intersect each labelled pixel's ray with its triangle.

    Args:
        instance_map: (H, W) uint8; face_map: (H, W) int64 (-1 = none).
        meshes: instance id -> (vertices (V, 3) camera frame, faces (F, 3)).
        K: (3, 3) intrinsics.
    """
    ys, xs = np.nonzero(instance_map)
    inst = instance_map[ys, xs]
    face = face_map[ys, xs]
    bary = np.zeros((len(ys), 3))
    points = np.zeros((len(ys), 3))
    back = np.zeros(len(ys), dtype=bool)
    rays = pixel_rays(xs, ys, K)
    for instance, (vertices, faces) in meshes.items():
        sel = np.flatnonzero(inst == instance)
        if len(sel) == 0:
            continue
        # per-face terms once per mesh (far fewer faces than pixels), then gathered per pixel
        v0 = vertices[faces[:, 0]]
        e1 = vertices[faces[:, 1]] - v0
        e2 = vertices[faces[:, 2]] - v0
        normal = np.cross(e1, e2)
        offset = np.einsum("ij,ij->i", normal, v0)
        d00, d01, d11 = (e1 * e1).sum(1), (e1 * e2).sum(1), (e2 * e2).sum(1)
        den = d00 * d11 - d01 * d01
        den = np.where(np.abs(den) < 1e-30, 1e-30, den)
        f = face[sel]
        d = rays[sel]
        denom = np.einsum("ij,ij->i", normal[f], d)
        safe = np.where(np.abs(denom) < 1e-18, 1e-18, denom)
        p = d * (offset[f] / safe)[:, None]
        rel = p - v0[f]
        d20 = np.einsum("ij,ij->i", rel, e1[f])
        d21 = np.einsum("ij,ij->i", rel, e2[f])
        b1 = (d11[f] * d20 - d01[f] * d21) / den[f]
        b2 = (d00[f] * d21 - d01[f] * d20) / den[f]
        bary[sel] = np.stack([1.0 - b1 - b2, b1, b2], axis=1)
        points[sel] = p
        back[sel] = denom > 0.0  # the ray runs along the normal: we see the triangle's back
    return PixelHits(ys, xs, inst, face, bary, points, back)


def interpolate(hits: PixelHits, sel: np.ndarray, faces: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Per-vertex ``values`` (V, C) interpolated at the hits ``sel`` of one instance -> (len(sel), C)."""
    corner = values[faces[hits.face[sel]]]  # (n, 3, C)
    return np.einsum("ik,ikc->ic", hits.bary[sel], corner)


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """(V, 3) area-weighted unit vertex normals (outward for consistently wound meshes)."""
    tri = vertices[faces]
    face_n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])  # length = 2 x area
    corners = faces.reshape(-1)
    out = np.stack(
        [np.bincount(corners, weights=np.repeat(face_n[:, c], 3), minlength=len(vertices)) for c in range(3)],
        axis=1,
    )
    norm = np.linalg.norm(out, axis=1, keepdims=True)
    return out / np.where(norm < 1e-20, 1.0, norm)


def bbox_xywh(mask: np.ndarray) -> list[int]:
    """Tight pixel box ``[x, y, w, h]`` of a boolean mask (BOP style), ``[-1, -1, -1, -1]`` when empty."""
    ys, xs = np.nonzero(mask)
    if len(ys) == 0:
        return [-1, -1, -1, -1]
    return [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]


def encode_depth(depth_m: np.ndarray, depth_scale: float) -> np.ndarray:
    """Metres -> uint16 with ``value * depth_scale = millimetres`` (BOP); 0 = no surface or out of range."""
    value = np.round(depth_m * 1000.0 / depth_scale)
    value[(depth_m <= 0) | (value > 65535)] = 0
    return value.astype(np.uint16)


def encode_unit_normals(normals: np.ndarray) -> np.ndarray:
    """Unit normals (..., 3) -> uint8 (n + 1) / 2 * 255."""
    return np.clip(np.round((normals + 1.0) * 0.5 * 255.0), 0, 255).astype(np.uint8)


def encode_nocs(nocs: np.ndarray) -> np.ndarray:
    """NOCS coordinates (..., 3) in [-0.5, 0.5] -> uint16 (x + 0.5) * 65535."""
    return np.clip(np.round((nocs + 0.5) * 65535.0), 0, 65535).astype(np.uint16)
