"""``hoigen train hoidiffusion``: the three T2I-Adapters (+ the UNet decoder half) on hoigen frames.

The recipe of HOIDiffusion's ``train_dex.py`` (REFERENCE.md):

- **trainable**: every parameter of the three adapters [skeleton, normal, mask] and the UNet's decoder half —
  ``up_blocks``, ``conv_norm_out``, ``conv_out`` (the original's ``output_blocks`` and ``out``); ``--sd-lock``
  freezes the whole UNet. VAE and text encoder are always frozen. AdamW, lr 1e-5, no schedule.
- **loss**: ε-MSE: ``x_t = sqrt(ᾱ_t) z + sqrt(1 - ᾱ_t) ε`` with ``z`` = VAE latent × scaling factor of the target,
  ``t`` uniform in [0, 1000), ``mean((ε_θ(x_t, t, text, adapters(conditions)) - ε)²)``; the adapters' features
  are summed with weight 1 each and added after the UNet's down blocks, exactly as inference
  (``pipeline.py``'s MultiAdapter with weights [1, 1, 1]).
- **examples**: per frame, the target (``photo`` if present else ``rgb``) and its conditions built by
  :func:`hoigen.diffusion.hoidiffusion.conditions.frame_conditions` — the code inference uses — either on the HOI
  crop (the frame's hand ∪ object box ± ``--crop-margin`` px, square, resized to ``--resolution``; the crop of
  :func:`~hoigen.diffusion.hoidiffusion.conditions.sequence_crop` applied to this frame's boxes) or on full frames
  (``--full-frames``; sizes must be multiples of 8 and equal within a batch).
- **captions**: ``--captions FILE`` (JSON ``{key: caption}`` or lines ``key<TAB>caption``; key = frame key
  ``s00000012/f003`` or sample key) else the inference prompt :func:`~hoigen.diffusion.hoidiffusion.pipeline.
  build_prompt` ("A hand is grasping a {category}" plus optional style / background phrases), drawn per sample.
- **background regularisation**: with probability ``--reg-prob`` (0.1) a micro-batch is replaced by scenery images
  with their captions and **all three conditions zero**; the images come from ``--reg-images DIR`` (images + a
  ``captions.txt``/``captions.json`` or one ``<stem>.txt`` per image) or are generated once at start-up by the base
  model (``--reg-generate N``, DDIM, stored in ``RUN/reg/``).

Output ``RUN/final/``: the converted layout (``model_index.json``, ``unet/``, ``vae/``, ``text_encoder/``,
``tokenizer/``, ``scheduler/``, ``adapters/{skeleton,normal,mask}/``, ``hoigen_weights.json``) that
``hoigen generate --photo hoidiffusion --hoidiffusion RUN/final`` loads.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from hoigen.diffusion.training.loop import LoopConfig, TrainTask

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
SCENERY_PROMPTS = (
    "a photo of a kitchen counter",
    "a photo of a wooden table in a living room",
    "a photo of an office desk",
    "a photo of a bookshelf",
    "a photo of a garden",
    "a photo of a city street",
    "a photo of a bedroom",
    "a photo of a workshop bench",
    "a photo of a cafe interior",
    "a photo of a white wall with a window",
)


@dataclass(frozen=True)
class HOIDiffusionTrainConfig:
    """Options of ``hoigen train hoidiffusion`` (the loop's own in :class:`~hoigen.diffusion.training.loop.LoopConfig`).

    Attributes:
        data: training shards (a hoigen output folder, manifest, shard paths or pattern).
        sd: local diffusers SD-1.x folder (the base; fresh adapters) — or None with ``hoidiffusion``.
        hoidiffusion: a converted HOIDiffusion folder to continue from (its adapters and fine-tuned UNet); with
            ``sd`` too, the SD components come from ``sd``.
        resolution: crop size (px, multiple of 8); 512 as trained.
        full_frames: train on whole frames instead of HOI crops.
        crop_margin: px around the hand ∪ object box.
        sd_lock: freeze the whole UNet (train the adapters only).
        lr: AdamW learning rate.
        reg_prob: probability that a micro-batch is a background-regularisation batch.
        reg_images: folder of scenery images with captions.
        reg_generate: number of scenery images to generate with the base model at start-up (if no reg_images).
        reg_steps: DDIM steps for the generated scenery images.
        captions: captions file; prompt_styles / backgrounds: phrase lists for the prompt template.
        sample_steps / sample_count: DDIM steps and frames of the sample grids.
    """

    data: str
    sd: str | None = None
    hoidiffusion: str | None = None
    resolution: int = 512
    full_frames: bool = False
    crop_margin: int = 50
    sd_lock: bool = False
    lr: float = 1e-5
    reg_prob: float = 0.1
    reg_images: str | None = None
    reg_generate: int = 0
    reg_steps: int = 30
    captions: str | None = None
    prompt_styles: tuple[str, ...] = ()
    backgrounds: tuple[str, ...] = ()
    sample_steps: int = 20
    sample_count: int = 4

    def __post_init__(self):
        if not self.sd and not self.hoidiffusion:
            raise ValueError("hoigen train hoidiffusion needs --sd DIR (a local SD-1.x folder) or --hoidiffusion DIR")
        if self.resolution < 8 or self.resolution % 8:
            raise ValueError(f"--resolution must be a positive multiple of 8, got {self.resolution}")
        if self.crop_margin < 0:
            raise ValueError(f"--crop-margin must be >= 0, got {self.crop_margin}")
        if not 0.0 <= self.reg_prob <= 1.0:
            raise ValueError(f"--reg-prob must be in [0, 1], got {self.reg_prob}")
        if self.reg_generate < 0 or self.reg_steps < 1:
            raise ValueError(f"--reg-generate must be >= 0 and --reg-steps >= 1, got {self.reg_generate}, "
                             f"{self.reg_steps}")
        if self.reg_prob > 0 and not self.reg_images and not self.reg_generate:
            raise ValueError(
                f"--reg-prob {self.reg_prob} needs scenery images: --reg-images DIR (images + captions) or "
                "--reg-generate N (made by the base model at start-up); or --reg-prob 0 to train without them"
            )
        if not self.lr > 0:
            raise ValueError(f"--lr must be > 0, got {self.lr}")
        if self.sample_steps < 1 or self.sample_count < 0:
            raise ValueError("--sample-steps must be >= 1 and --sample-count >= 0")


class AdapterUNet(nn.Module):
    """The UNet with the three adapters, as the photo pipeline runs it (features summed with weight 1)."""

    def __init__(self, unet, adapters):
        super().__init__()
        self.unet = unet
        self.adapters = nn.ModuleList(adapters)

    def adapter_features(self, conditions: torch.Tensor) -> list[torch.Tensor]:
        """conditions (B, 3, 3, H, W) [skeleton, normal, mask] in [0, 1] -> per-level summed features."""
        total = None
        for i, adapter in enumerate(self.adapters):
            features = adapter(conditions[:, i])
            total = list(features) if total is None else [a + b for a, b in zip(total, features)]
        return total

    def forward(self, noisy, timesteps, text, conditions):
        """ε prediction (B, 4, h, w) for noisy latents (B, 4, h, w), timesteps (B,), text (B, 77, D)."""
        features = self.adapter_features(conditions.to(noisy.dtype))
        return self.unet(
            noisy, timesteps, encoder_hidden_states=text, down_intrablock_additional_residuals=features
        ).sample


def select_trainable(model: AdapterUNet, sd_lock: bool) -> list[str]:
    """Set requires_grad: adapters + (unless ``sd_lock``) the UNet decoder half. Returns the trainable names."""
    model.requires_grad_(False)
    model.adapters.requires_grad_(True)
    if not sd_lock:
        for part in (model.unet.up_blocks, model.unet.conv_norm_out, model.unet.conv_out):
            if part is not None:
                part.requires_grad_(True)
    return [n for n, p in model.named_parameters() if p.requires_grad]


# ---------------------------------------------------------------------------------------------------------------
# captions, regularisation images


def read_captions(path: str | Path) -> dict[str, str]:
    """Captions file -> {key: caption}: JSON object, or lines ``key<TAB>caption``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"captions file {path} does not exist")
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        data = json.loads(text)
        if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
            raise ValueError(f"{path}: a JSON captions file must map keys to caption strings")
        return dict(data)
    out = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        key, sep, caption = line.partition("\t")
        if not sep or not caption.strip():
            raise ValueError(f"{path}:{number}: expected 'key<TAB>caption', got {line[:60]!r}")
        out[key.strip()] = caption.strip()
    return out


