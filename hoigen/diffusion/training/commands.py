"""The ``hoigen train`` and ``hoigen eval`` click groups (registered in ``hoigen/cli.py``).

Only click is imported here; torch, diffusers and accelerate load when a command runs. Multi-GPU:
``accelerate launch [--num_processes N] -m hoigen.cli train hoidiffusion ...`` (every process runs the command;
without GPUs ``accelerate launch --multi_gpu --num_processes N`` or ``torchrun`` gives DDP over gloo).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import click


def _setup_logging(verbose: int) -> None:
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


def _loop_options(command):
    """Options of the shared accelerate loop."""
    options = [
        click.option("--data", required=True, help="training shards: a hoigen output folder, manifest or shards"),
        click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="run folder"),
        click.option("--steps", type=click.IntRange(min=1), default=1000, show_default=True, help="optimizer steps"),
        click.option("--batch-size", type=click.IntRange(min=1), default=None, help="examples per process and "
                     "micro-batch [hoidiffusion 8, hvg3d 1]"),
        click.option("--grad-accum", type=click.IntRange(min=1), default=1, show_default=True),
        click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True),
        click.option("--mixed-precision", type=click.Choice(["no", "fp16", "bf16"]), default=None,
                     help="[bf16 on a GPU, no on CPU]"),
        click.option("--gradient-checkpointing/--no-gradient-checkpointing", default=None,
                     help="[on for hvg3d, off for hoidiffusion]"),
        click.option("--max-grad-norm", type=float, default=1.0, show_default=True, help="0 = no clipping"),
        click.option("--checkpoint-every", type=click.IntRange(min=0), default=500, show_default=True),
        click.option("--sample-every", type=click.IntRange(min=0), default=500, show_default=True),
        click.option("--log-every", type=click.IntRange(min=0), default=10, show_default=True),
        click.option("--keep-checkpoints", type=click.IntRange(min=0), default=3, show_default=True),
        click.option("--workers", "num_workers", type=click.IntRange(min=0), default=2, show_default=True,
                     help="DataLoader worker processes"),
        click.option("--shuffle", type=click.IntRange(min=0), default=64, show_default=True,
                     help="example shuffle buffer per worker"),
        click.option("--tracker", default="tensorboard", show_default=True, help="accelerate tracker, or none"),
        click.option("--resume", is_flag=True, help="continue from the last checkpoint in --out"),
        click.option("--captions", type=click.Path(dir_okay=False, path_type=Path), default=None,
                     help="captions file: JSON {key: caption} or lines key<TAB>caption"),
        click.option("--prompt-style", "prompt_styles", multiple=True, help="appearance phrase (repeatable)"),
        click.option("--background", "backgrounds", multiple=True, help="background phrase (repeatable)"),
        click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
                     help="YAML file of option values (keys = option names with _ for -)"),
        click.option("-v", "--verbose", count=True),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _apply_config(ctx: click.Context, kw: dict) -> dict:
    """Fill options left at their default from ``--config FILE.yaml``."""
    path = kw.pop("config_file", None)
    if path is None:
        return kw
    import yaml

    data = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(data, dict):
        raise click.BadParameter(f"{path} must hold a mapping of option names to values", param_hint="--config")
    unknown = sorted(set(data) - set(kw))
    if unknown:
        raise click.BadParameter(f"{path}: unknown option(s) {unknown}", param_hint="--config")
    for key, value in data.items():
        if ctx.get_parameter_source(key) in (click.core.ParameterSource.DEFAULT, None):
            kw[key] = tuple(value) if isinstance(value, list) else value
    return kw


def _loop_config(kw: dict, gpu_default_ckpt: bool, batch_default: int):
    from hoigen.diffusion.training.loop import LoopConfig

    try:
        import torch

        gpu = torch.cuda.is_available()
    except ImportError:
        gpu = False
    mp = kw.pop("mixed_precision") or ("bf16" if gpu else "no")
    ckpt = kw.pop("gradient_checkpointing")
    batch = kw.pop("batch_size") or batch_default
    return LoopConfig(
        out=str(kw.pop("out")), steps=kw.pop("steps"), batch_size=batch, grad_accum=kw.pop("grad_accum"),
        seed=kw.pop("seed"), mixed_precision=mp, gradient_checkpointing=gpu_default_ckpt if ckpt is None else ckpt,
        max_grad_norm=kw.pop("max_grad_norm"), checkpoint_every=kw.pop("checkpoint_every"),
        sample_every=kw.pop("sample_every"), log_every=kw.pop("log_every"),
        keep_checkpoints=kw.pop("keep_checkpoints"), num_workers=kw.pop("num_workers"), shuffle=kw.pop("shuffle"),
        tracker=kw.pop("tracker"), resume=kw.pop("resume"),
    )


def _train(ctx, kw: dict, make_task, model: tuple, gpu_default_ckpt: bool, batch_default: int) -> None:
    """The body of a ``train`` command: ``--config`` defaults, logging, the loop options, the base model folder
    ``model`` = (option, environment variable, value when neither is set), captions; ``make_task(kw)`` builds the
    task from the remaining options. Bad input becomes a one-line click error."""
    import os

    kw = _apply_config(ctx, kw)
    _setup_logging(kw.pop("verbose"))
    try:
        from hoigen.diffusion.common import require_diffusion

        require_diffusion()
        loop = _loop_config(kw, gpu_default_ckpt=gpu_default_ckpt, batch_default=batch_default)
        key, env, unset = model
        kw[key] = kw[key] or os.environ.get(env) or unset
        kw["captions"] = str(kw["captions"]) if kw["captions"] else None
        _run(make_task(kw), loop)
    except (ValueError, FileNotFoundError, ImportError, FloatingPointError) as exc:
        raise click.ClickException(str(exc)) from exc


def _run(task, loop) -> None:
    from hoigen.diffusion.training.loop import train

    result = train(task, loop)
    if result.losses:
        click.echo(
            f"trained {task.name} for {len(result.losses)} step(s) to {loop.steps} (last loss "
            f"{result.losses[-1]:.5f}, {result.samples} examples, {result.skipped} skipped) in "
            f"{result.seconds:.1f} s; weights in {result.final}"
        )
    else:
        click.echo(f"{loop.out} already reached step {loop.steps}; weights in {result.final}")


@click.group()
def train():
    """Train the generative models on hoigen shards (or real-data shards): hoidiffusion, hvg3d."""


@train.command("hoidiffusion")
@_loop_options
@click.option("--sd", default=None, help="local diffusers SD-1.x folder (the base; fresh adapters) [$HOIGEN_SD_DIR]")
@click.option("--hoidiffusion", default=None, help="converted HOIDiffusion folder to continue from")
@click.option("--resolution", type=click.IntRange(min=8), default=512, show_default=True, help="crop size (px)")
@click.option("--full-frames", is_flag=True, help="train on whole frames instead of hand-object crops")
@click.option("--crop-margin", type=click.IntRange(min=0), default=50, show_default=True)
@click.option("--sd-lock", is_flag=True, help="freeze the whole UNet (train the adapters only)")
@click.option("--lr", type=float, default=1e-5, show_default=True)
@click.option("--reg-prob", type=click.FloatRange(0, 1), default=0.1, show_default=True,
              help="probability of a background-regularisation batch (0 = off)")
@click.option("--reg-images", default=None, help="folder of scenery images + captions.txt")
@click.option("--reg-generate", type=click.IntRange(min=0), default=0, show_default=True,
              help="scenery images to generate with the base model at start-up")
@click.option("--reg-steps", type=click.IntRange(min=1), default=30, show_default=True)
@click.option("--sample-steps", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--sample-count", type=click.IntRange(min=0), default=4, show_default=True)
@click.pass_context
def train_hoidiffusion(ctx, **kw):
    """The three T2I-Adapters (+ UNet decoder) on hoigen frames; RUN/final loads in `generate --photo`."""

    def task(kw):
        from hoigen.diffusion.training.hoidiffusion import HOIDiffusionTask, HOIDiffusionTrainConfig

        return HOIDiffusionTask(HOIDiffusionTrainConfig(**kw))

    _train(ctx, kw, task, model=("sd", "HOIGEN_SD_DIR", None), gpu_default_ckpt=False, batch_default=8)


@train.command("hvg3d")
@_loop_options
@click.option("--cogvideox", default=None, help="local diffusers CogVideoX-5B-I2V folder [$HOIGEN_COGVIDEOX_DIR]")
@click.option("--init", default=None, help="an HVG-3D folder to continue from (else a fresh ControlNet)")
@click.option("--num-blocks", type=click.IntRange(min=1), default=18, show_default=True, help="block copies K")
@click.option("--points/--no-points", default=True, show_default=True, help="point-cloud branch")
@click.option("--num-points", type=click.IntRange(min=1), default=4096, show_default=True)
@click.option("--num-centres", type=click.IntRange(min=1), default=512, show_default=True)
@click.option("--group-size", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--frames", type=click.IntRange(min=1), default=None, help="video frames [the base's, 49]")
@click.option("--size", type=(int, int), default=None, help="video W H [the base's, 720 480]")
@click.option("--lr", type=float, default=1e-4, show_default=True)
@click.option("--weight-decay", type=float, default=1e-3, show_default=True)
@click.option("--warmup", type=click.IntRange(min=0), default=100, show_default=True)
@click.option("--drop-prob", type=click.FloatRange(0, 1), default=0.05, show_default=True,
              help="image + tracking-image latent dropout")
@click.option("--mask-weight/--no-mask-weight", default=True, show_default=True, help="the (1 + M) loss weight")
@click.option("--vae-slicing/--no-vae-slicing", default=True, show_default=True)
@click.option("--vae-tiling/--no-vae-tiling", default=True, show_default=True)
@click.option("--cache-latents", is_flag=True, help="precompute VAE/T5 latents to RUN/cache once")
@click.option("--sample-steps", type=click.IntRange(min=1), default=25, show_default=True)
@click.pass_context
def train_hvg3d(ctx, **kw):
    """The HVG-3D ControlNet on a frozen CogVideoX-I2V; RUN/final loads in `generate --video hvg3d --hvg3d`."""

    def task(kw):
        from hoigen.diffusion.training.hvg3d import HVG3DTask, HVG3DTrainConfig

        size = kw.pop("size")
        kw["width"], kw["height"] = size if size else (None, None)
        return HVG3DTask(HVG3DTrainConfig(**kw))

    _train(ctx, kw, task, model=("cogvideox", "HOIGEN_COGVIDEOX_DIR", ""), gpu_default_ckpt=True, batch_default=1)


@click.command("eval")
@click.argument("kind", type=click.Choice(["photo", "video"]))
@click.argument("source")
@click.option("--lpips", default=None, help="TorchScript LPIPS module f(x, y) on [-1, 1] images (local file)")
@click.option("--fid-features", default=None, help="TorchScript feature extractor for FID (local file)")
@click.option("--keypoints", default=None, help="TorchScript 2D hand keypoint model (local file)")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="evaluate at most N frames")
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path), default=None)
@click.option("-v", "--verbose", count=True)
def evaluate(kind, source, lpips, fid_features, keypoints, limit, json_out, verbose):
    """Quality and condition fidelity of generated frames: RUN (its latest samples) or SHARDS (photo/video vs rgb).

    PSNR, SSIM and their hand-object-region versions and the mask-IoU check need nothing; LPIPS, FID and the
    skeleton check need the local model files named by their options.
    """
    _setup_logging(verbose)
    try:
        from hoigen.diffusion.training.eval import evaluate as run_eval

        metrics = run_eval(source, kind, lpips=lpips, fid_features=fid_features, keypoints=keypoints, limit=limit)
    except (ValueError, FileNotFoundError, ImportError) as exc:
        raise click.ClickException(str(exc)) from exc
    for name, value in metrics.items():
        click.echo(f"{name}: {value:.4f}" if isinstance(value, float) else f"{name}: {value}")
    if json_out is not None:
        json_out.write_text(json.dumps(metrics, indent=1) + "\n")
