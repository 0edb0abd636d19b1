"""Pinhole cameras in the OpenCV convention and the HOIDiffusion camera sampler.

OpenCV camera frame: x right, y down, z forward (SPEC §2). ``K`` has pixel centres at integer coordinates, so the
principal point of a W x H image centred on the optical axis is ((W - 1) / 2, (H - 1) / 2).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from hoigen.geometry.transforms import invert_transform, make_transform


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole intrinsics: focal lengths and principal point in pixels, image size in pixels."""

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    def __post_init__(self):
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"image size must be positive, got width={self.width} height={self.height}")
        if self.fx <= 0 or self.fy <= 0:
            raise ValueError(f"focal lengths must be positive, got fx={self.fx} fy={self.fy}")

    @property
    def K(self) -> np.ndarray:  # noqa: N802 - the field's name
        """(3, 3) float64 intrinsic matrix."""
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    def project(self, points: np.ndarray) -> np.ndarray:
        """Project camera-frame ``points`` (..., 3) metres, z > 0 -> (..., 2) pixels."""
        points = np.asarray(points, dtype=np.float64)
        z = points[..., 2]
        return np.stack(
            [self.fx * points[..., 0] / z + self.cx, self.fy * points[..., 1] / z + self.cy], axis=-1
        )

    def to_dict(self) -> dict:
        return {"K": self.K.tolist(), "width": self.width, "height": self.height}


def square_intrinsics(size: int, fov_deg: float = 50.0) -> Intrinsics:
    """A ``size`` x ``size`` camera with the given horizontal field of view, principal point at the centre."""
    if size <= 0:
        raise ValueError(f"image size must be positive, got {size}")
    f = 0.5 * size / np.tan(np.deg2rad(fov_deg) / 2.0)
    c = (size - 1) / 2.0
    return Intrinsics(f, f, c, c, size, size)


def sized_intrinsics(width: int, height: int, fov_deg: float = 50.0) -> Intrinsics:
    """A ``width`` x ``height`` camera derived as for square sizes: the field of view spans the *shorter* side
    (so W x H shows what a min(W, H) square shows, extended along the longer side), square pixels, principal
    point at the centre ((W - 1) / 2, (H - 1) / 2). Equals ``square_intrinsics(N)`` for W = H = N."""
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    f = 0.5 * min(width, height) / np.tan(np.deg2rad(fov_deg) / 2.0)
    return Intrinsics(f, f, (width - 1) / 2.0, (height - 1) / 2.0, width, height)


def size_preset(width: int, height: int) -> str:
    """The preset name of a ``--size W H``: ``square-N`` when W = H, else ``WxH`` (e.g. ``720x480``)."""
    return f"square-{width}" if width == height else f"{width}x{height}"


_SIZE_PRESET = re.compile(r"^(\d+)x(\d+)$")


def intrinsics_preset(name: str) -> Intrinsics:
    """Named intrinsics: ``nocs-camera`` (640x480, f=577.5), ``square-<N>`` (N x N, 50° field of view) or
    ``<W>x<H>`` (``sized_intrinsics``: 50° across the shorter side)."""
    if name == "nocs-camera":
        return Intrinsics(577.5, 577.5, 319.5, 239.5, 640, 480)
    if name.startswith("square-") and name[len("square-") :].isdigit():
        return square_intrinsics(int(name[len("square-") :]))
    match = _SIZE_PRESET.match(name)
    if match:
        return sized_intrinsics(int(match.group(1)), int(match.group(2)))
    raise ValueError(
        f"unknown camera preset {name!r}; use 'nocs-camera', 'square-<N>' such as 'square-512' or '<W>x<H>' "
        "such as '720x480'"
    )


def look_at(eye: np.ndarray, target: np.ndarray, up: np.ndarray) -> np.ndarray:
    """OpenCV camera pose looking from ``eye`` at ``target`` with world ``up`` on the image's upward side.

    Returns:
        ``T_world_cam`` (4, 4): maps camera-frame points to world points.
    """
    eye = np.asarray(eye, dtype=np.float64)
    forward = np.asarray(target, dtype=np.float64) - eye
    forward /= np.linalg.norm(forward)
    up = np.asarray(up, dtype=np.float64)
    right = np.cross(forward, up)
    if np.linalg.norm(right) < 1e-9:  # looking along up: any perpendicular will do
        right = np.cross(forward, np.eye(3)[np.argmin(np.abs(forward))])
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    return make_transform(np.stack([right, down, forward], axis=1), eye)


