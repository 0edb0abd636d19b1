"""Appearance of the rendered RGB: albedo lookup, random lights and backgrounds, deferred shading in numpy.

Shading runs on the exact per-pixel geometry of the id pass (``labels.PixelHits``), so the RGB image is aligned to
the labels pixel for pixel. Model: albedo (texture, vertex or face colour; sRGB decoded to linear) times ambient
plus Lambertian directional lights, plus a Blinn-Phong highlight; re-encoded to sRGB. All lights are in the OpenCV
camera frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hoigen.render.config import AppearanceConfig
from hoigen.render.labels import PixelHits, interpolate


@dataclass(frozen=True)
class Appearance:
    """One sequence's sampled appearance (fixed across its frames)."""

    light_dirs: np.ndarray  # (L, 3) unit vectors from the surface toward each light, camera frame
    light_colors: np.ndarray  # (L, 3) linear RGB intensities
    ambient: float
    specular: float
    shininess: float
    skin: np.ndarray  # (3,) linear albedo of the hand
    background: np.ndarray  # (H, W, 3) float sRGB in [0, 1]
    background_kind: str

    def metadata(self) -> dict:
        return {
            "lights": [
                {"direction": d.tolist(), "color": c.tolist()}
                for d, c in zip(self.light_dirs, self.light_colors)
            ],
            "ambient": self.ambient,
            "skin": self.skin.tolist(),
            "background": self.background_kind,
        }


def srgb_to_linear(c: np.ndarray) -> np.ndarray:
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(c: np.ndarray) -> np.ndarray:
    c = np.clip(c, 0.0, 1.0)
    return np.where(c <= 0.0031308, c * 12.92, 1.055 * c ** (1 / 2.4) - 0.055)


_SRGB_LUT = srgb_to_linear(np.arange(256) / 255.0)


