"""hoigen's built-in right hand, version 2 (``hoigen-builtin-v2``): one smooth closed skin on MANO's skeleton.

It is not MANO. Same kinematic tree, parameters and 21 OpenPose keypoints as :mod:`hoigen.hands.model`; same rest
frame as v1 (metres, wrist joint at the origin, fingers along -x, thumb toward +z, palm facing -y).

**Surface.** A signed distance field — the smooth union (polynomial smooth-min) of a rounded palm slab, thenar and
hypothenar pads, dorsal knuckles, palmar pads at the finger bases, webs between the fingers, a webbed first
(thumb-index) web space, and per phalanx a tapered, slightly flattened capsule with a fleshy palmar pad — is meshed
once with manifold3d's level set (marching tetrahedra on a body-centred grid, manifold by construction), its
vertices projected onto the exact field, and the result cached on disk (``$HOIGEN_CACHE_DIR`` or
``~/.cache/hoigen``, keyed by a hash of the options and of this module's source). The field uses only +, *, min/max and sqrt, so the mesh is
the same on every machine.

**Proportions** (betas = 0), adult right hand, sex-averaged means:

- hand length (wrist crease to the middle fingertip) 183.2 mm and hand breadth (across the metacarpal heads,
  thumb excluded) 81.4 mm: means of the male (190.2 / 85.8 mm) and female (176.2 / 76.9 mm) right hands of
  Ibeachu, Abu & Didia 2011, "Anthropometric sexual dimorphism of hand length, breadth and hand indices",
  Asian J. Med. Sci. 3(8):146-150, results table;
- finger lengths (finger base crease to tip): thumb 49.5, index 63.9, middle 70.7, ring 65.5, little 53.3 mm,
  Chatzioglou, Pinar & Govsa 2024, "Biometric analysis of hand parameters in young adults", Anat. Cell Biol.
  57(2):172-182, finger segment table (n = 51);
- split of each finger into phalanges (proximal : middle : distal about 1 : 0.6 : 0.4 of the joint-to-joint
  lengths, as in radiographic phalanx tables such as Buryanov & Kotiuk 2010, Int. J. Morphol. 28(3):755-758) and
  the breadths at mid middle phalanx (index 17.0, middle 17.4, ring 16.4, little 14.6, thumb at mid distal
  phalanx 19.6 mm) are hoigen's design values within the adult ranges, not a cited table.

The measured values of the mesh are checked against these in ``tests/test_hand_v2.py`` (within 5 %).

**Skinning.** Each vertex's weight on bone j falls off as ``d_j ** -8`` with d_j its distance to the bone
segment (the wrist's bone is the set of five metacarpal segments); weights below 2 % are dropped, at most four
kept, then renormalised. Across a joint of finger radius r this blends over about +-0.7 r: no crease of a hard
split, and 90 degree flexion loses little volume (measured at betas = 0: all four MCP joints 5.0 % of the hand's
volume, all four PIP joints 1.0 %, all twelve finger joints 6.9 %; plain LBS, no pose correctives). The joint regressor averages the skin
ring around each joint with affine weights that reproduce the joint position exactly, so joints (inside the
skin) follow the shape space. Fingertip keypoints are the most distal skin vertex of each digit.

**Shape space** (betas, per unit): 0 overall size (+6 % about the wrist), 1 finger length (the phalanges of all
five digits, +8 %), 2 hand width (+6 % across), 3 hand thickness (+8 % dorsal-palmar), 4 finger girth (+8 %
radially about each digit's axis), 5 palm length (+6 % of the palm from 8 mm past the wrist to the knuckles, the fingers ride along),
6 thumb length (metacarpal and phalanges, +8 %); 7-9 have no effect.

**Forearm stub** (:func:`forearm_skin`, ``BuiltinHandV2(forearm=True)``, ``--forearm``): for RGB renders only. The
field above with a rounded forearm capsule added (``hand_sdf(p, forearm=True)``: it reaches 11 cm past the wrist joint, 56-60 mm wide and 39-42 mm thick)
is meshed like the hand; the stub is the part of that skin lying more than 0.2 mm outside the plain hand (the
forearm and its smooth blend into the heel of the hand, one open sheet whose rim hugs the hand's skin). It keeps
that skin's weights and shape blend shapes, so it moves with the same pose and betas: the forearm itself follows
the wrist only, the blend follows the hand's skin beneath it. The hand model itself (mesh, joints, everything the
grasp sampler, physics and labels see) is the plain hand whether the stub is on or not; the renderer draws the
stub as a separate instance (``arm``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from hoigen.hands.builtin import BuiltinHand
from hoigen.hands.model import FINGER_JOINTS, MANO_PARENTS, NUM_BETAS, NUM_JOINTS, HandModelData

logger = logging.getLogger(__name__)

BUILTIN_V2_NAME = "hoigen-builtin-v2"
_BUILD_VERSION = 1  # bump when the construction (not only a parameter) changes
CACHE_ENV_VAR = "HOIGEN_CACHE_DIR"

# Anthropometric targets at betas = 0 (metres), see the module docstring.
HAND_LENGTH = 0.1832
HAND_BREADTH = 0.0814
FINGER_LENGTHS = {"thumb": 0.0495, "index": 0.0639, "middle": 0.0707, "ring": 0.0655, "pinky": 0.0533}
MID_BREADTHS = {"thumb": 0.0196, "index": 0.0170, "middle": 0.0174, "ring": 0.0164, "pinky": 0.0146}


@dataclass(frozen=True)
class _Digit:
    name: str
    base: tuple[float, float, float]  # first joint (MCP; CMC for the thumb), metres
    direction: tuple[float, float, float]  # along the digit at rest
    lengths: tuple[float, float, float]  # joint 1 -> 2, 2 -> 3, 3 -> tip surface
    radii: tuple[float, float, float, float]  # half-breadth at joint 1, 2, 3 and near the tip
    flatten: float = 0.86  # thickness / breadth of the cross-section


_DIGITS = (
    _Digit(
        "thumb",
        (-0.024, -0.012, 0.021),
        (-0.60, -0.30, 0.74),
        (0.043, 0.027, 0.0245),
        (0.0125, 0.0108, 0.0107, 0.0097),
        0.84,
    ),
    _Digit(
        "index",
        (-0.087, 0.000, 0.0245),
        (-1.0, 0.0, 0.10),
        (0.0425, 0.0235, 0.0200),
        (0.0092, 0.0088, 0.0081, 0.0072),
    ),
    _Digit(
        "middle",
        (-0.092, 0.001, 0.0035),
        (-1.0, 0.0, 0.015),
        (0.0455, 0.0260, 0.0187),
        (0.0094, 0.0090, 0.0083, 0.0074),
    ),
    _Digit(
        "ring",
        (-0.087, 0.000, -0.0165),
        (-1.0, 0.0, -0.08),
        (0.0435, 0.0250, 0.0195),
        (0.0089, 0.0085, 0.0078, 0.0070),
    ),
    _Digit(
        "pinky",
        (-0.079, -0.002, -0.0345),
        (-1.0, 0.0, -0.17),
        (0.0345, 0.0215, 0.0218),
        (0.0080, 0.0076, 0.0069, 0.0063),
    ),
)


@dataclass(frozen=True)
class BuildOptions:
    """Meshing options of the v2 hand.

    Attributes:
        edge_length: longest skin edge of the level set, metres.
        grid: spacing of the sampled distance field, metres.
        simplify: tolerance of manifold3d's edge-collapse simplification, metres (0 = none); 2.6 mm edges
            simplified at 0.1 mm give about 9k vertices.
        forearm: add the forearm stub.
    """

    edge_length: float = 0.0026
    grid: float = 0.0015
    simplify: float = 0.0001
    forearm: bool = False


# --- signed distance primitives (negative inside), vectorised over (N, 3) points ------------------------------


def _smin(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    """Polynomial smooth minimum with blend radius ``k`` (metres)."""
    h = np.maximum(k - np.abs(a - b), 0.0) / k
    return np.minimum(a, b) - h * h * k * 0.25


def _unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    return v / np.sqrt(v @ v)


def _frame(direction) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(along, side, top) of a digit: side lies in the palm plane, top points dorsally (+y)."""
    d = _unit(direction)
    side = _unit(np.cross(d, np.array([0.0, 1.0, 0.0])))
    top = np.cross(side, d)
    return d, side, top


