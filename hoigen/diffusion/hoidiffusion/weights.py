"""HOIDiffusion weights: discovery, conversion of the released files, strict offline loading and validation.

Layouts
- **Released** (HOIDiffusion's release, linked from github.com/Mq-Zhang1/HOIDiffusion): ``model_sd_finetuned.ckpt``
  = a flat LatentDiffusion state dict (``model.diffusion_model.*`` UNet with its fine-tuned decoder,
  ``first_stage_model.*`` VAE, ``cond_stage_model.transformer.*`` CLIP text encoder) and ``model_condition.pth`` =
  the three T2I-Adapters, prefixes ``pose_ada.`` (skeleton), ``depth_ada.`` (the *normal map*, despite the name)
  and ``mask_ada.`` (mask). An optional ``hoigen_sd_config/`` folder next to them (a weightless config folder,
  ``sd_configs.py``) describes a checkpoint that is not SD-1.4-sized (the tiny test fixtures); without it the
  checkpoint must be SD-1.4.
- **Converted** (what ``hoigen generate`` loads; ``hoigen convert hoidiffusion`` and the trainer write it): a
  diffusers SD-1.x folder ``model_index.json``, ``unet/``, ``vae/``, ``text_encoder/``, ``tokenizer/``,
  ``scheduler/`` plus ``adapters/{skeleton,normal,mask}/`` (one ``T2IAdapter`` each, safetensors; never a saved
  MultiAdapter, which reloads only two of three) and ``hoigen_weights.json`` (format version, sha256 of inputs
  and outputs). An *adapters-only* folder (``adapters/`` + record) is used together with ``--sd DIR``.

Rules: pickles are read only with ``torch.load(weights_only=True)`` (a pickle that would run code is refused);
UNet/VAE/CLIP conversion goes through diffusers' own LDM converters; every conversion and every load is strict —
a missing, unexpected, unused or wrongly shaped key is a ``ValueError`` naming the file and the key. Nothing is
ever fetched from a hub.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from hoigen.diffusion.hoidiffusion.ldm_keys import (
    LDM_CLIP_PREFIX,
    LDM_UNET_PREFIX,
    LDM_VAE_PREFIX,
    adapter_released_key,
    ldm_key,
)

logger = logging.getLogger(__name__)

ADAPTER_NAMES = ("skeleton", "normal", "mask")  # the MultiAdapter's order
RELEASED_PREFIXES = {"skeleton": "pose_ada.", "normal": "depth_ada.", "mask": "mask_ada."}
RELEASED_SD_FILE = "model_sd_finetuned.ckpt"
RELEASED_ADAPTER_FILE = "model_condition.pth"
RELEASED_CONFIG_DIR = "hoigen_sd_config"
RECORD_FILE = "hoigen_weights.json"
FORMAT = "hoigen-hoidiffusion-weights"
FORMAT_VERSION = 1
ENV_HOIDIFFUSION = "HOIGEN_HOIDIFFUSION_DIR"
ENV_SD = "HOIGEN_SD_DIR"
ENV_CACHE = "HOIGEN_CACHE"
RELEASE_PAGE = "https://github.com/Mq-Zhang1/HOIDiffusion"
SD_COMPONENTS = ("unet", "vae", "text_encoder")
_WEIGHT_STEMS = {
    "unet": "diffusion_pytorch_model",
    "vae": "diffusion_pytorch_model",
    "text_encoder": "model",
    "adapter": "diffusion_pytorch_model",
}
_PARAM_NAMES = {"unet": "UNet", "vae": "VAE", "text_encoder": "CLIP text encoder", "adapter": "T2I-Adapter"}
# LDM keys that are not weights of the three models (noise-schedule buffers, EMA copies, the VAE's training loss).
_LDM_IGNORED_PREFIXES = ("model_ema.", "first_stage_model.loss.")
_CLIP_BUFFERS = ("embeddings.position_ids", "text_model.embeddings.position_ids")
_WHERE = (
    f"HOIDiffusion's released model_condition.pth + model_sd_finetuned.ckpt are linked from {RELEASE_PAGE} "
    "(Google Drive); put them in one folder, or convert them once with `hoigen convert hoidiffusion SRC OUT`"
)


@dataclass(frozen=True)
class HOIDiffusionWeights:
    """A resolved set of HOIDiffusion weights.

    root: the converted folder (diffusers SD-1.x layout + adapters/), or an adapters-only folder when ``sd`` is set.
    files: relative path -> sha256 of every weight/config file used (files of the ``sd`` folder as 'sd:<path>').
    sd: a separate local diffusers SD-1.x folder that provides unet/vae/text_encoder/tokenizer/scheduler.
    """

    root: Path
    files: dict[str, str]
    sd: Path | None = field(default=None)

    @property
    def sd_root(self) -> Path:
        """The folder the SD-1.x components come from."""
        return self.sd if self.sd is not None else self.root


# --- files ---------------------------------------------------------------------------------------------------


def cache_root() -> Path:
    """hoigen's cache folder: $HOIGEN_CACHE, else ~/.cache/hoigen."""
    value = os.environ.get(ENV_CACHE, "")
    return Path(value).expanduser() if value else Path.home() / ".cache" / "hoigen"


_SHA_MEMO: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | Path) -> str:
    """sha256 of a file, remembered per (path, size, mtime) in this process and in the cache's sha256 index."""
    path = Path(path).resolve()
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key in _SHA_MEMO:
        return _SHA_MEMO[key]
    index_path = cache_root() / "sha256-index.json"
    big = stat.st_size >= 64 << 20
    index = {}
    if big and index_path.is_file():
        try:
            index = json.loads(index_path.read_text())
        except (OSError, ValueError):
            index = {}
        hit = index.get(str(path))
        if hit and hit.get("bytes") == stat.st_size and hit.get("mtime_ns") == stat.st_mtime_ns:
            _SHA_MEMO[key] = hit["sha256"]
            return hit["sha256"]
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            digest.update(chunk)
    value = digest.hexdigest()
    _SHA_MEMO[key] = value
    if big:  # remember large files across runs (best effort: a read-only cache just means rehashing)
        index[str(path)] = {"bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": value}
        try:
            index_path.parent.mkdir(parents=True, exist_ok=True)
            tmp = index_path.with_name(f".{index_path.name}.{os.getpid()}")
            tmp.write_text(json.dumps(index, indent=0))
            os.replace(tmp, index_path)
        except OSError:
            pass
    return value


