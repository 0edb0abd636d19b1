"""Run configuration: frozen dataclasses per stage composed into one :class:`RunConfig`.

The CLI and YAML files only fill these; the resolved config is written next to every output. Unknown keys are
errors (a typo must not be silently ignored).
"""

from __future__ import annotations

import dataclasses
import math
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path

from hoigen.geometry.camera import CameraConfig
from hoigen.grasping.contact import GraspConfig
from hoigen.grasping.trajectory import TrajectoryConfig
from hoigen.render.config import RenderConfig
from hoigen.sources.record import RealConfig


@dataclass(frozen=True)
class ObjectsConfig:
    """Where objects come from.

    Attributes:
        source: ``builtin:nocs`` (procedural NOCS categories) or a folder of meshes.
        units: units of folder meshes: ``auto``, ``m``, ``cm`` or ``mm``.
        categories: for ``builtin:nocs``, the categories to use (empty = all six).
    """

    source: str = "builtin:nocs"
    units: str = "auto"
    categories: tuple[str, ...] = ()

    def __post_init__(self):
        if self.units not in ("auto", "m", "cm", "mm"):
            raise ValueError(f"objects.units must be 'auto', 'm', 'cm' or 'mm', got {self.units!r}")
        if self.categories:
            from hoigen.objects.builtin import BUILTIN_CATEGORIES

            bad = [c for c in self.categories if c not in BUILTIN_CATEGORIES]
            if bad:
                raise ValueError(
                    f"objects.categories has unknown {bad}; choose from {list(BUILTIN_CATEGORIES)}"
                )


@dataclass(frozen=True)
class HandConfig:
    """Which hand model.

    Attributes:
        model: ``builtin`` (hoigen's own hand, its current version: v2), ``builtin-v1`` / ``builtin-v2`` (that
            version; v1 reproduces datasets made before v2) or ``mano`` (needs the user's MANO_RIGHT.pkl).
        mano: path to MANO_RIGHT.pkl or its folder; empty = the ``HOIGEN_MANO_DIR`` environment variable.
        forearm: draw the built-in v2 hand's forearm stub in the renders (rgb, depth, mask; never in the hand's
            labels or the conditions). Only with ``builtin`` / ``builtin-v2``. Written to the resolved config only
            when true, so configs, shards and run pins without it keep their bytes.
    """

    model: str = "builtin"
    mano: str = ""
    forearm: bool = False

    def __post_init__(self):
        if self.model not in ("builtin", "builtin-v1", "builtin-v2", "mano"):
            raise ValueError(
                f"hand.model must be 'builtin', 'builtin-v1', 'builtin-v2' or 'mano', got {self.model!r}"
            )
        if self.forearm is True and self.model not in ("builtin", "builtin-v2"):
            raise ValueError(
                f"hand.forearm needs the built-in v2 hand (hand.model 'builtin' or 'builtin-v2'), got hand.model "
                f"{self.model!r}; drop --forearm (hand.forearm: false) or use --hand builtin"
            )


@dataclass(frozen=True)
class RunConfig:
    """Everything a run needs; ``seed`` is the run seed of SPEC §2."""

    objects: ObjectsConfig = field(default_factory=ObjectsConfig)
    hand: HandConfig = field(default_factory=HandConfig)
    grasp: GraspConfig = field(default_factory=GraspConfig)
    trajectory: TrajectoryConfig = field(default_factory=TrajectoryConfig)
    camera: CameraConfig = field(default_factory=CameraConfig)
    render: RenderConfig = field(default_factory=RenderConfig)
    real: RealConfig = field(default_factory=RealConfig)  # dexycb:/ho3d: sources only
    seed: int = 0

    def __post_init__(self):
        validate_config(self)

    def to_dict(self) -> dict:
        data = _to_plain(dataclasses.asdict(self))
        if not data["hand"]["forearm"]:  # added after schema 4: absent when off (default bytes unchanged)
            del data["hand"]["forearm"]
        return data

    @classmethod
    def from_dict(cls, data: dict) -> RunConfig:
        return _build(cls, data, "config")

    @classmethod
    def from_yaml(cls, path: str | Path) -> RunConfig:
        import yaml

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file {path} does not exist")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ValueError(f"config file {path} is not valid YAML: {exc}") from exc
        if not isinstance(data, dict):
            raise ValueError(
                f"config file {path} must hold a mapping at the top level, got {type(data).__name__}"
            )
        return cls.from_dict(data)

    def replace(self, **sections) -> RunConfig:
        """A copy with fields of sections replaced: ``replace(grasp={"candidates": 4}, seed=3)``."""
        merged = self.to_dict()
        for key, value in sections.items():
            if isinstance(value, dict):
                if key not in merged or not isinstance(merged[key], dict):
                    raise ValueError(f"unknown config section {key!r}")
                merged[key] = {**merged[key], **value}
            else:
                merged[key] = value
        return RunConfig.from_dict(merged)


