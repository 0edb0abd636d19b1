"""HVG-3D benchmark: transformer step time of base vs base + 3D ControlNet, same process, real width.

    python benchmarks/video.py [--layers 7] [--repeats 2] [--json out.json]

Configuration: CogVideoX-5B-I2V blocks at their real width (48 heads × 64 = 3072, time embedding 512, text
embedding 4096), but only ``--layers`` L blocks (default 7) and a small latent (2 latent frames = 5 video frames,
8 × 12 latent pixels -> 48 video tokens, 16 text tokens), batch 1, fp32 on CPU, no gradient (inference step).
With L = 7, K = 3 copies is exactly the DaS fraction 18/42 and K = 7 the HVG-3D "copy every block" choice
(42/42), so the step-time ratios transfer to the 42-block model up to the fixed (patch embedding, output) part,
which is a larger share here than at full size (the ratios here are slightly pessimistic for K and optimistic for
nothing). Measured configurations:

- base: the plain transformer;
- K=3 and K=7 tracking branch only;
- K=3 + points, the tokenizer run every step (training); K=3 + points cached (inference: the point tokens of a
  sample are computed once and reused for all sampler steps). The point branch is scaled to the latent: per frame
  N = 512 points, M = 32 centres of k = 32 — about 100 grouped points per video token, as the real Uni3D-B setting
  (49 frames × 512 centres × 64 / 17 550 tokens ≈ 91) has.

Time: CPU seconds of this process per step (``time.process_time``, robust to other processes on the cores), each
ControlNet configuration measured alternately with the base (the same hooks attached, condition None) and the
ratio taken against that paired base. Peak memory: the process's peak RSS growth (``ru_maxrss``) after each configuration, run in increasing size
(each peak includes the base). Reported derived numbers (labelled as such): parameters of the full model from the
meta device and the GPU memory a full-size bf16 run needs.
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import resource
import time

import torch


def _maxrss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def _cpu_seconds(fn) -> float:
    """CPU seconds of this process for one call (all threads): robust to other processes sharing the cores."""
    t0 = time.process_time()
    fn()
    return time.process_time() - t0


def _paired(base_fn, control_fn, repeats: int) -> tuple[float, float]:
    """(best base, best control) CPU seconds, measured alternately so both see the same conditions."""
    control_fn()  # warm-up
    base, control = float("inf"), float("inf")
    for _ in range(repeats):
        base = min(base, _cpu_seconds(base_fn))
        control = min(control, _cpu_seconds(control_fn))
    return base, control


def main() -> None:
    from diffusers import CogVideoXTransformer3DModel

    from hoigen.diffusion.hvg3d.fixtures import COGVIDEOX_5B_I2V_TRANSFORMER
    from hoigen.diffusion.hvg3d.model import ControlCondition, HVG3DControlNet

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=7)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_grad_enabled(False)
    layers = args.layers
    k_das = max(1, round(layers * 18 / 42))
    frames, lat_h, lat_w, text = 2, 8, 12, 16
    video_frames = 4 * (frames - 1) + 1
    config = {
        **COGVIDEOX_5B_I2V_TRANSFORMER,
        "num_layers": layers,
        "sample_frames": video_frames,
        "sample_height": lat_h,
        "sample_width": lat_w,
        "max_text_seq_length": text,
    }
    rss0 = _maxrss_gb()
    base = CogVideoXTransformer3DModel(**config).eval()
    rss_base = _maxrss_gb()
    g = torch.Generator().manual_seed(1)
    inputs = dict(
        hidden_states=torch.randn(1, frames, 32, lat_h, lat_w, generator=g),
        encoder_hidden_states=torch.randn(1, text, 4096, generator=g),
        timestep=torch.tensor([500]),
        return_dict=False,
    )
    tracking = torch.randn(1, frames, 32, lat_h, lat_w, generator=g)
    points = torch.randn(1, video_frames, 512, 3, generator=g) * 0.05 + torch.tensor([0.0, 0.0, 0.4])
    labels = torch.randint(0, 2, (1, 512), generator=g)
    K = torch.tensor([[60.0, 0.0, 47.5], [0.0, 60.0, 31.5], [0.0, 0.0, 1.0]])  # noqa: N806 - 96x64 px video

    def step():
        return base(**inputs)[0]

    results = {"layers": layers, "tokens": {"video": frames * (lat_h // 2) * (lat_w // 2), "text": text}}
    step()  # warm-up
    timings, ratios = {"base": _cpu_seconds(step)}, {"base": 1.0}
    print(f"base ({layers} blocks): {timings['base']:.3f} CPU s/step", flush=True)
    memory = {"base": rss_base - rss0}
    point_kw = dict(num_points=512, num_centres=32, group_size=32)
    for name, k, with_points in (
        (f"K={k_das}", k_das, False),
        (f"K={k_das} + points", k_das, True),
        (f"K={layers}", layers, False),
    ):
        net = HVG3DControlNet.from_transformer(base, num_blocks=k, points=with_points, **point_kw).eval()
        with torch.no_grad():  # trained-like: non-zero linears (cost is the same, but nothing is skipped)
            for linear in [net.in_linear, *net.out_linears]:
                linear.weight.normal_(0.0, 0.01)
        net.attach(base)
        condition = ControlCondition(tracking, points if with_points else None, labels, K)

        def base_step(net=net, with_points=with_points):
            net.use_tracking = net.use_points = False  # hooks attached, both branches off: the plain base
            return base(**inputs)[0]

        def control_step(condition=condition, net=net, with_points=with_points):
            net.use_tracking, net.use_points = True, with_points
            net.set_condition(condition)  # resets the point cache: the tokenizer runs every step
            return base(**inputs)[0]

        paired_base, timings[name] = _paired(base_step, control_step, args.repeats)
        ratios[name] = timings[name] / paired_base
        memory[name] = _maxrss_gb() - rss0
        print(
            f"{name}: {timings[name]:.3f} CPU s/step, {ratios[name]:.3f} x base ({paired_base:.3f})",
            flush=True,
        )
        if with_points:
            net.set_condition(condition)
            base(**inputs)  # fills the cache

            def cached_step(net=net):
                net.use_tracking = net.use_points = True  # the condition (and its point cache) stays set
                return base(**inputs)[0]

            grid = (frames, lat_h // 2, lat_w // 2)
            tokens_only = functools.partial(net.point_grid_tokens, condition, grid)
            tokens_only()  # warm-up
            timings["point tokens alone"] = _cpu_seconds(tokens_only)
            ratios["point tokens alone"] = timings["point tokens alone"] / paired_base
            print(f"point tokens alone: {timings['point tokens alone']:.3f} CPU s", flush=True)

            cached = name + " (cached)"
            paired_base, timings[cached] = _paired(base_step, cached_step, args.repeats)
            ratios[cached] = timings[cached] / paired_base
            print(f"{cached}: {timings[cached]:.3f} CPU s/step, {ratios[cached]:.3f} x base", flush=True)
        net.detach()
        del net, condition
        gc.collect()

    results["cpu_seconds_per_step"] = timings
    results["ratio_to_base"] = ratios
    results["peak_rss_growth_gb"] = memory
    with torch.device("meta"):
        full = CogVideoXTransformer3DModel(**COGVIDEOX_5B_I2V_TRANSFORMER)
        counts = {
            "transformer": sum(p.numel() for p in full.parameters()),
            "block": sum(p.numel() for p in full.transformer_blocks[0].parameters()),
        }
        for k in (18, 42):
            net = HVG3DControlNet.from_transformer(full, num_blocks=k)
            counts[f"controlnet K={k}"] = sum(p.numel() for p in net.parameters())
    results["parameters"] = counts
    results["derived_full_size"] = _derived(counts, results["ratio_to_base"], k_das, layers)

    print(f"real width 3072 (48 heads x 64), {layers} blocks, {results['tokens']} tokens, fp32 CPU, batch 1")
    print(f"{'config':28s} {'CPU s':>8s} {'x base':>7s} {'peak RSS GB':>12s}")
    for name, seconds in timings.items():
        mem = memory.get(name.replace(" (cached)", ""), float("nan"))
        print(f"{name:28s} {seconds:8.3f} {ratios[name]:7.3f} {mem:12.2f}")
    for name, value in counts.items():
        print(f"parameters {name}: {value / 1e9:.3f} B")
    for name, value in results["derived_full_size"].items():
        print(f"derived: {name}: {value}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=2)


def _derived(counts: dict, ratios: dict, k_das: int, layers: int) -> dict:
    """Full-size numbers derived from the measured per-block ratio and the exact parameter counts (not measured)."""
    per_copy = (ratios[f"K={layers}"] - 1.0) / layers  # step cost of one copy relative to the L-block base
    gb = 1024**3
    t5_xxl, vae = 4.76e9, 0.2e9  # T5-XXL encoder and the CogVideoX VAE, parameters
    weights_k18 = 2 * (counts["transformer"] + counts["controlnet K=18"] + vae) / gb
    # inference activations (bf16, CFG batch 2, 13 x 30 x 45 + 226 tokens): a few hidden states of 2 x 17776 x 3072
    hidden = 2 * 17776 * 3072 * 2 / gb
    return {
        "K=18 step / base (42 blocks, from the measured per-copy cost)": round(
            1.0 + 18 * per_copy * layers / 42, 3
        ),
        "K=42 step / base (42 blocks)": round(1.0 + 42 * per_copy * layers / 42, 3),
        "bf16 weights, transformer + K=18 ControlNet + VAE (GB)": round(weights_k18, 1),
        "bf16 T5-XXL text encoder (GB, offloadable: prompts are encoded once)": round(2 * t5_xxl / gb, 1),
        "bf16 activations per hidden state at 49x480x720 with CFG (GB)": round(hidden, 2),
        "bf16 weights, transformer + K=42 ControlNet + VAE (GB)": round(
            2 * (counts["transformer"] + counts["controlnet K=42"] + vae) / gb, 1
        ),
    }


if __name__ == "__main__":
    main()
