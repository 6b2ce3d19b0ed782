"""Rays of cameras on a circle around the object, looking at the origin (z up).

Same camera model as upstream tsr/utils.py get_spherical_cameras, with the cross products
taken along the xyz axis explicitly: upstream omits ``dim`` and gets wrong cameras for 3 views.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


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
