"""Wall time of `reconctl status`, `jobs` and `show` in fresh processes, next to `import torch`.

These commands read the job database only; tests/test_light_commands.py checks they never
import torch. This prints what that is worth: each command is started --repeats times as a new
process against a database of --jobs finished jobs, and the median wall time is reported with
the median time of a bare `python -c "import torch"` on the same machine in the same run.

    .venv/bin/python benchmarks/bench_cli.py [--jobs 1000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from recond.config import load_settings
from recond.store import Store


def median_seconds(command: list[str], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def fill(settings_dir: Path, jobs: int) -> Path:
    """A config file and a database holding ``jobs`` finished jobs."""
    config = settings_dir / "recond.toml"
    config.write_text(f'inbox = "{settings_dir / "inbox"}"\noutbox = "{settings_dir / "outbox"}"\n'
                      f'state_dir = "{settings_dir / "state"}"\n')
    store = Store(load_settings(config).db_path)
    for number in range(jobs):
        job, _ = store.enqueue(f"photo_{number}.jpg", f"{number:064x}", 1000, f"result_{number}")
        store.claim_next()
        store.finish(job.id, settings_dir / "outbox" / f"result_{number}", [])
    store.close()
    return config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cpus, python {platform.python_version()}")
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    with tempfile.TemporaryDirectory(prefix="bench_cli_") as scratch:
        config = fill(Path(scratch), args.jobs)
        reconctl = [sys.executable, "-m", "recond.cli", "--config", str(config)]
        torch_import = median_seconds([sys.executable, "-c", "import torch"], args.repeats)
        print(f"python -c 'import torch': {torch_import:.2f} s (median of {args.repeats})")
        for command in (["status"], ["status", "--json"], ["jobs"], ["show", "1"]):
            seconds = median_seconds([*reconctl, *command], args.repeats)
            print(f"reconctl {' '.join(command):<14} {seconds:.2f} s  "
                  f"({seconds / torch_import:.2f} x the torch import; {args.jobs} jobs in the database)")
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
