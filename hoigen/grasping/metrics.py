"""Grasp quality metrics, computed from the posed hand mesh and the object's signed distance field.

All inputs are in the object's canonical frame (metres). Reported lengths are millimetres, volumes cm^3.

Conventions: a hand *link* is a MANO joint's rigid part (the vertices whose dominant skinning weight is that
joint); a finger's links are proximal, middle and distal (index 0, 1, 2), the thumb's likewise. The object's
normals point outward; a contact pushes the object along ``-normal``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hoigen.hands.model import FINGER_JOINTS, FINGERS, MANO_PARENTS, NUM_JOINTS, PART_NAMES

LINK_NAMES = ("proximal", "middle", "distal")


def vertex_areas(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """(V,) one third of the area of the faces around each vertex (m^2)."""
    tri = vertices[faces]
    area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    out = np.zeros(len(vertices))
    np.add.at(out, faces.reshape(-1), np.repeat(area / 3.0, 3))
    return out


def _segment_distance(points: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, S) distances of ``points`` (N, 3) to the segments ``a``-``b`` (S, 3)."""
    ab = b - a
    t = np.einsum("nsc,sc->ns", points[:, None] - a[None], ab) / np.maximum((ab * ab).sum(axis=1), 1e-18)
    t = np.clip(t, 0.0, 1.0)
    closest = a[None] + t[..., None] * ab[None]
    return np.linalg.norm(points[:, None] - closest, axis=2)


