"""Procedural, watertight meshes for the six NOCS categories, at real-world sizes.

Frame of every mesh from :func:`make_builtin_mesh` (metres, before canonicalisation; NOCS orientation, SPEC §2):
**y is up** and the object stands on the plane y = 0; the symmetry axis of the bottle, bowl, can and mug body is
the y axis (x = z = 0).

- bottle: revolved profile — rounded foot, straight body, S-shaped shoulder, neck, screw cap (wider than the neck).
- bowl: revolved, open top — flat foot, walls curving out to a vertical rounded rim, uniform wall thickness.
- can: revolved — concave bottom dome and bevelled foot, straight wall, bevelled neck, rim and a recessed lid.
- mug: revolved open-top body (slight taper, rounded rim) plus a handle — a swept elliptical tube bent in the
  x-y plane — on the **+x** side.
- camera: chamfered body box; the lens (stacked cylinders) faces **+z**; a viewfinder hump on top (+y) above the
  lens; a hand grip on the front face at the −x end (the user's right hand when looking through it from −z).
- laptop: the base lies in the x-z plane at the bottom (y from 0 to the base thickness) with a keyboard well on
  top; the hinge runs along x at the back (−z) edge of the base; the screen is opened by 95–130° from the base and
  rises toward +y (leaning back toward −z), its display facing +z.

Sizes, sampled uniformly (metres): bottle height 0.15–0.30, diameter 0.05–0.09; bowl diameter 0.12–0.20, height
0.05–0.09, wall 0.003–0.006; can height 0.09–0.16, diameter 0.055–0.10; camera body 0.10–0.14 (x) × 0.06–0.09 (y)
× 0.035–0.06 (z); laptop width (x) 0.28–0.36, depth (z) 0.19–0.25, base thickness 0.012–0.02, screen thickness
0.005–0.008; mug diameter (at the rim) 0.07–0.095, height 0.08–0.11, wall 0.003–0.005.

Colours are uint8 RGBA face colours, assigned after the booleans (from the part each face came from, or from its
height on revolved bodies), so :func:`~hoigen.objects.asset.make_asset` keeps them.
"""

from __future__ import annotations

import colorsys
import math
from collections.abc import Callable

import numpy as np
import trimesh

from hoigen.objects.asset import ObjectAsset, make_asset
from hoigen.objects.categories import NOCS_CLASSES, NOCS_SYMMETRY

BUILTIN_CATEGORIES: tuple[str, ...] = ("bottle", "bowl", "camera", "can", "laptop", "mug")
GENERATOR = "hoigen.builtin.v1"

SECTIONS = 72  # segments around a surface of revolution; a multiple of 4 so the x and z extents are equal
PROFILE_STEP = 0.006  # longest segment of a revolved profile, metres
_Z_TO_Y = trimesh.transformations.rotation_matrix(-math.pi / 2.0, [1.0, 0.0, 0.0])  # (x, y, z) -> (x, z, -y)

Color = tuple[int, int, int]


# --- small geometry helpers -------------------------------------------------------------------------------------


def _arc(cx: float, cy: float, radius: float, a0: float, a1: float, n: int) -> np.ndarray:
    """(n + 1, 2) points on a circular arc from angle ``a0`` to ``a1`` (radians), endpoints included."""
    angles = np.linspace(a0, a1, n + 1)
    return np.column_stack([cx + radius * np.cos(angles), cy + radius * np.sin(angles)])


def _densify(points: np.ndarray, step: float) -> np.ndarray:
    """Polyline (K, 2) with every segment split into pieces no longer than ``step``; zero-length segments dropped."""
    points = np.asarray(points, dtype=np.float64)
    out = [points[:1]]
    for a, b in zip(points[:-1], points[1:]):
        length = float(np.linalg.norm(b - a))
        if length < 1e-9:
            continue
        n = max(1, math.ceil(length / step))
        out.append(a + (b - a) * (np.arange(1, n + 1)[:, None] / n))
    return np.concatenate(out)


