"""What the device part of a job hands to its host part: plain numbers, no model.

The device part (recond/pipeline/runner.py: load, background, encode, density grid) needs the
warm weights on their device; the host part (recond/pipeline/host.py: marching cubes to viewer)
is CPU work. Between them goes a :class:`DeviceOutput` of numpy arrays, bytes and frozen
dataclasses, so it pickles to another process or host (issue 14); job.json records its size.

The density grid is cut down to the box around the points at or above the surface level, one
cell of margin around them: every grid edge the surface crosses lies inside it, so marching
cubes on the box padded back with zeros (below any level) gives exactly the full grid's surface.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from recond.triposr.config import DecoderConfig, RendererConfig


@dataclass(frozen=True)
class DensityBox:
    """The part of a cubic density grid the surface can pass through, and where it sits."""

    resolution: int  # the full grid's size along each axis
    offset: tuple[int, int, int]
    values: np.ndarray  # float32, the box's grid points

    @classmethod
    def around_surface(cls, density_grid: np.ndarray, level: float) -> DensityBox:
        resolution = density_grid.shape[0]
        solid = np.nonzero(density_grid >= np.float32(level))
        if len(solid[0]) == 0:
            return cls(resolution, (0, 0, 0), np.zeros((0, 0, 0), dtype=np.float32))
        low = [max(int(axis.min()) - 1, 0) for axis in solid]
        high = [min(int(axis.max()) + 2, resolution) for axis in solid]
        box = density_grid[low[0]:high[0], low[1]:high[1], low[2]:high[2]]
        return cls(resolution, (low[0], low[1], low[2]), np.ascontiguousarray(box, dtype=np.float32))

    def full_grid(self) -> np.ndarray:
        """The whole grid again, zero outside the box (below the level, as it was there)."""
        grid = np.zeros((self.resolution,) * 3, dtype=np.float32)
        x, y, z = self.offset
        sx, sy, sz = self.values.shape
        grid[x:x + sx, y:y + sy, z:z + sz] = self.values
        return grid


@dataclass(frozen=True)
class DecoderWeights:
    """The model's colour/density decoder (a small MLP) and how its field reads the triplanes:
    all the host part needs of the model to colour vertices and bake the texture."""

    decoder: DecoderConfig
    renderer: RendererConfig
    state: dict[str, np.ndarray]  # the decoder's state_dict, float32

    @property
    def nbytes(self) -> int:
        return sum(array.nbytes for array in self.state.values())


@dataclass(frozen=True)
class DeviceOutput:
    """Everything the host part needs of one job, and what job.json says about the device part."""

    source_name: str  # the picture's file name
    source_folder: str  # the name of the inbox folder it lay in (the viewer's title: names.shown_file_name)
    source_bytes: bytes  # kept byte for byte in the result as source.<ext>
    sha256: str
    prepared: np.ndarray  # uint8 [H, W, 3]: the cut-out, framed picture the model saw (input.png)
    background: str  # the background method used
    warnings: list[str]
    scene_code: np.ndarray  # float32 [3, C, H, W]: the triplanes
    density: DensityBox
    decoder: DecoderWeights
    model_facts: dict[str, Any]  # model, device, dtype, and the model settings, for job.json
    stage_seconds: dict[str, float] = field(default_factory=dict)

    def sizes(self) -> dict[str, int]:
        """Bytes of each part of this hand-off, and their total (what crosses to the host part)."""
        sizes = {"picture": len(self.source_bytes), "prepared_picture": self.prepared.nbytes,
                 "scene_code": self.scene_code.nbytes, "density_box": self.density.values.nbytes,
                 "decoder": self.decoder.nbytes}
        return {**sizes, "total": sum(sizes.values())}

    def as_record(self) -> dict[str, Any]:
        """What went from the device part to the host part, for job.json."""
        return {"bytes": self.sizes(), "scene_code_shape": list(self.scene_code.shape),
                "density_grid_resolution": self.density.resolution,
                "density_box_shape": list(self.density.values.shape)}
