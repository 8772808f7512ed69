#!/usr/bin/env python
"""Put OCTMNIST's `octmnist.npz` (28x28, all splits in one file) into the data folder.

Three ways, one destination (<data_dir>/octmnist.npz):
  default        download it with the `medmnist` package, as the handed-out script does;
  --source PATH  check a local copy (keys, shapes, dtypes, labels; MD5 if it claims to be the
                 real file) and copy it in place (over a different file only with --force);
  --synthetic    write a procedurally generated stand-in with OCTMNIST's exact schema and
                 class proportions (octgen.py), marked as synthetic inside the file.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import zipfile
from pathlib import Path

import numpy as np

import octgen
from utils import (DATA_DIR_ENV, Timer, ensure_writable, fail, resolve_data_dir, save_figure,
                   seed_value)

FILENAME = "octmnist.npz"
REAL_MD5 = "c68d92d5b585d8d81f7112f81e2d0842"
SPLITS = ("train", "val", "test")
REAL_SIZES = {s: sum(c) for s, c in octgen.SPLIT_COUNTS.items()}  # 97477 / 10832 / 1000
SYNTHETIC_MARK = b"hw2-synthetic-octmnist"
REAL_SAMPLE = "octmnist_kermany.npz"  # 80 genuine OCT images, if the data folder has them


def md5sum(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def synthetic_mark(path: Path) -> str | None:
    """The stand-in's description, stored as the zip comment of the .npz (numpy ignores it,
    so the arrays and keys stay exactly OCTMNIST's); None for any other file."""
    try:
        with zipfile.ZipFile(path) as archive:
            comment = archive.comment
    except (OSError, zipfile.BadZipFile):
        return None
    return comment.decode() if comment.startswith(SYNTHETIC_MARK) else None


def validate_octmnist(path: Path) -> dict[str, int]:
    """Check that `path` is an OCTMNIST-shaped file; return the split sizes or raise `fail`."""
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except FileNotFoundError:
        raise fail(f"{path}: no such file") from None
    except Exception as err:  # zip, pickle or format errors all mean: not a readable .npz
        raise fail(f"{path}: not a readable .npz file ({type(err).__name__}: {err})") from None
    missing = [f"{s}_{k}" for s in SPLITS for k in ("images", "labels")
               if f"{s}_{k}" not in arrays]
    if missing:
        raise fail(f"{path}: missing key {', '.join(missing)} (found {sorted(arrays)})")
    sizes = {}
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
        sizes[split] = len(images)
    claims_real = sizes == REAL_SIZES and synthetic_mark(path) is None
    if claims_real and md5sum(path) != REAL_MD5:
        raise fail(f"{path}: has OCTMNIST's split sizes but not its MD5 ({REAL_MD5}); "
                   "the file is corrupt or modified")
    return sizes


def describe(path: Path) -> dict:
    """What a data file is, for results files: real OCTMNIST, the synthetic stand-in, or other."""
    mark = synthetic_mark(path)
    if mark is not None:
        return {"file": str(path), "kind": "synthetic", "synthetic": True, "description": mark}
    real = md5sum(path) == REAL_MD5
    return {"file": str(path), "kind": "OCTMNIST (MedMNIST v2)" if real else "other npz",
            "synthetic": False, "md5_matches_octmnist": real}


def write_synthetic(target: Path, seed: int,
                    severity_power: float = octgen.SEVERITY_POWER) -> None:
    arrays = octgen.make_dataset(seed, severity_power=severity_power)
    tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp.npz")  # unique per process
    np.savez(tmp, **arrays)
    description = (f"{SYNTHETIC_MARK.decode()}: procedural OCT B-scans (octgen.py v"
                   f"{octgen.GENERATOR_VERSION}), seed {seed}, severity power {severity_power}; "
                   "NOT the real OCTMNIST")
    with zipfile.ZipFile(tmp, "a") as archive:
        archive.comment = description.encode()
    tmp.replace(target)