def read_reg_images(folder: str | Path, size: int) -> tuple[np.ndarray, list[str]]:
    """Scenery images of ``folder`` resized (centre crop) to size² -> ((N, size, size, 3) uint8, captions)."""
    import cv2

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"--reg-images {folder} is not a folder")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"--reg-images {folder} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    table = {}
    for name in ("captions.json", "captions.txt"):
        if (folder / name).is_file():
            table = read_captions(folder / name)
    images, captions = [], []
    for path in files:
        caption = table.get(path.name) or table.get(path.stem)
        if caption is None and path.with_suffix(".txt").is_file():
            caption = path.with_suffix(".txt").read_text(encoding="utf-8").strip()
        if not caption:
            raise ValueError(
                f"--reg-images: no caption for {path.name}; add '{path.name}<TAB>caption' to "
                f"{folder / 'captions.txt'} or write {path.with_suffix('.txt').name}"
            )
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise ValueError(f"--reg-images: {path} is not a readable image")
        images.append(_square(cv2.cvtColor(image, cv2.COLOR_BGR2RGB), size))
        captions.append(caption)
    return np.stack(images), captions


def _square(image: np.ndarray, size: int) -> np.ndarray:
    import cv2

    h, w = image.shape[:2]
    side = min(h, w)
    y, x = (h - side) // 2, (w - side) // 2
    crop = image[y : y + side, x : x + side]
    return cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA if side > size else cv2.INTER_LINEAR)