def _revolve_y(profile: np.ndarray) -> trimesh.Trimesh:
    """Solid of revolution about the y axis of a (radius, height) profile (K, 2), metres.

    The profile runs counter-clockwise in the (radius, height) plane and starts and ends on the axis, so the
    result is a closed, outward-facing solid.
    """
    profile = _densify(profile, PROFILE_STEP)
    mesh = trimesh.creation.revolve(profile, sections=SECTIONS, transform=_Z_TO_Y)
    mesh.merge_vertices()
    if mesh.volume < 0:
        mesh.invert()
    return mesh


def _tube(path: np.ndarray, half_inplane: float, half_z: float, sections: int = 24) -> trimesh.Trimesh:
    """Closed tube with an elliptical section swept along a path (P, 2) in the x-y plane (z = 0), metres.

    The section has half-axis ``half_inplane`` in the path plane and ``half_z`` along z; both ends are capped.
    """
    path = np.asarray(path, dtype=np.float64)
    tangent = np.gradient(path, axis=0)
    tangent /= np.linalg.norm(tangent, axis=1, keepdims=True)
    normal = np.column_stack([-tangent[:, 1], tangent[:, 0]])
    theta = 2.0 * math.pi * np.arange(sections) / sections
    n_path = len(path)
    rings = np.empty((n_path, sections, 3))
    rings[..., :2] = path[:, None, :] + half_inplane * np.cos(theta)[None, :, None] * normal[:, None, :]
    rings[..., 2] = half_z * np.sin(theta)[None, :]
    vertices = np.concatenate([rings.reshape(-1, 3), np.column_stack([path[[0, -1]], np.zeros(2)])])
    i = np.arange(n_path - 1)[:, None] * sections
    j = np.arange(sections)[None, :]
    v00, v01 = i + j, i + (j + 1) % sections
    v10, v11 = v00 + sections, v01 + sections
    side = np.concatenate(
        [np.stack([v00, v11, v10], -1).reshape(-1, 3), np.stack([v00, v01, v11], -1).reshape(-1, 3)]
    )
    c0, c1 = n_path * sections, n_path * sections + 1
    last = (n_path - 1) * sections
    j = np.arange(sections)
    cap0 = np.column_stack([np.full(sections, c0), (j + 1) % sections, j])
    cap1 = np.column_stack([np.full(sections, c1), last + j, last + (j + 1) % sections])
    mesh = trimesh.Trimesh(vertices, np.concatenate([side, cap0, cap1]))
    if mesh.volume < 0:
        mesh.invert()
    return mesh


def _chamfered_box(lo, hi, chamfer: float) -> trimesh.Trimesh:
    """Axis-aligned box from corner ``lo`` to ``hi`` (3,) metres with all edges chamfered by ``chamfer``."""
    lo, hi = np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64)
    corners = np.array(np.meshgrid([0, 1], [0, 1], [0, 1], indexing="ij")).reshape(3, -1).T
    points = []
    for axis in range(3):
        inset = np.full(3, chamfer)
        inset[axis] = 0.0
        shrunk_lo, shrunk_hi = lo + inset, hi - inset
        points.append(np.where(corners == 0, shrunk_lo, shrunk_hi))
    return trimesh.convex.convex_hull(np.concatenate(points))


def _cylinder(
    radius: float, z0: float, z1: float, transform: np.ndarray, sections: int = 48
) -> trimesh.Trimesh:
    """Cylinder along local z from ``z0`` to ``z1`` (metres), placed by the 4x4 ``transform``."""
    local = trimesh.transformations.translation_matrix([0.0, 0.0, (z0 + z1) / 2.0])
    return trimesh.creation.cylinder(
        radius=radius, height=z1 - z0, sections=sections, transform=transform @ local
    )


