"""Results files and timings: every number of the report is written by `write_results` beside
the configuration, seed, data description, library versions, machine and wall time."""
from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from hw2 import REPO_DIR
from hw2.checkpoints import atomic_write


def library_versions() -> dict[str, str]:
    """Versions of the libraries a result depends on (those that are installed)."""
    import importlib.metadata as md
    versions = {"python": platform.python_version()}
    for pkg in ("torch", "torchaudio", "numpy", "matplotlib", "medmnist", "soundfile",
                "jiwer", "textdistance"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return versions


def machine_description() -> dict[str, Any]:
    """Where a timing was measured: CPU model, core count, torch threads, accelerator."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "platform": platform.platform(),
    }


def _jsonable(value: Any) -> Any:
    """Convert numpy / torch scalars and arrays (and Paths) into plain JSON values."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, torch.Tensor):
        return _jsonable(value.tolist())
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        return _jsonable(value.item())
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float) and not np.isfinite(value):
        return None  # JSON has no NaN / inf: a diverged run's losses are recorded as null
    return value


def script_path() -> str:
    """The running script as typed from the repository root (bench/q2_bench.py, hw2-q2.py)."""
    script = Path(sys.argv[0]).resolve()
    return str(script.relative_to(REPO_DIR)) if script.is_relative_to(REPO_DIR) else script.name


def write_results(name: str, results: Mapping[str, Any], *, config: Mapping[str, Any],
                  seed: int, data: Any, wall_time_s: float, results_dir: Path) -> Path:
    """Write `report/results/<name>.json`: the numbers and everything needed to trace them.

    `config` is the command-line configuration (e.g. `vars(args)`), `data` says which data
    the numbers were obtained on (a string or a dict; synthetic data must say so).
    """
    out_dir = Path(results_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    record = {
        "name": name,
        "command": "python " + " ".join([script_path(), *sys.argv[1:]]),
        "config": dict(config),
        "seed": seed,
        "data": data,
        "versions": library_versions(),
        "machine": machine_description(),
        "wall_time_s": round(float(wall_time_s), 3),
        "results": dict(results),
    }
    path = out_dir / f"{name}.json"
    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps(_jsonable(record), indent=2, allow_nan=False) + "\n")
    return path


class Timer:
    """`with Timer() as t: ...; t.seconds` — wall time of a block; or `t = Timer()` and
    `t.lap()` for the seconds between successive points of a loop."""

    def __init__(self) -> None:
        self._start, self.seconds = time.perf_counter(), 0.0

    def __enter__(self) -> "Timer":
        self._start = time.perf_counter()
        self.seconds = 0.0
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = time.perf_counter() - self._start

    def lap(self) -> float:
        """Seconds since the block started or since the last lap; starts the next lap."""
        now = time.perf_counter()
        seconds, self._start = now - self._start, now
        return seconds

