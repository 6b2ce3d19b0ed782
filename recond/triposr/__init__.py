"""A from-scratch port of TripoSR (single image -> triplane NeRF) that loads the official weights."""

from recond.triposr.config import TripoSRConfig, load_config, parse_config
from recond.errors import ModelLoadError
from recond.triposr.model import TripoSR
from recond.triposr.preprocess import prepare_image

__all__ = ["ModelLoadError", "TripoSR", "TripoSRConfig", "load_config", "parse_config", "prepare_image"]
