"""Reliability of what goes into a run (issue 13): every config value is checked (key path, value, allowed
range), a malicious GrabNet folder is refused by ``hoigen doctor`` without running anything, a truncated .obj
warns, and ``units=auto`` refuses unit guesses it cannot make safely. No rendering: all fast."""

from __future__ import annotations

import logging
import pickle
from pathlib import Path

import numpy as np
import pytest
import trimesh
from click.testing import CliRunner

from hoigen.cli import main
from hoigen.config import RunConfig

# --------------------------------------------------------------------------------------------------------------
# config values


@pytest.mark.parametrize(
    ("section", "values", "expected"),
    [
        ("trajectory", {"frames": 2.5}, "trajectory.frames must be an integer in 1..10000, got 2.5"),
        ("trajectory", {"frames": 0}, "trajectory.frames must be in 1..10000, got 0"),
        ("trajectory", {"manipulation_frames": True}, "trajectory.manipulation_frames must be an integer"),
        ("grasp", {"candidates": 2.5}, "grasp.candidates must be an integer >= 1, got 2.5"),
        ("grasp", {"edge_bias": 1.5}, "grasp.edge_bias must be in [0, 1], got 1.5"),
        ("grasp", {"require_thumb": "yes"}, "grasp.require_thumb must be true or false, got 'yes'"),
        ("camera", {"distance": [float("nan"), float("nan")]}, "camera.distance[0] must be a finite number"),
        ("camera", {"distance": [0.5, 0.3]}, "camera.distance must be (low, high) with low <= high"),
        ("camera", {"distance": [0.3]}, "camera.distance must be a list of 2 values, got (0.3,)"),
        ("camera", {"elevation_deg": [0, 120]}, "camera.elevation_deg must be values in [-90, 90] degrees"),
        ("camera", {"preset": 5}, "camera.preset must be a string, got 5"),
        ("render", {"depth_scale": float("nan")}, "render.depth_scale must be a finite number, got nan"),
        ("render", {"depth_scale": 0}, "render.depth_scale must be in (0, 1000] mm per unit, got 0"),
        ("render", {"points_hand": 1e3}, "render.points_hand must be an integer in 1..10^7, got 1000.0"),
        ("render", {"appearance": {"lights": [0, 2]}}, "render.appearance.lights must be values in 1..16"),
        (
            "render",
            {"appearance": {"skin_tones": [[300, 0, 0]]}},
            "skin_tones[0] must be values in 0..255 (sRGB)",
        ),
        ("seed", -1, "seed must be >= 0, got -1"),
    ],
)
def test_every_bad_config_value_names_key_value_and_range(section, values, expected):
    with pytest.raises(ValueError) as info:
        RunConfig().replace(**{section: values})
    assert expected in str(info.value)


def test_direct_construction_is_checked_too():
    from hoigen.grasping.trajectory import TrajectoryConfig

    with pytest.raises(ValueError, match=r"trajectory\.frames must be an integer in 1\.\.10000, got 2\.5"):
        RunConfig(trajectory=TrajectoryConfig(frames=2.5))


def test_a_bad_yaml_value_is_refused_by_the_command_line(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("trajectory:\n  frames: 2.5\ncamera:\n  preset: square-32\n")
    result = CliRunner().invoke(
        main, ["synth", "--n", "1", "--out", str(tmp_path / "out"), "--config", str(config)]
    )
    assert result.exit_code != 0
    assert "trajectory.frames must be an integer in 1..10000, got 2.5" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "out").exists()


# --------------------------------------------------------------------------------------------------------------
# GrabNet files that are not safe to load


class _Touch:
    """Unpickling this calls ``Path.touch(marker)``: proof of code execution, if it ever ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_doctor_says_a_malicious_grabnet_folder_cannot_be_loaded_safely(tmp_path, monkeypatch):
    from hoigen.doctor import check_assets

    folder, marker = tmp_path / "grabnet", tmp_path / "pwned"
    folder.mkdir()
    payload = pickle.dumps({"weight": _Touch(marker)}, protocol=2)
    (folder / "coarsenet.pt").write_bytes(payload)
    (folder / "refinenet.pt").write_bytes(payload)
    np.savez(folder / "bps.npz", basis=np.random.default_rng(0).uniform(-0.15, 0.15, (4096, 3)))
    monkeypatch.setenv("HOIGEN_GRABNET_DIR", str(folder))
    (check,) = [c for c in check_assets() if c.name == "GrabNet"]
    assert check.ok is False
    assert "cannot be loaded safely" in check.detail and "corrupt or unsafe" in check.detail
    assert "weights_only=False" not in check.detail  # never advise the unsafe way
    assert not marker.exists()


# --------------------------------------------------------------------------------------------------------------
# object files


def _entry(path: Path):
    from hoigen.objects.folder import ObjectEntry

    return ObjectEntry(path.stem, path, path.name)


def test_a_truncated_obj_warns(tmp_path, caplog):
    from hoigen.objects.folder import load_object

    mesh = trimesh.creation.icosphere(subdivisions=2, radius=0.05)
    text = trimesh.exchange.obj.export_obj(mesh)
    whole, cut = tmp_path / "whole.obj", tmp_path / "cut.obj"
    whole.write_text(text)
    cut.write_text(text[: int(len(text) * 0.8)])  # cut mid-line in the face block
    assert cut.read_text().rsplit("\n", 1)[-1].startswith("f ")
    with caplog.at_level(logging.WARNING):
        load_object(_entry(whole))
    assert "truncated" not in caplog.text
    with caplog.at_level(logging.WARNING):
        asset = load_object(_entry(cut))
    assert "may be truncated" in caplog.text and "cut.obj" in caplog.text
    assert asset.info["faces_missing"] >= 1


def _box(path: Path, extent: float) -> Path:
    trimesh.creation.box(extents=(extent, extent * 0.6, extent * 0.4)).export(path)
    return path


def test_units_auto_refuses_an_unsafe_guess(tmp_path, caplog):
    from hoigen.objects import ObjectError
    from hoigen.objects.folder import load_object

    big = _entry(_box(tmp_path / "big.ply", 2.5))  # a 2.5 m object, or a 2.5 cm one saved in cm?
    with pytest.raises(ObjectError, match="too close to guess its unit safely") as info:
        load_object(big)
    assert "2.5 m as m" in str(info.value) and "0.025 m as cm" in str(info.value)
    assert "--units cm" in str(info.value)
    assert load_object(big, units="cm").unit_scale == 0.01  # the user says so: fine

    between = _entry(_box(tmp_path / "between.ply", 40.0))  # 40 cm or 4 cm: neither is clearly nearer
    with pytest.raises(ObjectError, match="cannot be guessed safely"):
        load_object(between)

    with caplog.at_level(logging.WARNING):  # a clear case still works, and says how sure it is
        mug = load_object(_entry(_box(tmp_path / "mug.ply", 12.0)))
    assert mug.unit_scale == 0.01
    assert "looks like cm" in caplog.text and "12 m as m" in caplog.text and "0.12 m as cm" in caplog.text
