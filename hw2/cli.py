"""Command-line plumbing shared by the scripts: one-line errors, argparse types that check a
value at parse time, the flags every script takes, and where outputs go."""
from __future__ import annotations

import argparse
import math
import os
import tempfile
import textwrap
from dataclasses import dataclass
from pathlib import Path

import torch

from hw2 import REPO_DIR

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



def fail(message: str) -> SystemExit:
    """Return the exception that ends a script with one clear line and exit status 1.

    Usage: `raise fail("...")`; raising keeps the control flow visible at the call site.
    """
    return SystemExit(f"error: {message}")


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


def unit_fraction(text: str) -> float:
    """0 .. 1: shares of a corpus."""
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must lie in 0..1 (got {text})")
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


FORCE_HELP = ("replace report/results/<name>.json even when it records another configuration; "
              "without -force such a run stops before it starts, naming the settings that "
              "differ (run-control flags such as -resume, -threads, -workers, -device, "
              "-data_dir do not count); -out_dir writes elsewhere instead")


def add_common_args(parser, seed: int = 42, data: bool = True, threads: bool = False,
                    force_help: str = FORCE_HELP) -> None:
    """Add the flags every script shares: -seed, -out_dir, -force, and -data_dir (if it reads
    data) and -threads (if it trains); apply_common_args acts on them."""
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
    parser.add_argument("-force", action="store_true", help=force_help)


def apply_common_args(args: argparse.Namespace) -> Outputs:
    """Set torch's CPU threads (-threads) as asked; return the output folders (-out_dir)."""
    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)
    return Outputs(Path(args.out_dir) if args.out_dir else REPO_DIR)


def resolve_data_dir(flag_value: str | os.PathLike | None = None) -> Path:
    """The data-directory rule shared by every script and the tests:
    the `-data_dir` flag, else the HW2_DATA_DIR environment variable, else ./data."""
    if flag_value:
        return Path(flag_value)
    if os.environ.get(DATA_DIR_ENV):
        return Path(os.environ[DATA_DIR_ENV])
    return Path("data")


def write_data_dir(flag_value: str | os.PathLike | None) -> Path:
    """Where a script writes data: the `-data_dir` flag, else ./data -- never $HW2_DATA_DIR,
    which is only read from (it may hold the shared, genuine data)."""
    return Path(flag_value) if flag_value else Path("data")
