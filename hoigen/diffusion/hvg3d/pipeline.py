"""HVG-3D inference: diffusers' ``CogVideoXImageToVideoPipeline`` with the 3D ControlNet attached by hooks.

Per sample (SPEC §6): first frame = ``--first-frame PATH`` if given, else ``f000.photo.png`` (photo stage) else the
render ``f000.rgb.png``; 3D condition = the sample's tracking images (``fNNN.tracking.png`` or ``tracking.mp4``,
as [-1, 1] through ``conditioning.tracking_video_tensor``) and its ``points.npy`` with the camera K; prompt =
``prompt_fn(meta)`` or "A hand is grasping a {category}". ``CogVideoXDPMScheduler`` with trailing spacing,
guidance 6 with dynamic CFG (DaS), 50 steps; the initial noise from a CPU ``torch.Generator`` seeded by the stage.
Output: ``video.mp4`` (and ``fNNN.video.png`` with ``video_frames``); frame k of the video carries the labels of
trajectory frame k. The sample must already have the backbone's frame count and size (49 frames at 720×480 for
CogVideoX-5B-I2V): nothing is resized, so the labels stay exact.
"""

from __future__ import annotations

import io
import logging
import os
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

COGVIDEOX_FLAG = "--cogvideox DIR (or HOIGEN_COGVIDEOX_DIR)"
HVG3D_FLAG = "--hvg3d DIR (or HOIGEN_HVG3D_DIR)"
NEGATIVE_PROMPT = ""
_REQUIRED_PARTS = ("model_index.json", "transformer", "vae", "scheduler", "text_encoder", "tokenizer")
_HASH_CACHE: dict[tuple, str] = {}


def default_prompt(meta: dict) -> str:
    """HOIDiffusion's prompt template with the sample's object category."""
    category = (meta.get("object") or {}).get("category") or "object"
    return f"A hand is grasping a {category}"


def resolve_cogvideox_dir(cogvideox_dir) -> Path:
    """The CogVideoX-I2V diffusers folder from the flag or ``HOIGEN_COGVIDEOX_DIR``, checked for its parts."""
    value = cogvideox_dir or os.environ.get("HOIGEN_COGVIDEOX_DIR")
    if not value:
        raise FileNotFoundError(
            f"--video hvg3d needs the CogVideoX-5B-I2V weights as a local diffusers folder: pass {COGVIDEOX_FLAG}"
        )
    folder = Path(value)
    if not folder.is_dir():
        raise FileNotFoundError(f"CogVideoX folder {folder} does not exist ({COGVIDEOX_FLAG})")
    missing = [part for part in _REQUIRED_PARTS if not (folder / part).exists()]
    if missing:
        raise FileNotFoundError(
            f"CogVideoX folder {folder} lacks {missing}: it must be a diffusers CogVideoX-5B-I2V folder "
            f"(model_index.json, transformer/, vae/, scheduler/, text_encoder/, tokenizer/) ({COGVIDEOX_FLAG})"
        )
    return folder


def resolve_hvg3d_dir(hvg3d_dir) -> Path | None:
    value = hvg3d_dir or os.environ.get("HOIGEN_HVG3D_DIR")
    if not value:
        return None
    folder = Path(value)
    if not folder.is_dir():
        raise FileNotFoundError(f"HVG-3D ControlNet folder {folder} does not exist ({HVG3D_FLAG})")
    return folder


def _cached_sha256(path: Path) -> str:
    from hoigen.diffusion.hvg3d.weights import file_sha256

    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _HASH_CACHE:
        _HASH_CACHE[key] = file_sha256(path)
    return _HASH_CACHE[key]


def _folder_files(prefix: str, folder: Path) -> dict[str, str]:
    suffixes = (".safetensors", ".bin", ".json", ".model", ".txt")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in suffixes)
    return {f"{prefix}/{p.relative_to(folder).as_posix()}": _cached_sha256(p) for p in files}


