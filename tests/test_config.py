"""Run configuration: dict and YAML round trips, unknown keys, bad values, ``replace`` and file errors."""

from __future__ import annotations

import json

import pytest
import yaml

from hoigen.config import HandConfig, ObjectsConfig, RunConfig
from hoigen.geometry.camera import CameraConfig
from hoigen.grasping.contact import GraspConfig
from hoigen.grasping.trajectory import TrajectoryConfig

SECTIONS = ("objects", "hand", "grasp", "trajectory", "camera", "render", "real")


def custom_config() -> RunConfig:
    """A config that differs from the defaults in every section, tuples included."""
    return RunConfig(
        objects=ObjectsConfig(source="/data/ycb", units="mm", categories=("mug", "can")),
        hand=HandConfig(model="mano", mano="/models/MANO_RIGHT.pkl"),
        grasp=GraspConfig(candidates=4, require_thumb=False, thumb_opposition_rad=(0.4, 1.0), betas_std=0.0),
        trajectory=TrajectoryConfig(frames=5, start_fraction=0.0, manipulation_frames=2, lift=(0.02, 0.04)),
        camera=CameraConfig(preset="nocs-camera", distance=(0.3, 0.5), target_jitter=0.0),
        seed=123,
    )


def _is_plain(value) -> bool:
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_plain(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_is_plain(v) for v in value)
    return value is None or isinstance(value, str | int | float | bool)


def test_defaults():
    config = RunConfig()
    assert config.seed == 0
    assert config.objects == ObjectsConfig()
    assert config.hand.model == "builtin"
    assert config.trajectory == TrajectoryConfig()
    assert config.camera.distance == (0.35, 0.45)


@pytest.mark.parametrize("config", [RunConfig(), custom_config()], ids=["default", "custom"])
def test_dict_round_trip(config):
    data = config.to_dict()
    assert set(data) == {*SECTIONS, "seed"}
    assert _is_plain(data)  # JSON/YAML ready: no tuples, no dataclasses
    assert json.loads(json.dumps(data)) == data
    back = RunConfig.from_dict(data)
    assert back == config
    # tuple fields come back as tuples, not lists
    assert isinstance(back.camera.distance, tuple)
    assert isinstance(back.trajectory.lift, tuple)
    assert isinstance(back.objects.categories, tuple)
    assert isinstance(back.grasp.thumb_opposition_rad, tuple)
    # sections come back as their dataclasses
    assert isinstance(back.grasp, GraspConfig) and isinstance(back.camera, CameraConfig)


def test_to_dict_values():
    data = custom_config().to_dict()
    assert data["seed"] == 123
    assert data["objects"] == {"source": "/data/ycb", "units": "mm", "categories": ["mug", "can"]}
    assert data["hand"] == {"model": "mano", "mano": "/models/MANO_RIGHT.pkl"}
    assert data["grasp"]["candidates"] == 4
    assert data["grasp"]["thumb_opposition_rad"] == [0.4, 1.0]
    assert data["trajectory"]["lift"] == [0.02, 0.04]
    assert data["camera"]["preset"] == "nocs-camera"


@pytest.mark.parametrize("config", [RunConfig(), custom_config()], ids=["default", "custom"])
def test_yaml_round_trip(tmp_path, config):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config.to_dict()))
    assert RunConfig.from_yaml(path) == config
    assert RunConfig.from_yaml(str(path)) == config


def test_partial_and_empty_yaml_fill_defaults(tmp_path):
    path = tmp_path / "partial.yaml"
    path.write_text("seed: 7\ngrasp:\n  candidates: 3\ncamera:\n  distance: [0.3, 0.6]\n")
    config = RunConfig.from_yaml(path)
    want = RunConfig(
        grasp=GraspConfig(candidates=3),
        camera=CameraConfig(distance=(0.3, 0.6)),
        seed=7,
    )
    assert config == want
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert RunConfig.from_yaml(empty) == RunConfig()


def test_unknown_top_level_key():
    with pytest.raises(ValueError, match="sed") as info:
        RunConfig.from_dict({"sed": 3})
    assert "unknown" in str(info.value)
    # the valid keys are listed so the typo can be fixed
    assert "seed" in str(info.value)


