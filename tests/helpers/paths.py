"""Where the repository and the shared reference material (../shared beside it) are."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared"  # ../shared beside the repository