class HVG3DVideoBackend:
    """The ``--video hvg3d`` backend of ``hoigen generate`` / ``synth`` (one instance per worker/GPU).

    Args:
        cogvideox_dir: local diffusers CogVideoX-5B-I2V folder (None: ``HOIGEN_COGVIDEOX_DIR``).
        hvg3d_dir: trained ControlNet folder (None: ``HOIGEN_HVG3D_DIR``; unset = CogVideoX-I2V alone, logged).
        device, dtype: torch device string and dtype (bf16 on CUDA is CogVideoX-5B's precision).
        steps, guidance: sampler steps and CFG scale (dynamic CFG on).
        first_frame: an image file used as every sample's first frame (resized to the video size).
        video_frames: also write ``fNNN.video.png``.
        no_points, no_tracking: switch a ControlNet branch off (the paper's ablations).
        offload: model CPU offload (``enable_model_cpu_offload``) for GPUs with less memory.
        prompt_fn: meta -> prompt; default :func:`default_prompt`.
    """

    name = "hvg3d"

    def __init__(
        self,
        cogvideox_dir,
        hvg3d_dir=None,
        *,
        device,
        dtype,
        steps=50,
        guidance=6.0,
        first_frame=None,
        video_frames=False,
        no_points=False,
        no_tracking=False,
        offload=False,
        prompt_fn=None,
    ):
        import torch
        from diffusers import CogVideoXDPMScheduler, CogVideoXImageToVideoPipeline

        if int(steps) < 1:
            raise ValueError(f"--video-steps must be >= 1, got {steps}")
        if float(guidance) < 1.0:
            raise ValueError(f"--video-guidance must be >= 1 (1 = no guidance), got {guidance}")
        if no_points and no_tracking:
            raise ValueError(
                "--no-points together with --no-tracking leaves no 3D condition; drop one of them "
                "(or run without --hvg3d for CogVideoX-I2V alone)"
            )
        if dtype == torch.float16:
            logger.warning("CogVideoX-5B was trained in bf16; fp16 can overflow: prefer --dtype bf16")
        self.cogvideox_dir = resolve_cogvideox_dir(cogvideox_dir)
        self.hvg3d_dir = resolve_hvg3d_dir(hvg3d_dir)
        self.device, self.dtype = str(device), dtype
        self.steps, self.guidance = int(steps), float(guidance)
        self.video_frames, self.prompt_fn = bool(video_frames), prompt_fn
        self.first_frame_path = None if first_frame is None else Path(first_frame)
        self._first_frame = None
        if self.first_frame_path is not None:
            if not self.first_frame_path.is_file():
                raise FileNotFoundError(f"--first-frame {self.first_frame_path} does not exist")
            from PIL import Image

            with Image.open(self.first_frame_path) as image:
                self._first_frame = image.convert("RGB")

        try:
            pipe = CogVideoXImageToVideoPipeline.from_pretrained(
                str(self.cogvideox_dir), dtype=dtype, local_files_only=True
            )
        except (OSError, ValueError, KeyError) as error:
            raise ValueError(
                f"cannot load CogVideoX-I2V from {self.cogvideox_dir}: {error} ({COGVIDEOX_FLAG})"
            ) from error
        pipe.scheduler = CogVideoXDPMScheduler.from_config(pipe.scheduler.config, timestep_spacing="trailing")
        pipe.set_progress_bar_config(disable=True)
        pipe.vae.enable_slicing()
        if self.device.startswith("cuda"):
            pipe.vae.enable_tiling()
        self.pipe = pipe
        config = pipe.transformer.config
        if config.patch_size_t is not None:
            raise ValueError(
                f"{self.cogvideox_dir} is CogVideoX 1.5 (temporal patches); use CogVideoX-5B-I2V"
            )
        self.controlnet = None
        if self.hvg3d_dir is not None:
            from hoigen.diffusion.hvg3d.weights import load_hvg3d

            self.controlnet = load_hvg3d(self.hvg3d_dir, device="cpu", dtype=dtype)
            self.controlnet.check_base(pipe.transformer)
            self.controlnet.use_points = self.controlnet.config.points and not no_points
            self.controlnet.use_tracking = not no_tracking
            if no_tracking and not self.controlnet.config.points:
                raise ValueError(f"--no-tracking: the ControlNet in {self.hvg3d_dir} has no point branch")
            self.controlnet.requires_grad_(False).eval()
        else:
            logger.warning(
                "no HVG-3D ControlNet weights (%s): the videos follow only the first frame and the prompt "
                "(CogVideoX-I2V alone); train one with `hoigen train hvg3d`",
                HVG3D_FLAG,
            )
        if offload and self.device.startswith("cuda"):
            pipe.enable_model_cpu_offload(device=self.device)
        else:
            pipe.to(self.device)
        if self.controlnet is not None:
            self.controlnet.to(self.device)
            self.controlnet.attach(pipe.transformer)
        self.offload = bool(offload)
        self._torch = torch
        self.files = self.model_files(self.cogvideox_dir, self.hvg3d_dir)

    # -- what the stage asks ----------------------------------------------------------------------------------

    @staticmethod
    def model_files(cogvideox_dir, hvg3d_dir=None) -> dict[str, str]:
        """sha256 of the model files by ``cogvideox/...`` / ``hvg3d/...`` path, without loading a model."""
        files = _folder_files("cogvideox", resolve_cogvideox_dir(cogvideox_dir))
        hvg3d = resolve_hvg3d_dir(hvg3d_dir)
        if hvg3d is not None:
            files.update(_folder_files("hvg3d", hvg3d))
        return files

    @property
    def video_size(self) -> tuple[int, int, int]:
        """(frames, width, height) the backbone's learned positional embedding is made for."""
        config = self.pipe.transformer.config
        scale = self.pipe.vae_scale_factor_spatial
        return int(config.sample_frames), int(config.sample_width * scale), int(config.sample_height * scale)

    def check_sample(self, meta: dict) -> None:
        """ValueError unless the sample has the frame count and image size the backbone takes."""
        frames, width, height = self.video_size
        camera = meta.get("camera") or {}
        got = (len(meta.get("frames") or []), camera.get("width"), camera.get("height"))
        if got != (frames, width, height):
            hint = (
                "hoigen synth --frames 16 --manipulation 33 --size 720 480"
                if (frames, width, height) == (49, 720, 480)
                else f"hoigen synth --frames A --manipulation B (A + B = {frames}) --size {width} {height}"
            )
            raise ValueError(
                f"the CogVideoX-I2V backbone in {self.cogvideox_dir} takes {frames} frames of {width}x{height}; "
                f"sample {meta.get('index', '?')} has {got[0]} frames of {got[1]}x{got[2]}. Make the sequences "
                f"with `{hint}` (nothing is resized, so the labels stay exact)"
            )

    # -- one sample -------------------------------------------------------------------------------------------

    def _first_frame_image(self, members: dict, width: int, height: int):
        from PIL import Image

        if self._first_frame is not None:
            return self._first_frame.resize((width, height), Image.BICUBIC), str(self.first_frame_path)
        for name in ("f000.photo.png", "f000.rgb.png"):
            if name in members:
                with Image.open(io.BytesIO(members[name])) as image:
                    return image.convert("RGB"), name
        raise ValueError("the sample has neither f000.photo.png nor f000.rgb.png for the first frame")

    def _tracking_frames(self, members: dict, num_frames: int) -> np.ndarray:
        from hoigen.render.png import decode_png

        names = [f"f{t:03d}.tracking.png" for t in range(num_frames)]
        if all(n in members for n in names):
            return np.stack([decode_png(members[n]) for n in names])
        if "tracking.mp4" in members:
            from hoigen.render.video import decode_mp4

            frames = decode_mp4(members["tracking.mp4"])
            if frames.shape[0] != num_frames:
                raise ValueError(f"tracking.mp4 has {frames.shape[0]} frames, the sample has {num_frames}")
            return frames
        raise ValueError("the sample has no tracking images (fNNN.tracking.png or tracking.mp4)")

    def condition(self, members: dict, meta: dict):
        """The sample's :class:`~hoigen.diffusion.hvg3d.model.ControlCondition` (batch 1) on the device."""
        from hoigen.diffusion.hvg3d.conditioning import (
            encode_condition_latents,
            resample_points,
            tracking_video_tensor,
        )
        from hoigen.diffusion.hvg3d.model import ControlCondition

        torch = self._torch
        net = self.controlnet
        num_frames = len(meta["frames"])
        condition = ControlCondition()
        if net.use_tracking:
            tracking = tracking_video_tensor(self._tracking_frames(members, num_frames))
            device = self.pipe._execution_device
            condition.tracking_latents = encode_condition_latents(self.pipe.vae, tracking, device=device)
        if net.use_points:
            for name in ("points.npy", "points_label.npy"):
                if name not in members:
                    raise ValueError(f"the sample has no {name} for the point branch (or pass --no-points)")
            points = np.load(io.BytesIO(members["points.npy"]), allow_pickle=False)
            labels = np.load(io.BytesIO(members["points_label.npy"]), allow_pickle=False)
            if points.shape[0] != num_frames:
                raise ValueError(f"points.npy has {points.shape[0]} frames, meta lists {num_frames}")
            points, labels = resample_points(points, labels, net.config.num_points)
            condition.points = torch.from_numpy(points)[None].to(self.device)
            condition.points_label = torch.from_numpy(labels)[None].to(self.device)
            condition.K = torch.tensor(meta["camera"]["K"], dtype=torch.float32, device=self.device)
        return condition

    def generate(self, members: dict[str, bytes], meta: dict, seed: int) -> tuple[dict[str, bytes], dict]:
        """Generate the sample's video: (new members, ``meta.generation.video``)."""
        from hoigen.render.png import encode_png
        from hoigen.render.video import encode_mp4

        torch = self._torch
        self.check_sample(meta)
        num_frames, width, height = self.video_size
        image, first_source = self._first_frame_image(members, width, height)
        if image.size != (width, height):
            raise ValueError(
                f"first frame {first_source} is {image.size[0]}x{image.size[1]}, not {width}x{height}"
            )
        prompt = self.prompt_fn(meta) if self.prompt_fn is not None else default_prompt(meta)
        max_length = int(self.pipe.transformer.config.max_text_seq_length)
        generator = torch.Generator(device="cpu").manual_seed(int(seed))
        with torch.no_grad():
            prompt_embeds, negative_embeds = self.pipe.encode_prompt(
                prompt=prompt,
                negative_prompt=NEGATIVE_PROMPT,
                do_classifier_free_guidance=self.guidance > 1.0,
                max_sequence_length=max_length,
                device=self.pipe._execution_device,
            )
            condition = self.condition(members, meta) if self.controlnet is not None else None
            if self.controlnet is not None:
                self.controlnet.set_condition(condition)
            try:
                result = self.pipe(
                    image=image,
                    prompt_embeds=prompt_embeds,
                    negative_prompt_embeds=negative_embeds,
                    height=height,
                    width=width,
                    num_frames=num_frames,
                    num_inference_steps=self.steps,
                    guidance_scale=self.guidance,
                    use_dynamic_cfg=True,
                    generator=generator,
                    max_sequence_length=max_length,
                    output_type="np",
                )
            finally:
                if self.controlnet is not None:
                    self.controlnet.set_condition(None)
        video = np.asarray(result.frames[0])
        if video.shape[:3] != (num_frames, height, width):
            raise ValueError(
                f"the pipeline returned frames of shape {video.shape}, expected {num_frames} frames"
            )
        video = np.clip(np.round(video.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)
        new = {"video.mp4": encode_mp4(video)}
        if self.video_frames:
            new.update({f"f{t:03d}.video.png": encode_png(frame) for t, frame in enumerate(video)})
        net = self.controlnet
        generation = {
            "model": "hvg3d",
            "backbone": "CogVideoXImageToVideoPipeline",
            "files": dict(self.files),
            "controlnet": None if net is None else {"num_blocks": net.config.num_blocks, **self._branches()},
            "scheduler": {"class": type(self.pipe.scheduler).__name__, "timestep_spacing": "trailing"},
            "steps": self.steps,
            "guidance": self.guidance,
            "dynamic_cfg": True,
            "prompt": prompt,
            "negative_prompt": NEGATIVE_PROMPT,
            "dtype": str(self.dtype).replace("torch.", ""),
            "seed": int(seed),
            "first_frame": first_source,
            "frames": num_frames,
            "size": [width, height],
            "fps": 8,
            "members": sorted(new),
        }
        return new, generation

    def _branches(self) -> dict:
        net = self.controlnet
        return {"branches": {"tracking": bool(net.use_tracking), "points": bool(net.use_points)}}
