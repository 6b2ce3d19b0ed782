"""benchmarks/bench_throughput.py's simulated-GPU path, run tiny (issue 23): its stand-in
pipeline once lacked ``dtype``, the worker never loaded it, and the benchmark waited its hour.

The real worker, host process, bench_chair and chair.png; only the GPU is a stand-in (there is
none here): a device part that sleeps and hands on bench_chair's real hand-off.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType
from typing import get_type_hints

import pytest

from recond.config import JobSettings, ModelSettings
from recond.pipeline.contract import WarmPipeline

BENCHMARK = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_throughput.py"
TINY_JOBS = {"mc_resolution": 48, "texture_resolution": 64, "render_views": 2, "render_size": 32,
             "target_faces": 500}


@pytest.fixture(scope="module")
def bench(shared_dir: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_throughput", BENCHMARK)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_stand_in_has_everything_the_worker_reads_of_a_warm_pipeline(bench: ModuleType,
                                                                         shared_dir: Path) -> None:
    job = JobSettings(**TINY_JOBS)
    model = ModelSettings(model=str(bench.BENCH_CHAIR), device="cpu")
    stand_in = bench.SimulatedGpu(model, 0.01, job)
    wanted = set(get_type_hints(WarmPipeline)) | {"device_part", "host_part", "run"}
    assert not {name for name in wanted if not hasattr(stand_in, name)}
    # The real pipeline's choice on this CPU: float32, or bfloat16 where the CPU has it natively.
    assert str(stand_in.dtype).startswith(f"{model.resolved_dtype().name} (stand-in")


def test_simulated_gpu_rows_finish_and_print(bench: ModuleType, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    pictures = bench.distinct_chairs(tmp_path / "chairs", 2)
    result = bench.run_once(pictures, {"host_workers": 1, **TINY_JOBS}, device_seconds=0.05, warmup=0.0)
    assert (result["jobs"], result["failed"]) == (2, 0)
    assert result["cpu_s_per_job"] > 0  # the host process's mesh-to-viewer work is counted
    assert len(result["host_peak_rss_mib"]) == 1 and result["host_peak_rss_mib"][0] > 50
    bench.print_table("tiny", [("host_workers = 1", result)])
    row = capsys.readouterr().out.splitlines()[-1]
    assert row.startswith("host_workers = 1") and "not run" not in row
