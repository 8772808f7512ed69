"""Files that must never be half-written or written twice at once: atomic writes, locks and
training checkpoints whose run identity is checked before -resume continues them.

Q2's trainings save their state after every epoch together with the run's identity (the flags,
data MD5s and library versions that determine its numbers); -resume continues a checkpoint, or
reuses a finished run, only when the identity is the same.
"""
from __future__ import annotations

import argparse
import fcntl
import json
import os
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np
import torch

from hw2.cli import fail


@contextmanager
def atomic_write(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it is renamed to `path`, so a reader
    never sees half a file. On any error or interruption the temporary file is removed and
    the previous `path`, if any, is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # two processes never share one
    try:
        yield tmp
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


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


def save_checkpoint(state: Mapping[str, Any], path: Path) -> None:
    """torch.save to a temporary name, then rename: an interruption never leaves half a file."""
    with atomic_write(path) as tmp:
        torch.save(state, tmp)


def read_checkpoint(path: Path) -> dict:
    """A checkpoint's state (tensors on the CPU), or a one-line error for a damaged file."""
    try:
        return torch.load(path, weights_only=False, map_location="cpu")
    except Exception as err:  # truncated, or not a checkpoint at all
        raise fail(f"{path}: unreadable checkpoint ({type(err).__name__}); delete it to start "
                   "afresh") from None


def check_identity(path: Path, saved: dict | None, identity: dict, flag: str = "-resume"
                   ) -> None:
    """Stop, naming what differs, unless `saved` (the identity recorded in `path`) is
    `identity`; `flag` is what asked for the file (-resume, -analysis_only)."""
    how = f"run without {flag}, or delete it, to start afresh"
    if saved is None:
        raise fail(f"{flag}: {path} records no run identity (an older version wrote it); {how}")
    changed = [f"{key} {saved.get(key)!r} -> {value!r}" for key, value in identity.items()
               if saved.get(key) != value]
    if changed:
        raise fail(f"{flag}: {path} is another run ({', '.join(changed)}); {how}")


def rng_state() -> dict:
    """The RNG states a training draws from (torch's CPU generator and the GPU's, if any)."""
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def restore_rng(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class Checkpoint:
    """One training's state file, for Q2 and Q3 alike: `with Checkpoint(path, identity,
    resume)` holds its lock (a second process training the same run stops at once); `load`
    returns the saved state when -resume asked for it and the run identity matches (the RNG
    restored), `save` writes it atomically with the identity and the RNG state."""

    def __init__(self, path: Path, identity: dict, resume: bool):
        self.path, self.identity, self.resume = Path(path), identity, resume
        self._lock = exclusive(self.path.with_suffix(".lock"), f"the checkpoint {self.path}")

    def __enter__(self) -> "Checkpoint":
        self._lock.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._lock.__exit__(*exc)

    def load(self) -> dict | None:
        if not (self.resume and self.path.exists()):
            return None
        state = read_checkpoint(self.path)
        check_identity(self.path, state.get("identity"), self.identity)
        restore_rng(state["rng"])
        return state

    def save(self, state: Mapping[str, Any]) -> None:
        save_checkpoint({**state, "identity": self.identity, "rng": rng_state()}, self.path)


# Flags that change what a training computes, besides its learning rates and variant.
IDENTITY_FLAGS = ("epochs", "batch_size", "dropout", "l2_decay", "optimizer", "subset", "seed")
CHECKPOINT_FORMAT = 2  # 1: the written-out backward pass's StackedCNN (before issue 16)


def config_name(lr: float, args: argparse.Namespace, no_maxpool: bool) -> str:
    """The handed-out naming: {lr}-{dropout}-{l2_decay}-{optimizer}-{no_maxpool}."""
    return f"{lr}-{args.dropout}-{args.l2_decay}-{args.optimizer}-{no_maxpool}"


def run_identity(learning_rates: list[float], no_maxpool: bool, args: argparse.Namespace,
                 data_info: dict) -> dict:
    """Everything that determines the numbers of one training."""
    return {"learning_rates": list(learning_rates), "no_maxpool": no_maxpool,
            **{flag: getattr(args, flag) for flag in IDENTITY_FLAGS},
            "device": torch.device(args.device).type, "data_md5": data_info["md5"],
            "real_images_md5": data_info.get("real_check_md5"),
            "torch": torch.__version__, "numpy": np.__version__}


@dataclass
class History:
    """What a training has done so far: every batch loss ((R, batches) per epoch, R runs) and
    each run's validation accuracy after each epoch."""
    epoch: int = 0
    losses: list[torch.Tensor] = field(default_factory=list)
    val_acc: list[list[float]] = field(default_factory=list)
    seconds: float = 0.0

    def record(self, losses: torch.Tensor, accuracies: list[float], seconds: float,
               names: list[str]) -> None:
        """Add one finished epoch (after checking it did not diverge) and print it."""
        self.epoch += 1
        stop_if_diverged(losses, self.epoch, names)
        self.losses.append(losses.cpu())  # curves and checkpoints stay device-free
        self.val_acc.append(accuracies)
        self.seconds += seconds
        print(f"epoch {self.epoch} [{', '.join(names)}]  train loss "
              + " ".join(f"{v:.4f}" for v in losses.mean(dim=1))
              + "  valid acc " + " ".join(f"{v:.4f}" for v in accuracies), flush=True)


def stop_if_diverged(losses: torch.Tensor, epoch: int, names: list[str]) -> None:
    """End the run (exit status 1) at the first non-finite batch loss of the epoch, before
    the epoch is checkpointed or anything is plotted or written: a diverged network's scores
    are not results. Checked once per epoch, so the training loop itself is untouched."""
    bad = (~torch.isfinite(losses)).nonzero().tolist()  # [run, step] pairs
    if bad:
        r, step = min(bad, key=lambda rs: (rs[1], rs[0]))
        raise fail(f"training diverged: loss {losses[r, step].item()} at epoch {epoch}, step "
                   f"{step + 1} of {losses.shape[1]} ({names[r]}); nothing was written for "
                   "it; lower the learning rate")


class Q2Checkpoint:
    """The state of one training after each epoch, in <checkpoint_dir>/<names>-seed<seed>.pt;
    `with Checkpoint(...)` holds its lock, so a second process training the same runs stops
    at once."""

    def __init__(self, names: list[str], args: argparse.Namespace, identity: dict):
        self.path = Path(args.checkpoint_dir) / ("+".join(names) + f"-seed{args.seed}.pt")
        self.identity, self.resume_asked, self.cuda = identity, args.resume, \
            args.device.startswith("cuda")
        self._lock = exclusive(self.path.with_suffix(".lock"), f"the checkpoint {self.path}")

    def __enter__(self) -> "Q2Checkpoint":
        self._lock.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._lock.__exit__(*exc)

    def resume(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None
               ) -> History:
        """With -resume and a checkpoint of this run: its model, optimizer (if it has one),
        RNG and history; else a fresh history."""
        if not (self.resume_asked and self.path.exists()):
            return History()
        try:
            state = torch.load(self.path, weights_only=False)
        except Exception as err:  # truncated, or not a checkpoint at all
            raise fail(f"{self.path}: unreadable checkpoint ({type(err).__name__}); delete it "
                       "to start afresh") from None
        check_identity(self.path, state.get("identity"), self.identity)
        if state.get("format") != CHECKPOINT_FORMAT:
            raise fail(f"-resume: {self.path} was written by an older version of hw2-q2.py; "
                       "delete it to start afresh")
        model.load_state_dict(state["model"])
        if optimizer is not None:
            optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"])
        if state["cuda_rng"] is not None:
            torch.cuda.set_rng_state(state["cuda_rng"])
        print(f"resuming after epoch {state['epoch']} from {self.path}")
        return History(state["epoch"], state["losses"], state["val_acc"], state["seconds"])

    def save(self, history: History, model: torch.nn.Module,
             optimizer: torch.optim.Optimizer | None = None) -> None:
        save_checkpoint({
            **asdict(history), "model": model.state_dict(),
            "optimizer": optimizer.state_dict() if optimizer is not None else None,
            "rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state() if self.cuda else None,
            "identity": self.identity, "format": CHECKPOINT_FORMAT}, self.path)


def finished_run_path(lr: float, no_maxpool: bool, args: argparse.Namespace) -> Path:
    return Path(args.checkpoint_dir) / f"{config_name(lr, args, no_maxpool)}-seed{args.seed}.json"


def save_finished_run(path: Path, run: dict, identity: dict) -> None:
    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps({"identity": identity, "run": run}))


def load_finished_run(path: Path, identity: dict) -> dict:
    """The run stored in `path`, if it was trained with `identity`."""
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise fail(f"{path}: unreadable finished-run file ({type(err).__name__}); delete it "
                   "to train the run again") from None
    check_identity(path, record.get("identity") if isinstance(record, dict) else None, identity)
    return record["run"]
