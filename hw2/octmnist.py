"""Question 2 data: OCTMNIST's octmnist.npz (the real file or the synthetic stand-in) and the
80 genuine Kermany OCT images, each read once and checked (keys, shapes, dtypes, labels, MD5),
then prepared as the handed-out utils.load_oct_data did: images flattened and divided by 256,
and "test" cut to the handed-out 529-image subset ("test_full" keeps all 1,000).
"""
from __future__ import annotations

import hashlib
import io
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from hw2.cli import fail, resolve_data_dir

FILENAME = "octmnist.npz"
REAL_MD5 = "c68d92d5b585d8d81f7112f81e2d0842"
SPLITS = ("train", "val", "test")
CLASSES = ("CNV", "DME", "drusen", "normal")  # labels 0..3
# OCTMNIST's split sizes per class (train / val / test), in label order 0..3.
SPLIT_COUNTS = {
    "train": (33484, 10213, 7754, 46026),
    "val": (3721, 1135, 862, 5114),
    "test": (250, 250, 250, 250),
}
REAL_SIZES = {s: sum(c) for s, c in SPLIT_COUNTS.items()}  # 97477 / 10832 / 1000
SYNTHETIC_MARK = b"hw2-synthetic-octmnist"
REAL_CHECK_FILENAME = "octmnist_kermany.npz"  # 80 genuine OCT images, if the data folder has them
MAX_CHECK_IMAGES = 500  # -real_images holds a few genuine images, never a training set
TEST_SUBSET = (182, 55, 42, 250)  # first test images of classes 0..3 the handed-out loader keeps


@dataclass
class OctFile:
    """One OCTMNIST-shaped .npz file, read and checked."""
    path: Path
    arrays: dict[str, np.ndarray]
    md5: str
    mark: str | None  # the synthetic stand-in's description; None for any other file

    def sizes(self) -> dict[str, int]:
        return {split: len(self.arrays[f"{split}_images"]) for split in SPLITS}

    def describe(self) -> dict:
        """What the file is, for results files: real OCTMNIST, the synthetic stand-in, or other."""
        if self.mark is not None:
            return {"file": str(self.path), "kind": "synthetic", "synthetic": True,
                    "description": self.mark, "md5": self.md5}
        real = self.md5 == REAL_MD5
        return {"file": str(self.path), "kind": "OCTMNIST (MedMNIST v2)" if real else "other npz",
                "synthetic": False, "md5_matches_octmnist": real, "md5": self.md5}


