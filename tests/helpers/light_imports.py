"""The heavy modules a light front end (reconctl status, recond-web) must never import."""

from __future__ import annotations






HEAVY_MODULES = ("torch", "trimesh", "rembg", "onnxruntime", "cv2", "xatlas", "mcubes", "pymeshlab")
