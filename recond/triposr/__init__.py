"""A from-scratch port of TripoSR (single image -> triplane NeRF) that loads the official weights.

Kept free of imports: ``recond.triposr.model`` pulls in torch, and light modules (the errors,
``reconctl status``) must be importable without it. Import from the submodules.
"""
