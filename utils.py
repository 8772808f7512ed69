"""Small helpers shared by the homework scripts: seeding, the data-directory rule,
one-line errors, figures and results files.

Every script resolves its data folder the same way (`resolve_data_dir`), writes figures
through `plot_lines` (PNG + PDF, legend drawn *before* saving, unlike the handed-out
helper) and records its numbers with `write_results`, which stores the configuration,
seed, library versions, data description and wall time next to them so that every number
in `report/` can be traced to the run that produced it.
"""
from __future__ import annotations

import argparse
import fcntl
import importlib.util
import json
import math
import os
import platform
import random
import sys
import tempfile
import textwrap
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Mapping, NoReturn, Sequence

import numpy as np
import torch

REPO_DIR = Path(__file__).resolve().parent
DATA_DIR_ENV = "HW2_DATA_DIR"


@dataclass(frozen=True)
class Outputs:
    """Where a script writes: figures to <root>/plots, results files to <root>/report/results.
    The root is -out_dir, else the repository; scripts pass these folders on explicitly."""
    root: Path

    @property
    def plots(self) -> Path:
        return self.root / "plots"

    @property
    def results(self) -> Path:
        return self.root / "report" / "results"

    def ensure_writable(self) -> None:
        for folder in (self.results, self.plots):
            ensure_writable(folder, "-out_dir")


def load_script(filename: str) -> ModuleType:
    """Import a script by its path from the repository root, such as `hw2-q3.py` (a
    hyphenated name) or `bench/q2_bench.py`, as a module (its main does not run); tests and
    benches share it. Scripts themselves import modules only."""
    name = filename.removesuffix(".py").replace("-", "_").replace("/", "_")
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, REPO_DIR / filename)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def configure_seed(seed: int) -> None:
    """Seed every RNG the scripts use, and make PyTorch deterministic where it can be."""
    os.environ["PYTHONHASHSEED"] = str(seed)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False


def fail(message: str) -> SystemExit:
    """Return the exception that ends a script with one clear line and exit status 1.

    Usage: `raise fail("...")`; raising keeps the control flow visible at the call site.
    """
    return SystemExit(f"error: {message}")


def exit_in_one_write(stop: SystemExit) -> NoReturn:
    """End the process as `stop` would, but write its message with a single write(2).

    Python prints a SystemExit message and its newline in two writes, so two -jobs processes
    failing at once interleave their lines on the shared stderr; one write of under 4 KiB to a
    pipe or terminal is never split.
    """
    if isinstance(stop.code, str):
        sys.stderr.flush()
        os.write(2, f"{stop.code}\n".encode())
        sys.exit(1)
    raise stop


# argparse types: a bad value is a usage error naming the flag, at parse time, instead of a
# traceback later (torch.set_num_threads(-3)), a silent "all" (0) or a run that trains on NaN.
def positive_int(text: str) -> int:
    """Counts: -epochs, -batch_size, -threads, ..."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer (got {text})")
    return value


def non_negative_int(text: str) -> int:
    """Counts where 0 means none: -workers, -eval_every, ..."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0 (got {text})")
    return value


def positive_float(text: str) -> float:
    """Finite and > 0: learning rates."""
    value = float(text)
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0 (got {text})")
    return value


def non_negative_float(text: str) -> float:
    """Finite and >= 0: weight decay."""
    value = float(text)
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0 (got {text})")
    return value


def seed_value(text: str) -> int:
    """0 .. 2^32 - 1, the seeds numpy accepts (configure_seed seeds numpy too)."""
    value = int(text)
    if not 0 <= value < 2 ** 32:
        raise argparse.ArgumentTypeError(f"must lie in 0..{2 ** 32 - 1} (got {text})")
    return value


def torch_device(text: str) -> str:
    """-device: a device torch can use here, checked at parse time, so that `-device cuda` on a
    machine without a GPU is a usage error rather than a traceback."""
    if text.startswith("cuda") and not torch.cuda.is_available():
        raise argparse.ArgumentTypeError(f"{text}: no CUDA GPU is available here (use -device cpu)")
    try:
        torch.empty(0, device=text)
    except Exception as err:  # unknown name, no such GPU, backend not built: all unusable
        raise argparse.ArgumentTypeError(
            f"{text} is not usable here ({textwrap.shorten(str(err), 80)})") from None
    return text


