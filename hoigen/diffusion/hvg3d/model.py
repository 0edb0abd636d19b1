"""The HVG-3D 3D ControlNet, attached to diffusers' ``CogVideoXTransformer3DModel`` by forward hooks (no fork).

Data flow (B batch, F latent frames, h × w video tokens per latent frame, D = the base's width, 3072 for 5B):

- **tracking branch**: condition latents (B, F, 32, H/8, W/8) (``conditioning.encode_condition_latents``) go
  through the base's **frozen** patch embedding (the same projection and positional embedding as the video
  latents) -> (B, F h w, D);
- **point branch**: per-frame point clouds (B, T, N, 3) -> :class:`~hoigen.diffusion.hvg3d.points.PointTokenizer`
  (B·T, M, 768) -> zero-initialised Linear(768 -> D) -> scattered onto the token grid where each centre projects
  through the camera K (mean per cell, video frame -> latent frame); added to the tracking tokens;
- ``control_0 = in_linear(video_tokens + condition_tokens)`` with ``in_linear`` zero-initialised (DaS);
- after base block i < K: ``control_{i+1}, _ = copy_i(control_i, text_i, temb, rotary)`` where ``text_i`` is the
  base's text stream after block i, and ``out_linears[i](control_{i+1})`` (zero-initialised) is added to the base's
  video tokens.

Why this point placement: a point token carries the geometry of one local surface patch; putting it at the token
cell its centre projects to (the camera is known exactly) gives the transformer a condition that is *spatially
aligned* with the video tokens it steers, like the tracking video is, instead of asking it to learn the camera.
Mean-pooling per cell keeps the scale independent of how many centres fall there; cells no centre reaches get
zero (no information, not a guess). Video frames 4j-3..4j share latent frame j, so their tokens pool together.

The zero-initialised out-linears make the model equal the base exactly at initialisation, for either branch; the
zero-initialised point projection additionally lets a point branch be added to a trained tracking-only model
without changing it. Gradient checkpointing of the base (``transformer.enable_gradient_checkpointing()``) also
checkpoints the copies: each block's hook runs inside the block's checkpointed call and is a pure function of its
inputs and of the control state left by the previous block, so the recomputation repeats it exactly.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from hoigen.diffusion.hvg3d.points import PointTokenizer, scatter_to_token_grid

logger = logging.getLogger(__name__)

_BLOCK_KEYS = (
    "num_attention_heads",
    "attention_head_dim",
    "time_embed_dim",
    "dropout",
    "activation_fn",
    "attention_bias",
    "norm_elementwise_affine",
    "norm_eps",
)


@dataclass(frozen=True)
class HVG3DConfig:
    """The ControlNet's architecture (saved as ``config.json`` beside the weights).

    Attributes:
        num_blocks: K, copies of the base's first K blocks (DaS 18, HVG-3D all 42).
        block: ``CogVideoXBlock`` arguments of the base (heads, head dim, time embedding width, ...).
        patch_size: the base's spatial patch size.
        vae_spatial: VAE spatial factor (8).
        temporal_compression: VAE temporal factor (4).
        points: whether the point branch exists.
        num_points: N, points per frame after resampling.
        num_centres: M, FPS centres (point tokens) per frame.
        group_size: k, points per group.
        point_encoder_dim: mini-PointNet output width.
        point_token_dim: point token width (768, Uni3D-B).
    """

    num_blocks: int
    block: dict = field(default_factory=dict)
    patch_size: int = 2
    vae_spatial: int = 8
    temporal_compression: int = 4
    points: bool = True
    num_points: int = 4096
    num_centres: int = 512
    group_size: int = 64
    point_encoder_dim: int = 512
    point_token_dim: int = 768

    def __post_init__(self):
        if self.num_blocks < 1:
            raise ValueError(f"num_blocks (K) must be >= 1, got {self.num_blocks}")
        missing = [k for k in _BLOCK_KEYS if k not in self.block]
        if missing:
            raise ValueError(f"HVG3DConfig.block lacks the CogVideoXBlock arguments {missing}")
        if self.points and not 1 <= self.num_centres <= self.num_points:
            raise ValueError(
                f"need 1 <= num_centres <= num_points, got {self.num_centres} and {self.num_points}"
            )
        if self.points and not 1 <= self.group_size <= self.num_points:
            raise ValueError(
                f"need 1 <= group_size <= num_points, got {self.group_size} and {self.num_points}"
            )

    @property
    def width(self) -> int:
        return int(self.block["num_attention_heads"]) * int(self.block["attention_head_dim"])

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> HVG3DConfig:
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown HVG-3D config keys {unknown}; known: {sorted(known)}")
        return cls(**data)

    @classmethod
    def for_transformer(cls, transformer, num_blocks: int = 18, **kwargs) -> HVG3DConfig:
        """The config matching a base ``CogVideoXTransformer3DModel``."""
        c = transformer.config
        if num_blocks > c.num_layers:
            raise ValueError(f"num_blocks (K) = {num_blocks} exceeds the base's {c.num_layers} blocks")
        if c.patch_size_t is not None:
            raise ValueError("CogVideoX 1.5 (patch_size_t set) is not supported; use CogVideoX-5B-I2V")
        block = {
            "num_attention_heads": c.num_attention_heads,
            "attention_head_dim": c.attention_head_dim,
            "time_embed_dim": c.time_embed_dim,
            "dropout": c.dropout,
            "activation_fn": c.activation_fn,
            "attention_bias": c.attention_bias,
            "norm_elementwise_affine": c.norm_elementwise_affine,
            "norm_eps": c.norm_eps,
        }
        return cls(
            num_blocks=num_blocks,
            block=block,
            patch_size=c.patch_size,
            temporal_compression=c.temporal_compression_ratio,
            **kwargs,
        )


@dataclass
class ControlCondition:
    """One batch of 3D conditions.

    Attributes:
        tracking_latents: (B, F_lat, 32, H/8, W/8) condition latents, or None (tracking branch off).
        points: (B, T, N, 3) float camera-frame metres, T video frames, or None (point branch off).
        points_label: (B, N) int64 0 object / 1 hand, or None.
        K: (B, 3, 3) or (3, 3) camera intrinsics in pixels of the video frames (needed with points).
    """

    tracking_latents: torch.Tensor | None = None
    points: torch.Tensor | None = None
    points_label: torch.Tensor | None = None
    K: torch.Tensor | None = None


def _argument(args, kwargs, name: str, position: int):
    if name in kwargs:
        return kwargs[name]
    return args[position] if len(args) > position else None


def _tile(tensor: torch.Tensor, batch: int) -> torch.Tensor:
    """Repeat a condition batch b to the transformer batch B (B = b × copies, e.g. [uncond; cond] for CFG)."""
    if tensor.shape[0] == batch:
        return tensor
    if batch % tensor.shape[0]:
        raise ValueError(f"condition batch {tensor.shape[0]} does not divide the transformer batch {batch}")
    return tensor.repeat((batch // tensor.shape[0],) + (1,) * (tensor.ndim - 1))


class HVG3DControlNet(nn.Module):
    """Trainable copies of the first K base blocks, zero-initialised in/out linears and the point branch."""

    def __init__(self, config: HVG3DConfig):
        super().__init__()
        from diffusers.models.transformers.cogvideox_transformer_3d import CogVideoXBlock

        self.config = config
        width = config.width
        self.blocks = nn.ModuleList(
            CogVideoXBlock(dim=width, **config.block) for _ in range(config.num_blocks)
        )
        self.in_linear = nn.Linear(width, width)
        self.out_linears = nn.ModuleList(nn.Linear(width, width) for _ in range(config.num_blocks))
        if config.points:
            self.point_tokenizer = PointTokenizer(
                config.num_centres, config.group_size, config.point_encoder_dim, config.point_token_dim
            )
            self.point_proj = nn.Linear(config.point_token_dim, width)
        else:
            self.point_tokenizer = None
            self.point_proj = None
        self.zero_init()
        self.use_tracking = True
        self.use_points = config.points
        self._base = None  # the attached transformer, kept outside the module tree (not in state_dict)
        self._handles: list = []
        self._condition: ControlCondition | None = None
        self._run: dict = {}
        self._point_cache = None

    # -- construction -----------------------------------------------------------------------------------------

    def zero_init(self) -> None:
        """Zero the in/out linears and the point projection (the model then equals its base exactly)."""
        linears = [self.in_linear, *self.out_linears] + (
            [self.point_proj] if self.point_proj is not None else []
        )
        for linear in linears:
            nn.init.zeros_(linear.weight)
            nn.init.zeros_(linear.bias)

    @classmethod
    def from_transformer(cls, transformer, num_blocks: int = 18, **kwargs) -> HVG3DControlNet:
        """A ControlNet for ``transformer`` with copies initialised from its first ``num_blocks`` blocks."""
        config = HVG3DConfig.for_transformer(transformer, num_blocks, **kwargs)
        parameter = next(transformer.parameters())
        with torch.device(parameter.device):
            model = cls(config)
        for copy_block, base_block in zip(model.blocks, transformer.transformer_blocks):
            copy_block.load_state_dict(base_block.state_dict())
        return model.to(parameter.dtype)

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Parameters a trainer optimises: copies, in/out linears, point tokenizer and projection (the base's
        parameters are not part of this module)."""
        return [p for p in self.parameters()]

    # -- attaching to a base ----------------------------------------------------------------------------------

    def check_base(self, transformer) -> None:
        """ValueError unless ``transformer`` has the blocks and width this ControlNet was made for."""
        c = transformer.config
        width = c.num_attention_heads * c.attention_head_dim
        if width != self.config.width or c.num_layers < self.config.num_blocks:
            raise ValueError(
                f"this HVG-3D ControlNet needs a base of width {self.config.width} with >= "
                f"{self.config.num_blocks} blocks; the transformer has width {width} and {c.num_layers} blocks"
            )

    def attach(self, transformer) -> None:
        """Register the hooks on ``transformer`` (frozen: its parameters get ``requires_grad=False``)."""
        if self._base is transformer:
            return
        if self._base is not None:
            raise ValueError("this ControlNet is already attached to another transformer; detach() it first")
        self.check_base(transformer)
        transformer.requires_grad_(False)
        handles = [
            transformer.register_forward_pre_hook(self._transformer_pre_hook, with_kwargs=True),
            transformer.transformer_blocks[0].register_forward_pre_hook(
                self._first_block_pre_hook, with_kwargs=True
            ),
        ]
        for i in range(self.config.num_blocks):
            hook = self._make_block_hook(i)
            handles.append(transformer.transformer_blocks[i].register_forward_hook(hook, with_kwargs=True))
        self._handles = handles
        # outside the module tree: nn.Module.__setattr__ would register the base as a submodule, putting its
        # parameters into parameters()/state_dict() and letting .to() cast the frozen base
        object.__setattr__(self, "_base", transformer)

    def detach(self) -> None:
        """Remove every hook: the transformer is the plain base again."""
        for handle in self._handles:
            handle.remove()
        self._handles, self._base, self._run = [], None, {}

    @property
    def attached(self) -> bool:
        return self._base is not None

    def set_condition(self, condition: ControlCondition | None) -> None:
        """The condition used by the next transformer calls (None: pass through, output = base).

        The control states of the last call stay until the next call starts: a checkpointed backward recomputes
        the blocks (and their hooks) from them after the forward has returned."""
        self._condition = condition
        self._point_cache = None

    @contextlib.contextmanager
    def conditioned(self, condition: ControlCondition | None):
        previous = self._condition
        self.set_condition(condition)
        try:
            yield self
        finally:
            self.set_condition(previous)

    # -- the forward a trainer calls --------------------------------------------------------------------------

    def forward(
        self,
        transformer,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        timestep: torch.Tensor,
        *,
        tracking_latents: torch.Tensor | None = None,
        points: torch.Tensor | None = None,
        points_label: torch.Tensor | None = None,
        K: torch.Tensor | None = None,  # noqa: N803
        ofs: torch.Tensor | None = None,
        image_rotary_emb=None,
    ) -> torch.Tensor:
        """Base + ControlNet prediction (B, F, C_out, h, w) for one batch.

        ``hidden_states`` (B, F, 32, H/8, W/8) noisy ‖ image latents, ``encoder_hidden_states`` (B, L, text dim),
        ``timestep`` (B,); conditions as in :class:`ControlCondition`. Attaches to ``transformer`` if needed.
        """
        self.attach(transformer)
        condition = ControlCondition(tracking_latents, points, points_label, K)
        with self.conditioned(condition):
            return transformer(
                hidden_states=hidden_states,
                encoder_hidden_states=encoder_hidden_states,
                timestep=timestep,
                ofs=ofs,
                image_rotary_emb=image_rotary_emb,
                return_dict=False,
            )[0]

    # -- condition tokens -------------------------------------------------------------------------------------

    def point_grid_tokens(self, condition: ControlCondition, grid: tuple[int, int, int]) -> torch.Tensor:
        """(b, F h w, 768) point tokens on the video-token grid ``grid`` = (F, h, w), before the projection."""
        if self.point_tokenizer is None:
            raise ValueError("this ControlNet has no point branch (config points=False)")
        points = condition.points
        if points is None or condition.K is None:
            raise ValueError("the point branch needs points (B, T, N, 3) and the camera K")
        if points.ndim != 4 or points.shape[-1] != 3:
            raise ValueError(f"points must be (B, T, N, 3), got {tuple(points.shape)}")
        b, t, n, _ = points.shape
        device = self.point_proj.weight.device
        flat = points.reshape(b * t, n, 3).to(device=device, dtype=torch.float32)
        labels = condition.points_label
        if labels is not None:
            labels = labels.to(device).long()[:, None].expand(b, t, n).reshape(b * t, n)
        tokens, centres = self.point_tokenizer(flat, labels)
        tokens = tokens.view(b, t, -1, tokens.shape[-1])
        centres = centres.view(b, t, -1, 3)
        cell = float(self.config.vae_spatial * self.config.patch_size)
        K = condition.K.to(device=device, dtype=torch.float32)  # noqa: N806
        return scatter_to_token_grid(tokens, centres, K, grid, (cell, cell), self.config.temporal_compression)

    def _condition_tokens(self, transformer, text: torch.Tensor, hidden: torch.Tensor):
        """(B, F h w, D) tracking (+ point) tokens, or None when no branch is active."""
        condition = self._condition
        batch, frames, _, height, width = hidden.shape
        p = self.config.patch_size
        grid = (frames, height // p, width // p)
        total = None
        if self.use_tracking and condition.tracking_latents is not None:
            latents = condition.tracking_latents.to(device=hidden.device, dtype=hidden.dtype)
            if latents.shape[0] != hidden.shape[0] and hidden.shape[0] % latents.shape[0]:
                raise ValueError(f"tracking latents batch {latents.shape[0]} vs transformer batch {batch}")
            if latents.shape[1:] != hidden.shape[1:]:
                raise ValueError(
                    f"tracking latents must be (B, {frames}, {hidden.shape[2]}, {height}, {width}) like the "
                    f"transformer input, got {tuple(latents.shape)}"
                )
            # The base's own (frozen) patch embedding; where a CPU offload keeps it off the device until the
            # transformer's forward, it runs there and the tokens come back.
            weight = transformer.patch_embed.proj.weight
            embedded = transformer.patch_embed(
                text[: latents.shape[0]].to(weight.device, weight.dtype),
                latents.to(weight.device, weight.dtype),
            )
            total = embedded[:, text.shape[1] :].to(hidden.device, hidden.dtype)
        if self.use_points and self.point_tokenizer is not None and condition.points is not None:
            if self._point_cache is None or self._point_cache[0] != (grid, torch.is_grad_enabled()):
                tokens = self.point_grid_tokens(condition, grid)
                self._point_cache = ((grid, torch.is_grad_enabled()), tokens)
            point_tokens = self.point_proj(self._point_cache[1]).to(hidden.dtype)
            total = point_tokens if total is None else _tile(total, point_tokens.shape[0]) + point_tokens
        return None if total is None else _tile(total, batch)

    # -- hooks ------------------------------------------------------------------------------------------------

    def _transformer_pre_hook(self, module, args, kwargs):
        self._run = {}
        if self._condition is None:
            return None
        hidden = _argument(args, kwargs, "hidden_states", 0)
        text = _argument(args, kwargs, "encoder_hidden_states", 1)
        tokens = self._condition_tokens(module, text, hidden)
        if tokens is not None:
            self._run["condition"] = tokens
        return None

    def _first_block_pre_hook(self, module, args, kwargs):
        condition = self._run.get("condition")
        if condition is None:
            return None
        video = _argument(args, kwargs, "hidden_states", 0)
        self._run[0] = self.in_linear(video + condition.to(video.dtype))
        return None

    def _make_block_hook(self, index: int):
        def hook(module, args, kwargs, output):
            control = self._run.get(index)
            if control is None:
                return None
            hidden, text = output
            temb = _argument(args, kwargs, "temb", 2)
            rotary = _argument(args, kwargs, "image_rotary_emb", 3)
            attention_kwargs = _argument(args, kwargs, "attention_kwargs", 4)
            control, _ = self.blocks[index](
                hidden_states=control,
                encoder_hidden_states=text,
                temb=temb,
                image_rotary_emb=rotary,
                attention_kwargs=attention_kwargs,
            )
            self._run[index + 1] = control
            if not torch.is_grad_enabled():
                self._run.pop(index, None)  # inference: only the current state is needed
            return hidden + self.out_linears[index](control), text

        return hook
