"""benchmarks/bench_gpu.py runs where only torch, numpy, pillow and pyyaml are (issue 23: a
lent GPU box has a CUDA torch and little else of recond's). Here on the CPU, in its tiny mode,
with recond's other libraries made unimportable; no GPU is needed for this check.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCHMARK = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_gpu.py"
# recond's dependencies the model package must not need (pyproject.toml's, less the four).
ABSENT = ("pydantic", "pydantic_settings", "scipy", "mcubes", "trimesh", "xatlas", "pymeshlab", "rembg",
          "structlog", "sqlite_utils", "click", "watchdog", "imageio_ffmpeg", "huggingface_hub")
WITHOUT = """
import runpy, sys
absent = set(sys.argv[1].split(","))
class Absent:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in absent:
            raise ModuleNotFoundError(f"No module named {name!r}")
sys.meta_path.insert(0, Absent())
sys.argv = sys.argv[2:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def test_bench_gpu_runs_tiny_on_the_cpu_with_only_torch_numpy_pillow_and_pyyaml(tmp_path: Path) -> None:
    completed = subprocess.run([sys.executable, "-c", WITHOUT, ",".join(ABSENT), str(BENCHMARK),
                                "--device", "cpu", "--tiny", "--pictures", "1", "--resolution", "32"],
                               cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-2000:]
    lines = completed.stdout.splitlines()
    assert [line.split(":")[0] for line in lines if line.startswith("float")] == ["float32", "float16"]
    assert all("pictures/s" in line and "peak RSS" in line for line in lines if line.startswith("float"))
    iou = next(line for line in lines if line.startswith("occupancy IoU"))
    assert float(iou.split("min ")[1].split(",")[0]) > 0.9
