"""``hoigen generate``: the generative stage, shard → shard (SPEC §6).

The contract is synth's: the shard is the unit of work and of resume, output shards are written atomically under
the input's shard names, and the input folder is never modified. An output shard holds every member of its input
shard byte for byte, plus the generated members (``fNNN.photo.png``, ``video.mp4``, ``fNNN.video.png``); its
``meta.json`` is the input's with one key added, ``generation`` (``photo`` / ``video``: how the members were made).
Labels are never touched. A shard is finished when its record ``<shard>.json`` names the input shard's sha256, the
stage fingerprint (config + model files) and the output's size; rerunning the same command keeps finished shards
and redoes the rest, so a run killed at any moment and rerun gives the bytes of an uninterrupted run.

``OUT/generate.json`` pins the stage config and its input: rerunning with other options is refused, naming the
keys that differ. ``OUT/manifest.json`` is the input's manifest with the new shards' sizes and checksums and a
``generation`` section. Everything else of the input folder (e.g. stored object meshes) is copied over, so OUT is
a complete dataset.

Workers: one per visible GPU (``--executor ray``: one Ray actor per GPU); on a machine without a GPU one CPU worker,
with an estimate of how slow that is.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
import shutil
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from hoigen.datasets.shards import dumps_json, file_sha256, write_json_atomic, write_shard

logger = logging.getLogger(__name__)

STAGE_VERSION = "hoigen-generate/1"
PHOTO_BACKENDS = ("none", "hoidiffusion")
VIDEO_BACKENDS = ("none", "hvg3d")
_SKIP_COPY = {"shards", "manifest.json", "run.json", "generate.json", "preview"}


@dataclass(frozen=True)
class GenerateConfig:
    """What the generative stage makes and with which weights and options.

    Attributes:
        photo / video: backend names ('none', 'hoidiffusion' / 'none', 'hvg3d').
        hoidiffusion / sd: HOIDiffusion weights folder, optional separate SD-1.x folder (else env vars).
        photo_options: ``PhotoOptions`` fields as a dict. video_options: the video backend's keyword options.
        device / dtype: 'auto' = CUDA fp16 when visible, else CPU fp32.
    """

    photo: str = "none"
    video: str = "none"
    hoidiffusion: str | None = None
    sd: str | None = None
    photo_options: dict = field(default_factory=dict)
    cogvideox: str | None = None
    hvg3d: str | None = None
    video_options: dict = field(default_factory=dict)
    device: str = "auto"
    dtype: str = "auto"
    cpu_threads: int | None = None

    def __post_init__(self):
        if self.cpu_threads is not None and (not isinstance(self.cpu_threads, int) or self.cpu_threads < 1):
            raise ValueError(f"--cpu-threads must be an integer >= 1, got {self.cpu_threads!r}")
        if self.photo not in PHOTO_BACKENDS:
            raise ValueError(f"--photo must be one of {PHOTO_BACKENDS}, got {self.photo!r}")
        if self.video not in VIDEO_BACKENDS:
            raise ValueError(f"--video must be one of {VIDEO_BACKENDS}, got {self.video!r}")
        if self.photo == "none" and self.video == "none":
            raise ValueError("nothing to generate: give --photo hoidiffusion and/or --video hvg3d")
        if self.photo != "none":
            self.photo_opts()  # validates

    def photo_opts(self):
        from hoigen.diffusion.hoidiffusion.pipeline import PhotoOptions

        opts = dict(self.photo_options)
        for key in ("prompt_styles", "backgrounds"):
            if key in opts:
                opts[key] = tuple(opts[key])
        return PhotoOptions(**opts)

    def to_dict(self) -> dict:
        """The options that decide the output bytes (paths are recorded separately, by content hash)."""
        out = {"photo": self.photo, "video": self.video}
        if self.photo != "none":
            out["photo_options"] = self.photo_opts().to_dict()
        if self.video != "none":
            out["video_options"] = dict(sorted(self.video_options.items()))
        out["dtype"] = self.dtype
        if self.cpu_threads is not None:
            out["cpu_threads"] = self.cpu_threads
        return out


class GenerateError(ValueError):
    """The stage cannot run on this input (with what is wrong and how to fix it)."""


# ---------------------------------------------------------------------------------------------------------------
# tar IO


def read_samples(path: Path) -> list[tuple[str, dict[str, bytes]]]:
    """[(key, {suffix: bytes})] of a hoigen shard, in tar order; a damaged tar is an error naming the shard."""
    samples: dict[str, dict[str, bytes]] = {}
    try:
        with tarfile.open(path, mode="r:") as tar:
            for info in tar:
                if not info.isfile():
                    continue
                key, _, suffix = info.name.partition(".")
                fh = tar.extractfile(info)
                samples.setdefault(key, {})[suffix] = fh.read()
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise GenerateError(
            f"input shard {path} cannot be read ({exc}); regenerate it with hoigen synth"
        ) from exc
    for key, members in samples.items():
        if "meta.json" not in members:
            raise GenerateError(f"input shard {path}: sample {key} has no meta.json (truncated shard?)")
    return list(samples.items())


# ---------------------------------------------------------------------------------------------------------------
# the per-worker generator


class SampleGenerator:
    """The backends of one worker (built once), applied to whole shards."""

    def __init__(self, config: GenerateConfig, device: str | None = None):
        from hoigen.diffusion.common import require_diffusion, resolve_device, resolve_dtype

        require_diffusion()
        self.config = config
        self.device = resolve_device(device or config.device)
        self.dtype = resolve_dtype(config.dtype, self.device)
        # CPU kernels split reductions across threads: the same thread count gives the same pixels
        self.cpu_threads = config.cpu_threads if self.device == "cpu" else None
        self.photo = None
        self.video = None
        if config.photo == "hoidiffusion":
            from hoigen.diffusion.hoidiffusion.pipeline import HOIDiffusionPhotoBackend
            from hoigen.diffusion.hoidiffusion.weights import resolve_weights

            weights = resolve_weights(config.hoidiffusion, config.sd)
            opts = config.photo_opts()
            _check_photo_memory(weights, opts, self.device, self.dtype)
            self.photo = HOIDiffusionPhotoBackend(weights, opts, self.device, self.dtype)
        if config.video == "hvg3d":
            import torch

            from hoigen.diffusion.hvg3d.pipeline import HVG3DVideoBackend

            video_dtype = self.dtype
            if config.dtype in (None, "auto") and self.device.startswith("cuda"):
                video_dtype = torch.bfloat16  # CogVideoX-5B's precision (fp16 is the photo stage's default)
            self.video = HVG3DVideoBackend(
                config.cogvideox,
                config.hvg3d,
                device=self.device,
                dtype=video_dtype,
                **config.video_options,
            )

    def model_files(self) -> dict:
        files = {}
        if self.photo is not None:
            files["photo"] = dict(self.photo.weights.files)
        if self.video is not None:
            files["video"] = dict(self.video.files)
        return files

    def process(self, samples: list[tuple[str, dict[str, bytes]]], run_seed_of) -> list[tuple[str, dict]]:
        """Generated members added to each sample (input members untouched), meta gains ``generation``."""
        import torch

        previous = torch.get_num_threads()
        if self.cpu_threads is not None:
            torch.set_num_threads(self.cpu_threads)
        try:
            return self._process(samples, run_seed_of)
        finally:
            torch.set_num_threads(previous)

    def _process(self, samples, run_seed_of):
        from hoigen.diffusion.common import stage_seed

        metas = {key: json.loads(members["meta.json"]) for key, members in samples}
        added: dict[str, dict[str, bytes]] = {key: {} for key, _ in samples}
        generation: dict[str, dict] = {key: {} for key, _ in samples}
        if self.photo is not None:
            from hoigen.diffusion.hoidiffusion.pipeline import PhotoRequest

            requests = []
            for key, members in samples:
                meta = metas[key]
                seed = stage_seed(run_seed_of(meta), int(meta["index"]), "photo")
                requests.append((key, self.photo.prepare(PhotoRequest(members, meta, seed))))
            for batch in _photo_batches(requests, self.photo.options.batch_frames):
                for (key, _), (new, gen) in zip(batch, self.photo.generate([r for _, r in batch])):
                    added[key].update(new)
                    generation[key]["photo"] = gen
        if self.video is not None:
            for key, members in samples:
                meta = metas[key]
                self.video.check_sample(meta)
                seed = stage_seed(run_seed_of(meta), int(meta["index"]), "video")
                new, gen = self.video.generate({**members, **added[key]}, meta, seed)
                added[key].update(new)
                generation[key]["video"] = gen
        out = []
        for key, members in samples:
            clash = set(added[key]) & set(members)
            if clash:
                raise GenerateError(
                    f"sample {key} already has {sorted(clash)}: the input was generated already; "
                    "run hoigen generate on a render dataset"
                )
            meta = dict(metas[key])
            meta["generation"] = {**meta.get("generation", {}), **generation[key]}
            out.append((key, {**members, **added[key], "meta.json": dumps_json(meta)}))
        return out


def _check_photo_memory(weights, options, device: str, dtype) -> None:
    """Estimate the photo stage's memory (weights in ``dtype`` + UNet activations of one batch) and refuse early."""
    import torch

    from hoigen.diffusion.common import check_fits, weight_bytes

    stored = weight_bytes(Path(weights.root))
    if Path(weights.sd_root) != Path(weights.root):
        stored += weight_bytes(Path(weights.sd_root))
    item = torch.finfo(dtype).bits // 8
    params = (
        stored * item // 4
    )  # stored in fp32 or fp16; counted at the compute dtype (upper bound for fp16 files)
    side = options.crop_size if options.crop else 512
    # ~12 live fp tensors of 320 channels at latent resolution per image, for frames x 2 (guidance)
    activations = options.batch_frames * 2 * (side // 8) ** 2 * 320 * item * 12
    check_fits(
        "the photo stage",
        int(params + activations),
        device,
        "lower --batch-frames, use --dtype fp16/bf16 on a GPU, or --crop with a smaller --crop-size",
    )


def _photo_batches(requests, batch_frames: int):
    """Group consecutive requests of one size into batches of about ``batch_frames`` frames."""
    batch, frames, size = [], 0, None
    for key, r in requests:
        shape = r.conditions.shape[-2:]
        n = len(r.frames)
        if batch and (frames + n > batch_frames or shape != size):
            yield batch
            batch, frames = [], 0
        batch.append((key, r))
        frames += n
        size = shape
    if batch:
        yield batch


# ---------------------------------------------------------------------------------------------------------------
# the job


@dataclass(frozen=True)
class GenerateJob:
    """Input dataset folder, output folder and the stage config."""

    src: Path
    out: Path
    config: GenerateConfig

    def __post_init__(self):
        src, out = Path(self.src).resolve(), Path(self.out).resolve()
        if src == out:
            raise GenerateError(
                f"OUT {self.out} is the input folder: hoigen generate never modifies its input; give another OUT"
            )
        if out.is_relative_to(src / "shards"):
            raise GenerateError(f"OUT {self.out} lies inside the input's shards folder; give another OUT")

    def manifest(self) -> dict:
        path = Path(self.src) / "manifest.json"
        if not path.is_file():
            raise GenerateError(
                f"{self.src} has no manifest.json: give a folder written by hoigen synth (or hoigen generate)"
            )
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise GenerateError(f"{path} cannot be read ({exc}); is it a hoigen dataset?") from exc

    def shard_paths(self, manifest: dict) -> list[Path]:
        shards = [Path(self.src) / "shards" / s["name"] for s in manifest.get("shards", [])]
        for path in shards:
            if not path.is_file():
                raise GenerateError(
                    f"input shard {path} listed in the manifest is missing; rerun hoigen synth"
                )
        if not shards:
            raise GenerateError(f"{self.src}/manifest.json lists no shards: nothing to generate")
        return shards

    def record_path(self, name: str) -> Path:
        return Path(self.out) / "shards" / (name[: -len(".tar")] + ".json")


def _fingerprint(config: GenerateConfig, model_files: dict) -> str:
    blob = dumps_json({"stage": STAGE_VERSION, "config": config.to_dict(), "models": model_files})
    return hashlib.sha256(blob).hexdigest()


def _pin(job: GenerateJob, manifest: dict, model_files: dict) -> str:
    """Write or check OUT/generate.json; return the stage fingerprint."""
    fingerprint = _fingerprint(job.config, model_files)
    source = [[s["name"], s.get("sha256")] for s in manifest["shards"]]
    pin = {
        "stage": STAGE_VERSION,
        "config": job.config.to_dict(),
        "models": model_files,
        "source": {"path": str(Path(job.src).resolve()), "shards": source},
        "fingerprint": fingerprint,
    }
    path = Path(job.out) / "generate.json"
    if path.is_file():
        _refuse_other_pin(path, pin)
    else:
        Path(job.out, "shards").mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, pin)
    return fingerprint


