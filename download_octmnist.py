#!/usr/bin/env python
"""Put OCTMNIST's `octmnist.npz` (28x28, all splits in one file) into the data folder.

Three ways, one destination (octmnist.npz in -data_dir, else ./data):
  default        download it with the `medmnist` package, as the handed-out script does;
  -source PATH   check a local copy (keys, shapes, dtypes, labels; MD5 if it claims to be the
                 real file) and copy it in place (over a different file only with -force);
  -synthetic     write a procedurally generated stand-in with OCTMNIST's exact schema and
                 class proportions (hw2/synthetic_oct.py), marked as synthetic inside the file.
"""
from __future__ import annotations

import argparse
import shutil
import zipfile
from pathlib import Path

import numpy as np

from hw2 import figures, octmnist
from hw2 import synthetic_oct
from hw2.checkpoints import atomic_write
from hw2.cli import (DATA_DIR_ENV, add_common_args, apply_common_args, ensure_writable, fail,
                     write_data_dir)
from hw2.octmnist import FILENAME, SPLITS, SYNTHETIC_MARK, md5sum, synthetic_mark
from hw2.results import Timer


def write_synthetic(target: Path, seed: int) -> None:
    arrays = synthetic_oct.make_dataset(seed)
    # The generator's file was called octgen.py when this text was fixed; it stays as it is so
    # that the file's bytes, and the MD5 every run identity holds, do not change.
    description = (f"{SYNTHETIC_MARK.decode()}: procedural OCT B-scans (octgen.py v"
                   f"{synthetic_oct.GENERATOR_VERSION}), seed {seed}, severity power "
                   f"{synthetic_oct.SEVERITY_POWER}; NOT the real OCTMNIST")
    with atomic_write(target) as tmp:
        with open(tmp, "wb") as f:  # a file object: np.savez would append ".npz" to a name
            np.savez(f, **arrays)
        with zipfile.ZipFile(tmp, "a") as archive:
            archive.comment = description.encode()


def first_of_each_class(file: octmnist.OctFile, splits, count: int) -> list[np.ndarray]:
    """The first `count` images of each class in the splits, in label order."""
    images = np.concatenate([file.arrays[f"{s}_images"][:2000] for s in splits])
    labels = np.concatenate([file.arrays[f"{s}_labels"][:2000] for s in splits]).ravel()
    return [images[labels == c][:count] for c in range(len(octmnist.CLASSES))]


def plot_real_vs_synthetic(synthetic: octmnist.OctFile, real: octmnist.OctFile,
                           plots_dir: Path, per_class: int = 4) -> list[Path]:
    """Genuine Kermany OCT images beside synthetic ones, a row per class."""
    return figures.plot_real_vs_synthetic(first_of_each_class(real, SPLITS, per_class),
                                          first_of_each_class(synthetic, ("train",), per_class),
                                          octmnist.CLASSES, plots_dir)


def download(root: Path) -> None:
    """The handed-out behaviour: medmnist downloads the whole octmnist.npz into root."""
    try:
        import medmnist
        medmnist.OCTMNIST(split="train", download=True, root=str(root))
    except Exception as err:
        reason = " ".join(str(err).split())[:120]
        raise fail(f"could not download OCTMNIST ({reason}); offline, use "
                   "-source PATH for a local octmnist.npz or -synthetic for the stand-in") \
            from None


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Get OCTMNIST (octmnist.npz) for Question 2: download it, copy a local "
                    "copy, or write a synthetic stand-in with the same schema.")
    parser.add_argument("-data_dir", "--root", dest="data_dir", default=None,
                        help=f"destination folder (default: ./data, never ${DATA_DIR_ENV}, "
                             "which is only read from; --root is the handed-out spelling)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("-source", type=Path, help="validate this local octmnist.npz and copy it")
    mode.add_argument("-synthetic", action="store_true",
                      help="write the procedural stand-in (about 30 s on 2 cores)")
    add_common_args(parser, data=False,
                    force_help="replace an existing octmnist.npz: any other file with -source, "
                               "one that is not synthetic with -synthetic")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    out = apply_common_args(args)
    source = octmnist.read(args.source) if args.source else None  # checked before any write
    root = write_data_dir(args.data_dir)
    if root.exists() and not root.is_dir():
        raise fail(f"{root} exists and is not a directory")
    ensure_writable(root, "-data_dir")
    target = root / FILENAME
    if args.synthetic and target.exists() and synthetic_mark(target) is None and not args.force:
        raise fail(f"{target} exists and is not synthetic; pass -force to replace it")
    with Timer() as timer:
        if source:
            if target.exists() and not args.force and md5sum(target) != source.md5:
                raise fail(f"{target} exists and differs from {args.source}; pass -force to "
                           "replace it")
            if args.source.resolve() != target.resolve():
                with atomic_write(target) as tmp:
                    shutil.copyfile(args.source, tmp)
            data = source
        else:
            if args.synthetic:
                write_synthetic(target, args.seed)
            else:
                download(root)
            data = octmnist.read(target)
    sizes = data.sizes()
    print(f"{target}: {data.describe()['kind']}, train/val/test = "
          f"{sizes['train']}/{sizes['val']}/{sizes['test']} ({timer.seconds:.1f} s)")
    real = octmnist.find_real_check(None, root)
    if args.synthetic and real is not None:
        paths = plot_real_vs_synthetic(data, octmnist.read(real), out.plots)
        print("wrote " + ", ".join(map(str, paths)))


if __name__ == "__main__":
    main()