def read_safetensors_header(path: str | Path) -> dict[str, tuple[str, tuple[int, ...]]]:
    """{key: (dtype, shape)} from a safetensors file's JSON header, without reading the tensors.

    A header that is not JSON, or a file shorter than the header promises (truncated), is a ValueError.
    """
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise ValueError(f"{path}: not a safetensors file (only {size} bytes)")
        n = int.from_bytes(head, "little")
        if n <= 0 or n > min(size - 8, 100 << 20):
            raise ValueError(f"{path}: not a safetensors file (header length {n} for a {size}-byte file)")
        try:
            header = json.loads(fh.read(n))
        except ValueError as exc:
            raise ValueError(f"{path}: not a safetensors file (its header is not JSON: {exc})") from exc
    if not isinstance(header, dict):
        raise ValueError(f"{path}: not a safetensors file (header is not a mapping)")
    header.pop("__metadata__", None)
    out, end = {}, 0
    for key, info in header.items():
        try:
            out[key] = (str(info["dtype"]), tuple(int(s) for s in info["shape"]))
            end = max(end, int(info["data_offsets"][1]))
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise ValueError(f"{path}: malformed safetensors header entry for key {key!r}") from exc
    if 8 + n + end != size:
        raise ValueError(
            f"{path}: the header promises {end} bytes of tensor data but the file has {size - 8 - n} "
            "(truncated or corrupt: copy or convert it again)"
        )
    return out


def load_checkpoint(path: str | Path, map_location: str = "cpu") -> dict:
    """A flat {key: tensor} state dict from a .ckpt/.pth/.pt/.bin pickle or a .safetensors file.

    Pickles go through ``torch.load(weights_only=True)`` (memory-mapped when possible): a file holding anything but
    tensors and plain containers is refused, never executed. A top-level ``state_dict`` wrapper is removed.
    map_location 'meta' reads shapes and dtypes only.
    """
    import pickle

    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    if path.suffix == ".safetensors":
        obj = _load_safetensors(path, map_location)
    else:
        with open(path, "rb") as fh:
            magic = fh.read(2)
        if magic != b"PK" and magic[:1] != b"\x80":  # a torch zip archive, or a legacy pickle
            raise ValueError(
                f"{path} is not a PyTorch checkpoint (it starts with {magic!r}, neither a zip archive nor a "
                "pickle; an HTML page saved instead of the download?); download it again"
            )
        try:
            try:
                obj = torch.load(path, map_location=map_location, weights_only=True, mmap=True)
            except RuntimeError as exc:
                if "mmap" not in str(exc):
                    raise
                # the legacy (non-zip) format cannot be memory-mapped
                obj = torch.load(path, map_location=map_location, weights_only=True)
        except pickle.UnpicklingError as exc:
            text = str(exc)
            if "Weights only load failed" in text and "Unsupported operand" not in text:
                detail = next((ln.strip() for ln in text.splitlines() if "Unsupported" in ln), "")
                raise ValueError(
                    f"{path}: refused — the file holds Python objects other than tensors, and hoigen reads "
                    f"checkpoints only with torch.load(weights_only=True), which never runs code from a file"
                    + (f" ({detail})" if detail else "")
                    + ". Use the file from HOIDiffusion's release, or re-save it as a plain state dict"
                ) from exc
            raise ValueError(f"{path} is not a PyTorch checkpoint ({_short(exc)})") from exc
        except Exception as exc:  # torch raises RuntimeError/KeyError/EOFError/... for non-checkpoints
            raise ValueError(
                f"{path} is not a readable PyTorch checkpoint (truncated or corrupt download, or another kind "
                f"of file: {_short(exc)}); download it again and compare its size with the release"
            ) from exc
    while isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise ValueError(
            f"{path}: expected a state dict (a mapping of names to tensors), got {type(obj).__name__}"
        )
    for key, value in obj.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise ValueError(
                f"{path}: entry {key!r} is a {type(value).__name__}, not a tensor; expected a flat state dict"
            )
    return obj


def _load_safetensors(path: Path, map_location: str) -> dict:
    import torch

    if map_location == "meta":
        from safetensors.torch import _getdtype

        return {
            k: torch.empty(shape, dtype=_getdtype(dtype), device="meta")
            for k, (dtype, shape) in read_safetensors_header(path).items()
        }
    read_safetensors_header(path)  # a clear error for a truncated file
    from safetensors.torch import load_file

    try:
        return load_file(path, device=map_location)
    except Exception as exc:
        raise ValueError(f"{path}: not a readable safetensors file ({_short(exc)})") from exc


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:160]}"


# --- strict comparison ---------------------------------------------------------------------------------------


def _compare(
    expected: dict, found: dict, where: str, what: str, name=lambda k: k, source=lambda k: k
) -> None:
    """Raise a ValueError naming ``where`` and the keys unless ``found`` has exactly ``expected``'s keys/shapes.

    expected/found: {key: shape}; name(k) = the file's name for a missing model key; source(k) = the file's name
    of a found key.
    """
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    wrong = sorted(k for k in set(expected) & set(found) if tuple(expected[k]) != tuple(found[k]))
    if not (missing or unexpected or wrong):
        return
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing key(s): " + ", ".join(repr(name(k)) for k in missing[:4]))
    if unexpected:
        parts.append(
            f"{len(unexpected)} unexpected key(s): " + ", ".join(repr(source(k)) for k in unexpected[:4])
        )
    if wrong:
        k = wrong[0]
        parts.append(
            f"{len(wrong)} shape mismatch(es), e.g. {source(k)!r} is {list(found[k])} but the {what} expects "
            f"{list(expected[k])}"
        )
    raise ValueError(
        f"{where}: does not match the {what}: " + "; ".join(parts) + " — a wrong, renamed or different-"
        "architecture file (HOIDiffusion is SD-1.4 with three full T2I-Adapters)"
    )


