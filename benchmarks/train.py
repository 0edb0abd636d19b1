"""Training-step benchmark: samples/s and peak memory of one optimizer step per model, with vs without gradient
checkpointing and (HVG-3D) with vs without cached latents.

    python benchmarks/train.py [--data SHARDS] [--steps 3] [--batch 2] [--json out.json]

Configurations (tiny, but at real layer widths where it matters):

- **HOIDiffusion**: a UNet2DConditionModel with SD-1.4's first two level widths (320, 640), one layer per block,
  cross-attention on the first level, head dim 40 (8 heads), the tiny fixture's VAE and CLIP, three fresh full
  T2I-Adapters of the same widths; 64² crops, batch ``--batch``; trainable = adapters + UNet decoder half.
- **HVG-3D**: a CogVideoX transformer with the real head width 64 (8 heads: width 512, 1/6 of 5B's 3072), 2 blocks,
  a 1-block ControlNet with the point branch (64 points), the tiny fixture's VAE and T5; 5 frames at 48×32,
  batch 1. Cached = the latents precomputed by ``--cache-latents`` (VAE/T5 not run in the step).

Each configuration runs in its own process (fresh allocator): a warm-up step, then ``--steps`` timed steps
(data loading excluded: one batch reused). Memory = the timed steps' peak above the state after the warm-up step
(models, AdamW state, batch): activations, gradients and temporaries — CUDA ``max_memory_allocated`` minus the
allocation then on a GPU; on CPU the peak RSS (``/proc/self/clear_refs`` resets it, after ``malloc_trim``) minus
the RSS then.
Times on a shared CPU are noisy: compare the ratios, and rerun when the load average is high.
The shards (2 bottle sequences, 5 frames, 48×32) are made once with ``hoigen synth`` unless ``--data`` is given.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _rss_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _models(root: Path) -> dict:
    """Write the benchmark's model folders under ``root`` (once)."""
    import torch
    from diffusers import CogVideoXTransformer3DModel, UNet2DConditionModel

    from hoigen.diffusion.hoidiffusion.fixtures import write_tiny_hoidiffusion
    from hoigen.diffusion.hvg3d.fixtures import tiny_transformer_config, write_tiny_cogvideox

    sd, cog = root / "sd", root / "cog"
    if not sd.exists():
        write_tiny_hoidiffusion(sd, seed=0)
        text_dim = json.loads((sd / "text_encoder" / "config.json").read_text())["hidden_size"]
        torch.manual_seed(0)
        unet = UNet2DConditionModel(
            sample_size=32, in_channels=4, out_channels=4, block_out_channels=(320, 640), layers_per_block=1,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=text_dim, attention_head_dim=8, norm_num_groups=32,
        )
        import shutil

        shutil.rmtree(sd / "unet")
        unet.save_pretrained(sd / "unet", safe_serialization=True)
        shutil.rmtree(sd / "adapters")
        (sd / "hoigen_weights.json").unlink()  # no longer the fixture it describes
    if not cog.exists():
        write_tiny_cogvideox(cog, 48, 32, 5)
        config = {**tiny_transformer_config(48, 32, 5, num_layers=2), "num_attention_heads": 8,
                  "attention_head_dim": 64, "time_embed_dim": 512}
        torch.manual_seed(0)
        import shutil

        shutil.rmtree(cog / "transformer")
        CogVideoXTransformer3DModel(**config).save_pretrained(cog / "transformer", safe_serialization=True)
    return {"sd": sd, "cog": cog}


def one(spec: dict) -> dict:
    """Run one configuration in this process."""
    import torch
    from accelerate import Accelerator

    from hoigen.diffusion.training.data import collate_examples
    from hoigen.diffusion.training.loop import LoopConfig

    torch.set_num_threads(int(spec.get("threads", 1)))
    gpu = torch.cuda.is_available()
    out = Path(spec["out"])
    loop = LoopConfig(out=str(out), steps=spec["steps"] + 1, batch_size=spec["batch"], num_workers=0, shuffle=0,
                      tracker="none", gradient_checkpointing=spec["checkpointing"])
    if spec["model"] == "hoidiffusion":
        from hoigen.diffusion.training.hoidiffusion import HOIDiffusionTask, HOIDiffusionTrainConfig

        task = HOIDiffusionTask(HOIDiffusionTrainConfig(
            data=spec["data"], sd=spec["sd"], resolution=64, crop_margin=4, reg_prob=0.0, sample_count=0))
    else:
        from hoigen.diffusion.training.hvg3d import HVG3DTask, HVG3DTrainConfig

        task = HVG3DTask(HVG3DTrainConfig(
            data=spec["data"], cogvideox=spec["cog"], num_blocks=1, num_points=64, num_centres=16, group_size=8,
            point_encoder_dim=32, point_token_dim=24, cache_latents=spec["cached"]))
    accelerator = Accelerator(cpu=not gpu)
    task.setup(accelerator, loop, torch.float32)
    if spec["checkpointing"]:
        task.enable_gradient_checkpointing()
    module = task.trainable_module()
    params = [p for p in module.parameters() if p.requires_grad]
    optimizer = task.optimizer(params)
    examples = [e for e in task.dataset(0) if not e.get("_empty")]
    batch = collate_examples((examples * spec["batch"])[: spec["batch"]])

    def step(i: int) -> None:
        loss, _ = task.loss(module, batch, torch.Generator().manual_seed(i))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step(0)  # warm-up: lazy inits and the AdamW state (part of the set-up state measured against)
    if gpu:
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    else:
        import ctypes
        import gc

        gc.collect()
        ctypes.CDLL("libc.so.6").malloc_trim(0)  # hand freed activations back, so RSS is the live state
        Path("/proc/self/clear_refs").write_text("5")
        base = _rss_kb("VmRSS")
    t0 = time.perf_counter()
    for i in range(spec["steps"]):
        step(i + 1)
    if gpu:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    peak_mb = (torch.cuda.max_memory_allocated() - base) / 2**20 if gpu else (_rss_kb("VmHWM") - base) / 1024
    return {
        "samples_per_s": spec["batch"] * spec["steps"] / seconds,
        "seconds_per_step": seconds / spec["steps"],
        "peak_mb": peak_mb,
        "trainable_m": sum(p.numel() for p in params) / 1e6,
        "device": "cuda" if gpu else "cpu",
    }


