"""Grasp benchmark: the ``contact`` sampler against its baseline ``contact-v1`` (same run, same objects, same hand).

    python benchmarks/grasp.py [--n 4] [--ycb ../shared/data/ycb] [--physics] [--json out.json]

Per category (built-in NOCS objects, a new random shape per grasp; the YCB samples as they are), for both samplers:
- accepted grasps per second (wall clock, one core; objects' fields built inside the timing, as in a run), gate
  pass rate (passing candidates / candidates evaluated), failures (objects left without a grasp: coverage);
- quality of the accepted grasps, all measured afterwards with the same code for both (``grasp_metrics`` with the
  link-level terms, exact distances): fingers in contact, the share of contacting fingers that touch with a middle
  or distal link ("segment contacts"), the largest finger-finger overlap and how many grasps exceed 2 mm, the
  force-closure epsilon (friction 0.7), penetration, and the grasp types (``contact`` only);
- with ``--physics``: the MuJoCo hold test (``hoigen.grasping.physics``; static hand, gravity along +-x, +-y, +-z
  for 1 s each, collision shells within 0.5 mm of the surfaces) of every accepted grasp: held % (>= 4 of 6
  directions) and the median displacement per direction, plus the two controls (no hand, boxed in) per category;
- diversity (approach spread, orientation spread, pose entropy, as before);
- the SDF lever: the ``contact`` sampler once more with its distances interpolated from the dense grid
  (``sdf_grid=True``) instead of exact queries within the band, and the grid's error against trimesh's exact
  signed distance on posed hand vertices.
The GrabNet section (``--grabnet-n``) is unchanged.
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

from hoigen.grasping import (
    ContactGraspSampler,
    ContactV1Sampler,
    GraspConfig,
    GraspError,
    GridSDF,
    SurfaceSDF,
)
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
    grasps, evaluated, passed, failed, reasons = [], 0, 0, 0, []
    make = ContactV1Sampler if config.method == "contact-v1" else ContactGraspSampler
    start = time.perf_counter()
    for k, obj in enumerate(objects):
        sampler = make(obj, hand, config)
        try:
            g = sampler.sample(np.random.default_rng([seed, k]))
        except GraspError as exc:
            evaluated += exc.candidates
            failed += 1
            reasons.append(str(exc)[:160])
            continue
        grasps.append((g, obj))
        evaluated += g.attempts
        passed += g.passed
    elapsed = time.perf_counter() - start
    return {
        "grasps": len(grasps),
        "failed": failed,
        "failure_reasons": reasons,
        "seconds": elapsed,
        "grasps_per_s": len(grasps) / elapsed,
        "gate_pass_rate": passed / max(evaluated, 1),
        **diversity([g for g, _ in grasps]),
        "_grasps": grasps,
    }


def quality(grasps, hand, friction: float) -> dict:
    """The same link-level metrics for every sampler's grasps, with exact distances."""
    from hoigen.grasping.metrics import HandLinks, grasp_metrics
    from hoigen.grasping.sdf import MeshSDF

    rows, types = [], {}
    for g, obj in grasps:
        out = hand.forward(g.params)
        from hoigen.hands.lbs import shaped_rest

        rest_v, rest_j = shaped_rest(hand.data, g.params.betas[0])
        links = HandLinks.from_rest(hand.data.weights, rest_v, rest_j, hand.data.tip_vertex_ids)
        mesh = obj.mesh
        centre = mesh.center_mass if mesh.is_watertight else mesh.bounds.mean(axis=0)
        m = grasp_metrics(
            out.vertices[0],
            hand.faces,
            hand.part_labels,
            MeshSDF(mesh),
            0.003,
            links=links,
            joints16=out.joints_mano[0],
            centre=centre,
            scale=float(np.linalg.norm(mesh.vertices - centre, axis=1).max()),
            friction=friction,
        )
        rows.append(m)
        t = g.metrics.get("grasp_type", "-")
        types[t] = types.get(t, 0) + 1
    if not rows:
        return {"types": types}
    contacting = sum(len(m["finger_links_in_contact"]) for m in rows)
    outer = sum(
        sum(1 for hit in m["finger_links_in_contact"].values() if "middle" in hit or "distal" in hit)
        for m in rows
    )
    overlap = [m["finger_overlap_mm"] for m in rows]
    return {
        "mean_fingers": float(np.mean([m["num_fingers_in_contact"] for m in rows])),
        "segment_contacts": outer / max(contacting, 1),
        "max_overlap_mm": float(np.max(overlap)),
        "overlap_over_2mm": int(sum(o > 2.0 for o in overlap)),
        "force_closure_mean": float(np.mean([m["force_closure"] for m in rows])),
        "force_closure_share": float(np.mean([m["force_closure"] > 0 for m in rows])),
        "max_penetration_mm": float(np.max([m["max_penetration_mm"] for m in rows])),
        "palm_contact_share": float(np.mean([m["palm_contact"] for m in rows])),
        "types": types,
    }


