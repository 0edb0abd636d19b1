"""diffusers -> original (LDM / T2I-Adapter) key names: the inverse of the conversions, written for hoigen.

Conversion itself goes through diffusers' own LDM converters (``weights.py``); these inverse maps serve the tiny
released-format fixtures (``fixtures.py``) and name the key a file *should* have had when one is missing.

LDM layout of an SD-1.x UNet (``model.diffusion_model.``), with L = layers_per_block:
``input_blocks.0.0`` = conv_in; ``input_blocks.{1+b(L+1)+j}.{0: resnet, 1: attention}`` = down block b, layer j;
``input_blocks.{(b+1)(L+1)}.0.op`` = its downsampler; ``middle_block.{0,1,2}`` = resnet, attention, resnet;
``output_blocks.{b(L+1)+j}.{0: resnet, 1: attention}`` = up block b, layer j (L+1 layers) with the upsampler in
the last layer at index 1 (blocks without attention) or 2; ``time_embed.{0,2}``; ``out.{0,2}`` = norm, conv.
Resnets: in_layers.{0,2} = norm1, conv1; emb_layers.1 = time_emb_proj; out_layers.{0,3} = norm2, conv2;
skip_connection = conv_shortcut. Transformer blocks keep their names.

VAE (``first_stage_model.``): ``{encoder,decoder}.{down,up}.{i}.block.{j}`` (decoder up blocks in reverse order),
``.downsample.conv`` / ``.upsample.conv``, ``mid.block_{1,2}``, ``mid.attn_1.{norm,q,k,v,proj_out}`` (1x1 convs,
so their weights carry two trailing unit dimensions), ``norm_out`` = conv_norm_out, ``nin_shortcut``.

CLIP text encoder (``cond_stage_model.transformer.``): transformers' CLIPTextModel keys under ``text_model.``.

T2I-Adapter (released ``model_condition.pth``, per adapter prefix): ``conv_in``; ``body.{lR+j}.block{1,2}`` =
``adapter.body.{l}.resnets.{j}.block{1,2}`` and ``body.{lR}.in_conv`` = ``adapter.body.{l}.in_conv``
(R = num_res_blocks).
"""

from __future__ import annotations

LDM_UNET_PREFIX = "model.diffusion_model."
LDM_VAE_PREFIX = "first_stage_model."
LDM_CLIP_PREFIX = "cond_stage_model.transformer."

_UNET_FIXED = {
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "conv_in": "input_blocks.0.0",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
}
_UNET_RESNET = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}
_VAE_ATTENTION = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def _resnet(rest: str, table: dict[str, str]) -> str:
    head, _, tail = rest.partition(".")
    return f"{table.get(head, head)}.{tail}"


def unet_ldm_key(key: str, config: dict) -> str:
    """LDM name (without ``model.diffusion_model.``) of diffusers UNet2DConditionModel parameter ``key``."""
    n = config["layers_per_block"]
    for new, old in _UNET_FIXED.items():
        if key.startswith(new + "."):
            return old + key[len(new) :]
    parts = key.split(".")
    if parts[0] == "down_blocks":
        b, kind = int(parts[1]), parts[2]
        if kind == "downsamplers":  # down_blocks.b.downsamplers.0.conv.<p>
            return f"input_blocks.{(b + 1) * (n + 1)}.0.op.{parts[-1]}"
        j, rest = int(parts[3]), ".".join(parts[4:])
        index = 1 + b * (n + 1) + j
        if kind == "resnets":
            return f"input_blocks.{index}.0.{_resnet(rest, _UNET_RESNET)}"
        return f"input_blocks.{index}.1.{rest}"
    if parts[0] == "mid_block":
        kind, k, rest = parts[1], int(parts[2]), ".".join(parts[3:])
        if kind == "resnets":
            return f"middle_block.{2 * k}.{_resnet(rest, _UNET_RESNET)}"
        return f"middle_block.1.{rest}"
    if parts[0] == "up_blocks":
        b, kind = int(parts[1]), parts[2]
        if kind == "upsamplers":  # up_blocks.b.upsamplers.0.conv.<p>
            slot = 2 if config["up_block_types"][b].startswith("CrossAttn") else 1
            return f"output_blocks.{b * (n + 1) + n}.{slot}.conv.{parts[-1]}"
        j, rest = int(parts[3]), ".".join(parts[4:])
        index = b * (n + 1) + j
        if kind == "resnets":
            return f"output_blocks.{index}.0.{_resnet(rest, _UNET_RESNET)}"
        return f"output_blocks.{index}.1.{rest}"
    raise ValueError(f"no LDM name for UNet key {key!r}")


