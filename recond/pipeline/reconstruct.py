"""Reconstruct stage: prepared picture -> scene code -> coloured surface mesh (z up, model space)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import trimesh

from recond.config import JobSettings
from recond.errors import InputError
from recond.triposr.model import TripoSR


def reconstruct(model: TripoSR, prepared_rgb: np.ndarray, settings: JobSettings,
                report: Callable[[float], None]) -> tuple[torch.Tensor, trimesh.Trimesh]:
    """Encode the picture and extract the surface; an empty surface is the picture's fault."""
    scene_code = model.encode([prepared_rgb])[0]
    report(0.35)
    grid = model.density_grid(scene_code, settings.mc_resolution, settings.chunk_size)
    report(0.8)
    mesh = model.surface(scene_code, grid, settings.mc_threshold, settings.chunk_size)
    if len(mesh.faces) == 0:
        raise InputError(
            "the model found no object in this picture (its density never reaches the surface "
            f"threshold {settings.mc_threshold}); try a clearer photo of a single object"
        )
    return scene_code, mesh


def color_query(model: TripoSR, scene_code: torch.Tensor, chunk_size: int
                ) -> Callable[[np.ndarray], np.ndarray]:
    """The model's colour field as a plain function of points, for the texture bake."""

    def color_at(points: np.ndarray) -> np.ndarray:
        colors = model.query(scene_code, torch.from_numpy(np.ascontiguousarray(points, np.float32)),
                             chunk_size)["color"]
        return colors.float().cpu().numpy()

    return color_at