def physics(grasps, hand, friction: float) -> dict:
    from hoigen.grasping.physics import DIRECTION_NAMES, HoldTest

    tests, results = {}, []
    for g, obj in grasps:
        if obj.id not in tests:
            tests[obj.id] = HoldTest(obj.mesh, friction=friction)
        results.append(tests[obj.id].run(hand, g.params))
    if not results:
        return {}
    disp = {
        name: float(np.median([r["directions"][k]["displacement_mm"] for r in results]))
        for k, name in enumerate(DIRECTION_NAMES)
    }
    return {
        "held_share": float(np.mean([r["held"] for r in results])),
        "held_directions_mean": float(np.mean([r["held_directions"] for r in results])),
        "median_displacement_mm": disp,
        "max_shape_deviation_mm": float(max(r["deviation_mm"] for r in results)),
        "tested": len(results),
    }


def controls(obj, friction: float) -> dict:
    from hoigen.grasping.physics import HoldTest

    test = HoldTest(obj.mesh, friction=friction)
    free, boxed = test.control_free_fall(), test.control_boxed()
    return {
        "no_hand_held_directions": free["held_directions"],
        "boxed_held_directions": boxed["held_directions"],
    }


def sdf_baseline(obj, hand, grasp) -> dict:
    import trimesh

    verts = hand.forward(grasp.params).vertices[0]
    surface, grid = SurfaceSDF(obj.mesh), GridSDF(obj.mesh)
    t0 = time.perf_counter()
    kd = surface(verts)
    t1 = time.perf_counter()
    ours = grid(verts)
    t2 = time.perf_counter()
    again = grid(verts)
    t3 = time.perf_counter()
    exact = -trimesh.proximity.signed_distance(obj.mesh, verts)  # trimesh: positive inside
    t4 = time.perf_counter()
    near = np.abs(exact) < grid.band
    del again
    return {
        "vertices": len(verts),
        "kdtree_ms": (t1 - t0) * 1e3,
        "grid_first_ms": (t2 - t1) * 1e3,
        "grid_filled_ms": (t3 - t2) * 1e3,
        "trimesh_exact_ms": (t4 - t3) * 1e3,
        "grid_median_error_mm_in_band": float(np.median(np.abs(ours - exact)[near]) * 1e3),
        "grid_p99_error_mm_in_band": float(np.percentile(np.abs(ours - exact)[near], 99) * 1e3),
        "grid_max_error_mm_in_band": float(np.max(np.abs(ours - exact)[near]) * 1e3),
        "kdtree_p99_error_mm_in_band": float(np.percentile(np.abs(kd - exact)[near], 99) * 1e3),
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
    parser.add_argument("--n", type=int, default=4, help="grasps per category")
    parser.add_argument(
        "--ycb", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data" / "ycb"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--physics", action="store_true", help="MuJoCo hold test of every accepted grasp")
    parser.add_argument("--categories", default=None, help="comma-separated subset of the categories")
    parser.add_argument("--no-grid", action="store_true", help="skip the SDF-grid lever run")
    parser.add_argument(
        "--grabnet-n", type=int, default=0, help="GrabNet proposals per batch size (0 = skip)"
    )
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
    if args.categories:
        keep = args.categories.split(",")
        sets = {k: v for k, v in sets.items() if k in keep}

    new_cfg = GraspConfig()
    friction = new_cfg.friction
    methods = {"contact": new_cfg, "contact-v1": GraspConfig(method="contact-v1")}
    if not args.no_grid:
        methods["contact (grid)"] = GraspConfig(sdf_grid=True)
    results, totals = {}, {m: {"grasps": 0, "seconds": 0.0, "held": 0, "tested": 0} for m in methods}
    for name, objects in sets.items():
        results[name] = {}
        for method, cfg in methods.items():
            r = run_category(objects, hand, cfg, args.seed)
            grasps = r.pop("_grasps")
            r["quality"] = quality(grasps, hand, friction)
            if args.physics and method != "contact (grid)":
                r["physics"] = physics(grasps, hand, friction)
                totals[method]["held"] += round(r["physics"].get("held_share", 0) * len(grasps))
                totals[method]["tested"] += len(grasps)
            totals[method]["grasps"] += r["grasps"]
            totals[method]["seconds"] += r["seconds"]
            results[name][method] = r
            q = r["quality"]
            held = f"{r['physics']['held_share']:.0%}" if r.get("physics") else "-"
            print(
                f"| {name} | {method} | {r['grasps_per_s']:.3f} | {r['gate_pass_rate']:.0%} | {r['failed']} | "
                f"{held} | {q.get('max_overlap_mm', 0):.1f} ({q.get('overlap_over_2mm', 0)}) | "
                f"{q.get('segment_contacts', 0):.0%} | {q.get('force_closure_share', 0):.0%} | "
                f"{q.get('mean_fingers', 0):.1f} | {q.get('max_penetration_mm', 0):.1f} | "
                f"{' '.join(f'{k}:{v}' for k, v in sorted(q['types'].items()))} |",
                flush=True,
            )
        if args.physics:
            results[name]["controls"] = controls(objects[0], friction)
            print(f"  controls on {objects[0].id}: {results[name]['controls']}", flush=True)

    print()
    print(f"n = {args.n} grasps per category, {hand.name} hand, one core")
    print()
    print("| method | grasps | seconds | grasps/s | speed-up vs contact-v1 | held (>= 4/6) |")
    print("|---|---|---|---|---|---|")
    base = totals["contact-v1"]["grasps"] / max(totals["contact-v1"]["seconds"], 1e-9)
    for method, t in totals.items():
        rate = t["grasps"] / max(t["seconds"], 1e-9)
        held = f"{t['held'] / t['tested']:.0%} of {t['tested']}" if t["tested"] else "-"
        print(f"| {method} | {t['grasps']} | {t['seconds']:.1f} | {rate:.3f} | {rate / base:.2f}x | {held} |")
    results["totals"] = totals

    probe = sets.get("can", next(iter(sets.values())))[0]
    g = ContactGraspSampler(probe, hand, new_cfg).sample(np.random.default_rng([args.seed, 0]))
    results["sdf_vs_trimesh_exact"] = s = sdf_baseline(probe, hand, g)
    print()
    print(
        f"SDF on {s['vertices']} posed hand vertices ({probe.id}): KD-tree samples {s['kdtree_ms']:.0f} ms, grid "
        f"{s['grid_first_ms']:.0f} ms first (filling) / {s['grid_filled_ms']:.0f} ms filled, trimesh exact "
        f"{s['trimesh_exact_ms']:.0f} ms; grid error within its band: median {s['grid_median_error_mm_in_band']:.3f}"
        f" mm, p99 {s['grid_p99_error_mm_in_band']:.3f} mm, max {s['grid_max_error_mm_in_band']:.3f} mm (KD-tree "
        f"p99 {s['kdtree_p99_error_mm_in_band']:.3f} mm)"
    )
    if args.grabnet_n > 0:
        results["grabnet"] = grabnet_section(args.grabnet_n, args.seed, args.grabnet)
        if results["grabnet"] is not None:
            print_grabnet(results["grabnet"])
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    main()
