"""Image -> tokens: ImageNet normalisation, then the DINO ViT (upstream DINOSingleImageTokenizer).

Every token of the last hidden state (CLS first, then patches row-major) is kept, because the
backbone cross-attends to all of them (upstream tsr/models/tokenizers/image.py).
"""

from __future__ import annotations

import torch
from torch import nn

from recond.triposr.config import ViTConfig
from recond.triposr.vit import ViTModel

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ImageTokenizer(nn.Module):
    """Images [B, 3, H, W] in [0, 1] -> image tokens [B, hidden, 1 + patches]."""

    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.model = ViTModel(config)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Normalised in float32, then handed to the ViT in the dtype of its weights."""
        # Constants, not buffers: upstream's are non-persistent, so the checkpoint has none.
        mean = torch.tensor(IMAGENET_MEAN, device=images.device).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=images.device).view(1, 3, 1, 1)
        normalised = (images - mean) / std
        return self.model(normalised.to(self.model.layernorm.weight.dtype)).transpose(1, 2)
