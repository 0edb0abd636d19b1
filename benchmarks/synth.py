"""Synthesis benchmark: ``run_synth`` end to end on builtin:nocs -- throughput, worker scaling, stage shares, memory.

    python benchmarks/synth.py [--n 12] [--frames 8] [--sizes 256 512] [--rounds 2] [--quick] [--json out.json]
    python benchmarks/synth.py --frame-cost [--frame-cost-frames 8 16 49] [--n 6] [--rounds 3] [--json out.json]

Every run is a fresh ``run_synth`` (local executor, default config but for T and the image size, seed fixed) into a
temporary folder, with ``--samples-per-shard`` samples per shard (default 2, so that the work splits over workers):

- throughput at each size with 1 worker: samples/s and frames/s over the wall clock of ``run_synth`` (this
  includes starting the worker pool and each worker's first GL context, as a user's run does), and the worker's
  seconds per sample (the sum of the shard records' stage times / samples: no pool start-up, but the first
  sample's render time carries the worker's GL context creation);
- scaling: the first size again with 2 workers, same samples; ``--rounds`` rounds, each running 1 then 2 workers
  back to back (load from other processes then hits both alike); speed-up = best wall(1 worker) / best wall(2
  workers) (target >= 1.8x on 2 cores), the per-round ratios, and whether every run wrote byte-identical shards
  (the manifests' sha256). The table shows each configuration's best round;
- stage shares: the shard records' ``seconds`` (grasp = object + grasp sampling + trajectory + camera, render,
  encode = PNG/NPY encoding, write = tar + fsync + rename + hash) summed over the run, as % of their total;
- memory: one fresh worker-like process (spawned, single-threaded BLAS as in the pool) builds a ``ShardProducer`` at
  the first size and makes ``--memory-shards`` shards one after another; resident memory (VmRSS from
  /proc/self/status, after a ``gc.collect()``) after the first shard, halfway and after the last one; the growth
  first -> last (target: flat), the growth over the second half, the peak (VmHWM), and the number of live Python
  objects after the first and the last shard (a leak of Python objects shows there). RSS rises over the first dozen
  or so samples (the allocator's high-water mark as objects of every category come through) and then moves in
  steps within a band (a 120-sample probe at 256² stayed within 507-567 MB from its 10th sample on); the
  second-half figure shows the drift left. (The pool replaces a worker after 50 shards.)

``--frame-cost`` runs only the frame-cost section instead (issue 14's goal: end to end <= 3x one colour pass per
frame at 256², T = 8, one worker):

- baseline, in this process: ``benchmarks/render.py``'s baseline A, one plain pyrender lit colour pass per frame
  (pyrender defaults, 4x MSAA, the posed hand re-uploaded every frame) of its scene (the built-in bottle + the
  built-in hand from a contact grasp, T = 8), at the size of the runs; one measurement = ``--baseline-reps`` passes
  over that trajectory, ms per frame; reported is the median of all measurements;
- end to end: one ``run_synth`` per T of ``--frame-cost-frames`` (default 8 16 49; local executor, 1 worker,
  default config but for T and the size, seed fixed, ``--n`` samples, default 6 = each built-in category once,
  fresh temporary folder). Wall per frame = wall clock of ``run_synth`` / (samples made x T): the pool start-up
  (spawning the worker, its imports, its first GL context) and any skipped sample's grasp attempts are inside.
  Worker per frame = the shard records' stage seconds summed / (samples made x T): no pool start-up, no skipped
  sample (the records time only the samples made); the first sample's render carries the worker's GL context;
- rounds: ``--rounds`` (default 3), each a baseline measurement before every run, so that load from other processes
  hits both alike; per T the median wall over rounds; ratio = that / the baseline median;
- the grasp stage's seconds per sample, and what they may be for a 3x wall ratio with all else as measured;
- PNG probe, on the shards of the first round's first T: every PNG member decoded and re-encoded, in this process,
  with OpenCV's PNG writer as ``hoigen.render.png.encode_png`` calls it, at the shards' setting (the bytes are
  checked to be the shards') and at other zlib levels, strategies and row filters: ms and bytes per frame, in all
  and per member kind -- a measurement of the lever; the shards are written as always.

The machine may be shared: the load average before and after is printed with the results, and before each round
the CPU headroom (two CPU-bound Python processes' throughput over one's: 2.0 when two cores are free) bounds what
any 2-worker speed-up can reach at that moment.
"""

