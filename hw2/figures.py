"""Every figure of the homework, drawn from the numbers a results file holds, so a figure can
be redrawn without training again. PNG and PDF, legend drawn before saving."""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from hw2.asr_metrics import SIMILARITIES, first_stop
from hw2.checkpoints import atomic_write
from hw2.ljspeech import TokenVectorizer


Curve = tuple[Sequence[float], Sequence[float]]


def plot_lines(name: str, curves: Mapping[str, Curve], xlabel: str, ylabel: str, *,
               title: str | None = None, logx: bool = False, logy: bool = False,
               marker: str | None = None, plots_dir: Path) -> list[Path]:
    """Draw one line per (label -> (xs, ys)) and save `<plots_dir>/<name>.png` and `.pdf`.

    The legend is added before saving (the handed-out `_create_plot` saved first, so its
    PDFs had no legend). Returns the paths written.
    """
    import matplotlib
    import matplotlib.ticker
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for label, (xs, ys) in curves.items():
        ax.plot(xs, ys, label=label, marker=marker)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if all(isinstance(x, (int, np.integer)) for xs, _ in curves.values() for x in xs):
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))  # epochs
    if logx:
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # no overlapping labels
    if logy:
        ax.set_yscale("log")
    if title:
        ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend()
    return save_figure(fig, name, plots_dir)


def save_figure(fig, name: str, plots_dir: Path) -> list[Path]:
    """Save a matplotlib figure as <plots_dir>/<name>.png and .pdf, then close it."""
    import matplotlib.pyplot as plt

    out_dir = Path(plots_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    paths = [out_dir / f"{name}.{ext}" for ext in ("png", "pdf")]
    for path in paths:
        # Fixed metadata keeps re-runs byte-identical where the numbers are.
        meta = {"Software": None} if path.suffix == ".png" else {"CreationDate": None}
        with atomic_write(path) as tmp:
            fig.savefig(tmp, format=path.suffix[1:], bbox_inches="tight", dpi=120,
                        metadata=meta)
    plt.close(fig)
    return paths


def plot_q2_run(run: dict, plots_dir: Path) -> None:
    """The two figures the statement asks for, per configuration."""
    epochs = list(range(1, len(run["train_loss"]) + 1))
    plot_lines(f"q2-training-loss-{run['config']}",
               {"mean loss of the epoch": (epochs, run["train_loss"]),
                "running mean since epoch 1 (handed-out)": (epochs,
                                                            run["train_loss_running_mean"])},
               "Epoch", "Loss", title=f"Training loss, {run['config']}", plots_dir=plots_dir)
    plot_lines(f"q2-validation-accuracy-{run['config']}",
               {"validation": (epochs, run["val_acc"])}, "Epoch", "Accuracy",
               title=f"Validation accuracy, {run['config']}", plots_dir=plots_dir)


def plot_q2_comparison(runs: list[dict], plots_dir: Path) -> None:
    """Every run's training loss and validation accuracy in one figure each."""
    def label(r):
        return f"lr={r['learning_rate']}, {'no max-pool' if r['no_maxpool'] else 'max-pool'}"
    epochs = list(range(1, len(runs[0]["train_loss"]) + 1))
    plot_lines("q2-all-training-loss", {label(r): (epochs, r["train_loss"]) for r in runs},
               "Epoch", "Loss (mean of the epoch)", title="Training loss, all runs",
               plots_dir=plots_dir)
    plot_lines("q2-all-validation-accuracy", {label(r): (epochs, r["val_acc"]) for r in runs},
               "Epoch", "Validation accuracy", title="Validation accuracy, all runs",
               plots_dir=plots_dir)


def plot_q3_history(name: str, decoder: str, history: list[dict], plots_dir: Path) -> None:
    """Loss, similarities and error rates on the validation split against training epochs."""
    epochs = [h["epoch"] for h in history]
    plot_lines(f"{name}-loss", {
        "train (mean since the previous point)": (epochs, [h["train_loss"] for h in history]),
        "validation": (epochs, [h["validation"]["loss"] for h in history])},
        "Epoch", "Loss", title=f"{decoder} decoder: loss", plots_dir=plots_dir)
    plot_lines(f"{name}-similarities", {
        n: (epochs, [h["validation"][n] for h in history]) for n in SIMILARITIES},
        "Epoch", "Validation similarity", title=f"{decoder} decoder: string similarities",
        plots_dir=plots_dir)
    plot_lines(f"{name}-error-rates", {
        n.upper(): (epochs, [h["validation"][n] for h in history]) for n in ("wer", "cer")},
        "Epoch", "Validation error rate", title=f"{decoder} decoder: WER and CER",
        plots_dir=plots_dir)


def plot_attention(name: str, decoder: str, maps: dict, row: list[int], frames: int,
                   index: int, plots_dir: Path) -> None:
    import matplotlib.pyplot as plt
    n = first_stop(row)
    chars = [c if c != " " else "␣" for c in TokenVectorizer().decode(row[1:n + 1])]
    panels = [("cross", "cross-attention over the audio", "encoder frame")]
    if "self" in maps:
        panels.append(("self", "causal self-attention over the text", "input character"))
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 0.12 * n + 2),
                             squeeze=False)
    for ax, (kind, title, xlabel) in zip(axes[0], panels):
        weights = maps[kind][index, :n, :frames if kind == "cross" else n]
        ax.imshow(weights.numpy(), aspect="auto", cmap="viridis", interpolation="nearest")
        ax.set_yticks(range(n), chars, fontsize=5)
        if kind == "self":
            ax.set_xticks(range(n), ["<"] + chars[:-1], fontsize=5)
        ax.set(title=f"{decoder} decoder: {title}", xlabel=xlabel,
               ylabel="character written (greedy decoding)")
    save_figure(fig, f"{name}-attention", plots_dir)


def plot_q3_decoders(stem: str, histories: dict[str, list[dict]], plots_dir: Path) -> None:
    """Both decoders' validation curves (histories: decoder -> history) against updates."""
    for metric, label in (("loss", "Validation loss"), ("cer", "Validation CER")):
        plot_lines(f"{stem}-{metric}", {
            f"{decoder} decoder": ([h["update"] for h in history],
                                   [h["validation"][metric] for h in history])
            for decoder, history in histories.items()},
            "Training updates", label, title="LSTM vs attention decoder", plots_dir=plots_dir)
    plot_lines(f"{stem}-similarities", {
        f"{decoder}, {name.split('_')[0]}": ([h["update"] for h in history],
                                             [h["validation"][name] for h in history])
        for decoder, history in histories.items() for name in SIMILARITIES},
        "Training updates", "Validation similarity", title="LSTM vs attention decoder",
        plots_dir=plots_dir)
