"""The NeRF MLP: triplane features of a point -> raw density and raw colour features.

Upstream NeRFMLP: Linear/activation pairs, then a Linear to 4 outputs (channel 0 density,
1..3 colour); the ``layers.N`` indices of the checkpoint count the activations too.
"""

from __future__ import annotations

import torch
from torch import nn

from recond.triposr.config import DecoderConfig

ACTIVATIONS = {"silu": nn.SiLU, "relu": nn.ReLU}


class NeRFDecoder(nn.Module):
    def __init__(self, config: DecoderConfig) -> None:
        super().__init__()
        if config.activation not in ACTIVATIONS:
            raise ValueError(f"decoder activation '{config.activation}' is not one of {sorted(ACTIVATIONS)}")
        activation = ACTIVATIONS[config.activation]
        widths = [config.in_channels] + [config.n_neurons] * config.n_hidden_layers
        stack: list[nn.Module] = []
        for width_in, width_out in zip(widths[:-1], widths[1:]):
            stack += [nn.Linear(width_in, width_out), activation()]
        stack.append(nn.Linear(config.n_neurons, 4))
        self.layers = nn.Sequential(*stack)

    def forward(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        """Features [N, in_channels] -> {'density': [N, 1], 'features': [N, 3]} (both raw)."""
        out = self.layers(features)
        return {"density": out[..., :1], "features": out[..., 1:4]}