@pytest.mark.parametrize("section", SECTIONS)
def test_unknown_key_in_a_section(section):
    with pytest.raises(ValueError, match=f"config\\.{section}.*bogus_key"):
        RunConfig.from_dict({section: {"bogus_key": 1}})


def test_unknown_key_in_a_yaml_file(tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text("grasp:\n  candidatess: 4\n")
    with pytest.raises(ValueError, match="candidatess"):
        RunConfig.from_yaml(path)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"hand": {"model": "foo"}}, "'foo'"),
        ({"objects": {"units": "inch"}}, "'inch'"),
        ({"objects": {"categories": ["mug", "teapot"]}}, "teapot"),
        ({"seed": -1}, "got -1"),
        ({"seed": True}, "got True"),
        ({"seed": 2.5}, "got 2.5"),
        ({"seed": "3"}, "got '3'"),
        ({"grasp": {"candidates": 0}}, "candidates must be >= 1, got 0"),
        ({"grasp": {"method": "diffusion"}}, "'diffusion'"),
        ({"trajectory": {"frames": 0}}, "got 0"),
        ({"camera": {"preset": "fisheye"}}, "'fisheye'"),
        ({"camera": {"distance": [0.5, 0.3]}}, r"\(0\.5, 0\.3\)"),
    ],
)
def test_bad_values_name_the_value(data, match):
    with pytest.raises(ValueError, match=match):
        RunConfig.from_dict(data)


@pytest.mark.parametrize(
    "data",
    [
        {"grasp": 3},
        {"camera": "nocs-camera"},
        {"camera": {"distance": 0.4}},  # a scalar where a range is expected
        {"grasp": {"candidates": "four"}},
    ],
)
def test_wrong_types_are_value_errors(data):
    with pytest.raises(ValueError):
        RunConfig.from_dict(data)


def test_from_dict_needs_a_mapping():
    with pytest.raises(ValueError, match="mapping"):
        RunConfig.from_dict(["seed", 1])


def test_replace():
    base = custom_config()
    new = base.replace(grasp={"candidates": 6}, seed=9)
    assert new.seed == 9
    assert new.grasp == GraspConfig(
        candidates=6, require_thumb=False, thumb_opposition_rad=(0.4, 1.0), betas_std=0.0
    )
    for section in ("objects", "hand", "trajectory", "camera"):
        assert getattr(new, section) == getattr(base, section)
    # the original is untouched (frozen)
    assert base.seed == 123 and base.grasp.candidates == 4
    # lists become tuples as from YAML
    lifted = base.replace(trajectory={"lift": [0.01, 0.03]})
    assert lifted.trajectory.lift == (0.01, 0.03)
    assert lifted.trajectory.frames == 5
    assert base.replace() == base


def test_replace_validates():
    config = RunConfig()
    with pytest.raises(ValueError, match="bogus"):
        config.replace(bogus={"a": 1})
    with pytest.raises(ValueError, match="nope"):
        config.replace(grasp={"nope": 1})
    with pytest.raises(ValueError, match="got 0"):
        config.replace(grasp={"candidates": 0})
    with pytest.raises(ValueError, match="got -5"):
        config.replace(seed=-5)


def test_missing_yaml_file(tmp_path):
    path = tmp_path / "nowhere.yaml"
    with pytest.raises(FileNotFoundError, match="nowhere.yaml"):
        RunConfig.from_yaml(path)
    with pytest.raises(FileNotFoundError):
        RunConfig.from_yaml(tmp_path)  # a folder is not a config file


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("- seed\n- 3\n", "mapping at the top level, got list"),
        ("just a string\n", "mapping at the top level, got str"),
        ("seed: [1, 2\n", "not valid YAML"),
    ],
)
def test_yaml_that_is_not_a_mapping(tmp_path, text, match):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=match):
        RunConfig.from_yaml(path)


def test_sections_validate_on_their_own():
    with pytest.raises(ValueError, match="'foo'"):
        HandConfig(model="foo")
    with pytest.raises(ValueError, match="'inch'"):
        ObjectsConfig(units="inch")
    with pytest.raises(ValueError, match="got -1"):
        RunConfig(seed=-1)
    with pytest.raises(ValueError, match="got False"):
        RunConfig(seed=False)
