"""``hoigen synth``: plan shards, produce the missing ones in parallel, write the manifest.

The shard is the unit of work: shard ``k`` holds samples ``k*S .. (k+1)*S - 1`` (S = ``samples_per_shard``), each
sample a pure function of (config, index), so any executor and any number of workers produce the same bytes.
Rerunning the same command (or ``--resume``) keeps finished shards (tar + record present and matching) and redoes
the rest; stray partial files of a killed run are removed. ``run.json`` pins the run's config: an output folder
made by a different config is refused rather than mixed.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

from hoigen.config import RunConfig
from hoigen.datasets.shards import (
    PARTIAL_SUFFIX,
    SCHEMA_VERSION,
    SHARD_PATTERN,
    file_sha256,
    sample_key,
    sequence_members,
    write_json_atomic,
    write_shard,
)

logger = logging.getLogger(__name__)

# Single-threaded numerics in workers: results must not depend on how many threads a BLAS happens to use.
_THREAD_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
PACKAGES = (
    "numpy",
    "scipy",
    "trimesh",
    "pyrender",
    "PyOpenGL",
    "opencv-python-headless",
    "webdataset",
    "smplx",
    "torch",
)


@dataclass(frozen=True)
class SynthJob:
    """What to produce.

    Attributes:
        config: the run config; out: output folder; n: number of samples (grasp sequences);
        samples_per_shard: samples per shard (the unit of work and of resume).
    """

    config: RunConfig
    out: Path
    n: int
    samples_per_shard: int = 64

    def __post_init__(self):
        if self.n < 1:
            raise ValueError(f"--n must be >= 1, got {self.n}")
        if self.samples_per_shard < 1:
            raise ValueError(f"samples per shard must be >= 1, got {self.samples_per_shard}")

    @property
    def num_shards(self) -> int:
        return math.ceil(self.n / self.samples_per_shard)

    def shard_indices(self, shard: int) -> range:
        start = shard * self.samples_per_shard
        return range(start, min(self.n, start + self.samples_per_shard))

    def shard_path(self, shard: int) -> Path:
        return self.out / "shards" / (SHARD_PATTERN % shard)

    def record_path(self, shard: int) -> Path:
        return self.out / "shards" / ((SHARD_PATTERN % shard)[: -len(".tar")] + ".json")

    def run_record(self) -> dict:
        return {
            "schema": SCHEMA_VERSION,
            "config": self.config.to_dict(),
            "n": self.n,
            "samples_per_shard": self.samples_per_shard,
        }


# ---------------------------------------------------------------------------------------------------------------
# worker side


class ShardProducer:
    """Everything one worker process needs, built once and reused for every shard it makes."""

    def __init__(self, job: SynthJob):
        from hoigen.hands import load_hand
        from hoigen.objects import open_source
        from hoigen.synth.recipe import SequencePlanner

        self.job = job
        cfg = job.config
        self.source = open_source(cfg.objects.source, cfg.objects.units, cfg.objects.categories)
        self.hand = load_hand(cfg.hand.model, cfg.hand.mano or None)
        self.planner = SequencePlanner(cfg, self.source, self.hand)
        self._renderer = None

    def renderer(self, intrinsics):
        from hoigen.render.renderer import Renderer

        if self._renderer is None:
            self._renderer = Renderer(intrinsics, self.job.config.render)
        return self._renderer

    def sample(self, index: int):
        """(members, timings) of sample ``index``, or (None, skip record) when it cannot be made."""
        from hoigen.grasping import GraspError
        from hoigen.objects import ObjectError

        t0 = time.perf_counter()
        try:
            plan = self.planner.plan(index)
        except (GraspError, ObjectError) as exc:
            object_id = getattr(self.source, "entries", None)
            name = (
                object_id[index % len(object_id)].id if object_id else f"builtin #{index % len(self.source)}"
            )
            logger.warning(
                "skipping sample %d (object %s, seed %d): %s", index, name, self.job.config.seed, exc
            )
            return None, {"index": index, "object": name, "reason": str(exc)}
        t1 = time.perf_counter()
        seq = self.renderer(plan.camera.intrinsics).render_sequence(
            plan.object, self.hand, plan.trajectory, plan.camera.T_cam_world, plan.render_rng
        )
        t2 = time.perf_counter()
        members = sequence_members(seq, sample_meta(self.job.config, plan, self.hand, seq))
        t3 = time.perf_counter()
        timings = {"grasp": t1 - t0, "render": t2 - t1, "encode": t3 - t2}
        return members, {
            "seconds": timings,
            "grasp_candidates": plan.grasp.attempts,
            "grasp_passed": plan.grasp.passed,
        }

    def produce(self, shard: int, progress=None) -> dict:
        """Make shard ``shard`` (tar + record) and return its record."""
        job = self.job
        samples, skipped = [], []
        timings = {"grasp": 0.0, "render": 0.0, "encode": 0.0, "write": 0.0}
        candidates = passed = 0
        for index in job.shard_indices(shard):
            members, info = self.sample(index)
            candidates += info.get("grasp_candidates", 0)
            if members is None:
                skipped.append(info)
            else:
                samples.append((sample_key(index), members))
                passed += info["grasp_passed"]
                for k, v in info["seconds"].items():
                    timings[k] += v
            if progress is not None:
                progress.put(1)
        t0 = time.perf_counter()
        stats = write_shard(job.shard_path(shard), samples)
        timings["write"] = time.perf_counter() - t0
        record = {
            "shard": shard,
            "name": job.shard_path(shard).name,
            "samples": len(samples),
            "first_index": job.shard_indices(shard).start,
            "indices": [int(k[1:]) for k, _ in samples],
            "skipped": skipped,
            "frames": len(samples) * job.config.trajectory.total_frames,
            "grasp_candidates": candidates,
            "grasp_passed": passed,
            "seconds": timings,
            **stats,
        }
        write_json_atomic(job.record_path(shard), record)
        return record


def sample_meta(config: RunConfig, plan, hand, seq) -> dict:
    """``meta.json`` of one sample (SPEC §3)."""
    obj = plan.object
    return {
        "schema": SCHEMA_VERSION,
        "seed": config.seed,
        "index": plan.index,
        "key": sample_key(plan.index),
        "object": obj.metadata(),
        "hand": {**hand.metadata(), "betas": plan.grasp.params.betas[0].tolist()},
        "camera": {**plan.camera.intrinsics.to_dict(), "T_cam_world": plan.camera.T_cam_world.tolist()},
        "grasp": {
            "method": plan.grasp.method,
            "metrics": plan.grasp.metrics,
            "approach": plan.grasp.approach,
        },
        "trajectory": {"t": plan.trajectory.t.tolist(), "phase": plan.trajectory.phase.tolist()},
        "appearance": {"model": "render", **seq.meta["appearance"]},
        "object_albedo": seq.meta["object_albedo"],
        "depth_scale": seq.meta["depth_scale"],
        "instances": seq.meta["instances"],
        "frames": [f.labels for f in seq.frames],
        "config": config.to_dict(),
    }


_PRODUCER: ShardProducer | None = None
_PROGRESS = None


def _worker_init(job: SynthJob, progress) -> None:
    global _PRODUCER, _PROGRESS
    os.environ.update(_THREAD_ENV)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    _PRODUCER = ShardProducer(job)
    _PROGRESS = progress


def _worker_produce(shard: int) -> dict:
    return _PRODUCER.produce(shard, _PROGRESS)


# ---------------------------------------------------------------------------------------------------------------
# driver side


def prepare_output(job: SynthJob) -> None:
    """Create the folders, pin the run config in ``run.json`` (refusing a folder made by another config) and
    remove partial files a killed run left behind."""
    shards_dir = job.out / "shards"
    try:
        shards_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OSError(exc.errno, f"cannot create the output folder {job.out}: {exc.strerror or exc}") from exc
    if not os.access(shards_dir, os.W_OK):
        raise PermissionError(f"the output folder {shards_dir} is not writable")
    record = job.run_record()
    run_file = job.out / "run.json"
    if run_file.exists():
        import json

        existing = json.loads(run_file.read_text())
        if existing != json.loads(json.dumps(record)):
            raise ValueError(
                f"{job.out} holds a run with a different configuration (see {run_file}); use a new --out, or "
                "rerun with exactly the same options to resume it"
            )
    else:
        write_json_atomic(run_file, record)
    for stray in list(shards_dir.glob("*" + PARTIAL_SUFFIX)):
        logger.info("removing partial file of an interrupted run: %s", stray.name)
        stray.unlink()


def finished_shards(job: SynthJob) -> dict[int, dict]:
    """Records of shards that are complete: record present and the tar's size and hash match it."""
    import json

    done = {}
    for shard in range(job.num_shards):
        rec_path, tar_path = job.record_path(shard), job.shard_path(shard)
        if not rec_path.exists() or not tar_path.exists():
            continue
        try:
            record = json.loads(rec_path.read_text())
        except (OSError, ValueError):
            continue
        if record.get("bytes") == tar_path.stat().st_size and record.get("sha256") == file_sha256(tar_path):
            done[shard] = record
        else:
            logger.warning("shard %s does not match its record; it will be made again", tar_path.name)
    return done


