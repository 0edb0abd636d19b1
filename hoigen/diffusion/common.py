"""Shared pieces of the generative stages: dependency checks, device and dtype choice, per-sample seeds.

Seeds (SPEC §6): the photo and video stages draw from sub-streams of the sample's root generator
``default_rng([run_seed, index])`` spawned *after* the geometric stages (``hoigen.synth.recipe.STAGES``), so
adding a generative stage never changes a render. A stage's torch seed is a 63-bit integer drawn from that
sub-stream; a ``torch.Generator`` seeded with it makes the sample's initial noise.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

GENERATIVE_STAGES = ("photo", "video")
_EXTRA_HINT = (
    "pip install 'hoigen[diffusion]' (and `pip install --no-deps open-clip-torch` for CLIP's vocabulary)"
)


def require_diffusion() -> None:
    """Raise an ImportError naming the extra when torch/diffusers/transformers are missing."""
    missing = [
        m
        for m in ("torch", "diffusers", "transformers", "safetensors")
        if importlib.util.find_spec(m) is None
    ]
    if missing:
        raise ImportError(f"the generative stages need {', '.join(missing)}: {_EXTRA_HINT}")


def stage_seed(run_seed: int, index: int, stage: str) -> int:
    """The torch seed of sample ``index``'s generative ``stage`` ('photo' or 'video')."""
    from hoigen.synth.recipe import STAGES

    if stage not in GENERATIVE_STAGES:
        raise ValueError(f"stage must be one of {GENERATIVE_STAGES}, got {stage!r}")
    children = np.random.SeedSequence([int(run_seed), int(index)]).spawn(len(STAGES) + len(GENERATIVE_STAGES))
    child = children[len(STAGES) + GENERATIVE_STAGES.index(stage)]
    return int(child.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


def resolve_device(device: str | None = None) -> str:
    """'cuda' when a GPU is visible (or asked for), else 'cpu'."""
    import torch

    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {device!r} asked for a GPU but torch sees none; use --device cpu")
    if not (device == "cpu" or device.startswith("cuda")):
        raise ValueError(f"--device must be auto, cpu or cuda[:N], got {device!r}")
    return device


def resolve_dtype(dtype: str | None, device: str):
    """torch dtype: fp16/bf16 on CUDA (default fp16), fp32 on CPU (half precision on CPU is refused)."""
    import torch

    table = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    if dtype in (None, "auto"):
        return torch.float16 if device.startswith("cuda") else torch.float32
    if dtype not in table:
        raise ValueError(f"--dtype must be auto, fp32, fp16 or bf16, got {dtype!r}")
    if device == "cpu" and dtype != "fp32":
        raise ValueError(f"--dtype {dtype} is for GPUs; on CPU use --dtype fp32 (or auto)")
    return table[dtype]


def dtype_name(dtype) -> str:
    return str(dtype).replace("torch.", "")


def visible_gpus() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def available_memory(device: str) -> int | None:
    """Free bytes on ``device`` (CUDA: free device memory; CPU: MemAvailable), None when unknown."""
    if device.startswith("cuda"):
        import torch

        index = torch.device(device).index or 0
        return int(torch.cuda.mem_get_info(index)[0])
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def weight_bytes(root: Path) -> int:
    """Bytes of the weight files under ``root`` (safetensors / bin / pt), as stored."""
    total = 0
    for pattern in ("*.safetensors", "*.bin", "*.pt", "*.pth", "*.ckpt"):
        total += sum(p.stat().st_size for p in Path(root).rglob(pattern) if p.is_file())
    return total


def check_fits(what: str, need_bytes: int, device: str, flag_hint: str) -> None:
    """Refuse before starting when ``need_bytes`` (an estimate) exceeds the free memory of ``device``."""
    free = available_memory(device)
    if free is None or need_bytes <= free:
        return
    raise ValueError(
        f"{what} needs about {need_bytes / 2**30:.1f} GiB on {device} but only {free / 2**30:.1f} GiB are free; "
        f"{flag_hint}"
    )
