#!/usr/bin/env python
"""Q2 training speed: the handed-out loop against hw2-q2.py's ways, side by side in one run,
from the same seed on the same images (handed_out, one_run, side_by_side, two_processes,
compiled with -compile; report/engineering.md describes each). Prints milliseconds per step
and run, the speed-up over handed_out, and how far each side-by-side run ends from its
handed-out run (float rounding only). Writes report/results/q2-bench.json.

    python bench/q2_bench.py [-train 4000] [-val 450] [-epochs 2] [-repeats 3] [-compile]
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import utils  # noqa: E402
from hw2 import cli, octmnist, side_by_side, synthetic_oct  # noqa: E402
from hw2.cli import positive_int  # noqa: E402
from hw2.results import Timer, check_replaceable, write_results  # noqa: E402
from utils import configure_seed  # noqa: E402

q2 = utils.load_script("hw2-q2.py")

LEARNING_RATES = list(q2.LEARNING_RATES)
VARIANTS = {"max-pool": False, "no max-pool": True}


class HandedOutDataset(Dataset):
    """The handed-out ClassificationDataset: one (x, y) pair per __getitem__."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor):
        self.X, self.y = x, y

    def __len__(self) -> int:
        return len(self.X)

    def __getitem__(self, idx):
        return self.X[idx], self.y[idx]


def handed_out_run(lr: float, splits: dict, epochs: int, seed: int, no_maxpool: bool = False
                   ) -> tuple[list[torch.nn.Module], torch.Tensor]:
    """The handed-out main loop (minus printing and plotting): the model and every loss."""
    configure_seed(seed)
    model = q2.CNN(0.7, no_maxpool=no_maxpool)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, weight_decay=0)
    loader = DataLoader(HandedOutDataset(*splits["train"]), batch_size=8, shuffle=True)
    losses = []
    for _ in range(epochs):
        for xb, yb in loader:
            optimizer.zero_grad()
            loss = F.nll_loss(model(xb), yb)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        model.eval()  # evaluate(): the whole split at once, autograd on
        (model(splits["dev"][0]).argmax(-1) == splits["dev"][1]).float().mean().item()
        model.train()
    return [model], torch.tensor([losses])


def repo_runs(lrs: list[float], splits: dict, epochs: int, seed: int, no_maxpool: bool = False
              ) -> tuple[list[torch.nn.Module], torch.Tensor]:
    """hw2-q2.py's training of `lrs` (one: its handed-out loop; several: side by side), with
    its checkpoints in a temporary folder: the final models and every loss, (runs, steps)."""
    with tempfile.TemporaryDirectory() as folder:
        args = q2.parse_args(["-epochs", str(epochs), "-no_progress", "-seed", str(seed),
                              "-checkpoint_dir", folder])
        configure_seed(seed)
        model = q2.CNN(args.dropout, no_maxpool=no_maxpool)
        names = [q2.config_name(lr, args, no_maxpool) for lr in lrs]
        with q2.open_checkpoint(names, args, identity={}) as checkpoint:
            history, states = q2.train_models(lrs, model, args, octmnist.Data(splits, None, {}),
                                              checkpoint, names)
    models = []
    for state in states:
        models.append(q2.CNN(args.dropout, no_maxpool=no_maxpool))
        models[-1].load_state_dict(state)
    return models, torch.cat(history.losses, dim=1)


@contextmanager
def compiled_step():
    """SideBySideCNN.sgd_step under torch.compile inside the block, so that the compiled way
    is timed as side_by_side is, validation and checkpoints included."""
    step = side_by_side.SideBySideCNN.sgd_step
    side_by_side.SideBySideCNN.sgd_step = torch.compile(step)
    try:
        yield
    finally:
        side_by_side.SideBySideCNN.sgd_step = step


def first_images(splits: dict, n: int = 64) -> dict:
    """The first n images of every split: a short run to pay one-time setup costs before
    timing."""
    return {k: (x[:n], y[:n]) for k, (x, y) in splits.items()}


