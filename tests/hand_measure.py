"""Measurements of a hand mesh for the v2 hand's tests: anthropometric dimensions, inside tests (generalised
winding numbers) and self-intersection between non-adjacent parts."""

from __future__ import annotations

import numpy as np
import trimesh
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from hoigen.hands.model import FINGER_JOINTS, FINGERS, MANO_PARENTS


def winding_numbers(
    points: np.ndarray, vertices: np.ndarray, faces: np.ndarray, chunk: int = 256
) -> np.ndarray:
    """Generalised winding number (Jacobson et al. 2013) of each point (N,) w.r.t. the triangles: ~1 inside a
    closed outward-oriented mesh, ~0 outside, ~0.5 on the surface."""
    tri = vertices[faces]  # (F, 3, 3)
    out = np.zeros(len(points))
    for start in range(0, len(points), chunk):
        p = points[start : start + chunk]
        a, b, c = (tri[None, :, k] - p[:, None] for k in range(3))  # (n, F, 3)
        la, lb, lc = (np.linalg.norm(x, axis=-1) for x in (a, b, c))
        det = np.einsum("nfi,nfi->nf", a, np.cross(b, c))
        dot_ab = np.einsum("nfi,nfi->nf", a, b)
        dot_bc = np.einsum("nfi,nfi->nf", b, c)
        dot_ca = np.einsum("nfi,nfi->nf", c, a)
        denom = la * lb * lc + dot_ab * lc + dot_bc * la + dot_ca * lb
        out[start : start + chunk] = np.arctan2(det, denom).sum(axis=1) / (2.0 * np.pi)
    return out


