"""TripoSR's configuration as typed records, read from upstream's own ``config.yaml``.

The official file names upstream classes (``*_cls``) and uses OmegaConf ``${...}`` references;
we read it unchanged, map each class path onto our module for that part, and fail with one
sentence when the file asks for something this port does not implement.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from recond.errors import ModelLoadError

OFFICIAL_CONFIG_PATH = Path(__file__).with_name("official_config.yaml")

# Upstream class path of each part (official config.yaml) -> the section it configures.
PART_CLASSES = {
    "image_tokenizer": "tsr.models.tokenizers.image.DINOSingleImageTokenizer",
    "tokenizer": "tsr.models.tokenizers.triplane.Triplane1DTokenizer",
    "backbone": "tsr.models.transformer.transformer_1d.Transformer1D",
    "post_processor": "tsr.models.network_utils.TriplaneUpsampleNetwork",
    "decoder": "tsr.models.network_utils.NeRFMLP",
    "renderer": "tsr.models.nerf_renderer.TriplaneNeRFRenderer",
}

_REFERENCE = re.compile(r"\$\{([^}]+)\}")


@dataclass(frozen=True)
class ViTConfig:
    """The image encoder's shape, in the field names of a transformers ``ViTConfig`` JSON."""

    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    patch_size: int = 16
    image_size: int = 224
    num_channels: int = 3
    layer_norm_eps: float = 1e-12
    qkv_bias: bool = True
    hidden_act: str = "gelu"


# facebook/dino-vitb16's config.json, which upstream downloads at start-up; the defaults above
# are exactly its values, so the built-in facts are the default record.
DINO_VITB16 = ViTConfig()


@dataclass(frozen=True)
class TokenizerConfig:
    plane_size: int
    num_channels: int


@dataclass(frozen=True)
class BackboneConfig:
    in_channels: int
    num_attention_heads: int
    attention_head_dim: int
    num_layers: int
    cross_attention_dim: int
    norm_num_groups: int = 32

    @property
    def inner_dim(self) -> int:
        return self.num_attention_heads * self.attention_head_dim


@dataclass(frozen=True)
class UpsamplerConfig:
    in_channels: int
    out_channels: int


@dataclass(frozen=True)
class DecoderConfig:
    in_channels: int
    n_neurons: int
    n_hidden_layers: int
    activation: str = "relu"


@dataclass(frozen=True)
class RendererConfig:
    radius: float
    feature_reduction: str = "concat"
    density_activation: str = "trunc_exp"
    density_bias: float = -1.0
    num_samples_per_ray: int = 128


@dataclass(frozen=True)
class TripoSRConfig:
    cond_image_size: int
    vit: ViTConfig
    tokenizer: TokenizerConfig
    backbone: BackboneConfig
    post_processor: UpsamplerConfig
    decoder: DecoderConfig
    renderer: RendererConfig


def load_config(config_path: Path, vit_config_path: Path | None = None) -> TripoSRConfig:
    """Read an upstream ``config.yaml`` (and the ViT's ``config.json``-style file if given)."""
    raw = _read_yaml(config_path)
    return parse_config(raw, _read_vit_config(vit_config_path) if vit_config_path else None,
                        source=str(config_path))


def parse_config(raw: dict[str, Any], vit_config: ViTConfig | None = None,
                 source: str = "config.yaml") -> TripoSRConfig:
    """Build the typed config from upstream's mapping; without a ViT file use DINO ViT-B/16."""
    resolved = resolve_references(raw, source)
    for part, class_path in PART_CLASSES.items():
        found = resolved.get(f"{part}_cls", class_path)
        if found != class_path:
            raise ModelLoadError(
                f"{source} asks for {part}_cls '{found}', but this port implements only '{class_path}'.")
    # Upstream's layout has this section; the hub name in it is not used (the ViT's shape
    # comes from vit_config, else DINO ViT-B/16, and its weights from model.ckpt).
    _section(resolved, "image_tokenizer", source)
    return TripoSRConfig(
        cond_image_size=int(_require(resolved, "cond_image_size", source)),
        vit=vit_config or DINO_VITB16,
        tokenizer=_record(TokenizerConfig, resolved, "tokenizer", source),
        backbone=_record(BackboneConfig, resolved, "backbone", source),
        post_processor=_record(UpsamplerConfig, resolved, "post_processor", source),
        decoder=_record(DecoderConfig, resolved, "decoder", source),
        renderer=_record(RendererConfig, resolved, "renderer", source),
    )