def _round_cone(p, a, b, ra, rb, top, flatten) -> np.ndarray:
    """Capsule from ``a`` to ``b`` with radii ``ra`` -> ``rb`` (linear along the axis), the cross-section squashed
    to ``flatten`` along ``top``."""
    ab = b - a
    length2 = ab @ ab
    q = p - a
    q = q + np.outer(q @ top, top) * (1.0 / flatten - 1.0)  # stretch across the flat direction
    t = np.clip(q @ ab / length2, 0.0, 1.0)
    r = ra + (rb - ra) * t
    d = q - t[:, None] * ab
    return (np.sqrt(np.einsum("ij,ij->i", d, d)) - r) * flatten


def _ellipsoid(p, centre, axes, radii) -> np.ndarray:
    """Approximate distance to an ellipsoid (``axes`` rows are its unit axes)."""
    local = (p - centre) @ np.asarray(axes).T
    radii = np.asarray(radii)
    k0 = np.sqrt(np.sum((local / radii) ** 2, axis=1))
    k1 = np.sqrt(np.sum((local / radii**2) ** 2, axis=1))
    return k0 * (k0 - 1.0) / np.maximum(k1, 1e-12)


def _polygon_2d(p2: np.ndarray, poly: np.ndarray) -> np.ndarray:
    """Signed distance to a closed 2D polygon (negative inside)."""
    d2 = np.full(len(p2), np.inf)
    inside = np.zeros(len(p2), dtype=bool)
    for i in range(len(poly)):
        a, b = poly[i], poly[(i + 1) % len(poly)]
        e = b - a
        w = p2 - a
        t = np.clip(w @ e / (e @ e), 0.0, 1.0)
        diff = w - t[:, None] * e
        d2 = np.minimum(d2, np.einsum("ij,ij->i", diff, diff))
        cond = (p2[:, 1] >= a[1]) != (p2[:, 1] >= b[1])
        x_cross = a[0] + (p2[:, 1] - a[1]) * e[0] / np.where(e[1] == 0, 1e-30, e[1])
        inside ^= cond & (p2[:, 0] < x_cross)
    d = np.sqrt(d2)
    return np.where(inside, -d, d)


