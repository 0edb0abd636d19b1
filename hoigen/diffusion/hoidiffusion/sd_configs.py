"""Stable Diffusion 1.4 configuration files and CLIP's tokenizer, written by hoigen so nothing is fetched.

A *config folder* is a diffusers SD-1.x pipeline folder without weights (what ``from_single_file(config=...)``
wants, and what ``hoigen convert hoidiffusion`` fills with weights): ``model_index.json``, ``unet/config.json``,
``vae/config.json``, ``text_encoder/config.json``, ``scheduler/scheduler_config.json``, ``tokenizer/`` (vocab.json,
merges.txt, tokenizer_config.json with ``model_max_length`` 77) and hoigen's ``adapters/{name}/config.json``.

The dicts below are SD-1.4's published architecture (CompVis/stable-diffusion-v1-4): UNet 859.52 M parameters,
VAE 83.65 M, CLIP ViT-L/14 text encoder 123.06 M; HOIDiffusion's adapters are diffusers ``T2IAdapter`` full
adapters (77.37 M each). The scheduler is DDIM with the original's timesteps (981, 961, ..., 21, 1 for 50 steps).

CLIP's BPE vocabulary is not in any checkpoint: it is read from ``open_clip/bpe_simple_vocab_16e6.txt.gz``, package
data of the ``open-clip-torch`` wheel, located through its distribution metadata *without importing open_clip*
(whose import pulls torchvision). Vocabulary = the 256 byte symbols, the same with ``</w>``, the first 48 894
merges, then ``<|startoftext|>`` (49406) and ``<|endoftext|>`` (49407): 49 408 tokens.
"""

from __future__ import annotations

import copy
import gzip
import json
from pathlib import Path

SD14_UNET = {
    "act_fn": "silu",
    "attention_head_dim": 8,
    "block_out_channels": [320, 640, 1280, 1280],
    "center_input_sample": False,
    "cross_attention_dim": 768,
    "down_block_types": [
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "DownBlock2D",
    ],
    "downsample_padding": 1,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 4,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "out_channels": 4,
    "sample_size": 64,
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
}

SD14_VAE = {
    "act_fn": "silu",
    "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "in_channels": 3,
    "latent_channels": 4,
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "out_channels": 3,
    "sample_size": 512,
    "scaling_factor": 0.18215,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
}

SD14_TEXT_ENCODER = {
    "architectures": ["CLIPTextModel"],
    "attention_dropout": 0.0,
    "bos_token_id": 49406,
    "dropout": 0.0,
    "eos_token_id": 49407,
    "hidden_act": "quick_gelu",
    "hidden_size": 768,
    "initializer_factor": 1.0,
    "initializer_range": 0.02,
    "intermediate_size": 3072,
    "layer_norm_eps": 1e-05,
    "max_position_embeddings": 77,
    "num_attention_heads": 12,
    "num_hidden_layers": 12,
    "pad_token_id": 49407,
    "projection_dim": 768,
    "vocab_size": 49408,
}

# HOIDiffusion's three sub-adapters (skeleton, normal map, mask) each have this architecture.
SD14_ADAPTER = {
    "adapter_type": "full_adapter",
    "channels": [320, 640, 1280, 1280],
    "downscale_factor": 8,
    "in_channels": 3,
    "num_res_blocks": 2,
}

# The original's sampler (HOIDiffusion / T2I-Adapter's DDIM): these settings give its timesteps 981 ... 21, 1.
DDIM_SCHEDULER = {
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
    "set_alpha_to_one": False,
    "steps_offset": 1,
    "timestep_spacing": "leading",
}
DDIM_OVERRIDES = {
    "clip_sample": False,
    "set_alpha_to_one": False,
    "steps_offset": 1,
    "timestep_spacing": "leading",
}

TOKENIZER_CONFIG = {
    "add_prefix_space": False,
    "bos_token": "<|startoftext|>",
    "do_lower_case": True,
    "eos_token": "<|endoftext|>",
    "errors": "replace",
    "model_max_length": 77,
    "pad_token": "<|endoftext|>",
    "tokenizer_class": "CLIPTokenizer",
    "unk_token": "<|endoftext|>",
}

