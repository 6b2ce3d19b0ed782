"""Reconstruct stage: prepared picture -> scene code (the triplanes every later stage queries)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np
import torch

from recond.triposr.model import TripoSR


class PointField(Protocol):
    """What answers point queries of a scene: the whole model, or the host part's decoder alone."""

    def query(self, scene_code: torch.Tensor, points: torch.Tensor, chunk_size: int) -> dict[str, torch.Tensor]:
        ...


def reconstruct(model: TripoSR, prepared_rgb: np.ndarray, report: Callable[[float], None]) -> torch.Tensor:
    """Encode the picture, reporting after each transformer block."""
    return model.encode([prepared_rgb], progress=report)[0]


def color_query(model: PointField, scene_code: torch.Tensor, chunk_size: int
                ) -> Callable[[np.ndarray], np.ndarray]:
    """The model's colour field as a plain function of points, for vertex colours and the bake."""

    def color_at(points: np.ndarray) -> np.ndarray:
        colors = model.query(scene_code, torch.from_numpy(np.ascontiguousarray(points, np.float32)),
                             chunk_size)["color"]
        return colors.float().cpu().numpy()

    return color_at