def _background(kind: str, width: int, height: int, rng: np.random.Generator, image_dir: str) -> np.ndarray:
    if kind == "solid":
        return np.broadcast_to(rng.uniform(0.05, 0.95, 3), (height, width, 3)).copy()
    if kind == "gradient":
        a, b = rng.uniform(0.05, 0.95, (2, 3))
        angle = rng.uniform(0, 2 * np.pi)
        yy, xx = np.mgrid[0:height, 0:width]
        s = np.cos(angle) * xx / max(width - 1, 1) + np.sin(angle) * yy / max(height - 1, 1)
        s = (s - s.min()) / max(np.ptp(s), 1e-9)
        return a + s[..., None] * (b - a)
    if kind == "noise":
        import cv2

        base = rng.uniform(0.05, 0.95, 3)
        grid = rng.uniform(-0.25, 0.25, (int(rng.integers(3, 9)), int(rng.integers(3, 9)), 3))
        field = cv2.resize(grid.astype(np.float32), (width, height), interpolation=cv2.INTER_CUBIC)
        fine = cv2.resize(rng.uniform(-0.06, 0.06, (24, 24, 3)).astype(np.float32), (width, height))
        return np.clip(base + field + fine, 0.0, 1.0).astype(np.float64)
    # images
    from PIL import Image

    files = sorted(p for p in Path(image_dir).rglob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    if not files:
        raise ValueError(f"no .png/.jpg background images in {image_dir}")
    with Image.open(files[int(rng.integers(len(files)))]) as im:
        im = im.convert("RGB")
        scale = max(width / im.width, height / im.height)
        im = im.resize((max(width, round(im.width * scale)), max(height, round(im.height * scale))))
        x0 = int(rng.integers(0, im.width - width + 1))
        y0 = int(rng.integers(0, im.height - height + 1))
        return np.asarray(im.crop((x0, y0, x0 + width, y0 + height)), dtype=np.float64) / 255.0


def sample_appearance(
    config: AppearanceConfig, width: int, height: int, rng: np.random.Generator
) -> Appearance:
    """Random lights (from the camera's side of the scene), background and skin tone."""
    n = int(rng.integers(config.lights[0], config.lights[1] + 1))
    dirs = rng.normal(size=(n, 3))
    dirs[:, 2] = -np.abs(dirs[:, 2]) - 0.3  # toward the camera (light comes from the viewer's hemisphere)
    dirs[:, 1] = -np.abs(dirs[:, 1])  # and from above (image up = -y)
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    warmth = rng.uniform(-0.1, 0.1, (n, 1)) * np.array([1.0, 0.0, -1.0])
    colors = rng.uniform(*config.intensity, (n, 1)) * (1.0 + warmth)
    tone = np.asarray(config.skin_tones[int(rng.integers(len(config.skin_tones)))], dtype=np.float64) / 255.0
    tone = np.clip(tone * rng.uniform(0.92, 1.08) + rng.uniform(-0.03, 0.03, 3), 0.0, 1.0)
    kind = config.backgrounds[int(rng.integers(len(config.backgrounds)))]
    return Appearance(
        light_dirs=dirs,
        light_colors=colors,
        ambient=float(rng.uniform(*config.ambient)),
        specular=float(rng.uniform(0.0, 0.25)),
        shininess=float(rng.uniform(10.0, 60.0)),
        skin=srgb_to_linear(tone),
        background=_background(kind, width, height, rng, config.background_dir),
        background_kind=kind,
    )


class MeshAlbedo:
    """Linear albedo lookup for one mesh: texture (bilinear, wrapped UVs), vertex or face colours, or a constant."""

    def __init__(self, mesh, fallback: np.ndarray):
        self.kind = "constant"
        self.constant = np.asarray(fallback, dtype=np.float64)
        visual = getattr(mesh, "visual", None)
        kind = getattr(visual, "kind", None)
        if kind == "texture" and getattr(visual, "uv", None) is not None:
            material = visual.material
            image = getattr(material, "image", None) or getattr(material, "baseColorTexture", None)
            if image is not None:
                self.kind = "texture"
                self.uv = np.asarray(visual.uv, dtype=np.float64)
                # kept as uint8; only the sampled texels are decoded to linear (a 4096^2 float copy is 200 MB)
                self.texture = np.asarray(image.convert("RGB"), dtype=np.uint8)
            else:
                color = getattr(material, "diffuse", None)
                if color is None:
                    color = getattr(material, "baseColorFactor", None)
                if color is not None:
                    self.constant = srgb_to_linear(np.asarray(color, dtype=np.float64)[:3] / 255.0)
        elif kind == "vertex":
            self.kind = "vertex"
            self.vertex = srgb_to_linear(np.asarray(visual.vertex_colors, dtype=np.float64)[:, :3] / 255.0)
        elif kind == "face":
            self.kind = "face"
            self.face = srgb_to_linear(np.asarray(visual.face_colors, dtype=np.float64)[:, :3] / 255.0)

    def __call__(self, hits: PixelHits, sel: np.ndarray, faces: np.ndarray) -> np.ndarray:
        """(len(sel), 3) linear albedo at the hits ``sel``."""
        if self.kind == "texture":
            uv = interpolate(hits, sel, faces, self.uv) % 1.0
            h, w = self.texture.shape[:2]
            x = uv[:, 0] * (w - 1)
            y = (1.0 - uv[:, 1]) * (h - 1)
            x0 = np.clip(np.floor(x).astype(np.int64), 0, w - 2)
            y0 = np.clip(np.floor(y).astype(np.int64), 0, h - 2)
            fx, fy = (x - x0)[:, None], (y - y0)[:, None]
            t, lut = self.texture, _SRGB_LUT
            top = lut[t[y0, x0]] * (1 - fx) + lut[t[y0, x0 + 1]] * fx
            bottom = lut[t[y0 + 1, x0]] * (1 - fx) + lut[t[y0 + 1, x0 + 1]] * fx
            return top * (1 - fy) + bottom * fy
        if self.kind == "vertex":
            return interpolate(hits, sel, faces, self.vertex)
        if self.kind == "face":
            return self.face[hits.face[sel]]
        return np.broadcast_to(self.constant, (len(sel), 3))


def shade(appearance: Appearance, albedo: np.ndarray, normals: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Linear radiance (n, 3) for linear ``albedo`` (n, 3), unit camera-frame ``normals`` and ``points`` (n, 3)."""
    view = -points / np.linalg.norm(points, axis=1, keepdims=True)
    cos = np.clip(normals @ appearance.light_dirs.T, 0.0, None)  # (n, L)
    diffuse = appearance.ambient + cos @ appearance.light_colors
    half = appearance.light_dirs[None] + view[:, None]
    half /= np.linalg.norm(half, axis=2, keepdims=True)
    spec = np.clip(np.einsum("nc,nlc->nl", normals, half), 0.0, None) ** appearance.shininess * (cos > 0)
    return albedo * diffuse + appearance.specular * (spec @ appearance.light_colors)