@dataclass(frozen=True)
class CameraConfig:
    """Camera sampler ranges; the defaults are HOIDiffusion's (distance 0.35-0.45 m, elevation 5-60°)."""

    preset: str = "square-512"
    distance: tuple[float, float] = (0.35, 0.45)
    elevation_deg: tuple[float, float] = (5.0, 60.0)
    azimuth_deg: tuple[float, float] = (0.0, 360.0)
    target_jitter: float = 0.02
    fill: float = 0.75
    """Largest fraction of the image's smaller side that the object may span: the sampled distance is raised to
    :func:`fit_distance` when the object's bounding sphere (diameter = its scale, widened by the target jitter)
    would span more (a laptop or a tall bottle at 0.35 m fills a 640x480 frame); 0 turns the rule off."""

    def __post_init__(self):
        intrinsics_preset(self.preset)  # validates the name
        for name in ("distance", "elevation_deg", "azimuth_deg"):
            lo, hi = getattr(self, name)
            if lo > hi:
                raise ValueError(f"camera {name} range must be (low, high) with low <= high, got {(lo, hi)}")
        if self.distance[0] <= 0:
            raise ValueError(f"camera distance must be positive, got {self.distance}")
        if not -90.0 <= self.elevation_deg[0] <= self.elevation_deg[1] <= 90.0:
            raise ValueError(f"camera elevation_deg must lie in [-90, 90], got {self.elevation_deg}")
        if self.target_jitter < 0:
            raise ValueError(f"camera target_jitter must be >= 0 metres, got {self.target_jitter}")
        if not 0.0 <= self.fill <= 1.0:
            raise ValueError(f"camera fill must be a fraction in [0, 1] (0 = off), got {self.fill}")


@dataclass(frozen=True)
class CameraSample:
    """One sampled camera: intrinsics and ``T_cam_world`` (4, 4, OpenCV), plus the sampled spherical coordinates."""

    intrinsics: Intrinsics
    T_cam_world: np.ndarray
    distance: float
    elevation_deg: float
    azimuth_deg: float


def fit_distance(intrinsics: Intrinsics, radius: float, fill: float) -> float:
    """Smallest distance (metres) at which a sphere of ``radius`` (metres) spans at most ``fill`` of the image's
    smaller side: its projected diameter ``2 f r / sqrt(d^2 - r^2)`` (f the larger focal length) <= fill * side."""
    side = fill * min(intrinsics.width, intrinsics.height)
    f = max(intrinsics.fx, intrinsics.fy)
    return float(radius * np.sqrt(1.0 + (2.0 * f / side) ** 2))


def sample_camera(
    config: CameraConfig,
    rng: np.random.Generator,
    target: np.ndarray,
    up: np.ndarray,
    object_scale: float | None = None,
) -> CameraSample:
    """Sample a camera on a sphere around ``target`` (3,) world metres; elevation is measured from the plane
    perpendicular to ``up`` (3,), the object's up axis. With ``object_scale`` (the object's bounding-box diagonal,
    metres) the distance is at least :func:`fit_distance` for ``config.fill`` (the random draws are the same)."""
    up = np.asarray(up, dtype=np.float64)
    up = up / np.linalg.norm(up)
    dist = rng.uniform(*config.distance)
    if object_scale is not None and config.fill > 0:
        radius = 0.5 * float(object_scale) + config.target_jitter * np.sqrt(3.0)
        dist = max(dist, fit_distance(intrinsics_preset(config.preset), radius, config.fill))
    elev = rng.uniform(*config.elevation_deg)
    azim = rng.uniform(*config.azimuth_deg)
    # An orthonormal basis (a, b, up) of the world.
    a = np.cross(up, np.eye(3)[np.argmin(np.abs(up))])
    a /= np.linalg.norm(a)
    b = np.cross(up, a)
    e, z = np.deg2rad(elev), np.deg2rad(azim)
    direction = np.cos(e) * (np.cos(z) * a + np.sin(z) * b) + np.sin(e) * up
    jitter = rng.uniform(-config.target_jitter, config.target_jitter, size=3)
    look = np.asarray(target, dtype=np.float64) + jitter
    T_world_cam = look_at(look + dist * direction, look, up)
    return CameraSample(intrinsics_preset(config.preset), invert_transform(T_world_cam), dist, elev, azim)
