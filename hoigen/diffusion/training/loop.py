"""One ``accelerate`` training loop for both generative models (``hoigen train hoidiffusion|hvg3d``).

A model plugs in as a :class:`TrainTask`: it builds its models on the accelerator's device, names its trainable
parameters, makes the optimizer and learning-rate schedule, builds the per-epoch dataset and computes the loss of
one micro-batch; it also draws sample grids and exports the final weights in the layout ``hoigen generate`` loads.
The loop owns everything else:

- ``accelerate`` (``accelerate launch`` for one GPU to many; DDP, gloo on CPU), mixed precision (``--mixed-precision
  no|fp16|bf16``), gradient accumulation (``--grad-accum``: micro-batches without gradient sync, then one step),
  gradient clipping, gradient checkpointing (asked of the task), a tracker (TensorBoard by default, offline);
- the run folder::

      RUN/config.yaml                  resolved options (a resumed run must match, except --steps)
      RUN/logs/train.jsonl             one line per optimizer step: step, loss, lr, samples, skipped, s/step
      RUN/logs/<tracker files>         TensorBoard events
      RUN/checkpoints/step-NNNNNNNN/   trainable.safetensors, optimizer.safetensors, state.json (atomic)
      RUN/samples/step-NNNNNNNN.png    sample grids every --sample-every steps (and at the end)
      RUN/final/                       the trained weights in the layout ``hoigen generate`` loads

- **reproducibility**: every random draw of a step (noise, timesteps, dropout of conditions, regularisation
  batches) comes from generators seeded with (seed, step, micro-batch, rank), and torch's global generator is
  reseeded the same way at every micro-batch; the data order of an epoch is a function of (seed, epoch). A run
  resumed from a checkpoint therefore repeats the uninterrupted run's losses exactly (on the same hardware and
  software): the checkpoint holds the trainable weights, the optimizer state (safetensors, no pickle), the
  schedule position and how many micro-batches of the current epoch were consumed (they are skipped on resume).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from hoigen.diffusion.training.data import SKIPPED

logger = logging.getLogger(__name__)

MIXED_PRECISION = ("no", "fp16", "bf16")
CHECKPOINT_PREFIX = "step-"
# options a resumed run may change (the data order depends on --workers and --shuffle, so those may not)
_RESUMABLE_CHANGES = {"steps", "resume", "sample_every", "checkpoint_every", "log_every", "keep_checkpoints",
                      "tracker"}


@dataclass(frozen=True)
class LoopConfig:
    """Options of the shared loop (the model's own options live in its task config).

    Attributes:
        out: run folder.
        steps: optimizer steps in total (a resumed run continues to this number).
        batch_size: examples per micro-batch per process.
        grad_accum: micro-batches per optimizer step (effective batch = batch_size × grad_accum × processes).
        seed: the run seed.
        mixed_precision: 'no', 'fp16' or 'bf16' (frozen weights are cast to it; trainable ones stay fp32).
        gradient_checkpointing: recompute activations in the backward pass (less memory, ~30 % more time).
        max_grad_norm: gradient clipping (0 = off).
        checkpoint_every / sample_every / log_every: intervals in optimizer steps (0 = never; a checkpoint and a
            sample grid are also written at the end).
        keep_checkpoints: how many recent checkpoints to keep (0 = all).
        num_workers: DataLoader worker processes.
        shuffle: example shuffle buffer per worker (0 = shard order).
        tracker: accelerate tracker name ('tensorboard', 'none', ...); never a network service by default.
        resume: continue from the last checkpoint in ``out``.
    """

    out: str
    steps: int = 1000
    batch_size: int = 1
    grad_accum: int = 1
    seed: int = 0
    mixed_precision: str = "no"
    gradient_checkpointing: bool = False
    max_grad_norm: float = 1.0
    checkpoint_every: int = 500
    sample_every: int = 500
    log_every: int = 1
    keep_checkpoints: int = 3
    num_workers: int = 2
    shuffle: int = 64
    tracker: str = "tensorboard"
    resume: bool = False

    def __post_init__(self):
        for name in ("steps", "batch_size", "grad_accum"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        for name in ("checkpoint_every", "sample_every", "log_every", "keep_checkpoints", "num_workers", "shuffle"):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(self, name)}")
        if self.mixed_precision not in MIXED_PRECISION:
            raise ValueError(f"--mixed-precision must be one of {MIXED_PRECISION}, got {self.mixed_precision!r}")
        if self.max_grad_norm < 0 or not math.isfinite(self.max_grad_norm):
            raise ValueError(f"--max-grad-norm must be a finite number >= 0, got {self.max_grad_norm}")
        if self.seed < 0:
            raise ValueError(f"--seed must be >= 0, got {self.seed}")


class TrainTask:
    """What a model brings to the loop (subclassed by ``hoidiffusion.py`` and ``hvg3d.py``).

    Call order: ``setup`` (once, every process) -> ``trainable_module`` (prepared by accelerate) ->
    ``optimizer`` / ``lr_lambda`` -> per epoch ``dataset`` -> per micro-batch ``loss`` -> ``sample`` / ``export``
    on the main process.
    """

    name = "task"

    def config_dict(self) -> dict:
        """The task's options for ``config.yaml``."""
        raise NotImplementedError

    def setup(self, accelerator, loop: LoopConfig, weight_dtype: torch.dtype) -> None:
        raise NotImplementedError

    def trainable_module(self) -> torch.nn.Module:
        """The module accelerate prepares (DDP-wraps); it holds every trainable parameter."""
        raise NotImplementedError

    def enable_gradient_checkpointing(self) -> None:
        raise NotImplementedError

    def optimizer(self, parameters: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
        raise NotImplementedError

    def lr_lambda(self, step: int) -> float:
        """Learning-rate multiplier at optimizer step ``step``."""
        return 1.0

    def dataset(self, epoch: int) -> torch.utils.data.IterableDataset:
        raise NotImplementedError

    def collate(self, examples: list[dict]) -> dict:
        from hoigen.diffusion.training.data import collate_examples

        return collate_examples(examples)

    def loss(self, model: torch.nn.Module, batch: dict, generator: torch.Generator) -> tuple[torch.Tensor, dict]:
        """(scalar loss, extra logs) of one micro-batch; ``model`` is the prepared module."""
        raise NotImplementedError

    def sample(self, model: torch.nn.Module, path: Path, step: int) -> None:
        """Write a sample grid PNG (main process, no grad)."""

    def export(self, model: torch.nn.Module, folder: Path) -> None:
        """Write the trained weights as ``hoigen generate`` loads them (main process)."""
        raise NotImplementedError


# ---------------------------------------------------------------------------------------------------------------
# seeds


def step_seed(seed: int, step: int, micro: int, rank: int) -> int:
    """The 63-bit seed of micro-batch ``micro`` of optimizer step ``step`` on process ``rank``."""
    state = np.random.SeedSequence([int(seed), int(step), int(micro), int(rank), 0x7472]).generate_state(1, np.uint64)
    return int(state[0] >> np.uint64(1))


# ---------------------------------------------------------------------------------------------------------------
# checkpoints (safetensors only: trainable weights, optimizer tensors; JSON for the rest)


def trainable_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().contiguous().cpu() for n, p in module.named_parameters() if p.requires_grad}


def _optimizer_to_files(optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    state = optimizer.state_dict()
    tensors, meta = {}, {"param_groups": state["param_groups"], "state": {}}
    for index, entry in state["state"].items():
        meta["state"][str(index)] = {}
        for name, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{index}.{name}"] = value.detach().contiguous().cpu()
                meta["state"][str(index)][name] = "tensor"
            else:
                meta["state"][str(index)][name] = value
    return tensors, meta


def _optimizer_from_files(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state = {}
    for index, entry in meta["state"].items():
        state[int(index)] = {
            name: tensors[f"{index}.{name}"] if value == "tensor" else value for name, value in entry.items()
        }
    groups = []
    for group in meta["param_groups"]:
        group = dict(group)
        if "betas" in group:
            group["betas"] = tuple(group["betas"])
        groups.append(group)
    return {"state": state, "param_groups": groups}


def save_checkpoint(folder: Path, module, optimizer, scheduler, scaler, progress: dict) -> Path:
    """Write a checkpoint folder atomically (temp name, then rename)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(trainable_state(module), str(tmp / "trainable.safetensors"), metadata={"format": "pt"})
    tensors, opt_meta = _optimizer_to_files(optimizer)
    save_file(tensors, str(tmp / "optimizer.safetensors"), metadata={"format": "pt"})
    state = {
        "progress": progress,
        "optimizer": opt_meta,
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else None,
    }
    (tmp / "state.json").write_text(json.dumps(state, indent=1, default=_json_default) + "\n")
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)
    return folder


def _json_default(value):
    if isinstance(value, torch.Tensor):
        return value.item() if value.numel() == 1 else value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot store {type(value).__name__} in a checkpoint's state.json")


def checkpoints(run: Path) -> list[Path]:
    """Complete checkpoint folders of a run, oldest first."""
    folder = Path(run) / "checkpoints"
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if p.is_dir() and p.name.startswith(CHECKPOINT_PREFIX)
             and not p.name.endswith(".tmp") and (p / "state.json").is_file()]
    return sorted(found, key=lambda p: int(p.name[len(CHECKPOINT_PREFIX):]))


def load_trainable(module: torch.nn.Module, path: Path) -> None:
    """Load ``trainable.safetensors`` into ``module``'s trainable parameters (names and shapes must match)."""
    from safetensors.torch import load_file

    state = load_file(str(path))
    params = {n: p for n, p in module.named_parameters() if p.requires_grad}
    missing, unexpected = sorted(set(params) - set(state)), sorted(set(state) - set(params))
    if missing or unexpected:
        raise ValueError(
            f"{path} does not fit this model: missing {missing[:5]}, unexpected {unexpected[:5]} "
            "(was it written by a run with other options?)"
        )
    with torch.no_grad():
        for name, param in params.items():
            if tuple(state[name].shape) != tuple(param.shape):
                raise ValueError(f"{path}: {name} has shape {tuple(state[name].shape)}, expected {tuple(param.shape)}")
            param.copy_(state[name].to(param.device, param.dtype))


def load_checkpoint(folder: Path, module, optimizer, scheduler, scaler) -> dict:
    """Restore a checkpoint into the (unwrapped) module, optimizer, scheduler and scaler; returns its progress."""
    from safetensors.torch import load_file

    folder = Path(folder)
    state = json.loads((folder / "state.json").read_text())
    load_trainable(module, folder / "trainable.safetensors")
    device = next(module.parameters()).device
    tensors = {k: v.to(device) for k, v in load_file(str(folder / "optimizer.safetensors")).items()}
    optimizer.load_state_dict(_optimizer_from_files(tensors, state["optimizer"]))
    scheduler.load_state_dict(state["scheduler"])
    if scaler is not None and state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    return state["progress"]


# ---------------------------------------------------------------------------------------------------------------
# the run folder's config


def _check_resume_config(path: Path, config: dict) -> None:
    import yaml

    old = yaml.safe_load(path.read_text())
    diffs = sorted(_diff_keys(old, config))
    diffs = [d for d in diffs if d.split(".")[-1] not in _RESUMABLE_CHANGES]
    if diffs:
        raise ValueError(
            f"--resume: the options differ from those of the run in {path.parent} at {', '.join(diffs)}; "
            "resume with the same options (only --steps and the intervals may change) or use a new --out"
        )


def _diff_keys(a, b, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b)):
            out += _diff_keys(a.get(key), b.get(key), f"{prefix}{key}.")
        return out
    return [] if a == b else [prefix.rstrip(".")]


def _yaml_ready(value):
    if isinstance(value, dict):
        return {str(k): _yaml_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_yaml_ready(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


# ---------------------------------------------------------------------------------------------------------------
# the loop


@dataclass
class TrainResult:
    """What ``train`` did: losses per optimizer step (mean over processes), the final folder, skips."""

    losses: list[float] = field(default_factory=list)
    steps: list[int] = field(default_factory=list)
    final: Path | None = None
    skipped: int = 0
    seconds: float = 0.0
    samples: int = 0


def _micro_batches(task: TrainTask, loop: LoopConfig, epoch: int, skip: int) -> Iterator[tuple[int, int, dict]]:
    """(epoch, index in epoch, batch) forever, starting at ``epoch`` after ``skip`` micro-batches of it."""
    while True:
        loader = torch.utils.data.DataLoader(
            task.dataset(epoch),
            batch_size=loop.batch_size,
            num_workers=loop.num_workers,
            collate_fn=task.collate,
            persistent_workers=False,
        )
        produced = 0
        index = 0
        for batch in loader:
            if batch.get("size", 1) == 0:
                if index >= skip:
                    yield epoch, index, batch  # skip counts travel on
                continue
            if index >= skip:
                yield epoch, index, batch
            index += 1
            produced += 1
        if produced == 0:
            raise ValueError(
                "the training data gave no usable example in a whole epoch (every sample was skipped or "
                "--data is empty); see the warnings above"
            )
        epoch, skip = epoch + 1, 0


def train(task: TrainTask, loop: LoopConfig) -> TrainResult:
    """Run (or resume) a training run; returns its losses. Every process of ``accelerate launch`` calls this."""
    import yaml
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs, ProjectConfiguration

    out = Path(loop.out)
    config = _yaml_ready({"model": task.name, "loop": dataclasses.asdict(loop), "task": task.config_dict()})
    config_path = out / "config.yaml"
    previous = checkpoints(out)
    if not loop.resume and (previous or (out / "final").exists()):
        raise ValueError(f"--out {out} already holds a training run; pass --resume to continue it or pick a new --out")
    if loop.resume and config_path.is_file():
        _check_resume_config(config_path, config)

    tracker = None if loop.tracker in ("none", "", None) else loop.tracker
    accelerator = Accelerator(
        cpu=not torch.cuda.is_available(),  # several CPU processes (torchrun / launch --multi_gpu): DDP over gloo
        mixed_precision=loop.mixed_precision,
        log_with=tracker,
        project_config=ProjectConfiguration(project_dir=str(out), logging_dir=str(out / "logs")),
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
    )
    main = accelerator.is_main_process
    if main:
        (out / "logs").mkdir(parents=True, exist_ok=True)
        config_path.write_text(yaml.safe_dump(config, sort_keys=True))
    weight_dtype = {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[loop.mixed_precision]

    torch.manual_seed(step_seed(loop.seed, 2**32 - 1, 0, 0))  # model construction: the same on every process
    task.setup(accelerator, loop, weight_dtype)
    module = task.trainable_module()
    if loop.gradient_checkpointing:
        task.enable_gradient_checkpointing()
    params = [p for p in module.parameters() if p.requires_grad]
    if not params:
        raise ValueError(f"{task.name}: nothing to train (every parameter is frozen)")
    optimizer = task.optimizer(params)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, task.lr_lambda)
    model, optimizer = accelerator.prepare(module, optimizer)
    scaler = getattr(accelerator, "scaler", None)

    start, epoch, consumed = 0, 0, 0
    if loop.resume and previous:
        progress = load_checkpoint(previous[-1], accelerator.unwrap_model(model), optimizer, scheduler, scaler)
        start, epoch, consumed = int(progress["step"]), int(progress["epoch"]), int(progress["consumed"])
        logger.info("resumed %s from %s (step %d)", out, previous[-1].name, start)
    elif loop.resume:
        logger.warning("--resume: %s has no checkpoint yet; starting from step 0", out)
    if tracker and main:
        flat = {k: v if isinstance(v, int | float | str | bool) else str(v) for k, v in _flatten(config).items()}
        accelerator.init_trackers("hoigen-train", config=flat)

    result = TrainResult()
    batches = _micro_batches(task, loop, epoch, consumed)
    log_path = out / "logs" / "train.jsonl"
    t_start = time.perf_counter()
    skipped_total = 0
    model.train()
    for step in range(start, loop.steps):
        t0 = time.perf_counter()
        total, samples, skipped = 0.0, 0, 0
        extras: dict[str, float] = {}
        for micro in range(loop.grad_accum):
            epoch_now, index, batch = next(batches)
            skipped += int(batch.get(SKIPPED, 0))
            while batch.get("size", 1) == 0:
                epoch_now, index, batch = next(batches)
                skipped += int(batch.get(SKIPPED, 0))
            seed = step_seed(loop.seed, step, micro, accelerator.process_index)
            torch.manual_seed(seed)
            generator = torch.Generator().manual_seed(seed)
            last = micro == loop.grad_accum - 1
            sync = accelerator.no_sync(model) if not last and accelerator.num_processes > 1 else _nullcontext()
            with sync, accelerator.autocast():
                loss, logs = task.loss(model, batch, generator)
                if not torch.isfinite(loss):
                    raise FloatingPointError(
                        f"step {step}: the loss is {loss.item()} (try --mixed-precision bf16 or a lower --lr)"
                    )
                accelerator.backward(loss / loop.grad_accum)
            total += float(loss.detach()) / loop.grad_accum
            samples += int(batch.get("size", 1))
            for k, v in logs.items():
                extras[k] = extras.get(k, 0.0) + float(v) / loop.grad_accum
            epoch, consumed = epoch_now, index + 1
        if loop.max_grad_norm > 0:
            accelerator.clip_grad_norm_(params, loop.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)

        stats = torch.tensor([total, samples, skipped], dtype=torch.float64, device=accelerator.device)
        stats = accelerator.reduce(stats, reduction="sum")
        mean_loss = float(stats[0]) / accelerator.num_processes
        done = step + 1
        skipped_total += int(stats[2])
        result.losses.append(mean_loss)
        result.steps.append(done)
        result.samples += int(stats[1])
        if main and (loop.log_every and done % loop.log_every == 0 or done == loop.steps):
            record = {"step": done, "loss": mean_loss, "lr": scheduler.get_last_lr()[0], "samples": int(stats[1]),
                      "skipped": int(stats[2]), "seconds": round(time.perf_counter() - t0, 4), "epoch": epoch,
                      **extras}
            with open(log_path, "a") as fh:
                fh.write(json.dumps(record) + "\n")
            if tracker:
                accelerator.log({"loss": mean_loss, "lr": record["lr"], **extras}, step=done)
            logger.info("step %d/%d loss %.5f", done, loop.steps, mean_loss)
        if loop.checkpoint_every and done % loop.checkpoint_every == 0 or done == loop.steps:
            _checkpoint(accelerator, out, model, optimizer, scheduler, scaler, done, epoch, consumed, loop)
        if main and (loop.sample_every and done % loop.sample_every == 0 or done == loop.steps):
            _sample(task, accelerator, model, out, done)
        accelerator.wait_for_everyone()

    if main:
        final = out / "final"
        tmp = final.with_name("final.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        task.export(accelerator.unwrap_model(model), tmp)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        result.final = final
        if skipped_total:
            logger.warning("%d training sample(s) were skipped (see the warnings above)", skipped_total)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    result.final = out / "final"
    result.skipped = skipped_total
    result.seconds = time.perf_counter() - t_start
    return result


class _nullcontext:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _checkpoint(accelerator, out, model, optimizer, scheduler, scaler, step, epoch, consumed, loop) -> None:
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        folder = out / "checkpoints" / f"{CHECKPOINT_PREFIX}{step:08d}"
        progress = {"step": step, "epoch": epoch, "consumed": consumed}
        save_checkpoint(folder, accelerator.unwrap_model(model), optimizer, scheduler, scaler, progress)
        if loop.keep_checkpoints:
            for old in checkpoints(out)[: -loop.keep_checkpoints]:
                shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()


def _sample(task, accelerator, model, out: Path, step: int) -> None:
    folder = out / "samples"
    folder.mkdir(parents=True, exist_ok=True)
    unwrapped = accelerator.unwrap_model(model)
    was_training = unwrapped.training
    unwrapped.eval()
    state = torch.random.get_rng_state()
    try:
        with torch.no_grad(), accelerator.autocast():  # frozen parts may be bf16/fp16, trainable ones fp32
            task.sample(unwrapped, folder / f"{CHECKPOINT_PREFIX}{step:08d}.png", step)
    finally:
        torch.random.set_rng_state(state)
        unwrapped.train(was_training)


def _flatten(value, prefix: str = "") -> dict:
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}{k}/"))
        return out
    return {prefix.rstrip("/"): value}


def read_losses(run: str | Path) -> list[dict]:
    """The records of ``RUN/logs/train.jsonl``."""
    path = Path(run) / "logs" / "train.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
