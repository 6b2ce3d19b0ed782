"""The one error a user can cause while loading TripoSR: a missing or unusable model folder.

It carries a single sentence (which file, what was expected) so the daemon can show it as is.
"""

from __future__ import annotations


class ModelLoadError(RuntimeError):
    """The model folder, its config or its weights are missing or do not fit together."""
