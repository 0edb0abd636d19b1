"""Condition images for appearance models and fixed surface samples for 3D tracks (numpy + OpenCV only).

Conventions (SPEC §2): OpenCV camera frame (x right, y down, z forward, metres); ``K`` has pixel centres at
integer coordinates, so a W x H image covers [-0.5, W - 0.5) x [-0.5, H - 0.5) in pixel coordinates. Images are
(H, W, 3) uint8 **RGB**. Keypoints are the 21 hand keypoints in OpenPose order (wrist, thumb 1-4, index 1-4,
middle 1-4, ring 1-4, pinky 1-4; ``hoigen.hands.model.OPENPOSE_NAMES``).

- ``draw_skeleton``: the HOIDiffusion skeleton image (REFERENCE.md, "HOIDiffusion").
- ``hoi_mask``: the HOIDiffusion coloured hand/object mask.
- ``tracking_vertex_colors`` / ``splat_tracks``: the Diffusion-as-Shader (DaS) 3D tracking colour encoding.
- ``sample_surface_points``: surface points that stay the same material points in every frame (``points.npy``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import cv2
import numpy as np

# ----------------------------------------------------------------------------------------------------------------
# Skeleton (HOIDiffusion palette)

# Finger base colours, RGB, in hoigen.hands.model.FINGERS order (thumb, index, middle, ring, pinky).
FINGER_BASE_COLORS: tuple[tuple[int, int, int], ...] = (
    (139, 53, 255),
    (0, 56, 255),
    (43, 140, 237),
    (37, 168, 36),
    (147, 147, 0),
)
# Brightening of bone k (0 = wrist -> joint 1 ... 3 = joint 3 -> tip), per channel, clipped at 255.
BONE_BRIGHTEN_STEP = 35
# The wrist belongs to no finger; hoigen draws it white, a colour no finger bone or joint uses.
WRIST_COLOR: tuple[int, int, int] = (255, 255, 255)
BONE_HALF_THICKNESS_PX = 3.0
JOINT_RADIUS_PX = 3.0
BONE_MIN_LENGTH_PX = 5.0
BONE_MAX_LENGTH_PX = 150.0
# Fractional bits of the fixed-point coordinates handed to OpenCV, so discs are centred at float positions.
_SHIFT = 4
_ONE = 1 << _SHIFT

# The 20 bones (parent keypoint, child keypoint), finger by finger, wrist -> tip.
SKELETON_EDGES: tuple[tuple[int, int], ...] = tuple(
    (0 if k == 0 else 1 + 4 * f + k - 1, 1 + 4 * f + k) for f in range(5) for k in range(4)
)


def _brighten(color: tuple[int, int, int], k: int) -> tuple[int, int, int]:
    return tuple(min(255, c + BONE_BRIGHTEN_STEP * k) for c in color)


# (20, 3) uint8 colour of each bone in SKELETON_EDGES order.
SKELETON_BONE_COLORS = np.array(
    [_brighten(FINGER_BASE_COLORS[f], k) for f in range(5) for k in range(4)], dtype=np.uint8
)
# (21, 3) uint8 colour of each keypoint: the wrist is WRIST_COLOR, a finger joint takes the colour of the bone
# ending at it.
SKELETON_JOINT_COLORS = np.concatenate([np.array([WRIST_COLOR], dtype=np.uint8), SKELETON_BONE_COLORS])


def _fixed(value: float) -> int:
    return int(round(value * _ONE))


def draw_skeleton(
    joints2d: np.ndarray,
    width: int,
    height: int,
    visible: np.ndarray | None = None,
    *,
    bones: bool = True,
    joints: bool = True,
) -> np.ndarray:
    """Draw the HOIDiffusion hand skeleton image.

    Bones are filled ellipses (semi-major axis half the bone length, half-thickness 3 px) drawn only for lengths in
    [5, 150] px; joints are filled discs of radius 3 px; bones first, then joints, no anti-aliasing, so every
    non-black pixel has exactly one palette colour (``SKELETON_BONE_COLORS`` / ``SKELETON_JOINT_COLORS``). Shapes
    are rasterised with sub-pixel (1/16 px) precision around the float positions. A joint outside the image, not
    ``visible`` or not finite is not drawn, nor is any bone touching a not-visible or non-finite joint; a bone with
    one end outside the image is drawn clipped.

    Args:
        joints2d: (21, 2) float pixel coordinates (x, y), OpenPose order.
        width: image width in pixels.
        height: image height in pixels.
        visible: (21,) bool, or None for all visible.
        bones: draw the bones (set False for joints only).
        joints: draw the joint discs (set False for bones only).

    Returns:
        (height, width, 3) uint8 RGB image on black.
    """
    joints2d = np.asarray(joints2d, dtype=np.float64)
    if joints2d.shape != (21, 2):
        raise ValueError(f"joints2d must have shape (21, 2) (OpenPose order), got {joints2d.shape}")
    width, height = _check_size(width, height)
    if visible is None:
        visible = np.ones(21, dtype=bool)
    else:
        visible = np.asarray(visible)
        if visible.shape != (21,):
            raise ValueError(f"visible must have shape (21,), got {visible.shape}")
        visible = visible.astype(bool)
    drawable = visible & np.isfinite(joints2d).all(axis=1)
    image = np.zeros((height, width, 3), dtype=np.uint8)

    if bones:
        for (a, b), color in zip(SKELETON_EDGES, SKELETON_BONE_COLORS):
            if not (drawable[a] and drawable[b]):
                continue
            delta = joints2d[b] - joints2d[a]
            length = float(np.hypot(delta[0], delta[1]))
            if not BONE_MIN_LENGTH_PX <= length <= BONE_MAX_LENGTH_PX:
                continue
            centre = 0.5 * (joints2d[a] + joints2d[b])
            reach = 0.5 * length + BONE_HALF_THICKNESS_PX + 1.0
            if (
                centre[0] + reach < -0.5
                or centre[0] - reach > width - 0.5
                or centre[1] + reach < -0.5
                or centre[1] - reach > height - 0.5
            ):
                continue  # entirely off-image (also keeps fixed-point coordinates small)
            angle = float(np.degrees(np.arctan2(delta[1], delta[0])))
            cv2.ellipse(
                image,
                (_fixed(centre[0]), _fixed(centre[1])),
                (_fixed(0.5 * length), _fixed(BONE_HALF_THICKNESS_PX)),
                angle,
                0.0,
                360.0,
                tuple(int(c) for c in color),
                thickness=-1,
                lineType=cv2.LINE_8,
                shift=_SHIFT,
            )

    if joints:
        inside = (
            (joints2d[:, 0] >= -0.5)
            & (joints2d[:, 0] < width - 0.5)
            & (joints2d[:, 1] >= -0.5)
            & (joints2d[:, 1] < height - 0.5)
        )
        for i in np.flatnonzero(drawable & inside):
            cv2.circle(
                image,
                (_fixed(joints2d[i, 0]), _fixed(joints2d[i, 1])),
                _fixed(JOINT_RADIUS_PX),
                tuple(int(c) for c in SKELETON_JOINT_COLORS[i]),
                thickness=-1,
                lineType=cv2.LINE_8,
                shift=_SHIFT,
            )
    return image


# ----------------------------------------------------------------------------------------------------------------
# Coloured hand/object mask (HOIDiffusion)

HOI_HAND_COLOR: tuple[int, int, int] = (128, 128, 128)
HOI_OBJECT_COLOR: tuple[int, int, int] = (153, 51, 51)


def hoi_mask(mask: np.ndarray, hand_ids: Iterable[int], object_ids: Iterable[int]) -> np.ndarray:
    """Colour an instance mask the HOIDiffusion way.

    Args:
        mask: (H, W) integer instance ids (0 background).
        hand_ids: instance ids of hand pixels.
        object_ids: instance ids of object pixels.

    Returns:
        (H, W, 3) uint8 RGB: hand (128, 128, 128), object (153, 51, 51), everything else black.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2 or mask.dtype.kind not in "ui":
        raise ValueError(f"mask must be an (H, W) integer instance-id image, got {mask.dtype} {mask.shape}")
    hand_ids = np.asarray(list(hand_ids), dtype=np.int64)
    object_ids = np.asarray(list(object_ids), dtype=np.int64)
    shared = np.intersect1d(hand_ids, object_ids)
    if shared.size:
        raise ValueError(f"instance ids {shared.tolist()} are listed both as hand and as object")
    out = np.zeros(mask.shape + (3,), dtype=np.uint8)
    out[np.isin(mask, hand_ids)] = HOI_HAND_COLOR
    out[np.isin(mask, object_ids)] = HOI_OBJECT_COLOR
    return out