def _combine(
    parts: list[trimesh.Trimesh], subtract: list[trimesh.Trimesh] | None = None, max_edge: float | None = None
) -> tuple[trimesh.Trimesh, np.ndarray]:
    """Boolean union of ``parts`` minus ``subtract`` with manifold3d (float64), optionally refined.

    Returns the watertight mesh and (F,) int labels: the index of the part each face came from, counting
    ``parts`` first and then ``subtract`` (a subtracted part labels the faces it cut).
    """
    import manifold3d

    inputs = list(parts) + list(subtract or [])
    manifolds = []
    for mesh in inputs:
        data = manifold3d.Mesh64(
            vert_properties=np.ascontiguousarray(mesh.vertices, dtype=np.float64),
            tri_verts=np.ascontiguousarray(mesh.faces, dtype=np.uint64),
        )
        manifolds.append(manifold3d.Manifold(data).as_original())
    ids = [m.original_id() for m in manifolds]
    result = manifold3d.Manifold.batch_boolean(manifolds[: len(parts)], manifold3d.OpType.Add)
    if subtract:
        cutter = manifold3d.Manifold.batch_boolean(manifolds[len(parts) :], manifold3d.OpType.Add)
        result = result - cutter
    if max_edge is not None:
        result = result.refine_to_length(max_edge)
    if result.status() != manifold3d.Error.NoError:
        raise RuntimeError(f"manifold boolean failed: {result.status()}")
    out = result.to_mesh64()
    faces = np.asarray(out.tri_verts, dtype=np.int64)
    labels = np.zeros(len(faces), dtype=np.int64)
    bounds = np.asarray(out.run_index, dtype=np.int64) // 3
    for k, original in enumerate(np.asarray(out.run_original_id)):
        labels[bounds[k] : bounds[k + 1]] = ids.index(int(original))
    mesh = trimesh.Trimesh(np.asarray(out.vert_properties)[:, :3], faces, process=False)
    return mesh, labels


# --- colours -----------------------------------------------------------------------------------------------------


def _hsv(h: float, s: float, v: float) -> Color:
    """RGB (0-255 ints) of a hue/saturation/value in [0, 1]."""
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0.0), 1.0), min(max(v, 0.0), 1.0))
    return (round(r * 255), round(g * 255), round(b * 255))


def _grey(value: float, tint: Color = (0, 0, 0)) -> Color:
    """A grey of ``value`` in [0, 1] plus a small integer ``tint``."""
    base = round(min(max(value, 0.0), 1.0) * 255)
    return tuple(int(min(max(base + t, 0), 255)) for t in tint)


def _paint(mesh: trimesh.Trimesh, colors: list[Color], index: np.ndarray) -> None:
    """Set uint8 RGBA face colours: face f gets ``colors[index[f]]`` (opaque)."""
    table = np.array([[*c, 255] for c in colors], dtype=np.uint8)
    mesh.visual.face_colors = table[np.asarray(index)]


# --- categories --------------------------------------------------------------------------------------------------


