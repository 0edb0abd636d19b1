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
"""

from __future__ import annotations

import argparse
import json
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


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=8, help="grasps per category")
    parser.add_argument("--ycb", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data" / "ycb")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    hand = BuiltinHand()
    sets = {}
    for c, cat in enumerate(CATEGORIES):
        sets[cat] = [
            BuiltinSource((cat,)).object_for(i, np.random.default_rng([args.seed, c, i])) for i in range(args.n)
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
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
