"""A tiny random-weight TripoSR checkpoint in the official layout, for tests and benchmarks.

The folder (config.yaml with upstream's keys and class paths, vit_config.json, model.ckpt) is
built seeded, so tests and benchmarks never need the real 1.7 GB weights and can exercise the
real loader on it. The last decoder bias is shifted so the density field crosses the surface
threshold (25) on part of the box: meshes made from it are not empty. The field is made smooth
(one blob of a few thousand faces at 32^3 rather than hundreds of specks), which keeps the
texture and render stages downstream fast. It lives in the package (not tests/) so benchmarks
import it like any module.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import yaml
from PIL import Image, ImageDraw

from recond.config import JobSettings
from recond.triposr.config import ViTConfig, parse_config
from recond.triposr.model import TripoSR
from recond.triposr.preprocess import prepare_image

SURFACE_THRESHOLD: float = JobSettings.model_fields["mc_threshold"].default  # the default level
INSIDE_FRACTION = 0.15
NOISY_INSIDE_FRACTION = 0.5

TINY_CONFIG: dict[str, Any] = {
    "cond_image_size": 64,
    "image_tokenizer_cls": "tsr.models.tokenizers.image.DINOSingleImageTokenizer",
    "image_tokenizer": {"pretrained_model_name_or_path": "tiny-dino-vit-test"},
    "tokenizer_cls": "tsr.models.tokenizers.triplane.Triplane1DTokenizer",
    "tokenizer": {"plane_size": 8, "num_channels": 32},
    "backbone_cls": "tsr.models.transformer.transformer_1d.Transformer1D",
    "backbone": {"in_channels": "${tokenizer.num_channels}", "num_attention_heads": 2,
                 "attention_head_dim": 16, "num_layers": 1, "cross_attention_dim": 32},
    "post_processor_cls": "tsr.models.network_utils.TriplaneUpsampleNetwork",
    "post_processor": {"in_channels": 32, "out_channels": 8},
    "decoder_cls": "tsr.models.network_utils.NeRFMLP",
    "decoder": {"in_channels": 24, "n_neurons": 16, "n_hidden_layers": 2, "activation": "silu"},
    "renderer_cls": "tsr.models.nerf_renderer.TriplaneNeRFRenderer",
    "renderer": {"radius": 0.87, "feature_reduction": "concat", "density_activation": "exp",
                 "density_bias": -1.0, "num_samples_per_ray": 32},
}

# ViT with 32-pixel position embeddings, so a 64-pixel input exercises their resizing.
TINY_VIT: dict[str, Any] = {
    "architectures": ["ViTModel"], "model_type": "vit", "hidden_act": "gelu", "hidden_size": 32,
    "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64, "patch_size": 16,
    "image_size": 32, "num_channels": 3, "layer_norm_eps": 1e-12, "qkv_bias": True,
    "attention_probs_dropout_prob": 0.0, "hidden_dropout_prob": 0.0,
}


def reference_picture(size: int = 128) -> Image.Image:
    """An RGBA picture of a coloured disc on a transparent background."""
    picture = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    ImageDraw.Draw(picture).ellipse((size // 5, size // 6, size * 4 // 5, size * 5 // 6),
                                    fill=(200, 80, 40, 255))
    return picture


def randomise_weights(model: torch.nn.Module, seed: int) -> None:
    """Seeded weights of realistic scale: fan-in scaled matrices, small biases, norms near 1."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            noise = torch.randn(parameter.shape, generator=generator)
            if name.endswith("bias"):
                parameter.copy_(noise * 0.1)
            elif "norm" in name and parameter.ndim == 1:
                parameter.copy_(1 + noise * 0.1)
            elif parameter.ndim >= 2 and name.endswith("weight"):
                fan_in = parameter.shape[0] if "upsample" in name else parameter[0].numel()
                gain = 1.6 if name.startswith("decoder.") else 1.0
                parameter.copy_(noise * gain / math.sqrt(fan_in))
            else:
                parameter.copy_(noise * 0.5)


def smooth_field(model: TripoSR, seed: int) -> None:
    """Low-frequency triplanes so the density field is a smooth blob, still image-dependent.

    The query planes become bicubic upsamplings of a random 2x2 grid, the backbone's image-driven
    update is damped, and the upsampler repeats each texel (equal 2x2 kernel taps).
    """
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        planes = model.tokenizer.embeddings
        coarse = torch.randn(3, planes.shape[1], 2, 2, generator=generator)
        planes.copy_(F.interpolate(coarse, size=planes.shape[-2:], mode="bicubic", align_corners=True))
        model.backbone.proj_out.weight.mul_(0.1)
        kernel = model.post_processor.upsample.weight
        kernel.copy_(kernel.mean(dim=(2, 3), keepdim=True).expand_as(kernel))


def build_tiny_checkpoint(folder: Path, config: dict[str, Any] = TINY_CONFIG,
                          vit: dict[str, Any] = TINY_VIT, seed: int = 1234, smooth: bool = True,
                          inside_fraction: float = INSIDE_FRACTION) -> Path:
    """Write config.yaml + vit_config.json + model.ckpt whose field crosses the threshold, with
    ``inside_fraction`` of the box inside the surface."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    vit_fields = {key: value for key, value in vit.items()
                  if key in ViTConfig.__dataclass_fields__}
    model = TripoSR(parse_config(config, ViTConfig(**vit_fields))).eval()
    randomise_weights(model, seed)
    if smooth:
        smooth_field(model, seed)
    scene_code = model.encode([prepare_image(reference_picture())])[0]
    raw_density = model.query(scene_code, _grid_points(32, model.radius))["density"]
    level = float(torch.quantile(raw_density.flatten(), 1 - inside_fraction))
    renderer = config["renderer"]
    shift = math.log(SURFACE_THRESHOLD) - float(renderer["density_bias"]) - level
    density_layer = model.decoder.layers[-1]
    assert isinstance(density_layer, torch.nn.Linear)
    with torch.no_grad():
        density_layer.bias[0] += shift
    (folder / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    (folder / "vit_config.json").write_text(json.dumps(vit, indent=2))
    torch.save(model.state_dict(), folder / "model.ckpt")
    return folder


def build_noisy_checkpoint(folder: Path, seed: int = 1234) -> Path:
    """A tiny checkpoint whose field is noise, not a shape (issue 22): finer triplanes, left
    rough, with the surface at the median density, so half the box is inside in a tangle. At
    mc_resolution 64 its surface has ~350k faces and ~2,600 handles in one body (and 140
    specks); the mesh stage must still hand on at most target_faces."""
    config = {**TINY_CONFIG, "tokenizer": {**TINY_CONFIG["tokenizer"], "plane_size": 16}}
    return build_tiny_checkpoint(folder, config, seed=seed, smooth=False, inside_fraction=NOISY_INSIDE_FRACTION)


def _grid_points(resolution: int, radius: float) -> torch.Tensor:
    axis = torch.linspace(-radius, radius, resolution)
    return torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), dim=-1).reshape(-1, 3)
