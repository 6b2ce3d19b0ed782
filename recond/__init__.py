"""recond: photos dropped into an inbox come out of the outbox as textured 3D models."""

__version__ = "0.1.0"