from __future__ import annotations

import argparse
import gc
import json
import multiprocessing as mp
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np

from hoigen.config import RunConfig
from hoigen.synth.run import _THREAD_ENV, ShardProducer, SynthJob, run_synth

STAGES = ("grasp", "render", "encode", "write")


def make_job(out: Path, n: int, frames: int, size: int, per_shard: int, seed: int) -> SynthJob:
    config = RunConfig().replace(
        objects={"source": "builtin:nocs"},
        trajectory={"frames": frames},
        camera={"preset": f"square-{size}"},
        seed=seed,
    )
    return SynthJob(config, out, n, per_shard)


def timed_run(root: Path, name: str, workers: int, **job_args) -> dict:
    out = root / name
    job = make_job(out, **job_args)
    summary = run_synth(job, workers=workers, progress=False)
    manifest = json.loads((out / "manifest.json").read_text())
    stage = {k: summary.stage_seconds.get(k, 0.0) for k in STAGES}
    busy = sum(stage.values())
    frames = summary.samples * job.config.trajectory.total_frames
    return {
        "workers": workers,
        "size": job_args["size"],
        "samples": summary.samples,
        "skipped": summary.skipped,
        "frames": frames,
        "wall_s": summary.seconds,
        "samples_per_s": summary.samples / summary.seconds,
        "frames_per_s": frames / summary.seconds,
        "worker_s_per_sample": busy / max(summary.samples, 1),
        "stage_seconds": stage,
        "stage_share": {k: v / busy for k, v in stage.items()},
        "mb_written": summary.bytes / 1e6,
        "sha256": [s["sha256"] for s in manifest["shards"]],
    }


def _rss_mb() -> tuple[float, float]:
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024
    return fields["VmRSS"], fields["VmHWM"]


def _memory_worker(job: SynthJob, shards: int, results) -> None:
    producer = ShardProducer(job)
    readings = []
    for shard in range(shards):
        t0 = time.perf_counter()
        producer.produce(shard)
        seconds = time.perf_counter() - t0
        gc.collect()
        rss, hwm = _rss_mb()
        objects = len(gc.get_objects())
        readings.append(
            {"shard": shard, "rss_mb": rss, "hwm_mb": hwm, "objects": objects, "seconds": seconds}
        )
    results.put(readings)