def _to_plain(value):
    if isinstance(value, dict):
        return {k: _to_plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_to_plain(v) for v in value]
    return value


def _build(cls, data, where: str):
    if not isinstance(data, dict):
        raise ValueError(f"{where} must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; valid keys are {sorted(names)}")
    kwargs = {}
    for key, value in data.items():
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            kwargs[key] = _build(hint, value, f"{where}.{key}")
        else:
            if typing.get_origin(hint) is tuple and isinstance(value, list | tuple):
                value = tuple(tuple(v) if isinstance(v, list) else v for v in value)
            check_value(_key_path(f"{where}.{key}"), hint, value)  # before the section's own checks run
            kwargs[key] = value
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ValueError(f"{where}: {exc}") from exc
    except ValueError as exc:
        section = _key_path(where)
        if not section or str(exc).startswith(section):
            raise
        raise ValueError(f"{section}: {exc}") from exc


# ---------------------------------------------------------------------------------------------------------------
# validation: every field's type, finiteness and range, named by its key path

_NUMBER = "a number"
# key path -> (predicate on one number, the allowed range in words); pairs (low, high) also need low <= high.
RANGES: dict[str, tuple] = {
    "seed": (lambda v: v >= 0, ">= 0"),
    "grasp.candidates": (lambda v: v >= 1, ">= 1"),
    "grasp.max_attempts": (lambda v: v >= 1, ">= 1"),
    "grasp.contact_threshold_mm": (lambda v: v > 0, "> 0 mm"),
    "grasp.max_penetration_mm": (lambda v: v > 0, "> 0 mm"),
    "grasp.min_fingers_in_contact": (lambda v: 0 <= v <= 5, "0..5"),
    "grasp.min_thumb_opposition": (lambda v: -1 <= v <= 1, "[-1, 1]"),
    "grasp.thumb_opposition_rad": (lambda v: -3.15 <= v <= 3.15, "[-pi, pi] rad"),
    "grasp.finger_spread_rad": (lambda v: 0 <= v <= 1.6, "[0, pi/2] rad"),
    "grasp.betas_std": (lambda v: 0 <= v <= 5, "[0, 5]"),
    "grasp.edge_bias": (lambda v: 0 <= v <= 1, "[0, 1]"),
    "grasp.sdf_spacing_mm": (lambda v: 0 < v <= 50, "(0, 50] mm"),
    "grasp.max_finger_overlap_mm": (lambda v: 0 < v <= 100, "(0, 100] mm"),
    "grasp.min_force_closure": (lambda v: 0 <= v <= 10, "[0, 10]"),
    "grasp.fallback_force_closure": (lambda v: 0 <= v <= 10, "[0, 10]"),
    "grasp.fallback_after": (lambda v: 0 <= v <= 1000, "0..1000 attempts"),
    "grasp.press_mm": (lambda v: 0 <= v <= 5, "[0, 5] mm"),
    "grasp.friction": (lambda v: 0 < v <= 5, "(0, 5]"),
    "grasp.grid_spacing_mm": (lambda v: 0 < v <= 20, "(0, 20] mm"),
    "trajectory.frames": (lambda v: 1 <= v <= 10000, "1..10000"),
    "trajectory.start_fraction": (lambda v: 0 <= v <= 1, "[0, 1]"),
    "trajectory.approach_distance": (lambda v: 0 < v <= 10, "(0, 10] m"),
    "trajectory.manipulation_frames": (lambda v: 0 <= v <= 10000, "0..10000"),
    "trajectory.lift": (lambda v: -1 <= v <= 1, "[-1, 1] m"),
    "trajectory.shift": (lambda v: 0 <= v <= 1, "[0, 1] m"),
    "trajectory.turn_deg": (lambda v: -360 <= v <= 360, "[-360, 360] degrees"),
    "camera.distance": (lambda v: 0 < v <= 100, "(0, 100] m"),
    "camera.elevation_deg": (lambda v: -90 <= v <= 90, "[-90, 90] degrees"),
    "camera.azimuth_deg": (lambda v: -720 <= v <= 720, "[-720, 720] degrees"),
    "camera.target_jitter": (lambda v: 0 <= v <= 1, "[0, 1] m"),
    "render.depth_scale": (lambda v: 0 < v <= 1000, "(0, 1000] mm per unit"),
    "render.points_object": (lambda v: 1 <= v <= 10**7, "1..10^7"),
    "render.points_hand": (lambda v: 1 <= v <= 10**7, "1..10^7"),
    "render.appearance.lights": (lambda v: 1 <= v <= 16, "1..16"),
    "render.appearance.ambient": (lambda v: 0 <= v <= 10, "[0, 10]"),
    "render.appearance.intensity": (lambda v: 0 <= v <= 100, "[0, 100]"),
    "render.appearance.skin_tones": (lambda v: 0 <= v <= 255, "0..255 (sRGB)"),
}