def _bottle(rng: np.random.Generator) -> tuple[trimesh.Trimesh, dict]:
    height = rng.uniform(0.15, 0.30)
    radius = rng.uniform(0.05, 0.09) / 2.0
    neck_radius = float(np.clip(radius * rng.uniform(0.3, 0.45), 0.009, 0.018))
    cap_height = rng.uniform(0.012, 0.025)
    cap_radius = neck_radius + rng.uniform(0.001, 0.0025)
    shoulder_y = height * rng.uniform(0.5, 0.68)
    neck_length = (height - cap_height - shoulder_y) * rng.uniform(0.25, 0.45)
    neck_y = height - cap_height - neck_length
    foot = rng.uniform(0.003, 0.008)
    label_lo = foot + (shoulder_y - foot) * rng.uniform(0.1, 0.3)
    label_hi = foot + (shoulder_y - foot) * rng.uniform(0.65, 0.9)
    has_label = bool(rng.random() < 0.6)
    glass = bool(rng.random() < 0.5)
    if glass:
        body = _hsv(
            rng.choice([0.08, 0.3, 0.55]) + rng.uniform(-0.03, 0.03),
            rng.uniform(0.4, 0.8),
            0.2 + 0.5 * rng.random(),
        )
    else:
        body = _hsv(rng.random(), rng.uniform(0.2, 0.9), rng.uniform(0.4, 0.95))
    cap = _hsv(rng.random(), rng.uniform(0.0, 0.9), rng.uniform(0.1, 0.95))
    label = _hsv(rng.random(), rng.uniform(0.3, 1.0), rng.uniform(0.5, 1.0))

    u = np.linspace(0.0, 1.0, 17)[1:]
    shoulder = np.column_stack(
        [
            neck_radius + (radius - neck_radius) * (1 + np.cos(math.pi * u)) / 2,
            shoulder_y + u * (neck_y - shoulder_y),
        ]
    )
    edge = min(0.0015, cap_height / 4)
    profile = np.concatenate(
        [
            [[0.0, 0.0]],
            _arc(radius - foot, foot, foot, -math.pi / 2, 0.0, 6),
            [[radius, label_lo], [radius, label_hi], [radius, shoulder_y]],
            shoulder,
            [[neck_radius, height - cap_height], [cap_radius, height - cap_height]],
            _arc(cap_radius - edge, height - edge, edge, 0.0, math.pi / 2, 3),
            [[0.0, height]],
        ]
    )
    mesh = _revolve_y(profile)
    y = mesh.triangles_center[:, 1]
    index = np.zeros(len(mesh.faces), dtype=np.int64)
    if has_label:
        index[(y > label_lo) & (y < label_hi)] = 2
    index[y > height - cap_height - 1e-9] = 1
    _paint(mesh, [body, cap, label], index)
    params = {
        "height": height,
        "diameter": 2 * radius,
        "neck_diameter": 2 * neck_radius,
        "cap_diameter": 2 * cap_radius,
        "cap_height": cap_height,
        "shoulder_y": shoulder_y,
        "neck_y": neck_y,
        "foot_radius": foot,
        "label": [label_lo, label_hi] if has_label else None,
        "material": "glass" if glass else "plastic",
        "colors": {"body": body, "cap": cap, "label": label},
    }
    return mesh, params


def _bowl(rng: np.random.Generator) -> tuple[trimesh.Trimesh, dict]:
    radius = rng.uniform(0.12, 0.20) / 2.0
    height = rng.uniform(0.05, 0.09)
    wall = rng.uniform(0.003, 0.006)
    foot_radius = radius * rng.uniform(0.35, 0.55)
    bottom = wall * rng.uniform(1.0, 1.6)
    exponent = rng.uniform(2.0, 3.0)
    glaze = _hsv(rng.random(), rng.uniform(0.05, 0.7), rng.uniform(0.45, 0.97))

    s = np.linspace(0.0, 1.0, 41)
    wall_top = height - wall / 2.0
    outer = np.column_stack([foot_radius + (radius - foot_radius) * (1 - (1 - s) ** exponent), wall_top * s])
    tangent = np.column_stack(
        [(radius - foot_radius) * exponent * (1 - s) ** (exponent - 1), np.full_like(s, wall_top)]
    )
    tangent /= np.linalg.norm(tangent, axis=1, keepdims=True)
    inner = outer + wall * np.column_stack([-tangent[:, 1], tangent[:, 0]])  # offset toward the cavity
    below = np.nonzero(inner[:, 1] <= bottom)[0]
    k = int(below.max())  # last inner point at or below the inner floor; the curve rises after it
    t = (bottom - inner[k, 1]) / (inner[k + 1, 1] - inner[k, 1])
    floor_edge = inner[k] + t * (inner[k + 1] - inner[k])
    profile = np.concatenate(
        [
            [[0.0, 0.0]],
            outer,
            _arc(radius - wall / 2, wall_top, wall / 2, 0.0, math.pi, 6)[1:-1],
            inner[k + 1 :][::-1],
            [floor_edge, [0.0, bottom]],
        ]
    )
    mesh = _revolve_y(profile)
    _paint(mesh, [glaze], np.zeros(len(mesh.faces), dtype=np.int64))
    params = {
        "diameter": 2 * radius,
        "height": height,
        "wall": wall,
        "foot_diameter": 2 * foot_radius,
        "bottom": bottom,
        "exponent": exponent,
        "colors": {"glaze": glaze},
    }
    return mesh, params