# ---------------------------------------------------------------------------------------------------------------
# examples (run in DataLoader workers: picklable, numpy only)


@dataclass
class PhotoExampleBuilder:
    """SequenceRecord -> one example per frame: target (S, S, 3) uint8, conditions (3, 3, S, S) float32 [0, 1],
    prompt, key."""

    resolution: int = 512
    full_frames: bool = False
    crop_margin: int = 50
    seed: int = 0
    captions: dict = field(default_factory=dict)
    prompt_styles: tuple = ()
    backgrounds: tuple = ()

    def prompt(self, record, key: str) -> str:
        from hoigen.diffusion.hoidiffusion.pipeline import PhotoOptions, build_prompt

        if key in self.captions:
            return self.captions[key]
        if record.key in self.captions:
            return self.captions[record.key]
        digest = int.from_bytes(hashlib.sha256(record.key.encode()).digest()[:8], "little")
        rng = np.random.default_rng([self.seed, digest])
        options = PhotoOptions(prompt_styles=tuple(self.prompt_styles), backgrounds=tuple(self.backgrounds))
        return build_prompt(record.meta, options, rng)

    def __call__(self, record) -> list[dict]:
        from hoigen.diffusion.hoidiffusion.conditions import crop_conditions, frame_conditions, sequence_crop

        examples = []
        prompt = self.prompt(record, record.key)
        for t, frame in enumerate(record.frames):
            key = f"{record.key}/f{t:03d}"
            stack = frame_conditions(frame, "exact")
            target = record.targets[t]
            if self.full_frames:
                h, w = target.shape[:2]
                if h % 8 or w % 8:
                    raise ValueError(f"frame {key} is {w}x{h}; full-frame training needs multiples of 8 (or crops)")
            else:
                one = {"camera": record.meta["camera"], "frames": [record.meta["frames"][t]]}
                crop = sequence_crop(one, self.resolution, self.crop_margin)
                stack = crop_conditions(stack, crop)
                target = crop.apply(target)
            examples.append({
                "target": np.ascontiguousarray(target, dtype=np.uint8),
                "conditions": np.ascontiguousarray(stack, dtype=np.float32),
                "prompt": self.prompt(record, key) if key in self.captions else prompt,
                "key": key,
            })
        return examples


