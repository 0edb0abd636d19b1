"""Run configuration: frozen dataclasses per stage composed into one :class:`RunConfig`.

The CLI and YAML files only fill these; the resolved config is written next to every output. Unknown keys are
errors (a typo must not be silently ignored).
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path

from hoigen.geometry.camera import CameraConfig
from hoigen.grasping.contact import GraspConfig
from hoigen.grasping.trajectory import TrajectoryConfig
from hoigen.render.config import RenderConfig


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
        model: ``builtin`` (hoigen's own hand) or ``mano`` (needs the user's MANO_RIGHT.pkl).
        mano: path to MANO_RIGHT.pkl or its folder; empty = the ``HOIGEN_MANO_DIR`` environment variable.
    """

    model: str = "builtin"
    mano: str = ""

    def __post_init__(self):
        if self.model not in ("builtin", "mano"):
            raise ValueError(f"hand.model must be 'builtin' or 'mano', got {self.model!r}")


@dataclass(frozen=True)
class RunConfig:
    """Everything a run needs; ``seed`` is the run seed of SPEC §2."""

    objects: ObjectsConfig = field(default_factory=ObjectsConfig)
    hand: HandConfig = field(default_factory=HandConfig)
    grasp: GraspConfig = field(default_factory=GraspConfig)
    trajectory: TrajectoryConfig = field(default_factory=TrajectoryConfig)
    camera: CameraConfig = field(default_factory=CameraConfig)
    render: RenderConfig = field(default_factory=RenderConfig)
    seed: int = 0

    def __post_init__(self):
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}")

    def to_dict(self) -> dict:
        return _to_plain(dataclasses.asdict(self))

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
        elif typing.get_origin(hint) is tuple and isinstance(value, list | tuple):
            kwargs[key] = tuple(tuple(v) if isinstance(v, list) else v for v in value)
        else:
            kwargs[key] = value
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ValueError(f"{where}: {exc}") from exc
