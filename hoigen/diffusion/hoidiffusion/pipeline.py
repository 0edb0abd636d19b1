"""HOIDiffusion inference: photoreal frames from a sequence's skeleton, normal and hand-object mask images.

diffusers' ``StableDiffusionAdapterPipeline`` with a ``MultiAdapter`` of the three adapters in the order
[skeleton, normal, mask] and weights [1, 1, 1] (features summed, as the original; the MultiAdapter default is
1/N), DDIM with the original's timesteps (50 steps, guidance 7.5), the paper's negative prompt, and the prompt
"A hand is grasping a {category}" plus optional style/background phrases drawn per sample. All frames of a sequence
go through one UNet batch with anchor-frame attention (``attention.py``); frames of several sequences share a
batch. Each sample's initial latents come from a ``torch.Generator`` seeded with the sample's ``photo`` seed, so a
frame's noise does not depend on what else is in the batch. Same seed, weights, hardware and library versions →
the same images (GPU kernels are not bit-reproducible across devices or versions).

Generated frames never change a label: the backend only adds ``fNNN.photo.png`` members and ``meta.generation``.
"""

from __future__ import annotations

import importlib.metadata
import logging
import re
import time
from dataclasses import dataclass, field

import numpy as np

from hoigen.diffusion.hoidiffusion.conditions import (
    Crop,
    crop_conditions,
    frame_conditions,
    sequence_crop,
)

logger = logging.getLogger(__name__)

NEGATIVE_PROMPT = (
    "longbody, lowres, bad anatomy, bad hands, missing fingers, extra digit, fewer digits, cropped, worst quality, "
    "low quality"
)
PROMPT_TEMPLATE = "A hand is grasping a {category}"
CONDITION_MEMBERS = ("skeleton", "normal", "hoimask")


@dataclass(frozen=True)
class PhotoOptions:
    """Sampling options of the photo stage (recorded in ``meta.generation.photo``)."""

    steps: int = 50
    guidance: float = 7.5
    anchor: bool = True
    normals: str = "exact"
    midas: str | None = None
    crop: bool = False
    crop_size: int = 512
    crop_margin: int = 50
    prompt_styles: tuple[str, ...] = ()
    backgrounds: tuple[str, ...] = ()
    negative_prompt: str = NEGATIVE_PROMPT
    batch_frames: int = 16

    def __post_init__(self):
        if not isinstance(self.steps, int) or self.steps < 1:
            raise ValueError(f"--steps must be an integer >= 1, got {self.steps!r}")
        if not np.isfinite(self.guidance) or self.guidance < 1.0:
            raise ValueError(f"--guidance must be a finite number >= 1, got {self.guidance!r}")
        if self.normals not in ("exact", "midas"):
            raise ValueError(f"--normals must be exact or midas, got {self.normals!r}")
        if self.normals == "midas" and not self.midas:
            raise ValueError("--normals midas needs --midas DIR (a local DPT depth model folder)")
        if self.crop_size % 8 or self.crop_size < 8:
            raise ValueError(f"--crop-size must be a positive multiple of 8, got {self.crop_size}")
        if self.crop_margin < 0:
            raise ValueError(f"--crop-margin must be >= 0, got {self.crop_margin}")
        if self.batch_frames < 1:
            raise ValueError(f"--batch-frames must be >= 1, got {self.batch_frames}")

    def to_dict(self) -> dict:
        return {
            "steps": self.steps,
            "guidance": self.guidance,
            "anchor": self.anchor,
            "normals": self.normals,
            "crop": self.crop,
            "crop_size": self.crop_size,
            "crop_margin": self.crop_margin,
            "prompt_styles": list(self.prompt_styles),
            "backgrounds": list(self.backgrounds),
            "negative_prompt": self.negative_prompt,
            "batch_frames": self.batch_frames,
        }


def category_phrase(meta: dict) -> str:
    """'mug' from a meta's object category (folder names like '025_mug' lose their number)."""
    obj = meta.get("object", {})
    name = str(obj.get("category") or obj.get("source") or "object")
    name = re.sub(r"^\d+[_-]", "", name.split("/")[-1])
    return name.replace("_", " ").replace("-", " ").strip() or "object"