def _package_versions() -> dict:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def write_manifest(job: SynthJob, records: dict[int, dict]) -> dict:
    from hoigen import __version__

    shards = [records[k] for k in sorted(records)]
    manifest = {
        "schema": SCHEMA_VERSION,
        "hoigen_version": __version__,
        "seed": job.config.seed,
        "n": job.n,
        "samples_per_shard": job.samples_per_shard,
        "complete": len(shards) == job.num_shards,
        "samples": sum(r["samples"] for r in shards),
        "frames_per_sample": job.config.trajectory.total_frames,
        "skipped": [s for r in shards for s in r["skipped"]],
        "shards": [{k: r[k] for k in ("name", "samples", "first_index", "bytes", "sha256")} for r in shards],
        "packages": _package_versions(),
        "config": job.config.to_dict(),
    }
    write_json_atomic(job.out / "manifest.json", manifest)
    return manifest


@dataclass
class SynthSummary:
    samples: int
    skipped: int
    shards_made: int
    shards_kept: int
    seconds: float
    bytes: int
    grasp_candidates: int = 0
    grasp_passed: int = 0
    stage_seconds: dict = dataclasses.field(default_factory=dict)


def run_synth(
    job: SynthJob,
    workers: int = 1,
    executor: str = "local",
    shard_range: tuple[int, int] | None = None,
    ray_address: str | None = None,
    recycle_after: int = 50,
    progress: bool = True,
) -> SynthSummary:
    """Produce the shards of ``job`` that are missing (within ``shard_range`` [start, stop) if given)."""
    if workers < 1:
        raise ValueError(f"--workers must be >= 1, got {workers}")
    if executor not in ("local", "ray"):
        raise ValueError(f"--executor must be 'local' or 'ray', got {executor!r}")
    start, stop = shard_range or (0, job.num_shards)
    if not 0 <= start < stop <= job.num_shards:
        raise ValueError(f"--shards {start}:{stop} is outside the run's 0:{job.num_shards} shards")
    _validate_inputs(job)
    prepare_output(job)
    done = finished_shards(job)
    todo = [k for k in range(start, stop) if k not in done]
    kept = len([k for k in range(start, stop) if k in done])
    if kept:
        logger.info("keeping %d finished shards", kept)
    total_samples = sum(len(job.shard_indices(k)) for k in todo)
    t0 = time.perf_counter()
    made: dict[int, dict] = {}
    if todo:
        runner = _run_ray if executor == "ray" else _run_local
        for record in runner(job, todo, workers, total_samples, progress, recycle_after, ray_address):
            made[record["shard"]] = record
    elapsed = time.perf_counter() - t0
    records = {**done, **made}
    write_manifest(job, records)
    stage = {}
    for r in made.values():
        for k, v in r["seconds"].items():
            stage[k] = stage.get(k, 0.0) + v
    return SynthSummary(
        samples=sum(r["samples"] for r in made.values()),
        skipped=sum(len(r["skipped"]) for r in made.values()),
        shards_made=len(made),
        shards_kept=kept,
        seconds=elapsed,
        bytes=sum(r["bytes"] for r in made.values()),
        grasp_candidates=sum(r.get("grasp_candidates", 0) for r in made.values()),
        grasp_passed=sum(r.get("grasp_passed", 0) for r in made.values()),
        stage_seconds=stage,
    )


