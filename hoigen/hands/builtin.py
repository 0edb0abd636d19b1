"""hoigen's built-in right hand: MANO's kinematic tree and parameters with hoigen's own procedural geometry.

:class:`BuiltinHand` gives version 2 by default (``hoigen-builtin-v2``, one smooth skin, see
:mod:`hoigen.hands.builtin_v2`); ``BuiltinHand(version=1)`` gives the first version, kept for reproducing datasets
made with it and described here.

Version 1 is not MANO and is labelled ``hoigen-builtin-v1`` in metadata. Rest pose (flat hand, zero pose) in a MANO-like
frame: wrist joint at the origin, fingers along -x, thumb toward +z, palm facing -y. Each finger and the palm is a
closed tube of elliptical (fingers) or rounded-rectangle (palm) rings; a ring sits exactly on every joint and the
joint regressor averages it, so joints follow the shape space. Skinning weights blend parent and child bones over
+-5 mm around each joint. Shape space (betas): 0 overall size, 1 finger length, 2 hand width, 3 hand thickness,
4 finger girth; 5-9 have no effect. Proportions are those of an adult hand (wrist to middle fingertip ~18 cm).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from hoigen.hands.model import (
    FINGER_JOINTS,
    MANO_PARENTS,
    NUM_BETAS,
    NUM_JOINTS,
    HandModel,
    HandModelData,
    HandOutput,
    HandParams,
)

BUILTIN_NAME = "hoigen-builtin-v1"


@dataclass(frozen=True)
class _Finger:
    name: str
    base: tuple[float, float, float]  # first joint (MCP, or CMC for the thumb), metres
    direction: tuple[float, float, float]
    lengths: tuple[float, float, float]  # joint 1 -> 2, 2 -> 3, 3 -> tip
    radius: tuple[float, float]  # at joint 1 and from joint 3 on
    flatten: float = 0.86  # thickness / width of the cross-section


_FINGERS = (
    _Finger(
        "thumb", (-0.020, -0.012, 0.020), (-0.62, -0.06, 0.78), (0.036, 0.030, 0.026), (0.0118, 0.0094), 0.9
    ),
    _Finger("index", (-0.082, 0.000, 0.024), (-1.0, 0.0, 0.06), (0.038, 0.023, 0.021), (0.0096, 0.0080)),
    _Finger("middle", (-0.086, 0.001, 0.004), (-1.0, 0.0, -0.01), (0.042, 0.026, 0.022), (0.0098, 0.0081)),
    _Finger("ring", (-0.081, 0.000, -0.014), (-1.0, 0.0, -0.07), (0.039, 0.025, 0.021), (0.0092, 0.0077)),
    _Finger("pinky", (-0.072, -0.002, -0.031), (-1.0, 0.0, -0.15), (0.031, 0.019, 0.019), (0.0081, 0.0068)),
)
_BLEND = 0.005  # half-width of the skinning blend around a joint, metres


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def _tube_faces(n_rings: int, n_points: int, start: int, first_cap: int, last_cap: int) -> list[np.ndarray]:
    """Triangles of a closed tube: rings ``start + r * n_points + k`` and two cap vertices (fans)."""
    faces = []
    k = np.arange(n_points)
    k1 = (k + 1) % n_points
    for r in range(n_rings - 1):
        a, b = start + r * n_points + k, start + r * n_points + k1
        c, d = a + n_points, b + n_points
        faces += [np.stack([a, b, d], 1), np.stack([a, d, c], 1)]
    first = start + k
    faces.append(np.stack([np.full(n_points, first_cap), first[k1] * 0 + start + k1, first], 1))
    last = start + (n_rings - 1) * n_points
    faces.append(np.stack([np.full(n_points, last_cap), last + k, last + k1], 1))
    return faces


def _ring(center, axis_w, axis_h, rw, rh, n_points, exponent=2.0) -> np.ndarray:
    """Points of a superellipse ring; uniformly spaced angles so the ring's mean is exactly ``center``."""
    theta = 2.0 * np.pi * np.arange(n_points) / n_points
    c, s = np.cos(theta), np.sin(theta)
    p = 2.0 / exponent
    cw = np.sign(c) * np.abs(c) ** p
    sh = np.sign(s) * np.abs(s) ** p
    return center + rw * cw[:, None] * axis_w + rh * sh[:, None] * axis_h


