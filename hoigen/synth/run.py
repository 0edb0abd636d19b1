"""``hoigen synth``: plan shards, produce the missing ones in parallel, write the manifest.

The shard is the unit of work: shard ``k`` holds samples ``k*S .. (k+1)*S - 1`` (S = ``samples_per_shard``), each
sample a pure function of (config, index), so any executor and any number of workers produce the same bytes.
Rerunning the same command (or ``--resume``) keeps finished shards (tar + record present and matching) and redoes
the rest; stray partial files of a killed run are removed. ``run.json`` pins the run's config and the identity of
its input files (:mod:`hoigen.synth.lock`): an output folder made by a different config or from changed inputs is
refused rather than mixed, naming what differs — unless that run finished no shard, in which case the new config
replaces the pin.

Several processes may share one output folder (``--shards I:J`` ranges, Ray workers on a shared filesystem): each
claims its range under the folder lock, an overlapping or differently configured live run is refused, and the
manifest is rebuilt from every valid shard record under the lock whenever a process finishes, so the last one to
finish writes a complete manifest whatever the order. SIGTERM is handled like Ctrl-C: workers stop, finished
shards are kept, and rerunning the same command resumes byte-identically.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.metadata
import json
import logging
import math
import os
import re
import signal
import threading
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

from hoigen.config import RunConfig
from hoigen.datasets.meshes import file_records
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
from hoigen.synth.lock import (
    RunClaim,
    claim_shards,
    claimed_by_others,
    config_digest,
    describe_differences,
    folder_lock,
    pin_inputs,
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

    def run_record(self, inputs: dict | None = None) -> dict:
        """What ``run.json`` pins: config, n, shard size and the identity of the input files (``pin_inputs``)."""
        record = {
            "schema": SCHEMA_VERSION,
            "config": self.config.to_dict(),
            "n": self.n,
            "samples_per_shard": self.samples_per_shard,
        }
        if inputs:
            record["inputs"] = inputs
        return record


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
        self.hand = load_hand(cfg.hand.model, cfg.hand.mano or None, cfg.hand.forearm)
        self.planner = SequencePlanner(cfg, self.source, self.hand)
        self.real = None  # dexycb:/ho3d: runs: real frames, conditions rendered from their ground truth
        if getattr(self.source, "is_real", False):
            from hoigen.synth.real import RealSampler

            self.real = RealSampler(cfg, self.hand)
        self._renderer = None
        self._mesh_refs: dict[int, tuple] = {}  # id(object) -> (object, mesh store reference)
        self._shard_meshes: set[str] = set()  # mesh store files used by the shard being made

    def renderer(self, intrinsics):
        from hoigen.render.renderer import Renderer

        if self._renderer is None:
            self._renderer = Renderer(intrinsics, self.job.config.render)
        return self._renderer

    def sample(self, index: int):
        """(members, timings) of sample ``index``, or (None, skip record) when it cannot be made."""
        from hoigen.grasping import GraspError
        from hoigen.objects import ObjectError

        if self.real is not None:
            return self.real.sample(index, self.mesh_ref)
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
        mesh = self.mesh_ref(plan.object)
        members = sequence_members(seq, sample_meta(self.job.config, plan, self.hand, seq, mesh))
        t3 = time.perf_counter()
        timings = {"grasp": t1 - t0, "render": t2 - t1, "encode": t3 - t2}
        return members, {
            "seconds": timings,
            "grasp_candidates": plan.grasp.attempts,
            "grasp_passed": plan.grasp.passed,
        }

    def mesh_ref(self, obj) -> dict:
        """Store ``obj``'s canonical mesh in the output folder (once) and return its meta reference."""
        from hoigen.datasets.meshes import store_files, store_mesh

        cached = self._mesh_refs.get(id(obj))
        if cached is None or cached[0] is not obj:
            cached = (obj, store_mesh(self.job.out, obj.mesh))
            self._mesh_refs[id(obj)] = cached
            if len(self._mesh_refs) > 16:
                self._mesh_refs.pop(next(iter(self._mesh_refs)))
        self._shard_meshes.update(store_files(cached[1]))
        return cached[1]

    def produce(self, shard: int, progress=None) -> dict:
        """Make shard ``shard`` (tar + record) and return its record."""
        job = self.job
        self._shard_meshes = set()
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
            "member_crc32": member_checksums(samples),
            "meshes": sorted(self._shard_meshes),
            **stats,
        }
        write_json_atomic(job.record_path(shard), record)
        return record