def _key_path(where: str) -> str:
    """``config.trajectory.frames`` -> ``trajectory.frames`` (the root's name is not part of a key path)."""
    return where.partition(".")[2] if "." in where else ""


def _words(allowed: str) -> str:
    return allowed if allowed[0] in "<>" else f"in {allowed}"


def _fail(path: str, value, wanted: str) -> ValueError:
    return ValueError(f"{path} must be {wanted}, got {value!r}; fix it in the config file or the option")


def check_value(path: str, hint, value) -> None:
    """Check one config value against its type hint (bool, int, float, str, tuples of them) and, for numbers,
    :data:`RANGES` ``[path]``. Hints of other kinds are left to the section's own checks.

    Raises:
        ValueError: naming the key path, the value and what is allowed.
    """
    allowed = RANGES.get(re.sub(r"\[\d+\]$", "", path))
    if hint is bool:
        if not isinstance(value, bool):
            raise _fail(path, value, "true or false")
    elif hint is int or hint is float:
        kind = "an integer" if hint is int else _NUMBER
        ok_type = isinstance(value, int) if hint is int else isinstance(value, int | float)
        if isinstance(value, bool) or not ok_type:
            raise _fail(path, value, kind + (f" {_words(allowed[1])}" if allowed else ""))
        if not math.isfinite(value):
            raise _fail(path, value, f"a finite {'integer' if hint is int else 'number'}")
        if allowed and not allowed[0](value):
            raise _fail(path, value, _words(allowed[1]))
    elif hint is str:
        if not isinstance(value, str):
            raise _fail(path, value, "a string")
    elif typing.get_origin(hint) is tuple:
        args = typing.get_args(hint)
        if not isinstance(value, tuple | list):
            raise _fail(path, value, "a list")
        if len(args) == 2 and args[1] is Ellipsis:
            items = [args[0]] * len(value)
        else:
            items = list(args)
            if len(value) != len(items):
                raise _fail(path, value, f"a list of {len(items)} values")
        for item in value:  # the range of a list's numbers is that of the list (skin_tones[2] as skin_tones)
            number = isinstance(item, int | float) and not isinstance(item, bool) and math.isfinite(item)
            if allowed and number and not allowed[0](item):
                raise _fail(path, value, f"values {_words(allowed[1])}")
        for k, (item_hint, item) in enumerate(zip(items, value, strict=True)):
            check_value(f"{path}[{k}]", item_hint, item)
        numeric = len(items) == 2 and all(h in (int, float) for h in items)
        if numeric and value[0] > value[1]:
            within = f", {_words(allowed[1])}" if allowed else ""
            raise _fail(path, value, f"(low, high) with low <= high{within}")


def validate_config(config, where: str = "") -> None:
    """Check every field of a config dataclass (recursively) with :func:`check_value`."""
    hints = typing.get_type_hints(type(config))
    for f in dataclasses.fields(config):
        path = f"{where}.{f.name}" if where else f.name
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            validate_config(value, path)
        else:
            check_value(path, hints[f.name], value)
