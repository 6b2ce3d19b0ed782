"""What many tests share: where the repository and ../shared are, settings for a test's own
folders, waiting for a condition, and the nothing-lost check. Fixtures stay in conftest.py."""
