"""Grasp quality metrics, computed from the posed hand mesh and the object's signed distance field.

All inputs are in the object's canonical frame (metres). Reported lengths are millimetres, volumes cm^3.
"""

from __future__ import annotations

import numpy as np

from hoigen.grasping.sdf import SurfaceSDF
from hoigen.hands.model import FINGERS, PART_NAMES


def vertex_areas(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """(V,) one third of the area of the faces around each vertex (m^2)."""
    tri = vertices[faces]
    area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    out = np.zeros(len(vertices))
    np.add.at(out, faces.reshape(-1), np.repeat(area / 3.0, 3))
    return out


def grasp_metrics(
    vertices: np.ndarray,
    faces: np.ndarray,
    part_labels: np.ndarray,
    sdf: SurfaceSDF,
    contact_threshold: float = 0.003,
) -> dict:
    """Quality of one posed hand against the object.

    Args:
        vertices: (V, 3) posed hand vertices, object frame, metres.
        faces: (F, 3) hand faces.
        part_labels: (V,) 0 palm, 1..5 thumb..pinky.
        sdf: the object's signed distance field.
        contact_threshold: a part is in contact when some vertex is within this distance (metres; penetrating
            vertices count).

    Returns a JSON-ready dict:
        ``max_penetration_mm``: deepest hand vertex inside the object (0 if none);
        ``intersection_volume_cm3``: estimate, the integral of penetration depth over the hand surface inside the
        object (vertex areas times depths);
        ``fingers_in_contact`` / ``num_fingers_in_contact``: fingers (thumb included) within the threshold;
        ``thumb_contact``, ``palm_contact``;
        ``thumb_opposition``: max over contacting fingers of ``-n_thumb . n_finger`` for the object normals at the
        contacts (1 = the thumb pushes straight against a finger, <= 0 = no opposition, 0 without thumb contact);
        ``contact_spread_mm``: RMS distance of the contact points (one per part in contact) from their centroid;
        ``min_distance_mm``: per part, the closest approach to the surface.
    """
    dist, nearest = sdf.query(vertices)
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
            contact_points[name] = sdf.points[nearest[k]]
            contact_normals[name] = sdf.normals[nearest[k]]
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
    return {
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
