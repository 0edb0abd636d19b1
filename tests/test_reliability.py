"""Reliability of ``hoigen synth`` output folders (issue 13): concurrent runs, pinned inputs, failed runs, SIGTERM,
memory refusal, and shard integrity checked by the reader, the exports and ``hoigen verify``.

Runs are tiny (32 px, 2 frames, 2 grasp candidates, one sample per shard). One uninterrupted run (``reference``,
3 samples in 3 shards) is the byte-level ground truth; races start their processes aligned on a barrier file the
test creates.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
import trimesh
from click.testing import CliRunner

from hoigen.cli import main

HOIGEN = Path(sys.executable).with_name("hoigen")
N = 3


@pytest.fixture(scope="module")
def config_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("config") / "tiny.yaml"
    path.write_text("grasp:\n  candidates: 2\n  max_attempts: 40\n")
    return path


def _args(config_file: Path, out: Path, *extra: str, n: int = N, objects: str = "builtin:nocs") -> list[str]:
    return [
        "synth", "--objects", objects, "--n", str(n), "--out", str(out), "--frames", "2",
        "--size", "32", "32", "--samples-per-shard", "1", "--config", str(config_file), *extra,
    ]  # fmt: skip


def _cli(args: list[str], **kwargs):
    return CliRunner().invoke(main, args, catch_exceptions=False, **kwargs)


def _tars(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((out / "shards").glob("hoigen-*.tar"))}


def _assert_same_data(out: Path, reference: Path) -> None:
    assert _tars(out) == _tars(reference)
    assert (out / "manifest.json").read_bytes() == (reference / "manifest.json").read_bytes()
    assert (out / "run.json").read_bytes() == (reference / "run.json").read_bytes()
    _assert_no_leftovers(out)


def _assert_no_leftovers(out: Path) -> None:
    names = [p.relative_to(out).as_posix() for p in out.rglob("*")]
    assert not [n for n in names if n.endswith(".partial") or ".hoigen" in n], names


@pytest.fixture(scope="module")
def reference(tmp_path_factory, config_file) -> Path:
    out = tmp_path_factory.mktemp("reference") / "run"
    result = _cli(_args(config_file, out))
    assert result.exit_code == 0, result.output
    return out


# A process that imports hoigen, waits for the barrier file, then runs the command line: both racers start
# their run within milliseconds of each other.
_RACER = """
import sys, time
from pathlib import Path
from hoigen.cli import main
barrier = Path(sys.argv[1])
Path(sys.argv[2]).touch()  # ready
while not barrier.exists():
    time.sleep(0.001)
