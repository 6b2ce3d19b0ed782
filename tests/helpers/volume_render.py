"""Upstream TripoSR's volume renderer, kept for the tests only: it checks the port's field
against upstream's renders (golden sets); the pipeline rasterises meshes instead.

Cameras as upstream tsr/utils.py get_spherical_cameras, with the cross products taken along the
xyz axis explicitly: upstream omits ``dim`` and gets wrong cameras for 3 views. Compositing as
upstream tsr/models/nerf_renderer.py (midpoint samples inside the box; the step size is
1 / samples in normalised ray parameter). Unlike upstream, rays that miss the box simply render
the white background.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from recond.triposr.model import TripoSR
from recond.triposr.renderer import TriplaneField

BOX_SHRINK = 1e-3  # upstream tightens the box so intersections land inside it
MIN_DIRECTION = 1e-6
MIN_RAY_LENGTH = 0.01
TRANSMITTANCE_EPS = 1e-10


def render(model: TripoSR, scene_code: torch.Tensor, n_views: int, elevation_deg: float = 0.0,
           camera_distance: float = 1.9, fovy_deg: float = 40.0, height: int = 256,
           width: int = 256, chunk_size: int = 65536) -> torch.Tensor:
    """Volume renders from cameras circling the object: [n_views, H, W, 3] float32 in [0, 1]."""
    rays_o, rays_d = spherical_cameras(n_views, elevation_deg, camera_distance, fovy_deg, height, width)
    with torch.inference_mode():
        views = [render_rays(model.field, scene_code, origin, direction, chunk_size)
                 for origin, direction in zip(rays_o, rays_d)]
    return torch.stack(views)


def spherical_cameras(n_views: int, elevation_deg: float, camera_distance: float, fovy_deg: float,
                      height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Ray origins and unit directions, each [n_views, height, width, 3]; azimuths evenly from 0."""
    azimuth = torch.linspace(0, 360.0, n_views + 1)[:n_views] * math.pi / 180
    elevation = torch.full_like(azimuth, elevation_deg) * math.pi / 180
    distance = torch.full_like(azimuth, camera_distance)
    positions = torch.stack([distance * torch.cos(elevation) * torch.cos(azimuth),
                             distance * torch.cos(elevation) * torch.sin(azimuth),
                             distance * torch.sin(elevation)], dim=-1)
    world_up = torch.tensor([0.0, 0.0, 1.0]).expand(n_views, 3)
    lookat = F.normalize(-positions, dim=-1)
    right = F.normalize(torch.linalg.cross(lookat, world_up, dim=-1), dim=-1)
    up = F.normalize(torch.linalg.cross(right, lookat, dim=-1), dim=-1)
    rotation = torch.stack([right, up, -lookat], dim=-1)  # camera-to-world, columns
    fovy = torch.full_like(azimuth, fovy_deg) * math.pi / 180
    focal = 0.5 * height / torch.tan(0.5 * fovy)
    directions = pixel_directions(height, width).expand(n_views, height, width, 3).clone()
    directions[..., :2] = directions[..., :2] / focal[:, None, None, None]
    rays_d = (directions[..., None, :] * rotation[:, None, None, :, :]).sum(-1)
    rays_o = positions[:, None, None, :].expand(rays_d.shape)
    return rays_o, F.normalize(rays_d, dim=-1)


def pixel_directions(height: int, width: int) -> torch.Tensor:
    """Camera-space directions through pixel centres at unit focal length, rows top to bottom."""
    columns, rows = torch.meshgrid(torch.arange(width, dtype=torch.float32) + 0.5,
                                   torch.arange(height, dtype=torch.float32) + 0.5, indexing="xy")
    return torch.stack([columns - width / 2, -(rows - height / 2), -torch.ones_like(columns)], dim=-1)


def render_rays(field: TriplaneField, scene_code: torch.Tensor, rays_o: torch.Tensor,
                rays_d: torch.Tensor, chunk_size: int) -> torch.Tensor:
    """Rays [..., 3] -> colours [..., 3] over a white background."""
    shape = rays_o.shape[:-1]
    rays_o, rays_d = rays_o.reshape(-1, 3), rays_d.reshape(-1, 3)
    t_near, t_far, valid = intersect_box(rays_o, rays_d, field.config.radius)
    colour = torch.ones(rays_o.shape[0], 3, dtype=torch.float32, device=rays_o.device)
    hits = valid.nonzero()[:, 0]
    # whole rays per chunk, so at most ~chunk_size samples are alive at once
    for group in hits.split(max(1, chunk_size // field.config.num_samples_per_ray)):
        colour[group] = _composite(field, scene_code, rays_o[group], rays_d[group],
                                   t_near[group], t_far[group], chunk_size)
    return colour.reshape(*shape, 3)


def _composite(field: TriplaneField, scene_code: torch.Tensor, rays_o: torch.Tensor,
               rays_d: torch.Tensor, t_near: torch.Tensor, t_far: torch.Tensor, chunk_size: int) -> torch.Tensor:
    n_samples = field.config.num_samples_per_ray
    t_vals = torch.linspace(0, 1, n_samples + 1, device=rays_o.device)
    t_mid = (t_vals[:-1] + t_vals[1:]) / 2.0
    steps = t_vals[1:] - t_vals[:-1]
    depths = t_near[:, None] * (1 - t_mid[None]) + t_far[:, None] * t_mid[None]
    points = rays_o[:, None, :] + depths[..., None] * rays_d[:, None, :]
    out = field.query(scene_code, points.reshape(-1, 3), chunk_size)
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