def _can(rng: np.random.Generator) -> tuple[trimesh.Trimesh, dict]:
    height = rng.uniform(0.09, 0.16)
    radius = rng.uniform(0.055, 0.10) / 2.0
    foot_inset, foot_height = rng.uniform(0.003, 0.006), rng.uniform(0.004, 0.008)
    neck_inset, neck_height = rng.uniform(0.003, 0.006), rng.uniform(0.006, 0.012)
    lip_height, lip_width = rng.uniform(0.002, 0.004), rng.uniform(0.0015, 0.0025)
    recess = rng.uniform(0.003, 0.006)
    dome = rng.uniform(0.003, 0.008)
    wall_lo, wall_hi = foot_height, height - lip_height - neck_height
    stripe_lo = wall_lo + (wall_hi - wall_lo) * rng.uniform(0.1, 0.6)
    stripe_hi = stripe_lo + (wall_hi - wall_lo) * rng.uniform(0.08, 0.3)
    label = _hsv(rng.random(), rng.uniform(0.5, 1.0), rng.uniform(0.4, 0.95))
    stripe = _hsv(rng.random(), rng.uniform(0.0, 1.0), rng.uniform(0.6, 1.0))
    metal = _grey(rng.uniform(0.65, 0.82), (0, 2, 6))

    foot_r = radius - foot_inset
    u = np.linspace(0.0, 1.0, 7)
    dome_curve = np.column_stack([u * (foot_r - 0.002), dome * np.cos(math.pi / 2 * u)])
    top_r = radius - neck_inset
    profile = np.concatenate(
        [
            dome_curve,
            [
                [foot_r, 0.0],
                [radius, foot_height],
                [radius, stripe_lo],
                [radius, stripe_hi],
                [radius, wall_hi],
            ],
            [[top_r, height - lip_height], [top_r, height], [top_r - lip_width, height]],
            [[top_r - lip_width, height - recess], [0.0, height - recess]],
        ]
    )
    mesh = _revolve_y(profile)
    y = mesh.triangles_center[:, 1]
    index = np.zeros(len(mesh.faces), dtype=np.int64)
    index[(y > wall_lo) & (y < wall_hi)] = 1
    index[(y > stripe_lo) & (y < stripe_hi)] = 2
    _paint(mesh, [metal, label, stripe], index)
    params = {
        "height": height,
        "diameter": 2 * radius,
        "foot_inset": foot_inset,
        "foot_height": foot_height,
        "neck_inset": neck_inset,
        "neck_height": neck_height,
        "lip_height": lip_height,
        "lid_recess": recess,
        "bottom_dome": dome,
        "label": [wall_lo, wall_hi],
        "stripe": [stripe_lo, stripe_hi],
        "colors": {"ends": metal, "label": label, "stripe": stripe},
    }
    return mesh, params


