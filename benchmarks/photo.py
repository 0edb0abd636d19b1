"""Photo benchmark: the real-size SD-1.4 UNet with HOIDiffusion's three real-size T2I-Adapters, random-initialised.

    python benchmarks/photo.py [--size 128] [--frames 2] [--rounds 1] [--threads N] [--json out.json]
    python benchmarks/photo.py --device cuda            # 512², fp16, 8 frames x 2 sequences, 10 rounds

Times are seconds of GPU wall time (synchronised) on CUDA and CPU seconds of this process (``process_time``,
so other processes on a shared machine do not inflate them) on the CPU. Everything in one process, the same
weights for every variant (no download: architectures from
``hoigen.diffusion.hoidiffusion.sd_configs``, weights drawn at random; timings do not depend on the values). One
denoising step = one UNet call on a classifier-free-guidance batch (2 rows per frame), as
``StableDiffusionAdapterPipeline`` makes it. Measured, interleaved per round (median over rounds; one warm-up):

- adapters: the UNet step for one frame without adapter residuals vs with the summed features of the three adapters
  added after each down level (``down_intrablock_additional_residuals``), and the MultiAdapter forward itself
  (run once per image: the pipeline computes the features before the denoising loop). Overhead is reported per
  step and per image (``--steps`` steps + one adapter pass), target <= 10 %.
- anchor attention: a step over T frames of one sequence with stock self-attention vs
  ``hoigen.diffusion.hoidiffusion.attention``'s anchor-frame processor (each frame attends to [middle frame ;
  itself] on attn1), target <= 15 %.
- FLOPs at 512² with T = 8 (``count_flops``, on the meta device, so also without a GPU): per frame and step, the
  adapters' share, and the anchor processor's extra attention FLOPs.
- batching: frames per second for one frame per UNet call vs ``--sequences`` sequences of T frames per call
  (anchor attention on), counting UNet steps and the adapter pass; the CPU figures use the stated small size.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hoigen.diffusion.hoidiffusion.sd_configs import sd14_configs  # noqa: E402


def _random_model(cls, config: dict, device: str, dtype, seed: int):
    """``cls(**config)`` with random weights, built on the meta device and filled in place (fast, no init pass)."""
    with torch.device("meta"):
        model = cls(**config)
    model = model.to_empty(device=device)
    gen = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1:  # norm scales 1, biases 0: activations keep a sane magnitude
                p.fill_(1.0 if name.endswith("weight") and "norm" in name else 0.0)
            else:
                p.normal_(0.0, (1.0 / p[0].numel()) ** 0.5, generator=gen)
        for b in model.buffers():
            b.zero_()
    return (model if dtype == torch.float32 else model.to(dtype)).eval()


def count_flops(size: int = 512, frames: int = 8, steps: int = 50) -> dict:
    """FLOPs of the real models at ``size`` counted on the meta device (no weights, no GPU; seconds on a CPU).

    The anchor processor's extra work is its attention over [anchor ; frame] keys: for the T - 1 non-anchor
    frames the score and value products of every ``attn1`` double (projections are computed once per frame), so
    its overhead = (T - 1) / T x the share of attn1's score/value FLOPs in a stock step.
    """
    from diffusers import MultiAdapter, T2IAdapter, UNet2DConditionModel
    from torch.utils.flop_counter import FlopCounterMode

    configs = sd14_configs()
    with torch.device("meta"):
        unet = UNet2DConditionModel(**configs["unet"]).eval()
        multi = MultiAdapter([T2IAdapter(**configs["adapter"]) for _ in range(3)])
    latent, rows = size // 8, 2 * frames
    x = torch.empty(rows, 4, latent, latent, device="meta")
    text = torch.empty(rows, 77, 768, device="meta")
    cond = [torch.empty(frames, 3, size, size, device="meta") for _ in range(3)]
    with torch.no_grad():
        feats = [torch.cat([f, f]) for f in multi(cond, adapter_weights=[1.0, 1.0, 1.0])]

    def counted(fn):
        mode = FlopCounterMode(display=False)
        with mode, torch.no_grad():
            fn()
        return mode

    adapter_pass = counted(lambda: multi(cond, adapter_weights=[1.0, 1.0, 1.0])).get_total_flops()
    plain = counted(lambda: unet(x, 500, text)).get_total_flops()
    mode = counted(
        lambda: unet(x, 500, text, down_intrablock_additional_residuals=[f.clone() for f in feats])
    )
    with_adapters = mode.get_total_flops()
    per_module = mode.get_flop_counts()
    attention = 0
    for name, ops in per_module.items():
        if name.endswith("attn1"):
            projections = sum(
                sum(per_module.get(name + sub, {}).values())
                for sub in (".to_q", ".to_k", ".to_v", ".to_out.0")
            )
            attention += sum(ops.values()) - projections
    share = attention / with_adapters
    return {
        "size": size,
        "frames": frames,
        "unet_gflop_per_frame_step": round(plain / rows * 2 / 1e9, 1),  # both CFG rows of one frame
        "adapter_pass_gflop_per_frame": round(adapter_pass / frames / 1e9, 1),
        "adapter_overhead_per_step_pct": round(100 * (with_adapters / plain - 1), 3),
        "adapter_overhead_per_image_pct": round(
            100 * ((steps * with_adapters + adapter_pass) / (steps * plain) - 1), 2
        ),
        "attn1_score_value_share_pct": round(100 * share, 1),
        "anchor_overhead_pct": round(100 * share * (frames - 1) / frames, 1),
    }


def _timer(device: str):
    if device.startswith("cuda"):

        def timed(fn):
            torch.cuda.synchronize()
            t = time.perf_counter()
            fn()
            torch.cuda.synchronize()
            return time.perf_counter() - t

    else:  # CPU seconds of this process: on a shared machine, other processes' load does not inflate them

        def timed(fn):
            t = time.process_time()
            fn()
            return time.process_time() - t

    return timed


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--size", type=int, default=None, help="image size [cpu 128, cuda 512]")
    parser.add_argument("--frames", type=int, default=None, help="frames T of a sequence [cpu 2, cuda 8]")
    parser.add_argument(
        "--sequences", type=int, default=None, help="sequences per batched call [cpu 1, cuda 2]"
    )
    parser.add_argument("--rounds", type=int, default=None, help="[cpu 1, cuda 10]")
    parser.add_argument(
        "--steps", type=int, default=50, help="denoising steps per image, for per-image figures"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads [torch's default]")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--no-flops", action="store_true", help="skip the FLOP count of the 512² models")
    args = parser.parse_args(argv)

    from diffusers import MultiAdapter, T2IAdapter, UNet2DConditionModel

    from hoigen.diffusion.hoidiffusion.attention import set_anchor_attention, set_frame_groups

    cuda = args.device.startswith("cuda")
    size = args.size or (512 if cuda else 128)
    frames = args.frames or (8 if cuda else 2)
    sequences = args.sequences or (2 if cuda else 1)
    rounds = args.rounds or (10 if cuda else 1)
    dtype = torch.float16 if cuda else torch.float32
    if args.threads:
        torch.set_num_threads(args.threads)
    if size % 64:
        raise SystemExit(
            f"--size must be a multiple of 64 (the adapters' 8x8 unshuffle x 3 downsamplings), got {size}"
        )

    configs = sd14_configs()
    t0 = time.perf_counter()
    unet = _random_model(UNet2DConditionModel, configs["unet"], args.device, dtype, 0)
    adapters = [_random_model(T2IAdapter, configs["adapter"], args.device, dtype, 1 + i) for i in range(3)]
    multi = MultiAdapter(adapters)
    build_s = time.perf_counter() - t0
    latent = size // 8
    gen = torch.Generator(device=args.device).manual_seed(0)

    def inputs(n_frames: int):
        rows = 2 * n_frames  # [uncond frames ; cond frames]
        x = torch.randn(rows, 4, latent, latent, generator=gen, device=args.device).to(dtype)
        text = torch.randn(rows, 77, 768, generator=gen, device=args.device).to(dtype)
        cond = [
            torch.rand(n_frames, 3, size, size, generator=gen, device=args.device).to(dtype) for _ in adapters
        ]
        return x, text, cond

    def adapter_features(cond):
        feats = multi(cond, adapter_weights=[1.0, 1.0, 1.0])
        return [torch.cat([f, f]) for f in feats]  # the CFG batch: the same features for both halves

    timed = _timer(args.device)
    one = inputs(1)
    batch_frames = frames * sequences
    seq = inputs(frames)
    many = inputs(batch_frames) if sequences > 1 else seq
    with torch.inference_mode():
        feats_one = adapter_features(one[2])
        feats_seq = adapter_features(seq[2])
        feats_many = adapter_features(many[2]) if sequences > 1 else feats_seq

        def step(x, text, feats=None):
            residuals = [f.clone() for f in feats] if feats is not None else None
            return unet(x, 500, text, down_intrablock_additional_residuals=residuals).sample

        def anchor(enabled: bool, groups):
            procs = set_anchor_attention(unet, enabled)
            if enabled:
                set_frame_groups(procs, groups)

        # warm-up: one call of each batch shape (allocator, kernels); a full extra round on the GPU
        for _ in range(3 if cuda else 1):
            step(one[0], one[1], feats_one)
            step(seq[0], seq[1], feats_seq)
            if sequences > 1:
                step(many[0], many[1], feats_many)
        results: dict[str, list[float]] = {}
        for r in range(1, rounds + 1):
            anchor(False, None)
            sample = {
                "plain_1": timed(lambda: step(one[0], one[1])),
                "adapter_1": timed(lambda: step(one[0], one[1], feats_one)),
                "adapter_pass_1": timed(lambda: adapter_features(one[2])),
            }
            # alternate which attention goes first, so drift in machine load hits both alike
            for enabled in (False, True) if r % 2 else (True, False):
                anchor(enabled, [frames])
                sample["anchor_T" if enabled else "stock_T"] = timed(lambda: step(seq[0], seq[1], feats_seq))
            if sequences > 1:
                anchor(True, [frames] * sequences)
                sample["anchor_batched"] = timed(lambda: step(many[0], many[1], feats_many))
                sample["adapter_pass_batched"] = timed(lambda: adapter_features(many[2]))
            else:  # one sequence per call: the batched call is the T-frame anchor call
                sample["anchor_batched"] = sample["anchor_T"]
                sample["adapter_pass_batched"] = timed(lambda: adapter_features(seq[2]))
            for k, v in sample.items():
                results.setdefault(k, []).append(v)
            print(f"round {r}: " + ", ".join(f"{k} {v:.3f} s" for k, v in sample.items()), flush=True)
        anchor(False, None)

    med = {k: statistics.median(v) for k, v in results.items()}
    steps = args.steps
    per_image_plain = steps * med["plain_1"]
    per_image_adapter = steps * med["adapter_1"] + med["adapter_pass_1"]
    fps_1 = 1.0 / per_image_adapter
    fps_batched = batch_frames / (steps * med["anchor_batched"] + med["adapter_pass_batched"])
    report = {
        "device": torch.cuda.get_device_name(0)
        if cuda
        else f"CPU ({platform.processor() or platform.machine()})",
        "torch_threads": torch.get_num_threads(),
        "timer": "cuda-synchronised wall time" if cuda else "process CPU time",
        "wall_s": round(time.perf_counter() - t0, 1),
        "dtype": str(dtype).replace("torch.", ""),
        "size": size,
        "latent": latent,
        "frames": frames,
        "sequences": sequences,
        "rounds": rounds,
        "steps_per_image": steps,
        "build_s": round(build_s, 1),
        "parameters_M": {
            "unet": round(sum(p.numel() for p in unet.parameters()) / 1e6, 2),
            "adapter": round(sum(p.numel() for p in adapters[0].parameters()) / 1e6, 2),
        },
        "median_s": {k: round(v, 4) for k, v in med.items()},
        "adapter_overhead_per_step_pct": round(100 * (med["adapter_1"] / med["plain_1"] - 1), 1),
        "adapter_overhead_per_image_pct": round(100 * (per_image_adapter / per_image_plain - 1), 1),
        "anchor_overhead_pct": round(100 * (med["anchor_T"] / med["stock_T"] - 1), 1),
        "frames_per_s_batch1": round(fps_1, 4),
        "frames_per_s_batched": round(fps_batched, 4),
        "batched_speedup": round(fps_batched / fps_1, 2),
    }
    if not args.no_flops:
        report["flops_512"] = count_flops(512, 8, steps)
    print(json.dumps(report, indent=1))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
