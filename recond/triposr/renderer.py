"""The triplane NeRF: sample a point's features from the three planes, decode, and composite rays.

Conventions follow upstream tsr/models/nerf_renderer.py (plane order xy, xz, yz; grid_sample with
align_corners=False and zero padding; midpoint samples inside the box; the step size is
1 / samples in normalised ray parameter). Unlike upstream, rays that miss the box simply
render the white background, and every dense query is chunked to bound memory.
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
BOX_SHRINK = 1e-3  # upstream tightens the box so intersections land inside it
MIN_DIRECTION = 1e-6
MIN_RAY_LENGTH = 0.01
TRANSMITTANCE_EPS = 1e-10


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
        # activations in float32 even under autocast: exp of a half-precision density overflows
        out = {key: value.float() for key, value in self.decoder(self.features(scene_code, points)).items()}
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

    def render_rays(self, scene_code: torch.Tensor, rays_o: torch.Tensor, rays_d: torch.Tensor,
                    chunk_size: int) -> torch.Tensor:
        """Rays [..., 3] -> colours [..., 3] over a white background."""
        shape = rays_o.shape[:-1]
        rays_o, rays_d = rays_o.reshape(-1, 3), rays_d.reshape(-1, 3)
        t_near, t_far, valid = intersect_box(rays_o, rays_d, self.config.radius)
        colour = torch.ones(rays_o.shape[0], 3, dtype=torch.float32, device=rays_o.device)
        hits = valid.nonzero()[:, 0]
        # whole rays per chunk, so at most ~chunk_size samples are alive at once
        for group in hits.split(max(1, chunk_size // self.config.num_samples_per_ray)):
            colour[group] = self._composite(scene_code, rays_o[group], rays_d[group],
                                            t_near[group], t_far[group], chunk_size)
        return colour.reshape(*shape, 3)

    def _composite(self, scene_code: torch.Tensor, rays_o: torch.Tensor, rays_d: torch.Tensor,
                   t_near: torch.Tensor, t_far: torch.Tensor, chunk_size: int) -> torch.Tensor:
        n_samples = self.config.num_samples_per_ray
        t_vals = torch.linspace(0, 1, n_samples + 1, device=rays_o.device)
        t_mid = (t_vals[:-1] + t_vals[1:]) / 2.0
        steps = t_vals[1:] - t_vals[:-1]
        depths = t_near[:, None] * (1 - t_mid[None]) + t_far[:, None] * t_mid[None]
        points = rays_o[:, None, :] + depths[..., None] * rays_d[:, None, :]
        out = self.query(scene_code, points.reshape(-1, 3), chunk_size)
        density = out["density_act"].reshape(-1, n_samples)
        color = out["color"].reshape(-1, n_samples, 3)
        alpha = 1 - torch.exp(-steps * density)
        transmittance = torch.cumprod(1 - alpha[:, :-1] + TRANSMITTANCE_EPS, dim=-1)
        transmittance = torch.cat([torch.ones_like(alpha[:, :1]), transmittance], dim=-1)
        weights = alpha * transmittance
        rgb = (weights[..., None] * color).sum(dim=-2)
        return rgb + (1 - weights.sum(dim=-1))[:, None]


def intersect_box(rays_o: torch.Tensor, rays_d: torch.Tensor,
                  radius: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Entry/exit ray parameters for the box [-radius, radius]^3 (slightly shrunk) and a hit mask."""
    directions = torch.where(rays_d.abs() < MIN_DIRECTION, torch.full_like(rays_d, MIN_DIRECTION), rays_d)
    # float32 like upstream, which shrinks a float32 tensor of the box bounds
    bound = torch.tensor(radius, dtype=torch.float32, device=rays_o.device) * (1.0 - BOX_SHRINK)
    to_upper = (bound - rays_o) / directions
    to_lower = (-bound - rays_o) / directions
    t_near = torch.minimum(to_upper, to_lower).amax(dim=-1).clamp_min(0.0)
    t_far = torch.maximum(to_upper, to_lower).amin(dim=-1)
    return t_near, t_far, t_far - t_near > MIN_RAY_LENGTH
