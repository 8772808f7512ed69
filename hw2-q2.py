#!/usr/bin/env python
"""Question 2: a CNN for OCTMNIST, with max-pooling (Q2.1) and with strided convolutions
instead (Q2.2, -no_maxpool), and their trainable-parameter counts (Q2.3).

One configuration, the handed-out loop (DataLoader, torch.optim, autograd):
    python hw2-q2.py -learning_rate 0.01 [-no_maxpool]
The whole protocol: both networks x learning rates 0.1 / 0.01 / 0.001, 15 epochs of SGD with
batch 8; the best learning rate is chosen on validation accuracy with max-pooling, and the
network without max-pooling is reported at it:
    python hw2-q2.py -sweep -jobs 2
The sweep trains each network's learning rates side by side as one grouped network, making
the handed-out loop's updates (side_by_side.py). Every epoch is checkpointed; -resume continues
after an interruption (q2_runs.py). Writes plots/q2-*.{png,pdf} and report/results/q2.json
(q2-run-<config>.json for one configuration).
"""
from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset
from tqdm import tqdm

from hw2 import cli, figures, octmnist, side_by_side
from hw2.checkpoints import Q2Checkpoint, History, config_name, exclusive, run_identity
from hw2.cli import (add_common_args, fail, non_negative_float, positive_float, positive_int)
from hw2.results import Timer, write_results
from utils import configure_seed

LEARNING_RATES = (0.1, 0.01, 0.001)
N_CLASSES = 4
OPTIMIZERS = {"adam": torch.optim.Adam, "sgd": torch.optim.SGD}