# palm outline in (x, z), metres: wrist end, radial side, knuckle line (beyond the MCP heads), ulnar side
_PALM_OUTLINE = np.array(
    [
        [0.016, 0.012],
        [0.012, 0.024],
        [-0.010, 0.030],
        [-0.050, 0.032],
        [-0.082, 0.031],
        [-0.093, 0.020],
        [-0.097, 0.004],
        [-0.094, -0.014],
        [-0.087, -0.030],
        [-0.074, -0.042],
        [-0.045, -0.040],
        [-0.010, -0.032],
        [0.012, -0.026],
        [0.016, -0.012],
    ]
)
_PALM_ROUND = 0.0130  # edge rounding of the palm slab at the heel (scaled with the thickness)


def _palm_half_thickness(x: np.ndarray) -> np.ndarray:
    """Half thickness of the palm slab along the hand (thicker at the heel, thinner at the knuckles)."""
    f = np.clip(-x / 0.09, 0.0, 1.0)
    return 0.0150 - 0.0025 * f


def _palm(p: np.ndarray) -> np.ndarray:
    inset = _polygon_2d(p[:, [0, 2]], _PALM_OUTLINE) + _PALM_ROUND
    y = p[:, 1] + 0.0015  # the palm sits a little palmar of the joint plane
    # transverse arch: thinnest at the radial and ulnar borders
    across = np.clip((p[:, 2] + 0.006) / 0.040, -1.0, 1.0)
    half = _palm_half_thickness(p[:, 0]) * (1.0 - 0.12 * across * across)
    rounding = _PALM_ROUND * half / 0.0150
    inset = inset - _PALM_ROUND + rounding
    dy = np.abs(y) - half + rounding
    qx, qy = np.maximum(inset, 0.0), np.maximum(dy, 0.0)
    return np.sqrt(qx * qx + qy * qy) + np.minimum(np.maximum(inset, dy), 0.0) - rounding


def _digit_points(digit: _Digit) -> tuple[np.ndarray, np.ndarray]:
    """Joint positions (3, 3) and the tip surface point (3,) of a digit at rest."""
    d = _unit(digit.direction)
    base = np.asarray(digit.base, dtype=np.float64)
    s = np.cumsum([0.0, digit.lengths[0], digit.lengths[1]])
    joints = base + s[:, None] * d
    tip = joints[2] + digit.lengths[2] * d
    return joints, tip


