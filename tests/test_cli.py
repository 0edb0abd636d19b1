"""The command line: ``hoigen grasp`` end to end (outputs, reproducibility, bad input) and ``hoigen doctor``."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import trimesh
import yaml
from click.testing import CliRunner

from hoigen.cli import main
from hoigen.hands import BuiltinHand, HandParams


def _run(args):
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    return result


def test_grasp_builtin_writes_reproducible_outputs(tmp_path):
    args = ["grasp", "--objects", "builtin:nocs", "--categories", "can,mug", "--n", "1", "--seed", "3"]
    first = _run([*args, "--out", str(tmp_path / "a")])
    assert first.exit_code == 0, first.output
    second = _run([*args, "--out", str(tmp_path / "b")])
    assert second.exit_code == 0, second.output
    assert (tmp_path / "a" / "grasps.json").read_bytes() == (tmp_path / "b" / "grasps.json").read_bytes()

    data = json.loads((tmp_path / "a" / "grasps.json").read_text())
    assert data["config"]["seed"] == 3 and data["hand"]["model"] == "hoigen-builtin-v2"
    assert [o["category"] for o in data["objects"]] == ["can", "mug"]
    assert len(data["grasps"]) == 2 and not data["skipped"]
    arrays = np.load(tmp_path / "a" / "grasps.npz")
    assert arrays["hand_pose"].shape == (2, 45) and list(arrays["object_index"]) == [0, 1]

    # the saved mesh + params reproduce the recorded contact: the thumb is within the threshold
    hand = BuiltinHand()
    for grasp in data["grasps"]:
        obj = data["objects"][grasp["object_index"]]
        mesh = trimesh.load(tmp_path / "a" / obj["mesh"])
        params = HandParams.from_dict(grasp["params"])
        verts = hand.forward(params).vertices[0]
        dist = -trimesh.proximity.signed_distance(mesh, verts)
        thumb = hand.part_labels == 1
        assert dist[thumb].min() <= 0.0035
        assert grasp["metrics"]["thumb_contact"]


def test_grasp_folder_with_a_bad_mesh_skips_it(tmp_path):
    objects = tmp_path / "objects"
    objects.mkdir()
    trimesh.creation.cylinder(radius=0.03, height=0.1).export(objects / "tin.ply")
    (objects / "broken.obj").write_bytes(b"\x00\x01garbage")
    result = _run(["grasp", "--objects", str(objects), "--n", "1", "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "out" / "grasps.json").read_text())
    assert [o["id"] for o in data["objects"]] == ["tin"]
    assert len(data["skipped"]) == 1 and "broken" in data["skipped"][0]["reason"]
    assert "1 skipped" in result.output


def test_grasp_config_file_and_errors(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text(
        yaml.safe_dump({"seed": 5, "objects": {"categories": ["can"]}, "grasp": {"candidates": 2, "max_attempts": 40}})
    )
    result = _run(["grasp", "--config", str(config), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "out" / "grasps.json").read_text())
    assert data["config"]["seed"] == 5 and data["config"]["grasp"]["candidates"] == 2

    config.write_text(yaml.safe_dump({"grasp": {"candidatez": 2}}))
    bad = _run(["grasp", "--config", str(config), "--out", str(tmp_path / "x")])
    assert bad.exit_code != 0 and "candidatez" in bad.output

    empty = tmp_path / "empty"
    empty.mkdir()
    result = _run(["grasp", "--objects", str(empty), "--out", str(tmp_path / "y")])
    assert result.exit_code != 0 and "no mesh files" in result.output.lower()

    result = _run(["grasp", "--objects", str(tmp_path / "missing"), "--out", str(tmp_path / "z")])
    assert result.exit_code != 0 and "does not exist" in result.output

    result = _run(
        ["grasp", "--hand", "mano", "--mano", str(tmp_path / "nomano"), "--out", str(tmp_path / "w")]
    )
    assert result.exit_code != 0 and "HOIGEN_MANO_DIR" in result.output


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_grasp_unwritable_output(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    result = _run(["grasp", "--categories", "can", "--out", str(locked / "out")])
    assert result.exit_code != 0 and "cannot write" in result.output


def test_grasp_output_is_a_file(tmp_path):
    target = tmp_path / "file"
    target.write_text("")
    result = CliRunner().invoke(main, ["grasp", "--categories", "can", "--out", str(target)])
    assert result.exit_code != 0
    # a folder that cannot be created (its parent is a file) fails before any work, with the reason
    result = CliRunner().invoke(main, ["grasp", "--categories", "can", "--out", str(target / "sub")])
    assert result.exit_code != 0 and "cannot write to the output folder" in result.output


def test_doctor_reports_sections():
    result = _run(["doctor", "--no-gl"])
    assert result.exit_code == 0, result.output
    for section in ("python", "packages", "gpu", "assets"):
        assert section in result.output
    assert "trimesh" in result.output and "MANO" in result.output