def _meta_model(component: str, config: dict):
    """An empty (meta-device) model of ``component`` built from its config."""
    import torch

    config = {k: v for k, v in config.items() if not k.startswith("_")}
    with torch.device("meta"):
        if component == "unet":
            from diffusers import UNet2DConditionModel

            return UNet2DConditionModel.from_config(config)
        if component == "vae":
            from diffusers import AutoencoderKL

            return AutoencoderKL.from_config(config)
        if component == "adapter":
            from diffusers import T2IAdapter

            return T2IAdapter.from_config(config)
        if component == "text_encoder":
            from transformers import CLIPTextConfig, CLIPTextModel

            skip = ("architectures", "transformers_version", "model_type", "torch_dtype", "dtype")
            return CLIPTextModel(CLIPTextConfig(**{k: v for k, v in config.items() if k not in skip}))
    raise ValueError(f"unknown component {component!r}")


def _shapes(model) -> dict:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def count_parameters(component: str, config: dict) -> int:
    """Parameter count of ``component`` built from ``config`` on the meta device."""
    return sum(p.numel() for p in _meta_model(component, config).parameters())


# --- the adapter key map -------------------------------------------------------------------------------------


def map_adapter_key(key: str, num_res_blocks: int = 2) -> str:
    """Released T2I-Adapter key (its prefix removed) -> diffusers ``T2IAdapter`` key.

    ``conv_in.*`` -> ``adapter.conv_in.*``; ``body.{lR+j}.block{1,2}.*`` -> ``adapter.body.{l}.resnets.{j}.block{1,2}.*``;
    ``body.{lR}.in_conv.*`` -> ``adapter.body.{l}.in_conv.*`` (R = num_res_blocks). Anything else: ValueError.
    """
    parts = key.split(".")
    if len(parts) == 2 and parts[0] == "conv_in" and parts[1] in ("weight", "bias"):
        return "adapter." + key
    if len(parts) == 4 and parts[0] == "body" and parts[1].isdigit() and parts[3] in ("weight", "bias"):
        level, j = divmod(int(parts[1]), num_res_blocks)
        if parts[2] in ("block1", "block2"):
            return f"adapter.body.{level}.resnets.{j}.{parts[2]}.{parts[3]}"
        if parts[2] == "in_conv" and j == 0:
            return f"adapter.body.{level}.in_conv.{parts[3]}"
    raise ValueError(f"{key!r} is not a key of a full T2I-Adapter (conv_in, body.N.block1/block2/in_conv)")


def split_released_adapters(state: dict, path: str | Path, num_res_blocks: int = 2) -> tuple[dict, dict]:
    """The released combined adapter state dict -> ({name: diffusers state dict}, {name: {diffusers key: file key}}).

    Keys are ``pose_ada.*`` / ``depth_ada.*`` / ``mask_ada.*``; a leading ``module.``/``adapter.`` before or after
    the prefix is removed. Unknown keys and missing adapters are ValueErrors naming the file and key.
    """
    out = {name: {} for name in ADAPTER_NAMES}
    sources = {name: {} for name in ADAPTER_NAMES}
    by_prefix = {prefix: name for name, prefix in RELEASED_PREFIXES.items()}
    for full_key, tensor in state.items():
        key = full_key
        for strip in ("module.", "adapter."):
            key = key.removeprefix(strip)
        prefix = next((p for p in by_prefix if key.startswith(p)), None)
        if prefix is None:
            raise ValueError(
                f"{path}: unexpected key {full_key!r}; a HOIDiffusion model_condition.pth holds only "
                + ", ".join(f"{p}* ({n})" for p, n in by_prefix.items())
            )
        name = by_prefix[prefix]
        rest = key[len(prefix) :].removeprefix("adapter.")
        try:
            new = map_adapter_key(rest, num_res_blocks)
        except ValueError as exc:
            raise ValueError(f"{path}: key {full_key!r} of the {name} adapter: {exc}") from exc
        if new in out[name]:
            raise ValueError(f"{path}: key {full_key!r} duplicates {sources[name][new]!r}")
        out[name][new] = tensor
        sources[name][new] = full_key
    for name, prefix in RELEASED_PREFIXES.items():
        if not out[name]:
            raise ValueError(
                f"{path}: no {prefix}* keys — the {name} adapter is missing; expected HOIDiffusion's "
                f"model_condition.pth with all three adapters ({', '.join(RELEASED_PREFIXES.values())})"
            )
    return out, sources


def convert_released_adapters(state: dict, path: str | Path, config: dict) -> dict:
    """{name: diffusers T2IAdapter state dict}, checked key by key and shape by shape against ``config``."""
    split, sources = split_released_adapters(state, path, int(config.get("num_res_blocks", 2)))
    expected = _shapes(_meta_model("adapter", config))
    for name in ADAPTER_NAMES:
        prefix = RELEASED_PREFIXES[name]
        _compare(
            expected,
            {k: tuple(v.shape) for k, v in split[name].items()},
            f"{path} ({name} adapter, {prefix}*)",
            f"T2I-Adapter (channels {config['channels']})",
            name=lambda k, p=prefix: p + adapter_released_key(k, int(config.get("num_res_blocks", 2))),
            source=lambda k, s=sources[name]: s[k],
        )
    return split


# --- the LDM checkpoint --------------------------------------------------------------------------------------