def memory_run(root: Path, shards: int, **job_args) -> dict:
    job = make_job(root / "memory", **job_args, n=shards * job_args["per_shard"])
    (job.out / "shards").mkdir(parents=True)
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    saved = {k: os.environ.get(k) for k in _THREAD_ENV}
    os.environ.update(_THREAD_ENV)  # as the pool does: the child's BLAS is single-threaded
    try:
        proc = ctx.Process(target=_memory_worker, args=(job, shards, results))
        proc.start()
        readings = results.get()
        proc.join()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    first, mid, last = readings[0], readings[len(readings) // 2], readings[-1]
    return {
        "size": job_args["size"],
        "shards": shards,
        "samples": job.n,
        "rss_first_mb": first["rss_mb"],
        "rss_last_mb": last["rss_mb"],
        "growth_pct": 100.0 * (last["rss_mb"] - first["rss_mb"]) / first["rss_mb"],
        "rss_mid_mb": mid["rss_mb"],
        "growth_second_half_pct": 100.0 * (last["rss_mb"] - mid["rss_mb"]) / mid["rss_mb"],
        "peak_mb": last["hwm_mb"],
        "objects_first": first["objects"],
        "objects_last": last["objects"],
        "readings": readings,
    }


_SPIN = "import time\nt = time.perf_counter()\nx = 0\nfor i in range(20_000_000): x += i\nprint(time.perf_counter() - t)"


def _spin(processes: int) -> float:
    procs = [
        subprocess.Popen([sys.executable, "-c", _SPIN], stdout=subprocess.PIPE, text=True)
        for _ in range(processes)
    ]
    return max(float(proc.communicate()[0]) for proc in procs)


def cpu_headroom() -> float:
    """Throughput of two CPU-bound processes over one, right now (2.0 = two free cores; the ceiling of scaling)."""
    return 2.0 * _spin(1) / _spin(2)


def _load() -> str:
    return " ".join(f"{v:.1f}" for v in os.getloadavg())


class ColourPass:
    """The frame-cost baseline: ``benchmarks/render.py``'s baseline A (one lit colour pass per frame), in this process.

    Args:
        size: square image size, px; seed: the scene's seed; reps: trajectories rendered per measurement.
    """

    def __init__(self, size: int, seed: int, reps: int):
        from hoigen.geometry.camera import square_intrinsics
        from hoigen.render.gl import select_platform

        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from render import PlainPyrender, build_scene, run_plain

        self.platform = select_platform()  # before pyrender imports OpenGL; the workers inherit it
        self.scene = build_scene("bottle", 8, seed)
        self.plain = PlainPyrender(self.scene, square_intrinsics(size), separate_passes=False)
        self._run = run_plain
        self.reps = reps
        self._run(self.plain)  # warm-up: shader compilation, first uploads
        self.ms: list[float] = []

    def measure(self) -> float:
        """One measurement: ms per frame over ``reps`` passes of the trajectory."""
        ms = 1e3 * sum(self._run(self.plain)[0] for _ in range(self.reps)) / self.reps
        self.ms.append(ms)
        return ms

    def close(self) -> None:
        self.plain.close()


def png_variants(level: int) -> dict[str, list[int]]:
    """OpenCV ``imwrite`` parameters of the PNG settings the probe tries; the first is the shards' own."""
    import cv2

    level_key, filter_key, strategy_key = (
        cv2.IMWRITE_PNG_COMPRESSION,
        cv2.IMWRITE_PNG_FILTER,
        cv2.IMWRITE_PNG_STRATEGY,
    )
    sub, rle = cv2.IMWRITE_PNG_FILTER_SUB, cv2.IMWRITE_PNG_STRATEGY_RLE
    return {
        f"level {level}, SUB filter only (shards)": [level_key, level, filter_key, sub],
        f"level {level}, adaptive filters (before)": [level_key, level],
        "level 1": [level_key, 1],
        "level 0 (stored)": [level_key, 0],
        f"level {level}, RLE strategy": [level_key, level, strategy_key, rle],
        "level 1, SUB filter only": [level_key, 1, filter_key, sub],
    }


def png_probe(out: Path, repeats: int = 3) -> dict:
    """Re-encode the PNG members of the shards under ``out`` with each of :func:`png_variants` (best of ``repeats``).

    ``hoigen.render.png.encode_png`` is OpenCV's PNG writer at a fixed zlib level with libpng's SUB row filter;
    the probe calls OpenCV directly, as it does, and checks that the shards' own setting gives the
    shards' bytes. Returns per variant: ms and bytes per frame, in all and per member kind (rgb, depth, ...).
    """
    import cv2

    import hoigen.render.png as png

    stored, images, kinds, frames = [], [], [], 0
    for path in sorted(out.rglob("hoigen-*.tar")):
        with tarfile.open(path) as tar:
            for member in tar.getmembers():
                if member.name.endswith(".png"):
                    data = tar.extractfile(member).read()
                    image = png.decode_png(data)
                    stored.append(data)
                    images.append(np.ascontiguousarray(image[..., ::-1]) if image.ndim == 3 else image)
                    kinds.append(member.name.split(".")[-2])
                    frames += kinds[-1] == "rgb"
    result = {"frames": frames, "pngs": len(images), "shard_level": png.PNG_COMPRESSION_LEVEL, "variants": {}}
    for k, (name, params) in enumerate(png_variants(png.PNG_COMPRESSION_LEVEL).items()):
        per_kind = {}
        encoded: list[bytes] = [b""] * len(images)
        for kind in sorted(set(kinds)):
            where = [i for i, x in enumerate(kinds) if x == kind]
            best = float("inf")
            for _ in range(repeats):
                t0 = time.perf_counter()
                for i in where:
                    encoded[i] = cv2.imencode(".png", images[i], params)[1].tobytes()
                best = min(best, time.perf_counter() - t0)
            per_kind[kind] = {
                "ms_per_frame": 1e3 * best / frames,
                "bytes_per_frame": sum(len(encoded[i]) for i in where) / frames,
            }
        result["variants"][name] = {
            "ms_per_frame": sum(v["ms_per_frame"] for v in per_kind.values()),
            "bytes_per_frame": sum(v["bytes_per_frame"] for v in per_kind.values()),
            "by_member": per_kind,
            **({"same_bytes_as_shards": encoded == stored} if k == 0 else {}),
        }
    return result


def frame_cost(args, size: int, n: int, per_shard: int, frame_counts: list[int], rounds: int) -> dict:
    """The ``--frame-cost`` section (module docstring): run_synth per frame against one colour pass per frame."""
    baseline = ColourPass(size, args.seed, args.baseline_reps)
    runs: dict[int, list[dict]] = {T: [] for T in frame_counts}
    probe = None
    try:
        with tempfile.TemporaryDirectory(prefix="hoigen-bench-synth-cost-") as tmp:
            root = Path(tmp)
            for r in range(rounds):
                for T in frame_counts:
                    colour = baseline.measure()
                    load = _load()
                    run = timed_run(
                        root,
                        f"cost-r{r}-T{T}",
                        1,
                        n=n,
                        frames=T,
                        size=size,
                        per_shard=per_shard,
                        seed=args.seed,
                    )
                    frames = max(run["frames"], 1)
                    run.update(
                        load_before=load,
                        colour_pass_ms_before=colour,
                        wall_ms_per_frame=1e3 * run["wall_s"] / frames,
                        worker_ms_per_frame=1e3 * sum(run["stage_seconds"].values()) / frames,
                        stage_ms_per_frame={k: 1e3 * v / frames for k, v in run["stage_seconds"].items()},
                    )
                    run.pop("sha256")
                    runs[T].append(run)
                    print(
                        f"round {r + 1}: T = {T}: colour pass {colour:.1f} ms/frame; run_synth {run['wall_s']:.1f} s, "
                        f"{run['wall_ms_per_frame']:.0f} ms/frame wall, {run['worker_ms_per_frame']:.0f} worker "
                        f"({run['samples']} made, {run['skipped']} skipped; load {load})",
                        flush=True,
                    )
                    if probe is None:
                        probe = png_probe(root / f"cost-r{r}-T{T}")
                    shutil.rmtree(root / f"cost-r{r}-T{T}")  # T = 49 runs write tens of MB
    finally:
        baseline.close()
    colour_ms = statistics.median(baseline.ms)
    table = {}
    for T, trials in runs.items():
        wall = statistics.median(run["wall_ms_per_frame"] for run in trials)
        worker = statistics.median(run["worker_ms_per_frame"] for run in trials)
        stage = {k: statistics.median(run["stage_ms_per_frame"][k] for run in trials) for k in STAGES}
        busy = sum(stage.values())
        table[str(T)] = {
            "frames_per_sample": T,
            "samples": [run["samples"] for run in trials],
            "skipped": [run["skipped"] for run in trials],
            "wall_ms_per_frame": wall,
            "worker_ms_per_frame": worker,
            "outside_worker_ms_per_frame": wall - worker,
            "ratio_wall": wall / colour_ms,
            "ratio_worker": worker / colour_ms,
            "stage_ms_per_frame": stage,
            "stage_share": {k: v / busy for k, v in stage.items()},
            "grasp_s_per_sample": stage["grasp"] * T / 1e3,
            # the grasp stage's time per sample at which the wall ratio would be 3x, all else as measured
            "grasp_budget_s_per_sample_for_3x_wall": (3.0 * colour_ms - (wall - stage["grasp"])) * T / 1e3,
            "wall_ms_per_frame_per_round": [run["wall_ms_per_frame"] for run in trials],
            "runs": trials,
        }
    return {
        "size": size,
        "n": n,
        "samples_per_shard": per_shard,
        "rounds": rounds,
        "frame_counts": frame_counts,
        "gl_platform": baseline.platform,
        "colour_pass_ms_per_frame": colour_ms,
        "colour_pass_ms_per_measurement": baseline.ms,
        "colour_pass_scene": {
            "category": baseline.scene.category,
            "object_triangles": len(baseline.scene.obj.mesh.faces),
            "hand_triangles": len(baseline.scene.hand.faces),
            "frames": baseline.scene.frames,
            "reps": args.baseline_reps,
        },
        "by_frames": table,
        "png_probe": probe,
    }


def print_frame_cost(fc: dict, seed: int, load_before: str, load_after: str, elapsed: float) -> None:
    s = fc["colour_pass_scene"]
    print()
    print(
        f"Frame cost at {fc['size']}², 1 worker: builtin:nocs, default config, {fc['n']} samples per run "
        f"({fc['samples_per_shard']} per shard), seed {seed}, median of {fc['rounds']} round(s); colour pass = "
        f"benchmarks/render.py's baseline A (built-in {s['category']}, {s['object_triangles']} triangles, + built-in "
        f"hand, {s['hand_triangles']} triangles; GL {fc['gl_platform']}), median of "
        f"{len(fc['colour_pass_ms_per_measurement'])} measurements interleaved with the runs "
        f"({min(fc['colour_pass_ms_per_measurement']):.1f}-{max(fc['colour_pass_ms_per_measurement']):.1f} ms); "
        f"{os.cpu_count()} CPUs, load average {load_before} before, {load_after} after; {elapsed:.0f} s in all"
    )
    print()
    print(
        "| T | samples made (skipped) | synth ms/frame (wall) | worker ms/frame | colour pass ms/frame | ratio wall "
        "| ratio worker | stage shares grasp / render / encode / write | stage ms/frame grasp / render / encode "
        "/ write |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for row in fc["by_frames"].values():
        shares = " / ".join(f"{100 * row['stage_share'][k]:.0f}%" for k in STAGES)
        stage_ms = " / ".join(f"{row['stage_ms_per_frame'][k]:.0f}" for k in STAGES)
        made = ", ".join(f"{m} ({k})" for m, k in zip(row["samples"], row["skipped"]))
        walls = ", ".join(f"{w:.0f}" for w in row["wall_ms_per_frame_per_round"])
        print(
            f"| {row['frames_per_sample']} | {made} | {row['wall_ms_per_frame']:.0f} ({walls}) | "
            f"{row['worker_ms_per_frame']:.0f} | {fc['colour_pass_ms_per_frame']:.1f} | "
            f"{row['ratio_wall']:.2f}x | {row['ratio_worker']:.2f}x | {shares} | {stage_ms} |"
        )
    print()
    print(
        "wall = run_synth's wall clock / (samples made x T), pool start-up and skipped samples' attempts inside; "
        "worker = the shard records' stage seconds / (samples made x T), without them; wall - worker per frame: "
        + ", ".join(
            f"T = {r['frames_per_sample']}: {r['outside_worker_ms_per_frame']:.0f} ms"
            for r in fc["by_frames"].values()
        )
    )
    print(
        "Grasp stage per sample now -> what it may take for a 3x wall ratio, all else as measured: "
        + ", ".join(
            f"T = {r['frames_per_sample']}: {r['grasp_s_per_sample']:.2f} s -> "
            + (
                f"{r['grasp_budget_s_per_sample_for_3x_wall']:.2f} s"
                if r["grasp_budget_s_per_sample_for_3x_wall"] > 0
                else "none (over 3x even with no grasp time)"
            )
            for r in fc["by_frames"].values()
        )
    )
    probe = fc["png_probe"]
    if probe:
        variants = probe["variants"]
        first = next(iter(variants.values()))
        print(
            f"PNG probe: the {probe['pngs']} PNG members of {probe['frames']} frames (the first run's shards) "
            f"re-encoded in this process, best of 3; same bytes as the shards at their own setting: "
            f"{'yes' if first['same_bytes_as_shards'] else 'NO'}"
        )
        print()
        kinds = list(first["by_member"])
        print("| PNG setting | ms/frame | kB/frame | " + " | ".join(f"{k} ms" for k in kinds) + " |")
        print("|---" * (len(kinds) + 3) + "|")
        for name, v in variants.items():
            cells = " | ".join(f"{v['by_member'][k]['ms_per_frame']:.1f}" for k in kinds)
            print(f"| {name} | {v['ms_per_frame']:.1f} | {v['bytes_per_frame'] / 1e3:.0f} | {cells} |")


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=None, help="samples per timed run (default 12, quick 2)")
    parser.add_argument("--frames", type=int, default=None, help="frames T per sample (default 8, quick 2)")
    parser.add_argument("--sizes", type=int, nargs="+", default=None, help="square sizes (default 256 512)")
    parser.add_argument("--samples-per-shard", type=int, default=None, help="default 2, quick 1")
    parser.add_argument(
        "--memory-shards", type=int, default=None, help="shards of the memory run (default 24)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: tiny images, 2 frames, a few samples"
    )
    parser.add_argument(
        "--rounds", type=int, default=None, help="rounds of the 1- and 2-worker runs (default 2, quick 1)"
    )
    parser.add_argument(
        "--frame-cost",
        action="store_true",
        help="run only the frame-cost section: run_synth per frame against one colour pass per frame, 1 worker",
    )
    parser.add_argument(
        "--frame-cost-frames",
        type=int,
        nargs="+",
        default=None,
        help="T of the frame-cost runs (default 8 16 49)",
    )
    parser.add_argument(
        "--baseline-reps", type=int, default=None, help="colour-pass trajectories per measurement (default 3)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if args.frame_cost:
        return main_frame_cost(args)
    n = args.n or (2 if args.quick else 12)
    frames = args.frames or (2 if args.quick else 8)
    sizes = args.sizes or ([64, 96] if args.quick else [256, 512])
    per_shard = args.samples_per_shard or (1 if args.quick else 2)
    memory_shards = args.memory_shards or (3 if args.quick else 24)
    rounds = args.rounds or (1 if args.quick else 2)
    common = {"frames": frames, "per_shard": per_shard, "seed": args.seed}

    load_before = _load()
    start = time.perf_counter()
    trials: dict[tuple[int, int], list[dict]] = {}
    headroom: list[float] = []
    with tempfile.TemporaryDirectory(prefix="hoigen-bench-synth-") as tmp:
        root = Path(tmp)
        for r in range(rounds):
            # 1 and 2 workers back to back in every round, so that load from other processes hits both alike
            plan = [(sizes[0], 1), (sizes[0], 2)] + ([(size, 1) for size in sizes[1:]] if r == 0 else [])
            headroom.append(cpu_headroom())
            for size, workers in plan:
                load = _load()
                run = timed_run(root, f"r{r}-w{workers}-{size}", workers, n=n, size=size, **common)
                run["load_before"] = load
                trials.setdefault((size, workers), []).append(run)
                print(
                    f"round {r + 1}: {size}² {workers} worker(s): {run['wall_s']:.1f} s, "
                    f"{run['samples_per_s']:.3f} samples/s (load {load})",
                    flush=True,
                )
        memory = memory_run(root, memory_shards, size=sizes[0], **common)
        print(f"memory: {memory['rss_first_mb']:.0f} -> {memory['rss_last_mb']:.0f} MB", flush=True)
    elapsed = time.perf_counter() - start

    best = {key: min(runs, key=lambda run: run["wall_s"]) for key, runs in trials.items()}
    order = [(size, 1) for size in sizes] + [(sizes[0], 2)]
    speedup = best[(sizes[0], 1)]["wall_s"] / best[(sizes[0], 2)]["wall_s"]
    paired = [a["wall_s"] / b["wall_s"] for a, b in zip(trials[(sizes[0], 1)], trials[(sizes[0], 2)])]
    digests = {tuple(run["sha256"]) for key in ((sizes[0], 1), (sizes[0], 2)) for run in trials[key]}
    identical = len(digests) == 1
    results = {
        "quick": args.quick,
        "n": n,
        "frames": frames,
        "samples_per_shard": per_shard,
        "rounds": rounds,
        "cpus": os.cpu_count(),
        "load_before": load_before,
        "load_after": _load(),
        "seconds": elapsed,
        "runs": [{k: v for k, v in run.items() if k != "sha256"} for key in order for run in trials[key]],
        "speedup_2_workers": speedup,
        "speedup_2_workers_per_round": paired,
        "cpu_headroom_per_round": headroom,
        "identical_bytes_1_vs_2_workers": identical,
        "memory": memory,
    }

    print()
    print(
        f"builtin:nocs, default config, T = {frames}, {n} samples per run ({per_shard} per shard), seed {args.seed}; "
        f"{os.cpu_count()} CPUs, load average {load_before} before, {results['load_after']} after; "
        f"{elapsed:.0f} s in all; best of {rounds} round(s) for the {sizes[0]}² runs (all walls in brackets)"
    )
    print()
    print(
        "| size | workers | samples | wall s | samples/s | frames/s | worker s/sample | grasp | render | encode "
        "| write |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for key in order:
        r = best[key]
        shares = " | ".join(f"{100 * r['stage_share'][k]:.0f}%" for k in STAGES)
        walls = ", ".join(f"{run['wall_s']:.1f}" for run in trials[key])
        print(
            f"| {r['size']}² | {r['workers']} | {r['samples']} | {r['wall_s']:.1f} ({walls}) | "
            f"{r['samples_per_s']:.3f} | {r['frames_per_s']:.2f} | {r['worker_s_per_sample']:.2f} | {shares} |"
        )
    print()
    print(
        f"Scaling at {sizes[0]}²: 2 workers {speedup:.2f}x faster than 1, best walls (target >= 1.8x; per round: "
        f"{', '.join(f'{x:.2f}x' for x in paired)}); shards byte-identical across all these runs: "
        f"{'yes' if identical else 'NO'}"
    )
    print(
        "CPU headroom before each round (two spinning processes' throughput over one's; 2.0 = two idle cores, "
        f"the ceiling of any 2-worker speed-up): {', '.join(f'{x:.2f}x' for x in headroom)}"
    )
    print(
        f"Memory ({memory['size']}², one worker, {memory['shards']} shards of {per_shard} samples): RSS "
        f"{memory['rss_first_mb']:.0f} MB after the first shard, {memory['rss_last_mb']:.0f} MB after the last "
        f"({memory['growth_pct']:+.1f}%; {memory['rss_mid_mb']:.0f} MB halfway, "
        f"{memory['growth_second_half_pct']:+.1f}% over the second half), peak {memory['peak_mb']:.0f} MB; "
        f"live Python objects {memory['objects_first']} -> {memory['objects_last']}"
    )
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


def main_frame_cost(args) -> None:
    n = args.n or (2 if args.quick else 6)
    size = args.sizes[0] if args.sizes else (64 if args.quick else 256)
    frame_counts = args.frame_cost_frames or ([2, 4] if args.quick else [8, 16, 49])
    per_shard = args.samples_per_shard or (1 if args.quick else 2)
    rounds = args.rounds or (1 if args.quick else 3)
    args.baseline_reps = args.baseline_reps or (1 if args.quick else 3)
    load_before = _load()
    start = time.perf_counter()
    fc = frame_cost(args, size, n, per_shard, frame_counts, rounds)
    elapsed = time.perf_counter() - start
    load_after = _load()
    print_frame_cost(fc, args.seed, load_before, load_after, elapsed)
    if args.json:
        results = {
            "quick": args.quick,
            "cpus": os.cpu_count(),
            "load_before": load_before,
            "load_after": load_after,
            "seconds": elapsed,
            "frame_cost": fc,
        }
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
