"""Results files and timings: every number of the report is written by `write_results` beside
the configuration, seed, data description, library versions, machine and wall time."""
from __future__ import annotations

import json
import os
import platform
import re
import sys
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from hw2 import REPO_DIR
from hw2.checkpoints import atomic_write
from hw2.cli import fail


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


# Settings that control how a run goes, not what it computes: they may differ between the run
# that wrote a results file and the one that replaces it.
RUN_CONTROL = frozenset({
    "resume", "no_progress", "threads", "workers", "jobs", "cache_dir",
    "checkpoint_dir", "out_dir", "force", "analysis_only", "data_dir", "real_dir", "heldout_dir",
    "real_images", "device"})


def config_changes(recorded: Mapping[str, Any], config: Mapping[str, Any]) -> list[str]:
    """The settings, other than RUN_CONTROL, in which `config` differs from `recorded`, as
    'name old -> new' in name order. A flag removed since the recorded run changes nothing, and
    one added since counts only when it is on (not None, False, 0 or "")."""
    new = json.loads(json.dumps(_jsonable(dict(config))))  # as it would be recorded

    def shown(side: Mapping[str, Any], key: str) -> str:
        return repr(side[key]) if key in side else "unset"

    changes = []
    for key in sorted({*new, *recorded}):
        if key in RUN_CONTROL or recorded.get(key) == new.get(key):
            continue
        if key not in new or (key not in recorded and new[key] in (None, False, "")):
            continue
        changes.append(f"{key} {shown(recorded, key)} -> {shown(new, key)}")
    return changes


def check_replaceable(results_dir: Path, name: str, config: Mapping[str, Any],
                      force: bool = False, data: Mapping[str, str] | None = None) -> None:
    """Refuse, in one line, to replace `<results_dir>/<name>.json` when it records another
    configuration (config_changes) or other data (a digest in `data`, e.g. {"md5": ...}, that
    the file records with another value), unless `force`: a smoke run never silently replaces
    a committed result. Scripts call it before they start; write_results calls it again.
    A file that records no configuration is not a results record and is not kept."""
    path = Path(results_dir) / f"{name}.json"
    if force or not path.exists():
        return
    try:
        record = json.loads(path.read_text())
        recorded = record.get("config")
    except (OSError, ValueError, AttributeError):  # unreadable, not JSON, not an object
        recorded = None
    if not isinstance(recorded, dict):
        return  # not a results record (write_results always records the configuration)
    changes = config_changes(recorded, config)
    recorded_data = record.get("data") if isinstance(record.get("data"), dict) else {}
    changes += [f"data {key} {recorded_data[key]} -> {value}" for key, value in (data or {}).items()
                if key in recorded_data and recorded_data[key] != value]
    if changes:
        raise fail(f"{path} records another configuration ({', '.join(changes)}); pass -force "
                   "to replace it, or -out_dir to write elsewhere")


def write_results(name: str, results: Mapping[str, Any], *, config: Mapping[str, Any],
                  seed: int, data: Any, wall_time_s: float, results_dir: Path) -> Path:
    """Write `report/results/<name>.json`: the numbers and everything needed to trace them.

    `config` is the command-line configuration (e.g. `vars(args)`), `data` says which data
    the numbers were obtained on (a string or a dict; synthetic data must say so). A file of
    another configuration is replaced only with config["force"] (check_replaceable).
    """
    check_replaceable(results_dir, name, config, bool(config.get("force")))
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


def test_log_path(results_dir: Path, name: str) -> Path:
    """Where the run `name` keeps its test log, beside its results file."""
    return results_dir / f"{name}-test-log.txt"


def write_test_log(name: str, pairs: list[tuple[str, str]], results_dir: Path) -> str:
    """Every decoded test clip beside its target, written atomically; returns its path as the
    results file records it (relative to the repository when it lies inside)."""
    path = test_log_path(results_dir, name)
    with atomic_write(path) as tmp:
        tmp.write_text("".join(f"target: {t}\npred:   {p}\n\n" for t, p in pairs))
    return str(path.relative_to(REPO_DIR) if path.is_relative_to(REPO_DIR) else path)


def read_test_log(path: Path) -> list[tuple[str, str]]:
    """Every (target, prediction) pair of a test log as write_test_log wrote it, in its order:
    hw2-q3.py's test split in corpus order, then the clips scored apart, their targets prefixed
    "[label] "."""
    if not path.exists():
        raise fail(f"missing test log {path}; run the script that writes it")
    return re.findall(r"^target: (.*)\npred:   (.*)$", path.read_text(encoding="utf-8"),
                      flags=re.M)