def convert_ldm_checkpoint(state: dict, path: str | Path, configs: dict) -> tuple[dict, list[str]]:
    """An SD-1.x LDM state dict -> ({'unet','vae','text_encoder': diffusers state dict}, ignored keys).

    Uses diffusers' ``convert_ldm_unet_checkpoint`` / ``convert_ldm_vae_checkpoint`` / ``convert_ldm_clip_checkpoint``
    and then insists that every UNet/VAE/CLIP key of the file was used and every parameter of the models built
    from ``configs`` was filled with the right shape. Keys outside the three models (noise-schedule buffers, EMA
    copies, the VAE's loss) are ignored and returned.
    """
    from diffusers.loaders.single_file_utils import (
        convert_ldm_clip_checkpoint,
        convert_ldm_unet_checkpoint,
        convert_ldm_vae_checkpoint,
    )

    path = Path(path)
    keys = list(state)
    prefixes = {"unet": LDM_UNET_PREFIX, "vae": LDM_VAE_PREFIX, "text_encoder": LDM_CLIP_PREFIX}
    if not any(k.startswith(LDM_UNET_PREFIX) for k in keys):
        if any(k.startswith(tuple(RELEASED_PREFIXES.values())) for k in keys):
            raise ValueError(
                f"{path} holds T2I-Adapters (pose_ada.*), not Stable Diffusion: is it {RELEASED_ADAPTER_FILE}?"
            )
        raise ValueError(
            f"{path} is not a Stable Diffusion (LDM) checkpoint: no {LDM_UNET_PREFIX}* keys "
            f"(first keys: {', '.join(keys[:3]) or 'none'})"
        )
    if any(k.startswith("conditioner.") for k in keys):
        raise ValueError(f"{path} is an SDXL checkpoint (conditioner.* keys); HOIDiffusion is SD-1.4")
    if any(k.startswith("cond_stage_model.model.") for k in keys):
        raise ValueError(
            f"{path} is an SD-2.x checkpoint (OpenCLIP cond_stage_model.model.* keys); HOIDiffusion is SD-1.4"
        )
    for component, prefix in prefixes.items():
        if not any(k.startswith(prefix) for k in keys):
            raise ValueError(
                f"{path}: no {prefix}* keys — the {_PARAM_NAMES[component]} is missing from the checkpoint"
            )

    origin = {id(v): k for k, v in state.items()}

    def source_of(tensor) -> str | None:
        return origin.get(id(tensor)) or origin.get(id(getattr(tensor, "_base", None)))

    unet_sd = convert_ldm_unet_checkpoint(state, configs["unet"])
    vae_sd = convert_ldm_vae_checkpoint(state, configs["vae"])
    te_model = _meta_model("text_encoder", configs["text_encoder"])
    clip_sd = convert_ldm_clip_checkpoint(state)
    if not hasattr(te_model, "text_model"):  # transformers >= 5.6 flattened CLIPTextModel
        clip_sd = {k.removeprefix("text_model."): v for k, v in clip_sd.items()}
    clip_sd = {k: v for k, v in clip_sd.items() if k not in _CLIP_BUFFERS}
    converted = {"unet": unet_sd, "vae": vae_sd, "text_encoder": clip_sd}
    models = {"unet": None, "vae": None, "text_encoder": te_model}

    used = set()
    for component, sd in converted.items():
        for k in [k for k, v in sd.items() if v is None]:
            del sd[k]
        src = {k: source_of(v) or k for k, v in sd.items()}
        used.update(src.values())
        model = models[component] or _meta_model(component, configs[component])
        config = configs[component]
        _compare(
            _shapes(model),
            {k: tuple(v.shape) for k, v in sd.items()},
            f"{path} ({_PARAM_NAMES[component]}, {prefixes[component]}*)",
            f"{_PARAM_NAMES[component]} ({_describe(component, config)})",
            name=lambda k, c=component, cfg=config: ldm_key(c, k, cfg),
            source=lambda k, s=src: s[k],
        )
        # every parameter was filled: the LDM names of the filled keys were used too (covers converters that copy)
        used.update(ldm_key(component, k, config) for k in sd)
    ignored_buffers = {LDM_CLIP_PREFIX + b for b in _CLIP_BUFFERS}
    unused = [
        k
        for k in keys
        if k.startswith(tuple(prefixes.values()))
        and not k.startswith(_LDM_IGNORED_PREFIXES)
        and k not in ignored_buffers
        and k not in used
    ]
    if unused:
        raise ValueError(
            f"{path}: {len(unused)} key(s) of the SD-1.x models were not used by the conversion, e.g. "
            + ", ".join(repr(k) for k in unused[:4])
            + " — a renamed key or a different architecture"
        )
    ignored = [k for k in keys if k not in used]
    return converted, ignored


def _describe(component: str, config: dict) -> str:
    if component == "unet":
        return (
            f"channels {list(config['block_out_channels'])}, cross-attention {config['cross_attention_dim']}"
        )
    if component == "vae":
        return f"channels {list(config['block_out_channels'])}, latent {config.get('latent_channels', 4)}"
    if component == "text_encoder":
        return f"hidden {config['hidden_size']}, {config['num_hidden_layers']} layers, vocab {config['vocab_size']}"
    return f"channels {config.get('channels')}"


# --- writing the converted layout ----------------------------------------------------------------------------


def _save_component(folder: Path, component: str, config: dict, state: dict) -> None:
    """Write ``folder``/config.json + the weights (safetensors) of one component."""
    from safetensors.torch import save_file

    from hoigen.diffusion.hoidiffusion.sd_configs import write_component_config

    folder.mkdir(parents=True, exist_ok=True)
    write_component_config(folder, component, {k: v for k, v in config.items() if not k.startswith("_")})
    tensors = {k: v.detach().contiguous() for k, v in state.items()}
    save_file(tensors, folder / f"{_WEIGHT_STEMS[component]}.safetensors", metadata={"format": "pt"})


def _sha_tree(root: Path, exclude=(RECORD_FILE,)) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): file_sha256(p)
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name not in exclude and not p.name.startswith(".")
    }


def _released_inputs(src: Path, adapters_only: bool) -> dict[str, Path]:
    def find(name: str, required: bool) -> Path | None:
        for candidate in (src / name, src / (Path(name).stem + ".safetensors")):
            if candidate.is_file():
                return candidate
        if required:
            raise FileNotFoundError(
                f"{src}: {name} not found (present: {', '.join(sorted(p.name for p in src.iterdir())) or 'nothing'}). "
                + _WHERE
            )
        return None

    if not src.is_dir():
        raise FileNotFoundError(f"{src} is not a folder. " + _WHERE)
    inputs = {"adapters": find(RELEASED_ADAPTER_FILE, True)}
    if not adapters_only:
        inputs["sd"] = find(RELEASED_SD_FILE, True)
    return inputs