@dataclass(frozen=True)
class HandLinks:
    """Per-hand facts the link-level metrics need (one hand shape).

    Attributes:
        dominant: (V,) the joint (0..15) of each vertex's dominant skinning weight.
        radius: (16,) capsule radius of each finger link (median distance of its rest vertices from its bone).
        tip_ids: (5,) fingertip vertices, thumb to pinky.
        outer: (V,) vertices used for finger-finger overlap: middle and distal links, and the proximal link beyond
            the first third of its bone (the part buried in the palm at the knuckles is left out).
    """

    dominant: np.ndarray
    radius: np.ndarray
    tip_ids: np.ndarray
    outer: np.ndarray

    @classmethod
    def from_rest(
        cls, weights: np.ndarray, rest_vertices: np.ndarray, rest_joints: np.ndarray, tip_ids, dominant=None
    ):
        """Args: weights (V, 16); rest_vertices (V, 3); rest_joints (16, 3); tip_ids (5,); dominant: (V,)
        ``argmax(weights, axis=1)`` when the caller has it."""
        dominant = np.argmax(weights, axis=1) if dominant is None else dominant
        tip_ids = np.asarray(tip_ids)
        a, b = _link_segments(rest_joints, rest_vertices[tip_ids], np.zeros(NUM_JOINTS))
        radius = np.zeros(NUM_JOINTS)
        outer = np.zeros(len(rest_vertices), dtype=bool)
        for j in range(1, NUM_JOINTS):
            ids = np.flatnonzero(dominant == j)
            if len(ids) == 0:
                continue
            p = rest_vertices[ids]
            radius[j] = float(np.median(_segment_distance(p, a[j : j + 1], b[j : j + 1])[:, 0]))
            ab = b[j] - a[j]
            t = (p - a[j]) @ ab / max(float(ab @ ab), 1e-18)
            outer[ids] = t > (1.0 / 3.0 if _link_index(j) == 0 else -np.inf)
        # the distal capsule ends one radius short of the tip vertex
        return cls(dominant, radius, tip_ids, outer)

    def segments(self, joints16: np.ndarray, tips: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Capsule axes (16, 3) start and end points for posed ``joints16`` (16, 3) and ``tips`` (5, 3)."""
        return _link_segments(joints16, tips, self.radius)


def _link_index(joint: int) -> int:
    for chain in FINGER_JOINTS.values():
        if joint in chain:
            return chain.index(joint)
    return -1


def _finger_of_joint() -> np.ndarray:
    out = np.full(NUM_JOINTS, -1)
    for k, f in enumerate(FINGERS):
        out[list(FINGER_JOINTS[f])] = k
    return out


_FINGER_OF_JOINT = _finger_of_joint()


def _link_segments(joints16: np.ndarray, tips: np.ndarray, radius: np.ndarray):
    child = {int(MANO_PARENTS[j]): j for j in range(1, NUM_JOINTS) if _link_index(j) > 0}
    a = np.array(joints16, dtype=np.float64)
    b = np.array(joints16, dtype=np.float64)
    for k, f in enumerate(FINGERS):
        for j in FINGER_JOINTS[f]:
            if j in child:
                b[j] = joints16[child[j]]
            else:
                d = tips[k] - joints16[j]
                length = max(float(np.linalg.norm(d)), 1e-9)
                b[j] = joints16[j] + d * max(length - radius[j], 0.0) / length
    return a, b


def finger_overlap_mm(vertices: np.ndarray, joints16: np.ndarray, links: HandLinks) -> float:
    """Deepest interpenetration between two different fingers (thumb included), mm: the largest depth of a
    finger's outer vertex inside another finger's link capsules (0 when none overlap).

    Args:
        vertices: (V, 3) posed hand; joints16: (16, 3) posed MANO joints.
    """
    a, b = links.segments(joints16, vertices[links.tip_ids])
    ids = np.flatnonzero(links.outer)
    points = vertices[ids]
    finger = _FINGER_OF_JOINT[links.dominant[ids]]
    deepest = 0.0
    for j in range(1, NUM_JOINTS):  # per capsule, only the other fingers' vertices in its bounding box
        r = links.radius[j]
        lo, hi = np.minimum(a[j], b[j]) - r, np.maximum(a[j], b[j]) + r
        near = np.flatnonzero((finger != _FINGER_OF_JOINT[j]) & np.all((points > lo) & (points < hi), axis=1))
        if len(near):
            depth = r - _segment_distance(points[near], a[j : j + 1], b[j : j + 1])[:, 0]
            deepest = max(deepest, float(depth.max()))
    return deepest * 1000.0


def force_closure_epsilon(
    points: np.ndarray,
    normals: np.ndarray,
    centre: np.ndarray,
    scale: float,
    friction: float = 0.5,
    cone_edges: int = 6,
    max_contacts: int = 8,
) -> float:
    """Ferrari-Canny epsilon (L1) of the grasp wrench space, 0 when the grasp is not force closure.

    Each contact pushes along ``-normal`` with unit normal force; its friction cone (coefficient ``friction``) is
    approximated by ``cone_edges`` edges. Wrenches are (force, torque / scale) with torques about ``centre``. The
    result is the radius of the largest origin-centred ball inside the convex hull of all edge wrenches (about 0.05
    to 0.3 for good multi-finger grasps; 0 if the hull does not contain the origin). More than ``max_contacts``
    contacts are thinned to a farthest-point subset of that many (first point kept).

    Args:
        points: (K, 3) contact points, metres; normals: (K, 3) outward object normals there.
        centre: (3,) object centre (mass centre); scale: metres, e.g. the largest vertex distance from ``centre``.
    """
    from scipy.spatial import ConvexHull, QhullError

    points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    normals = np.asarray(normals, dtype=np.float64).reshape(-1, 3)
    if len(points) < 2:
        return 0.0
    if len(points) > max_contacts:  # farthest-point subset (deterministic): qhull in 6-D grows fast
        chosen = [0]
        gap = np.linalg.norm(points - points[0], axis=1)
        for _ in range(max_contacts - 1):
            chosen.append(int(np.argmax(gap)))
            gap = np.minimum(gap, np.linalg.norm(points - points[chosen[-1]], axis=1))
        points, normals = points[chosen], normals[chosen]
    n = -normals
    n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)
    helper = np.where(np.abs(n[:, :1]) < 0.9, np.array([[1.0, 0.0, 0.0]]), np.array([[0.0, 1.0, 0.0]]))
    t1 = np.cross(n, helper)
    t1 /= np.linalg.norm(t1, axis=1, keepdims=True)
    t2 = np.cross(n, t1)
    angles = 2.0 * np.pi * np.arange(cone_edges) / cone_edges
    forces = (
        n[:, None]
        + friction
        * (np.cos(angles)[None, :, None] * t1[:, None] + np.sin(angles)[None, :, None] * t2[:, None])
    ) / np.sqrt(1.0 + friction**2)
    torques = np.cross((points - centre)[:, None], forces) / scale
    wrenches = np.concatenate([forces, torques], axis=2).reshape(-1, 6)
    if np.linalg.matrix_rank(wrenches - wrenches.mean(axis=0), tol=1e-9) < 6:
        return 0.0
    try:
        hull = ConvexHull(wrenches)
    except QhullError:
        return 0.0
    offsets = hull.equations[:, -1]  # inside: normal . x + offset <= 0
    return float(max(-offsets.max(), 0.0))


def contact_patches(
    dist: np.ndarray,
    closest: np.ndarray,
    normals: np.ndarray,
    vertices: np.ndarray,
    group: np.ndarray,
    threshold: float,
    per_group: int = 3,
) -> tuple[np.ndarray, np.ndarray]:
    """Up to ``per_group`` spread contact points (and their object normals) per hand link in contact.

    The closest vertex of a link within ``threshold`` is taken, then the contacting vertices farthest from the
    points taken so far (a pad touches over an area, which resists torsion as a soft finger does).

    Args:
        dist: (V,) signed distances of the hand vertices; closest, normals: (V, 3) closest object points and
            outward normals; vertices: (V, 3); group: (V,) link id per vertex.
    """
    pts, nrm = [], []
    for g in np.unique(group):
        ids = np.flatnonzero((group == g) & (dist <= threshold))
        if len(ids) == 0:
            continue
        chosen = [ids[np.argmin(dist[ids])]]
        for _ in range(per_group - 1):
            gap = np.min(np.linalg.norm(vertices[ids, None] - vertices[chosen][None], axis=2), axis=1)
            k = int(np.argmax(gap))
            if gap[k] < 0.003:
                break
            chosen.append(ids[k])
        pts.append(closest[chosen])
        nrm.append(normals[chosen])
    if not pts:
        return np.zeros((0, 3)), np.zeros((0, 3))
    return np.concatenate(pts), np.concatenate(nrm)


def grasp_metrics(
    vertices: np.ndarray,
    faces: np.ndarray,
    part_labels: np.ndarray,
    sdf,
    contact_threshold: float = 0.003,
    links: HandLinks | None = None,
    joints16: np.ndarray | None = None,
    centre: np.ndarray | None = None,
    scale: float | None = None,
    friction: float = 0.5,
    distances: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
    closure: bool = True,
) -> dict:
    """Quality of one posed hand against the object.

    Args:
        vertices: (V, 3) posed hand vertices, object frame, metres.
        faces: (F, 3) hand faces.
        part_labels: (V,) 0 palm, 1..5 thumb..pinky.
        sdf: the object's signed distance field (``closest(points) -> (dist, points, normals)``).
        contact_threshold: a part is in contact when some vertex is within this distance (metres; penetrating
            vertices count).
        links, joints16: with them (``joints16``: (16, 3) posed MANO joints) the link-level metrics below are added.
        centre, scale: object centre (3,) and size (metres) for the force-closure metric (default: the contact
            points' centroid and spread).
        friction: friction coefficient of the force-closure metric.
        distances: ``sdf.closest(vertices)`` when the caller has it already (asked here otherwise).
        closure: with ``links``, also the costly ``finger_overlap_mm`` and ``force_closure``
            (:func:`link_quality`).

    Returns a JSON-ready dict:
        ``max_penetration_mm``: deepest hand vertex inside the object (0 if none);
        ``intersection_volume_cm3``: estimate, the integral of penetration depth over the hand surface inside the
        object (vertex areas times depths);
        ``fingers_in_contact`` / ``num_fingers_in_contact``: fingers (thumb included) within the threshold;
        ``thumb_contact``, ``palm_contact``;
        ``thumb_opposition``: max over contacting fingers of ``-n_thumb . n_finger`` for the object normals at the
        contacts (1 = the thumb pushes straight against a finger, <= 0 = no opposition, 0 without thumb contact);
        ``contact_spread_mm``: RMS distance of the contact points (one per part in contact) from their centroid;
        ``min_distance_mm``: per part, the closest approach to the surface;
        with ``links``: ``finger_links_in_contact`` (per contacting finger, its links within the threshold:
        ``proximal``/``middle``/``distal``), ``segment_contact_fraction`` (share of contacting fingers that touch
        with a middle or distal link), ``finger_overlap_mm`` (:func:`finger_overlap_mm`) and
        ``force_closure`` (:func:`force_closure_epsilon` over :func:`contact_patches` of every link and the palm).
    """
    dist, closest, normals = sdf.closest(vertices) if distances is None else distances
    pen = np.clip(-dist, 0.0, None)
    areas = vertex_areas(vertices, faces)
    contact_points, contact_normals, min_dist = {}, {}, {}
    for label, name in enumerate(PART_NAMES):
        ids = np.flatnonzero(part_labels == label)
        if len(ids) == 0:
            continue
        k = ids[np.argmin(dist[ids])]
        min_dist[name] = float(dist[k] * 1000.0)
        if dist[k] <= contact_threshold:
            contact_points[name] = closest[k]
            contact_normals[name] = normals[k]
    fingers = [f for f in FINGERS if f in contact_points]
    opposition = 0.0
    if "thumb" in contact_normals:
        others = [-float(contact_normals["thumb"] @ contact_normals[f]) for f in fingers if f != "thumb"]
        opposition = max(others) if others else 0.0
    if contact_points:
        pts = np.stack(list(contact_points.values()))
        spread = float(np.sqrt(((pts - pts.mean(axis=0)) ** 2).sum(axis=1).mean()) * 1000.0)
    else:
        spread = 0.0
    out = {
        "max_penetration_mm": float(pen.max() * 1000.0),
        "intersection_volume_cm3": float((pen * areas).sum() * 1e6),
        "fingers_in_contact": fingers,
        "num_fingers_in_contact": len(fingers),
        "thumb_contact": "thumb" in contact_points,
        "palm_contact": "palm" in contact_points,
        "thumb_opposition": opposition,
        "contact_spread_mm": spread,
        "min_distance_mm": min_dist,
    }
    if links is None or joints16 is None:
        return out
    touching = dist <= contact_threshold
    per_finger = {}
    for f in FINGERS:
        chain = FINGER_JOINTS[f]
        hit = [LINK_NAMES[i] for i, j in enumerate(chain) if touching[links.dominant == j].any()]
        if hit:
            per_finger[f] = hit
    with_outer = [f for f, hit in per_finger.items() if "middle" in hit or "distal" in hit]
    out.update(
        {
            "finger_links_in_contact": per_finger,
            "segment_contact_fraction": len(with_outer) / len(per_finger) if per_finger else 0.0,
        }
    )
    if closure:
        out.update(
            link_quality(
                vertices, joints16, links, (dist, closest, normals), contact_threshold, centre, scale, friction
            )
        )
    return out


def link_quality(
    vertices: np.ndarray,
    joints16: np.ndarray,
    links: HandLinks,
    distances: tuple[np.ndarray, np.ndarray, np.ndarray],
    contact_threshold: float = 0.003,
    centre: np.ndarray | None = None,
    scale: float | None = None,
    friction: float = 0.5,
) -> dict:
    """``finger_overlap_mm`` and ``force_closure`` of :func:`grasp_metrics` (the costly terms: a sampler asks for
    them only where the rest of its gate passes).

    Args:
        distances: ``sdf.closest(vertices)`` (signed distances, closest points, normals); the rest as in
            :func:`grasp_metrics`.
    """
    dist, closest, normals = distances
    pts, nrm = contact_patches(dist, closest, normals, vertices, links.dominant, contact_threshold)
    if centre is None:
        centre = pts.mean(axis=0) if len(pts) else np.zeros(3)
    if scale is None:
        scale = float(np.linalg.norm(pts - centre, axis=1).max()) if len(pts) else 1.0
    return {
        "finger_overlap_mm": finger_overlap_mm(vertices, joints16, links),
        "force_closure": force_closure_epsilon(pts, nrm, np.asarray(centre), max(scale, 1e-6), friction),
    }