class _Field:
    """Accumulates a smooth union; each primitive is evaluated only near its bounding sphere (elsewhere the
    distance to that sphere stands in, a lower bound that is farther than any blend reaches)."""

    def __init__(self, p: np.ndarray, value: np.ndarray):
        self.p = p
        self.value = value

    def add(self, fn, centre, radius: float, k: float) -> None:
        centre = np.asarray(centre, dtype=np.float64)
        rel = self.p - centre
        dist = np.sqrt(np.einsum("ij,ij->i", rel, rel)) - radius
        near = np.flatnonzero(dist < k + 0.006)
        other = dist.copy()
        if len(near):
            other[near] = fn(self.p[near])
        self.value = _smin(self.value, other, k)


def _cone_bound(a, b, r) -> tuple[np.ndarray, float]:
    return 0.5 * (a + b), 0.5 * float(np.linalg.norm(b - a)) + r


def hand_sdf(p: np.ndarray, forearm: bool = False) -> np.ndarray:
    """Signed distance (metres, negative inside) of the v2 hand at rest (betas = 0) at points ``p`` (N, 3)."""
    p = np.asarray(p, dtype=np.float64)
    field = _Field(p, _palm(p))
    ex, ey, ez = np.eye(3)
    # thenar (thumb ball) and hypothenar (ulnar heel) pads on the palmar side
    thumb_axis = _unit(np.array(_DIGITS[0].direction) * [1.0, 0.0, 1.0])
    thenar_side = _unit(np.cross(thumb_axis, ey))
    c = np.array([-0.028, -0.0115, 0.017])
    field.add(
        lambda q: _ellipsoid(q, c, [thumb_axis, ey, thenar_side], [0.030, 0.0105, 0.0175]), c, 0.030, 0.010
    )
    c2 = np.array([-0.030, -0.0095, -0.027])
    field.add(lambda q: _ellipsoid(q, c2, [ex, ey, ez], [0.034, 0.0085, 0.0125]), c2, 0.034, 0.010)
    # first web space: a flattened band from the thumb's proximal phalanx to the index metacarpal
    thumb_j, _ = _digit_points(_DIGITS[0])
    web_a = thumb_j[1] + 0.004 * ey
    web_b = np.array([-0.064, 0.004, 0.028])
    band_top = _unit(np.cross(web_b - web_a, ex + 0.5 * ez))
    if band_top @ ey < 0:
        band_top = -band_top
    field.add(
        lambda q: _round_cone(q, web_a, web_b, 0.0075, 0.0085, band_top, 0.70),
        *_cone_bound(web_a, web_b, 0.0085),
        0.012,
    )
    for k, digit in enumerate(_DIGITS):
        joints, tip = _digit_points(digit)
        d, side, top = _frame(digit.direction)
        r = digit.radii
        ends = [joints[0], joints[1], joints[2], tip - r[3] * d]
        centre, radius = _cone_bound(ends[0], ends[3], r[0] + 0.002)
        field.add(
            lambda q, ends=ends, d=d, side=side, top=top, r=r, joints=joints, digit=digit: _digit_sdf(
                q, ends, d, side, top, r, joints, digit
            ),
            centre,
            radius,
            0.008 if k == 0 else 0.006,
        )
        if k == 0:
            continue
        # dorsal MCP knuckle and palmar pad at the finger base
        knuckle = joints[0] + 0.004 * ey - 0.001 * d
        field.add(lambda q, c=knuckle: np.sqrt(np.sum((q - c) ** 2, axis=1)) - 0.0078, knuckle, 0.0078, 0.006)
        pad_c = joints[0] + 0.006 * d - 0.0085 * ey
        field.add(
            lambda q, c=pad_c, d=d, side=side: _ellipsoid(q, c, [d, side, ey], [0.011, 0.0085, 0.0065]),
            pad_c,
            0.011,
            0.006,
        )
    # webs between neighbouring fingers, palmar of the joint plane (two bands, so no tunnel is left)
    for a, b in ((1, 2), (2, 3), (3, 4)):
        ja, _ = _digit_points(_DIGITS[a])
        jb, _ = _digit_points(_DIGITS[b])
        da, db = _unit(_DIGITS[a].direction), _unit(_DIGITS[b].direction)
        for s, rad in ((0.002, 0.0075), (0.010, 0.0066)):
            pa = ja[0] + s * da - 0.002 * ey
            pb = jb[0] + s * db - 0.002 * ey
            field.add(
                lambda q, pa=pa, pb=pb, rad=rad: _round_cone(q, pa, pb, rad, rad, ey, 0.8),
                *_cone_bound(pa, pb, rad),
                0.006,
            )
    if forearm:
        fa, fb = np.array([0.010, 0.0, -0.001]), np.array([0.085, 0.0, -0.001])
        field.add(
            lambda q: _round_cone(q, fa, fb, 0.028, 0.030, ey, 0.70), *_cone_bound(fa, fb, 0.030), 0.012
        )
    return field.value