def _released_configs(src: Path, config_dir: str | Path | None) -> tuple[Path | None, dict]:
    from hoigen.diffusion.hoidiffusion.sd_configs import read_config_folder, sd14_configs

    if config_dir is None and (src / RELEASED_CONFIG_DIR).is_dir():
        config_dir = src / RELEASED_CONFIG_DIR
    if config_dir is None:
        return None, sd14_configs()
    return Path(config_dir), read_config_folder(config_dir)


def convert_released(
    src_dir: str | Path,
    out_dir: str | Path,
    *,
    config_dir: str | Path | None = None,
    adapters_only: bool = False,
) -> dict:
    """Convert HOIDiffusion's released files in ``src_dir`` into the converted layout in ``out_dir``.

    config_dir: a weightless config folder for a checkpoint that is not SD-1.4 (default ``src_dir/hoigen_sd_config``
    when present, else SD-1.4's configs and CLIP's tokenizer written by hoigen). adapters_only: convert only
    ``model_condition.pth`` (for use with ``--sd DIR``). The output is written to a temporary sibling folder and
    renamed into place; an existing non-empty ``out_dir`` is refused. Returns the record written to
    ``out_dir/hoigen_weights.json``.
    """
    import diffusers
    import torch
    import transformers

    from hoigen.diffusion.hoidiffusion.sd_configs import write_config_folder

    src, out = Path(src_dir), Path(out_dir)
    inputs = _released_inputs(src, adapters_only)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(
            f"{out} already exists and is not empty; choose a new output folder or remove it"
        )
    config_source, configs = _released_configs(src, config_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tokenizer = None
        if config_source is not None:
            tokenizer = _read_tokenizer(config_source / "tokenizer")
        if not adapters_only:
            write_config_folder(tmp, configs=configs, tokenizer=tokenizer)
        if config_source is not None and not adapters_only:  # keep the folder's scheduler/tokenizer verbatim
            for sub in ("scheduler", "tokenizer"):
                if (config_source / sub).is_dir():
                    shutil.rmtree(tmp / sub)
                    shutil.copytree(config_source / sub, tmp / sub)
        adapter_configs = {name: _adapter_config(config_source, name, configs) for name in ADAPTER_NAMES}
        adapter_state = load_checkpoint(inputs["adapters"])
        parameters = {}
        for name in ADAPTER_NAMES:
            converted = convert_released_adapters(adapter_state, inputs["adapters"], adapter_configs[name])[
                name
            ]
            _save_component(tmp / "adapters" / name, "adapter", adapter_configs[name], converted)
            parameters[f"adapter:{name}"] = sum(v.numel() for v in converted.values())
        del adapter_state
        ignored: list[str] = []
        if not adapters_only:
            state = load_checkpoint(inputs["sd"])
            converted, ignored = convert_ldm_checkpoint(state, inputs["sd"], configs)
            for component in SD_COMPONENTS:
                _save_component(tmp / component, component, configs[component], converted[component])
                parameters[component] = sum(v.numel() for v in converted[component].values())
            del state, converted
        if ignored:
            logger.info(
                "%s: ignored %d keys outside the SD models, e.g. %s", inputs["sd"], len(ignored), ignored[:3]
            )
        record = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "source": "HOIDiffusion release" + (" (adapters only)" if adapters_only else ""),
            "random": False,
            "adapters": list(ADAPTER_NAMES),
            "released_prefixes": RELEASED_PREFIXES,
            "architecture": "SD-1.4 (configs written by hoigen)"
            if config_source is None
            else str(config_source),
            "inputs": {
                p.name: {"sha256": file_sha256(p), "bytes": p.stat().st_size} for p in inputs.values()
            },
            "outputs": _sha_tree(tmp),
            "parameters": parameters,
            "ignored_keys": {"count": len(ignored), "examples": ignored[:10]},
            "versions": {
                "hoigen": _hoigen_version(),
                "diffusers": diffusers.__version__,
                "transformers": transformers.__version__,
                "torch": torch.__version__,
            },
        }
        (tmp / RECORD_FILE).write_text(json.dumps(record, indent=1))
        if out.is_dir():
            out.rmdir()  # empty (checked above)
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("converted %s -> %s", src, out)
    return record


def _read_tokenizer(folder: Path) -> tuple[dict, list] | None:
    if not (folder / "vocab.json").is_file():
        return None
    vocab = json.loads((folder / "vocab.json").read_text(encoding="utf-8"))
    lines = (folder / "merges.txt").read_text(encoding="utf-8").split("\n")
    return vocab, [ln for ln in lines if ln and not ln.startswith("#version")]


def _adapter_config(config_source: Path | None, name: str, configs: dict) -> dict:
    if config_source is not None and (config_source / "adapters" / name / "config.json").is_file():
        data = json.loads((config_source / "adapters" / name / "config.json").read_text())
        return {k: v for k, v in data.items() if not k.startswith("_")}
    return copy.deepcopy(configs["adapter"])


def check_released(src_dir: str | Path, *, config_dir: str | Path | None = None) -> dict:
    """A dry run of the conversion on the meta device (shapes only, no weights read): raises what converting would.

    Returns {'parameters': {component: count}, 'ignored_keys': n, 'inputs': {name: bytes}}.
    """
    src = Path(src_dir)
    inputs = _released_inputs(src, adapters_only=not (src / RELEASED_SD_FILE).is_file())
    config_source, configs = _released_configs(src, config_dir)
    state = load_checkpoint(inputs["adapters"], map_location="meta")
    parameters = {}
    for name in ADAPTER_NAMES:
        split = convert_released_adapters(
            state, inputs["adapters"], _adapter_config(config_source, name, configs)
        )
        parameters[f"adapter:{name}"] = sum(v.numel() for v in split[name].values())
    ignored = []
    if "sd" in inputs:
        converted, ignored = convert_ldm_checkpoint(
            load_checkpoint(inputs["sd"], map_location="meta"), inputs["sd"], configs
        )
        parameters.update({c: sum(v.numel() for v in converted[c].values()) for c in SD_COMPONENTS})
    return {
        "parameters": parameters,
        "ignored_keys": len(ignored),
        "inputs": {p.name: p.stat().st_size for p in inputs.values()},
    }


