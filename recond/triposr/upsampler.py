"""Doubles each triplane's resolution with one transposed convolution (upstream TriplaneUpsampleNetwork)."""

from __future__ import annotations

import torch
from torch import nn

from recond.triposr.config import UpsamplerConfig


class TriplaneUpsampler(nn.Module):
    """Triplanes [B, 3, Cin, p, p] -> scene codes [B, 3, Cout, 2p, 2p]."""

    def __init__(self, config: UpsamplerConfig) -> None:
        super().__init__()
        self.upsample = nn.ConvTranspose2d(config.in_channels, config.out_channels, kernel_size=2, stride=2)

    def forward(self, triplanes: torch.Tensor) -> torch.Tensor:
        batch, planes = triplanes.shape[:2]
        upsampled = self.upsample(triplanes.flatten(0, 1))
        return upsampled.unflatten(0, (batch, planes))