MODEL_INDEX = {
    "_class_name": "StableDiffusionPipeline",
    "feature_extractor": [None, None],
    "image_encoder": [None, None],
    "requires_safety_checker": False,
    "safety_checker": [None, None],
    "scheduler": ["diffusers", "DDIMScheduler"],
    "text_encoder": ["transformers", "CLIPTextModel"],
    "tokenizer": ["transformers", "CLIPTokenizer"],
    "unet": ["diffusers", "UNet2DConditionModel"],
    "vae": ["diffusers", "AutoencoderKL"],
}

CLIP_BPE_FILE = "bpe_simple_vocab_16e6.txt.gz"
CLIP_NUM_MERGES = 49152 - 256 - 2  # 48 894
CLIP_BOS, CLIP_EOS = "<|startoftext|>", "<|endoftext|>"


def sd14_configs() -> dict:
    """Deep copies of SD-1.4's component configs: {'unet', 'vae', 'text_encoder', 'adapter'}."""
    return copy.deepcopy(
        {"unet": SD14_UNET, "vae": SD14_VAE, "text_encoder": SD14_TEXT_ENCODER, "adapter": SD14_ADAPTER}
    )


# --- CLIP's BPE vocabulary ----------------------------------------------------------------------------------


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable character table (256 entries, printable bytes map to themselves).

    Bytes ``!``..``~``, ``¡``..``¬`` and ``®``..``ÿ`` keep their code point; the other 68 bytes (controls, space,
    soft hyphen, ...) take code points 256, 257, ... in byte order. Insertion order (printable ranges first) is
    the order of CLIP's first 256 vocabulary entries.
    """
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    table = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def find_clip_bpe() -> Path:
    """Path of open-clip-torch's ``bpe_simple_vocab_16e6.txt.gz``, found without importing ``open_clip``."""
    import importlib.metadata
    import importlib.util

    candidates = []
    try:
        for entry in importlib.metadata.files("open-clip-torch") or ():
            if entry.name == CLIP_BPE_FILE:
                candidates.append(Path(entry.locate()))
    except importlib.metadata.PackageNotFoundError:
        pass
    spec = importlib.util.find_spec("open_clip")  # locates the package; does not execute its __init__
    if spec is not None and spec.submodule_search_locations:
        candidates += [Path(p) / CLIP_BPE_FILE for p in spec.submodule_search_locations]
    for path in candidates:
        if path.is_file():
            return path
    raise ImportError(
        f"CLIP's BPE vocabulary ({CLIP_BPE_FILE}) was not found: it ships with the open-clip-torch wheel; "
        "install it with `pip install --no-deps open-clip-torch` (no torchvision needed)"
    )


def clip_vocabulary(bpe_path: str | Path | None = None) -> tuple[dict[str, int], list[str]]:
    """CLIP's tokenizer vocabulary {token: id} (49 408 entries) and its 48 894 merges ("a b" lines)."""
    path = Path(bpe_path) if bpe_path is not None else find_clip_bpe()
    try:
        lines = gzip.decompress(path.read_bytes()).decode("utf-8").split("\n")
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise ValueError(
            f"{path} is not CLIP's gzip BPE merges file ({exc}); reinstall open-clip-torch"
        ) from exc
    merges = lines[1 : CLIP_NUM_MERGES + 1]
    if len(merges) != CLIP_NUM_MERGES or any(len(m.split()) != 2 for m in merges):
        raise ValueError(
            f"{path}: expected {CLIP_NUM_MERGES} merge lines of two symbols after the header, "
            f"got {len(merges)}; reinstall open-clip-torch"
        )
    symbols = list(bytes_to_unicode().values())
    tokens = (
        symbols + [s + "</w>" for s in symbols] + ["".join(m.split()) for m in merges] + [CLIP_BOS, CLIP_EOS]
    )
    vocab = {tok: i for i, tok in enumerate(tokens)}
    if len(vocab) != len(tokens):
        raise ValueError(f"{path}: the merges produce duplicate tokens; reinstall open-clip-torch")
    return vocab, merges