# --- discovery -----------------------------------------------------------------------------------------------


def folder_kind(folder: Path) -> str | None:
    """'converted' (SD-1.x layout + adapters/), 'adapters' (adapters/ only), 'released', 'sd' or None."""
    has_adapters = all((folder / "adapters" / n / "config.json").is_file() for n in ADAPTER_NAMES)
    has_sd = (folder / "model_index.json").is_file() and all((folder / c).is_dir() for c in SD_COMPONENTS)
    if has_adapters and has_sd:
        return "converted"
    if has_adapters:
        return "adapters"
    if (folder / RELEASED_ADAPTER_FILE).is_file() or (folder / RELEASED_SD_FILE).is_file():
        return "released"
    if has_sd:
        return "sd"
    return None


def _missing_message() -> str:
    return (
        f"no HOIDiffusion weights: pass --hoidiffusion DIR or set {ENV_HOIDIFFUSION} to a folder holding either "
        f"the released {RELEASED_ADAPTER_FILE} (the three T2I-Adapters) + {RELEASED_SD_FILE} (SD-1.4 with the "
        f"fine-tuned UNet), or a folder converted by `hoigen convert hoidiffusion`. "
        + _WHERE
        + ". Optionally "
        f"--sd DIR / {ENV_SD}: a local diffusers SD-1.x folder used with the adapters. To try the pipeline "
        "without weights: `hoigen fixture hoidiffusion DIR` writes a tiny RANDOM model"
    )


def converted_cache_dir(src: Path, adapters_only: bool) -> Path:
    """Where released files in ``src`` are converted on first use: <cache>/hoidiffusion/<sha-prefix>[-adapters]."""
    inputs = _released_inputs(src, adapters_only)
    digest = hashlib.sha256()
    for key in sorted(inputs):
        digest.update(f"{key}:{file_sha256(inputs[key])};".encode())
    if (src / RELEASED_CONFIG_DIR).is_dir():
        for rel, sha in _sha_tree(src / RELEASED_CONFIG_DIR).items():
            digest.update(f"config/{rel}:{sha};".encode())
    return cache_root() / "hoidiffusion" / (digest.hexdigest()[:16] + ("-adapters" if adapters_only else ""))


def _convert_to_cache(src: Path, adapters_only: bool) -> Path:
    target = converted_cache_dir(src, adapters_only)
    if (target / RECORD_FILE).is_file():
        return target
    logger.warning(
        "converting the released HOIDiffusion files in %s once into %s (later runs reuse it)", src, target
    )
    try:
        convert_released(src, target, adapters_only=adapters_only)
    except (FileExistsError, OSError):
        if (target / RECORD_FILE).is_file():  # another worker finished the same conversion first
            return target
        raise
    return target


def _sd_folder_files(folder: Path) -> list[Path]:
    files = [folder / "model_index.json"] if (folder / "model_index.json").is_file() else []
    for component in SD_COMPONENTS:
        files.append(folder / component / "config.json")
        files += weight_files(folder / component, component)[0]
    tok = folder / "tokenizer"
    files += [
        tok / n
        for n in (
            "vocab.json",
            "merges.txt",
            "tokenizer_config.json",
            "special_tokens_map.json",
            "tokenizer.json",
        )
        if (tok / n).is_file()
    ]
    sched = folder / "scheduler" / "scheduler_config.json"
    files += [sched] if sched.is_file() else []
    return files


def weight_files(folder: Path, component: str) -> tuple[list[Path], str | None]:
    """The weight file(s) of a component folder and the diffusers variant they need ('fp16' or None).

    Prefers ``<stem>.safetensors``, then a sharded ``<stem>.safetensors.index.json``, then the ``fp16`` variant,
    then ``<stem>.bin`` / ``pytorch_model.bin``.
    """
    stem = _WEIGHT_STEMS[component]
    for variant in (None, "fp16"):
        infix = f".{variant}" if variant else ""
        single = folder / f"{stem}{infix}.safetensors"
        if single.is_file():
            return [single], variant
        index = folder / f"{stem}{infix}.safetensors.index.json"
        if index.is_file():
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            return [index, *(folder / s for s in shards)], variant
    for name in (f"{stem}.bin", "pytorch_model.bin"):
        if (folder / name).is_file():
            return [folder / name], None
    raise FileNotFoundError(
        f"{folder}: no weights ({stem}.safetensors, its fp16 variant, a sharded index, or a .bin file)"
    )