def _mug(rng: np.random.Generator) -> tuple[trimesh.Trimesh, dict]:
    radius = rng.uniform(0.07, 0.095) / 2.0
    height = rng.uniform(0.08, 0.11)
    wall = rng.uniform(0.003, 0.005)
    bottom_radius = radius * rng.uniform(0.88, 1.0)
    bottom = rng.uniform(0.006, 0.01)
    outer_fillet, inner_fillet = rng.uniform(0.002, 0.004), rng.uniform(0.003, 0.008)
    handle_thick, handle_width = rng.uniform(0.0035, 0.005), rng.uniform(0.005, 0.008)
    reach = rng.uniform(0.018, 0.03)
    handle_mid = height * rng.uniform(0.45, 0.6)
    handle_half = height * rng.uniform(0.28, 0.36)
    glaze = _hsv(rng.random(), rng.uniform(0.05, 0.8), rng.uniform(0.35, 0.97))

    wall_top = height - wall / 2.0

    def outer_r(y):
        return bottom_radius + (radius - bottom_radius) * np.asarray(y) / wall_top

    ys = np.linspace(outer_fillet, wall_top, 12)
    inner_ys = np.linspace(wall_top, bottom + inner_fillet, 12)
    inner_corner = float(outer_r(bottom + inner_fillet)) - wall
    profile = np.concatenate(
        [
            [[0.0, 0.0]],
            _arc(bottom_radius - outer_fillet, outer_fillet, outer_fillet, -math.pi / 2, 0.0, 4)[:-1],
            np.column_stack([outer_r(ys), ys]),
            _arc(radius - wall / 2, wall_top, wall / 2, 0.0, math.pi, 6)[1:-1],
            np.column_stack([outer_r(inner_ys) - wall, inner_ys]),
            _arc(inner_corner - inner_fillet, bottom + inner_fillet, inner_fillet, 0.0, -math.pi / 2, 4)[1:],
            [[0.0, bottom]],
        ]
    )
    body = _revolve_y(profile)

    margin = 0.008 + handle_thick
    handle_half = min(handle_half, height - margin - handle_mid, handle_mid - margin)
    x0 = radius - wall / 2.0  # the handle's ends sit in the middle of the wall
    phi = np.linspace(-math.pi / 2, math.pi / 2, 41)
    path = np.column_stack([x0 + (reach + wall / 2) * np.cos(phi), handle_mid + handle_half * np.sin(phi)])
    ends = []
    for y_end in (handle_mid - handle_half, handle_mid + handle_half):
        ends.append(float(outer_r(y_end)) - wall / 2.0)
    if x0 - ends[0] > 1e-4:
        path = np.concatenate([[[ends[0], path[0, 1]]], path])
    if x0 - ends[1] > 1e-4:
        path = np.concatenate([path, [[ends[1], path[-1, 1]]]])
    handle = _tube(path, handle_thick, handle_width)
    mesh, _ = _combine([body, handle])
    _paint(mesh, [glaze], np.zeros(len(mesh.faces), dtype=np.int64))
    params = {
        "diameter": 2 * radius,
        "bottom_diameter": 2 * bottom_radius,
        "height": height,
        "wall": wall,
        "bottom": bottom,
        "handle_reach": reach,
        "handle_center_y": handle_mid,
        "handle_half_height": handle_half,
        "handle_section": [2 * handle_thick, 2 * handle_width],
        "colors": {"glaze": glaze},
    }
    return mesh, params


