"""The 1D transformer that turns triplane query tokens into triplane features.

Each block attends to itself, then to the image tokens, then applies a GEGLU feed-forward
(upstream tsr/models/transformer/transformer_1d.py and its diffusers-style BasicTransformerBlock);
names follow the checkpoint (``attn1``, ``attn2``, ``ff.net.0.proj``, ...).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from recond.triposr.config import BackboneConfig

LAYER_NORM_EPS = 1e-5
GROUP_NORM_EPS = 1e-6
FEED_FORWARD_MULTIPLIER = 4


class Attention(nn.Module):
    """Multi-head attention; q/k/v without bias, output projection with bias."""

    def __init__(self, query_dim: int, context_dim: int, heads: int, head_dim: int) -> None:
        super().__init__()
        inner = heads * head_dim
        self.heads = heads
        self.to_q = nn.Linear(query_dim, inner, bias=False)
        self.to_k = nn.Linear(context_dim, inner, bias=False)
        self.to_v = nn.Linear(context_dim, inner, bias=False)
        # A ModuleList so the checkpoint's "to_out.0" names fit (index 1 was a p=0 dropout).
        self.to_out = nn.ModuleList([nn.Linear(inner, query_dim)])

    def forward(self, tokens: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        batch = tokens.shape[0]

        def heads(projected: torch.Tensor) -> torch.Tensor:
            return projected.view(batch, projected.shape[1], self.heads, -1).transpose(1, 2)

        mixed = F.scaled_dot_product_attention(heads(self.to_q(tokens)), heads(self.to_k(context)),
                                               heads(self.to_v(context)))
        return self.to_out[0](mixed.transpose(1, 2).flatten(2))


class GEGLU(nn.Module):
    """Linear to twice the width; the first half is the value, GELU(second half) the gate."""

    def __init__(self, dim_in: int, dim_out: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out * 2)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        value, gate = self.proj(tokens).chunk(2, dim=-1)
        return value * F.gelu(gate)


class FeedForward(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        inner = dim * FEED_FORWARD_MULTIPLIER
        # Index 1 held a p=0 dropout upstream; Identity keeps the checkpoint's "net.2" name.
        self.net = nn.Sequential(GEGLU(dim, inner), nn.Identity(), nn.Linear(inner, dim))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.net(tokens)


class TransformerBlock(nn.Module):
    def __init__(self, config: BackboneConfig) -> None:
        super().__init__()
        dim, heads, head_dim = config.inner_dim, config.num_attention_heads, config.attention_head_dim
        self.norm1 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.attn1 = Attention(dim, dim, heads, head_dim)
        self.norm2 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.attn2 = Attention(dim, config.cross_attention_dim, heads, head_dim)
        self.norm3 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.ff = FeedForward(dim)

    def forward(self, tokens: torch.Tensor, image_tokens: torch.Tensor) -> torch.Tensor:
        normed = self.norm1(tokens)
        tokens = tokens + self.attn1(normed, normed)
        tokens = tokens + self.attn2(self.norm2(tokens), image_tokens)
        return tokens + self.ff(self.norm3(tokens))


class Backbone(nn.Module):
    """Tokens [B, C, N] + image tokens [B, T, D] -> tokens [B, C, N], residual to the input."""

    def __init__(self, config: BackboneConfig) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(config.norm_num_groups, config.in_channels, eps=GROUP_NORM_EPS)
        self.proj_in = nn.Linear(config.in_channels, config.inner_dim)
        self.transformer_blocks = nn.ModuleList(TransformerBlock(config) for _ in range(config.num_layers))
        self.proj_out = nn.Linear(config.inner_dim, config.in_channels)

    def forward(self, tokens: torch.Tensor, image_tokens: torch.Tensor) -> torch.Tensor:
        hidden = self.proj_in(self.norm(tokens).transpose(1, 2))
        for block in self.transformer_blocks:
            hidden = block(hidden, image_tokens)
        return self.proj_out(hidden).transpose(1, 2) + tokens