def ensure_writable(folder: Path, flag: str) -> None:
    """Create `folder` and check that files can be written in it, so that a run fails in its
    first second, naming the folder and the flag that chose it, rather than after training."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-check-"):
            pass
    except OSError as err:
        raise fail(f"{folder} ({flag}) is not a writable folder: "
                   f"{err.strerror or type(err).__name__}") from None


@contextmanager
def exclusive(lock_path: Path, what: str):
    """Hold `lock_path` locked for the block, so that two processes never write the same
    files at once: a second one stops with a one-line error naming the holder. The lock is
    an flock, which the kernel drops when a process dies, so a killed run leaves no stale
    lock behind; the file itself is removed on the way out."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise fail(f"{lock_path}: process {holder} is already writing {what}; wait for "
                       "it to finish or use another -out_dir") from None
        try:
            same = os.fstat(fd).st_ino == os.stat(lock_path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the previous holder removed the file between our open and lock: retry
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        os.unlink(lock_path)  # while still locked, so no one else's lock file is removed
        os.close(fd)


def resolve_data_dir(flag_value: str | os.PathLike | None = None) -> Path:
    """The data-directory rule shared by every script and the tests:
    the `-data_dir` flag, else the HW2_DATA_DIR environment variable, else ./data."""
    if flag_value:
        return Path(flag_value)
    if os.environ.get(DATA_DIR_ENV):
        return Path(os.environ[DATA_DIR_ENV])
    return Path("data")


def add_common_args(parser, seed: int = 42, data: bool = True, threads: bool = False) -> None:
    """Add the flags every script shares: -seed, -out_dir, and -data_dir (if it reads data)
    and -threads (if it trains); apply_common_args acts on them."""
    if data:
        parser.add_argument(
            "-data_dir", default=None,
            help=f"folder holding the data sets (default: ${DATA_DIR_ENV}, else ./data)")
    if threads:
        parser.add_argument("-threads", type=positive_int, default=None,
                            help="torch CPU threads (default: torch's choice)")
    parser.add_argument("-seed", type=seed_value, default=seed,
                        help="random seed (default: %(default)s)")
    parser.add_argument(
        "-out_dir", default=None,
        help="write plots/ and report/results/ under this folder instead of the repository")


def apply_common_args(args: argparse.Namespace) -> Outputs:
    """Set torch's CPU threads (-threads) as asked; return the output folders (-out_dir)."""
    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)
    return Outputs(Path(args.out_dir) if args.out_dir else REPO_DIR)


Curve = tuple[Sequence[float], Sequence[float]]


def plot_lines(name: str, curves: Mapping[str, Curve], xlabel: str, ylabel: str, *,
               title: str | None = None, logx: bool = False, logy: bool = False,
               marker: str | None = None, plots_dir: Path) -> list[Path]:
    """Draw one line per (label -> (xs, ys)) and save `<plots_dir>/<name>.png` and `.pdf`.

    The legend is added before saving (the handed-out `_create_plot` saved first, so its
    PDFs had no legend). Returns the paths written.
    """
    import matplotlib
    import matplotlib.ticker
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for label, (xs, ys) in curves.items():
        ax.plot(xs, ys, label=label, marker=marker)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if all(isinstance(x, (int, np.integer)) for xs, _ in curves.values() for x in xs):
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))  # epochs
    if logx:
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # no overlapping labels
    if logy:
        ax.set_yscale("log")
    if title:
        ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend()
    return save_figure(fig, name, plots_dir)


def save_figure(fig, name: str, plots_dir: Path) -> list[Path]:
    """Save a matplotlib figure as <plots_dir>/<name>.png and .pdf, then close it."""
    import matplotlib.pyplot as plt

    out_dir = Path(plots_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    paths = [out_dir / f"{name}.{ext}" for ext in ("png", "pdf")]
    for path in paths:
        # Fixed metadata keeps re-runs byte-identical where the numbers are.
        meta = {"Software": None} if path.suffix == ".png" else {"CreationDate": None}
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # then rename: never half a file
        fig.savefig(tmp, format=path.suffix[1:], bbox_inches="tight", dpi=120, metadata=meta)
        tmp.replace(path)
    plt.close(fig)
    return paths


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
    tmp = path.with_suffix(f".json.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(_jsonable(record), indent=2, allow_nan=False) + "\n")
    tmp.replace(path)  # atomic: an interrupted run never leaves half a results file
    return path


def save_checkpoint(state: Mapping[str, Any], path: Path) -> None:
    """torch.save to a temporary name, then rename: an interruption never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")  # two processes never share one
    try:
        torch.save(state, tmp)
        tmp.replace(path)
    finally:  # interrupted (Ctrl-C, SIGTERM) while saving: no temporary left behind either
        tmp.unlink(missing_ok=True)


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
