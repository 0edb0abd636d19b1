"""HVG-3D conditions from a hoigen sample: tracking video tensor, resampled point clouds, condition latents.

One place for the value ranges and layouts that training (issue 11) and inference must share:

- **Tracking video**: the shard stores DaS tracking colours c in [0, 1] as uint8 ``round(255 c)``
  (``hoigen.render.conditions``). The model always sees ``2 c - 1`` in **[-1, 1]**, the range the CogVideoX VAE
  encodes images in (DaS trains on [-1, 1] but encodes [0, 1] at inference, a bug not repeated here):
  :func:`tracking_video_tensor` is the only conversion.
- **Condition latents**: the VAE latents (distribution mode, times the scaling factor, as the pipeline scales its
  image latents) of the tracking video ‖ the latent of its first frame alone, zero-padded in time: (B, F_lat, 32,
  h, w), the layout of the I2V transformer's own input (noise ‖ image latents).
- **Points**: ``points.npy`` (T, N0, 3) camera-frame metres, resampled to a fixed N by the same evenly spaced
  indices in every frame (point i stays the same surface point across frames); labels 0 object, 1 hand.
- **Time**: video frame f belongs to latent frame ``ceil(f / r)`` (r = 4 for CogVideoX: frame 0 alone, then groups
  of 4), :func:`latent_frame_of`.
"""

from __future__ import annotations

import numpy as np
import torch


def tracking_video_tensor(frames: np.ndarray | torch.Tensor) -> torch.Tensor:
    """DaS tracking images as the model input.

    Args:
        frames: (T, H, W, 3) uint8 RGB tracking images (``fNNN.tracking.png`` or decoded ``tracking.mp4``), or
            (B, T, H, W, 3) uint8.

    Returns:
        (B, 3, T, H, W) float32 in [-1, 1] (value 2 c - 1 with c = uint8 / 255), B = 1 for a (T, H, W, 3) input.
    """
    tensor = torch.as_tensor(np.asarray(frames)) if not isinstance(frames, torch.Tensor) else frames
    if tensor.dtype != torch.uint8:
        raise ValueError(f"tracking frames must be uint8 images (0..255), got dtype {tensor.dtype}")
    if tensor.ndim == 4:
        tensor = tensor[None]
    if tensor.ndim != 5 or tensor.shape[-1] != 3:
        raise ValueError(
            f"tracking frames must be (T, H, W, 3) or (B, T, H, W, 3) RGB, got {tuple(tensor.shape)}"
        )
    return tensor.permute(0, 4, 1, 2, 3).float() / 127.5 - 1.0


def latent_frame_of(frame: np.ndarray | torch.Tensor | int, temporal_compression: int = 4):
    """Latent frame index of video frame(s) ``frame``: 0 for frame 0, then ``ceil(f / r)``."""
    return (frame + temporal_compression - 1) // temporal_compression


def check_frame_count(num_frames: int, temporal_compression: int = 4) -> int:
    """Latent frame count for ``num_frames`` video frames; ValueError unless it is ``1 + r k``."""
    if num_frames < 1 or (num_frames - 1) % temporal_compression:
        raise ValueError(
            f"a CogVideoX video has 1 + {temporal_compression} k frames (e.g. 9, 13, 49), got {num_frames}"
        )
    return (num_frames - 1) // temporal_compression + 1


def resample_points(points: np.ndarray, labels: np.ndarray | None, num_points: int):
    """Resample per-frame point clouds to ``num_points`` with the same indices in every frame.

    Args:
        points: (T, N0, 3) float, metres, camera frame (``points.npy``).
        labels: (N0,) uint8, 0 object / 1 hand (``points_label.npy``), or None.
        num_points: N.

    Returns:
        ((T, N, 3) float32, (N,) int64 labels or None): indices ``round(linspace(0, N0 - 1, N))`` (repeats when
        N0 < N), deterministic and the same for every frame.
    """
    points = np.asarray(points)
    if points.ndim != 3 or points.shape[-1] != 3 or points.shape[1] == 0:
        raise ValueError(f"points must be (T, N, 3) with N >= 1, got shape {points.shape}")
    if not np.isfinite(points).all():
        raise ValueError("points contain NaN or infinite values")
    if num_points < 1:
        raise ValueError(f"num_points must be >= 1, got {num_points}")
    index = np.round(np.linspace(0, points.shape[1] - 1, num_points)).astype(np.int64)
    out_labels = None
    if labels is not None:
        labels = np.asarray(labels)
        if labels.shape != (points.shape[1],):
            raise ValueError(f"points_label must have shape ({points.shape[1]},), got {labels.shape}")
        out_labels = labels[index].astype(np.int64)
    return points[:, index].astype(np.float32), out_labels


def _scale_latents(vae, latents: torch.Tensor) -> torch.Tensor:
    factor = float(vae.config.scaling_factor)
    # The I2V pipeline's convention for its image latents (CogVideoX 1.5 inverts it).
    return latents / factor if getattr(vae.config, "invert_scale_latents", False) else latents * factor


@torch.no_grad()
def encode_condition_latents(vae, tracking: torch.Tensor, device=None) -> torch.Tensor:
    """Condition latents of a tracking video for the ControlNet's tracking branch.

    Args:
        vae: ``AutoencoderKLCogVideoX``.
        tracking: (B, 3, T, H, W) in [-1, 1] (:func:`tracking_video_tensor`), T = 1 + 4 k.
        device: where the VAE runs (default ``vae.device``; give the pipeline's execution device under a CPU
            offload, whose hook moves the VAE there when it encodes).

    Returns:
        (B, F_lat, 2 C, H / 8, W / 8) in the VAE's dtype: video latents ‖ first-frame latent zero-padded in time;
        C = 16 for CogVideoX (32 channels, the transformer's input layout). Latents are the distribution's mode
        (deterministic, no generator needed).
    """
    if tracking.ndim != 5 or tracking.shape[1] != 3:
        raise ValueError(f"tracking must be (B, 3, T, H, W), got {tuple(tracking.shape)}")
    if tracking.min() < -1.0 - 1e-6 or tracking.max() > 1.0 + 1e-6:
        raise ValueError("tracking must lie in [-1, 1] (use tracking_video_tensor)")
    tracking = tracking.to(device=device if device is not None else vae.device, dtype=vae.dtype)
    video = _scale_latents(vae, vae.encode(tracking).latent_dist.mode())  # (B, C, F_lat, h, w)
    first = _scale_latents(vae, vae.encode(tracking[:, :, :1]).latent_dist.mode())  # (B, C, 1, h, w)
    padded = torch.cat([first, first.new_zeros(first.shape[:2] + (video.shape[2] - 1,) + first.shape[3:])], 2)
    return torch.cat([video, padded], dim=1).permute(0, 2, 1, 3, 4).contiguous()