def plot_real_vs_synthetic(synthetic: Path, real: Path, per_class: int = 6) -> list[Path]:
    """One row per class: genuine Kermany OCT images (left) beside synthetic ones (right)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def first_of_each_class(path: Path, splits) -> list[np.ndarray]:
        with np.load(path) as d:
            images = np.concatenate([d[f"{s}_images"][:2000] for s in splits])
            labels = np.concatenate([d[f"{s}_labels"][:2000] for s in splits]).ravel()
        return [images[labels == c][:per_class] for c in range(len(octgen.CLASSES))]

    real_rows = first_of_each_class(real, SPLITS)
    synthetic_rows = first_of_each_class(synthetic, ("train",))
    fig, axes = plt.subplots(len(octgen.CLASSES), 2 * per_class,
                             figsize=(2 * per_class * 0.9, len(octgen.CLASSES) * 1.05))
    for c, name in enumerate(octgen.CLASSES):
        for j in range(2 * per_class):
            ax = axes[c, j]
            image = real_rows[c][j] if j < per_class else synthetic_rows[c][j - per_class]
            ax.imshow(image, cmap="gray", vmin=0, vmax=255)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[c, 0].set_ylabel(f"{c} {name}", fontsize=8)
    axes[0, 0].set_title("genuine (Kermany)", loc="left", fontsize=8)
    axes[0, per_class].set_title("synthetic stand-in", loc="left", fontsize=8)
    return save_figure(fig, "q2-real-vs-synthetic")


def download(root: Path) -> None:
    """The handed-out behaviour: medmnist downloads the whole octmnist.npz into root."""
    try:
        import medmnist
        medmnist.OCTMNIST(split="train", download=True, root=str(root))
    except Exception as err:
        reason = " ".join(str(err).split())[:120]
        raise fail(f"could not download OCTMNIST ({reason}); offline, use "
                   "--source PATH for a local octmnist.npz or --synthetic for the stand-in") \
            from None


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Get OCTMNIST (octmnist.npz) for Question 2: download it, copy a local "
                    "copy, or write a synthetic stand-in with the same schema.")
    parser.add_argument("-data_dir", "--root", dest="data_dir", default=None,
                        help=f"destination folder (default: ${DATA_DIR_ENV}, else ./data)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--source", type=Path, help="validate this local octmnist.npz and copy it")
    mode.add_argument("--synthetic", action="store_true",
                      help="write the procedural stand-in (about 30 s on 2 cores)")
    parser.add_argument("--seed", "-seed", type=seed_value, default=42,
                        help="seed of the synthetic stand-in (default: %(default)s)")
    parser.add_argument("--force", action="store_true",
                        help="replace an existing octmnist.npz: any other file with --source, "
                             "one that is not synthetic with --synthetic")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    root = resolve_data_dir(args.data_dir)
    if root.exists() and not root.is_dir():
        raise fail(f"{root} exists and is not a directory")
    ensure_writable(root, "-data_dir")
    target = root / FILENAME
    if args.synthetic and target.exists() and synthetic_mark(target) is None and not args.force:
        raise fail(f"{target} exists and is not synthetic; pass --force to replace it")
    with Timer() as timer:
        if args.source:
            sizes = validate_octmnist(args.source)
            if target.exists() and not args.force and md5sum(target) != md5sum(args.source):
                raise fail(f"{target} exists and differs from {args.source}; pass --force to "
                           "replace it")
            if args.source.resolve() != target.resolve():
                tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp")
                shutil.copyfile(args.source, tmp)
                tmp.replace(target)  # never half a file, even if the copy is interrupted
        elif args.synthetic:
            write_synthetic(target, args.seed)
            sizes = validate_octmnist(target)
        else:
            download(root)
            sizes = validate_octmnist(target)
    print(f"{target}: {describe(target)['kind']}, train/val/test = "
          f"{sizes['train']}/{sizes['val']}/{sizes['test']} ({timer.seconds:.1f} s)")
    real = next((d / REAL_SAMPLE for d in (root, resolve_data_dir(None))
                 if (d / REAL_SAMPLE).exists()), None)
    if args.synthetic and real is not None:
        print("wrote " + ", ".join(map(str, plot_real_vs_synthetic(target, real))))


if __name__ == "__main__":
    main()
