"""The course's utils.py: seeding, the data-folder rule and line plots, plus loading a script
by its path for the tests and benches. `resolve_data_dir` (-data_dir, else $HW2_DATA_DIR, else
./data) and `plot_lines` (PNG + PDF, legend drawn before saving, unlike the handed-out helper)
live in the hw2 package and are re-exported here under the course's roof."""
from __future__ import annotations

import importlib.util
import os
import random
import sys
from types import ModuleType

import numpy as np
import torch

from hw2 import REPO_DIR
from hw2.cli import DATA_DIR_ENV, resolve_data_dir  # noqa: F401
from hw2.figures import plot_lines, save_figure  # noqa: F401


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