def _camera(rng: np.random.Generator) -> tuple[trimesh.Trimesh, dict]:
    width, height, depth = rng.uniform(0.10, 0.14), rng.uniform(0.06, 0.09), rng.uniform(0.035, 0.06)
    chamfer = rng.uniform(0.002, 0.005)
    lens_radius = rng.uniform(0.016, min(0.028, 0.36 * height, 0.3 * width))
    ring_radius = lens_radius * rng.uniform(1.04, 1.12)
    lens_length = rng.uniform(0.015, 0.045)
    ring_length = rng.uniform(0.004, 0.008)
    lens_x, lens_y = width * rng.uniform(-0.05, 0.12), height * rng.uniform(0.42, 0.5)
    finder = (rng.uniform(0.025, 0.04), rng.uniform(0.008, 0.016), depth * rng.uniform(0.5, 0.8))
    grip_width = min(rng.uniform(0.018, 0.028), max(0.008, lens_x - ring_radius + width / 2 - 0.003))
    grip_depth = min(rng.uniform(0.008, 0.016), 0.7 * lens_length)
    body_color = _grey(rng.uniform(0.08, 0.25), tuple(int(v) for v in rng.integers(-4, 5, 3)))
    grip_color = _grey(rng.uniform(0.03, 0.08))
    lens_color = _grey(rng.uniform(0.02, 0.06))
    glass_color = _hsv(rng.uniform(0.55, 0.72), rng.uniform(0.3, 0.7), rng.uniform(0.08, 0.2))

    front = depth / 2 + lens_length
    at_lens = trimesh.transformations.translation_matrix([lens_x, lens_y, 0.0])
    body = _chamfered_box([-width / 2, 0.0, -depth / 2], [width / 2, height, depth / 2], chamfer)
    barrel = _cylinder(lens_radius, depth / 2 - 0.002, front - ring_length, at_lens)
    ring = _cylinder(ring_radius, front - ring_length - 0.0005, front, at_lens)
    glass = _cylinder(lens_radius * 0.8, front - 0.001, front + 0.0005, at_lens)
    fw, fh, fd = finder
    finder_mesh = trimesh.convex.convex_hull(
        np.array(
            [
                [lens_x + sx * w / 2, y, sz * fd / 2]
                for sx in (-1, 1)
                for sz in (-1, 1)
                for y, w in ((height - 0.002, fw), (height + fh, fw * 0.55))
            ]
        )
    )
    grip = _chamfered_box(
        [-width / 2 + 0.001, 0.003, depth / 2 - 0.002],
        [-width / 2 + 0.001 + grip_width, height - 0.008, depth / 2 + grip_depth],
        min(0.003, grip_width / 4),
    )
    mesh, labels = _combine([body, finder_mesh, barrel, ring, grip, glass], max_edge=0.006)
    _paint(mesh, [body_color, body_color, lens_color, lens_color, grip_color, glass_color], labels)
    params = {
        "body": [width, height, depth],
        "chamfer": chamfer,
        "lens_radius": lens_radius,
        "lens_length": lens_length,
        "lens_center": [lens_x, lens_y],
        "viewfinder": list(finder),
        "grip": [grip_width, grip_depth],
        "colors": {"body": body_color, "grip": grip_color, "lens": lens_color, "glass": glass_color},
    }
    return mesh, params


def _laptop(rng: np.random.Generator) -> tuple[trimesh.Trimesh, dict]:
    width, depth = rng.uniform(0.28, 0.36), rng.uniform(0.19, 0.25)
    base_t, screen_t = rng.uniform(0.012, 0.02), rng.uniform(0.005, 0.008)
    angle = rng.uniform(95.0, 130.0)
    hinge_r = screen_t * rng.uniform(0.6, 0.9)
    hinge_len = width * rng.uniform(0.6, 0.9)
    bezel, chin = rng.uniform(0.006, 0.012), rng.uniform(0.012, 0.02)
    keys_width = width * rng.uniform(0.8, 0.9)
    keys_depth = depth * rng.uniform(0.35, 0.45)
    finish = rng.choice(["silver", "space-grey", "black"])
    shade = {"silver": 0.75, "space-grey": 0.45, "black": 0.14}[str(finish)] + rng.uniform(-0.05, 0.05)
    body_color = _grey(shade, tuple(int(v) for v in rng.integers(-3, 4, 3)))
    keys_color = _grey(rng.uniform(0.08, 0.2))
    screen_color = _hsv(rng.uniform(0.55, 0.7), rng.uniform(0.2, 0.5), rng.uniform(0.04, 0.12))

    base = _chamfered_box(
        [-width / 2, 0.0, -depth / 2], [width / 2, base_t, depth / 2], min(0.002, base_t / 4)
    )
    keys_z0 = -depth / 2 + 2 * hinge_r + 0.01
    keys = trimesh.creation.box(
        bounds=[
            [-keys_width / 2, base_t - 0.0008, keys_z0],
            [keys_width / 2, base_t + 0.005, keys_z0 + keys_depth],
        ]
    )
    pivot = np.array([0.0, base_t, -depth / 2 + 0.8 * hinge_r])
    hinge_pose = trimesh.transformations.translation_matrix(pivot) @ trimesh.transformations.rotation_matrix(
        math.pi / 2, [0.0, 1.0, 0.0]
    )
    hinge = _cylinder(hinge_r, -hinge_len / 2, hinge_len / 2, hinge_pose, sections=32)
    # Screen built closed (lying along +z from the hinge axis, display facing -y), then opened about x.
    screen_w, screen_d = width - 0.002, depth - 0.8 * hinge_r
    lid = _chamfered_box(
        [-screen_w / 2, -screen_t / 2, -screen_t / 2],
        [screen_w / 2, screen_t / 2, screen_d],
        min(0.0015, screen_t / 4),
    )
    display = trimesh.creation.box(
        bounds=[
            [-screen_w / 2 + bezel, -screen_t / 2 - 0.0005, chin],
            [screen_w / 2 - bezel, -screen_t / 2 + 0.001, screen_d - bezel],
        ]
    )
    opened = trimesh.transformations.translation_matrix(pivot) @ trimesh.transformations.rotation_matrix(
        -math.radians(angle), [1.0, 0.0, 0.0]
    )
    lid.apply_transform(opened)
    display.apply_transform(opened)
    mesh, labels = _combine([base, hinge, lid, display], subtract=[keys], max_edge=0.012)
    _paint(mesh, [body_color, body_color, body_color, screen_color, keys_color], labels)
    params = {
        "width": width,
        "depth": depth,
        "base_thickness": base_t,
        "screen_thickness": screen_t,
        "screen_angle_deg": angle,
        "hinge_radius": hinge_r,
        "bezel": [bezel, chin],
        "keyboard": [keys_width, keys_depth],
        "finish": str(finish),
        "colors": {"body": body_color, "keyboard": keys_color, "screen": screen_color},
    }
    return mesh, params


