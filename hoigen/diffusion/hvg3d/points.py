"""Point-cloud tokens for HVG-3D's point branch (pure PyTorch).

A Uni3D-B-style tokenizer: farthest-point sampling of M centres, k-nearest-neighbour groups, a mini-PointNet per
group and a positional MLP on the centres give M tokens of width D per frame (M = 512, k = 64, D = 768 for
Uni3D-B). Differences from Uni3D, both deliberate: LayerNorm instead of BatchNorm (a token never depends on the
rest of the batch), and the per-point input is the offset from the centre plus a hand/object one-hot (hoigen
points carry labels, not colours).

Every step is invariant to the order of the points within a frame: FPS starts from the point farthest from the
centroid (not from index 0), k-NN and max-pooling are set functions. Only exact distance ties could break this.

:func:`scatter_to_token_grid` places each frame's tokens onto the transformer's video-token grid at the cell where
their centre projects (camera K), mean-pooled per cell, and each video frame into its latent frame.
"""

from __future__ import annotations

import torch
from torch import nn

from hoigen.diffusion.hvg3d.conditioning import latent_frame_of


def farthest_point_sample(points: torch.Tensor, num_samples: int) -> torch.Tensor:
    """Farthest-point sampling.

    Args:
        points: (B, N, 3) float.
        num_samples: M <= N.

    Returns:
        (B, M) int64 indices: first the point farthest from the centroid, then repeatedly the point farthest from
        the chosen set (squared Euclidean distance; ties go to the lowest index).
    """
    if points.ndim != 3 or points.shape[-1] != 3:
        raise ValueError(f"points must be (B, N, 3), got {tuple(points.shape)}")
    batch, n, _ = points.shape
    if not 1 <= num_samples <= n:
        raise ValueError(f"cannot sample {num_samples} centres from {n} points (need 1 <= M <= N)")
    points = points.detach()
    centroid = points.mean(dim=1, keepdim=True)
    current = ((points - centroid) ** 2).sum(-1).argmax(dim=1)  # (B,)
    chosen = torch.empty(batch, num_samples, dtype=torch.long, device=points.device)
    distance = torch.full((batch, n), float("inf"), dtype=points.dtype, device=points.device)
    rows = torch.arange(batch, device=points.device)
    for i in range(num_samples):
        chosen[:, i] = current
        last = points[rows, current]  # (B, 3)
        distance = torch.minimum(distance, ((points - last[:, None]) ** 2).sum(-1))
        current = distance.argmax(dim=1)
    return chosen


