"""Files that must never be half-written or written twice at once: atomic writes, locks and
training checkpoints (Q2's and Q3's) whose run identity is checked before -resume continues
them. Every file the scripts write goes through `atomic_write`, so an interruption or a full
disk leaves the previous file as it was and no temporary file behind.
"""
from __future__ import annotations

import fcntl
import glob
import io
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping

import torch

from hw2.cli import fail


@contextmanager
def atomic_write(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it is renamed to `path`, so a reader
    never sees half a file. On any error or interruption the temporary file is removed and
    the previous `path`, if any, is left as it was; an OSError (a full disk, a file-size
    limit) ends the script with one line naming `path`."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # two processes never share one
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(path)
        yield tmp
        tmp.replace(path)
    except OSError as err:
        raise fail(f"{path}: could not be written ({err.strerror or type(err).__name__}); "
                   "the previous file, if any, is unchanged") from None
    finally:
        tmp.unlink(missing_ok=True)


def remove_stale_temporaries(path: Path) -> None:
    """Remove the temporary files of `path` that a killed process left (SIGKILL runs no
    clean-up): those whose process id is no longer running."""
    for tmp in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        pid = tmp.name[len(path.name) + 2:-len(".tmp")]
        if pid.isdigit() and not process_alive(int(pid)):
            tmp.unlink(missing_ok=True)


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


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
        try:  # while still locked, so no one else's lock file is removed
            lock_path.unlink(missing_ok=True)  # gone already if its folder was removed
        finally:
            os.close(fd)


def save_checkpoint(state: Mapping[str, Any], path: Path) -> None:
    """torch.save, atomically. The state is serialized in memory first: torch's file writer
    reports a full disk as a bare RuntimeError, Python's write as the OSError it is."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    with atomic_write(path) as tmp:
        tmp.write_bytes(buffer.getbuffer())


def read_checkpoint(path: Path) -> dict:
    """A checkpoint's state (tensors on the CPU), or a one-line error for a damaged file."""
    try:
        return torch.load(path, weights_only=False, map_location="cpu")
    except Exception as err:  # truncated, or not a checkpoint at all
        raise fail(f"{path}: unreadable checkpoint ({type(err).__name__}); delete it to start "
                   "afresh") from None


def check_identity(path: Path, saved: dict | None, identity: dict, flag: str = "-resume",
                   implied: Mapping[str, Any] | None = None) -> None:
    """Stop, naming what differs, unless `saved` (the identity recorded in `path`) is
    `identity`; `flag` is what asked for the file (-resume, -analysis_only). `implied`: the
    values of flags added after older files were written, which those files lack."""
    how = f"run without {flag}, or delete it, to start afresh"
    if saved is None:
        raise fail(f"{flag}: {path} records no run identity (an older version wrote it); {how}")
    saved = {**(implied or {}), **saved}
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
    resume)` holds its lock (a second process training the same run stops at once; Q3 locks
    the same file itself, to hold it over its results too); `load` returns the saved state when
    -resume asked for it and the run identity matches (the RNG restored), `save` writes it
    atomically with the identity and the RNG state."""

    def __init__(self, path: Path, identity: dict, resume: bool,
                 implied: Mapping[str, Any] | None = None):
        self.path, self.identity, self.resume = Path(path), identity, resume
        self.implied = implied  # see check_identity
        self.lock_path = self.path.with_suffix(".lock")

    def __enter__(self) -> "Checkpoint":
        self._lock = exclusive(self.lock_path, f"the checkpoint {self.path}")
        self._lock.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._lock.__exit__(*exc)

    def load(self) -> dict | None:
        if not (self.resume and self.path.exists()):
            return None
        state = read_checkpoint(self.path)
        check_identity(self.path, state.get("identity"), self.identity, implied=self.implied)
        restore_rng(state["rng"])
        return state

    def save(self, state: Mapping[str, Any]) -> None:
        save_checkpoint({**state, "identity": self.identity, "rng": rng_state()}, self.path)
