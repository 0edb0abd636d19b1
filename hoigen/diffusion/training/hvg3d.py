"""``hoigen train hvg3d``: the HVG-3D ControlNet (``hoigen.diffusion.hvg3d.model``) on a frozen CogVideoX-I2V.

Recipe (DaS's training, HVG-3D's loss; REFERENCE.md):

- **trainable**: the ControlNet's block copies, its zero-initialised in/out linears, the point tokenizer and its
  projection (``HVG3DControlNet.trainable_parameters``); the CogVideoX transformer, VAE and T5 are frozen.
  AdamW lr 1e-4, betas (0.9, 0.95), weight decay 1e-3; linear warm-up (``--warmup`` steps) then cosine to 0.
- **inputs**: video latents ``z`` = VAE(target frames in [-1, 1]) sampled × scaling factor, (B, F, C, h, w);
  the first frame is **noised before the VAE** with σ = exp(N(-3, 0.5)) (per sample), encoded, zero-padded in time
  and concatenated with ``x_t`` on the channel axis (the I2V input); the tracking condition comes from
  :func:`hoigen.diffusion.hvg3d.conditioning.encode_condition_latents` on
  :func:`~hoigen.diffusion.hvg3d.conditioning.tracking_video_tensor` — the functions inference uses, so the value
  range ([-1, 1]) is the same; points resampled by :func:`~hoigen.diffusion.hvg3d.conditioning.resample_points`.
  With p = ``--drop-prob`` (0.05) per sample the image latents and the tracking condition's first-frame latent are
  zeroed **together** (DaS).
- **loss**: v-prediction. DaS recovers x0 from v (``scheduler.get_velocity(v̂, x_t, t)`` = sqrt(ᾱ) x_t - sqrt(1-ᾱ) v̂)
  and weights its MSE by 1 / (1 - ᾱ_t); since x̂0 - x0 = -sqrt(1 - ᾱ_t) (v̂ - v) that is exactly the unweighted
  v-MSE, computed here directly (stable at t → 0). HVG-3D multiplies it element-wise by **(1 + M)**:
  ``loss = mean((1 + M) (v̂ - v)²)``.
- **M at latent resolution** (:func:`latent_mask`): the fraction of hand ∪ object pixels (``hoimask`` ≠ 0) in
  the space-time cell one latent element summarises — 8 × 8 pixels × the video frames the VAE folds into that
  latent frame (frame 0 alone, then frames 4j-3 … 4j): area-average pooling, values in [0, 1]. 49 frames at
  720 × 480 give 13 × 60 × 90.
- **memory**: VAE slicing and tiling (``--vae-slicing/--vae-tiling``), gradient checkpointing of the base (which
  also checkpoints the copies, see the model's docstring), bf16; ``--cache-latents`` precomputes the VAE/T5
  outputs to ``RUN/cache/`` once (video latent mean/std — sampled afresh every step, as without the cache — the
  tracking condition latents, the T5 embedding and one noised first-frame latent per sample, whose σ is then
  fixed per sample: the one difference from uncached training).

Output ``RUN/final/``: ``config.json`` + ``hvg3d.safetensors`` (``hoigen.diffusion.hvg3d.weights``), loaded by
``hoigen generate --video hvg3d --cogvideox DIR --hvg3d RUN/final``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from hoigen.diffusion.training.loop import LoopConfig, TrainTask

logger = logging.getLogger(__name__)

CACHE_VERSION = 1


@dataclass(frozen=True)
class HVG3DTrainConfig:
    """Options of ``hoigen train hvg3d``.

    Attributes:
        data: training shards. cogvideox: local diffusers CogVideoX-I2V folder (frozen base).
        init: an HVG-3D folder to continue from (else a fresh ControlNet from the base's first ``num_blocks``).
        num_blocks: K block copies (DaS 18). points / num_points / num_centres / group_size /
            point_encoder_dim / point_token_dim: the point branch (HVG3DConfig).
        frames / width / height: video size (default: the base's learned positional embedding size, 49 ×
            720 × 480 for 5B); frames are resized to it (K follows), the first ``frames`` frames are used.
        lr, betas, weight_decay, warmup: the optimizer and schedule.
        drop_prob: image + tracking-image latent dropout. noise_mean / noise_std: log σ of the first-frame noise.
        mask_weight: use the (1 + M) weight (False: plain v-MSE, DaS).
        vae_slicing / vae_tiling: VAE memory savers.
        cache_latents: precompute VAE/T5 outputs to ``RUN/cache``.
        captions / prompt_styles / backgrounds: prompts (default "A hand is grasping a {category}").
        sample_steps: sampler steps of the sample videos.
    """

    data: str
    cogvideox: str
    init: str | None = None
    num_blocks: int = 18
    points: bool = True
    num_points: int = 4096
    num_centres: int = 512
    group_size: int = 64
    point_encoder_dim: int = 512
    point_token_dim: int = 768
    frames: int | None = None
    width: int | None = None
    height: int | None = None
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = 1e-3
    warmup: int = 100
    drop_prob: float = 0.05
    noise_mean: float = -3.0
    noise_std: float = 0.5
    mask_weight: bool = True
    vae_slicing: bool = True
    vae_tiling: bool = True
    cache_latents: bool = False
    captions: str | None = None
    prompt_styles: tuple[str, ...] = ()
    backgrounds: tuple[str, ...] = ()
    sample_steps: int = 25

    def __post_init__(self):
        if not self.cogvideox:
            raise ValueError("hoigen train hvg3d needs --cogvideox DIR (a local diffusers CogVideoX-5B-I2V folder)")
        if not self.lr > 0 or self.weight_decay < 0 or self.warmup < 0:
            raise ValueError(f"--lr must be > 0, --weight-decay and --warmup >= 0; got {self.lr}, "
                             f"{self.weight_decay}, {self.warmup}")
        if not 0.0 <= self.drop_prob <= 1.0:
            raise ValueError(f"--drop-prob must be in [0, 1], got {self.drop_prob}")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"--betas must be two numbers in [0, 1), got {self.betas}")
        if self.num_blocks < 1 or self.sample_steps < 1:
            raise ValueError("--num-blocks and --sample-steps must be >= 1")


# ---------------------------------------------------------------------------------------------------------------
# pure pieces (tested on their own)


def latent_mask(seg: np.ndarray, temporal: int = 4, spatial: int = 8) -> np.ndarray:
    """Hand ∪ object mask at latent resolution (area average over each latent element's space-time cell).

    Args:
        seg: (T, H, W) bool/0-1, T = 1 + temporal·k, H and W multiples of ``spatial``.
    Returns:
        (F, H / spatial, W / spatial) float32 in [0, 1], F = (T - 1) / temporal + 1: element (j, y, x) is the mean
        of ``seg`` over pixels [spatial y, spatial (y+1)) × [spatial x, spatial (x+1)) of frame 0 (j = 0) or of
        frames temporal (j-1) + 1 … temporal j (j ≥ 1).
    """
    seg = np.asarray(seg, dtype=np.float32)
    t, h, w = seg.shape
    if (t - 1) % temporal or h % spatial or w % spatial:
        raise ValueError(f"mask of shape {seg.shape}: need 1 + {temporal} k frames and sizes divisible by {spatial}")
    cells = seg.reshape(t, h // spatial, spatial, w // spatial, spatial).mean(axis=(2, 4))
    groups = [cells[:1]] + [cells[temporal * (j - 1) + 1 : temporal * j + 1] for j in range(1, (t - 1) // temporal + 1)]
    return np.stack([g.mean(axis=0) for g in groups]).astype(np.float32)


def masked_v_loss(pred, latents, noise, timesteps, scheduler, mask=None) -> torch.Tensor:
    """mean((1 + M) (v̂ - v)²) with v = scheduler.get_velocity(z, ε, t).

    Args:
        pred: (B, F, C, h, w) v prediction. latents: clean z, same shape. noise: ε, same shape. timesteps: (B,).
        mask: (B, F, h, w) M in [0, 1] or None (weight 1).
    """
    target = scheduler.get_velocity(latents.float(), noise.float(), timesteps)
    error = (pred.float() - target) ** 2
    if mask is not None:
        error = error * (1.0 + mask.float()[:, :, None])
    return error.mean()


def first_frame_sigma(batch: int, generator: torch.Generator, mean: float = -3.0, std: float = 0.5) -> torch.Tensor:
    """(B,) σ = exp(N(mean, std)) of the noise added to the first frame before the VAE (DaS)."""
    return torch.exp(torch.randn(batch, generator=generator) * std + mean)


def scaled_intrinsics(K: np.ndarray, sx: float, sy: float) -> np.ndarray:  # noqa: N803
    """K of an image resized by (sx, sy), pixel centres at integer coordinates: u' = (u + 0.5) sx - 0.5."""
    out = np.array(K, dtype=np.float64).copy()
    out[0, 0] *= sx
    out[0, 1] *= sx
    out[1, 1] *= sy
    out[0, 2] = (K[0][2] + 0.5) * sx - 0.5
    out[1, 2] = (K[1][2] + 0.5) * sy - 0.5
    return out


def warmup_cosine(step: int, warmup: int, total: int) -> float:
    """LR multiplier: linear warm-up over ``warmup`` steps, then cosine from 1 to 0 at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    span = max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - warmup) / span)))


# ---------------------------------------------------------------------------------------------------------------
# examples


@dataclass
class VideoExampleBuilder:
    """SequenceRecord -> one example: video/tracking (T, H, W, 3) uint8, mask (F, h, w), points, K, prompt."""

    frames: int
    width: int
    height: int
    num_points: int
    temporal: int = 4
    spatial: int = 8
    seed: int = 0
    captions: dict = field(default_factory=dict)
    prompt_styles: tuple = ()
    backgrounds: tuple = ()

    def prompt(self, record) -> str:
        from hoigen.diffusion.hvg3d.pipeline import default_prompt

        if record.key in self.captions:
            return self.captions[record.key]
        parts = [default_prompt(record.meta)]
        digest = int.from_bytes(hashlib.sha256(record.key.encode()).digest()[:8], "little")
        rng = np.random.default_rng([self.seed, digest])
        for phrases in (self.prompt_styles, self.backgrounds):
            if phrases:
                parts.append(phrases[int(rng.integers(len(phrases)))])
        return ", ".join(parts)

    def __call__(self, record) -> list[dict]:
        import cv2

        from hoigen.diffusion.hoidiffusion.conditions import binary_seg
        from hoigen.diffusion.hvg3d.conditioning import resample_points

        t = self.frames
        if record.targets.shape[0] < t:
            raise ValueError(
                f"sample {record.key} has {record.targets.shape[0]} frames; training needs {t} "
                "(hoigen synth --frames, or a smaller --frames for training)"
            )
        video = record.targets[:t]
        tracking = record.tracking_frames()[:t]
        seg = np.stack([binary_seg(f["hoimask"]) for f in record.frames[:t]]).astype(np.uint8)
        h0, w0 = video.shape[1:3]
        K = np.asarray(record.meta["camera"]["K"], dtype=np.float64)  # noqa: N806
        if (w0, h0) != (self.width, self.height):
            size = (self.width, self.height)

            def resize(images, interp):
                return np.stack([cv2.resize(np.ascontiguousarray(im), size, interpolation=interp) for im in images])

            video = resize(video, cv2.INTER_AREA)
            tracking = resize(tracking, cv2.INTER_NEAREST)
            seg = resize(seg, cv2.INTER_NEAREST)
            K = scaled_intrinsics(K, self.width / w0, self.height / h0)  # noqa: N806
        points, labels = resample_points(record.points[:t], record.points_label, self.num_points)
        return [{
            "video": np.ascontiguousarray(video, dtype=np.uint8),
            "tracking": np.ascontiguousarray(tracking, dtype=np.uint8),
            "mask": latent_mask(seg > 0, self.temporal, self.spatial),
            "seg": np.ascontiguousarray(seg > 0, dtype=np.uint8),
            "points": points,
            "points_label": labels if labels is not None else np.zeros(points.shape[1], np.int64),
            "K": K.astype(np.float32),
            "prompt": self.prompt(record),
            "key": record.key,
        }]


class CachedLatents(torch.utils.data.IterableDataset):
    """Examples from ``RUN/cache/*.safetensors`` (one file per sample), split by rank and worker, shuffled per
    epoch from (seed, epoch)."""

    def __init__(self, files: list[str], seed: int, epoch: int):
        super().__init__()
        self.files, self.seed, self.epoch = list(files), int(seed), int(epoch)

    def __iter__(self):
        from safetensors import safe_open

        from hoigen.diffusion.training.data import SKIPPED, _worker, rank_and_world

        rank, world = rank_and_world()
        worker, workers = _worker()
        order = np.random.default_rng([self.seed, self.epoch, 0xCAC]).permutation(len(self.files))
        mine = [self.files[i] for i in order][rank::world][worker::workers]
        for path in mine:
            with safe_open(path, framework="pt") as fh:
                example = {k: fh.get_tensor(k) for k in fh.keys()}
                meta = fh.metadata()
            example["prompt"] = meta["prompt"]
            example["key"] = meta["key"]
            example[SKIPPED] = 0
            yield example


# ---------------------------------------------------------------------------------------------------------------
# the task


class HVG3DTask(TrainTask):
    name = "hvg3d"

    def __init__(self, config: HVG3DTrainConfig):
        self.config = config
        self.controlnet = None

    def config_dict(self) -> dict:
        return asdict(self.config)

    def setup(self, accelerator, loop: LoopConfig, weight_dtype) -> None:
        from diffusers import AutoencoderKLCogVideoX, CogVideoXDPMScheduler, CogVideoXTransformer3DModel
        from transformers import AutoTokenizer, T5EncoderModel

        from hoigen.diffusion.hvg3d.pipeline import resolve_cogvideox_dir
        from hoigen.diffusion.training.data import resolve_training_shards

        c = self.config
        self.loop = loop
        self.device = accelerator.device
        self.weight_dtype = weight_dtype
        self.out = Path(loop.out)
        root = resolve_cogvideox_dir(c.cogvideox)
        self.cogvideox_root = root
        load = {"local_files_only": True}
        self.transformer = CogVideoXTransformer3DModel.from_pretrained(root, subfolder="transformer", **load)
        self.transformer.requires_grad_(False).to(self.device, weight_dtype)
        self.vae = AutoencoderKLCogVideoX.from_pretrained(root, subfolder="vae", **load)
        self.vae.requires_grad_(False).to(self.device, weight_dtype)
        if c.vae_slicing:
            self.vae.enable_slicing()
        if c.vae_tiling:
            self.vae.enable_tiling()
        self.text_encoder = T5EncoderModel.from_pretrained(root, subfolder="text_encoder", **load)
        self.text_encoder.requires_grad_(False).to(self.device, weight_dtype)
        self.tokenizer = AutoTokenizer.from_pretrained(root, subfolder="tokenizer", **load)
        self.scheduler = CogVideoXDPMScheduler.from_pretrained(root, subfolder="scheduler", **load)
        self.controlnet = self._controlnet()
        for p in controlnet_parameters(self.controlnet):
            p.requires_grad_(True)
        self.controlnet.train()  # attached by its first forward (after accelerate wrapped it, base outside)
        tc = self.transformer.config
        self.temporal = int(self.vae.config.temporal_compression_ratio)
        self.spatial = 2 ** (len(self.vae.config.block_out_channels) - 1)
        self.frames = c.frames or int(tc.sample_frames)
        self.width = c.width or int(tc.sample_width) * self.spatial
        self.height = c.height or int(tc.sample_height) * self.spatial
        from hoigen.diffusion.hvg3d.conditioning import check_frame_count

        check_frame_count(self.frames, self.temporal)
        self.builder = VideoExampleBuilder(
            frames=self.frames, width=self.width, height=self.height,
            num_points=self.controlnet.config.num_points, temporal=self.temporal, spatial=self.spatial,
            seed=loop.seed, captions=_captions(c.captions), prompt_styles=tuple(c.prompt_styles),
            backgrounds=tuple(c.backgrounds),
        )
        self.shards = resolve_training_shards(c.data)
        self.cache_files = None
        if c.cache_latents:
            self.cache_files = self.build_cache(accelerator)
        self.val = self._validation() if accelerator.is_main_process else []

    def _controlnet(self):
        from hoigen.diffusion.hvg3d.model import HVG3DControlNet
        from hoigen.diffusion.hvg3d.weights import load_hvg3d

        c = self.config
        if c.init:
            model = load_hvg3d(c.init, device=self.device, dtype=torch.float32)
            model.check_base(self.transformer)
            return model
        model = HVG3DControlNet.from_transformer(
            self.transformer, num_blocks=c.num_blocks, points=c.points, num_points=c.num_points,
            num_centres=c.num_centres, group_size=c.group_size, point_encoder_dim=c.point_encoder_dim,
            point_token_dim=c.point_token_dim,
        )
        return model.to(self.device, torch.float32)

    def trainable_module(self):
        return self.controlnet

    def enable_gradient_checkpointing(self) -> None:
        self.transformer.enable_gradient_checkpointing()

    def optimizer(self, parameters):
        c = self.config
        return torch.optim.AdamW(parameters, lr=c.lr, betas=tuple(c.betas), weight_decay=c.weight_decay)

    def lr_lambda(self, step: int) -> float:
        return warmup_cosine(step, self.config.warmup, self.loop.steps)

    def dataset(self, epoch: int):
        if self.cache_files is not None:
            return CachedLatents(self.cache_files, self.loop.seed, epoch)
        from hoigen.diffusion.training.data import ShardExamples

        return ShardExamples(self.shards, self.builder, self.loop.seed, epoch, self.loop.shuffle)

    # -- encoders ---------------------------------------------------------------------------------------------

    def _vae_dist(self, video: torch.Tensor):
        """VAE latent distribution of (B, T, H, W, 3) uint8 frames -> (mean, std), each (B, F, C, h, w) × sf."""
        x = video.to(self.device).permute(0, 4, 1, 2, 3).float() / 127.5 - 1.0
        return self._encode_pixels(x)

    def _encode_pixels(self, x: torch.Tensor):
        sf = float(self.vae.config.scaling_factor)
        with torch.no_grad():
            dist = self.vae.encode(x.to(self.weight_dtype)).latent_dist
        mean = dist.mean.float().permute(0, 2, 1, 3, 4) * sf
        std = dist.std.float().permute(0, 2, 1, 3, 4) * sf
        return mean, std

    def image_latents(self, video: torch.Tensor, generator: torch.Generator, frames: int) -> torch.Tensor:
        """Noised first frame -> VAE sample × sf, zero-padded to ``frames`` latent frames: (B, F, C, h, w)."""
        first = video[:, :1].to(self.device).permute(0, 4, 1, 2, 3).float() / 127.5 - 1.0  # (B, 3, 1, H, W)
        c = self.config
        sigma = first_frame_sigma(first.shape[0], generator, c.noise_mean, c.noise_std).to(self.device)
        first = first + sigma[:, None, None, None, None] * torch.randn(first.shape, generator=generator).to(self.device)
        mean, std = self._encode_pixels(first)
        latent = mean + std * torch.randn(mean.shape, generator=generator).to(self.device)
        pad = latent.new_zeros((latent.shape[0], frames - 1, *latent.shape[2:]))
        return torch.cat([latent, pad], dim=1)

    def condition_latents(self, tracking: torch.Tensor) -> torch.Tensor:
        from hoigen.diffusion.hvg3d.conditioning import encode_condition_latents, tracking_video_tensor

        with torch.no_grad():
            return encode_condition_latents(self.vae, tracking_video_tensor(tracking)).float()

    def encode_prompts(self, prompts: list[str]) -> torch.Tensor:
        ids = self.tokenizer(
            list(prompts), padding="max_length", max_length=int(self.transformer.config.max_text_seq_length),
            truncation=True, add_special_tokens=True, return_tensors="pt",
        ).input_ids.to(self.device)
        with torch.no_grad():
            return self.text_encoder(ids)[0].float()

    def rotary(self, frames: int, height: int, width: int):
        from diffusers import CogVideoXImageToVideoPipeline

        if not self.transformer.config.use_rotary_positional_embeddings:
            return None
        shim = SimpleNamespace(vae_scale_factor_spatial=self.spatial, transformer=self.transformer)
        return CogVideoXImageToVideoPipeline._prepare_rotary_positional_embeddings(
            shim, height, width, frames, self.device
        )

    # -- cache ------------------------------------------------------------------------------------------------

    def cache_fingerprint(self) -> str:
        parts = {
            "version": CACHE_VERSION,
            "shards": [Path(s).name for s in self.shards],
            "builder": {k: v for k, v in asdict(self.builder).items() if k != "captions"},
            "captions": sorted(self.builder.captions.items()),
            "noise": [self.config.noise_mean, self.config.noise_std],
            "seed": self.loop.seed,
            "models": sorted(
                (p.relative_to(self.cogvideox_root).as_posix(), p.stat().st_size)
                for sub in ("vae", "text_encoder", "tokenizer")
                for p in (self.cogvideox_root / sub).rglob("*") if p.is_file()
            ),
        }
        return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def build_cache(self, accelerator) -> list[str]:
        """Encode every sample once into ``RUN/cache/<key>.safetensors`` (main process); reuse a matching cache."""
        from safetensors.torch import save_file

        from hoigen.diffusion.training.data import ShardExamples, collate_examples

        folder = self.out / "cache"
        index_path = folder / "index.json"
        fingerprint = self.cache_fingerprint()
        if accelerator.is_main_process:
            index = json.loads(index_path.read_text()) if index_path.is_file() else {}
            if index.get("fingerprint") != fingerprint:
                folder.mkdir(parents=True, exist_ok=True)
                for old in folder.glob("*.safetensors"):
                    old.unlink()
                keys, skipped = [], 0
                for example in ShardExamples(self.shards, self.builder, self.loop.seed, shuffle=0):
                    skipped += int(example.get("_skipped", 0))
                    if example.get("_empty"):
                        continue
                    batch = collate_examples([example])
                    key = example["key"]
                    digest = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little")
                    generator = torch.Generator().manual_seed(step_free_seed(self.loop.seed, digest))
                    mean, std = self._vae_dist(batch["video"])
                    tensors = {
                        "video_mean": mean[0].cpu(),
                        "video_std": std[0].cpu(),
                        "image_latent": self.image_latents(batch["video"], generator, mean.shape[1])[0].cpu(),
                        "condition": self.condition_latents(batch["tracking"])[0].cpu(),
                        "text": self.encode_prompts([example["prompt"]])[0].cpu(),
                        "mask": batch["mask"][0], "points": batch["points"][0],
                        "points_label": batch["points_label"][0], "K": batch["K"][0],
                    }
                    tensors = {k: v.contiguous() for k, v in tensors.items()}
                    save_file(tensors, str(folder / f"{key}.safetensors"),
                              metadata={"prompt": example["prompt"], "key": key})
                    keys.append(key)
                if not keys:
                    raise ValueError("--cache-latents: no usable training sample in --data (see the warnings)")
                index_path.write_text(json.dumps({"fingerprint": fingerprint, "keys": keys, "skipped": skipped}))
                logger.info("cached latents of %d samples in %s (%d skipped)", len(keys), folder, skipped)
        accelerator.wait_for_everyone()
        index = json.loads(index_path.read_text())
        return [str(folder / f"{k}.safetensors") for k in index["keys"]]

    # -- loss -------------------------------------------------------------------------------------------------

    def inputs(self, batch: dict, generator: torch.Generator) -> dict:
        """Latents, image latents, condition, text, mask of a (cached or raw) batch, with the joint dropout."""
        if "video_mean" in batch:
            mean, std = batch["video_mean"].to(self.device), batch["video_std"].to(self.device)
            image = batch["image_latent"].to(self.device)
            condition = batch["condition"].to(self.device)
            text = batch["text"].to(self.device)
        else:
            mean, std = self._vae_dist(batch["video"])
            image = self.image_latents(batch["video"], generator, mean.shape[1])
            condition = self.condition_latents(batch["tracking"])
            text = self.encode_prompts(batch["prompt"])
        latents = mean + std * torch.randn(mean.shape, generator=generator).to(self.device)
        drop = (torch.rand(latents.shape[0], generator=generator) < self.config.drop_prob).to(self.device)
        if drop.any():
            keep = (~drop).float()[:, None, None, None, None]
            image = image * keep
            half = condition.shape[2] // 2
            condition = torch.cat([condition[:, :, :half], condition[:, :, half:] * keep], dim=2)
        return {"latents": latents, "image": image, "condition": condition, "text": text,
                "mask": batch["mask"].to(self.device).float(), "dropped": drop}

    def loss(self, model, batch, generator):
        x = self.inputs(batch, generator)
        latents = x["latents"]
        noise = torch.randn(latents.shape, generator=generator).to(self.device)
        steps = int(self.scheduler.config.num_train_timesteps)
        timesteps = torch.randint(0, steps, (latents.shape[0],), generator=generator).to(self.device)
        noisy = self.scheduler.add_noise(latents, noise, timesteps)
        hidden = torch.cat([noisy, x["image"]], dim=2).to(self.weight_dtype)
        f, _, h, w = latents.shape[1:]
        rotary = self.rotary(f, h * self.spatial, w * self.spatial)
        ofs = None
        if getattr(self.transformer.config, "ofs_embed_dim", None) is not None:
            ofs = hidden.new_full((1,), fill_value=2.0)
        use_points = self.controlnet.config.points
        pred = model(
            self.transformer, hidden, x["text"].to(self.weight_dtype), timesteps,
            tracking_latents=x["condition"].to(self.weight_dtype),
            points=batch["points"].to(self.device) if use_points else None,
            points_label=batch["points_label"].to(self.device) if use_points else None,
            K=batch["K"].to(self.device) if use_points else None,
            ofs=ofs, image_rotary_emb=rotary,
        )
        mask = x["mask"] if self.config.mask_weight else None
        loss = masked_v_loss(pred, latents, noise, timesteps, self.scheduler, mask)
        return loss, {"dropped": float(x["dropped"].float().mean())}

    # -- samples, export --------------------------------------------------------------------------------------

    def _validation(self) -> list[dict]:
        from hoigen.diffusion.training.data import ShardExamples

        for example in ShardExamples(self.shards, self.builder, self.loop.seed, shuffle=0):
            if not example.get("_empty"):
                return [example]
        return []

    def sample(self, model, path: Path, step: int) -> None:
        """Grid: target frames / tracking frames / generated frames of the first validation sample; + an .npz."""
        from diffusers import CogVideoXImageToVideoPipeline
        from PIL import Image

        from hoigen.diffusion.hvg3d.model import ControlCondition
        from hoigen.diffusion.training.data import collate_examples
        from hoigen.diffusion.training.hoidiffusion import write_png

        if not self.val:
            return
        example = self.val[0]
        batch = collate_examples([dict(example)])
        pipe = CogVideoXImageToVideoPipeline(
            tokenizer=self.tokenizer, text_encoder=self.text_encoder, vae=self.vae, transformer=self.transformer,
            scheduler=self.scheduler,
        )
        pipe.set_progress_bar_config(disable=True)
        use_points = model.config.points
        condition = ControlCondition(
            tracking_latents=self.condition_latents(batch["tracking"]).to(self.weight_dtype),
            points=batch["points"].to(self.device) if use_points else None,
            points_label=batch["points_label"].to(self.device) if use_points else None,
            K=batch["K"].to(self.device) if use_points else None,
        )
        model.attach(self.transformer)
        generator = torch.Generator().manual_seed(int(self.loop.seed))
        with model.conditioned(condition):
            frames = pipe(
                image=Image.fromarray(example["video"][0]), prompt=example["prompt"], height=self.height,
                width=self.width, num_frames=self.frames, num_inference_steps=self.config.sample_steps,
                guidance_scale=6.0, use_dynamic_cfg=True, generator=generator, output_type="np",
                max_sequence_length=int(self.transformer.config.max_text_seq_length),
            ).frames[0]
        generated = np.clip(np.round(np.asarray(frames) * 255.0), 0, 255).astype(np.uint8)
        picks = np.unique(np.linspace(0, self.frames - 1, min(self.frames, 8)).round().astype(int))
        rows = [np.concatenate(list(a[picks]), axis=1) for a in (example["video"], example["tracking"], generated)]
        write_png(path, np.concatenate(rows, axis=0))
        np.savez_compressed(path.with_suffix(".npz"), generated=generated[None], target=example["video"][None],
                            mask=example["mask"][None], seg=example["seg"][None], keys=np.array([example["key"]]))

    def export(self, model, folder: Path) -> None:
        from hoigen.diffusion.hvg3d.weights import save_hvg3d

        model.detach()  # hooks off: the exported ControlNet is not bound to this run's transformer
        save_hvg3d(model.to(torch.float32), folder)


def controlnet_parameters(controlnet) -> list:
    """The ControlNet's own parameters (the attached base is kept outside its module tree)."""
    return controlnet.trainable_parameters()


def step_free_seed(seed: int, digest: int) -> int:
    """Per-sample seed of the cached first-frame noise (independent of the step)."""
    state = np.random.SeedSequence([int(seed), int(digest), 0xCA]).generate_state(1, np.uint64)
    return int(state[0] >> np.uint64(1))


def _captions(path) -> dict:
    if not path:
        return {}
    from hoigen.diffusion.training.hoidiffusion import read_captions

    return read_captions(path)