def write_tokenizer(folder: str | Path, vocab: dict[str, int], merges: list[str]) -> Path:
    """Write a CLIPTokenizer folder (vocab.json, merges.txt, tokenizer_config.json, special_tokens_map.json)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text(
        "#version: 0.2\n" + "".join(m + "\n" for m in merges), encoding="utf-8"
    )
    (folder / "tokenizer_config.json").write_text(json.dumps(TOKENIZER_CONFIG, indent=2))
    special = {k: TOKENIZER_CONFIG[k] for k in ("bos_token", "eos_token", "pad_token", "unk_token")}
    (folder / "special_tokens_map.json").write_text(json.dumps(special, indent=2))
    return folder


def write_clip_tokenizer(folder: str | Path, bpe_path: str | Path | None = None) -> Path:
    """Write SD-1.x's CLIP tokenizer files into ``folder`` (from open-clip-torch's vocabulary file)."""
    vocab, merges = clip_vocabulary(bpe_path)
    return write_tokenizer(folder, vocab, merges)


# --- config folders --------------------------------------------------------------------------------------------


def _diffusers_config(class_name: str, config: dict) -> str:
    import diffusers

    return json.dumps(
        {"_class_name": class_name, "_diffusers_version": diffusers.__version__, **config}, indent=2
    )


def write_component_config(folder: str | Path, component: str, config: dict) -> Path:
    """Write one component's config file into ``folder`` (unet / vae / text_encoder / scheduler / adapter)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = {k: v for k, v in config.items() if not k.startswith("_")}
    if component == "text_encoder":
        from transformers import CLIPTextConfig

        skip = ("architectures", "transformers_version", "model_type", "torch_dtype", "dtype")
        CLIPTextConfig(**{k: v for k, v in config.items() if k not in skip}).save_pretrained(folder)
        return folder / "config.json"
    names = {
        "unet": ("UNet2DConditionModel", "config.json"),
        "vae": ("AutoencoderKL", "config.json"),
        "adapter": ("T2IAdapter", "config.json"),
        "scheduler": ("DDIMScheduler", "scheduler_config.json"),
    }
    if component not in names:
        raise ValueError(
            f"unknown component {component!r}; expected one of {sorted(names)} or 'text_encoder'"
        )
    class_name, file_name = names[component]
    (folder / file_name).write_text(_diffusers_config(class_name, config))
    return folder / file_name


def write_config_folder(
    folder: str | Path,
    configs: dict | None = None,
    tokenizer: tuple[dict[str, int], list[str]] | None = None,
    adapter_names: tuple[str, ...] = ("skeleton", "normal", "mask"),
) -> Path:
    """Write a weightless SD-1.x config folder (see the module docstring).

    configs: {'unet','vae','text_encoder','adapter'} dicts (default SD-1.4's); tokenizer: (vocab, merges)
    (default CLIP's, from open-clip-torch).
    """
    import diffusers

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    configs = configs or sd14_configs()
    index = {**MODEL_INDEX, "_diffusers_version": diffusers.__version__}
    (folder / "model_index.json").write_text(json.dumps(index, indent=2))
    for component in ("unet", "vae", "text_encoder"):
        write_component_config(folder / component, component, configs[component])
    write_component_config(folder / "scheduler", "scheduler", DDIM_SCHEDULER)
    for name in adapter_names:
        write_component_config(folder / "adapters" / name, "adapter", configs["adapter"])
    if tokenizer is None:
        write_clip_tokenizer(folder / "tokenizer")
    else:
        write_tokenizer(folder / "tokenizer", *tokenizer)
    return folder


def read_config_folder(folder: str | Path) -> dict:
    """Component configs {'unet','vae','text_encoder','adapter'} of a config (or converted) folder."""
    folder = Path(folder)
    out = {}
    for component, rel in (
        ("unet", "unet/config.json"),
        ("vae", "vae/config.json"),
        ("text_encoder", "text_encoder/config.json"),
    ):
        path = folder / rel
        if not path.is_file():
            raise FileNotFoundError(f"config folder {folder}: {rel} is missing")
        out[component] = _read_json(path)
    adapter_files = sorted((folder / "adapters").glob("*/config.json"))
    out["adapter"] = _read_json(adapter_files[0]) if adapter_files else copy.deepcopy(SD14_ADAPTER)
    return out


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path} is not a readable JSON config file: {exc}") from exc