def make_data(folder: Path) -> Path:
    from hoigen.config import RunConfig
    from hoigen.synth.run import SynthJob, run_synth

    out = folder / "data"
    if not (out / "manifest.json").is_file():
        config = RunConfig().replace(camera={"preset": "48x32"}, trajectory={"frames": 5}, grasp={"candidates": 2},
                                     objects={"categories": ("bottle",)})
        run_synth(SynthJob(config, out, n=2, samples_per_shard=1), workers=1, progress=False)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=None, help="training shards (default: made once in a temp folder)")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch", type=int, default=2, help="HOIDiffusion batch (HVG-3D uses 1)")
    parser.add_argument("--work", default=None, help="folder for models/data (default: a temp folder)")
    parser.add_argument("--json", default=None)
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print("RESULT " + json.dumps(one(json.loads(args.one))))
        return
    work = Path(args.work or tempfile.mkdtemp(prefix="hoigen-bench-train-"))
    work.mkdir(parents=True, exist_ok=True)
    load0 = os.getloadavg()
    data = args.data or str(make_data(work))
    models = _models(work)
    configs = [
        ("hoidiffusion", False, False), ("hoidiffusion", True, False),
        ("hvg3d", False, False), ("hvg3d", True, False), ("hvg3d", False, True), ("hvg3d", True, True),
    ]
    results = {}
    for model, ckpt, cached in configs:
        name = f"{model}{' +ckpt' if ckpt else ''}{' +cached' if cached else ''}"
        spec = {"model": model, "checkpointing": ckpt, "cached": cached, "steps": args.steps,
                "batch": args.batch if model == "hoidiffusion" else 1, "data": data, "sd": str(models["sd"]),
                "cog": str(models["cog"]), "out": str(work / "runs" / name.replace(" ", "").replace("+", "_"))}
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        proc = subprocess.run([sys.executable, __file__, "--one", json.dumps(spec)], capture_output=True, text=True,
                              env=env)
        line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
        if proc.returncode or line is None:
            raise SystemExit(f"{name} failed:\n{proc.stderr[-3000:]}")
        results[name] = json.loads(line[len("RESULT "):])
        r = results[name]
        print(f"{name:24s} {r['samples_per_s']:8.3f} samples/s  {r['seconds_per_step']:7.3f} s/step  "
              f"peak +{r['peak_mb']:8.1f} MB  trainable {r['trainable_m']:.2f} M  ({r['device']})", flush=True)
    ratios = {
        "hoidiffusion checkpointing time x": results["hoidiffusion"]["samples_per_s"]
        / results["hoidiffusion +ckpt"]["samples_per_s"],
        "hoidiffusion checkpointing memory x": results["hoidiffusion +ckpt"]["peak_mb"]
        / max(results["hoidiffusion"]["peak_mb"], 1e-9),
        "hvg3d checkpointing time x": results["hvg3d"]["samples_per_s"] / results["hvg3d +ckpt"]["samples_per_s"],
        "hvg3d checkpointing memory x": results["hvg3d +ckpt"]["peak_mb"] / max(results["hvg3d"]["peak_mb"], 1e-9),
        "hvg3d cached speed-up x": results["hvg3d +cached"]["samples_per_s"] / results["hvg3d"]["samples_per_s"],
        "hvg3d cached memory x": results["hvg3d +cached"]["peak_mb"] / max(results["hvg3d"]["peak_mb"], 1e-9),
    }
    for k, v in ratios.items():
        print(f"{k:40s} {v:6.2f}")
    print(f"load average before {load0[0]:.1f}, after {os.getloadavg()[0]:.1f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"results": results, "ratios": ratios}, indent=1))


if __name__ == "__main__":
    main()