main(sys.argv[3:])
"""


def _race(tmp_path: Path, *commands: list[str]) -> list[subprocess.CompletedProcess]:
    barrier = tmp_path / "go"
    ready = [tmp_path / f"ready{k}" for k in range(len(commands))]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _RACER, str(barrier), str(flag), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for flag, args in zip(ready, commands, strict=True)
    ]
    deadline = time.monotonic() + 120
    while not all(flag.exists() for flag in ready) and time.monotonic() < deadline:
        time.sleep(0.01)  # until every interpreter has imported hoigen and waits
    barrier.touch()
    results = []
    for proc, args in zip(procs, commands, strict=True):
        stdout, stderr = proc.communicate(timeout=300)
        results.append(subprocess.CompletedProcess(args, proc.returncode, stdout, stderr))
    return results


# --------------------------------------------------------------------------------------------------------------
# concurrent runs


def test_two_runs_racing_on_one_folder_end_with_one_refusal(config_file, tmp_path):
    out = tmp_path / "run"
    first, second = _race(tmp_path, _args(config_file, out, n=1), _args(config_file, out, "--seed", "7", n=1))
    codes = sorted([first.returncode, second.returncode])
    assert codes[0] == 0 and codes[1] != 0, (first.stderr, second.stderr)
    winner, loser = (first, second) if first.returncode == 0 else (second, first)
    assert "another run (pid" in loser.stderr and "different configuration" in loser.stderr, loser.stderr
    assert "Traceback" not in loser.stderr
    # consistent folder: the pin, the manifest and the shards all come from the winner
    seed = 0 if winner is first else 7
    pinned = json.loads((out / "run.json").read_text())
    manifest = json.loads((out / "manifest.json").read_text())
    assert pinned["config"]["seed"] == manifest["seed"] == manifest["config"]["seed"] == seed
    assert manifest["complete"] and manifest["samples"] == 1
    with tarfile.open(out / "shards" / "hoigen-000000.tar") as tar:
        meta = json.load(tar.extractfile("s00000000.meta.json"))
    assert meta["seed"] == seed
    assert _cli(["verify", str(out)]).exit_code == 0
    _assert_no_leftovers(out)


def test_concurrent_shard_ranges_end_with_a_complete_manifest(reference, config_file, tmp_path):
    out = tmp_path / "run"
    results = _race(
        tmp_path,
        _args(config_file, out, "--shards", "0:2"),
        _args(config_file, out, "--shards", "2:3"),
    )
    assert [r.returncode for r in results] == [0, 0], [r.stderr for r in results]
    _assert_same_data(out, reference)


def test_a_live_run_with_overlapping_shards_is_refused_by_name(reference, config_file, tmp_path):
    from hoigen.synth.lock import claim_shards, config_digest, folder_lock

    out = tmp_path / "run"
    shutil.copytree(reference, out)
    record = json.loads((out / "run.json").read_text())
    with folder_lock(out):
        claim = claim_shards(out, 1, 2, config_digest(record))  # as another process running --shards 1:2
    try:
        refused = _cli(_args(config_file, out))
        assert refused.exit_code != 0
        assert f"another run (pid {os.getpid()} on " in refused.output and "shards 1:2" in refused.output
        assert "overlap" in refused.output
        joined = _cli(_args(config_file, out, "--shards", "2:3"))  # a disjoint range of the same run may join
        assert joined.exit_code == 0, joined.output
    finally:
        claim.release()
    _assert_same_data(out, reference)


def test_a_stale_lock_of_a_dead_process_is_taken_over(reference, config_file, tmp_path, caplog):
    out = tmp_path / "run"
    shutil.copytree(reference, out)
    (out / ".hoigen.lock").write_text(json.dumps({"pid": 999999, "host": "gone", "since": 1.0}))
    runs = out / ".hoigen-runs"
    runs.mkdir()
    (runs / "gone-999999-dead.json").write_text(json.dumps({"pid": 999999, "host": "gone", "shards": [0, 3]}))
    with caplog.at_level("WARNING"):
        result = _cli(_args(config_file, out))
    assert result.exit_code == 0, result.output
    assert "0 new shards, 3 kept" in result.output
    text = caplog.text
    assert "taking over the lock" in text and "pid 999999 on gone" in text and "removing the claim" in text
    _assert_same_data(out, reference)


# --------------------------------------------------------------------------------------------------------------
# pins: configuration, inputs, failed runs


def test_a_different_configuration_is_refused_naming_the_keys(reference, config_file, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(reference, out)
    refused = _cli(_args(config_file, out, "--frames", "3", "--seed", "4"))
    assert refused.exit_code != 0
    assert "different configuration" in refused.output
    assert "config.trajectory.frames: 2 (pinned) -> 3 (now)" in refused.output
    assert "config.seed: 0 (pinned) -> 4 (now)" in refused.output
    _assert_same_data(out, reference)


def _cylinder(path: Path, radius: float = 0.04) -> Path:
    trimesh.creation.cylinder(radius=radius, height=0.1, sections=24).export(path)
    return path


def test_an_object_added_to_the_folder_is_refused(config_file, tmp_path):
    objects = tmp_path / "objects"
    objects.mkdir()
    _cylinder(objects / "a.ply")
    out = tmp_path / "run"
    args = _args(config_file, out, n=1, objects=str(objects))
    first = _cli(args)
    assert first.exit_code == 0, first.output
    pinned = json.loads((out / "run.json").read_text())["inputs"]["objects"]
    assert list(pinned) == ["a.ply"] and len(pinned["a.ply"]["sha256"]) == 64
    older = json.loads((out / "run.json").read_text())
    del older["inputs"]  # as an older hoigen pinned it: resumable, and pinned now
    (out / "run.json").write_text(json.dumps(older))
    resumed = _cli(args)
    assert resumed.exit_code == 0 and "0 new shards, 1 kept" in resumed.output, resumed.output
    assert json.loads((out / "run.json").read_text())["inputs"]["objects"] == pinned
    _cylinder(objects / "b.ply", radius=0.03)
    refused = _cli(args)
    assert refused.exit_code != 0
    assert "inputs.objects['b.ply']: added" in refused.output, refused.output
    (objects / "b.ply").unlink()
    _cylinder(objects / "a.ply", radius=0.035)  # same name, other bytes
    refused = _cli(args)
    assert refused.exit_code != 0 and "inputs.objects['a.ply']: file changed" in refused.output


def test_an_obj_material_and_texture_are_pinned_too(tmp_path):
    from hoigen.config import RunConfig
    from hoigen.synth.lock import describe_differences, pin_inputs

    mug = tmp_path / "objects" / "mug"
    mug.mkdir(parents=True)
    text = trimesh.exchange.obj.export_obj(trimesh.creation.box(extents=(0.05, 0.05, 0.05)))
    (mug / "textured.obj").write_text("mtllib textured.mtl\n" + text)
    (mug / "textured.mtl").write_text("newmtl m\nmap_Kd texture_map.png\n")
    (mug / "texture_map.png").write_bytes(b"png v1")
    config = RunConfig().replace(objects={"source": str(tmp_path / "objects")})
    before = pin_inputs(config)["objects"]
    assert sorted(before) == ["mug/texture_map.png", "mug/textured.mtl", "mug/textured.obj"]
    (mug / "texture_map.png").write_bytes(b"png v2")
    (line,) = describe_differences({"objects": before}, {"objects": pin_inputs(config)["objects"]})
    assert line.startswith("objects['mug/texture_map.png']: file changed")


def _fake_finished_shard(out: Path) -> None:
    """A shard record and a tar of the recorded size: what a run that finished shard 0 leaves."""
    (out / "shards" / "hoigen-000000.tar").write_bytes(b"\0" * 1024)
    (out / "shards" / "hoigen-000000.json").write_text(json.dumps({"shard": 0, "bytes": 1024, "sha256": "0"}))


def test_a_changed_mano_file_is_refused(tmp_path, monkeypatch):
    import numpy as np

    from hoigen.config import RunConfig
    from hoigen.hands.synthetic import write_synthetic_mano
    from hoigen.synth.lock import pin_inputs
    from hoigen.synth.run import SynthJob, prepare_output

    mano = write_synthetic_mano(tmp_path / "mano" / "MANO_RIGHT.pkl", np.random.default_rng(0))
    monkeypatch.setenv("HOIGEN_MANO_DIR", str(mano.parent))
    config = RunConfig().replace(hand={"model": "mano"})
    job = SynthJob(config, tmp_path / "run", 2, 1)
    prepare_output(job, inputs=pin_inputs(config)).release()
    pinned = json.loads((job.out / "run.json").read_text())["inputs"]["mano"]
    assert pinned["name"] == "MANO_RIGHT.pkl" and pinned["size"] == mano.stat().st_size
    _fake_finished_shard(job.out)
    other = write_synthetic_mano(tmp_path / "other" / "MANO_RIGHT.pkl", np.random.default_rng(1))
    monkeypatch.setenv("HOIGEN_MANO_DIR", str(other.parent))  # the same config, another file
    with pytest.raises(ValueError, match=r"inputs\.mano: file changed \(MANO_RIGHT\.pkl"):
        prepare_output(job, inputs=pin_inputs(config))


def test_a_config_section_that_reads_files_is_pinned(tmp_path):
    from dataclasses import dataclass, field

    from hoigen.config import GraspConfig, HandConfig, ObjectsConfig
    from hoigen.synth.lock import describe_differences, pin_file, pin_inputs

    weights = tmp_path / "unet.safetensors"
    weights.write_bytes(b"weights v1")

    @dataclass(frozen=True)
    class Weights:  # as a photo stage's config section would list its weights
        folder: str

        def input_files(self):
            return [("unet.safetensors", Path(self.folder) / "unet.safetensors")]

    @dataclass(frozen=True)
    class Config:
        objects: ObjectsConfig = field(default_factory=ObjectsConfig)
        hand: HandConfig = field(default_factory=HandConfig)
        grasp: GraspConfig = field(default_factory=GraspConfig)
        photo: Weights = field(default_factory=lambda: Weights(str(tmp_path)))

    before = pin_inputs(Config())
    assert before == {"photo": {"unet.safetensors": {"size": 10, "sha256": pin_file(weights)["sha256"]}}}
    weights.write_bytes(b"weights v2")
    (line,) = describe_differences({"inputs": before}, {"inputs": pin_inputs(Config())})
    assert line.startswith("inputs.photo['unet.safetensors']: file changed (size 10 -> 10, sha256 ")


def test_a_run_that_finished_no_shard_does_not_pin(config_file, tmp_path, caplog):
    out = tmp_path / "run"

    def limit_file_size():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG
        import resource

        resource.setrlimit(resource.RLIMIT_FSIZE, (8192, 8192))  # run.json fits, no shard does

    failed = subprocess.run(
        [str(HOIGEN), *_args(config_file, out, "--seed", "3", n=1)],
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=limit_file_size,
    )
    assert failed.returncode != 0 and "File too large" in failed.stderr, failed.stderr
    assert json.loads((out / "run.json").read_text())["config"]["seed"] == 3
    with caplog.at_level("WARNING"):
        fixed = _cli(_args(config_file, out, n=1))  # the corrected command
    assert fixed.exit_code == 0, fixed.output
    assert "finished no shard; replacing its configuration" in caplog.text
    assert "config.seed: 3 (pinned) -> 0 (now)" in caplog.text
    assert json.loads((out / "run.json").read_text())["config"]["seed"] == 0


# --------------------------------------------------------------------------------------------------------------
# SIGTERM, memory, objects


def _group_members(pgid: int) -> dict[str, str]:
    """pid -> command line of the live (not zombie) processes in process group ``pgid``."""
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()  # state, ppid, pgrp, ...
            if int(fields[2]) == pgid and fields[0] != "Z":
                found[stat.parent.name] = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, IndexError, ValueError):
            continue
    return found


def test_sigterm_stops_cleanly_and_the_rerun_is_byte_identical(reference, config_file, tmp_path):
    out = tmp_path / "run"
    args = _args(config_file, out)
    proc = subprocess.Popen(
        [str(HOIGEN), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 240
        while not (out / "shards" / "hoigen-000000.json").exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGTERM)  # the driver only, as `kill PID` does
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 143, stderr
    assert "interrupted by SIGTERM" in stderr and "rerun the same command to resume" in stderr
    assert "Traceback" not in stderr and "leaked" not in stderr, stderr
    # Nothing of the run's process group may keep running. The workers and multiprocessing's resource tracker hold
    # the driver's stderr, so communicate() returned after they closed it, but a process that has closed its files
    # may not have finished exiting yet (CI once saw one there): they get a few seconds to go.
    deadline = time.monotonic() + 10
    while (alive := _group_members(proc.pid)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive, f"processes outlived the driver: {alive}"
    assert not (out / "manifest.json").exists()
    resumed = _cli(args)
    assert resumed.exit_code == 0, resumed.output
    assert "kept" in resumed.output and "0 kept" not in resumed.output
    _assert_same_data(out, reference)


def test_huge_images_are_refused_with_the_numbers(config_file, tmp_path, monkeypatch):
    monkeypatch.setenv("HOIGEN_MEMORY_LIMIT_GB", "8")
    out = tmp_path / "run"
    args = [*_args(config_file, out, n=1), "--size", "10000", "10000", "--workers", "2"]
    refused = _cli(args)
    assert refused.exit_code != 0
    text = " ".join(refused.output.split())
    assert "10000x10000 images with 2 frames need about" in text and "GB per worker" in text, text
    assert "more than the 8.0 GB of HOIGEN_MEMORY_LIMIT_GB" in text and "HOIGEN_MEMORY_LIMIT_GB=" in text
    assert not out.exists()  # refused before anything was written

    from hoigen.config import RunConfig
    from hoigen.synth.run import SynthJob, check_memory, estimate_worker_memory

    config = RunConfig().replace(camera={"preset": "square-10000"}, trajectory={"frames": 2})
    need = estimate_worker_memory(config)
    assert 10000 * 10000 * 100 < need < 10000 * 10000 * 1000  # bytes: between 100 and 1000 per pixel
    monkeypatch.setenv("HOIGEN_MEMORY_LIMIT_GB", str(need / 2**30 + 1))
    check_memory(SynthJob(config, out, 1), 1)  # the raised limit lets it through


def test_a_folder_of_bad_meshes_exits_with_no_usable_object(config_file, tmp_path):
    objects = tmp_path / "objects"
    objects.mkdir()
    (objects / "garbage.obj").write_bytes(b"\x00\xff not a mesh \x01" * 10)
    (objects / "empty.ply").write_text("")
    out = tmp_path / "run"
    result = _cli(_args(config_file, out, n=2, objects=str(objects)))
    assert result.exit_code != 0
    assert (
        "no usable object" in result.output
        and "garbage.obj" in result.output
        and "empty.ply" in result.output
    )
    assert not (out / "manifest.json").exists()


# --------------------------------------------------------------------------------------------------------------
# shard integrity: the reader, every export, hoigen verify


def _members(tar_path: Path) -> list[tarfile.TarInfo]:
    with tarfile.open(tar_path) as tar:
        return tar.getmembers()


@pytest.fixture
def damaged(reference, tmp_path):
    """Copies of the reference with shard 1 truncated at a member boundary, or one byte of points.npy flipped."""
    made = {}
    for kind in ("truncated", "flipped"):
        out = tmp_path / kind
        shutil.copytree(reference, out)
        tar_path = out / "shards" / "hoigen-000001.tar"
        data = bytearray(tar_path.read_bytes())
        members = _members(tar_path)
        if kind == "truncated":
            cut = next(m for m in members if m.name == "s00000001.f001.depth.png")
            tar_path.write_bytes(bytes(data[: cut.offset]))  # ends cleanly after the previous member
            made[kind] = (out, "s00000001.f001.depth.png")
        else:
            points = next(m for m in members if m.name == "s00000001.points.npy")
            data[points.offset_data + points.size - 5] ^= 0x40  # a float's exponent bit
            tar_path.write_bytes(bytes(data))
            made[kind] = (out, "s00000001.points.npy")
    return made


def test_the_reader_names_the_damaged_shard_and_member(damaged):
    from hoigen.datasets.integrity import ShardIntegrityError
    from hoigen.datasets.reader import open_sequences

    for out, member in damaged.values():
        with pytest.raises(ShardIntegrityError) as info:
            list(open_sequences(out))
        assert "hoigen-000001.tar" in str(info.value) and member in str(info.value), str(info.value)
        # the same shard given directly is checked against its record
        with pytest.raises(ShardIntegrityError, match=member.replace(".", r"\.")):
            list(open_sequences(out / "shards" / "hoigen-000001.tar"))
    truncated, _ = damaged["truncated"]
    with pytest.raises(ShardIntegrityError, match="truncated"):
        list(open_sequences(truncated))
    import webdataset as wds

    unverified = list(open_sequences(truncated, verify=False, handler=wds.ignore_and_continue))
    assert [s["key"] for s in unverified] == ["s00000000", "s00000002"]  # what verification protects from


@pytest.mark.parametrize("fmt", ["coco", "bop", "nocs"])
def test_every_export_refuses_a_damaged_shard(damaged, tmp_path, fmt):
    for kind, (out, member) in damaged.items():
        extra = ["--allow-intrinsics"] if fmt == "nocs" else []  # the fixture's camera is not CAMERA's
        result = _cli(["export", fmt, str(out), str(tmp_path / f"{fmt}-{kind}"), *extra])
        assert result.exit_code != 0
        assert "hoigen-000001.tar" in result.output and member in result.output, result.output
        assert "Traceback" not in result.output


def test_exports_decode_every_image_they_copy(reference, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(reference, out)
    tar_path = out / "shards" / "hoigen-000001.tar"
    data = bytearray(tar_path.read_bytes())
    rgb = next(m for m in _members(tar_path) if m.name == "s00000001.f000.rgb.png")
    data[rgb.offset_data + rgb.size // 2] ^= 0xFF  # inside the image data: its CRC no longer matches
    tar_path.write_bytes(bytes(data))
    for fmt in ("coco", "bop"):
        result = _cli(["export", fmt, str(out), str(tmp_path / fmt), "--no-verify"])
        assert result.exit_code != 0
        assert "s00000001.f000.rgb.png is not a valid PNG" in result.output, result.output


def test_a_manifest_that_does_not_describe_its_shards_is_an_error(reference, tmp_path):
    from hoigen.datasets.integrity import ShardIntegrityError
    from hoigen.datasets.reader import open_sequences

    out = tmp_path / "run"
    shutil.copytree(reference, out)
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["shards"][0]["samples"] = 2
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ShardIntegrityError, match="holds 1 samples but .* lists 2"):
        list(open_sequences(out))
    manifest["shards"][0]["samples"] = 1
    manifest["frames_per_sample"] = 3
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ShardIntegrityError, match="sample s00000000 has 2 frames but .* says 3"):
        list(open_sequences(out))


def test_hoigen_verify(reference, damaged, tmp_path):
    ok = _cli(["verify", str(reference)])
    assert ok.exit_code == 0 and "ok: 3 shards, 3 samples" in ok.output
    for out, member in damaged.values():
        bad = _cli(["verify", str(out)])
        assert bad.exit_code != 0
        assert "hoigen-000001.tar" in bad.output and member in bad.output
        assert "1 problem(s)" in bad.output
    out = tmp_path / "mesh"  # the stored canonical meshes are covered by the manifest's checksums too
    shutil.copytree(reference, out)
    stored = json.loads((out / "manifest.json").read_text())["meshes"][0]["name"]
    (out / stored).write_bytes((out / stored).read_bytes()[:-1] + b"?")
    bad = _cli(["verify", str(out)])
    assert bad.exit_code != 0 and f"{stored} does not match its sha256" in bad.output