def resolve_weights(
    hoidiffusion: str | Path | None = None, sd: str | Path | None = None
) -> HOIDiffusionWeights:
    """Find the weights: ``--hoidiffusion DIR`` / $HOIGEN_HOIDIFFUSION_DIR and optionally ``--sd DIR`` / $HOIGEN_SD_DIR.

    The hoidiffusion folder is a converted folder, an adapters-only folder (needs ``sd``) or a folder with the
    released files, which are converted once into <cache>/hoidiffusion/<sha-prefix> ($HOIGEN_CACHE or
    ~/.cache/hoigen). With ``sd``, the SD-1.x components come from that diffusers folder and only the adapters from
    the hoidiffusion folder. Missing or unusable folders raise FileNotFoundError naming the flag and env var.
    """
    hoi_value = hoidiffusion if hoidiffusion not in (None, "") else os.environ.get(ENV_HOIDIFFUSION, "")
    sd_value = sd if sd not in (None, "") else os.environ.get(ENV_SD, "")
    if not hoi_value:
        raise FileNotFoundError(_missing_message())
    hoi = Path(hoi_value).expanduser()
    if not hoi.is_dir():
        raise FileNotFoundError(
            f"--hoidiffusion / {ENV_HOIDIFFUSION}: {hoi} is not a folder. " + _missing_message()
        )
    sd_path = Path(sd_value).expanduser() if sd_value else None
    if sd_path is not None and folder_kind(sd_path) not in ("sd", "converted"):
        raise FileNotFoundError(
            f"--sd / {ENV_SD}: {sd_path} is not a diffusers SD-1.x folder (model_index.json, unet/, vae/, "
            "text_encoder/, tokenizer/, scheduler/)"
        )
    kind = folder_kind(hoi)
    if kind == "released":
        has_ckpt = any(
            (hoi / n).is_file() for n in (RELEASED_SD_FILE, Path(RELEASED_SD_FILE).stem + ".safetensors")
        )
        if not has_ckpt and sd_path is None:
            raise FileNotFoundError(
                f"--hoidiffusion {hoi}: {RELEASED_SD_FILE} is missing; add it, or pass --sd DIR / {ENV_SD} "
                "(a local diffusers SD-1.x folder) to use the adapters with it. " + _WHERE
            )
        hoi = _convert_to_cache(hoi, adapters_only=sd_path is not None)
        kind = folder_kind(hoi)
    if kind in (None, "sd"):
        found = ", ".join(sorted(p.name for p in hoi.iterdir())[:8]) or "nothing"
        raise FileNotFoundError(
            f"--hoidiffusion / {ENV_HOIDIFFUSION}: {hoi} holds neither a converted HOIDiffusion folder (model_index.json, "
            f"unet/, vae/, text_encoder/, tokenizer/, scheduler/, adapters/{{{','.join(ADAPTER_NAMES)}}}/) nor the "
            f"released files (found: {found}). " + _WHERE
        )
    if kind == "adapters" and sd_path is None:
        raise FileNotFoundError(
            f"--hoidiffusion {hoi} holds only the adapters: pass --sd DIR / {ENV_SD} (a local diffusers SD-1.x folder)"
        )
    files: dict[str, str] = {}
    for name in ADAPTER_NAMES:
        folder = hoi / "adapters" / name
        for path in [folder / "config.json", *weight_files(folder, "adapter")[0]]:
            files[path.relative_to(hoi).as_posix()] = file_sha256(path)
    if sd_path is None:
        for path in _sd_folder_files(hoi):
            files[path.relative_to(hoi).as_posix()] = file_sha256(path)
    else:
        for path in _sd_folder_files(sd_path):
            files["sd:" + path.relative_to(sd_path).as_posix()] = file_sha256(path)
    for folder, prefix in ((hoi, ""), (sd_path, "sd:")):
        if folder is not None:
            verify_record(folder, {k[len(prefix) :]: v for k, v in files.items() if k.startswith(prefix)})
    return HOIDiffusionWeights(root=hoi, files=dict(sorted(files.items())), sd=sd_path)


def verify_record(folder: Path, files: dict[str, str]) -> None:
    """Compare the sha256 of the files used with those ``hoigen_weights.json`` recorded when the folder was written.

    files: relative path -> sha256 (of ``folder``). A changed file is a ValueError naming it; a folder without a
    record (e.g. a diffusers SD folder from elsewhere) is not checked.
    """
    record_path = folder / RECORD_FILE
    if not record_path.is_file():
        return
    try:
        outputs = json.loads(record_path.read_text()).get("outputs") or {}
    except (OSError, ValueError) as exc:
        raise ValueError(f"{record_path} is not readable JSON ({exc}); convert the weights again") from exc
    for rel, sha in files.items():
        if rel in outputs and outputs[rel] != sha:
            raise ValueError(
                f"{folder / rel} changed since {RECORD_FILE} was written (sha256 {sha[:12]}…, recorded "
                f"{outputs[rel][:12]}…): a corrupted copy or an edited file; convert or copy the weights again"
            )


# --- validation without weights ------------------------------------------------------------------------------


def _header_shapes(files: list[Path], component: str) -> tuple[dict, dict[str, Path]]:
    """{key: shape} of a component's weight files (read from headers; .bin via torch.load on the meta device)."""
    shapes, where = {}, {}
    for path in files:
        if path.name.endswith(".index.json"):
            continue
        if path.suffix == ".safetensors":
            entries = {k: shape for k, (_, shape) in read_safetensors_header(path).items()}
        else:
            entries = {k: tuple(v.shape) for k, v in load_checkpoint(path, map_location="meta").items()}
        for key, shape in entries.items():
            key = _normalise_key(component, key)
            if key is None:
                continue
            shapes[key] = shape
            where[key] = path
    return shapes, where


_DEPRECATED_VAE_ATTENTION = {
    ".query.": ".to_q.",
    ".key.": ".to_k.",
    ".value.": ".to_v.",
    ".proj_attn.": ".to_out.0.",
}


def _normalise_key(component: str, key: str) -> str | None:
    """Key names older saved folders use, mapped as the libraries map them on load (None = an ignored buffer)."""
    if component == "text_encoder":
        if key in _CLIP_BUFFERS:
            return None
        return key.removeprefix("text_model.")
    if component == "vae" and ".mid_block.attentions." in key:
        for old, new in _DEPRECATED_VAE_ATTENTION.items():
            key = key.replace(old, new)
    return key


def check_component(folder: str | Path, component: str) -> dict:
    """Compare one component folder's weight headers with the model its config.json builds on the meta device.

    Returns {'tensors', 'parameters', 'files'}; raises ValueError naming the file and key on any mismatch.
    """
    folder = Path(folder)
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{folder}: config.json is missing")
    try:
        config = json.loads(config_path.read_text())
    except ValueError as exc:
        raise ValueError(f"{config_path} is not JSON: {exc}") from exc
    try:
        model = _meta_model(component, config)
    except Exception as exc:
        raise ValueError(
            f"{config_path}: cannot build a {_PARAM_NAMES[component]} from it ({_short(exc)})"
        ) from exc
    files, _ = weight_files(folder, component)
    found, where = _header_shapes(files, component)
    if component == "vae":  # deprecated 1x1-conv attention weights (old folders) carry two unit dims
        found = {k: (v[:2] if ".mid_block.attentions." in k and len(v) == 4 else v) for k, v in found.items()}
    expected = _shapes(model)
    weights_name = files[0].name if len(files) == 1 else f"{files[0].name} (+{len(files) - 1} shards)"
    _compare(
        expected,
        found,
        f"{folder / weights_name}",
        f"{_PARAM_NAMES[component]} of {config_path.name} ({_describe(component, config)})",
        source=lambda k: k if len(files) == 1 else f"{k} in {where[k].name}",
    )
    return {
        "tensors": len(expected),
        "parameters": sum(p.numel() for p in model.parameters()),
        "files": [f.relative_to(folder).as_posix() for f in files],
    }


