"""``hoigen synth`` end to end: shard layout and manifest, determinism across workers, kill + resume, reruns,
refused mixes, unwritable and full output folders, bad meshes, ``--shards`` splits, and the YCB samples.

Runs are tiny (64 px, 2 frames, 2 grasp candidates per attempt) so the whole file stays near two minutes on two
cores. One uninterrupted single-worker run (``reference``) is the byte-level ground truth for the others.
The Ray executor is tested in ``test_synth_ray.py``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import resource
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
from hoigen.datasets.shards import FIXED_MTIME

YCB_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "ycb"
HOIGEN = Path(sys.executable).with_name("hoigen")
FRAMES = 2
IMAGES = ("rgb", "depth", "mask", "normal", "nocs", "skeleton", "hoimask", "tracking")
N, PER_SHARD = 3, 2  # two shards: samples 0-1 and 2


# --------------------------------------------------------------------------------------------------------------
# helpers


@pytest.fixture(scope="module")
def config_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("config") / "tiny.yaml"
    path.write_text("grasp:\n  candidates: 2\n  max_attempts: 40\n")
    return path


def _args(config_file: Path, out: Path, *extra: str, objects: str = "builtin:nocs", n: int = N) -> list[str]:
    return [
        "synth",
        "--objects", objects,
        "--n", str(n),
        "--out", str(out),
        "--frames", str(FRAMES),
        "--size", "64", "64",
        "--samples-per-shard", str(PER_SHARD),
        "--config", str(config_file),
        *extra,
    ]  # fmt: skip


def _cli(args: list[str]):
    return CliRunner().invoke(main, args, catch_exceptions=False)


def _hoigen(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(HOIGEN), *args], capture_output=True, text=True, timeout=300, check=False, **kwargs
    )


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _files(out: Path) -> set[str]:
    return {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}


def _tars(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((out / "shards").glob("hoigen-*.tar"))}


def _records(out: Path) -> dict[str, dict]:
    """Per-shard records without their timings (the only part allowed to differ between runs)."""
    records = {}
    for path in sorted((out / "shards").glob("hoigen-*.json")):
        record = json.loads(path.read_text())
        record.pop("seconds")
        records[path.name] = record
    return records


def _assert_same_run(out: Path, reference: Path) -> None:
    assert _files(out) == _files(reference)
    assert _tars(out) == _tars(reference)
    assert _records(out) == _records(reference)
    assert (out / "manifest.json").read_bytes() == (reference / "manifest.json").read_bytes()
    assert (out / "run.json").read_bytes() == (reference / "run.json").read_bytes()


def _check_run(out: Path, n: int, per_shard: int = PER_SHARD) -> dict:
    """Check a finished run against SPEC §3 and return its manifest."""
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] and manifest["n"] == n and manifest["frames_per_sample"] == FRAMES
    assert manifest["samples"] + len(manifest["skipped"]) == n
    names = [f"hoigen-{k:06d}.tar" for k in range(-(-n // per_shard))]
    assert [s["name"] for s in manifest["shards"]] == names
    assert _files(out) == {
        "manifest.json",
        "run.json",
        *(f"shards/{name}" for name in names),
        *(f"shards/{name[:-4]}.json" for name in names),
        *(m["name"] for m in manifest["meshes"]),  # the mesh store (SPEC §3), each file checksummed
    }  # in particular no *.partial file
    for m in manifest["meshes"]:
        assert m["sha256"] == _sha256(out / m["name"]) == Path(m["name"]).stem
    skipped = {s["index"] for s in manifest["skipped"]}
    for k, entry in enumerate(manifest["shards"]):
        tar_path = out / "shards" / entry["name"]
        assert entry["bytes"] == tar_path.stat().st_size and entry["sha256"] == _sha256(tar_path)
        assert entry["first_index"] == k * per_shard
        with tarfile.open(tar_path) as tar:
            members = tar.getmembers()
        member_names = [m.name for m in members]
        assert member_names == sorted(member_names)
        assert all(m.mtime == FIXED_MTIME and m.isfile() for m in members)
        keys = sorted({name.split(".", 1)[0] for name in member_names})
        assert all(re.fullmatch(r"s\d{8}", key) for key in keys), keys
        expected = [i for i in range(k * per_shard, min(n, (k + 1) * per_shard)) if i not in skipped]
        assert keys == [f"s{i:08d}" for i in expected]
        assert entry["samples"] == len(keys)
        per_sample = {"meta.json", "points.npy", "points_label.npy"}
        per_sample |= {f"f{t:03d}.{image}.png" for t in range(FRAMES) for image in IMAGES}
        for key in keys:
            assert {
                name.split(".", 1)[1] for name in member_names if name.startswith(key + ".")
            } == per_sample
    return manifest


def _metas(out: Path) -> dict[str, dict]:
    metas = {}
    for path in sorted((out / "shards").glob("hoigen-*.tar")):
        with tarfile.open(path) as tar:
            for member in tar.getmembers():
                if member.name.endswith(".meta.json"):
                    metas[member.name.split(".", 1)[0]] = json.loads(tar.extractfile(member).read())
    return metas


def _mtimes(out: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in (out / "shards").iterdir()}


def _group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of process group ``pgid``."""
    alive = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            alive.append(int(stat.parent.name))
    return alive


