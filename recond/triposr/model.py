"""TripoSR as one module: pictures -> scene codes (triplanes), and what can be asked of them.

The parts mirror upstream's TSR (tsr/system.py); the checkpoint's parameter names are the
attribute paths here. Dense work (grids, renders) is chunked and runs under inference mode, in
``compute_dtype`` via autocast (float32 on CPU; float16/bfloat16 on CUDA).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
import trimesh
from PIL import Image
from torch import nn

from recond.triposr import isosurface
from recond.triposr.backbone import Backbone
from recond.triposr.cameras import spherical_cameras
from recond.triposr.config import TripoSRConfig
from recond.triposr.decoder import NeRFDecoder
from recond.triposr.image_tokenizer import ImageTokenizer
from recond.triposr.preprocess import model_input
from recond.triposr.renderer import TriplaneField
from recond.triposr.tokenizer import TriplaneTokenizer
from recond.triposr.upsampler import TriplaneUpsampler

DEFAULT_CHUNK_SIZE = 65536

log = logging.getLogger(__name__)

Images = torch.Tensor | Sequence[np.ndarray | Image.Image | torch.Tensor]


class TripoSR(nn.Module):
    def __init__(self, config: TripoSRConfig) -> None:
        super().__init__()
        self.config = config
        self.compute_dtype = torch.float32
        self.image_tokenizer = ImageTokenizer(config.vit)
        self.tokenizer = TriplaneTokenizer(config.tokenizer)
        self.backbone = Backbone(config.backbone)
        self.post_processor = TriplaneUpsampler(config.post_processor)
        self.decoder = NeRFDecoder(config.decoder)
        self.field = TriplaneField(config.renderer, self.decoder)

    @classmethod
    def from_pretrained(cls, source: str | Path, device: str | torch.device = "cpu",
                        dtype: torch.dtype = torch.float32) -> TripoSR:
        """Load a model folder or Hugging Face id; raises ModelLoadError with one sentence."""
        from recond.triposr.loader import load_model  # the loader builds TripoSR: import late

        return load_model(str(source), torch.device(device), dtype)

    @property
    def radius(self) -> float:
        """Half-size of the box [-radius, radius]^3 the scene lives in."""
        return float(self.config.renderer.radius)

    @property
    def device(self) -> torch.device:
        return self.tokenizer.embeddings.device

    def encode(self, images: Images) -> torch.Tensor:
        """Prepared pictures ([B, H, W, 3] in [0, 1], or a list) -> scene codes [B, 3, C, 2p, 2p]."""
        with self._compute():
            pixels = model_input(images, self.config.cond_image_size).to(self.device)
            image_tokens = self.image_tokenizer(pixels)
            query_tokens = self.tokenizer(pixels.shape[0])
            triplane_tokens = self.backbone(query_tokens, image_tokens.transpose(1, 2))
            return self.post_processor(self.tokenizer.detokenize(triplane_tokens)).float()

    def query(self, scene_code: torch.Tensor, points: torch.Tensor,
              chunk_size: int = DEFAULT_CHUNK_SIZE) -> dict[str, torch.Tensor]:
        """Points [N, 3] -> density (raw) and density_act [N, 1], features (raw) and color [N, 3]."""
        with self._compute():
            return self.field.query(scene_code.to(self.device), points.to(self.device, torch.float32),
                                    chunk_size)

    def density_grid(self, scene_code: torch.Tensor, resolution: int,
                     chunk_size: int = DEFAULT_CHUNK_SIZE) -> torch.Tensor:
        """density_act on the R^3 grid spanning the box, indexed [ix, iy, iz], float32 on the CPU."""
        grid = torch.empty(resolution ** 3, dtype=torch.float32)
        start = 0
        with self._compute():
            code = scene_code.to(self.device)
            for points in isosurface.grid_point_chunks(resolution, self.radius, chunk_size):
                density = self.field.query(code, points.to(self.device), chunk_size)["density_act"]
                grid[start:start + len(points)] = density[:, 0].cpu()
                start += len(points)
        return grid.view(resolution, resolution, resolution)

    def extract_mesh(self, scene_code: torch.Tensor, resolution: int = 256, threshold: float = 25.0,
                     chunk_size: int = DEFAULT_CHUNK_SIZE) -> trimesh.Trimesh:
        """The surface density_act == threshold with vertex colours, z up, inside the box.

        A field that never crosses the threshold gives an empty mesh and a logged warning.
        """
        grid = self.density_grid(scene_code, resolution, chunk_size)
        return self.surface(scene_code, grid, threshold, chunk_size)

    def surface(self, scene_code: torch.Tensor, density_grid: torch.Tensor, threshold: float = 25.0,
                chunk_size: int = DEFAULT_CHUNK_SIZE) -> trimesh.Trimesh:
        """Marching cubes on a :meth:`density_grid`, vertices coloured by querying the field there."""
        grid = density_grid.detach().cpu().float().numpy()
        unit_vertices, faces = isosurface.marching_cubes(grid, threshold)
        if len(faces) == 0:
            log.warning("The density field never crosses the surface threshold %s (grid values %.4g to "
                        "%.4g), so the mesh is empty.", threshold, float(grid.min()), float(grid.max()))
            return trimesh.Trimesh()
        vertices = isosurface.unit_to_box(torch.from_numpy(unit_vertices), self.radius)
        colours = self.query(scene_code, vertices, chunk_size)["color"].cpu().numpy()
        return trimesh.Trimesh(vertices=vertices.numpy(), faces=faces, vertex_colors=colours)

    def render(self, scene_code: torch.Tensor, n_views: int, elevation_deg: float = 0.0,
               camera_distance: float = 1.9, fovy_deg: float = 40.0, height: int = 256,
               width: int = 256, chunk_size: int = DEFAULT_CHUNK_SIZE) -> torch.Tensor:
        """Volume renders from cameras circling the object: [n_views, H, W, 3] float32 in [0, 1]."""
        rays_o, rays_d = spherical_cameras(n_views, elevation_deg, camera_distance, fovy_deg, height, width)
        with self._compute():
            code = scene_code.to(self.device)
            views = [self.field.render_rays(code, origin.to(self.device), direction.to(self.device),
                                            chunk_size).cpu()
                     for origin, direction in zip(rays_o, rays_d)]
        return torch.stack(views)

    @contextlib.contextmanager
    def _compute(self) -> Iterator[None]:
        half = self.compute_dtype != torch.float32
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=self.compute_dtype, enabled=half):
            yield