def md5sum(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def synthetic_mark(source: Path | io.BytesIO) -> str | None:
    """The stand-in's description, stored as the zip comment of the .npz (numpy ignores it, so
    the arrays and keys stay exactly OCTMNIST's); None for any other file."""
    try:
        with zipfile.ZipFile(source) as archive:
            comment = archive.comment
    except (OSError, zipfile.BadZipFile):
        return None
    return comment.decode() if comment.startswith(SYNTHETIC_MARK) else None


def read(path: Path) -> OctFile:
    """Read `path` once and check that it is an OCTMNIST-shaped file, or raise `fail`."""
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise fail(f"{path}: no such file") from None
    except IsADirectoryError:
        raise fail(f"{path}: is a folder, not an .npz file") from None
    except OSError as err:
        raise fail(f"{path}: cannot be read ({err.strerror or type(err).__name__})") from None
    try:
        with np.load(io.BytesIO(raw), allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except Exception as err:  # zip, pickle or format errors all mean: not a readable .npz
        raise fail(f"{path}: not a readable .npz file ({type(err).__name__}: {err})") from None
    file = OctFile(Path(path), arrays, hashlib.md5(raw).hexdigest(),
                   synthetic_mark(io.BytesIO(raw)))
    check_schema(file)
    if file.sizes() == REAL_SIZES and file.mark is None and file.md5 != REAL_MD5:
        raise fail(f"{path}: has OCTMNIST's split sizes but not its MD5 ({REAL_MD5}); "
                   "the file is corrupt or modified")
    return file


def check_schema(file: OctFile) -> None:
    """OCTMNIST's keys, uint8 (N, 28, 28) images and (N, 1) labels in 0..3, or `fail`."""
    path, arrays = file.path, file.arrays
    missing = [f"{s}_{k}" for s in SPLITS for k in ("images", "labels")
               if f"{s}_{k}" not in arrays]
    if missing:
        raise fail(f"{path}: missing key {', '.join(missing)} (found {sorted(arrays)})")
    for split in SPLITS:
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
            raise fail(f"{path}: {split}_images must be uint8 (N, 28, 28), "
                       f"got {images.dtype} {images.shape}")
        if labels.shape != (len(images), 1):
            raise fail(f"{path}: {split}_labels must have shape ({len(images)}, 1), "
                       f"got {labels.shape}")
        if labels.size and (labels.min() < 0 or labels.max() > 3):
            raise fail(f"{path}: {split}_labels must lie in 0..3 (found {labels.min()}.."
                       f"{labels.max()})")


def data_path(data_dir: str | os.PathLike | None = None) -> Path:
    """<data_dir>/octmnist.npz, or a one-line error saying how to get it."""
    path = resolve_data_dir(data_dir) / FILENAME
    if not path.exists():
        raise fail(f"{path} not found: run python download_octmnist.py "
                   "(offline: -synthetic or -source PATH)")
    return path


def as_tensors(images: np.ndarray, labels: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """The handed-out preprocessing: (N, 784) float32 images divided by 256, int64 labels."""
    return (torch.tensor(images.reshape(len(images), -1) / 256, dtype=torch.float32),
            torch.tensor(labels.reshape(-1), dtype=torch.long))


def load_splits(data_dir: str | os.PathLike | None, subset: int | None = None
                ) -> tuple[dict[str, tuple[torch.Tensor, torch.Tensor]], dict]:
    """train / dev / test (the 529-image subset) / test_full as tensors, and what the data are
    (for results files and run identities). `subset` keeps the first N train and dev images."""
    file = read(data_path(data_dir))
    splits = {name: as_tensors(file.arrays[f"{key}_images"], file.arrays[f"{key}_labels"])
              for name, key in (("train", "train"), ("dev", "val"), ("test_full", "test"))}
    test_x, test_y = splits["test_full"]
    keep = torch.cat([torch.nonzero(test_y == c).flatten()[:n] for c, n in enumerate(TEST_SUBSET)])
    splits["test"] = (test_x[keep], test_y[keep])
    if subset:
        for name in ("train", "dev"):
            splits[name] = tuple(t[:subset] for t in splits[name])
    info = file.describe()
    info["sizes"] = {name: len(y) for name, (_, y) in splits.items()}
    if subset:
        info["subset"] = f"first {subset} train and validation images"
    return splits, info


def find_real_check(flag: str | None, data_dir: str | os.PathLike | None) -> Path | None:
    """The genuine-image file: -real_images if given (it must exist), else
    octmnist_kermany.npz in the data folder or in $HW2_DATA_DIR, else None."""
    if flag:
        if not Path(flag).exists():
            raise fail(f"{flag} not found (-real_images)")
        if Path(flag).is_dir():
            raise fail(f"{flag} is a folder, not an .npz file (-real_images)")
        return Path(flag)
    for folder in (resolve_data_dir(data_dir), resolve_data_dir(None)):
        if (folder / REAL_CHECK_FILENAME).exists():
            return folder / REAL_CHECK_FILENAME
    return None


def check_is_check_set(file: OctFile) -> None:
    """A check set is a few genuine images in OCTMNIST's schema: neither the synthetic
    stand-in nor OCTMNIST itself (training files), nor more than MAX_CHECK_IMAGES images."""
    what = "the synthetic stand-in" if file.mark is not None else \
        "OCTMNIST itself" if file.md5 == REAL_MD5 else None
    if what:
        raise fail(f"{file.path}: is {what}, a training file, not a check set of genuine "
                   "images (-real_images)")
    count = sum(file.sizes().values())
    if count > MAX_CHECK_IMAGES:
        raise fail(f"{file.path}: holds {count} images; a check set of genuine images has at "
                   f"most {MAX_CHECK_IMAGES} (-real_images)")


def load_real_check(path: Path) -> tuple[tuple[torch.Tensor, torch.Tensor], str]:
    """The genuine Kermany OCT images of all three splits together, preprocessed like
    OCTMNIST, and the file's MD5."""
    file = read(path)
    check_is_check_set(file)
    images = np.concatenate([file.arrays[f"{s}_images"] for s in SPLITS])
    labels = np.concatenate([file.arrays[f"{s}_labels"] for s in SPLITS])
    return as_tensors(images, labels), file.md5


class Data(NamedTuple):
    """What hw2-q2.py trains and scores on."""
    splits: dict[str, tuple[torch.Tensor, torch.Tensor]]  # train, dev, test (529), test_full
    real_check: tuple[torch.Tensor, torch.Tensor] | None  # the genuine Kermany images
    info: dict  # what the data are, for results files and run identities


def load(data_dir: str | os.PathLike | None, subset: int | None, real_images: str | None,
         device: str) -> Data:
    """The splits and, when there is one, the genuine-image check, checked and on `device`."""
    splits, info = load_splits(data_dir, subset)
    real_path = find_real_check(real_images, data_dir)
    real_check, info["real_check"], info["real_check_md5"] = None, None, None
    if real_path:
        real_check, info["real_check_md5"] = load_real_check(real_path)
        if info["real_check_md5"] == info["md5"]:
            raise fail(f"{real_path}: is the training file, not a check set (-real_images)")
        real_check, info["real_check"] = tuple(t.to(device) for t in real_check), str(real_path)
    return Data({k: tuple(t.to(device) for t in v) for k, v in splits.items()}, real_check, info)