def build_prompt(meta: dict, options: PhotoOptions, rng: np.random.Generator) -> str:
    """The sample's prompt: the template plus one style and one background phrase drawn with ``rng``."""
    parts = [PROMPT_TEMPLATE.format(category=category_phrase(meta))]
    if options.prompt_styles:
        parts.append(options.prompt_styles[int(rng.integers(len(options.prompt_styles)))])
    if options.backgrounds:
        parts.append(options.backgrounds[int(rng.integers(len(options.backgrounds)))])
    return ", ".join(parts)


@dataclass
class PhotoRequest:
    """One sample for the photo stage: its raw tar members, meta and photo seed."""

    members: dict[str, bytes]
    meta: dict
    seed: int
    # filled by prepare()
    conditions: np.ndarray | None = None  # (T, 3, 3, H, W) float32
    crop: Crop | None = None
    prompt: str = ""
    frames: list[int] = field(default_factory=list)


def _frame_ids(members: dict[str, bytes]) -> list[int]:
    ids = sorted({int(k[1:4]) for k in members if re.fullmatch(r"f\d{3}\.skeleton\.png", k)})
    if not ids:
        raise ValueError("sample has no fNNN.skeleton.png members: not a hoigen render shard?")
    return ids


class HOIDiffusionPhotoBackend:
    """The photo stage's model: built once per worker, then ``generate`` on batches of samples."""

    name = "hoidiffusion"

    def __init__(self, weights, options: PhotoOptions, device: str = "cpu", dtype=None):
        import torch
        from diffusers import MultiAdapter, StableDiffusionAdapterPipeline

        from hoigen.diffusion.hoidiffusion.attention import set_anchor_attention
        from hoigen.diffusion.hoidiffusion.weights import load_components

        self.weights = weights
        self.options = options
        self.device = device
        self.dtype = dtype or torch.float32
        parts = load_components(weights, device=device, dtype=self.dtype)
        adapter = MultiAdapter(parts["adapters"]).to(device=device, dtype=self.dtype)
        self.pipe = StableDiffusionAdapterPipeline(
            vae=parts["vae"],
            text_encoder=parts["text_encoder"],
            tokenizer=parts["tokenizer"],
            unet=parts["unet"],
            adapter=adapter,
            scheduler=parts["scheduler"],
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
        self.pipe.set_progress_bar_config(disable=True)
        self.anchors = set_anchor_attention(self.pipe.unet, options.anchor)
        self.midas = None
        if options.normals == "midas":
            from hoigen.diffusion.hoidiffusion.conditions import MidasDepth

            self.midas = MidasDepth(options.midas, device=device)
        self.latent_channels = self.pipe.unet.config.in_channels
        self.vae_scale = 2 ** (len(self.pipe.vae.config.block_out_channels) - 1)

    # -- preparation ------------------------------------------------------------------------------------------

    def prepare(self, request: PhotoRequest) -> PhotoRequest:
        """Decode the sample's conditions (and crop), draw its prompt; errors name the sample."""
        from hoigen.render.png import decode_png

        meta, members = request.meta, request.members
        key = meta.get("key", "?")
        frames = _frame_ids(members)
        width, height = int(meta["camera"]["width"]), int(meta["camera"]["height"])
        crop = (
            sequence_crop(meta, self.options.crop_size, self.options.crop_margin)
            if self.options.crop
            else None
        )
        if crop is None and (width % 8 or height % 8):
            raise ValueError(
                f"sample {key}: frames are {width}x{height}, but Stable Diffusion needs sizes that are multiples "
                "of 8; use --crop (the hand-object region at --crop-size) or render with --size divisible by 8"
            )
        stacks = []
        for t in frames:
            frame = {}
            for name in CONDITION_MEMBERS:
                member = f"f{t:03d}.{name}.png"
                if member not in members:
                    raise ValueError(f"sample {key}: member {member} is missing; the photo stage needs it")
                frame[name] = decode_png(members[member])
            if self.options.normals == "midas":
                frame["rgb"] = decode_png(members[f"f{t:03d}.rgb.png"])
            stack = frame_conditions(frame, self.options.normals, self.midas)
            if crop is not None:
                stack = crop_conditions(stack, crop)
            stacks.append(stack)
        request.conditions = np.stack(stacks)
        request.crop = crop
        request.frames = frames
        rng = np.random.default_rng(request.seed)
        request.prompt = build_prompt(meta, self.options, rng)
        return request

    def _latents(self, request: PhotoRequest, height: int, width: int):
        import torch

        gen = torch.Generator(device="cpu").manual_seed(int(request.seed))
        shape = (len(request.frames), self.latent_channels, height // self.vae_scale, width // self.vae_scale)
        return torch.randn(shape, generator=gen, dtype=torch.float32)

    # -- generation -------------------------------------------------------------------------------------------

    def generate(self, requests: list[PhotoRequest]) -> list[tuple[dict[str, bytes], dict]]:
        """Photo members and ``meta.generation.photo`` for each prepared request, generated in one batch.

        Requests in one call must share a size (the stage groups them so).
        """
        import torch

        from hoigen.diffusion.hoidiffusion.attention import set_frame_groups
        from hoigen.render.png import encode_png

        if not requests:
            return []
        sizes = {r.conditions.shape[-2:] for r in requests}
        if len(sizes) != 1:
            raise ValueError(f"one photo batch must share a size, got {sorted(sizes)}")
        height, width = next(iter(sizes))
        cond = np.concatenate([r.conditions for r in requests])  # (B, 3, 3, H, W)
        images = [
            torch.from_numpy(np.ascontiguousarray(cond[:, i])).to(self.device, self.dtype) for i in range(3)
        ]
        prompts = [r.prompt for r in requests for _ in r.frames]
        negatives = [self.options.negative_prompt] * len(prompts)
        latents = torch.cat([self._latents(r, height, width) for r in requests]).to(self.device, self.dtype)
        set_frame_groups(self.anchors, [len(r.frames) for r in requests] if self.options.anchor else None)
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = self.pipe(
                prompt=prompts,
                negative_prompt=negatives,
                image=images,
                height=height,
                width=width,
                num_inference_steps=self.options.steps,
                guidance_scale=self.options.guidance,
                latents=latents,
                adapter_conditioning_scale=[1.0, 1.0, 1.0],
                output_type="np",
            ).images
        set_frame_groups(self.anchors, None)
        seconds = time.perf_counter() - t0
        pixels = np.clip(np.round(np.asarray(out, dtype=np.float64) * 255.0), 0, 255).astype(np.uint8)
        results, row = [], 0
        for r in requests:
            members = {}
            for t in r.frames:
                members[f"f{t:03d}.photo.png"] = encode_png(pixels[row])
                row += 1
            results.append((members, self.generation_meta(r)))
        logger.debug("photo batch of %d frames in %.2f s", len(prompts), seconds)
        return results

    def generation_meta(self, request: PhotoRequest) -> dict:
        sched = self.pipe.scheduler
        meta = {
            "model": self.name,
            "files": dict(self.weights.files),
            "scheduler": type(sched).__name__,
            "scheduler_config": {k: v for k, v in dict(sched.config).items() if not k.startswith("_")},
            "steps": self.options.steps,
            "guidance": self.options.guidance,
            "prompt": request.prompt,
            "negative_prompt": self.options.negative_prompt,
            "adapters": ["skeleton", "normal", "mask"],
            "adapter_weights": [1.0, 1.0, 1.0],
            "normals": self.options.normals,
            "dtype": str(self.dtype).replace("torch.", ""),
            "device": self.device.split(":")[0],
            "cpu_threads": torch_threads() if self.device == "cpu" else None,
            "anchor": self.options.anchor,
            "anchor_frame": request.frames[len(request.frames) // 2] if self.options.anchor else None,
            "seed": int(request.seed),
            "size": [int(request.conditions.shape[-1]), int(request.conditions.shape[-2])],
            "crop": request.crop.to_dict(request.meta["camera"]["K"]) if request.crop is not None else None,
            "versions": {p: _version(p) for p in ("torch", "diffusers", "transformers")},
        }
        return _jsonable(meta)


def torch_threads() -> int:
    import torch

    return int(torch.get_num_threads())


def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value