# ---------------------------------------------------------------------------------------------------------------
# the task


class HOIDiffusionTask(TrainTask):
    name = "hoidiffusion"

    def __init__(self, config: HOIDiffusionTrainConfig):
        self.config = config
        self.model: AdapterUNet | None = None

    def config_dict(self) -> dict:
        from dataclasses import asdict

        return asdict(self.config)

    # -- setup ------------------------------------------------------------------------------------------------

    def _weights(self, out: Path, seed: int, main: bool, accelerator):
        """Resolve the starting weights; with only --sd, write fresh (seeded) adapters to RUN/init first."""
        from hoigen.diffusion.hoidiffusion.weights import resolve_weights

        c = self.config
        if c.hoidiffusion:
            return resolve_weights(c.hoidiffusion, c.sd)
        init = out / "init"
        if main and not all((init / "adapters" / n / "config.json").is_file() for n in ("skeleton", "normal", "mask")):
            write_fresh_adapters(init, c.sd, seed)
        accelerator.wait_for_everyone()
        return resolve_weights(init, c.sd)

    def setup(self, accelerator, loop: LoopConfig, weight_dtype) -> None:
        from hoigen.diffusion.hoidiffusion.weights import load_components
        from hoigen.diffusion.training.data import resolve_training_shards

        c = self.config
        out = Path(loop.out)
        self.loop = loop
        self.accelerator = accelerator
        self.device = accelerator.device
        self.weight_dtype = weight_dtype
        self.shards = resolve_training_shards(c.data)
        self.weights = self._weights(out, loop.seed, accelerator.is_main_process, accelerator)
        parts = load_components(self.weights, device="cpu", dtype=torch.float32)
        self.vae = parts["vae"].requires_grad_(False).to(self.device, weight_dtype)
        self.text_encoder = parts["text_encoder"].requires_grad_(False).to(self.device, weight_dtype)
        self.tokenizer = parts["tokenizer"]
        self.scheduler = parts["scheduler"]
        self.model = AdapterUNet(parts["unet"], parts["adapters"]).to(self.device)
        self.trainable_names = select_trainable(self.model, c.sd_lock)
        if c.sd_lock:
            self.model.unet.to(weight_dtype)
        self.model.train()
        self.vae_scale = 2 ** (len(self.vae.config.block_out_channels) - 1)
        self.builder = PhotoExampleBuilder(
            resolution=c.resolution,
            full_frames=c.full_frames,
            crop_margin=c.crop_margin,
            seed=loop.seed,
            captions=read_captions(c.captions) if c.captions else {},
            prompt_styles=tuple(c.prompt_styles),
            backgrounds=tuple(c.backgrounds),
        )
        self.reg_images, self.reg_captions = self._regularisation(out, accelerator)
        self.val = self._validation_examples() if accelerator.is_main_process and c.sample_count else []

    def _regularisation(self, out: Path, accelerator):
        c = self.config
        if c.reg_prob <= 0:
            return None, []
        if c.reg_images:
            images, captions = read_reg_images(c.reg_images, c.resolution)
        else:
            folder = out / "reg"
            if accelerator.is_main_process and len(list(folder.glob("*.png"))) != c.reg_generate:
                self.generate_scenery(folder, c.reg_generate)
            accelerator.wait_for_everyone()
            images, captions = read_reg_images(folder, c.resolution)
        logger.info("background regularisation: %d scenery images, p = %.2f", len(images), c.reg_prob)
        return images, captions

    @torch.no_grad()
    def generate_scenery(self, folder: Path, count: int) -> None:
        """``count`` scenery images from the base model (no adapters), seeded, into ``folder`` + captions.txt."""
        import cv2
        from diffusers import StableDiffusionPipeline

        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.glob("*.png"):
            old.unlink()
        pipe = StableDiffusionPipeline(
            vae=self.vae, text_encoder=self.text_encoder, tokenizer=self.tokenizer, unet=self.model.unet,
            scheduler=self.scheduler, safety_checker=None, feature_extractor=None, requires_safety_checker=False,
        )
        pipe.set_progress_bar_config(disable=True)
        lines = []
        size = self.config.resolution
        for i in range(count):
            prompt = SCENERY_PROMPTS[i % len(SCENERY_PROMPTS)]
            generator = torch.Generator().manual_seed(int(self.loop.seed) * 100003 + i)
            latents = torch.randn((1, self.model.unet.config.in_channels, size // self.vae_scale,
                                   size // self.vae_scale), generator=generator)
            with self.accelerator.autocast():
                image = pipe(prompt, height=size, width=size, num_inference_steps=self.config.reg_steps,
                             latents=latents.to(self.device, self.model.unet.dtype), output_type="np").images[0]
            pixels = np.clip(np.round(image * 255.0), 0, 255).astype(np.uint8)
            cv2.imwrite(str(folder / f"{i:05d}.png"), cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR))
            lines.append(f"{i:05d}.png\t{prompt}")
        (folder / "captions.txt").write_text("\n".join(lines) + "\n")
        logger.info("generated %d scenery images into %s", count, folder)

    def _validation_examples(self) -> list[dict]:
        from hoigen.diffusion.training.data import ShardExamples

        out = []
        for example in ShardExamples(self.shards, self.builder, self.loop.seed, shuffle=0):
            if example.get("_empty"):
                continue
            out.append(example)
            if len(out) >= self.config.sample_count:
                break
        return out

    def trainable_module(self) -> nn.Module:
        return self.model

    def enable_gradient_checkpointing(self) -> None:
        self.model.unet.enable_gradient_checkpointing()

    def optimizer(self, parameters):
        return torch.optim.AdamW(parameters, lr=self.config.lr)

    def dataset(self, epoch: int):
        from hoigen.diffusion.training.data import ShardExamples

        return ShardExamples(self.shards, self.builder, self.loop.seed, epoch, self.loop.shuffle)

    # -- loss -------------------------------------------------------------------------------------------------

    def encode_prompts(self, prompts: list[str]) -> torch.Tensor:
        ids = self.tokenizer(
            list(prompts), padding="max_length", max_length=self.tokenizer.model_max_length, truncation=True,
            return_tensors="pt",
        ).input_ids.to(self.device)
        with torch.no_grad():
            return self.text_encoder(ids)[0]

    def regularisation_batch(self, size: int, generator: torch.Generator) -> dict:
        """A background batch: ``size`` scenery images (drawn with ``generator``), captions, zero conditions."""
        index = torch.randint(len(self.reg_images), (size,), generator=generator).tolist()
        images = torch.from_numpy(self.reg_images[index])
        s = images.shape[1]
        return {
            "target": images,
            "conditions": torch.zeros((size, 3, 3, s, s), dtype=torch.float32),
            "prompt": [self.reg_captions[i] for i in index],
            "reg": True,
        }

    def maybe_regularise(self, batch: dict, generator: torch.Generator) -> dict:
        """With probability reg_prob (one draw from ``generator``), the regularisation batch instead of ``batch``."""
        draw = float(torch.rand((), generator=generator))
        if self.reg_images is not None and draw < self.config.reg_prob:
            return self.regularisation_batch(int(batch["target"].shape[0]), generator)
        return {**batch, "reg": False}

    def loss(self, model, batch, generator):
        batch = self.maybe_regularise(batch, generator)
        target = batch["target"].to(self.device).permute(0, 3, 1, 2).float() / 127.5 - 1.0
        with torch.no_grad():
            dist = self.vae.encode(target.to(self.weight_dtype)).latent_dist
            eps = torch.randn(dist.mean.shape, generator=generator).to(self.device, dist.mean.dtype)
            latents = (dist.mean + dist.std * eps).float() * self.vae.config.scaling_factor
            text = self.encode_prompts(batch["prompt"])
        noise = torch.randn(latents.shape, generator=generator).to(self.device)
        steps = self.scheduler.config.num_train_timesteps
        timesteps = torch.randint(0, steps, (latents.shape[0],), generator=generator).to(self.device)
        noisy = self.scheduler.add_noise(latents, noise, timesteps)
        if self.scheduler.config.prediction_type == "v_prediction":
            goal = self.scheduler.get_velocity(latents, noise, timesteps)
        else:
            goal = noise
        unet_dtype = next(self.model.unet.parameters()).dtype
        pred = model(noisy.to(unet_dtype), timesteps, text.to(unet_dtype), batch["conditions"].to(self.device))
        loss = torch.nn.functional.mse_loss(pred.float(), goal.float())
        return loss, {"reg": float(batch["reg"])}

    # -- samples and export -----------------------------------------------------------------------------------

    def pipeline(self, model: AdapterUNet):
        from diffusers import MultiAdapter, StableDiffusionAdapterPipeline

        from hoigen.diffusion.hoidiffusion.weights import make_scheduler

        pipe = StableDiffusionAdapterPipeline(
            vae=self.vae, text_encoder=self.text_encoder, tokenizer=self.tokenizer, unet=model.unet,
            adapter=MultiAdapter(list(model.adapters)), scheduler=make_scheduler(self.weights.sd_root / "scheduler"),
            safety_checker=None, feature_extractor=None, requires_safety_checker=False,
        )
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def sample(self, model, path: Path, step: int) -> None:
        """Grid: one row per validation frame: skeleton | normal | mask | target | generated; + an .npz."""
        if not self.val:
            return
        pipe = self.pipeline(model)
        dtype = next(model.unet.parameters()).dtype
        cond = np.stack([e["conditions"] for e in self.val])
        images = [torch.from_numpy(cond[:, i]).to(self.device, dtype) for i in range(3)]
        h, w = cond.shape[-2:]
        generator = torch.Generator().manual_seed(int(self.loop.seed))
        latents = torch.randn((len(self.val), model.unet.config.in_channels, h // self.vae_scale,
                               w // self.vae_scale), generator=generator).to(self.device, dtype)
        out = _run_adapter_pipe(pipe, self.val, images, h, w, self.config.sample_steps, latents)
        generated = np.clip(np.round(np.asarray(out) * 255.0), 0, 255).astype(np.uint8)
        targets = np.stack([e["target"] for e in self.val])
        rows = []
        for i in range(len(self.val)):
            conds = [(cond[i, k].transpose(1, 2, 0) * 255).round().astype(np.uint8) for k in range(3)]
            rows.append(np.concatenate([*conds, targets[i], generated[i]], axis=1))
        write_png(path, np.concatenate(rows, axis=0))
        np.savez_compressed(path.with_suffix(".npz"), generated=generated, target=targets,
                            hoimask=(cond[:, 2].transpose(0, 2, 3, 1) * 255).round().astype(np.uint8),
                            keys=np.array([e["key"] for e in self.val]))

    def export(self, model, folder: Path) -> None:
        export_converted(model, self.vae, self.text_encoder, self.weights, folder, self.config, self.trainable_names)


def _run_adapter_pipe(pipe, val, images, h, w, steps, latents):
    from hoigen.diffusion.hoidiffusion.pipeline import NEGATIVE_PROMPT

    return pipe(
        prompt=[e["prompt"] for e in val], negative_prompt=[NEGATIVE_PROMPT] * len(val), image=images, height=h,
        width=w, num_inference_steps=steps, guidance_scale=7.5, latents=latents,
        adapter_conditioning_scale=[1.0, 1.0, 1.0], output_type="np",
    ).images


def write_png(path: Path, image: np.ndarray) -> None:
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2BGR))


def fresh_adapter_config(sd_folder: str | Path) -> dict:
    """A full T2I-Adapter config matching the SD folder's UNet widths and VAE factor (SD-1.4: HOIDiffusion's)."""
    sd = Path(sd_folder)
    unet = json.loads((sd / "unet" / "config.json").read_text())
    vae = json.loads((sd / "vae" / "config.json").read_text())
    return {
        "adapter_type": "full_adapter",
        "channels": list(unet["block_out_channels"]),
        "downscale_factor": 2 ** (len(vae["block_out_channels"]) - 1),
        "in_channels": 3,
        "num_res_blocks": 2,
    }


def write_fresh_adapters(folder: Path, sd_folder: str | Path, seed: int) -> None:
    """Three randomly initialised (seeded) adapters in ``folder/adapters/{skeleton,normal,mask}``."""
    from diffusers import T2IAdapter

    from hoigen.diffusion.hoidiffusion.weights import ADAPTER_NAMES

    if not sd_folder or not (Path(sd_folder) / "unet" / "config.json").is_file():
        raise FileNotFoundError(f"--sd {sd_folder}: not a diffusers SD-1.x folder (unet/config.json missing)")
    config = fresh_adapter_config(sd_folder)
    for i, name in enumerate(ADAPTER_NAMES):
        torch.manual_seed(int(seed) * 7919 + i)
        T2IAdapter(**config).save_pretrained(folder / "adapters" / name, safe_serialization=True)
    logger.info("fresh adapters (%s) written to %s", config["channels"], folder / "adapters")


def export_converted(model: AdapterUNet, vae, text_encoder, weights, folder: Path, config, trainable) -> None:
    """Write the converted layout ``hoigen generate`` loads (see ``hoidiffusion/weights.py``)."""
    import diffusers
    import transformers

    from hoigen import __version__
    from hoigen.diffusion.hoidiffusion.weights import (
        ADAPTER_NAMES,
        FORMAT,
        FORMAT_VERSION,
        RECORD_FILE,
        file_sha256,
    )

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    sd_root = Path(weights.sd_root)
    model.unet.to(torch.float32).save_pretrained(folder / "unet", safe_serialization=True)
    vae.to(torch.float32).save_pretrained(folder / "vae", safe_serialization=True)
    text_encoder.to(torch.float32).save_pretrained(folder / "text_encoder", safe_serialization=True)
    for name, adapter in zip(ADAPTER_NAMES, model.adapters):
        adapter.to(torch.float32).save_pretrained(folder / "adapters" / name, safe_serialization=True)
    for sub in ("tokenizer", "scheduler"):
        shutil.copytree(sd_root / sub, folder / sub)
    shutil.copy2(sd_root / "model_index.json", folder / "model_index.json")
    outputs = {p.relative_to(folder).as_posix(): file_sha256(p) for p in sorted(folder.rglob("*")) if p.is_file()}
    record = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "source": "hoigen train hoidiffusion",
        "random": False,
        "adapters": list(ADAPTER_NAMES),
        "trained": {"data": str(config.data), "sd_lock": config.sd_lock, "trainable_tensors": len(trainable)},
        "inputs": dict(weights.files),
        "outputs": outputs,
        "versions": {"hoigen": __version__, "diffusers": diffusers.__version__,
                     "transformers": transformers.__version__, "torch": torch.__version__},
    }
    (folder / RECORD_FILE).write_text(json.dumps(record, indent=1))
