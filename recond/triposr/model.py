"""TripoSR as one module: pictures -> scene codes (triplanes), and what can be asked of them.

The parts mirror upstream's TSR (tsr/system.py); the checkpoint's parameter names are the
attribute paths here. The model stays a model: encode, point queries and the density grid.
Meshing is a pipeline stage (recond/pipeline/mesh.py), as the style guide asks of upstream's
TSR, which meshes and renders inside the model class. Dense work is chunked and runs under
inference mode. The encoder parts (ENCODER_PARTS) compute in ``compute_dtype`` and store their
weights in it; everything after the scene codes computes in float32.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from recond.errors import ModelLoadError
from recond.triposr import isosurface, loader
from recond.triposr.backbone import Backbone
from recond.triposr.config import TripoSRConfig, load_config
from recond.triposr.decoder import NeRFDecoder
from recond.triposr.image_tokenizer import ImageTokenizer
from recond.triposr.preprocess import model_input
from recond.triposr.renderer import TriplaneField
from recond.triposr.tokenizer import TriplaneTokenizer
from recond.triposr.upsampler import TriplaneUpsampler

# Points per decoder call: 8,192 points keep a layer's activations (2 MB) within a core's L2
# cache. On bench_chair's 256^3 grid that took 20.5 s against 27.2 s with 65,536 on a quiet
# machine (issue 7); one thread here: 1.6 us/point against 1.8 (benchmarks/bench_density_grid.py).
DEFAULT_CHUNK_SIZE = 8192

# The parts that gain from half precision: the ViT, the transformer and the upsampler are all of
# the encode's time and 99.2% of the weights. Stored and computed in bfloat16 on a CPU with
# native bfloat16 they take ~half float32's time and memory (issue 16). The decoder (41k
# parameters), the learned triplane queries, exp of the density, the grid and the colours stay
# float32: exp of a half-precision density overflows, and the surface sits on its level.
ENCODER_PARTS = ("image_tokenizer.", "backbone.", "post_processor.")

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
        """Load a model folder or Hugging Face id; raises ModelLoadError with one sentence.

        The model is built on the meta device and adopts the checkpoint's memory-mapped tensors
        (no second copy). They are paged in here (loader.page_in), so loading pays for the disk
        and the first encode costs what a warm one does (a lazily paged checkpoint doubled it,
        issue 7). With a ``dtype`` other than float32, ENCODER_PARTS are converted to it tensor
        by tensor while loading (loader.store_as), never holding the float32 copy as well.
        """
        files = loader.locate_files(str(source))
        config = load_config(files.config, files.vit_config)
        try:
            with torch.device("meta"):
                model = cls(config)
        except ValueError as exc:
            raise ModelLoadError(
                f"{files.config} describes a model this port cannot build ({exc}).") from None
        state = loader.read_state_dict(
            files.weights, lambda key: dtype if key.startswith(ENCODER_PARTS) else torch.float32)
        loader.check_fit(model.state_dict(), state, files.weights)
        model.load_state_dict(state, strict=True, assign=True)  # assign: the state's dtypes too
        model.to(device=torch.device(device))
        model.compute_dtype = dtype
        return model.eval()

    @property
    def radius(self) -> float:
        """Half-size of the box [-radius, radius]^3 the scene lives in."""
        return float(self.config.renderer.radius)

    @property
    def device(self) -> torch.device:
        return self.tokenizer.embeddings.device

    def encode(self, images: Images, progress: Callable[[float], None] | None = None) -> torch.Tensor:
        """Prepared pictures ([B, H, W, 3] in [0, 1], or a list) -> scene codes [B, 3, C, 2p, 2p].

        ``progress`` hears the fraction of transformer blocks done: on a CPU the full-size
        forward takes ~20 s, and a report per block keeps a job's progress moving. The encoder
        parts compute in the dtype their weights are stored in (compute_dtype): plainly, not
        under autocast, which on a CPU re-casts every weight on each call.
        """
        with torch.inference_mode(), self._block_progress(progress):
            pixels = model_input(images, self.config.cond_image_size).to(self.device)
            image_tokens = self.image_tokenizer(pixels)
            query_tokens = self.tokenizer(pixels.shape[0]).to(self.compute_dtype)
            triplane_tokens = self.backbone(query_tokens, image_tokens.transpose(1, 2))
            return self.post_processor(self.tokenizer.detokenize(triplane_tokens)).float()

    def query(self, scene_code: torch.Tensor, points: torch.Tensor,
              chunk_size: int = DEFAULT_CHUNK_SIZE) -> dict[str, torch.Tensor]:
        """Points [N, 3] -> density (raw) and density_act [N, 1], features (raw) and color [N, 3]."""
        with torch.inference_mode():
            return self.field.query(scene_code.to(self.device), points.to(self.device, torch.float32),
                                    chunk_size)

    def density_grid(self, scene_code: torch.Tensor, resolution: int,
                     chunk_size: int = DEFAULT_CHUNK_SIZE, level: float | None = None,
                     progress: Callable[[float], None] | None = None,
                     max_refined_share: float | None = isosurface.MAX_REFINED_SHARE) -> torch.Tensor:
        """density_act on the R^3 grid spanning the box, indexed [ix, iy, iz], float32 on the CPU.

        Without ``level`` every grid point is evaluated (upstream's grid). With it, the grid is
        evaluated coarse to fine: exact wherever the surface density_act == level can pass,
        elsewhere only on the right side of the level (isosurface.refined_density_grid). A field
        so noisy that refining it would pass ``max_refined_share`` of the grid (None: no bound)
        comes back as a coarser grid instead, so a bad picture costs what a good one does.
        """
        with torch.inference_mode():
            code = scene_code.to(self.device)

            def density_at(points: torch.Tensor) -> torch.Tensor:
                return self.field.query(code, points.to(self.device), chunk_size)["density_act"][:, 0].cpu()

            if level is None:
                return isosurface.full_density_grid(density_at, resolution, self.radius, chunk_size, progress)
            return isosurface.refined_density_grid(density_at, resolution, self.radius, level,
                                                   chunk_size, progress, max_refined_share)

    @contextlib.contextmanager
    def _block_progress(self, progress: Callable[[float], None] | None) -> Iterator[None]:
        """Report after each ViT layer and backbone block while the forward pass runs."""
        if progress is None:
            yield
            return
        blocks = [*self.image_tokenizer.model.encoder.layer, *self.backbone.transformer_blocks]
        handles = [block.register_forward_hook(lambda *_, done=index + 1: progress(done / len(blocks)))
                   for index, block in enumerate(blocks)]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()
