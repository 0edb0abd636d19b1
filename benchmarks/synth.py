"""Synthesis benchmark: ``run_synth`` end to end on builtin:nocs -- throughput, worker scaling, stage shares, memory.

    python benchmarks/synth.py [--n 12] [--frames 8] [--sizes 256 512] [--rounds 2] [--quick] [--json out.json]

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
import subprocess
import sys
import tempfile
import time
from pathlib import Path

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
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
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


if __name__ == "__main__":
    main()