@pytest.fixture(scope="module")
def reference(tmp_path_factory, config_file) -> Path:
    """An uninterrupted single-worker run on builtin:nocs."""
    out = tmp_path_factory.mktemp("reference") / "run"
    result = _cli(_args(config_file, out, "--workers", "1"))
    assert result.exit_code == 0, result.output
    return out


# --------------------------------------------------------------------------------------------------------------
# a normal run


def test_builtin_run_writes_shards_and_a_matching_manifest(reference):
    manifest = _check_run(reference, N)
    assert manifest["seed"] == 0 and manifest["samples"] == N and not manifest["skipped"]
    assert (
        manifest["config"]["grasp"]["candidates"] == 2
        and manifest["config"]["camera"]["preset"] == "square-64"
    )
    assert manifest["hoigen_version"] and manifest["packages"]["numpy"]
    metas = _metas(reference)
    assert list(metas) == [f"s{i:08d}" for i in range(N)]
    for key, meta in metas.items():
        assert meta["key"] == key and meta["index"] == int(key[1:]) and meta["seed"] == 0
        assert len(meta["frames"]) == FRAMES and meta["camera"]["width"] == 64


def test_two_workers_give_the_same_bytes_as_one(reference, config_file, tmp_path):
    out = tmp_path / "run"
    result = _cli(_args(config_file, out, "--workers", "2"))
    assert result.exit_code == 0, result.output
    _assert_same_run(out, reference)


def test_shard_ranges_give_the_same_bytes_as_the_full_run(reference, config_file, tmp_path):
    out = tmp_path / "run"
    first = _cli(_args(config_file, out, "--shards", "0:1"))
    assert first.exit_code == 0, first.output
    partial = json.loads((out / "manifest.json").read_text())
    assert _files(out) == {
        "manifest.json",
        "run.json",
        "shards/hoigen-000000.tar",
        "shards/hoigen-000000.json",
        *(m["name"] for m in partial["meshes"]),  # the meshes of shard 0's objects
    }
    assert not partial["complete"] and [s["name"] for s in partial["shards"]] == ["hoigen-000000.tar"]
    second = _cli(_args(config_file, out, "--shards", "1:2"))
    assert second.exit_code == 0, second.output
    _assert_same_run(out, reference)

    bad = _cli(_args(config_file, out, "--shards", "1:5"))
    assert bad.exit_code != 0 and "outside the run's 0:2 shards" in bad.output


# --------------------------------------------------------------------------------------------------------------
# interruption, reruns, refusals