def section_loops(mesh: trimesh.Trimesh, origin: np.ndarray, normal: np.ndarray) -> list[np.ndarray]:
    """Points of each connected loop of the mesh's section by a plane."""
    segments = trimesh.intersections.mesh_plane(mesh, normal, origin)
    if len(segments) == 0:
        return []
    pts = segments.reshape(-1, 3)
    _, inverse = np.unique(np.round(pts / 1e-9).astype(np.int64), axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    n = int(inverse.max()) + 1
    graph = coo_matrix((np.ones(len(segments)), (inverse[0::2], inverse[1::2])), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    point_labels = labels[inverse]
    return [pts[point_labels == k] for k in np.unique(point_labels)]


def _digit_axis(joints: np.ndarray, finger: str) -> tuple[np.ndarray, np.ndarray]:
    chain = FINGER_JOINTS[finger]
    d = joints[chain[2]] - joints[chain[0]]
    return joints[chain[0]], d / np.linalg.norm(d)


def _side(d: np.ndarray) -> np.ndarray:
    side = np.cross(d, [0.0, 1.0, 0.0])
    return side / np.linalg.norm(side)


def own_loop(mesh, origin, d):
    """The section loop around ``origin`` (plane normal ``d``): the loop nearest to it."""
    loops = section_loops(mesh, origin, d)
    return min(loops, key=lambda pts: np.linalg.norm(pts - origin, axis=1).min()) if loops else None


def finger_measures(mesh: trimesh.Trimesh, joints: np.ndarray, labels: np.ndarray) -> dict:
    """Per digit: ``length`` (base crease to tip, metres) and ``breadth`` (at mid middle phalanx; the thumb at
    mid distal phalanx). The base crease is where the digit's section first separates from the rest of the hand
    (the web), scanning from the first phalanx joint outward in 0.5 mm steps."""
    out = {}
    for k, finger in enumerate(FINGERS):
        chain = FINGER_JOINTS[finger]
        base, d = _digit_axis(joints, finger)
        if finger == "thumb":
            base = joints[chain[1]]  # the thumb's crease lies beyond its MCP
        ids = np.flatnonzero(labels == k + 1)
        tip = float(((mesh.vertices[ids] - base) @ d).max())
        radius = float(
            np.linalg.norm(
                mesh.vertices[ids] - (base + np.outer((mesh.vertices[ids] - base) @ d, d)), axis=1
            ).max()
        )

        def separate(s, base=base, d=d, radius=radius):
            loop = own_loop(mesh, base + s * d, d)
            return loop is not None and np.linalg.norm(loop - (base + s * d), axis=1).max() < min(
                radius, 0.016
            )

        crease = None
        for s in np.arange(0.0, tip, 0.002):  # coarse scan, then 0.25 mm steps in the last interval
            if separate(s):
                crease = next(f for f in np.arange(max(s - 0.002, 0.0), s + 1e-9, 0.00025) if separate(f))
                break
        if finger == "thumb":
            mid = 0.5 * (joints[chain[2]] + base + tip * d)
        else:
            mid = 0.5 * (joints[chain[1]] + joints[chain[2]])
        loop = own_loop(mesh, mid, d)
        across = (loop - mid) @ _side(d)
        out[finger] = {
            "length": tip - (crease if crease is not None else np.nan),
            "breadth": float(np.ptp(across)),
        }
    return out


def hand_measures(vertices: np.ndarray, joints: np.ndarray, labels: np.ndarray) -> dict:
    """``length``: wrist joint to the farthest point along the hand axis (wrist -> middle MCP);
    ``breadth``: across the metacarpal heads (radial side of the index MCP to ulnar side of the little finger's),
    thumb excluded; ``thickness``: dorsal-palmar extent of the palm at mid palm."""
    axis = joints[4] - joints[0]
    axis /= np.linalg.norm(axis)
    rel = vertices - joints[0]
    length = float((rel @ axis).max())
    across = np.cross(axis, [0.0, 1.0, 0.0])
    across /= -np.linalg.norm(across)  # toward the thumb (+z at rest)
    not_thumb = labels != 1
    level = lambda j: not_thumb & (np.abs((vertices - joints[j]) @ axis) < 0.006)  # noqa: E731
    radial = float(((vertices[level(1)] - joints[0]) @ across).max())
    ulnar = float(((vertices[level(7)] - joints[0]) @ across).min())
    mid = (np.abs(rel @ axis - 0.5 * (joints[4] - joints[0]) @ axis) < 0.004) & (labels == 0)
    thickness = float(np.ptp(vertices[mid, 1]))
    return {"length": length, "breadth": radial - ulnar, "thickness": thickness}


def _adjacent(a: int, b: int) -> bool:
    return a == b or MANO_PARENTS[a] == b or MANO_PARENTS[b] == a


def self_intersections(
    vertices: np.ndarray, faces: np.ndarray, weights: np.ndarray, depth: float = 0.0005, stride: int = 1
) -> np.ndarray:
    """Vertices (ids) that lie inside the skin of a non-adjacent bone: each vertex of bone a (its dominant
    skinning joint) is tested, ``depth`` metres inward along its normal, against the triangles of every bone that
    is neither a, its parent nor a child (a generalised winding number > 0.5 counts as inside)."""
    mesh = trimesh.Trimesh(vertices, faces, process=False)
    normals = mesh.vertex_normals
    owner = np.argmax(weights, axis=1)
    face_owner = owner[faces]
    hits = []
    from scipy.spatial import cKDTree

    for a in range(weights.shape[1]):
        ids = np.flatnonzero(owner == a)[::stride]
        others = [b for b in range(weights.shape[1]) if not _adjacent(a, b)]
        tri = np.flatnonzero(np.isin(face_owner, others).all(axis=1))
        if len(ids) == 0 or len(tri) == 0:
            continue
        probe = vertices[ids] - depth * normals[ids]
        tree = cKDTree(vertices[np.unique(faces[tri])])
        close = tree.query(probe, distance_upper_bound=0.003)[0] < np.inf
        if not close.any():
            continue
        wn = winding_numbers(probe[close], vertices, faces[tri])
        hits.append(ids[close][wn > 0.5])
    return np.concatenate(hits) if hits else np.zeros(0, dtype=np.int64)