def vae_ldm_key(key: str, config: dict) -> str:
    """LDM name (without ``first_stage_model.``) of diffusers AutoencoderKL parameter ``key``."""
    if key.startswith(("quant_conv.", "post_quant_conv.")):
        return key
    side, _, rest = key.partition(".")
    parts = rest.split(".")
    if parts[0] in ("conv_in", "conv_out"):
        return key
    if parts[0] == "conv_norm_out":
        return f"{side}.norm_out.{parts[-1]}"
    shortcut = {"conv_shortcut": "nin_shortcut"}
    if parts[0] == "mid_block":
        kind, k, tail = parts[1], int(parts[2]), ".".join(parts[3:])
        if kind == "resnets":
            return f"{side}.mid.block_{k + 1}.{_resnet(tail, shortcut)}"
        for new, old in _VAE_ATTENTION.items():
            if tail.startswith(new + "."):
                return f"{side}.mid.attn_1.{old}{tail[len(new) :]}"
    if parts[0] in ("down_blocks", "up_blocks"):
        i, kind = int(parts[1]), parts[2]
        if parts[0] == "up_blocks":
            i = len(config["up_block_types"]) - 1 - i
        level = "down" if parts[0] == "down_blocks" else "up"
        if kind in ("downsamplers", "upsamplers"):
            return f"{side}.{level}.{i}.{kind[:-2]}.conv.{parts[-1]}"
        j, tail = int(parts[3]), ".".join(parts[4:])
        return f"{side}.{level}.{i}.block.{j}.{_resnet(tail, shortcut)}"
    raise ValueError(f"no LDM name for VAE key {key!r}")


def vae_ldm_value(key: str, tensor):
    """LDM stores the VAE mid-attention projections as 1x1 convs: (C, C) -> (C, C, 1, 1)."""
    if ".mid_block.attentions." in key and key.endswith("weight") and tensor.ndim == 2:
        return tensor[:, :, None, None]
    return tensor


def clip_ldm_key(key: str) -> str:
    """LDM name (without ``cond_stage_model.transformer.``) of a CLIPTextModel parameter ``key``."""
    return key if key.startswith("text_model.") else "text_model." + key


def adapter_released_key(key: str, num_res_blocks: int) -> str:
    """Released (T2I-Adapter) name, without the adapter prefix, of a diffusers T2IAdapter parameter ``key``."""
    if not key.startswith("adapter."):
        raise ValueError(f"no released name for adapter key {key!r}")
    rest = key[len("adapter.") :]
    parts = rest.split(".")
    if parts[0] == "conv_in":
        return rest
    if parts[0] == "body":
        level = int(parts[1])
        if parts[2] == "in_conv":
            return f"body.{level * num_res_blocks}.in_conv.{parts[-1]}"
        if parts[2] == "resnets":
            return f"body.{level * num_res_blocks + int(parts[3])}.{'.'.join(parts[4:])}"
    raise ValueError(f"no released name for adapter key {key!r}")


def ldm_key(component: str, key: str, config: dict) -> str:
    """Full name in the LDM checkpoint of diffusers ``component`` ('unet'/'vae'/'text_encoder') parameter ``key``."""
    if component == "unet":
        return LDM_UNET_PREFIX + unet_ldm_key(key, config)
    if component == "vae":
        return LDM_VAE_PREFIX + vae_ldm_key(key, config)
    if component == "text_encoder":
        return LDM_CLIP_PREFIX + clip_ldm_key(key)
    raise ValueError(f"unknown component {component!r}")
