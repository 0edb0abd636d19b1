"""Built-in hand v2 next to v1, same process: contact-grasp throughput and gate figures per built-in category, and
the cost of one skinning pass.

    python benchmarks/hands.py [--n 3] [--json out.json]

Per category and hand: accepted grasps per second (wall clock, one core, interleaved v1/v2 on the same objects and
seeds), gate pass rate (passing candidates / candidates evaluated), failed objects, mean fingers in contact and max
penetration (mm). Then the median time of ``lbs`` on a batch of 8 poses for each hand.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from hoigen.grasping import ContactGraspSampler, GraspConfig, GraspError
from hoigen.hands import BuiltinHand, HandParams
from hoigen.hands.lbs import lbs
from hoigen.objects import BuiltinSource

CATEGORIES = ("bottle", "bowl", "camera", "can", "laptop", "mug")


def grasp_figures(hands: dict, n: int, seed: int) -> dict:
    out = {}
    for category in CATEGORIES:
        source = BuiltinSource((category,))
        objects = [source.object_for(k, np.random.default_rng([seed, k])) for k in range(n)]
        row = {
            name: {"seconds": 0.0, "grasps": [], "evaluated": 0, "passed": 0, "failed": 0} for name in hands
        }
        for k, obj in enumerate(objects):
            for name, hand in hands.items():
                acc = row[name]
                start = time.perf_counter()
                try:
                    g = ContactGraspSampler(obj, hand, GraspConfig()).sample(
                        np.random.default_rng([seed, k, 1])
                    )
                    acc["grasps"].append(g)
                    acc["evaluated"] += g.attempts
                    acc["passed"] += g.passed
                except GraspError as exc:
                    acc["evaluated"] += exc.candidates
                    acc["failed"] += 1
                acc["seconds"] += time.perf_counter() - start
        out[category] = {
            name: {
                "grasps_per_s": len(a["grasps"]) / a["seconds"],
                "gate_pass": a["passed"] / max(a["evaluated"], 1),
                "failed": a["failed"],
                "fingers": float(np.mean([g.metrics["num_fingers_in_contact"] for g in a["grasps"]] or [0])),
                "max_penetration_mm": float(
                    max([g.metrics["max_penetration_mm"] for g in a["grasps"]] or [0])
                ),
            }
            for name, a in row.items()
        }
    return out


def skinning_ms(hand, rounds: int = 20) -> float:
    rng = np.random.default_rng(0)
    params = HandParams(
        rng.normal(0, 1, (8, 3)),
        rng.normal(0, 0.5, (8, 45)),
        rng.normal(0, 0.1, (8, 3)),
        rng.normal(0, 1, (8, 10)),
    )
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        lbs(hand.data, params)
        times.append(time.perf_counter() - start)
    return 1000.0 * float(np.median(times))


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=3, help="objects per category")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    hands = {"v1": BuiltinHand(version=1), "v2": BuiltinHand(version=2)}
    figures = grasp_figures(hands, args.n, args.seed)
    print("| category | hand | grasps/s | gate pass | failed | fingers | max pen. mm |")
    print("|---|---|---|---|---|---|---|")
    for category, row in figures.items():
        for name, f in row.items():
            print(
                f"| {category} | {name} | {f['grasps_per_s']:.2f} | {100 * f['gate_pass']:.0f}% | {f['failed']} | "
                f"{f['fingers']:.1f} | {f['max_penetration_mm']:.1f} |"
            )
    skin = {name: skinning_ms(hand) for name, hand in hands.items()}
    for name, hand in hands.items():
        print(f"lbs, batch 8, {name} ({hand.data.num_vertices} vertices): {skin[name]:.1f} ms")
    print(f"v2 / v1 skinning time: {skin['v2'] / skin['v1']:.2f}x")
    if args.json:
        args.json.write_text(json.dumps({"grasps": figures, "lbs_ms": skin}, indent=2))


if __name__ == "__main__":
    main()