def _digit_sdf(p, ends, d, side, top, r, joints, digit) -> np.ndarray:
    """One digit: three tapered phalanx capsules with palmar pads and interphalangeal knuckles."""
    finger = None
    for seg in range(3):
        piece = _round_cone(p, ends[seg], ends[seg + 1], r[seg], r[seg + 1], top, digit.flatten)
        finger = piece if finger is None else _smin(finger, piece, 0.002)
        # fleshy palmar pad along each phalanx, fullest on the distal one
        centre = 0.5 * (ends[seg] + ends[seg + 1]) - top * r[seg + 1] * digit.flatten * 0.45
        if seg == 2:
            centre = centre + d * 0.002
        length = 0.5 * np.linalg.norm(ends[seg + 1] - ends[seg])
        pad = _ellipsoid(p, centre, [d, side, top], [length * 0.9, r[seg + 1] * 0.82, r[seg + 1] * 0.55])
        finger = _smin(finger, pad, 0.003)
    for seg in (1, 2):  # interphalangeal knuckles, slightly dorsal
        knuckle = joints[seg] + top * r[seg] * 0.15
        finger = _smin(finger, np.sqrt(np.sum((p - knuckle) ** 2, axis=1)) - r[seg] * 0.9, 0.004)
    return finger


# --- meshing ---------------------------------------------------------------------------------------------------


def _bounds(forearm: bool) -> np.ndarray:
    lo = np.array([-0.200, -0.055, -0.060])
    hi = np.array([0.105 if forearm else 0.035, 0.035, 0.125])
    return np.stack([lo, hi])