def member_checksums(samples: list[tuple[str, dict[str, bytes]]]) -> dict[str, str]:
    """CRC-32 (8 hex digits) of every tar member ``<key>.<suffix>``: lets a verifier name the member that changed."""
    return {
        f"{key}.{suffix}": f"{zlib.crc32(data):08x}"
        for key, members in samples
        for suffix, data in members.items()
    }


def sample_meta(config: RunConfig, plan, hand, seq, mesh: dict | None = None) -> dict:
    """``meta.json`` of one sample (SPEC §3); ``mesh`` is the object's mesh store reference."""
    obj = plan.object
    return {
        "schema": SCHEMA_VERSION,
        "seed": config.seed,
        "index": plan.index,
        "key": sample_key(plan.index),
        "object": {**obj.metadata(), **({"mesh": mesh} if mesh else {})},
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


_PARTIAL_SHARD = re.compile(r"^hoigen-(\d+)\.")


def prepare_output(
    job: SynthJob, shard_range: tuple[int, int] | None = None, inputs: dict | None = None
) -> RunClaim:
    """Create the folders and, under the folder lock: claim shards ``shard_range`` for this process (refusing a
    live run with overlapping shards or another config), check or write the pin in ``run.json`` and remove the
    partial files a killed run left behind (not those of live runs).

    Returns the claim; release it (:meth:`RunClaim.release`) when the run ends.
    """
    shards_dir = job.out / "shards"
    try:
        shards_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OSError(exc.errno, f"cannot create the output folder {job.out}: {exc.strerror or exc}") from exc
    if not os.access(shards_dir, os.W_OK):
        raise PermissionError(f"the output folder {shards_dir} is not writable")
    start, stop = shard_range or (0, job.num_shards)
    record = json.loads(json.dumps(job.run_record(inputs)))
    with folder_lock(job.out):
        claim = claim_shards(job.out, start, stop, config_digest(record))
        try:
            _check_pin(job, record)
            busy = claimed_by_others(job.out, claim)
            for stray in sorted(job.out.glob("*" + PARTIAL_SUFFIX)):  # written only under the lock
                stray.unlink(missing_ok=True)
            for stray in sorted(shards_dir.glob("*" + PARTIAL_SUFFIX)):
                match = _PARTIAL_SHARD.match(stray.name)
                if match and int(match.group(1)) in busy:
                    continue  # another live run is writing it
                logger.info("removing partial file of an interrupted run: %s", stray.name)
                stray.unlink(missing_ok=True)
        except BaseException:
            claim.release()
            raise
    return claim


def _check_pin(job: SynthJob, record: dict) -> None:
    """Compare ``record`` with the pin in ``run.json``; write the pin when there is none, or when the pinned run
    finished no shard. Raises ValueError naming the differing keys otherwise."""
    run_file = job.out / "run.json"
    if run_file.exists():
        try:
            existing = json.loads(run_file.read_text())
        except (OSError, ValueError):
            existing = {"unreadable run.json": True}
        if existing == record:
            return
        if "inputs" not in existing and existing == {k: v for k, v in record.items() if k != "inputs"}:
            logger.warning("%s was pinned without input checksums (an older hoigen); pinning them now", run_file)
            write_json_atomic(run_file, record)
            return
        differences = describe_differences(existing, record)
        finished = _count_finished(job.out)
        if finished:
            raise ValueError(
                f"{job.out} holds {finished} finished shard(s) of a run with a different configuration or "
                f"inputs (see {run_file}): "
                + "; ".join(differences)
                + ". Use a new --out, or rerun with exactly "
                "the same options and input files to resume it"
            )
        logger.warning(
            "%s: the pinned run finished no shard; replacing its configuration (%s)",
            job.out,
            "; ".join(differences),
        )
    write_json_atomic(run_file, record)


def _count_finished(out: Path) -> int:
    """Shards with a record whose tar is present with the recorded size (any run, any shard numbering)."""
    count = 0
    for rec_path in (out / "shards").glob("hoigen-*.json"):
        try:
            record = json.loads(rec_path.read_text())
            tar = rec_path.with_suffix(".tar")
            count += int(tar.is_file() and record.get("bytes") == tar.stat().st_size)
        except (OSError, ValueError, AttributeError):
            continue
    return count


def finished_shards(job: SynthJob, shards: range | None = None, full: bool = True) -> dict[int, dict]:
    """Records of complete shards (of ``shards``, default all): record present, tar present with the recorded
    size and (``full``) sha256. Without ``full`` the hash is not recomputed (other processes' shards, read at the
    end of a run; readers verify hashes themselves)."""
    done = {}
    for shard in shards if shards is not None else range(job.num_shards):
        rec_path, tar_path = job.record_path(shard), job.shard_path(shard)
        if not rec_path.exists() or not tar_path.exists():
            continue
        try:
            record = json.loads(rec_path.read_text())
            size = tar_path.stat().st_size
        except (OSError, ValueError):
            continue
        if not isinstance(record, dict) or record.get("shard") != shard:
            continue
        missing = [m for m in record.get("meshes", ()) if not (job.out / m).is_file()]
        if missing and full:  # its objects' meshes left the mesh store: remake it, which stores them again
            logger.warning(
                "shard %s: %d stored mesh file(s) missing (%s); it will be made again",
                tar_path.name,
                len(missing),
                missing[0],
            )
            continue
        if record.get("bytes") == size and (not full or record.get("sha256") == file_sha256(tar_path)):
            done[shard] = record
        elif full:
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
    """Write ``manifest.json`` listing ``records`` (all valid shard records; call under the folder lock).
    An identical manifest is left untouched."""
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
        "meshes": file_records(job.out, [m for r in shards for m in r.get("meshes", ())]),
    }
    path = job.out / "manifest.json"
    try:
        unchanged = json.loads(path.read_text()) == json.loads(json.dumps(manifest))
    except (OSError, ValueError):
        unchanged = False
    if not unchanged:
        write_json_atomic(path, manifest)
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
    on_shard=None,
) -> SynthSummary:
    """Produce the shards of ``job`` that are missing (within ``shard_range`` [start, stop) if given).

    ``on_shard(record)`` is called in the driver as each shard is finished (the photo/video stage of ``synth
    --photo`` starts on it while later shards still render); kept shards are passed too, first.
    """
    if workers < 1:
        raise ValueError(f"--workers must be >= 1, got {workers}")
    if executor not in ("local", "ray"):
        raise ValueError(f"--executor must be 'local' or 'ray', got {executor!r}")
    start, stop = shard_range or (0, job.num_shards)
    if not 0 <= start < stop <= job.num_shards:
        raise ValueError(f"--shards {start}:{stop} is outside the run's 0:{job.num_shards} shards")
    _validate_inputs(job)
    check_memory(job, workers if executor == "local" else 1)
    inputs = pin_inputs(job.config)
    claim = prepare_output(job, (start, stop), inputs)
    made: dict[int, dict] = {}
    try:
        with _sigterm_as_interrupt():
            done = finished_shards(job, range(start, stop))
            todo = [k for k in range(start, stop) if k not in done]
            kept = len(done)
            if kept:
                logger.info("keeping %d finished shards", kept)
            if on_shard is not None:
                for k in sorted(done):
                    on_shard(done[k])
            total_samples = sum(len(job.shard_indices(k)) for k in todo)
            t0 = time.perf_counter()
            if todo:
                runner = _run_ray if executor == "ray" else _run_local
                for record in runner(job, todo, workers, total_samples, progress, recycle_after, ray_address):
                    made[record["shard"]] = record
                    if on_shard is not None:
                        on_shard(record)
            elapsed = time.perf_counter() - t0
            with folder_lock(job.out):
                # every valid record, also those other processes finished meanwhile (their --shards ranges)
                records = {**finished_shards(job, full=False), **done, **made}
                write_manifest(job, records)
                claim.release()
    finally:
        claim.release()
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