# ----------------------------------------------------------------------------------------------------------------
# Diffusion-as-Shader tracking colours
#
# Each point keeps, in every frame, the colour it gets at the FIRST frame: R = image x / (W - 1), G = image y /
# (H - 1) (top = 0), B = inverse depth clipped to its 2nd-98th percentile and rescaled so near = 1. hoigen keeps
# this [0, 1] encoding everywhere — training data, inference conditions, stored files. (DaS itself mixes [0, 1] and
# [-1, 1] normalisations between training and inference, a known bug; convert with 2c - 1 only inside a model that
# wants [-1, 1].) Stored as PNG/video, a colour c becomes round(255 * c).

TRACKING_DEPTH_PERCENTILES = (2.0, 98.0)


def _project(points_cam: np.ndarray, K: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # noqa: N803
    """(u, v, z) of camera-frame points; u, v are only meaningful where z > 0."""
    z = points_cam[:, 2]
    uvw = points_cam @ K.T
    with np.errstate(divide="ignore", invalid="ignore"):
        u = uvw[:, 0] / uvw[:, 2]
        v = uvw[:, 1] / uvw[:, 2]
    return u, v, z


def tracking_vertex_colors(points_cam: np.ndarray, K: np.ndarray, width: int, height: int) -> np.ndarray:  # noqa: N803
    """DaS tracking colours of points at the first frame.

    Args:
        points_cam: (N, 3) float, metres, camera frame, at the FIRST frame of the sequence.
        K: (3, 3) intrinsics, pixels.
        width: image width in pixels.
        height: image height in pixels.

    Returns:
        (N, 3) float32 in [0, 1]: R = u / (W - 1), G = v / (H - 1), B = inverse depth clipped to its 2nd-98th
        percentile over the points in front of the camera and rescaled to [0, 1] (near = 1; 0.5 for every point
        when all inverse depths are equal). Points at or behind the camera plane (z <= 0) get (0, 0, 0) and do not
        enter the percentiles.
    """
    points_cam, K = _check_points_and_k(points_cam, K)
    width, height = _check_size(width, height)
    u, v, z = _project(points_cam, K)
    front = z > 0
    colors = np.zeros((points_cam.shape[0], 3), dtype=np.float64)
    if not front.any():
        return colors.astype(np.float32)
    colors[front, 0] = u[front] / max(width - 1, 1)
    colors[front, 1] = v[front] / max(height - 1, 1)
    inverse_depth = 1.0 / z[front]
    lo, hi = np.percentile(inverse_depth, TRACKING_DEPTH_PERCENTILES)
    if hi > lo:
        colors[front, 2] = (np.clip(inverse_depth, lo, hi) - lo) / (hi - lo)
    else:
        colors[front, 2] = 0.5
    return np.clip(colors, 0.0, 1.0).astype(np.float32)


def splat_tracks(
    points_cam: np.ndarray,
    colors: np.ndarray,
    K: np.ndarray,  # noqa: N803
    width: int,
    height: int,
    radius: int = 2,
) -> np.ndarray:
    """Draw one frame of a DaS point-track image.

    Each point is a filled disc (the pixels whose centres lie within ``radius`` of the projected point) in its
    colour, on black, in painter's order: far points first, so a nearer point covers a farther one; of two points at
    the same depth the one with the higher index is drawn last. Points at or behind the camera plane are skipped.

    Args:
        points_cam: (N, 3) float, metres, camera frame, at this frame.
        colors: (N, 3) float in [0, 1] (``tracking_vertex_colors``), stored as round(255 * c); or uint8.
        K: (3, 3) intrinsics, pixels.
        width: image width in pixels.
        height: image height in pixels.
        radius: disc radius in pixels, >= 1.

    Returns:
        (height, width, 3) uint8 RGB image.
    """
    points_cam, K = _check_points_and_k(points_cam, K)
    width, height = _check_size(width, height)
    colors_u8 = _colors_to_uint8(colors, points_cam.shape[0])
    if isinstance(radius, bool) or not isinstance(radius, int | np.integer) or radius < 1:
        raise ValueError(f"radius must be an integer >= 1 pixel, got {radius!r}")
    radius = int(radius)
    image = np.zeros((height, width, 3), dtype=np.uint8)
    u, v, z = _project(points_cam, K)
    keep = np.flatnonzero(
        (z > 0) & (u > -radius - 1) & (u < width + radius) & (v > -radius - 1) & (v < height + radius)
    )
    if keep.size == 0:
        return image
    u, v, z = u[keep], v[keep], z[keep]
    # Candidate pixel centres: a (2r + 1) x (2r + 1) window starting at the first column/row within reach.
    offsets = np.arange(2 * radius + 1)
    cols = np.ceil(u - radius).astype(np.int64)[:, None, None] + offsets[None, None, :]
    rows = np.ceil(v - radius).astype(np.int64)[:, None, None] + offsets[None, :, None]
    cols, rows = np.broadcast_arrays(cols, rows)
    inside_disc = (cols - u[:, None, None]) ** 2 + (rows - v[:, None, None]) ** 2 <= radius * radius
    in_image = (cols >= 0) & (cols < width) & (rows >= 0) & (rows < height)
    take = inside_disc & in_image
    point = np.broadcast_to(np.arange(keep.size)[:, None, None], take.shape)[take]
    pixel = rows[take] * width + cols[take]
    # Per pixel the nearest point wins, ties going to the higher index (the one a painter would draw last).
    order = np.lexsort((-point, z[point], pixel))
    pixel, point = pixel[order], point[order]
    first = np.ones(pixel.size, dtype=bool)
    first[1:] = pixel[1:] != pixel[:-1]
    image.reshape(-1, 3)[pixel[first]] = colors_u8[keep[point[first]]]
    return image


def _colors_to_uint8(colors: np.ndarray, n: int) -> np.ndarray:
    colors = np.asarray(colors)
    if colors.shape != (n, 3):
        raise ValueError(f"colors must have shape ({n}, 3) to match the points, got {colors.shape}")
    if colors.dtype == np.uint8:
        return colors
    colors = colors.astype(np.float64)
    if not np.isfinite(colors).all():
        raise ValueError("colors contain NaN or infinite values")
    if colors.min() < 0.0 or colors.max() > 1.0:
        raise ValueError(
            f"colors must lie in [0, 1] (hoigen's DaS encoding), got values in [{colors.min()}, {colors.max()}]; "
            "map [-1, 1] colours with (c + 1) / 2"
        )
    return np.round(255.0 * colors).astype(np.uint8)


def _check_points_and_k(points_cam: np.ndarray, K: np.ndarray) -> tuple[np.ndarray, np.ndarray]:  # noqa: N803
    points_cam = np.asarray(points_cam, dtype=np.float64)
    if points_cam.ndim != 2 or points_cam.shape[1] != 3:
        raise ValueError(f"points_cam must have shape (N, 3), got {points_cam.shape}")
    if not np.isfinite(points_cam).all():
        raise ValueError("points_cam contains NaN or infinite values")
    K = np.asarray(K, dtype=np.float64)  # noqa: N806
    if K.shape != (3, 3) or not np.isfinite(K).all():
        raise ValueError(f"K must be a finite (3, 3) intrinsic matrix, got shape {K.shape}")
    return points_cam, K


def _check_size(width: int, height: int) -> tuple[int, int]:
    if int(width) != width or int(height) != height or width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive integers, got width={width!r} height={height!r}")
    return int(width), int(height)


# ----------------------------------------------------------------------------------------------------------------
# Fixed surface samples (points.npy)


@dataclass(frozen=True, eq=False)
class SurfaceSamples:
    """Points fixed on a mesh's surface by face and barycentric coordinates.

    Evaluating them on any posed copy of the mesh (same faces, moved vertices) gives the same material points, so
    point i is the same surface point in every frame (SPEC §3, ``points.npy``).

    Attributes:
        face_ids: (n,) int64 face of each sample.
        barycentric: (n, 3) float64 barycentric coordinates of each sample in its face (non-negative, sum 1).
        vertex_ids: (n, 3) int64 vertices of each sample's face (``faces[face_ids]``).
    """

    face_ids: np.ndarray
    barycentric: np.ndarray
    vertex_ids: np.ndarray

    def __post_init__(self):
        face_ids = np.asarray(self.face_ids, dtype=np.int64)
        barycentric = np.asarray(self.barycentric, dtype=np.float64)
        vertex_ids = np.asarray(self.vertex_ids, dtype=np.int64)
        n = face_ids.shape[0] if face_ids.ndim == 1 else -1
        if face_ids.ndim != 1 or barycentric.shape != (n, 3) or vertex_ids.shape != (n, 3):
            raise ValueError(
                "SurfaceSamples needs face_ids (n,), barycentric (n, 3) and vertex_ids (n, 3), got "
                f"{face_ids.shape}, {barycentric.shape}, {vertex_ids.shape}"
            )
        if n and (
            not np.isfinite(barycentric).all()
            or barycentric.min() < -1e-12
            or np.abs(barycentric.sum(axis=1) - 1.0).max() > 1e-9
        ):
            raise ValueError("SurfaceSamples.barycentric rows must be non-negative and sum to 1")
        object.__setattr__(self, "face_ids", face_ids)
        object.__setattr__(self, "barycentric", barycentric)
        object.__setattr__(self, "vertex_ids", vertex_ids)

    def __len__(self) -> int:
        return int(self.face_ids.shape[0])

    def positions(self, vertices: np.ndarray) -> np.ndarray:
        """Evaluate the samples on (posed) vertices.

        Args:
            vertices: (..., V, 3) float vertex positions of the mesh the samples were drawn on (any frame, any
                leading batch dimensions, e.g. (T, V, 3)).

        Returns:
            (..., n, 3) float64 sample positions, in the vertices' frame and units.
        """
        vertices = np.asarray(vertices, dtype=np.float64)
        if vertices.ndim < 2 or vertices.shape[-1] != 3:
            raise ValueError(f"vertices must have shape (..., V, 3), got {vertices.shape}")
        if len(self) and self.vertex_ids.max() >= vertices.shape[-2]:
            raise ValueError(
                f"samples reference vertex {int(self.vertex_ids.max())} but vertices has only "
                f"{vertices.shape[-2]} rows: evaluate them on the mesh they were sampled from"
            )
        corners = vertices[..., self.vertex_ids, :]  # (..., n, 3 corners, 3)
        return np.einsum("nc,...ncd->...nd", self.barycentric, corners)


def sample_surface_points(
    vertices: np.ndarray, faces: np.ndarray, n: int, rng: np.random.Generator
) -> SurfaceSamples:
    """Sample ``n`` points uniformly by area on a triangle mesh.

    Faces are chosen with probability proportional to their area, then a uniform point in the face is taken with
    the square-root trick (b = (1 - sqrt(r1), sqrt(r1) (1 - r2), sqrt(r1) r2)). Only ``rng`` is used.

    Args:
        vertices: (V, 3) float rest (or any reference) vertex positions; only their areas matter.
        faces: (F, 3) int triangle vertex indices.
        n: number of samples, >= 0.
        rng: random generator.

    Returns:
        SurfaceSamples; evaluate with ``.positions(vertices)``.
    """
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 0:
        raise ValueError(f"n must be a non-negative integer, got {n!r}")
    vertices = np.asarray(vertices, dtype=np.float64)
    faces = np.asarray(faces)
    if vertices.ndim != 2 or vertices.shape[1] != 3:
        raise ValueError(f"vertices must have shape (V, 3), got {vertices.shape}")
    if faces.ndim != 2 or faces.shape[1] != 3 or faces.dtype.kind not in "ui" or faces.shape[0] == 0:
        raise ValueError(f"faces must be a non-empty (F, 3) integer array, got {faces.dtype} {faces.shape}")
    faces = faces.astype(np.int64)
    if faces.min() < 0 or faces.max() >= vertices.shape[0]:
        raise ValueError(f"faces index vertices outside [0, {vertices.shape[0]})")
    corners = vertices[faces]
    areas = 0.5 * np.linalg.norm(
        np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]), axis=1
    )
    total = areas.sum()
    if not np.isfinite(total) or total <= 0.0:
        raise ValueError(f"the mesh has total area {total}; cannot sample its surface")
    face_ids = rng.choice(faces.shape[0], size=int(n), p=areas / total).astype(np.int64)
    r1, r2 = rng.random((2, int(n)))
    s = np.sqrt(r1)
    barycentric = np.stack([1.0 - s, s * (1.0 - r2), s * r2], axis=1)
    return SurfaceSamples(face_ids=face_ids, barycentric=barycentric, vertex_ids=faces[face_ids])