def synthetic_split(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    labels = np.random.default_rng(seed).integers(0, 4, n).astype(np.uint8)
    images = synthetic_oct.render(labels, np.random.default_rng(seed + 1))
    return octmnist.as_tensors(images, labels)


def max_weight_diff(a: torch.nn.Module, b: torch.nn.Module) -> float:
    return max((pa - pb).abs().max().item() for pa, pb in zip(a.parameters(), b.parameters()))


def drift(models: list[torch.nn.Module], losses: torch.Tensor, r: int, reference) -> dict:
    """How far run r of (models, losses) ended from a handed-out run (reference)."""
    return {"max_weight_diff": max_weight_diff(models[r], reference[0][0]),
            "max_loss_diff": (losses[r] - reference[1][0]).abs().max().item()}


@contextmanager
def onednn_off():
    """Convolutions with PyTorch's own kernels instead of oneDNN's, for the rounding reference."""
    enabled = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = False
    try:
        yield
    finally:
        torch.backends.mkldnn.enabled = enabled


def sweep_in_two_processes(args: argparse.Namespace) -> float:
    """Seconds for both networks' three runs in two 1-thread processes at once (each process
    times its own training, leaving out its start-up)."""
    command = [sys.executable, __file__, "-train", str(args.train), "-val", str(args.val),
               "-epochs", str(args.epochs), "-seed", str(args.seed), "-worker"]
    workers = [subprocess.Popen(command + [variant], stdout=subprocess.PIPE, text=True)
               for variant in VARIANTS]
    outputs = [worker.communicate()[0] for worker in workers]
    if any(worker.returncode for worker in workers):
        raise SystemExit("bench/q2_bench.py: a -worker process failed (its error is above)")
    return max(float(output.split()[-1]) for output in outputs)


def measure(splits: dict, args: argparse.Namespace, steps: int) -> dict:
    """Time every way for both networks, print the tables, return the numbers. Each way is
    timed -repeats times and its fastest time counts (on a shared machine a run is only ever
    slowed down by others); the ways take turns, so that a slow spell falls on all of them."""
    small = first_images(splits)
    handed_out_run(0.01, small, 1, args.seed)
    repo_runs(LEARNING_RATES, small, 1, args.seed)
    run = (splits, args.epochs, args.seed)
    seconds: dict[str, dict[str, float]] = {v: {} for v in [*VARIANTS, "both"]}
    trained = {}

    def keep_fastest(variant: str, way: str, time: float) -> None:
        seconds[variant][way] = min(seconds[variant].get(way, float("inf")), time)

    def clock(variant: str, way: str, fn, *fn_args) -> None:
        with Timer() as timer:
            trained[variant, way] = fn(*fn_args)
        keep_fastest(variant, way, timer.seconds)

    for _ in range(args.repeats):
        for variant, no_maxpool in VARIANTS.items():
            for lr in LEARNING_RATES:
                clock(variant, f"handed_out lr {lr}", handed_out_run, lr, *run, no_maxpool)
            clock(variant, "one_run", repo_runs, [0.01], *run, no_maxpool)
            clock(variant, "side_by_side", repo_runs, LEARNING_RATES, *run, no_maxpool)
        keep_fastest("both", "two_processes", sweep_in_two_processes(args))
    if args.compile:  # last: the other ways are timed before this process ever compiles
        with compiled_step():
            for variant, no_maxpool in VARIANTS.items():
                repo_runs(LEARNING_RATES, small, 1, args.seed, no_maxpool)  # compiles
                for _ in range(args.repeats):
                    clock(variant, "compiled", repo_runs, LEARNING_RATES, *run, no_maxpool)
    per_run = {v: per_run_seconds(seconds[v]) for v in VARIANTS}
    per_run["both"] = {k: np.mean([per_run[v][k] for v in VARIANTS]) for k in per_run["max-pool"]}
    per_run["both"]["two_processes"] = seconds["both"]["two_processes"] / (2 * len(LEARNING_RATES))
    agreement = {variant: agreement_with_handed_out(trained, variant, no_maxpool, run)
                 for variant, no_maxpool in VARIANTS.items()}
    print_tables(per_run, agreement, steps)
    return {"ms_per_step": {v: {k: t / steps * 1e3 for k, t in d.items()}
                            for v, d in per_run.items()},
            "speed_up": {v: {k: d["handed_out"] / t for k, t in d.items()}
                         for v, d in per_run.items()},
            "agreement": agreement}


def per_run_seconds(seconds: dict[str, float]) -> dict[str, float]:
    """One network's timings per run: the handed-out loop's mean over the learning rates, the
    side-by-side ways' time divided by the runs they train."""
    per_run = {"handed_out": np.mean([seconds[f"handed_out lr {lr}"] for lr in LEARNING_RATES]),
               "one_run": seconds["one_run"]}
    per_run.update({k: seconds[k] / len(LEARNING_RATES) for k in ("side_by_side", "compiled")
                    if k in seconds})
    return per_run


def agreement_with_handed_out(trained: dict, variant: str, no_maxpool: bool, run: tuple) -> dict:
    """How far hw2-q2.py's runs ended from the handed-out ones, and for scale how far the
    handed-out loop ends from itself with oneDNN off."""
    handed = {lr: trained[variant, f"handed_out lr {lr}"] for lr in LEARNING_RATES}
    rounding = []
    for lr in LEARNING_RATES:
        with onednn_off():
            rounding.append(drift(*handed_out_run(lr, *run, no_maxpool), 0, handed[lr]))
    return {"agreement_one_run_lr_0_01": drift(*trained[variant, "one_run"], 0, handed[0.01]),
            "agreement_side_by_side": [drift(*trained[variant, "side_by_side"], r, handed[lr])
                                       for r, lr in enumerate(LEARNING_RATES)],
            "rounding_alone": rounding}


def print_tables(seconds: dict, agreement: dict, steps: int) -> None:
    print(f"\nms per step and run (speed-up over the handed-out loop), {steps} steps per run")
    rows = {"handed_out": "handed-out replica (mean of 3 runs)",
            "one_run": "hw2-q2.py, one run",
            "side_by_side": f"hw2-q2.py, {len(LEARNING_RATES)} runs side by side",
            "compiled": "  the same under torch.compile",
            "two_processes": "hw2-q2.py -sweep -jobs 2 (6 runs, 2 processes)"}
    print(f"{'':50s}" + "".join(f"{v:>20s}" for v in seconds))
    for key, label in rows.items():
        cells = [f"{d[key] / steps * 1e3:7.2f} ({d['handed_out'] / d[key]:5.2f}x)"
                 if key in d else "" for d in seconds.values()]
        if any(cells):
            print(f"{label:50s}" + "".join(f"{c:>20s}" for c in cells))
    print("\nagreement with the handed-out loop (same batches and dropout masks): "
          "max |weight diff|, max |loss diff|")
    for variant, d in agreement.items():
        print(f"  {variant}")
        lines = [("one run, lr 0.01", d["agreement_one_run_lr_0_01"])]
        lines += [(f"side by side, lr {lr}", x)
                  for lr, x in zip(LEARNING_RATES, d["agreement_side_by_side"])]
        lines += [(f"rounding alone, lr {lr}", x)
                  for lr, x in zip(LEARNING_RATES, d["rounding_alone"])]
        for label, x in lines:
            print(f"    {label:26s} {x['max_weight_diff']:.2e}  {x['max_loss_diff']:.2e}")
    print("  (rounding alone: the handed-out loop against itself with only its convolution "
          "kernel changed, oneDNN off)")


def main() -> None:
    parser = argparse.ArgumentParser(description="Q2 training speed: the handed-out loop "
                                                 "against hw2-q2.py's, side by side")
    parser.add_argument("-train", type=positive_int, default=4000,
                        help="training images (default: %(default)s)")
    parser.add_argument("-val", type=positive_int, default=450,
                        help="validation images (default: %(default)s, OCTMNIST's 9:1 ratio)")
    parser.add_argument("-epochs", type=positive_int, default=2, help="default: %(default)s")
    parser.add_argument("-repeats", type=positive_int, default=3,
                        help="times each way is timed; the fastest counts (default: "
                             "%(default)s)")
    parser.add_argument("-compile", action="store_true",
                        help="also time the side-by-side network under torch.compile")
    parser.add_argument("-worker", choices=list(VARIANTS), help=argparse.SUPPRESS)
    cli.add_common_args(parser, data=False, threads=True)
    args = parser.parse_args()
    out = cli.apply_common_args(args)
    if not args.worker:
        check_replaceable(out.results, "q2-bench", vars(args), args.force)
    splits = {"train": synthetic_split(args.train, 1), "dev": synthetic_split(args.val, 2)}
    if args.worker:  # one of the two processes of the -jobs 2 sweep: time its three runs
        torch.set_num_threads(1)
        repo_runs(LEARNING_RATES, first_images(splits), 1, args.seed, VARIANTS[args.worker])
        with Timer() as timer:
            repo_runs(LEARNING_RATES, splits, args.epochs, args.seed, VARIANTS[args.worker])
        print(timer.seconds)
        return
    steps = args.epochs * ((args.train + 7) // 8)
    print(f"{args.train} training images, {args.val} validation images, {args.epochs} epochs "
          f"= {steps} steps of batch 8 per run; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    with Timer() as wall:
        results = {"steps_per_run": steps, "learning_rates": LEARNING_RATES,
                   **measure(splits, args, steps)}
    path = write_results("q2-bench", results, config=vars(args), seed=args.seed,
                         data=f"synthetic_oct.render synthetic images, {args.train} train / "
                              f"{args.val} validation", wall_time_s=wall.seconds,
                         results_dir=out.results)
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
