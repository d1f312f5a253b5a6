"""A small causal Transformer baseline (pre-norm, sized for a CPU).

Tokens are the inputs ``(tau_{s+1}, x_s)`` embedded linearly (the normalised time is an input, so
no positional table is needed and times past the training window stay meaningful); each token
attends to itself and every earlier one; a linear read-out predicts ``x_{s+1} - x_s``.

Autoregressive steps reuse the keys and values of earlier tokens (a cache). While training, the
attention of a step is recomputed in the backward pass instead of storing the concatenated
cache of every step (``torch.utils.checkpoint``): memory grows linearly with the sequence
length, not quadratically.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from warpphys.baselines.base import StepBaseline


def _attend_cached(q, *kv):
    """Attention of the newest queries ``q (B, h, 1, e)`` over cached key/value chunks, each
    ``(S_i, B, h, e)`` (time first, so that joining them is one contiguous copy)."""
    n = len(kv) // 2
    keys = torch.cat(kv[:n], 0).permute(1, 2, 0, 3)
    values = torch.cat(kv[n:], 0).permute(1, 2, 0, 3)
    return F.scaled_dot_product_attention(q, keys, values)


MERGE = 16


def _merge(chunks: list) -> list:
    """Join the last ``MERGE`` one-token chunks into one once there are that many, so that a
    step joins (and its backward splits) a few blocks instead of one chunk per earlier token."""
    tail = chunks[-MERGE:]
    if len(tail) == MERGE and all(c.shape[0] == 1 for c in tail):
        return chunks[:-MERGE] + [torch.cat(tail, 0)]
    return chunks


class Block(nn.Module):
    """Pre-norm causal self-attention and MLP, with a key/value cache."""

    def __init__(self, d_model: int, heads: int, ff: int):
        super().__init__()
        if d_model % heads:
            raise ValueError(f"d_model = {d_model} must be a multiple of heads = {heads}")
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.mlp = nn.Sequential(nn.Linear(d_model, ff), nn.GELU(), nn.Linear(ff, d_model))

    def forward(self, h: torch.Tensor, cache):
        """h: (B, S, d_model); cache: None or ([keys], [values]) of earlier tokens, each chunk
        (S_i, B, heads, e). With a cache, S must be 1."""
        B, S, D = h.shape
        qkv = self.qkv(self.norm1(h)).view(B, S, 3, self.heads, -1)
        q = qkv[:, :, 0].transpose(1, 2)  # (B, heads, S, e)
        k = qkv[:, :, 1].transpose(0, 1).contiguous()  # (S, B, heads, e)
        v = qkv[:, :, 2].transpose(0, 1).contiguous()
        if cache is None:
            att = F.scaled_dot_product_attention(q, k.permute(1, 2, 0, 3), v.permute(1, 2, 0, 3),
                                                 is_causal=True)
            cache = ([k], [v])
        else:
            if S != 1:
                raise ValueError("a cached step takes one token at a time")
            cache = (_merge(cache[0] + [k]), _merge(cache[1] + [v]))
            if torch.is_grad_enabled() and len(cache[0]) > 2:
                att = checkpoint(_attend_cached, q, *cache[0], *cache[1], use_reentrant=False)
            else:
                att = _attend_cached(q, *cache[0], *cache[1])
        h = h + self.proj(att.transpose(1, 2).reshape(B, S, D))
        return h + self.mlp(self.norm2(h)), cache


class CausalTransformer(StepBaseline):
    """Causal Transformer baseline.

    Args:
        dim: state size d.
        d_model: token width; heads: attention heads; layers: blocks; ff: MLP hidden width.
    """

    def __init__(self, dim: int, *, d_model: int = 32, heads: int = 4, layers: int = 2,
                 ff: int = 64):
        super().__init__(dim, d_model=int(d_model), heads=int(heads), layers=int(layers),
                         ff=int(ff))
        self.embed = nn.Linear(1 + dim, int(d_model))
        self.blocks = nn.ModuleList(Block(int(d_model), int(heads), int(ff))
                                    for _ in range(int(layers)))
        self.norm = nn.LayerNorm(int(d_model))
        self.readout = nn.Linear(int(d_model), dim)
        with torch.no_grad():
            self.readout.weight.mul_(0.1)
            self.readout.bias.zero_()

    def sequence(self, x_in, tau, state):
        B, S, _ = x_in.shape
        h = self.embed(torch.cat([tau.to(x_in).view(1, S, 1).expand(B, S, 1), x_in], -1))
        state = [None] * len(self.blocks) if state is None else state
        new = []
        for block, cache in zip(self.blocks, state, strict=True):
            h, cache = block(h, cache)
            new.append(cache)
        h = self.norm(h)
        return self.readout(h), new, h