def check_weights(root: str | Path) -> dict:
    """Validate a converted, adapters-only or SD-1.x folder without loading weights.

    Builds every component present on the meta device from its config and compares every weight file's keys and
    shapes with it; checks the tokenizer's vocabulary size against the text encoder and the scheduler config.
    Returns {component: {'tensors', 'parameters', 'files'}, ..., 'kind': ...}; raises ValueError naming the file
    and key on a mismatch (FileNotFoundError for a missing file).
    """
    root = Path(root)
    kind = folder_kind(root)
    if kind in (None, "released"):
        raise FileNotFoundError(
            f"{root} is not a converted HOIDiffusion folder"
            + (" (it holds the released files: `hoigen convert hoidiffusion` them first)" if kind else "")
        )
    report: dict = {"kind": kind}
    if kind in ("converted", "sd"):
        for component in SD_COMPONENTS:
            report[component] = check_component(root / component, component)
        tok = root / "tokenizer"
        for name in ("vocab.json", "merges.txt"):
            if not (tok / name).is_file():
                raise FileNotFoundError(f"{tok}: {name} is missing (SD-1.x's CLIP tokenizer)")
        try:
            vocab = json.loads((tok / "vocab.json").read_text(encoding="utf-8"))
        except ValueError as exc:
            raise ValueError(f"{tok / 'vocab.json'} is not JSON: {exc}") from exc
        te_config = json.loads((root / "text_encoder" / "config.json").read_text())
        ids = set(vocab.values())
        if len(vocab) != te_config["vocab_size"] or ids != set(range(len(vocab))):
            raise ValueError(
                f"{tok / 'vocab.json'}: {len(vocab)} tokens (ids {min(ids, default=0)}..{max(ids, default=0)}) but the "
                f"text encoder has vocab_size {te_config['vocab_size']}; the tokenizer does not belong to this model"
            )
        report["tokenizer"] = {"tokens": len(vocab)}
        if not (root / "scheduler" / "scheduler_config.json").is_file():
            raise FileNotFoundError(f"{root / 'scheduler'}: scheduler_config.json is missing")
    if kind in ("converted", "adapters"):
        report["adapters"] = {
            name: check_component(root / "adapters" / name, "adapter") for name in ADAPTER_NAMES
        }
    report["parameters"] = sum(v["parameters"] for k, v in report.items() if k in SD_COMPONENTS) + sum(
        v["parameters"] for v in report.get("adapters", {}).values()
    )
    return report


# --- loading -------------------------------------------------------------------------------------------------


def make_scheduler(folder: str | Path | None = None):
    """DDIM with the original's timesteps (981 ... 21, 1 at 50 steps); betas etc. from ``folder``'s config if any."""
    from diffusers import DDIMScheduler

    from hoigen.diffusion.hoidiffusion.sd_configs import DDIM_OVERRIDES, DDIM_SCHEDULER

    config = dict(DDIM_SCHEDULER)
    path = Path(folder) / "scheduler_config.json" if folder is not None else None
    if path is not None and path.is_file():
        saved = json.loads(path.read_text())
        config.update({k: v for k, v in saved.items() if k in DDIM_SCHEDULER})
    config.update(DDIM_OVERRIDES)
    return DDIMScheduler.from_config(config)


def _raise_loading_info(info: dict, folder: Path) -> None:
    problems = {k: sorted(info.get(k) or []) for k in ("missing_keys", "unexpected_keys", "mismatched_keys")}
    problems = {k: v for k, v in problems.items() if v}
    if problems or info.get("error_msgs"):
        detail = "; ".join(
            f"{k.replace('_', ' ')}: {', '.join(map(str, v[:4]))}" for k, v in problems.items()
        )
        raise ValueError(f"{folder}: the weights do not load strictly ({detail or info.get('error_msgs')})")


def load_components(weights: HOIDiffusionWeights, device="cpu", dtype=None) -> dict:
    """The pipeline's parts, all from local files and strict.

    Returns {'unet', 'vae', 'text_encoder', 'tokenizer', 'scheduler', 'adapters': [T2IAdapter x3 in ADAPTER_NAMES
    order]}; models in eval mode on ``device`` in ``dtype`` (default float32; each adapter cast explicitly, which
    diffusers' ``torch_dtype`` does not do for a passed adapter).
    """
    from hoigen.diffusion.common import require_diffusion

    require_diffusion()
    import torch
    from diffusers import AutoencoderKL, T2IAdapter, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    dtype = torch.float32 if dtype is None else dtype
    classes = {"unet": UNet2DConditionModel, "vae": AutoencoderKL, "text_encoder": CLIPTextModel}
    out = {}
    sd_root = weights.sd_root
    for component in SD_COMPONENTS:
        folder = sd_root / component
        check_component(folder, component)  # names the file and key before any library error
        _, variant = weight_files(folder, component)
        model, info = classes[component].from_pretrained(
            folder, local_files_only=True, output_loading_info=True, torch_dtype=dtype, variant=variant
        )
        _raise_loading_info(info, folder)
        out[component] = _to(model, device, dtype)
    out["tokenizer"] = CLIPTokenizer.from_pretrained(
        sd_root / "tokenizer", local_files_only=True, model_max_length=77
    )
    out["scheduler"] = make_scheduler(sd_root / "scheduler")
    adapters = []
    for name in ADAPTER_NAMES:
        folder = weights.root / "adapters" / name
        check_component(folder, "adapter")
        adapter, info = T2IAdapter.from_pretrained(
            folder, local_files_only=True, output_loading_info=True, torch_dtype=dtype
        )
        _raise_loading_info(info, folder)
        # cast explicitly: a pipeline's torch_dtype never casts an adapter passed to it
        adapters.append(_to(adapter, device, dtype))
    out["adapters"] = adapters
    return out


def _to(model, device, dtype):
    model = model.to(device)
    if any(p.dtype != dtype for p in model.parameters()):
        model = model.to(dtype)
    return model.eval()


def _hoigen_version() -> str:
    from hoigen import __version__

    return __version__
