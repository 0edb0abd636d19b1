"""Grasp benchmark: throughput, gate pass rate and diversity per category, with same-process baselines.

    python benchmarks/grasp.py [--n 8] [--ycb ../shared/data/ycb] [--json out.json]

Per category (built-in NOCS objects, a new random shape per grasp; the YCB samples as they are):
- accepted grasps per second (wall clock, one core), gate pass rate (passing candidates / candidates evaluated);
- diversity: spread of approach directions (1 - mean resultant length of the approach normals, 0 = all alike,
  1 = uniform), mean pairwise angle between the hand orientations (deg), and the normalised entropy of k-means
  clusters (k = 4) of the 45-D finger poses (REFERENCE.md's diversity measure; 1 = evenly spread);
- baseline 1 (same process): the sampler with uniform roll (``edge_bias=0``), to show what aiming the fingers at
  the nearest edge buys;
- baseline 2: the SDF used for contacts against trimesh's exact signed distance on the same hand vertices
  (speed ratio and error).

GrabNet section (``--grabnet-n``, default 32 proposals per batch size, 0 skips it; needs torch and smplx): on one
built-in can, with the synthetic MANO-shaped hand, proposals per second of ``GrabNetSampler.generate`` (CoarseNet
sampling + 3 RefineNet iterations with the MANO layer, ungated) at batch sizes 1 and 32, next to contact-grasp
candidates per second (candidates evaluated / seconds) of ``ContactGraspSampler`` with the same hand, same process.
The networks are randomly initialised in GrabNet's released layout with a seeded random 4096-point BPS basis in a
0.15 m ball, unless ``--grabnet DIR`` (or $HOIGEN_GRABNET_DIR) gives the real files. Random weights do not pass the
quality gate, so this measures throughput only. ``--grabnet-only`` runs just this section.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy.cluster.vq import kmeans2
from scipy.spatial.transform import Rotation

from hoigen.grasping import ContactGraspSampler, GraspConfig, GraspError, SurfaceSDF
from hoigen.hands import BuiltinHand
from hoigen.objects import BuiltinSource, FolderSource

CATEGORIES = ("bottle", "bowl", "camera", "can", "laptop", "mug")


def diversity(grasps) -> dict:
    if len(grasps) < 2:
        return {"approach_spread": 0.0, "orientation_spread_deg": 0.0, "pose_entropy": 0.0}
    normals = np.array([g.approach["normal"] for g in grasps])
    rots = Rotation.from_rotvec(np.concatenate([g.params.global_orient for g in grasps]))
    angles = [np.degrees((rots[i].inv() * rots[j]).magnitude()) for i in range(len(grasps)) for j in range(i)]
    poses = np.concatenate([g.params.hand_pose for g in grasps])
    k = min(4, len(grasps))
    _, labels = kmeans2(poses, k, seed=np.random.default_rng(0), minit="++")
    p = np.bincount(labels, minlength=k) / len(labels)
    p = p[p > 0]
    return {
        "approach_spread": float(1.0 - np.linalg.norm(normals.mean(axis=0))),
        "orientation_spread_deg": float(np.mean(angles)),
        "pose_entropy": float(-(p * np.log(p)).sum() / np.log(k)),
    }


def run_category(objects, hand, config: GraspConfig, seed: int) -> dict:
    grasps, evaluated, passed, failed = [], 0, 0, 0
    start = time.perf_counter()
    for k, obj in enumerate(objects):
        sampler = ContactGraspSampler(obj, hand, config)
        try:
            g = sampler.sample(np.random.default_rng([seed, k]))
        except GraspError as exc:
            evaluated += exc.candidates
            failed += 1
            continue
        grasps.append(g)
        evaluated += g.attempts
        passed += g.passed
    elapsed = time.perf_counter() - start
    pen = [g.metrics["max_penetration_mm"] for g in grasps]
    fingers = [g.metrics["num_fingers_in_contact"] for g in grasps]
    return {
        "grasps": len(grasps),
        "failed": failed,
        "seconds": elapsed,
        "grasps_per_s": len(grasps) / elapsed,
        "gate_pass_rate": passed / max(evaluated, 1),
        "mean_fingers": float(np.mean(fingers)) if fingers else 0.0,
        "max_penetration_mm": float(np.max(pen)) if pen else 0.0,
        **diversity(grasps),
        "_grasps": grasps,
    }


def sdf_baseline(obj, hand, grasp) -> dict:
    import trimesh

    verts = hand.forward(grasp.params).vertices[0]
    sdf = SurfaceSDF(obj.mesh)
    t0 = time.perf_counter()
    ours = sdf(verts)
    t1 = time.perf_counter()
    exact = -trimesh.proximity.signed_distance(obj.mesh, verts)  # trimesh: positive inside
    t2 = time.perf_counter()
    near = np.abs(exact) < 0.01
    return {
        "vertices": len(verts),
        "hoigen_ms": (t1 - t0) * 1e3,
        "trimesh_exact_ms": (t2 - t1) * 1e3,
        "speedup": (t2 - t1) / (t1 - t0),
        "median_error_mm_within_1cm": float(np.median(np.abs(ours - exact)[near]) * 1e3),
        "p99_error_mm_within_1cm": float(np.percentile(np.abs(ours - exact)[near], 99) * 1e3),
    }


def _timed(fn, calls: int) -> float:
    """Seconds for ``calls`` calls of ``fn`` after one untimed warm-up call."""
    fn(0)
    start = time.perf_counter()
    for k in range(calls):
        fn(k + 1)
    return time.perf_counter() - start


def grabnet_section(n: int, seed: int, weights: str | None, budget_s: float = 45.0) -> dict | None:
    """GrabNet proposals/s at batch 1 and 32 and contact candidates/s, same synthetic MANO hand and can."""
    if importlib.util.find_spec("torch") is None or importlib.util.find_spec("smplx") is None:
        print("GrabNet section skipped: needs torch and smplx (pip install hoigen[mano])")
        return None
    import torch

    from hoigen.grasping.grabnet import CoarseNet, GrabNet, GrabNetSampler, RefineNet
    from hoigen.hands.mano import ManoHand
    from hoigen.hands.synthetic import write_synthetic_mano

    weights = weights or os.environ.get("HOIGEN_GRABNET_DIR") or None
    if weights:
        model, origin = GrabNet.load(weights), f"weights from {weights}"
    else:
        torch.manual_seed(seed)
        gen = np.random.default_rng(seed)
        direction = gen.normal(size=(4096, 3))
        radius = 0.15 * gen.random((4096, 1)) ** (1 / 3)  # uniform in the ball
        basis = direction / np.linalg.norm(direction, axis=1, keepdims=True) * radius
        model, origin = GrabNet(CoarseNet(), RefineNet(), basis), "random weights, random BPS basis"
    with tempfile.TemporaryDirectory() as tmp:
        write_synthetic_mano(Path(tmp) / "MANO_RIGHT.pkl", np.random.default_rng(seed))
        hand = ManoHand(tmp)
    obj = BuiltinSource(("can",)).object_for(0, np.random.default_rng([seed, CATEGORIES.index("can"), 0]))
    config = GraspConfig(method="grabnet", betas_std=0.0)
    sampler = GrabNetSampler(obj, hand, config, model)

    rows, start = [], time.perf_counter()
    for batch in (1, 32):
        calls = max(2, math.ceil(n / batch))
        seconds = _timed(lambda k, b=batch: sampler.generate(np.random.default_rng([seed, b, k]), b), calls)
        rows.append({"method": "grabnet", "batch": batch, "calls": calls, "per_s": calls * batch / seconds})

    contact = ContactGraspSampler(obj, hand, GraspConfig())
    candidates = passed = grasps = 0
    t0 = time.perf_counter()
    k = 0
    while candidates < n or grasps == 0:
        try:
            g = contact.sample(np.random.default_rng([seed, 99, k]))
            candidates, passed, grasps = candidates + g.attempts, passed + g.passed, grasps + 1
        except GraspError as exc:
            candidates += exc.candidates
        k += 1
        if time.perf_counter() - start > budget_s:
            break
    seconds = time.perf_counter() - t0
    rows.append(
        {
            "method": "contact",
            "batch": GraspConfig().candidates,
            "calls": k,
            "per_s": candidates / seconds,
            "gate_pass_rate": passed / max(candidates, 1),
        }
    )
    return {
        "object": obj.id,
        "hand": "synthetic MANO",
        "weights": origin,
        "torch_threads": torch.get_num_threads(),
        "cuda_available": bool(torch.cuda.is_available()),
        "rows": rows,
    }


def print_grabnet(result: dict) -> None:
    print()
    print(
        f"GrabNet vs contact on {result['object']}, {result['hand']} hand, {result['weights']}, "
        f"torch threads {result['torch_threads']}, CPU"
    )
    print()
    print("| method | batch | per second | note |")
    print("|---|---|---|---|")
    random = result["weights"].startswith("random")
    note = "random weights do not pass the gate, throughput only" if random else "throughput only"
    for row in result["rows"]:
        if row["method"] == "grabnet":
            print(
                f"| GrabNet (CoarseNet + 3 RefineNet iterations + MANO) | {row['batch']} | "
                f"{row['per_s']:.1f} proposals/s | ungated; {note} |"
            )
        else:
            print(
                f"| contact sampler | {row['batch']} per attempt | {row['per_s']:.1f} candidates/s | "
                f"candidates evaluated / s, gate pass {row['gate_pass_rate']:.0%} |"
            )
    print()
    print(
        "GPU: not measured — a GPU number needs a GPU machine (none here; torch.cuda.is_available() = "
        f"{result['cuda_available']}); GrabNetSampler runs its networks on the CPU."
    )


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=8, help="grasps per category")
    parser.add_argument(
        "--ycb", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data" / "ycb"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--grabnet-n", type=int, default=32, help="GrabNet proposals per batch size")
    parser.add_argument("--grabnet", default=None, help="GrabNet folder, else random")
    parser.add_argument("--grabnet-only", action="store_true", help="run only the GrabNet section")
    args = parser.parse_args()

    if args.grabnet_only:
        result = grabnet_section(max(args.grabnet_n, 1), args.seed, args.grabnet)
        if result is not None:
            print_grabnet(result)
            if args.json:
                args.json.write_text(json.dumps({"grabnet": result}, indent=1))
        return

    hand = BuiltinHand()
    sets = {}
    for c, cat in enumerate(CATEGORIES):
        sets[cat] = [
            BuiltinSource((cat,)).object_for(i, np.random.default_rng([args.seed, c, i]))
            for i in range(args.n)
        ]
    if args.ycb.is_dir():
        folder = FolderSource(args.ycb)
        for k in range(len(folder)):
            obj = folder.load(k)
            sets[obj.id] = [obj] * args.n

    rows, results = [], {}
    for name, objects in sets.items():
        ours = run_category(objects, hand, GraspConfig(), args.seed)
        base = run_category(objects, hand, GraspConfig(edge_bias=0.0), args.seed)
        ratio = ours["grasps_per_s"] / max(base["grasps_per_s"], 1e-9)
        results[name] = {
            "hoigen": {k: v for k, v in ours.items() if not k.startswith("_")},
            "baseline_uniform_roll": {k: v for k, v in base.items() if not k.startswith("_")},
            "speedup_vs_uniform_roll": ratio,
        }
        rows.append(
            f"| {name} | {ours['grasps_per_s']:.2f} | {ours['gate_pass_rate']:.0%} | {ours['failed']} | "
            f"{ours['mean_fingers']:.1f} | {ours['max_penetration_mm']:.1f} | {ours['approach_spread']:.2f} | "
            f"{ours['orientation_spread_deg']:.0f} | {ours['pose_entropy']:.2f} | "
            f"{base['grasps_per_s']:.2f} ({base['gate_pass_rate']:.0%}) | {ratio:.2f}x |"
        )
        print(rows[-1], flush=True)

    probe = sets["can"][0]
    g = run_category([probe], hand, GraspConfig(), args.seed)["_grasps"][0]
    results["sdf_vs_trimesh_exact"] = sdf_baseline(probe, hand, g)

    print()
    print(f"n = {args.n} grasps per category, built-in hand, one core")
    print()
    print(
        "| category | grasps/s | gate pass | failed | fingers | max pen. mm | approach spread | orient. spread ° "
        "| pose entropy | baseline grasps/s (pass) | speed-up |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    s = results["sdf_vs_trimesh_exact"]
    print()
    print(
        f"SDF on {s['vertices']} hand vertices: hoigen {s['hoigen_ms']:.1f} ms, trimesh exact "
        f"{s['trimesh_exact_ms']:.1f} ms ({s['speedup']:.0f}x faster); error within 1 cm of the surface: median "
        f"{s['median_error_mm_within_1cm']:.3f} mm, p99 {s['p99_error_mm_within_1cm']:.3f} mm"
    )
    if args.grabnet_n > 0:
        results["grabnet"] = grabnet_section(args.grabnet_n, args.seed, args.grabnet)
        if results["grabnet"] is not None:
            print_grabnet(results["grabnet"])
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
