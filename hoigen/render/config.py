"""Render configuration (dataclasses only, importable without GL or OpenCV)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class AppearanceConfig:
    """Randomised appearance.

    Attributes:
        lights: (min, max) number of directional lights.
        ambient: range of the ambient intensity.
        intensity: range of each light's intensity.
        backgrounds: kinds to draw from: ``solid``, ``gradient``, ``noise`` and ``images`` (needs background_dir).
        background_dir: folder of background images (png/jpg), empty for none.
        skin_tones: sRGB skin albedos the hand's colour is drawn around.
    """

    lights: tuple[int, int] = (1, 3)
    ambient: tuple[float, float] = (0.15, 0.45)
    intensity: tuple[float, float] = (0.5, 1.1)
    backgrounds: tuple[str, ...] = ("solid", "gradient", "noise")
    background_dir: str = ""
    skin_tones: tuple[tuple[int, int, int], ...] = (
        (241, 194, 167),
        (224, 172, 138),
        (198, 134, 96),
        (161, 102, 70),
        (112, 72, 50),
        (84, 54, 40),
    )

    def __post_init__(self):
        kinds = {"solid", "gradient", "noise", "images"}
        bad = [k for k in self.backgrounds if k not in kinds]
        if bad or not self.backgrounds:
            raise ValueError(
                f"appearance.backgrounds must be a non-empty subset of {sorted(kinds)}, got {self.backgrounds}"
            )
        if "images" in self.backgrounds and not self.background_dir:
            raise ValueError(
                "appearance.backgrounds includes 'images' but appearance.background_dir is empty"
            )
        if self.background_dir and not Path(self.background_dir).is_dir():
            raise ValueError(f"appearance.background_dir {self.background_dir!r} is not a folder")
        if not 1 <= self.lights[0] <= self.lights[1]:
            raise ValueError(f"appearance.lights must be (min, max) with 1 <= min <= max, got {self.lights}")


@dataclass(frozen=True)
class RenderConfig:
    """What the renderer writes.

    Attributes:
        depth_scale: depth PNG unit: ``value * depth_scale`` = millimetres (BOP; 0.1 -> 0.1 mm steps, 6.5 m range).
        points_object, points_hand: fixed surface samples per sequence for ``points.npy``.
        amodal: compute amodal masks (boxes, visible fractions) with one depth-only pass per instance.
        appearance: lights, backgrounds, skin.
    """

    depth_scale: float = 0.1
    points_object: int = 2048
    points_hand: int = 1024
    amodal: bool = True
    appearance: AppearanceConfig = field(default_factory=AppearanceConfig)

    def __post_init__(self):
        if self.depth_scale <= 0:
            raise ValueError(f"render.depth_scale must be positive (mm per unit), got {self.depth_scale}")
        if self.points_object < 1 or self.points_hand < 1:
            raise ValueError(
                f"render.points_object / points_hand must be >= 1, got {self.points_object}, {self.points_hand}"
            )