_BUILDERS: dict[str, Callable[[np.random.Generator], tuple[trimesh.Trimesh, dict]]] = {
    "bottle": _bottle,
    "bowl": _bowl,
    "camera": _camera,
    "can": _can,
    "laptop": _laptop,
    "mug": _mug,
}


def _jsonable(value):
    """Plain Python floats/ints/lists in place of numpy scalars and tuples."""
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value)
    return value


def _check_category(category: str) -> None:
    if category not in _BUILDERS:
        raise ValueError(
            f"unknown built-in category {category!r}; valid categories are: {', '.join(BUILTIN_CATEGORIES)}"
        )


def make_builtin_mesh(category: str, rng: np.random.Generator) -> tuple[trimesh.Trimesh, dict]:
    """Mesh in metres, y up (not yet centred), and a JSON-serialisable dict of the sampled shape parameters.

    Args:
        category: one of :data:`BUILTIN_CATEGORIES`.
        rng: the only source of randomness; the same generator state gives the same mesh.

    Returns:
        a watertight mesh with uint8 RGBA face colours, standing on y = 0 (see the module docstring for the
        layout of each category), and the parameters (lengths in metres, angles in degrees, colours as RGB).

    Raises:
        ValueError: unknown ``category``. TypeError: ``rng`` is not a ``numpy.random.Generator``.
    """
    _check_category(category)
    if not isinstance(rng, np.random.Generator):
        raise TypeError(
            f"rng must be a numpy.random.Generator (np.random.default_rng(seed)), got {type(rng).__name__}"
        )
    mesh, params = _BUILDERS[category](rng)
    return mesh, _jsonable(params)


def make_builtin_object(category: str, rng: np.random.Generator, index: int = 0) -> ObjectAsset:
    """A procedural object of ``category`` canonicalised by :func:`~hoigen.objects.asset.make_asset`.

    The id is ``{category}-{index:06d}``, the source ``builtin:nocs/{category}``; ``info`` records the generator
    and the sampled parameters.
    """
    _check_category(category)
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
        raise TypeError(f"index must be an int, got {type(index).__name__} {index!r}")
    if index < 0:
        raise ValueError(f"index must be >= 0 (it numbers the object id), got {index}")
    mesh, params = make_builtin_mesh(category, rng)
    return make_asset(
        mesh,
        object_id=f"{category}-{int(index):06d}",
        source=f"builtin:nocs/{category}",
        category=category,
        class_id=NOCS_CLASSES[category],
        symmetry=NOCS_SYMMETRY[category],
        up=np.array([0.0, 1.0, 0.0]),
        units="m",
        info={"generator": GENERATOR, "params": params},
    )
