"""The learned triplane queries, flattened into a token sequence and folded back into planes.

Upstream Triplane1DTokenizer: one (3, C, p, p) parameter; token order is (plane, row, col).
"""

from __future__ import annotations

import torch
from torch import nn

from recond.triposr.config import TokenizerConfig


class TriplaneTokenizer(nn.Module):
    def __init__(self, config: TokenizerConfig) -> None:
        super().__init__()
        self.plane_size = config.plane_size
        self.num_channels = config.num_channels
        queries = torch.empty(3, config.num_channels, config.plane_size, config.plane_size)
        if not queries.is_meta:  # built on the meta device to load a checkpoint: no values to draw.
            # Drawing (normal_) or arithmetic on meta tensors goes through torch._refs, whose first
            # use imports torch._dynamo and sympy (~1.5 CPU-s at every daemon start, each Ray
            # actor's too, measured). empty().normal_() draws what torch.randn draws (at::randn
            # is the same call), so a seeded model is unchanged.
            queries = queries.normal_() / config.num_channels ** 0.5
        self.embeddings = nn.Parameter(queries)

    def forward(self, batch_size: int) -> torch.Tensor:
        """The query tokens [B, C, 3 * p * p] for a batch."""
        tokens = self.embeddings.permute(1, 0, 2, 3).reshape(self.num_channels, -1)
        return tokens.unsqueeze(0).expand(batch_size, -1, -1)

    def detokenize(self, tokens: torch.Tensor) -> torch.Tensor:
        """Tokens [B, C, 3 * p * p] -> triplanes [B, 3, C, p, p]."""
        batch = tokens.shape[0]
        planes = tokens.reshape(batch, self.num_channels, 3, self.plane_size, self.plane_size)
        return planes.permute(0, 2, 1, 3, 4)