def _sampled_field(axes: list[np.ndarray], forearm: bool, step: int = 3, band: float = 0.006) -> np.ndarray:
    """The field on the grid ``axes`` (flattened, C order): exact within a band around the surface found on a
    ``step``-times coarser grid, the nearest coarse value (same sign, far from the surface) elsewhere."""
    from scipy import ndimage

    shape = tuple(len(a) for a in axes)
    coarse_axes = [a[::step] for a in axes]
    cgrid = np.stack(np.meshgrid(*coarse_axes, indexing="ij"), axis=-1).reshape(-1, 3)
    coarse = hand_sdf(cgrid, forearm).reshape(tuple(len(a) for a in coarse_axes))
    near = ndimage.binary_dilation(np.abs(coarse) < band, iterations=1)
    idx = [np.minimum(np.arange(n) // step, len(c) - 1) for n, c in zip(shape, coarse_axes)]
    fine_near = near[np.ix_(*idx)]
    values = coarse[np.ix_(*idx)].copy()
    where = np.nonzero(fine_near)
    pts = np.stack([axes[i][where[i]] for i in range(3)], axis=1)
    out = np.empty(len(pts))
    for start in range(0, len(pts), 400_000):
        out[start : start + 400_000] = hand_sdf(pts[start : start + 400_000], forearm)
    values[where] = out
    return values.reshape(-1)


def _mesh_sdf(options: BuildOptions) -> tuple[np.ndarray, np.ndarray]:
    """Vertices (V, 3) and outward faces (F, 3) of the zero level set."""
    import manifold3d

    lo, hi = _bounds(options.forearm)
    h = options.grid
    n = np.ceil((hi - lo) / h).astype(int) + 1
    axes = [lo[i] + h * np.arange(n[i]) for i in range(3)]
    values = _sampled_field(axes, options.forearm)
    flat = (-values).tolist()  # manifold3d: positive inside
    nx, ny, nz = (int(v) for v in n)
    syz, sz = ny * nz, nz
    x0, y0, z0 = (float(v) for v in lo)
    inv = 1.0 / h
    floor = math.floor

    def field(x: float, y: float, z: float) -> float:
        fx, fy, fz = (x - x0) * inv, (y - y0) * inv, (z - z0) * inv
        i, j, k = floor(fx), floor(fy), floor(fz)
        if i < 0 or j < 0 or k < 0 or i >= nx - 1 or j >= ny - 1 or k >= nz - 1:
            return -1.0
        tx, ty, tz = fx - i, fy - j, fz - k
        b = i * syz + j * sz + k
        c00 = flat[b] + (flat[b + syz] - flat[b]) * tx
        c01 = flat[b + 1] + (flat[b + syz + 1] - flat[b + 1]) * tx
        c10 = flat[b + sz] + (flat[b + syz + sz] - flat[b + sz]) * tx
        c11 = flat[b + sz + 1] + (flat[b + syz + sz + 1] - flat[b + sz + 1]) * tx
        c0 = c00 + (c10 - c00) * ty
        c1 = c01 + (c11 - c01) * ty
        return c0 + (c1 - c0) * tz

    box = [*(float(v) + h for v in lo), *(float(v) - h for v in hi)]
    solid = manifold3d.Manifold.level_set(field, box, options.edge_length)
    if options.simplify > 0:
        solid = solid.simplify(options.simplify)
    mesh = solid.to_mesh64() if hasattr(solid, "to_mesh64") else solid.to_mesh()
    verts = np.asarray(mesh.vert_properties, dtype=np.float64)[:, :3]
    faces = np.asarray(mesh.tri_verts, dtype=np.int64)
    # project onto the exact field (two Newton steps along the finite-difference gradient)
    eps = 1e-5
    for _ in range(2):
        f0 = hand_sdf(verts, options.forearm)
        grad = np.stack(
            [
                (hand_sdf(verts + eps * e, options.forearm) - hand_sdf(verts - eps * e, options.forearm))
                / (2 * eps)
                for e in np.eye(3)
            ],
            axis=1,
        )
        verts = verts - (f0 / np.maximum(np.einsum("ij,ij->i", grad, grad), 1e-12))[:, None] * grad
    return verts, faces


# --- rig -------------------------------------------------------------------------------------------------------


def _skeleton() -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Rest joints (16, 3) in MANO order (the wrist at the origin) and each digit's tip surface point (3,)."""
    joints = np.zeros((NUM_JOINTS, 3))
    tips = {}
    for digit in _DIGITS:
        pts, tip = _digit_points(digit)
        joints[list(FINGER_JOINTS[digit.name])] = pts
        tips[digit.name] = tip
    return joints, tips


def _segment_distance(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    ab = b - a
    t = np.clip((p - a) @ ab / (ab @ ab), 0.0, 1.0)
    d = p - a - t[:, None] * ab
    return np.sqrt(np.einsum("ij,ij->i", d, d))


def _skin_weights(verts: np.ndarray, joints: np.ndarray, tips: dict, power: float = 8.0) -> np.ndarray:
    """(V, 16) distance-falloff weights (see the module docstring)."""
    dist = np.full((len(verts), NUM_JOINTS), np.inf)
    for digit in _DIGITS:
        chain = FINGER_JOINTS[digit.name]
        ends = [joints[chain[0]], joints[chain[1]], joints[chain[2]], tips[digit.name]]
        for k, j in enumerate(chain):
            dist[:, j] = _segment_distance(verts, ends[k], ends[k + 1])
        # the wrist's bone: from the wrist to the first joint (metacarpal, or the thumb's CMC)
        dist[:, 0] = np.minimum(dist[:, 0], _segment_distance(verts, joints[0], joints[chain[0]]))
    w = np.maximum(dist, 1e-4) ** -power
    w /= w.sum(axis=1, keepdims=True)
    w[w < 0.02] = 0.0
    order = np.argsort(-w, axis=1, kind="stable")
    w[np.arange(len(w))[:, None], order[:, 4:]] = 0.0
    return w / w.sum(axis=1, keepdims=True)


def _affine_regressor(verts: np.ndarray, ids: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Weights on ``verts[ids]`` closest to uniform with sum 1 and weighted mean exactly ``target``."""
    n = len(ids)
    a = np.vstack([verts[ids].T, np.ones((1, n))])  # (4, n)
    u = np.full(n, 1.0 / n)
    b = np.append(target, 1.0)
    return u + a.T @ np.linalg.solve(a @ a.T, b - a @ u)


def _joint_ring(verts: np.ndarray, centre: np.ndarray, axis: np.ndarray, radius: float) -> np.ndarray:
    """Skin vertices near the cross-section through ``centre`` normal to ``axis`` (within ``radius``)."""
    rel = verts - centre
    along = rel @ axis
    radial = np.linalg.norm(rel - np.outer(along, axis), axis=1)
    for slab in (0.002, 0.003, 0.0045, 0.006):
        ids = np.flatnonzero((np.abs(along) < slab) & (radial < radius))
        if len(ids) >= 12:
            return ids
    raise RuntimeError(f"no skin ring around the joint at {centre}")


def _options_key(options: BuildOptions) -> str:
    """Cache key: the options, the numpy version and this module's source (any change to the construction
    rebuilds)."""
    payload = {"build": _BUILD_VERSION, "options": asdict(options), "numpy": np.__version__}
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode())
    digest.update(Path(__file__).read_bytes())
    return digest.hexdigest()[:16]


def build_v2_data(options: BuildOptions = BuildOptions(), name: str = BUILTIN_V2_NAME) -> HandModelData:
    """Build the v2 hand (no cache; see :func:`load_v2_data`)."""
    import trimesh

    t0 = time.perf_counter()
    verts, faces = _mesh_sdf(options)
    mesh = trimesh.Trimesh(verts, faces, process=False)
    if mesh.volume < 0:
        faces = faces[:, ::-1]
    joints, tips = _skeleton()
    weights = _skin_weights(verts, joints, tips)
    if options.forearm:  # the stub follows the wrist only
        stub = verts[:, 0] > 0.006
        weights[stub] = 0.0
        weights[stub, 0] = 1.0

    # joint regressor: the skin ring around each joint, affine weights reproducing the joint
    j_reg = np.zeros((NUM_JOINTS, len(verts)))
    # the wrist from skin skinned to the wrist alone, so only the betas centred on it (0, 2, 3) act on it
    pure = np.flatnonzero(weights[:, 0] == 1.0)
    ring = pure[_joint_ring(verts[pure], joints[0], np.array([1.0, 0.0, 0.0]), 0.06)]
    j_reg[0, ring] = _affine_regressor(verts, ring, joints[0])
    tip_ids = np.zeros(5, dtype=np.int64)
    for k, digit in enumerate(_DIGITS):
        d = _unit(digit.direction)
        chain = FINGER_JOINTS[digit.name]
        for j, radius in zip(chain, digit.radii[:3]):
            ids = _joint_ring(verts, joints[j], d, radius * 1.6)
            j_reg[j, ids] = _affine_regressor(verts, ids, joints[j])
        distal = np.flatnonzero(np.argmax(weights, axis=1) == chain[2])
        tip_ids[k] = distal[np.argmax((verts[distal] - joints[chain[2]]) @ d)]

    shapedirs = _shape_dirs(verts, weights, joints)
    data = HandModelData(
        name=name,
        v_template=verts,
        faces=np.ascontiguousarray(faces),
        shapedirs=shapedirs,
        posedirs=None,
        J_regressor=j_reg,
        weights=weights,
        parents=MANO_PARENTS.copy(),
        tip_vertex_ids=tip_ids,
    )
    logger.info(
        "built %s: %d vertices, %d faces in %.1f s", name, len(verts), len(faces), time.perf_counter() - t0
    )
    return data


def _shape_dirs(verts: np.ndarray, weights: np.ndarray, joints: np.ndarray) -> np.ndarray:
    """(V, 3, 10) shape blend shapes (see the module docstring)."""
    wrist = joints[0]
    sd = np.zeros((len(verts), 3, NUM_BETAS))
    sd[:, :, 0] = 0.06 * (verts - wrist)
    for digit in _DIGITS:
        d = _unit(digit.direction)
        chain = FINGER_JOINTS[digit.name]
        w_digit = weights[:, list(chain)].sum(axis=1)
        # finger length: phalanges only (from the MCP; the thumb's from its MCP, joint 14)
        start = joints[chain[1]] if digit.name == "thumb" else joints[chain[0]]
        along = np.clip((verts - start) @ d, 0.0, None)
        w_len = weights[:, list(chain[1:])].sum(axis=1) if digit.name == "thumb" else w_digit
        sd[:, :, 1] += 0.08 * (w_len * along)[:, None] * d
        # girth: radially about the digit's axis
        s = np.clip((verts - joints[chain[0]]) @ d, 0.0, None)
        axis_pt = joints[chain[0]] + s[:, None] * d
        sd[:, :, 4] += 0.08 * w_digit[:, None] * (verts - axis_pt)
        if digit.name == "thumb":  # thumb length, metacarpal included
            along = np.clip((verts - joints[chain[0]]) @ d, 0.0, None)
            sd[:, :, 6] += 0.08 * (w_digit * along)[:, None] * d
    sd[:, 2, 2] = 0.06 * (verts[:, 2] - wrist[2])
    sd[:, 1, 3] = 0.08 * (verts[:, 1] - wrist[1])
    # palm length: stretch along -x up to the knuckle line; fingers ride along, the thumb with its base
    onset, knuckles = 0.008, 0.090  # the stretch starts past the wrist joint's skin ring
    u = np.clip(-(verts[:, 0] - wrist[0]) - onset, 0.0, knuckles - onset)
    thumb_w = weights[:, list(FINGER_JOINTS["thumb"])].sum(axis=1)
    u_thumb = float(np.clip(-(joints[13, 0] - wrist[0]) - onset, 0.0, knuckles - onset))
    u = (1.0 - thumb_w) * u + thumb_w * u_thumb
    sd[:, 0, 5] = -0.06 * u
    return sd


def cache_dir() -> Path:
    """Where built hands are cached: ``$HOIGEN_CACHE_DIR`` or ``~/.cache/hoigen`` (``hands/`` below it)."""
    root = os.environ.get(CACHE_ENV_VAR) or os.path.join(os.path.expanduser("~"), ".cache", "hoigen")
    return Path(root) / "hands"


_ARRAYS = ("v_template", "faces", "shapedirs", "J_regressor", "weights", "tip_vertex_ids")


def load_v2_data(options: BuildOptions = BuildOptions()) -> HandModelData:
    """The v2 hand, from the disk cache when present, else built and cached (written atomically)."""
    path = cache_dir() / f"{BUILTIN_V2_NAME}-{_options_key(options)}.npz"
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in _ARRAYS}
            return HandModelData(name=BUILTIN_V2_NAME, posedirs=None, parents=MANO_PARENTS.copy(), **arrays)
        except (OSError, ValueError, KeyError) as exc:
            logger.warning("ignoring the unreadable hand cache %s (%s); rebuilding", path, exc)
    data = build_v2_data(options)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as handle:
            np.savez(handle, **{k: getattr(data, k) for k in _ARRAYS})
        os.replace(tmp, path)
    except OSError as exc:
        logger.warning("could not cache the built hand at %s (%s)", path, exc)
    return data


@lru_cache(maxsize=4)
def _cached(options: BuildOptions) -> HandModelData:
    return load_v2_data(options)


STUB_OFFSET = 0.0002  # metres: stub faces lie at least this far outside the plain hand (every corner)


@dataclass(frozen=True, eq=False)
class ForearmSkin:
    """The forearm stub: an open skin sheet outside the plain hand, posed with the hand's own parameters.

    Attributes:
        v_template: (A, 3) rest vertices, metres, the hand's rest frame.
        faces: (F, 3) triangles (outward), indices into ``v_template``.
        shapedirs: (A, 3, 10) shape blend shapes (those of the skin it was cut from).
        weights: (A, 16) skinning weights on the hand's joints (1 on the wrist along the forearm).
    """

    v_template: np.ndarray
    faces: np.ndarray
    shapedirs: np.ndarray
    weights: np.ndarray

    @property
    def num_vertices(self) -> int:
        return int(self.v_template.shape[0])


def forearm_skin(options: BuildOptions = BuildOptions()) -> ForearmSkin:
    """Cut the stub out of the skin meshed with the forearm (see the module docstring); ``options.forearm`` is
    implied."""
    data = _cached(BuildOptions(**{**asdict(options), "forearm": True}))
    outside = hand_sdf(data.v_template, forearm=False) > STUB_OFFSET
    keep = outside[data.faces].all(axis=1)
    used = np.unique(data.faces[keep])
    index = np.full(data.num_vertices, -1, dtype=np.int64)
    index[used] = np.arange(len(used))
    return ForearmSkin(
        v_template=data.v_template[used],
        faces=np.ascontiguousarray(index[data.faces[keep]]),
        shapedirs=data.shapedirs[used, :, :NUM_BETAS],
        weights=data.weights[used],
    )


@lru_cache(maxsize=2)
def _cached_forearm(options: BuildOptions) -> ForearmSkin:
    return forearm_skin(options)


class BuiltinHandV2(BuiltinHand):
    """hoigen's built-in hand, version 2 (see module docstring): ``BuiltinHand(version=2)``.

    Args:
        forearm: carry the forearm stub (``forearm_skin``), drawn by the renderer as its own instance; the hand's
            own mesh is unchanged.
    """

    def __init__(self, forearm: bool = False):
        super().__init__(version=2, forearm=forearm)
