"""The triplane field: sample a point's features from the three planes and decode them.

Conventions follow upstream tsr/models/nerf_renderer.py (plane order xy, xz, yz; grid_sample with
align_corners=False and zero padding); every dense query is chunked to bound memory. Upstream's
volume renderer is not part of the pipeline (turntables rasterise the mesh); the golden tests
keep a copy of it in tests/volume_render.py to check this field against upstream's renders.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from recond.triposr.config import RendererConfig
from recond.triposr.decoder import NeRFDecoder

DENSITY_ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "exp": torch.exp,
    "trunc_exp": torch.exp,  # upstream's trunc_exp only clamps the gradient; forward is exp
    "sigmoid": torch.sigmoid,
    "softplus": F.softplus,
    "relu": torch.relu,
    "none": lambda density: density,
}


class TriplaneField:
    """Point queries of one scene's triplanes through the decoder."""

    def __init__(self, config: RendererConfig, decoder: NeRFDecoder) -> None:
        if config.feature_reduction not in ("concat", "mean"):
            raise ValueError(f"feature_reduction '{config.feature_reduction}' is not concat or mean")
        if config.density_activation not in DENSITY_ACTIVATIONS:
            raise ValueError(f"density_activation '{config.density_activation}' is not supported")
        self.config = config
        self.decoder = decoder

    def query(self, scene_code: torch.Tensor, points: torch.Tensor, chunk_size: int) -> dict[str, torch.Tensor]:
        """Points [N, 3] in the box -> density/density_act [N, 1], features/color [N, 3]."""
        parts = [self._query_chunk(scene_code, chunk) for chunk in points.split(chunk_size)]
        if not parts:
            parts = [self._query_chunk(scene_code, points)]
        return {key: torch.cat([part[key] for part in parts]) for key in parts[0]}

    def _query_chunk(self, scene_code: torch.Tensor, points: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.decoder(self.features(scene_code, points))
        activation = DENSITY_ACTIVATIONS[self.config.density_activation]
        out["density_act"] = activation(out["density"] + self.config.density_bias)
        out["color"] = torch.sigmoid(out["features"])
        return out

    def features(self, scene_code: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        """Bilinear plane features [N, 3C] (concat, plane-major) or [N, C] (mean) for points [N, 3]."""
        radius = self.config.radius
        # upstream scale_tensor, same order of operations: [-r, r] -> [0, 1] -> [-1, 1]
        unit = (points - (-radius)) / (radius - (-radius)) * 2 - 1
        pairs = torch.stack([unit[:, [0, 1]], unit[:, [0, 2]], unit[:, [1, 2]]])  # [3, N, 2]
        sampled = F.grid_sample(scene_code.to(unit.dtype), pairs[:, None], mode="bilinear",
                                align_corners=False)  # [3, C, 1, N]
        per_plane = sampled[:, :, 0].permute(2, 0, 1)  # [N, 3, C]
        if self.config.feature_reduction == "mean":
            return per_plane.mean(dim=1)
        return per_plane.flatten(1)
