"""The Ray executor: same bytes as the local one (whole runs and ``--shards`` splits), worker errors raised in
the driver, Ray kept out of ``import hoigen``, and a clear error without Ray.

Each Ray run starts (and stops) its own small local instance, so this file takes about a minute on two cores.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from hoigen.config import RunConfig
from hoigen.synth.run import SynthJob, run_synth

N, PER_SHARD = 4, 2  # two shards


def _needs_ray():
    return pytest.importorskip("ray", reason="ray is not installed (the ray extra)")


@pytest.fixture(scope="module")
def renderer_available():
    for module in ("pyrender", "cv2", "webdataset"):
        # find_spec, not import: OpenGL must be first imported after hoigen chose the GL platform
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed (the render and data extras)")
    from hoigen.render import gl

    try:
        gl.select_platform()
    except gl.RenderError as exc:
        pytest.skip(f"no headless OpenGL here: {exc}")


def _config() -> RunConfig:
    return RunConfig().replace(
        camera={"preset": "square-96"}, trajectory={"frames": 2}, grasp={"candidates": 2, "max_attempts": 40}
    )


def _job(out: Path, config: RunConfig | None = None) -> SynthJob:
    return SynthJob(config or _config(), out, n=N, samples_per_shard=PER_SHARD)


def _shard_hashes(out: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted((out / "shards").glob("*.tar"))
    }


def _manifest(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())


@pytest.fixture(scope="module")
def reference(renderer_available, tmp_path_factory) -> Path:
    """One single-worker run of the local executor: the ground truth."""
    _needs_ray()  # no point in the reference run without ray
    out = tmp_path_factory.mktemp("synth-ray") / "local"
    summary = run_synth(_job(out), workers=1, executor="local", progress=False)
    assert summary.shards_made == 2 and summary.samples == N
    return out


# --------------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_ray_executor_matches_local_executor(reference, tmp_path):
    ray = _needs_ray()
    out = tmp_path / "ray"
    summary = run_synth(_job(out), workers=2, executor="ray", progress=False)
    assert summary.shards_made == 2 and summary.samples == N
    assert not ray.is_initialized(), "the local Ray instance the run started must be shut down"

    expected = _shard_hashes(reference)
    assert list(expected) == ["hoigen-000000.tar", "hoigen-000001.tar"]
    assert _shard_hashes(out) == expected
    local, remote = _manifest(reference), _manifest(out)
    assert remote["complete"] and remote["samples"] == N
    for key in ("shards", "samples", "skipped", "complete", "config"):
        assert remote[key] == local[key], key
    assert [s["sha256"] for s in remote["shards"]] == list(expected.values())
    assert not list((out / "shards").glob("*.partial*"))


@pytest.mark.slow
def test_ray_executor_shard_ranges_match_local_executor(reference, tmp_path, monkeypatch):
    _needs_ray()
    # a relative --out: the workers must write where the driver means, whatever their working directory
    monkeypatch.chdir(tmp_path)
    out = Path("split")

    first = run_synth(_job(out), workers=2, executor="ray", shard_range=(0, 1), progress=False)
    assert first.shards_made == 1 and first.samples == PER_SHARD
    assert list(_shard_hashes(out)) == ["hoigen-000000.tar"]
    partial = _manifest(out)
    assert not partial["complete"] and [s["name"] for s in partial["shards"]] == ["hoigen-000000.tar"]

    second = run_synth(_job(out), workers=2, executor="ray", shard_range=(1, 2), progress=False)
    assert second.shards_made == 1 and second.shards_kept == 0

    assert _shard_hashes(tmp_path / "split") == _shard_hashes(reference)
    merged, local = _manifest(out), _manifest(reference)
    assert merged["complete"] and merged["shards"] == local["shards"]


@pytest.mark.slow
def test_worker_error_is_raised_in_the_driver(renderer_available, tmp_path):
    ray = _needs_ray()
    from hoigen.synth.ray_executor import run_ray

    # run_synth would refuse the missing folder before starting Ray; call the executor directly so the error
    # happens inside a worker
    missing = tmp_path / "no-such-objects"
    job = _job(tmp_path / "out", _config().replace(objects={"source": str(missing)}))
    (tmp_path / "out" / "shards").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="no-such-objects"):
        list(run_ray(job, [0, 1], 2, N, False))
    assert not ray.is_initialized()
    assert not list((tmp_path / "out" / "shards").iterdir())


def test_ray_is_not_imported_by_hoigen():
    code = (
        "import sys, hoigen, hoigen.cli, hoigen.synth.run, hoigen.synth.ray_executor\n"
        "assert 'ray' not in sys.modules, 'ray was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_missing_ray_is_a_clear_error(monkeypatch, tmp_path):
    from hoigen.synth.ray_executor import run_ray

    monkeypatch.setitem(sys.modules, "ray", None)  # makes `import ray` raise ImportError
    with pytest.raises(ImportError, match=r"pip install 'hoigen\[ray\]'"):
        next(run_ray(_job(tmp_path), [0], 1, PER_SHARD, False))
