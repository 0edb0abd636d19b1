"""Tiny, RANDOM, real HOIDiffusion models for tests and for trying the pipeline end to end offline.

Sizes follow diffusers' own adapter tests: UNet with 4 blocks (32, 32, 32, 64), cross-attention 32; VAE with 4
blocks (so the latent is 1/8 of the image, like SD); CLIP text encoder hidden 32, 5 layers; three full
T2I-Adapters with channels [32, 32, 32, 64] and downscale 8, so a 64x64 image gives an 8x8 latent. The tokenizer
is a tiny byte-level BPE written on the fly (byte symbols, a few hundred merges of prompt words, CLIP's special
tokens last). The weights are random: generated images are noise. Two layouts are written:

- :func:`write_tiny_hoidiffusion`: the converted layout ``generate`` loads (each model saved by its library);
- :func:`write_tiny_released`: the same weights in HOIDiffusion's *released* formats — an LDM-format
  ``model_sd_finetuned.ckpt`` and ``model_condition.pth`` with ``pose_ada.``/``depth_ada.``/``mask_ada.`` keys —
  plus ``hoigen_sd_config/`` describing the tiny architecture, so conversion can be round-trip tested.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

from hoigen.diffusion.hoidiffusion.ldm_keys import (
    LDM_CLIP_PREFIX,
    LDM_UNET_PREFIX,
    LDM_VAE_PREFIX,
    adapter_released_key,
    clip_ldm_key,
    unet_ldm_key,
    vae_ldm_key,
    vae_ldm_value,
)
from hoigen.diffusion.hoidiffusion.sd_configs import (
    CLIP_BOS,
    CLIP_EOS,
    bytes_to_unicode,
    write_config_folder,
)
from hoigen.diffusion.hoidiffusion.weights import (
    ADAPTER_NAMES,
    FORMAT,
    FORMAT_VERSION,
    RECORD_FILE,
    RELEASED_ADAPTER_FILE,
    RELEASED_CONFIG_DIR,
    RELEASED_PREFIXES,
    RELEASED_SD_FILE,
    _sha_tree,
)

RANDOM_NOTICE = (
    "RANDOM WEIGHTS: a tiny HOIDiffusion-shaped model written by `hoigen fixture hoidiffusion` for trying the "
    "pipeline end to end; its images are noise. Real weights: HOIDiffusion's release (see README)."
)

TINY_WORDS = (
    "a hand is grasping holding the mug bottle bowl camera can laptop cup photo of on in with table kitchen "
    "wooden white red blue background longbody lowres bad anatomy hands missing fingers extra digit fewer "
    "digits cropped worst quality low realistic"
).split()

TINY_UNET = {
    "attention_head_dim": 8,
    "block_out_channels": [32, 32, 32, 64],
    "cross_attention_dim": 32,
    "down_block_types": [
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "DownBlock2D",
    ],
    "in_channels": 4,
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "out_channels": 4,
    "sample_size": 8,
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
}
TINY_VAE = {
    "block_out_channels": [32, 32, 32, 64],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "in_channels": 3,
    "latent_channels": 4,
    "layers_per_block": 1,
    "norm_num_groups": 32,
    "out_channels": 3,
    "sample_size": 64,
    "scaling_factor": 0.18215,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
}
TINY_TEXT_ENCODER = {
    "hidden_act": "quick_gelu",
    "hidden_size": 32,
    "intermediate_size": 37,
    "layer_norm_eps": 1e-05,
    "max_position_embeddings": 77,
    "num_attention_heads": 4,
    "num_hidden_layers": 5,
    "projection_dim": 32,
}
TINY_ADAPTER = {
    "adapter_type": "full_adapter",
    "channels": [32, 32, 32, 64],
    "downscale_factor": 8,
    "in_channels": 3,
    "num_res_blocks": 2,
}


def tiny_tokenizer() -> tuple[dict[str, int], list[str]]:
    """A tiny CLIP-style BPE: {token: id} and merges; byte symbols, word merges, then <|startoftext|>, <|endoftext|>."""
    symbols = list(bytes_to_unicode().values())
    tokens = symbols + [s + "</w>" for s in symbols]
    merges: list[str] = []
    for word in TINY_WORDS:
        pieces = [*word[:-1], word[-1] + "</w>"]
        while len(pieces) > 1:  # merge left to right: h a -> ha, ha n -> han, ...
            merge = f"{pieces[0]} {pieces[1]}"
            if merge not in merges:
                merges.append(merge)
                tokens.append(pieces[0] + pieces[1])
            pieces = [pieces[0] + pieces[1], *pieces[2:]]
    tokens += [CLIP_BOS, CLIP_EOS]
    return {tok: i for i, tok in enumerate(tokens)}, merges


def tiny_configs() -> dict:
    """{'unet','vae','text_encoder','adapter'} configs of the tiny fixture (text encoder sized to the tiny vocab)."""
    vocab, _ = tiny_tokenizer()
    n = len(vocab)
    text = {
        **TINY_TEXT_ENCODER,
        "vocab_size": n,
        "bos_token_id": n - 2,
        "eos_token_id": n - 1,
        "pad_token_id": n - 1,
    }
    return copy.deepcopy({"unet": TINY_UNET, "vae": TINY_VAE, "text_encoder": text, "adapter": TINY_ADAPTER})


def tiny_models(seed: int = 0) -> dict:
    """Randomly initialised tiny models: {'unet','vae','text_encoder','adapters': [3], 'configs', 'tokenizer'}.

    Initialisation draws from torch's global generator inside ``fork_rng`` (seeded with ``seed``), so the caller's
    random state is untouched and the same seed gives the same weights.
    """
    import torch
    from diffusers import AutoencoderKL, T2IAdapter, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    configs = tiny_configs()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        unet = UNet2DConditionModel(**configs["unet"])
        vae = AutoencoderKL(**configs["vae"])
        text_encoder = CLIPTextModel(CLIPTextConfig(**configs["text_encoder"]))
        adapters = [T2IAdapter(**configs["adapter"]) for _ in ADAPTER_NAMES]
    for model in (unet, vae, text_encoder, *adapters):
        model.eval()
    return {
        "unet": unet,
        "vae": vae,
        "text_encoder": text_encoder,
        "adapters": adapters,
        "configs": configs,
        "tokenizer": tiny_tokenizer(),
    }


def _fresh(folder: str | Path) -> Path:
    folder = Path(folder)
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise FileExistsError(f"{folder} already exists and is not empty; choose a new folder")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def write_tiny_hoidiffusion(out_dir: str | Path, seed: int = 0) -> Path:
    """Write a tiny random model in the converted layout (loadable by ``load_components``); returns ``out_dir``."""
    import diffusers

    out = _fresh(out_dir)
    models = tiny_models(seed)
    write_config_folder(out, configs=models["configs"], tokenizer=models["tokenizer"])
    models["unet"].save_pretrained(out / "unet", safe_serialization=True)
    models["vae"].save_pretrained(out / "vae", safe_serialization=True)
    models["text_encoder"].save_pretrained(out / "text_encoder", safe_serialization=True)
    for name, adapter in zip(ADAPTER_NAMES, models["adapters"]):
        adapter.save_pretrained(out / "adapters" / name, safe_serialization=True)
    (out / "README.txt").write_text(RANDOM_NOTICE + "\n")
    record = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "source": f"hoigen tiny fixture (seed {int(seed)})",
        "random": True,
        "notice": RANDOM_NOTICE,
        "adapters": list(ADAPTER_NAMES),
        "inputs": {},
        "outputs": _sha_tree(out, exclude=(RECORD_FILE, "README.txt")),
        "versions": {"diffusers": diffusers.__version__},
    }
    (out / RECORD_FILE).write_text(json.dumps(record, indent=1))
    return out


def ldm_state_dict(models: dict) -> dict:
    """The tiny UNet/VAE/CLIP as one flat LatentDiffusion state dict (as ``model_sd_finetuned.ckpt`` stores SD)."""
    import torch

    configs = models["configs"]
    state = {}
    for key, value in models["unet"].state_dict().items():
        state[LDM_UNET_PREFIX + unet_ldm_key(key, configs["unet"])] = value.clone()
    for key, value in models["vae"].state_dict().items():
        state[LDM_VAE_PREFIX + vae_ldm_key(key, configs["vae"])] = vae_ldm_value(key, value).clone()
    for key, value in models["text_encoder"].state_dict().items():
        state[LDM_CLIP_PREFIX + clip_ldm_key(key)] = value.clone()
    # what a real LDM checkpoint also holds: CLIP's position ids and the noise schedule's buffers
    state[LDM_CLIP_PREFIX + "text_model.embeddings.position_ids"] = torch.arange(77)[None]
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    state["betas"] = betas.float()
    state["alphas_cumprod"] = torch.cumprod(1 - betas, 0).float()
    return state


def released_adapter_state_dict(models: dict) -> dict:
    """The three tiny adapters in ``model_condition.pth``'s layout (pose_ada./depth_ada./mask_ada. + T2I keys)."""
    r = models["configs"]["adapter"]["num_res_blocks"]
    state = {}
    for name, adapter in zip(ADAPTER_NAMES, models["adapters"]):
        for key, value in adapter.state_dict().items():
            state[RELEASED_PREFIXES[name] + adapter_released_key(key, r)] = value.clone()
    return state


def write_tiny_released(src_dir: str | Path, seed: int = 0) -> Path:
    """Write the tiny random weights as HOIDiffusion's released files (+ ``hoigen_sd_config/``); returns ``src_dir``."""
    import torch

    src = _fresh(src_dir)
    models = tiny_models(seed)
    torch.save(ldm_state_dict(models), src / RELEASED_SD_FILE)
    torch.save(released_adapter_state_dict(models), src / RELEASED_ADAPTER_FILE)
    write_config_folder(src / RELEASED_CONFIG_DIR, configs=models["configs"], tokenizer=models["tokenizer"])
    (src / "README.txt").write_text(RANDOM_NOTICE + "\n")
    return src