def build_hand_data(
    points_per_ring: int = 20, ring_spacing: float = 0.0035, name: str = BUILTIN_NAME
) -> HandModelData:
    """Build the built-in hand as a MANO-structured model.

    Args:
        points_per_ring: vertices around each cross-section (even, >= 8).
        ring_spacing: target distance between rings, metres.
        name: model name for metadata.
    """
    if points_per_ring < 8 or points_per_ring % 2:
        raise ValueError(f"points_per_ring must be an even number >= 8, got {points_per_ring}")
    verts: list[np.ndarray] = []
    faces: list[np.ndarray] = []
    weights: list[np.ndarray] = []
    ring_of: list[np.ndarray] = []  # per vertex: (component id, ring centre) for the girth blend shape
    jreg_rings: dict[int, np.ndarray] = {}
    tip_ids = np.zeros(5, dtype=np.int64)
    count = 0
    up = np.array([0.0, 1.0, 0.0])
    n = points_per_ring

    # --- palm: rounded-rectangle rings along -x, wrist ring exactly at the origin ---
    x_back, x_front = 0.014, -0.084
    xs = np.unique(
        np.concatenate([np.linspace(x_back, x_front, int((x_back - x_front) / ring_spacing) + 1), [0.0]])
    )[::-1]
    palm_rings = []
    for x in xs:
        f = np.clip(-x / 0.084, 0.0, 1.0)
        center = np.array([x, 0.0, -0.004 * f])
        half_w = 0.030 + 0.013 * _smoothstep(f * 1.4)
        half_h = 0.017 - 0.005 * f
        # round the two ends of the palm tube
        end = min(abs(x - x_back), abs(x - x_front))
        taper = np.sqrt(np.clip(end / 0.006, 0.0, 1.0)) * 0.6 + 0.4 if end < 0.006 else 1.0
        palm_rings.append(
            _ring(center, np.array([0.0, 0.0, 1.0]), up, half_w * taper, half_h * taper, 2 * n, 3.5)
        )
        if x == 0.0:
            jreg_rings[0] = np.arange(len(palm_rings) - 1, len(palm_rings)) * 2 * n
    palm = np.concatenate(palm_rings)
    wrist_ring = int(np.where(xs == 0.0)[0][0])
    jreg_rings[0] = count + wrist_ring * 2 * n + np.arange(2 * n)
    caps = np.array([[x_back + 0.002, 0.0, 0.0], [x_front - 0.002, 0.0, -0.004]])
    verts += [palm, caps]
    faces += _tube_faces(len(xs), 2 * n, count, count + len(palm), count + len(palm) + 1)
    w = np.zeros((len(palm) + 2, NUM_JOINTS))
    w[:, 0] = 1.0
    # soften the knuckle edge: blend toward the nearest finger's first joint
    palm_all = np.concatenate([palm, caps])
    knuckle = _smoothstep((-palm_all[:, 0] - 0.068) / 0.016) * 0.5
    mcp_z = np.array([f.base[2] for f in _FINGERS[1:]])
    nearest = np.array([FINGER_JOINTS[f.name][0] for f in _FINGERS[1:]])[
        np.argmin(np.abs(palm_all[:, 2:3] - mcp_z[None]), axis=1)
    ]
    w[np.arange(len(w)), 0] -= knuckle
    w[np.arange(len(w)), nearest] += knuckle
    weights.append(w)
    ring_of.append(np.zeros((len(w), 3)) * np.nan)
    count += len(palm) + 2

    # --- fingers and thumb: elliptical tubes from inside the palm to a hemispherical tip ---
    for k, finger in enumerate(_FINGERS):
        joints = FINGER_JOINTS[finger.name]
        d = np.asarray(finger.direction, dtype=np.float64)
        d /= np.linalg.norm(d)
        base = np.asarray(finger.base, dtype=np.float64)
        side = np.cross(d, up)
        side /= np.linalg.norm(side)
        top = np.cross(side, d)
        s_joint = np.array([0.0, finger.lengths[0], finger.lengths[0] + finger.lengths[1]])
        length = s_joint[2] + finger.lengths[2]
        r0, r1 = finger.radius
        s_start = -0.014 if finger.name != "thumb" else -0.016
        s_cap = length - r1
        s_body = np.linspace(s_start, s_cap, int((s_cap - s_start) / ring_spacing) + 1)
        s_body = np.unique(np.concatenate([s_body, s_joint]))
        phis = np.linspace(0.0, np.pi / 2.0, 6)[1:-1]
        ring_s, ring_r = [], []
        for s in s_body:
            ring_s.append(s)
            ring_r.append(r0 + (r1 - r0) * np.clip(s / s_joint[2], 0.0, 1.0))
        for phi in phis:
            ring_s.append(s_cap + r1 * np.sin(phi))
            ring_r.append(r1 * np.cos(phi))
        rings = [_ring(base + s * d, side, top, r, r * finger.flatten, n) for s, r in zip(ring_s, ring_r)]
        for j, sj in zip(joints, s_joint):
            jreg_rings[j] = count + int(np.where(np.isclose(ring_s, sj))[0][0]) * n + np.arange(n)
        body = np.concatenate(rings)
        start_cap = base + (s_start - 0.002) * d
        tip = base + length * d
        verts += [body, start_cap[None], tip[None]]
        faces += _tube_faces(len(rings), n, count, count + len(body), count + len(body) + 1)
        tip_ids[k] = count + len(body) + 1
        s_vert = np.concatenate([np.repeat(ring_s, n), [s_start - 0.002, length]])
        w = np.zeros((len(s_vert), NUM_JOINTS))
        chain = [0, *joints]
        edges = [-np.inf, *s_joint]
        # weight of bone b (the bone after chain[b]) = step up at its start joint minus step up at the next
        for b in range(4):
            rise = 1.0 if b == 0 else _smoothstep((s_vert - (edges[b] - _BLEND)) / (2 * _BLEND))
            fall = _smoothstep((s_vert - (edges[b + 1] - _BLEND)) / (2 * _BLEND)) if b < 3 else 0.0
            w[:, chain[b]] += rise - fall
        weights.append(w)
        centers = base + np.clip(s_vert, s_start, s_cap)[:, None] * d
        ring_of.append(centers)
        count += len(s_vert)

    v_template = np.concatenate(verts)
    f_all = np.concatenate(faces).astype(np.int64)
    w_all = np.concatenate(weights)
    w_all = np.clip(w_all, 0.0, None)
    w_all /= w_all.sum(axis=1, keepdims=True)
    centers = np.concatenate(ring_of)

    j_reg = np.zeros((NUM_JOINTS, len(v_template)))
    for j, ids in jreg_rings.items():
        j_reg[j, ids] = 1.0 / len(ids)
    wrist = j_reg[0] @ v_template

    shapedirs = np.zeros((len(v_template), 3, NUM_BETAS))
    shapedirs[:, :, 0] = 0.06 * (v_template - wrist)  # overall size, about the wrist
    finger_mask = ~np.isnan(centers[:, 0])
    for finger in _FINGERS:  # finger length: slide along the finger beyond its first joint
        d = np.asarray(finger.direction, dtype=np.float64)
        d /= np.linalg.norm(d)
        base = np.asarray(finger.base, dtype=np.float64)
        ids = np.where(w_all[:, list(FINGER_JOINTS[finger.name])].sum(axis=1) > 0)[0]
        ids = ids[finger_mask[ids]]
        along = np.clip((v_template[ids] - base) @ d, 0.0, None)
        shapedirs[ids, :, 1] = 0.08 * along[:, None] * d
    shapedirs[:, 2, 2] = 0.06 * (v_template[:, 2] - wrist[2])  # width
    shapedirs[:, 1, 3] = 0.08 * (v_template[:, 1] - wrist[1])  # thickness
    shapedirs[finger_mask, :, 4] = 0.08 * (v_template[finger_mask] - centers[finger_mask])  # girth

    # outward winding, checked per closed component
    f_all = _orient_outward(v_template, f_all)
    return HandModelData(
        name=name,
        v_template=v_template,
        faces=f_all,
        shapedirs=shapedirs,
        posedirs=None,
        J_regressor=j_reg,
        weights=w_all,
        parents=MANO_PARENTS.copy(),
        tip_vertex_ids=tip_ids,
    )


