"""Headless Chromium for the page tests: where it is (.ci/run installs Debian's), and the flags that
give its pages WebGL on a machine without a GPU (SwiftShader), for the viewer."""

from __future__ import annotations

import shutil

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
WEBGL_FLAGS = ["--no-sandbox", "--use-angle=swiftshader", "--enable-unsafe-swiftshader"]