class CNN(nn.Module):
    """conv(8) -> ReLU -> maxpool -> conv(16) -> ReLU -> maxpool -> fc 320 -> ReLU -> dropout
    -> fc 120 -> ReLU -> fc 4 -> LogSoftmax. With `no_maxpool` the pools are dropped and both
    convolutions take stride 2 instead, which gives the same 16 x 6 x 6 feature map."""

    def __init__(self, dropout_prob: float, no_maxpool: bool = False):
        super().__init__()
        self.no_maxpool = no_maxpool
        stride = 2 if no_maxpool else 1
        self.conv1 = nn.Conv2d(1, 8, kernel_size=3, stride=stride, padding=1)   # 28 -> 28 | 14
        self.conv2 = nn.Conv2d(8, 16, kernel_size=3, stride=stride, padding=0)  # 14 -> 12 | 6
        self.fc1 = nn.Linear(16 * 6 * 6, 320)
        self.drop = nn.Dropout(dropout_prob)
        self.fc2 = nn.Linear(320, 120)
        self.fc3 = nn.Linear(120, N_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.view(-1, 1, 28, 28)  # the data arrive flattened (B, 784)
        x = F.relu(self.conv1(x))
        if not self.no_maxpool:
            x = F.max_pool2d(x, kernel_size=2, stride=2)
        x = F.relu(self.conv2(x))
        if not self.no_maxpool:
            x = F.max_pool2d(x, kernel_size=2, stride=2)
        x = self.drop(F.relu(self.fc1(x.flatten(1))))
        x = F.relu(self.fc2(x))
        return F.log_softmax(self.fc3(x), dim=1)


def get_number_trainable_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def params_per_layer(model: nn.Module) -> dict[str, int]:
    """Trainable parameters of each layer (weights + biases)."""
    counts: dict[str, int] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            layer = name.rsplit(".", 1)[0]
            counts[layer] = counts.get(layer, 0) + p.numel()
    return counts


def train_batch(X: torch.Tensor, y: torch.Tensor, model: nn.Module,
                optimizer: torch.optim.Optimizer, criterion: nn.Module) -> float:
    """One optimizer step on the batch, as handed out; returns the batch loss."""
    optimizer.zero_grad()
    loss = criterion(model(X), y)
    loss.backward()
    optimizer.step()
    return loss.item()


@torch.no_grad()
def predict(model: nn.Module, X: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    model.eval()
    predictions = torch.cat([model(X[i:i + batch_size]).argmax(dim=-1)
                             for i in range(0, len(X), batch_size)])
    model.train()
    return predictions


def evaluate(model: nn.Module, X: torch.Tensor, y: torch.Tensor) -> float:
    """Accuracy; under no_grad and in batches (the handed-out one kept the graph)."""
    return (predict(model, X) == y).double().mean().item()


def train_one(lr: float, model: CNN, args: argparse.Namespace, data: octmnist.Data,
              checkpoint: Q2Checkpoint, name: str) -> History:
    """The handed-out training loop for one configuration."""
    optimizer = OPTIMIZERS[args.optimizer](model.parameters(), lr=lr, weight_decay=args.l2_decay)
    criterion = nn.NLLLoss()
    train_loader = DataLoader(TensorDataset(*data.splits["train"]), batch_size=args.batch_size,
                              shuffle=True)
    history = checkpoint.resume(model, optimizer)
    for _ in range(history.epoch, args.epochs):
        with Timer() as timer:
            model.train()
            losses = [train_batch(X, y, model, optimizer, criterion)
                      for X, y in tqdm(train_loader, leave=False, disable=args.no_progress)]
            accuracy = evaluate(model, *data.splits["dev"])
        history.record(torch.tensor([losses]), [accuracy], timer.seconds, [name])
        checkpoint.save(history, model, optimizer)
    return history


def train_models(learning_rates: list[float], model: CNN, args: argparse.Namespace,
                 data: octmnist.Data, checkpoint: Q2Checkpoint, names: list[str]
                 ) -> tuple[History, list[dict[str, torch.Tensor]]]:
    """Train `model`'s weights at each learning rate: one rate by the handed-out loop, several
    side by side (side_by_side.py). Returns the history and each run's final weights."""
    if len(learning_rates) == 1:
        history = train_one(learning_rates[0], model, args, data, checkpoint, names[0])
        return history, [model.state_dict()]
    return side_by_side.train_side_by_side(learning_rates, model, args, data.splits, checkpoint,
                                       names, evaluate)


def train_runs(learning_rates: list[float], no_maxpool: bool, args: argparse.Namespace,
               data: octmnist.Data, out: cli.Outputs) -> list[dict]:
    """Train one configuration per learning rate from seed `args.seed`; returns each run's
    curves and test scores, and draws its two figures."""
    names = [config_name(lr, args, no_maxpool) for lr in learning_rates]
    identity = run_identity(learning_rates, no_maxpool, args, data.info)
    configure_seed(args.seed)
    model = CNN(args.dropout, no_maxpool=no_maxpool).to(args.device)
    with Q2Checkpoint(names, args, identity) as checkpoint:
        history, states = train_models(learning_rates, model, args, data, checkpoint, names)
    losses = torch.stack(history.losses, dim=1)  # (runs, epochs, batches)
    epochs = torch.arange(1, args.epochs + 1)
    running = losses.flatten(1).cumsum(dim=1).view_as(losses)[..., -1] / (losses.shape[2] * epochs)
    runs = []
    for r, (lr, name, state) in enumerate(zip(learning_rates, names, states)):
        model.load_state_dict(state)
        run = {"config": name, "learning_rate": lr, "no_maxpool": no_maxpool,
               "train_loss": losses[r].mean(dim=1).tolist(),
               "train_loss_running_mean": running[r].tolist(),  # the handed-out curve
               "val_acc": [v[r] for v in history.val_acc],
               "test_acc": evaluate(model, *data.splits["test"]),
               "test_acc_full": evaluate(model, *data.splits["test_full"]),
               "real_80_acc": evaluate(model, *data.real_check) if data.real_check else None,
               "trainable_params": get_number_trainable_params(model),
               "wall_time_s": history.seconds,
               "trained_with": "the handed-out loop" if len(learning_rates) == 1
               else f"{len(learning_rates)} runs side by side"}
        print(f"[{name}] final test acc {run['test_acc']:.4f} (529-image subset), "
              f"{run['test_acc_full']:.4f} (full test split)")
        figures.plot_q2_run(run, out.plots)
        runs.append(run)
    return runs


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Question 2: a CNN on OCTMNIST. Q2.1 the conv-pool network, its learning "
                    "rate tuned on validation; Q2.2 the same without max-pooling "
                    "(-no_maxpool); Q2.3 the trainable-parameter counts.")
    parser.add_argument("-epochs", default=15, type=positive_int,
                        help="training epochs (default: %(default)s, as the statement asks; "
                             "the handed-out default was 20)")
    parser.add_argument("-batch_size", default=8, type=positive_int, help="default: %(default)s")
    parser.add_argument("-learning_rate", type=positive_float, default=0.01,
                        help="default: %(default)s")
    parser.add_argument("-l2_decay", type=non_negative_float, default=0,
                        help="default: %(default)s")
    parser.add_argument("-dropout", type=float, default=0.7, help="default: %(default)s")
    parser.add_argument("-optimizer", choices=["sgd", "adam"], default="sgd")
    parser.add_argument("-no_maxpool", action="store_true",
                        help="Q2.2: stride-2 convolutions instead of max-pooling")
    parser.add_argument("-sweep", action="store_true",
                        help="the whole protocol: both networks x -learning_rates, the best "
                             "learning rate chosen on validation, test reported")
    parser.add_argument("-learning_rates", type=positive_float, nargs="+",
                        default=list(LEARNING_RATES),
                        help="learning rates of -sweep (default: %(default)s)")
    parser.add_argument("-jobs", type=positive_int, default=1,
                        help="-sweep: train the two networks in this many processes at once, "
                             "one torch thread each (default: %(default)s; 2 puts both cores of "
                             "a 2-core CPU to work)")
    parser.add_argument("-group", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("-subset", type=positive_int, default=None,
                        help="train and validate on the first N images only (smoke runs)")
    parser.add_argument("-real_images", default=None,
                        help="the 80 genuine Kermany OCT images to score as a check (default: "
                             f"{octmnist.REAL_CHECK_FILENAME} in -data_dir or $HW2_DATA_DIR)")
    parser.add_argument("-checkpoint_dir", default=None,
                        help="where each epoch's training state and finished runs are kept "
                             "(default: checkpoints/q2 under -out_dir, else under the current "
                             "folder)")
    parser.add_argument("-resume", action="store_true",
                        help="continue from -checkpoint_dir: finished runs are reused, an "
                             "interrupted one continues after its last finished epoch; only "
                             "runs of the same configuration, data and library versions")
    parser.add_argument("-device", default="cpu", type=cli.torch_device,
                        help="torch device, e.g. cuda (default: %(default)s, as handed out)")
    parser.add_argument("-no_progress", action="store_true", help="no progress bars")
    add_common_args(parser, threads=True)
    args = parser.parse_args(argv)
    if not 0 <= args.dropout < 1:
        parser.error(f"argument -dropout: must lie in [0, 1) (got {args.dropout})")
    if args.checkpoint_dir is None:  # two output folders never share checkpoints
        args.checkpoint_dir = str(Path(args.out_dir or ".") / "checkpoints" / "q2")
    args.argv = list(sys.argv[1:] if argv is None else argv)  # for -jobs' processes
    return args


def main(argv: list[str] | None = None) -> None:
    """Load and check the data, check the output folders and take the lock on the results
    file (a -jobs process works under its parent's), then train: a bad input stops the run
    before any training, and an interruption ends in one line, every finished epoch kept in
    the checkpoints for -resume."""
    args = parse_args(argv)
    out = cli.apply_common_args(args)
    child = args.sweep and args.group is not None  # a process started by -jobs: one group
    name = "q2" if args.sweep else \
        f"q2-run-{config_name(args.learning_rate, args, args.no_maxpool)}"
    out.check_replaceable(vars(args), name)  # a run of other settings replaces it only with -force
    try:
        data = octmnist.load(args.data_dir, args.subset, args.real_images, args.device)
        out.ensure_writable()
        cli.ensure_writable(Path(args.checkpoint_dir), "-checkpoint_dir")
        def train(learning_rates: list[float], no_maxpool: bool) -> list[dict]:
            return train_runs(learning_rates, no_maxpool, args, data, out)
        if child:
            side_by_side.group_runs(*side_by_side.sweep_groups(args)[args.group], args, data.info, train)
            return
        with exclusive(out.results / f"{name}.lock", f"{name}.json"):
            with Timer() as wall:
                results = side_by_side.sweep(args, data.info, train, out, __file__) if args.sweep \
                    else {"runs": train([args.learning_rate], args.no_maxpool)}
            layers = {"max-pool": params_per_layer(CNN(args.dropout)),
                      "no max-pool": params_per_layer(CNN(args.dropout, no_maxpool=True))}
            results.update(params_per_layer=layers,
                           trainable_params={k: sum(v.values()) for k, v in layers.items()})
            path = write_results(name, results, config=vars(args), seed=args.seed,
                                 data=data.info, wall_time_s=wall.seconds,
                                 results_dir=out.results)
    except KeyboardInterrupt:
        if child:
            raise SystemExit(130) from None  # the parent reports the interruption
        raise fail(f"interrupted; every finished epoch is kept in {args.checkpoint_dir}: rerun "
                   "with -resume to continue") from None
    print("Number of trainable parameters: "
          f"{get_number_trainable_params(CNN(args.dropout, no_maxpool=args.no_maxpool))}")
    print(f"wrote {path} ({wall.seconds:.0f} s)")


def interrupt(signum, frame) -> None:
    """SIGINT and SIGTERM handler: stop like Ctrl-C, so that `finally` blocks run (a -jobs
    sweep stops its processes; locks are released and removed), ignoring further signals
    meanwhile (a -jobs process gets Ctrl-C's SIGINT and then its parent's SIGTERM). A no-op
    handler rather than SIG_IGN: Python reports a signal already pending when its handler
    becomes SIG_IGN as an error."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, frame: None)
    raise KeyboardInterrupt


if __name__ == "__main__":
    signal.signal(signal.SIGINT, interrupt)
    signal.signal(signal.SIGTERM, interrupt)
    try:
        main()
    except SystemExit as stop:  # -jobs processes share stderr: one error line each
        cli.exit_in_one_write(stop)