def _validate_inputs(job: SynthJob) -> None:
    """Fail before any work on a bad object source, hand or GL setup (workers would fail one by one)."""
    from hoigen.grasping.grabnet_data import grasp_sampler_factory
    from hoigen.hands import load_hand
    from hoigen.objects import open_source

    cfg = job.config
    open_source(cfg.objects.source, cfg.objects.units, cfg.objects.categories)
    grasp_sampler_factory(cfg.grasp, load_hand(cfg.hand.model, cfg.hand.mano or None))
    from hoigen.render.gl import select_platform

    select_platform()


def _progress_bar(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(
        total=total, unit="sample", desc="synth", dynamic_ncols=True, disable=not enabled, smoothing=0.1
    )


def _run_local(job, todo, workers, total, progress, recycle_after, ray_address):
    import multiprocessing as mp
    import queue

    ctx = mp.get_context("spawn")
    ticks = ctx.Queue()
    env_backup = {k: os.environ.get(k) for k in _THREAD_ENV}
    os.environ.update(_THREAD_ENV)  # inherited by the spawned interpreters before numpy loads there
    try:
        with (
            ctx.Pool(
                processes=min(workers, len(todo)),
                initializer=_worker_init,
                initargs=(job, ticks),
                maxtasksperchild=recycle_after,
            ) as pool,
            _progress_bar(total, progress) as bar,
        ):
            pending = pool.imap_unordered(_worker_produce, todo)
            remaining = len(todo)
            while remaining:
                try:
                    record = pending.next(timeout=0.2)
                except mp.TimeoutError:
                    record = None
                while True:
                    try:
                        bar.update(ticks.get_nowait())
                    except queue.Empty:
                        break
                if record is not None:
                    remaining -= 1
                    yield record
    finally:
        for k, v in env_backup.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _run_ray(job, todo, workers, total, progress, recycle_after, ray_address):
    from hoigen.synth.ray_executor import run_ray

    yield from run_ray(job, todo, workers, total, progress, ray_address, recycle_after=recycle_after)