def _orient_outward(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    import trimesh

    mesh = trimesh.Trimesh(vertices, faces, process=False)
    out = faces.copy()
    for comp in trimesh.graph.connected_components(mesh.face_adjacency, nodes=np.arange(len(faces))):
        sub = trimesh.Trimesh(vertices, faces[comp], process=False)
        if sub.volume < 0:
            out[comp] = faces[comp][:, ::-1]
    return out


@lru_cache(maxsize=4)
def _cached_data(points_per_ring: int, ring_spacing: float) -> HandModelData:
    return build_hand_data(points_per_ring, ring_spacing)


BUILTIN_VERSIONS = (1, 2)
DEFAULT_BUILTIN_VERSION = 2


class BuiltinHand(HandModel):
    """hoigen's own hand; the default when no MANO model is given.

    Args:
        version: 2 (default, ``hoigen-builtin-v2``) or 1 (``hoigen-builtin-v1``, separate tubes).
        points_per_ring, ring_spacing: version 1's tessellation.
        forearm: version 2 only: carry the forearm stub for RGB renders (``forearm_skin``, posed by
            :meth:`forearm_vertices`). ``data`` stays the plain hand, so grasps, physics, joints and labels are
            those of the hand without it.
    """

    forearm_skin = None  # a hoigen.hands.builtin_v2.ForearmSkin when the stub is carried

    def __init__(
        self,
        version: int = DEFAULT_BUILTIN_VERSION,
        points_per_ring: int = 20,
        ring_spacing: float = 0.0035,
        forearm: bool = False,
    ):
        if version not in BUILTIN_VERSIONS:
            raise ValueError(
                f"unknown built-in hand version {version!r}; choose 1 or 2 (--hand builtin-v1 / builtin-v2)"
            )
        if forearm and version != 2:
            raise ValueError("the forearm stub exists only for the built-in hand version 2")
        self.version = version
        self.forearm = bool(forearm)
        if version == 1:
            self.data = _cached_data(points_per_ring, ring_spacing)
        else:
            from hoigen.hands.builtin_v2 import BuildOptions, _cached, _cached_forearm

            self.data = _cached(BuildOptions())
            if self.forearm:
                self.forearm_skin = _cached_forearm(BuildOptions())

    def forearm_vertices(self, params: HandParams, output: HandOutput | None = None) -> np.ndarray:
        """(B, A, 3) forearm stub vertices posed like the hand (metres, the parameters' frame): linear blend
        skinning with the stub's weights on the hand's own joint transforms. ``output`` is ``forward(params)``
        when already computed."""
        skin = self.forearm_skin
        if skin is None:
            raise ValueError("this hand carries no forearm stub; build it with BuiltinHand(forearm=True)")
        out = self.forward(params) if output is None else output
        data = self.data
        betas = params.betas[:, :NUM_BETAS]
        shape = np.einsum("vck,bk->bvc", data.shapedirs[:, :, :NUM_BETAS], betas)
        hand_shaped = data.v_template[None] + shape
        rest_j = np.einsum("jv,bvc->bjc", data.J_regressor, hand_shaped)
        v_shaped = skin.v_template[None] + np.einsum("vck,bk->bvc", skin.shapedirs, betas)
        rot = out.joint_transforms[:, :, :3, :3]
        offset = out.joint_transforms[:, :, :3, 3] - np.einsum("bjcd,bjd->bjc", rot, rest_j)
        blend = np.einsum("vj,bjcd->bvcd", skin.weights, rot)
        return np.einsum("bvcd,bvd->bvc", blend, v_shaped) + np.einsum("vj,bjc->bvc", skin.weights, offset)

    def metadata(self) -> dict:
        meta = {"model": self.name, "note": "hoigen's built-in hand, not MANO (no MANO_RIGHT.pkl was given)"}
        if self.forearm:
            meta["forearm"] = True
        return meta