class SynthInterrupted(KeyboardInterrupt):
    """The run was stopped by a signal (SIGTERM, or Ctrl-C's SIGINT); finished shards are kept."""

    def __init__(self, signal_name: str = "SIGINT"):
        super().__init__(signal_name)
        self.signal_name = signal_name


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """Turn SIGTERM (SLURM time limits, ``kill``) into :class:`SynthInterrupted` in the driver, so the pool is
    terminated and every resource released as for Ctrl-C. Later SIGTERMs are ignored while cleaning up."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise SynthInterrupted(signal.Signals(signum).name)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


MEMORY_LIMIT_ENV = "HOIGEN_MEMORY_LIMIT_GB"
# Measured (CPU rendering, 1 worker): peak RSS 0.19 GB at 512x512 x 8 frames, 0.47 GB at 1024x1024 x 4 frames;
# the constants below over-estimate both by about a third.
_WORKER_BASE_BYTES = 300 * 2**20  # interpreter, numpy/trimesh/pyrender, GL context, one object and its SDF
_BYTES_PER_PIXEL = 120  # render buffers: colour, depth, ids, amodal passes and their float conversions
_BYTES_PER_PIXEL_FRAME = 48  # every frame's images (24 B/px raw), their PNG bytes and per-frame labels


def estimate_worker_memory(config: RunConfig) -> int:
    """Rough peak bytes one worker needs for ``config`` (image size x frames; see the constants above)."""
    from hoigen.geometry.camera import intrinsics_preset

    intrinsics = intrinsics_preset(config.camera.preset)
    pixels = int(intrinsics.width) * int(intrinsics.height)
    frames = config.trajectory.total_frames
    return _WORKER_BASE_BYTES + pixels * (_BYTES_PER_PIXEL + frames * _BYTES_PER_PIXEL_FRAME)


def available_memory() -> tuple[int, str]:
    """(bytes, where the number comes from): ``$HOIGEN_MEMORY_LIMIT_GB`` if set, else the smaller of the
    cgroup limit and the system's available memory."""
    value = os.environ.get(MEMORY_LIMIT_ENV, "")
    if value:
        try:
            limit = float(value)
        except ValueError:
            limit = float("nan")
        if not math.isfinite(limit) or limit <= 0:
            raise ValueError(f"{MEMORY_LIMIT_ENV} must be a positive number of GB, got {value!r}")
        return int(limit * 2**30), MEMORY_LIMIT_ENV
    found = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found.append((int(line.split()[1]) * 1024, "available memory"))
    except (OSError, ValueError, IndexError):
        pass
    try:
        text = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if text != "max":
            found.append((int(text), "the cgroup memory limit"))
    except (OSError, ValueError):
        pass
    if not found:
        try:
            found.append((os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"), "physical memory"))
        except (ValueError, OSError):
            return 2**62, "unknown"
    return min(found)


def check_memory(job: SynthJob, workers: int) -> None:
    """Refuse, before any work, a run whose workers would need more memory than there is (with the numbers)."""
    per_worker = estimate_worker_memory(job.config)
    workers = max(1, min(workers, job.num_shards))
    need = per_worker * workers
    limit, where = available_memory()
    if need > limit:
        from hoigen.geometry.camera import intrinsics_preset

        intrinsics = intrinsics_preset(job.config.camera.preset)
        gb = 2**30
        raise ValueError(
            f"{intrinsics.width}x{intrinsics.height} images with {job.config.trajectory.total_frames} frames need "
            f"about {per_worker / gb:.1f} GB per worker, {need / gb:.1f} GB for {workers} worker(s), more than "
            f"the {limit / gb:.1f} GB of {where}; use a smaller --size or --frames or fewer --workers, or, if "
            f"the machine has the memory, raise the limit with {MEMORY_LIMIT_ENV}={math.ceil(need / gb)}"
        )


def _validate_inputs(job: SynthJob) -> None:
    """Fail before any work on a bad object source, hand or GL setup (workers would fail one by one)."""
    from hoigen.grasping.grabnet_data import grasp_sampler_factory
    from hoigen.hands import load_hand
    from hoigen.objects import open_source

    cfg = job.config
    source = open_source(cfg.objects.source, cfg.objects.units, cfg.objects.categories)
    _check_usable_object(source)
    hand = load_hand(cfg.hand.model, cfg.hand.mano or None, cfg.hand.forearm)
    grasp_sampler_factory(cfg.grasp, hand)
    if getattr(source, "is_real", False):
        from hoigen.synth.real import check_real_job

        check_real_job(job, hand)
    from hoigen.render.gl import select_platform

    select_platform()


def _check_usable_object(source) -> None:
    """Load folder objects until one works; none working is an error (not a run of empty shards)."""
    from hoigen.objects import ObjectError

    entries = getattr(source, "entries", None)
    if not entries or not hasattr(source, "load"):
        return
    reasons = []
    for k, entry in enumerate(entries):
        try:
            source.load(k)
            return
        except ObjectError as exc:
            reasons.append(f"  {entry.relpath}: {exc}")
    raise ObjectError(
        f"no usable object under {source.root}: all {len(entries)} mesh file(s) failed to load:\n"
        + "\n".join(reasons[:20])
        + ("\n  ..." if len(reasons) > 20 else "")
    )


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
