"""Anchor-frame self-attention for temporally consistent photo sequences (HOIDiffusion's zero-shot video).

All T frames of a sequence go through **one** UNet call. On the self-attention layers (``attn1``) of the UNet's
transformer blocks, each frame's queries attend to the keys/values of ``[anchor frame ; the frame itself]`` (2N
tokens; the anchor is the sequence's middle frame ``T // 2``), so every frame shares the anchor's appearance. The
anchor frame itself attends to its own tokens only, exactly as the stock processor does, so its output is the
stock one. Cross-attention (``attn2``) keeps the stock processor.

Batch layout (diffusers' classifier-free guidance): rows are ``[uncond frames ; cond frames]``; within a chunk the
frames of several sequences follow each other (``groups`` = their frame counts).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812
from diffusers.models.attention_processor import AttnProcessor2_0


class AnchorFrameAttnProcessor:
    """Self-attention where frame f of a sequence attends to [anchor frame ; frame f].

    Set ``groups`` (frame counts of the sequences in one CFG chunk, in order) before each pipeline call with
    :func:`set_frame_groups`; ``None`` = stock attention.
    """

    def __init__(self):
        self.groups: tuple[int, ...] | None = None
        self._stock = AttnProcessor2_0()
        self._index: dict = {}  # (groups, batch, device) -> (anchor rows, anchor-row ids, other-row ids)

    def _rows(self, batch: int, device):
        """Index tensors of one call layout, built once (no host sync or copy per attention call)."""
        key = (self.groups, batch, str(device))
        if key not in self._index:
            anchor = self.anchor_rows(batch, device)
            own = anchor == torch.arange(batch, device=device)
            self._index = {key: (anchor, torch.nonzero(own).flatten(), torch.nonzero(~own).flatten())}
        return self._index[key]

    def anchor_rows(self, batch: int, device) -> torch.Tensor:
        """(batch,) long: the row each row takes its anchor from."""
        per_chunk = sum(self.groups)
        if batch % per_chunk:
            raise ValueError(
                f"anchor attention: batch {batch} is not a multiple of the sequences' {per_chunk} frames "
                f"(groups {self.groups}); call set_frame_groups with the frame counts of this call"
            )
        within, start = [], 0
        for count in self.groups:
            within += [start + count // 2] * count
            start += count
        within = torch.tensor(within, device=device)
        chunks = torch.arange(batch // per_chunk, device=device).repeat_interleave(per_chunk) * per_chunk
        return chunks + within.repeat(batch // per_chunk)

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kw):
        if self.groups is None or encoder_hidden_states is not None or hidden_states.ndim != 3:
            return self._stock(attn, hidden_states, encoder_hidden_states, attention_mask, temb, **kw)
        if attention_mask is not None or attn.spatial_norm is not None or attn.group_norm is not None:
            raise ValueError("anchor attention supports plain self-attention layers only (SD-1.x UNet attn1)")
        residual = hidden_states
        batch, tokens, _ = hidden_states.shape
        anchor, anchor_ids, other_ids = self._rows(batch, hidden_states.device)
        heads = attn.heads

        query = attn.to_q(hidden_states)
        key = attn.to_k(hidden_states)
        value = attn.to_v(hidden_states)
        head_dim = key.shape[-1] // heads

        def split(x):
            return x.view(x.shape[0], -1, heads, head_dim).transpose(1, 2)

        out = torch.empty_like(query)
        rows = anchor_ids
        if len(rows):  # the anchor frames: their own tokens only, as the stock processor
            o = F.scaled_dot_product_attention(split(query[rows]), split(key[rows]), split(value[rows]))
            out[rows] = o.transpose(1, 2).reshape(len(rows), tokens, heads * head_dim).to(query.dtype)
        rows = other_ids
        if len(rows):
            k2 = torch.cat([key[anchor[rows]], key[rows]], dim=1)
            v2 = torch.cat([value[anchor[rows]], value[rows]], dim=1)
            o = F.scaled_dot_product_attention(split(query[rows]), split(k2), split(v2))
            out[rows] = o.transpose(1, 2).reshape(len(rows), tokens, heads * head_dim).to(query.dtype)

        out = attn.to_out[0](out)
        out = attn.to_out[1](out)
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor


def set_anchor_attention(unet, enabled: bool = True) -> list[AnchorFrameAttnProcessor]:
    """Install anchor attention on every ``attn1`` of ``unet`` (stock processors elsewhere); returns the anchor
    processors (to set their groups). ``enabled=False`` restores stock processors everywhere."""
    processors, anchors = {}, []
    for name in unet.attn_processors:
        if enabled and name.endswith("attn1.processor"):
            proc = AnchorFrameAttnProcessor()
            anchors.append(proc)
            processors[name] = proc
        else:
            processors[name] = AttnProcessor2_0()
    unet.set_attn_processor(processors)
    return anchors


def set_frame_groups(processors: list[AnchorFrameAttnProcessor], groups) -> None:
    """Tell the anchor processors the frame counts of the sequences in one CFG chunk of the next call."""
    value = tuple(int(g) for g in groups) if groups is not None else None
    if value is not None and (not value or min(value) < 1):
        raise ValueError(f"frame groups must be positive counts, got {groups}")
    for proc in processors:
        proc.groups = value
