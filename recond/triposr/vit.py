"""A plain ViT encoder whose parameter names are those of transformers 4.x ``ViTModel``.

The official checkpoint stores DINO ViT-B/16 under these names, so owning the module (instead
of depending on transformers, whose names and position-embedding resizing changed in 5.x) keeps
both the checkpoint and the numbers stable.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from recond.triposr.config import ViTConfig


class PatchEmbeddings(nn.Module):
    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.projection = nn.Conv2d(config.num_channels, config.hidden_size,
                                    kernel_size=config.patch_size, stride=config.patch_size)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.projection(pixels).flatten(2).transpose(1, 2)


class Embeddings(nn.Module):
    """CLS token + patch tokens + position embeddings resized to the input's patch grid."""

    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        n_patches = (config.image_size // config.patch_size) ** 2
        self.patch_size = config.patch_size
        self.cls_token = nn.Parameter(torch.zeros(1, 1, config.hidden_size))
        self.position_embeddings = nn.Parameter(torch.zeros(1, n_patches + 1, config.hidden_size))
        self.patch_embeddings = PatchEmbeddings(config)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        height, width = pixels.shape[-2:]
        patches = self.patch_embeddings(pixels)
        cls = self.cls_token.expand(patches.shape[0], -1, -1)
        tokens = torch.cat([cls, patches], dim=1)
        return tokens + self.position_table(tokens.shape[1] - 1, height, width)

    def position_table(self, n_patches: int, height: int, width: int) -> torch.Tensor:
        """Position embeddings for an input of ``height`` x ``width`` pixels.

        Reproduces transformers 4.35 ``ViTEmbeddings.interpolate_pos_encoding``: a bicubic resize
        driven by ``scale_factor`` with the +0.1 offset (not by ``size``), which samples the
        kernel at slightly different places than newer versions; TripoSR was trained with it.
        """
        stored = self.position_embeddings.shape[1] - 1
        if n_patches == stored and height == width:
            return self.position_embeddings
        side = math.sqrt(stored)
        dim = self.position_embeddings.shape[-1]
        rows = height // self.patch_size + 0.1
        cols = width // self.patch_size + 0.1
        grid = self.position_embeddings[:, 1:].reshape(1, int(side), int(side), dim).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, scale_factor=(rows / side, cols / side), mode="bicubic",
                             align_corners=False)
        grid = grid.permute(0, 2, 3, 1).reshape(1, -1, dim)
        return torch.cat([self.position_embeddings[:, :1], grid], dim=1)


class SelfAttentionProjections(nn.Module):
    """query/key/value projections (the inner ``attention.attention`` of transformers)."""

    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        size = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.query = nn.Linear(size, size, bias=config.qkv_bias)
        self.key = nn.Linear(size, size, bias=config.qkv_bias)
        self.value = nn.Linear(size, size, bias=config.qkv_bias)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        batch, length, size = tokens.shape

        def heads(projected: torch.Tensor) -> torch.Tensor:
            return projected.view(batch, length, self.num_heads, -1).transpose(1, 2)

        mixed = F.scaled_dot_product_attention(heads(self.query(tokens)), heads(self.key(tokens)),
                                               heads(self.value(tokens)))
        return mixed.transpose(1, 2).reshape(batch, length, size)


class OutputProjection(nn.Module):
    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.dense = nn.Linear(in_features, out_features)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.dense(tokens)


class Attention(nn.Module):
    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.attention = SelfAttentionProjections(config)
        self.output = OutputProjection(config.hidden_size, config.hidden_size)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.output(self.attention(tokens))


class Layer(nn.Module):
    """Pre-norm encoder block: attention and an exact-GELU MLP, each with a residual."""

    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.attention = Attention(config)
        self.intermediate = OutputProjection(config.hidden_size, config.intermediate_size)
        self.output = OutputProjection(config.intermediate_size, config.hidden_size)
        self.layernorm_before = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.layernorm_after = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        tokens = tokens + self.attention(self.layernorm_before(tokens))
        hidden = F.gelu(self.intermediate(self.layernorm_after(tokens)))
        return tokens + self.output(hidden)


class Encoder(nn.Module):
    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.layer = nn.ModuleList(Layer(config) for _ in range(config.num_hidden_layers))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        for layer in self.layer:
            tokens = layer(tokens)
        return tokens


class Pooler(nn.Module):
    """Present only because the checkpoint holds its weights; TripoSR never uses its output."""

    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)


class ViTModel(nn.Module):
    """Images [B, 3, H, W] (normalised) -> last hidden state [B, 1 + patches, hidden]."""

    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.embeddings = Embeddings(config)
        self.encoder = Encoder(config)
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.pooler = Pooler(config)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.layernorm(self.encoder(self.embeddings(pixels)))