def _refuse_other_pin(path: Path, pin: dict) -> None:
    """Refuse an OUT whose ``generate.json`` was written with other settings (``pin``: config, models,
    fingerprint and, when known, source), naming the keys that differ."""
    old = json.loads(path.read_text())
    source_differs = "source" in pin and old.get("source", {}).get("shards") != pin["source"]["shards"]
    if old.get("fingerprint") == pin["fingerprint"] and not source_differs:
        return
    diffs = _diff_keys(
        {k: old.get(k) for k in ("config", "models")}, {k: pin[k] for k in ("config", "models")}
    )
    if source_differs:
        diffs.append("source shards")
    raise GenerateError(
        f"{path.parent} holds a generate run with other settings (differs in: {', '.join(diffs) or '?'}); "
        "use another OUT or the same options"
    )


def _diff_keys(a, b, prefix="") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            out += _diff_keys(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    return [] if a == b else [prefix.rstrip(".")]


def _finished(job: GenerateJob, name: str, source_sha: str, fingerprint: str) -> dict | None:
    record_path = job.record_path(name)
    tar = Path(job.out) / "shards" / name
    if not (record_path.is_file() and tar.is_file()):
        return None
    try:
        record = json.loads(record_path.read_text())
    except (OSError, ValueError):
        return None
    ok = (
        record.get("source_sha256") == source_sha
        and record.get("fingerprint") == fingerprint
        and record.get("bytes") == tar.stat().st_size
    )
    return record if ok else None


def _generated_frames(members: dict[str, bytes]) -> int:
    """Frames a sample got from the generative stage: photo frames plus, with a video, its T frames."""
    photos = sum(1 for k in members if re.fullmatch(r"f\d{3}\.photo\.png", k))
    video = sum(1 for k in members if re.fullmatch(r"f\d{3}\.rgb\.png", k)) if "video.mp4" in members else 0
    return photos + video


def _clean_partials(out: Path) -> None:
    for path in (out / "shards").glob("*.partial"):
        path.unlink(missing_ok=True)


def produce_shard(
    generator: SampleGenerator, job: GenerateJob, src: Path, fingerprint: str, seed: int
) -> dict:
    """Generate one output shard from input shard ``src`` (first verified against its manifest entry or shard
    record, as the reader verifies shards); returns its record."""
    from hoigen.datasets.integrity import ShardIntegrityError, expected_for, verify_shard

    t0 = time.perf_counter()
    expected = expected_for(src)
    if expected is None:
        source_sha = file_sha256(src)
    else:
        try:
            verify_shard(src, expected)
        except ShardIntegrityError as exc:
            raise GenerateError(f"input {exc}") from exc
        source_sha = expected.sha256
    samples = read_samples(src)
    out_samples = generator.process(samples, lambda meta: meta.get("seed", seed))
    name = src.name
    stats = write_shard(Path(job.out) / "shards" / name, out_samples)
    frames = sum(_generated_frames(members) for _, members in out_samples)
    record = {
        "name": name,
        "samples": len(out_samples),
        "source_sha256": source_sha,
        "fingerprint": fingerprint,
        "generated_frames": frames,
        "seconds": time.perf_counter() - t0,
        **stats,
    }
    write_json_atomic(job.record_path(name), record)
    return record


def _copy_extras(job: GenerateJob) -> None:
    """Copy the input folder's other dataset files (e.g. stored object meshes) so OUT is self-contained."""
    src, out = Path(job.src), Path(job.out)
    for item in sorted(src.iterdir()):
        if item.name in _SKIP_COPY or item.name.endswith((".lock", ".partial")):
            continue
        target = out / item.name
        if item.resolve() == out.resolve():
            continue
        if item.is_dir():
            shutil.copytree(item, target, dirs_exist_ok=True)
        elif item.is_file():
            shutil.copy2(item, target)


def write_manifest(job: GenerateJob, manifest: dict, records: dict[str, dict], model_files: dict) -> dict:
    shards = []
    for entry in manifest["shards"]:
        rec = records.get(entry["name"])
        if rec is None:
            continue
        shards.append({**entry, "bytes": rec["bytes"], "sha256": rec["sha256"]})
    src_manifest = Path(job.src) / "manifest.json"
    out = {
        **manifest,
        "shards": shards,
        "complete": bool(manifest.get("complete", True)) and len(shards) == len(manifest["shards"]),
        "samples": sum(r["samples"] for r in records.values()),
        "generation": {
            "stage": STAGE_VERSION,
            "config": job.config.to_dict(),
            "models": model_files,
            "source": {"path": str(Path(job.src).resolve()), "manifest_sha256": file_sha256(src_manifest)},
        },
    }
    write_json_atomic(Path(job.out) / "manifest.json", out)
    return out


@dataclass
class GenerateSummary:
    shards_made: int
    shards_kept: int
    samples: int
    frames: int
    seconds: float
    device: str
    records: dict = dataclasses.field(default_factory=dict)


def run_generate(
    job: GenerateJob,
    executor: str = "local",
    workers: int | None = None,
    progress: bool = True,
    generator: SampleGenerator | None = None,
    only: list[str] | None = None,
) -> GenerateSummary:
    """Produce the missing output shards of ``job`` (``only``: restrict to these input shard names)."""
    if executor not in ("local", "ray"):
        raise ValueError(f"--executor must be local or ray, got {executor!r}")
    manifest = job.manifest()
    shards = job.shard_paths(manifest)
    if only is not None:
        shards = [p for p in shards if p.name in set(only)]
    Path(job.out, "shards").mkdir(parents=True, exist_ok=True)
    from hoigen.diffusion.common import resolve_device, visible_gpus

    device = resolve_device(job.config.device)
    gpus = visible_gpus() if device == "cuda" else 0
    n_workers = workers or max(gpus, 1)
    if generator is None and (executor == "ray" or n_workers > 1):
        model_files = _model_files_without_loading(job.config)
    else:
        generator = generator or SampleGenerator(job.config)
        model_files = generator.model_files()
    fingerprint = _pin(job, manifest, model_files)
    _clean_partials(Path(job.out))
    _copy_extras(job)
    seed = int(manifest.get("seed", 0))
    # every finished shard of the whole run counts for the manifest, also those outside ``only``
    records = {}
    for entry in manifest["shards"]:
        rec = _finished(job, entry["name"], entry.get("sha256"), fingerprint)
        if rec is not None:
            records[entry["name"]] = rec
    todo = [p for p in shards if p.name not in records]
    kept = len(shards) - len(todo)
    t0 = time.perf_counter()
    made = {}
    if todo:
        if device == "cpu":
            logger.warning(
                "no GPU: generating on CPU, which is slow for real-size models (an estimate follows the first shard)"
            )
        if executor == "ray":
            runner = _run_ray(job, todo, fingerprint, seed, n_workers, gpus)
        elif n_workers > 1:
            runner = _run_processes(job, todo, fingerprint, seed, n_workers, gpus)
        else:
            runner = (produce_shard(generator, job, p, fingerprint, seed) for p in todo)
        with _progress(len(todo), progress) as bar:
            for rec in runner:
                made[rec["name"]] = rec
                if device == "cpu" and len(made) == 1 and len(todo) > 1 and rec["generated_frames"]:
                    per_frame = rec["seconds"] / rec["generated_frames"]
                    left = sum(
                        int(s.get("samples", 0))
                        for s in manifest["shards"]
                        if s["name"] in {p.name for p in todo}
                    )
                    frames_left = left * int(manifest.get("frames_per_sample", 1)) - rec["generated_frames"]
                    logger.warning(
                        "CPU: %.1f s per generated frame; about %.0f min for the remaining ~%d frames",
                        per_frame,
                        per_frame * max(frames_left, 0) / 60.0,
                        max(frames_left, 0),
                    )
                bar.update(1)
                bar.set_postfix(
                    frames_s=f"{sum(r['generated_frames'] for r in made.values()) / max(time.perf_counter() - t0, 1e-9):.2f}"
                )
    records.update(made)
    write_manifest(job, manifest, records, model_files)
    return GenerateSummary(
        shards_made=len(made),
        shards_kept=kept,
        samples=sum(r["samples"] for r in made.values()),
        frames=sum(r["generated_frames"] for r in made.values()),
        seconds=time.perf_counter() - t0,
        device=device,
        records=records,
    )


def _model_files_without_loading(config: GenerateConfig) -> dict:
    files = {}
    if config.photo == "hoidiffusion":
        from hoigen.diffusion.hoidiffusion.weights import resolve_weights

        files["photo"] = dict(resolve_weights(config.hoidiffusion, config.sd).files)
    if config.video == "hvg3d":
        from hoigen.diffusion.hvg3d.pipeline import HVG3DVideoBackend

        files["video"] = HVG3DVideoBackend.model_files(config.cogvideox, config.hvg3d)
    return files


def _progress(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, unit="shard", desc="generate", dynamic_ncols=True, disable=not enabled)


# -- several GPUs: one process per GPU ---------------------------------------------------------------------------

_WORKER: dict = {}


def _proc_init(job: GenerateJob, devices, lock) -> None:
    with lock:
        device = devices.get()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    _WORKER["job"] = job
    _WORKER["generator"] = SampleGenerator(job.config, device=device)


def _proc_run(args) -> dict:
    path, fingerprint, seed = args
    return produce_shard(_WORKER["generator"], _WORKER["job"], path, fingerprint, seed)


def _run_processes(job, todo, fingerprint, seed, workers, gpus):
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    devices = ctx.Queue()
    for i in range(workers):
        devices.put(f"cuda:{i % gpus}" if gpus else "cpu")
    lock = ctx.Lock()
    with ctx.Pool(
        processes=min(workers, len(todo)), initializer=_proc_init, initargs=(job, devices, lock)
    ) as pool:
        yield from pool.imap_unordered(_proc_run, [(p, fingerprint, seed) for p in todo])


def _run_ray(job, todo, fingerprint, seed, workers, gpus):
    import ray

    if not ray.is_initialized():
        ray.init(ignore_reinit_error=True, log_to_driver=False)

    @ray.remote(num_gpus=1 if gpus else 0)
    class GenerateActor:
        def __init__(self, job):
            self.job = job
            self.generator = SampleGenerator(job.config, device="cuda" if gpus else "cpu")

        def run(self, path, fingerprint, seed):
            return produce_shard(self.generator, self.job, path, fingerprint, seed)

    actors = [GenerateActor.remote(job) for _ in range(min(workers, len(todo)))]
    pending, queue = {}, list(todo)
    for actor in actors:
        if queue:
            pending[actor.run.remote(queue.pop(0), fingerprint, seed)] = actor
    while pending:
        done, _ = ray.wait(list(pending), num_returns=1)
        actor = pending.pop(done[0])
        yield ray.get(done[0])
        if queue:
            pending[actor.run.remote(queue.pop(0), fingerprint, seed)] = actor


# ---------------------------------------------------------------------------------------------------------------
# synth --photo / --video: render on CPU workers, generate in the driver as shards finish


def synth_and_generate(synth_job, config: GenerateConfig, out: Path, progress: bool = True, **synth_kwargs):
    """Render ``synth_job`` (into its own folder, ``OUT/render``) and generate each finished shard into ``out``
    while later shards still render. Returns (synth summary, generate summary)."""
    import queue
    import threading

    from hoigen.synth.run import run_synth

    job = GenerateJob(synth_job.out, out, config)
    generator = SampleGenerator(config)  # weights load (and fail) before any rendering
    model_files = generator.model_files()
    fingerprint = _fingerprint(config, model_files)
    old = Path(out) / "generate.json"
    if old.is_file():
        _refuse_other_pin(
            old, {"config": config.to_dict(), "models": model_files, "fingerprint": fingerprint}
        )
    Path(out, "shards").mkdir(parents=True, exist_ok=True)
    _clean_partials(Path(out))
    seed = int(synth_job.config.seed)
    todo: queue.Queue = queue.Queue()
    failure: list[BaseException] = []

    def consume():
        while True:
            record = todo.get()
            if record is None:
                return
            if failure:
                continue
            try:
                src = Path(synth_job.out) / "shards" / record["name"]
                if _finished(job, record["name"], record["sha256"], fingerprint) is None:
                    produce_shard(generator, job, src, fingerprint, seed)
            except BaseException as exc:  # noqa: BLE001 - re-raised in the driver
                failure.append(exc)

    thread = threading.Thread(target=consume, name="hoigen-generate", daemon=True)
    thread.start()
    try:
        summary = run_synth(synth_job, progress=progress, on_shard=todo.put, **synth_kwargs)
    finally:
        todo.put(None)
        thread.join()
    if failure:
        raise failure[0]
    generated = run_generate(job, generator=generator, progress=False)
    # the shards made while rendering count as made by this run
    generated.frames = sum(r.get("generated_frames", 0) for r in generated.records.values())
    generated.samples = sum(r.get("samples", 0) for r in generated.records.values())
    return summary, generated
