"""Tiny, random-initialised CogVideoX-I2V and HVG-3D folders, written offline (tests and CLI smoke runs).

``write_tiny_cogvideox(dir)`` writes a diffusers ``CogVideoXImageToVideoPipeline`` folder with the real classes at
toy sizes (after diffusers' own tests: transformer 2 heads × 16, VAE channels 8, T5 of width 32 built from a config,
a T5 tokenizer built from an in-memory unigram vocabulary, the 5B scheduler config). Its learned positional
embedding fixes the video to ``width`` × ``height`` pixels and ``frames`` frames, as 720×480×49 is fixed for
CogVideoX-5B-I2V. ``write_tiny_hvg3d(dir, cogvideox_dir)`` writes a ControlNet for it whose zero-initialised
linears are replaced by small random ones, so that (unlike a fresh ControlNet) it changes the output.

:data:`COGVIDEOX_5B_I2V_TRANSFORMER` is the released CogVideoX-5B-I2V transformer config, for meta-device checks.
"""

from __future__ import annotations

import string
from pathlib import Path

import torch

COGVIDEOX_5B_I2V_TRANSFORMER = {
    "activation_fn": "gelu-approximate",
    "attention_bias": True,
    "attention_head_dim": 64,
    "dropout": 0.0,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 32,
    "max_text_seq_length": 226,
    "norm_elementwise_affine": True,
    "norm_eps": 1e-05,
    "num_attention_heads": 48,
    "num_layers": 42,
    "out_channels": 16,
    "patch_size": 2,
    "sample_frames": 49,
    "sample_height": 60,
    "sample_width": 90,
    "spatial_interpolation_scale": 1.875,
    "temporal_compression_ratio": 4,
    "temporal_interpolation_scale": 1.0,
    "text_embed_dim": 4096,
    "time_embed_dim": 512,
    "timestep_activation_fn": "silu",
    "use_learned_positional_embeddings": True,
    "use_rotary_positional_embeddings": True,
}
"""CogVideoX-5B-I2V ``transformer/config.json`` (ofs embedding and temporal patching unset)."""

COGVIDEOX_5B_SCHEDULER = {
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "clip_sample_range": 1.0,
    "num_train_timesteps": 1000,
    "prediction_type": "v_prediction",
    "rescale_betas_zero_snr": True,
    "sample_max_value": 1.0,
    "set_alpha_to_one": True,
    "snr_shift_scale": 1.0,
    "steps_offset": 0,
    "timestep_spacing": "trailing",
}

_WORDS = "a an the hand is grasping holding bottle bowl camera can laptop mug object".split()


def tiny_tokenizer():
    """A T5 tokenizer from an in-memory unigram vocabulary (words of the default prompts, then characters)."""
    from transformers import T5Tokenizer

    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    vocab += [("▁" + w, -1.0) for w in _WORDS]
    vocab += [(c, -5.0) for c in string.ascii_letters + string.digits + ".,-'"]
    return T5Tokenizer(vocab=vocab, extra_ids=0)


def tiny_transformer_config(width: int = 48, height: int = 32, frames: int = 9, num_layers: int = 2) -> dict:
    """A toy ``CogVideoXTransformer3DModel`` config for ``width`` × ``height`` px, ``frames`` video frames."""
    if width % 16 or height % 16:
        raise ValueError(f"tiny CogVideoX sizes must be multiples of 16 px, got {width}x{height}")
    if (frames - 1) % 4:
        raise ValueError(f"tiny CogVideoX frame counts are 1 + 4 k, got {frames}")
    return {
        **COGVIDEOX_5B_I2V_TRANSFORMER,
        "num_attention_heads": 2,
        "attention_head_dim": 16,
        "in_channels": 8,
        "out_channels": 4,
        "time_embed_dim": 2,
        "text_embed_dim": 32,
        "num_layers": num_layers,
        "sample_width": width // 8,
        "sample_height": height // 8,
        "sample_frames": frames,
        "max_text_seq_length": 16,
    }


def write_tiny_cogvideox(
    folder: str | Path, width: int = 48, height: int = 32, frames: int = 9, num_layers: int = 2, seed: int = 0
) -> Path:
    """Write a tiny CogVideoX-I2V diffusers folder (random weights from ``seed``); returns the folder."""
    from diffusers import (
        AutoencoderKLCogVideoX,
        CogVideoXDPMScheduler,
        CogVideoXImageToVideoPipeline,
        CogVideoXTransformer3DModel,
    )
    from transformers import T5Config, T5EncoderModel

    folder = Path(folder)
    tokenizer = tiny_tokenizer()
    torch.manual_seed(seed)
    transformer = CogVideoXTransformer3DModel(**tiny_transformer_config(width, height, frames, num_layers))
    vae = AutoencoderKLCogVideoX(
        in_channels=3,
        out_channels=3,
        down_block_types=("CogVideoXDownBlock3D",) * 4,
        up_block_types=("CogVideoXUpBlock3D",) * 4,
        block_out_channels=(8, 8, 8, 8),
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=2,
        temporal_compression_ratio=4,
        scaling_factor=0.7,
    )
    text_encoder = T5EncoderModel(
        T5Config(
            vocab_size=len(tokenizer),
            d_model=32,
            d_kv=8,
            d_ff=37,
            num_layers=1,
            num_heads=4,
            relative_attention_num_buckets=8,
        )
    )
    scheduler = CogVideoXDPMScheduler(**COGVIDEOX_5B_SCHEDULER)
    pipe = CogVideoXImageToVideoPipeline(
        tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, transformer=transformer, scheduler=scheduler
    )
    pipe.save_pretrained(str(folder), safe_serialization=True)
    return folder


def write_tiny_hvg3d(
    folder: str | Path, cogvideox_dir: str | Path, num_blocks: int = 1, points: bool = True, seed: int = 0
) -> Path:
    """Write a tiny HVG-3D ControlNet for the CogVideoX folder ``cogvideox_dir`` (64 points, 16 centres of 8)."""
    from diffusers import CogVideoXTransformer3DModel

    from hoigen.diffusion.hvg3d.model import HVG3DControlNet
    from hoigen.diffusion.hvg3d.weights import save_hvg3d

    transformer = CogVideoXTransformer3DModel.from_pretrained(
        str(cogvideox_dir), subfolder="transformer", local_files_only=True
    )
    model = HVG3DControlNet.from_transformer(
        transformer,
        num_blocks=num_blocks,
        points=points,
        num_points=64,
        num_centres=16,
        group_size=8,
        point_encoder_dim=32,
        point_token_dim=24,
    )
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        linears = [model.in_linear, *model.out_linears] + ([model.point_proj] if points else [])
        for linear in linears:
            linear.weight.copy_(torch.randn(linear.weight.shape, generator=generator) * 0.05)
            linear.bias.zero_()
    return save_hvg3d(model, folder)
