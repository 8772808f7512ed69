"""Shared test set-up: the repository on the import path, `load_script` for the hyphenated
scripts, and the offline data. Tests pass -out_dir (or a folder) to whatever writes.

The offline data are reached through the scripts' own rule (`utils.resolve_data_dir`):
HW2_DATA_DIR if set, which defaults here to ../shared/data, the workplace's data folder
beside the clone. Tests that need a file there skip, with the reason, when it is absent.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HW2_DATA_DIR", str(REPO.parent / "shared" / "data"))

import utils  # noqa: E402
from utils import load_script  # noqa: E402,F401  (tests import it from here)


def shared_file(relative: str) -> Path:
    """A file of the offline data folder, or skip the test saying what is missing."""
    path = utils.resolve_data_dir(None) / relative
    if not path.exists():
        pytest.skip(f"offline data not found: {path} (set {utils.DATA_DIR_ENV})")
    return path


def write_corpus(root, lines, wav_ids=(), seconds=0.5):
    """A tiny LJ-layout folder: metadata lines and a tone for each id in wav_ids."""
    (root / "wavs").mkdir(parents=True, exist_ok=True)
    (root / "metadata.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    t = np.arange(int(22050 * seconds)) / 22050
    for i, clip_id in enumerate(wav_ids):
        tone = 0.3 * np.sin(2 * np.pi * (220 + 40 * i) * t)
        soundfile.write(str(root / "wavs" / f"{clip_id}.wav"), tone, 22050,
                        subtype="PCM_16")
    return root