def knn_groups(points: torch.Tensor, centres: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the k nearest points of each centre.

    Args:
        points: (B, N, 3). centres: (B, M, 3). k <= N.

    Returns:
        (B, M, k) int64, nearest first.
    """
    if k > points.shape[1]:
        raise ValueError(f"group size k={k} exceeds the {points.shape[1]} points per frame")
    distance = torch.cdist(centres.detach(), points.detach()) ** 2  # (B, M, N)
    return distance.topk(k, dim=-1, largest=False).indices


class _PointMLP(nn.Sequential):
    def __init__(self, sizes: list[int]):
        layers: list[nn.Module] = []
        for i in range(len(sizes) - 1):
            layers.append(nn.Linear(sizes[i], sizes[i + 1]))
            if i < len(sizes) - 2:
                layers += [nn.LayerNorm(sizes[i + 1]), nn.ReLU()]
        super().__init__(*layers)


class PointTokenizer(nn.Module):
    """Per-frame point cloud -> M tokens of width ``token_dim`` (Uni3D-B style mini-PointNet).

    Args:
        num_centres: M, FPS centres (groups) per frame.
        group_size: k, points per group.
        encoder_dim: width of the mini-PointNet's output before the token projection.
        token_dim: D, token width.
        num_labels: point classes (one-hot input channels; 2 = object, hand).
    """

    def __init__(
        self,
        num_centres: int = 512,
        group_size: int = 64,
        encoder_dim: int = 512,
        token_dim: int = 768,
        num_labels: int = 2,
    ):
        super().__init__()
        self.num_centres, self.group_size, self.num_labels = num_centres, group_size, num_labels
        self.first = _PointMLP([3 + num_labels, 128, 256])
        self.second = _PointMLP([512, 512, encoder_dim])
        self.to_token = nn.Linear(encoder_dim, token_dim)
        self.position = nn.Sequential(nn.Linear(3, 128), nn.GELU(), nn.Linear(128, token_dim))

    def forward(self, points: torch.Tensor, labels: torch.Tensor | None = None):
        """Tokens of point clouds.

        Args:
            points: (B, N, 3) float, metres, camera frame (one frame per batch row).
            labels: (B, N) int64 point classes, or None (all zeros one-hot).

        Returns:
            (tokens (B, M, D), centres (B, M, 3)).
        """
        batch = points.shape[0]
        points = points.float()  # geometry (FPS, k-NN, offsets) in float32 whatever the model dtype
        dtype = self.to_token.weight.dtype
        centre_index = farthest_point_sample(points, self.num_centres)
        rows = torch.arange(batch, device=points.device)[:, None]
        centres = points[rows, centre_index]  # (B, M, 3)
        group_index = knn_groups(points, centres, self.group_size)  # (B, M, k)
        grouped = points[rows[..., None], group_index] - centres[:, :, None]  # (B, M, k, 3)
        if labels is None:
            onehot = grouped.new_zeros(grouped.shape[:3] + (self.num_labels,))
        else:
            onehot = nn.functional.one_hot(labels[rows[..., None], group_index], self.num_labels).to(
                grouped.dtype
            )
        feature = self.first(torch.cat([grouped, onehot], dim=-1).to(dtype))  # (B, M, k, 256)
        pooled = feature.max(dim=2, keepdim=True).values.expand_as(feature)
        feature = self.second(torch.cat([pooled, feature], dim=-1)).max(dim=2).values  # (B, M, encoder_dim)
        return self.to_token(feature) + self.position(centres.to(dtype)), centres


def scatter_to_token_grid(
    tokens: torch.Tensor,
    centres: torch.Tensor,
    K: torch.Tensor,  # noqa: N803
    grid: tuple[int, int, int],
    cell: tuple[float, float],
    temporal_compression: int = 4,
) -> torch.Tensor:
    """Mean-pool per-frame tokens into the video-token grid at the cells where their centres project.

    Args:
        tokens: (B, T, M, D) per-frame tokens.
        centres: (B, T, M, 3) camera-frame centres, metres (OpenCV: x right, y down, z forward).
        K: (B, 3, 3) or (3, 3) intrinsics in pixels of the video (pixel centres at integers).
        grid: (F_lat, h, w) token grid (latent frames, token rows, token columns).
        cell: (cell height, cell width) of one token in pixels (VAE factor × patch size, e.g. 16).
        temporal_compression: video frames per latent frame after the first.

    Returns:
        (B, F_lat * h * w, D) in the transformer's token order (frame, row, column): the mean of the tokens whose
        centre projects into the cell in a video frame of that latent frame; zero where none does. Centres behind
        the camera or outside the image are dropped.
    """
    batch, frames, m, dim = tokens.shape
    f_lat, h, w = grid
    if K.ndim == 2:
        K = K.expand(batch, 3, 3)  # noqa: N806
    K = K.to(centres.dtype)  # noqa: N806
    uvw = torch.einsum("bij,btmj->btmi", K, centres)
    z = centres[..., 2]
    safe = torch.where(z > 0, uvw[..., 2], torch.ones_like(z))
    col = torch.floor((uvw[..., 0] / safe + 0.5) / cell[1]).long()
    row = torch.floor((uvw[..., 1] / safe + 0.5) / cell[0]).long()
    latent = latent_frame_of(torch.arange(frames, device=tokens.device), temporal_compression)
    latent = latent[None, :, None].expand(batch, frames, m)
    valid = (z > 0) & (col >= 0) & (col < w) & (row >= 0) & (row < h) & (latent < f_lat)
    cell_index = (latent * h + row.clamp(0, h - 1)) * w + col.clamp(0, w - 1)
    flat = (torch.arange(batch, device=tokens.device)[:, None, None] * (f_lat * h * w) + cell_index)[valid]
    summed = tokens.new_zeros(batch * f_lat * h * w, dim).index_add(0, flat, tokens[valid])
    count = tokens.new_zeros(batch * f_lat * h * w).index_add(
        0, flat, torch.ones_like(flat, dtype=tokens.dtype)
    )
    return (summed / count.clamp(min=1)[:, None]).view(batch, f_lat * h * w, dim)