def resolve_references(raw: dict[str, Any], source: str = "config.yaml") -> dict[str, Any]:
    """Replace OmegaConf-style ``${a.b}`` references by the values they point at."""

    def lookup(dotted: str, depth: int) -> Any:
        node: Any = raw
        for key in dotted.strip().split("."):
            if not isinstance(node, dict) or key not in node:
                raise ModelLoadError(f"{source} refers to '${{{dotted}}}', which it does not define.")
            node = node[key]
        return resolve(node, depth + 1)

    def resolve(value: Any, depth: int = 0) -> Any:
        if depth > 32:
            raise ModelLoadError(f"{source} has references that refer to each other in a loop.")
        if isinstance(value, dict):
            return {key: resolve(item, depth) for key, item in value.items()}
        if isinstance(value, list):
            return [resolve(item, depth) for item in value]
        if isinstance(value, str):
            whole = _REFERENCE.fullmatch(value)
            if whole:
                return lookup(whole.group(1), depth)
            return _REFERENCE.sub(lambda match: str(lookup(match.group(1), depth)), value)
        return value

    return resolve(raw)


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelLoadError(f"The model config {path} is missing; expected upstream's config.yaml there.") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ModelLoadError(f"The model config {path} is not readable YAML ({_first_line(exc)}).") from None
    if not isinstance(raw, dict):
        raise ModelLoadError(f"The model config {path} is not a YAML mapping like upstream's config.yaml.")
    return raw


def _read_vit_config(path: Path) -> ViTConfig:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"The ViT config {path} is not readable JSON ({_first_line(exc)}).") from None
    known = {field.name for field in fields(ViTConfig)}
    # The transformers JSON also carries bookkeeping (architectures, dropout 0, init range) we do not use.
    vit = ViTConfig(**{key: value for key, value in raw.items() if key in known})
    if vit.hidden_act != "gelu":
        raise ModelLoadError(f"The ViT config {path} uses hidden_act '{vit.hidden_act}'; only 'gelu' is supported.")
    return vit


def _section(resolved: dict[str, Any], name: str, source: str) -> dict[str, Any]:
    section = _require(resolved, name, source)
    if not isinstance(section, dict):
        raise ModelLoadError(f"{source}: '{name}' should be a mapping of settings.")
    return section


def _require(resolved: dict[str, Any], key: str, source: str) -> Any:
    if key not in resolved:
        raise ModelLoadError(f"{source} has no '{key}' entry, which upstream's config.yaml always has.")
    return resolved[key]


def _record(record_type: type, resolved: dict[str, Any], name: str, source: str) -> Any:
    section = _section(resolved, name, source)
    known = {field.name: field for field in fields(record_type)}
    unknown = sorted(set(section) - set(known))
    if unknown:
        raise ModelLoadError(f"{source}: '{name}' has settings this port does not implement: {', '.join(unknown)}.")
    try:
        return record_type(**{key: _cast(known[key].type, value) for key, value in section.items()})
    except (TypeError, ValueError) as exc:
        raise ModelLoadError(f"{source}: '{name}' is incomplete or has a bad value ({_first_line(exc)}).") from None


def _cast(type_name: Any, value: Any) -> Any:
    casts = {"int": int, "float": float, "str": str}
    return casts.get(str(type_name), lambda item: item)(value)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
