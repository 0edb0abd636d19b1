"""HVG-3D ControlNet weights: one safetensors file with its ``config.json`` beside it, loaded strictly.

Folder layout (``--hvg3d DIR`` / ``HOIGEN_HVG3D_DIR``)::

    DIR/config.json                 # HVG3DConfig (K, block arguments, point branch)
    DIR/hvg3d.safetensors           # the ControlNet's state_dict (copies, linears, point tokenizer)

No HVG-3D weights are public: a folder comes from ``hoigen train hvg3d`` (or, tiny and random, from
``fixtures.write_tiny_hvg3d`` for tests). Loading never downloads anything; every key must match in name and
shape, and the error lists the missing, unexpected and mismatched ones.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import torch

from hoigen.diffusion.hvg3d.model import HVG3DConfig, HVG3DControlNet

logger = logging.getLogger(__name__)

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "hvg3d.safetensors"
HVG3D_FLAG = "--hvg3d DIR (or HOIGEN_HVG3D_DIR)"


def save_hvg3d(model: HVG3DControlNet, folder: str | Path) -> Path:
    """Write ``config.json`` and ``hvg3d.safetensors`` (float tensors as stored in the model) into ``folder``."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    (folder / CONFIG_NAME).write_text(json.dumps(model.config.to_dict(), indent=2, sort_keys=True) + "\n")
    save_file(state, str(folder / WEIGHTS_NAME), metadata={"format": "pt", "model": "hoigen-hvg3d"})
    return folder


def check_state_dict(expected: dict, found: dict, source: str) -> None:
    """ValueError naming missing, unexpected and shape-mismatched keys (``expected``/``found``: name -> tensor)."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    mismatched = sorted(
        f"{k} {tuple(found[k].shape)} (expected {tuple(expected[k].shape)})"
        for k in set(expected) & set(found)
        if tuple(found[k].shape) != tuple(expected[k].shape)
    )
    if missing or unexpected or mismatched:

        def listing(names):
            return ", ".join(names[:8]) + (f" ... ({len(names)} in all)" if len(names) > 8 else "")

        parts = []
        if missing:
            parts.append(f"missing keys: {listing(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {listing(unexpected)}")
        if mismatched:
            parts.append(f"shape mismatches: {listing(mismatched)}")
        raise ValueError(
            f"{source} does not match its config.json ({'; '.join(parts)}); the file must come from "
            f"`hoigen train hvg3d` with the same config"
        )


def load_hvg3d_config(folder: str | Path) -> HVG3DConfig:
    folder = Path(folder)
    path = folder / CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(
            f"HVG-3D ControlNet folder {folder} has no {CONFIG_NAME}; pass the folder `hoigen train hvg3d` wrote "
            f"with {HVG3D_FLAG}"
        )
    try:
        return HVG3DConfig.from_dict(json.loads(path.read_text()))
    except (json.JSONDecodeError, TypeError) as error:
        raise ValueError(f"{path} is not a valid HVG-3D config: {error}") from error


def load_hvg3d(folder: str | Path, device="cpu", dtype=torch.float32) -> HVG3DControlNet:
    """The ControlNet stored in ``folder``, strictly loaded, on ``device`` in ``dtype``."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"HVG-3D ControlNet folder {folder} does not exist; pass it with {HVG3D_FLAG}"
        )
    config = load_hvg3d_config(folder)
    weights = folder / WEIGHTS_NAME
    if not weights.is_file():
        raise FileNotFoundError(f"HVG-3D ControlNet folder {folder} has no {WEIGHTS_NAME} ({HVG3D_FLAG})")
    try:
        state = load_file(str(weights), device="cpu")
    except (SafetensorError, OSError) as error:
        raise ValueError(f"{weights} is not a readable safetensors file: {error}") from error
    with torch.device("meta"):
        model = HVG3DControlNet(config)
    check_state_dict(model.state_dict(), state, str(weights))
    model.load_state_dict(state, strict=True, assign=True)
    return model.to(device=device, dtype=dtype)


def file_sha256(path: str | Path, chunk: int = 1 << 24) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def folder_sha256(folder: str | Path, suffixes=(".safetensors", ".bin", ".json", ".model")) -> dict[str, str]:
    """sha256 of a model folder's weight and config files, by relative path (sorted)."""
    folder = Path(folder)
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in suffixes)
    return {p.relative_to(folder).as_posix(): file_sha256(p) for p in files}
