"""Stage seconds of one picture run three ways: `reconctl process`, a Python `Pipeline` (as the
README's snippet makes it) and the daemon (`recond --once`), each in a fresh process on the same
model and settings (issue 26: the first two ran 3-4x slower than the daemon). Prints one row
per way with each stage's seconds (from the result's job.json), and whether the three results
hold the same files.

The machine is shared: the load average is printed before and after; rerun before trusting a
difference, and compare within one run.

    .venv/bin/python benchmarks/bench_same_speed.py [--model ../shared/reference/bench_chair]
        [--picture ../shared/examples/chair.png] [--quick] [--repeats 1]

--quick uses mc_resolution 128, 8 views and 512 px textures (minutes on a loaded 2-core VM).
--ways picks some of the three; --omp-threads N sets OMP_NUM_THREADS for the runs; with
BENCH_IMPORT_FIRST=module set, the Pipeline way imports that module before torch (the daemon
imports pymeshlab first; it made no difference here).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared"
QUICK = {"mc_resolution": 128, "render_views": 8, "texture_resolution": 512}

PIPELINE_SNIPPET = """
import os, sys
if os.environ.get("BENCH_IMPORT_FIRST"):
    __import__(os.environ["BENCH_IMPORT_FIRST"])
from pathlib import Path
from recond.config import load_settings
from recond.inbox.dropped import read_source
from recond.pipeline.runner import Pipeline
settings = load_settings(Path(sys.argv[1]))
pipeline = Pipeline(settings)
result_dir = Path(sys.argv[3])
result_dir.mkdir()
run = lambda: pipeline.run(read_source(Path(sys.argv[2]), settings.max_file_bytes), result_dir, settings)
if os.environ.get("BENCH_IN_THREAD"):
    import threading
    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
else:
    run()
"""


def write_config(folder: Path, model: str, settings: dict[str, object]) -> Path:
    values = {"inbox": str(folder / "inbox"), "outbox": str(folder / "outbox"),
              "state_dir": str(folder / "state"), "model": model, "device": "cpu",
              "settle_seconds": 0.2, "rembg_home": str(folder / "no-rembg"), **settings}
    config = folder / "recond.toml"
    config.write_text("".join(f"{key} = {json.dumps(value)}\n" for key, value in values.items()))
    return config


def run_way(way: str, folder: Path, picture: Path, config: Path) -> tuple[float, Path]:
    """Run one way; its wall seconds and its result folder."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("RECOND_")}
    python = sys.executable
    started = time.perf_counter()
    if way == "reconctl process":
        out = folder / "process-out"
        subprocess.run([python, "-m", "recond.cli", "--config", str(config), "process", str(picture),
                        "--out", str(out)], check=True, env=env, capture_output=True)
        result = next(path for path in out.iterdir() if path.is_dir())
    elif way == "Pipeline":
        result = folder / "pipeline-out"
        subprocess.run([python, "-c", PIPELINE_SNIPPET, str(config), str(picture), str(result)],
                       check=True, env=env, capture_output=True)
    else:
        (folder / "inbox").mkdir(exist_ok=True)
        shutil.copy(picture, folder / "inbox" / picture.name)
        subprocess.run([python, "-m", "recond.daemon", "--config", str(config), "--once"],
                       check=True, env=env, capture_output=True)
        result = next(path for path in (folder / "outbox").iterdir() if path.is_dir())
    return time.perf_counter() - started, result


def files_of(result: Path) -> list[str]:
    return sorted(path.relative_to(result).as_posix() for path in result.rglob("*") if path.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(SHARED / "reference" / "bench_chair"))
    parser.add_argument("--picture", type=Path, default=SHARED / "examples" / "chair.png")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--ways", default="reconctl process,Pipeline,daemon --once",
                        help="Which ways to run, comma-separated.")
    parser.add_argument("--omp-threads", type=int, help="OMP_NUM_THREADS for the runs (torch's "
                        "default thread count), to see what the thread count alone does.")
    args = parser.parse_args()
    settings = QUICK if args.quick else {}
    if args.omp_threads:
        os.environ["OMP_NUM_THREADS"] = str(args.omp_threads)
    print(f"machine: {platform.machine()}, {len(os.sched_getaffinity(0))} cpus usable, "
          f"python {platform.python_version()}; model {args.model}; picture {args.picture.name}; "
          f"settings {settings or 'defaults'}")
    print(f"command: {' '.join(sys.argv)}")
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    files: dict[str, list[str]] = {}
    facts: dict[str, tuple[str, int, str]] = {}
    header_shown = False
    for repeat in range(args.repeats):
        for way in args.ways.split(","):
            with tempfile.TemporaryDirectory(prefix="bench_same_speed_") as scratch:
                folder = Path(scratch)
                wall, result = run_way(way, folder, args.picture, write_config(folder, args.model, settings))
                record = json.loads((result / "job.json").read_text())
                stages = record["stage_seconds"]
                facts[way] = (record["background"], record["faces"], record["dtype"])
                files[way] = files_of(result)
            if not header_shown:
                print(f"{'way':<18}{'wall s':>8}" + "".join(f"{stage:>12}" for stage in stages))
                header_shown = True
            print(f"{way:<18}{wall:>8.1f}" + "".join(f"{seconds:>12.2f}" for seconds in stages.values())
                  + (f"   (run {repeat + 1})" if args.repeats > 1 else ""))
    print("background, faces, dtype: " + "; ".join(f"{way}: {fact}" for way, fact in facts.items()))
    same = len({tuple(names) for names in files.values()}) == 1
    print(f"same files in the three results: {same}" + ("" if same else f" {files}"))
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