def test_sigkill_mid_run_then_resume_gives_the_same_bytes(reference, config_file, tmp_path):
    out = tmp_path / "run"
    args = _args(config_file, out, "--workers", "2")
    with open(tmp_path / "killed.log", "wb") as log:
        proc = subprocess.Popen([str(HOIGEN), *args], stdout=log, stderr=log, start_new_session=True)
        try:
            deadline, shards, seen = time.monotonic() + 240, out / "shards", []
            while not seen and time.monotonic() < deadline and proc.poll() is None:
                if shards.is_dir():
                    seen = [p.name for p in shards.iterdir() if p.suffix in (".partial", ".tar")]
                time.sleep(0.01)
            assert seen and proc.poll() is None, (tmp_path / "killed.log").read_text()
            os.killpg(proc.pid, signal.SIGKILL)  # the driver and its spawned workers
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    deadline = time.monotonic() + 20
    while _group_members(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _group_members(proc.pid), "a worker survived the kill"
    assert not (out / "manifest.json").exists()  # the run really was cut short

    resumed = _hoigen(args)
    assert resumed.returncode == 0, resumed.stderr
    _assert_same_run(out, reference)


def test_rerun_keeps_finished_shards_and_another_config_is_refused(reference, config_file, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(reference, out)
    # leftovers of a killed run: partial files are cleaned up, finished shards stay untouched
    (out / "shards" / "hoigen-000001.tar.partial").write_bytes(b"half a tar")
    (out / "shards" / "hoigen-000001.json.partial").write_bytes(b"{")
    (out / "manifest.json.partial").write_bytes(b"{")
    before = {name: t for name, t in _mtimes(out).items() if not name.endswith(".partial")}

    for extra in ([], ["--resume"]):
        result = _cli(_args(config_file, out, *extra))
        assert result.exit_code == 0, result.output
        assert "0 new shards, 2 kept" in result.output
        assert _mtimes(out) == before
        _assert_same_run(out, reference)

    for extra in (["--seed", "1"], ["--frames", "3"], ["--n", "5"]):
        refused = _cli([*_args(config_file, out), *extra])
        assert refused.exit_code != 0
        assert "different configuration" in refused.output and str(out) in refused.output
        assert "Traceback" not in refused.output
        assert _mtimes(out) == before
    _assert_same_run(out, reference)


def test_a_corrupted_shard_is_made_again(reference, config_file, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(reference, out)
    tar = out / "shards" / "hoigen-000001.tar"
    tar.write_bytes(tar.read_bytes()[:1024])  # truncated behind hoigen's back
    result = _cli(_args(config_file, out))
    assert result.exit_code == 0, result.output
    assert "1 new shards, 1 kept" in result.output
    _assert_same_run(out, reference)


# --------------------------------------------------------------------------------------------------------------
# output folder failures


def test_unwritable_output_folder_fails_cleanly(config_file, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    for out in (blocker / "out", Path("/proc/hoigen-test-out")):
        result = _cli(_args(config_file, out))
        assert result.exit_code == 1
        assert "cannot create the output folder" in result.output and str(out) in result.output, result.output
        assert "Traceback" not in result.output
    assert blocker.read_text() == "not a folder"


def _assert_failed_cleanly(out: Path, returncode: int, output: str, reason: str) -> None:
    assert returncode != 0, output
    assert "could not write" in output and reason in output, output
    assert "Traceback" not in output, output
    shards = out / "shards"
    assert not [p for p in out.rglob("*") if p.name.endswith(".partial")]
    assert not (out / "manifest.json").exists()
    for tar in shards.glob("hoigen-*.tar"):  # any shard under its final name is complete and recorded
        record = json.loads(tar.with_suffix(".json").read_text())
        assert record["bytes"] == tar.stat().st_size and record["sha256"] == _sha256(tar)


def _limit_file_size(limit: int):
    def preexec():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return preexec


def test_file_size_limit_fails_cleanly_and_the_rerun_completes(reference, config_file, tmp_path):
    out = tmp_path / "run"
    args = _args(config_file, out)
    failed = _hoigen(args, preexec_fn=_limit_file_size(16 * 1024))
    _assert_failed_cleanly(out, failed.returncode, failed.stdout + failed.stderr, "File too large")
    assert (out / "run.json").exists()

    resumed = _hoigen(args)
    assert resumed.returncode == 0, resumed.stderr
    _assert_same_run(out, reference)


@pytest.fixture
def tiny_tmpfs(tmp_path):
    """A 32 KiB tmpfs (needs root and mount rights: skipped otherwise)."""
    mount_point = tmp_path / "tmpfs"
    mount_point.mkdir()
    if shutil.which("mount") is None or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root and mount(8)")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=32k", "tmpfs", str(mount_point)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=False)


def test_full_disk_fails_cleanly(config_file, tiny_tmpfs):
    out = tiny_tmpfs / "run"
    result = _cli(_args(config_file, out))
    _assert_failed_cleanly(out, result.exit_code, result.output, "the disk is full")


# --------------------------------------------------------------------------------------------------------------
# object folders


def test_folder_with_a_bad_mesh_skips_and_reports_its_samples(config_file, tmp_path):
    objects = tmp_path / "objects"
    objects.mkdir()
    trimesh.creation.cylinder(radius=0.03, height=0.10, sections=24).export(objects / "tin_a.ply")
    trimesh.creation.cylinder(radius=0.035, height=0.12, sections=24).export(objects / "tin_b.ply")
    (objects / "broken.obj").write_bytes(b"\x00\x01 this is not a mesh \xff\xfe")
    out = tmp_path / "run"
    # ids sort as broken, tin_a, tin_b: sample i uses object i mod 3
    result = _hoigen(_args(config_file, out, objects=str(objects), n=3), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "2 samples" in result.stdout and "1 skipped" in result.stdout, result.stdout

    manifest = _check_run(out, 3)
    assert manifest["samples"] == 2
    [skip] = manifest["skipped"]
    assert skip["index"] == 0 and skip["object"] == "broken" and "broken.obj" in skip["reason"]
    assert "skipping sample 0 (object broken, seed 0)" in result.stderr
    metas = _metas(out)
    assert sorted(metas) == ["s00000001", "s00000002"]
    assert [meta["object"]["id"] for meta in metas.values()] == ["tin_a", "tin_b"]


@pytest.mark.ycb
def test_ycb_folder_run(config_file, tmp_path):
    if not YCB_DIR.is_dir():
        pytest.skip(f"YCB samples not found at {YCB_DIR}")
    objects = tmp_path / "ycb"
    shutil.copytree(YCB_DIR, objects)
    out = tmp_path / "run"
    result = _hoigen(_args(config_file, out, "--workers", "2", objects=str(objects), n=3))
    assert result.returncode == 0, result.stderr
    manifest = _check_run(out, 3)
    ids = ["013_apple", "025_mug", "031_spoon"]
    for skip in manifest["skipped"]:  # only a failed grasp may skip a sample (a missing texture is no reason)
        assert skip["object"] == ids[skip["index"]] and "quality gate" in skip["reason"], skip
    metas = _metas(out)
    assert metas, "no YCB sample was made"
    for key, meta in metas.items():
        assert meta["object"]["id"] == ids[int(key[1:]) % 3]
    if "s00000001" in metas:  # the mug's missing texture is reported, not fatal
        assert metas["s00000001"]["object"]["info"]["texture_missing"]
        assert "texture_map.png" in result.stderr
