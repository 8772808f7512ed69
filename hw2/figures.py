"""Every figure of the homework, drawn from the numbers a results file holds, so a figure can
be redrawn without training again (report/build.py does). PNG and PDF, legend drawn before
saving, names as the report uses them ("LSTM decoder", "Jaccard"), never raw keys."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from hw2.asr_metrics import first_stop
from hw2.checkpoints import atomic_write
from hw2.ljspeech import TokenVectorizer


Curve = tuple[Sequence[float], Sequence[float]]

DECODER_NAMES = {"lstm": "LSTM decoder", "transformer": "attention decoder"}
SIMILARITY_NAMES = {"jaccard_similarity": "Jaccard", "cosine_similarity": "cosine",
                    "damerau-levenshtein_similarity": "Damerau-Levenshtein"}


def plot_lines(name: str, curves: Mapping[str, Curve], xlabel: str, ylabel: str, *,
               title: str | None = None, logx: bool = False, logy: bool = False,
               marker: str | None = None, ylim: tuple[float, float] | None = None,
               plots_dir: Path) -> list[Path]:
    """Draw one line per (label -> (xs, ys)) and save `<plots_dir>/<name>.png` and `.pdf`.

    The legend is added before saving (the handed-out `_create_plot` saved first, so its
    PDFs had no legend). Returns the paths written.
    """
    import matplotlib
    import matplotlib.ticker
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.4))
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
        plain_log_axis(ax.yaxis)
    if ylim:
        ax.set_ylim(*ylim)
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


def pyplot():
    """matplotlib's pyplot on the file-only Agg backend."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def draw_curves(ax, curves: Mapping[str, Curve], title: str, xlabel: str, ylabel: str,
                logy: bool = False, legend: bool = True) -> None:
    """One panel of a multi-panel figure: a line per (label -> (xs, ys)), legend, grid."""
    import matplotlib.ticker
    for label, (xs, ys) in curves.items():
        ax.plot(xs, ys, label=label, marker="o", markersize=3)
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    if logy:
        plain_log_axis(ax.yaxis)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.grid(True, alpha=0.3)
    if legend:
        ax.legend(fontsize=9.5)


def plain_log_axis(axis) -> None:
    """A log-scale y axis labelled 0.5, 1, 2, 5 rather than 5 x 10^-1; over more than two
    decades only the powers of ten are labelled."""
    import matplotlib.ticker
    axis.axes.set_yscale("log")
    low, high = axis.axes.get_ylim()
    marks = (1, 2, 5) if high / low <= 100 else (1,)

    def label(value: float, _) -> str:
        return f"{value:g}" if round(value / 10 ** math.floor(math.log10(value))) in marks else ""
    axis.set_major_formatter(matplotlib.ticker.FuncFormatter(label))
    axis.set_minor_formatter(matplotlib.ticker.FuncFormatter(label))


def plot_panels(name: str, panels: Sequence[tuple[Mapping[str, Curve], str, str, bool]],
                title: str, plots_dir: Path) -> None:
    """Panels side by side under one title, each (curves, panel title, y label, log y),
    against epochs: the figures the report shows, sized to its text width."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.3), squeeze=False)
    labels = [list(curves) for curves, *_ in panels]
    shared = len(labels[0]) > 3 and all(ls == labels[0] for ls in labels)  # one legend, below
    for ax, (curves, panel_title, ylabel, logy) in zip(axes[0], panels):
        draw_curves(ax, curves, panel_title, "Epoch", ylabel, logy=logy, legend=not shared)
    fig.suptitle(title)
    if shared:
        fig.legend(*axes[0][0].get_legend_handles_labels(), loc="lower center", ncol=3,
                   fontsize=9.5, bbox_to_anchor=(0.5, -0.12))
    save_figure(fig, name, plots_dir)


# ---------------------------------------------------------------------------------------------
# Question 1 (the dicts hw2-q1.py writes under "results" in q1.json)
# ---------------------------------------------------------------------------------------------
SCORE_SPREAD = r"standard deviation of $\mathbf{q}^\top\mathbf{k}$"
ERROR_VS_SOFTMAX = r"$\max\,|\mathbf{Z}_\mathrm{approx} - \mathbf{Z}_\mathrm{softmax}|$"


def plot_q1_exp(term_counts: Sequence[int], plots_dir: Path) -> None:
    """exp(t) and its McLaurin truncations with K terms, on t in [-6, 3]."""
    t = np.linspace(-6, 3, 361)
    curves = {"exp(t)": (t, np.exp(t))}
    for n_terms in term_counts:
        curves[f"K={n_terms}"] = (t, sum(t ** n / math.factorial(n) for n in range(n_terms)))
    plot_lines("q1-exp-approximation", curves, "t", "value",
               title="exp(t) and its McLaurin truncations (K terms)", plots_dir=plots_dir)


def plot_q1_error_vs_scale(scale: dict, plots_dir: Path) -> None:
    """Largest error of truncated-series attention against softmax attention per K."""
    plot_lines("q1-approx-error-vs-scale",
               {f"K={n}": (scale["scales"], errors) for n, errors in scale["max_abs_err"].items()},
               SCORE_SPREAD, ERROR_VS_SOFTMAX, logx=True,
               logy=True, marker="o",
               title=f"Truncated-series attention vs softmax (L={scale['L']}, D={scale['D']})",
               plots_dir=plots_dir)


def plot_q1_truncation(term_counts: Sequence[int], scale: dict, plots_dir: Path) -> None:
    """The two figures above side by side (`q1-truncation`), as the report shows them."""
    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(9.2, 3.4))
    t = np.linspace(-6, 3, 361)
    left.plot(t, np.exp(t), label="exp(t)", color="black", lw=2)
    for n_terms in term_counts:
        left.plot(t, sum(t ** n / math.factorial(n) for n in range(n_terms)), label=f"K={n_terms}")
    left.set(title="exp(t) and its truncations (K terms)", xlabel="t", ylabel="value")
    for n_terms, errors in scale["max_abs_err"].items():
        right.plot(scale["scales"], errors, marker="o", markersize=3, label=f"K={n_terms}")
    right.set(xscale="log", yscale="log", xlabel=SCORE_SPREAD, ylabel=ERROR_VS_SOFTMAX,
              title=f"Error against softmax attention (L={scale['L']}, D={scale['D']})")
    for ax in (left, right):
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=9.5)
    save_figure(fig, "q1-truncation", plots_dir)


def plot_q1_time(timing: dict, plots_dir: Path) -> None:
    """Time of softmax attention and of the linear form against L (log-log), each with the
    L range of its slope fit marked."""
    soft, lin = timing["softmax"], timing["linear"]
    plot_lines("q1-time-vs-length", {
        f"softmax attention, $O(L^2 D)$: slope {soft['slope']:.2f}": (soft["lengths"],
                                                                      soft["seconds"]),
        f"linear form, $O(LMD)$, $M = {timing['M']}$: slope {lin['slope']:.2f}": (
            lin["lengths"], lin["seconds"])},
        "sequence length $L$", "seconds (best of repeats)", logx=True, logy=True, marker="o",
        title=f"Attention time, one CPU thread, D={timing['D']}, K={timing['K']}",
        plots_dir=plots_dir)


def plot_q1_feature_cost(cost: dict, plots_dir: Path) -> None:
    """Time of the linear form against M x D at fixed L, one line per K."""
    by_k: dict[int, tuple[list, list]] = {}
    for row in cost["rows"]:
        by_k.setdefault(row["K"], ([], []))
        by_k[row["K"]][0].append(row["M_times_D"])
        by_k[row["K"]][1].append(row["seconds"])
    plot_lines("q1-linear-cost-vs-MD", {f"K={k} (D varies)": xy for k, xy in sorted(by_k.items())},
               r"$M \times D$", "seconds (best of repeats)", logx=True, logy=True, marker="o",
               title=f"Linear form at L={cost['L']}: cost grows with M D", plots_dir=plots_dir)


# ---------------------------------------------------------------------------------------------
# Question 2 (the runs of q2.json)
# ---------------------------------------------------------------------------------------------
def q2_network(run: dict) -> str:
    return "network without max-pooling" if run["no_maxpool"] else "max-pooling network"


def plot_q2_run(run: dict, plots_dir: Path, prefix: str = "q2") -> None:
    """The two figures the statement asks for, per configuration: the mean training loss of
    each epoch and the validation accuracy after it (and both side by side), named
    <prefix>-...-<config>: "q2" for the sweep's runs, "q2-run" for a single run's."""
    epochs = list(range(1, len(run["train_loss"]) + 1))
    setting = f"{q2_network(run)}, learning rate {run['learning_rate']}"
    plot_lines(f"{prefix}-training-loss-{run['config']}",
               {"training loss (mean of the epoch)": (epochs, run["train_loss"])},
               "Epoch", "Loss", title=f"Training loss: {setting}", plots_dir=plots_dir)
    plot_lines(f"{prefix}-validation-accuracy-{run['config']}",
               {"validation accuracy": (epochs, run["val_acc"])}, "Epoch", "Accuracy",
               title=f"Validation accuracy: {setting}", plots_dir=plots_dir)
    plot_panels(f"{prefix}-curves-{run['config']}", [
        ({"training loss (mean of the epoch)": (epochs, run["train_loss"])},
         "Training loss", "Loss", False),
        ({"validation accuracy": (epochs, run["val_acc"])}, "Validation accuracy", "Accuracy",
         False)], f"{setting[0].upper()}{setting[1:]}", plots_dir)


def plot_q2_comparison(runs: list[dict], plots_dir: Path) -> None:
    """Every run's training loss (log scale: one epoch's loss of several units would flatten
    the others) and validation accuracy in one figure each."""
    def label(r):
        return f"lr {r['learning_rate']}, {'no max-pool' if r['no_maxpool'] else 'max-pool'}"
    epochs = list(range(1, len(runs[0]["train_loss"]) + 1))
    losses = {label(r): (epochs, r["train_loss"]) for r in runs}
    accuracies = {label(r): (epochs, r["val_acc"]) for r in runs}
    plot_lines("q2-all-training-loss", losses, "Epoch", "Loss (mean of the epoch, log scale)",
               logy=True, title="Training loss, all six runs", plots_dir=plots_dir)
    plot_lines("q2-all-validation-accuracy", accuracies, "Epoch", "Validation accuracy",
               title="Validation accuracy, all six runs", plots_dir=plots_dir)
    plot_panels("q2-all-curves", [
        (losses, "Training loss (log scale)", "Loss (mean of the epoch)", True),
        (accuracies, "Validation accuracy", "Accuracy", False)], "All six runs", plots_dir)


# ---------------------------------------------------------------------------------------------
# Question 3 (the "history" of a q3-*.json: one entry per validation)
# ---------------------------------------------------------------------------------------------
def plot_q3_history(name: str, decoder: str, history: list[dict], plots_dir: Path) -> None:
    """Loss, similarities and error rates on the validation split against training epochs,
    one figure each, and the loss and similarities side by side (`<name>-curves`)."""
    epochs = [h["epoch"] for h in history]
    who = DECODER_NAMES.get(decoder, decoder)
    plot_lines(f"{name}-loss", q3_loss_curves(history), "Epoch", "Loss",
               title=f"{who}: loss", plots_dir=plots_dir)
    plot_lines(f"{name}-similarities", q3_similarity_curves(history), "Epoch",
               "Validation similarity", title=f"{who}: string similarities",
               plots_dir=plots_dir)
    plot_lines(f"{name}-error-rates", {
        n.upper(): (epochs, [h["validation"][n] for h in history]) for n in ("wer", "cer")},
        "Epoch", "Validation error rate", title=f"{who}: WER and CER", plots_dir=plots_dir)
    plot_q3_curves(name, who, history, plots_dir)


def q3_loss_curves(history: list[dict]) -> dict[str, Curve]:
    epochs = [h["epoch"] for h in history]
    return {"training (mean since the previous point)": (epochs,
                                                         [h["train_loss"] for h in history]),
            "validation": (epochs, [h["validation"]["loss"] for h in history])}


def q3_similarity_curves(history: list[dict]) -> dict[str, Curve]:
    epochs = [h["epoch"] for h in history]
    return {label: (epochs, [h["validation"][key] for h in history])
            for key, label in SIMILARITY_NAMES.items()}


def plot_q3_curves(name: str, title: str, history: list[dict], plots_dir: Path) -> None:
    """The two plots Q3.1 and Q3.2 ask for, side by side: training and validation loss, and
    the three validation similarities, against epochs (`<name>-curves`)."""
    plot_panels(f"{name}-curves", [
        (q3_loss_curves(history), "Training and validation loss", "Loss", False),
        (q3_similarity_curves(history), "Validation similarities", "Similarity", False)],
        title, plots_dir)


def plot_q3_comparison(name: str, rows: Mapping[str, Mapping[str, list[dict]]],
                       plots_dir: Path) -> None:
    """Both decoders side by side, one row of panels per setting (rows: setting -> decoder ->
    history): validation loss and validation CER against epochs (`<name>`)."""
    plt = pyplot()
    fig, axes = plt.subplots(len(rows), 2, figsize=(9, 3.1 * len(rows)), squeeze=False)
    for (setting, histories), (left, right) in zip(rows.items(), axes):
        for metric, ax, label in (("loss", left, "validation loss"),
                                  ("cer", right, "validation CER")):
            draw_curves(ax, {DECODER_NAMES.get(d, d): ([h["epoch"] for h in history],
                                                       [h["validation"][metric] for h in history])
                             for d, history in histories.items()},
                        f"{setting}: {label}", "Epoch", label)
    save_figure(fig, name, plots_dir)


def plot_q3_decoders(stem: str, histories: dict[str, list[dict]], plots_dir: Path) -> None:
    """Both decoders' validation curves (histories: decoder -> history) against updates."""
    def curves(metric: str) -> dict[str, Curve]:
        return {DECODER_NAMES.get(decoder, decoder): (
            [h["update"] for h in history], [h["validation"][metric] for h in history])
            for decoder, history in histories.items()}
    for metric, label in (("loss", "Validation loss"), ("cer", "Validation CER")):
        plot_lines(f"{stem}-{metric}", curves(metric), "Training updates", label,
                   title="LSTM decoder and attention decoder", plots_dir=plots_dir)
    plot_lines(f"{stem}-similarities", {
        f"{DECODER_NAMES.get(decoder, decoder)}, {label}": (
            [h["update"] for h in history], [h["validation"][key] for h in history])
        for decoder, history in histories.items() for key, label in SIMILARITY_NAMES.items()},
        "Training updates", "Validation similarity",
        title="LSTM decoder and attention decoder", plots_dir=plots_dir)


def plot_attention(name: str, decoder: str, maps: dict, row: list[int], frames: int,
                   index: int, plots_dir: Path) -> None:
    """Attention of clip `index` (maps: kind -> (clips, queries, keys) weights, heads averaged;
    row: the clip's greedy tokens): cross-attention over its encoder frames and, where
    present, self-attention over the text; a colour bar per panel. At most 30 labelled rows
    (10 pt, at least 7 pt once the report scales the figure to its text width) and 6 inches
    high, half a page, however long the text."""
    plt = pyplot()
    n = first_stop(row)
    chars = [c if c != " " else "_" for c in TokenVectorizer().decode(row[1:n + 1])]
    panels = [("cross", "cross-attention over the audio", "encoder frame")]
    if "self" in maps:
        panels.append(("self", "self-attention over the text", "character read"))
    step = math.ceil(n / 30)
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), min(6, 1.4 + 0.17 * n)),
                             squeeze=False)
    for ax, (kind, title, xlabel) in zip(axes[0], panels):
        weights = maps[kind][index, :n, :frames if kind == "cross" else n]
        image = ax.imshow(np.asarray(weights), aspect="auto", cmap="viridis",
                          interpolation="nearest", vmin=0)
        ax.set_yticks(range(0, n, step), chars[::step], fontsize=10)
        if kind == "self":
            ax.set_xticks(range(0, n, step), (["<"] + chars[:-1])[::step], fontsize=10)
        ax.set(title=f"{DECODER_NAMES.get(decoder, decoder)}:\n{title}", xlabel=xlabel,
               ylabel="character written")
        fig.colorbar(image, ax=ax, fraction=0.05, pad=0.02, label="attention weight")
    save_figure(fig, f"{name}-attention", plots_dir)


def plot_decoder_reading(text: str, plots_dir: Path) -> None:
    """A diagram, not data: how each decoder reads the characters written so far of `text`
    before its cross-attention asks the audio where the next one is (`q3-decoder-reading`)."""
    plt = pyplot()
    chars = list(text[:12])
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 3.8))
    for ax in (top, bottom):
        ax.set(xlim=(-0.8, len(chars) + 2.6), ylim=(-0.7, 2.9))
        ax.axis("off")
        for i, c in enumerate(chars):
            ax.text(i, 0, c if c != " " else "_", ha="center", va="center", fontsize=11,
                    family="monospace", bbox={"boxstyle": "round", "fc": "#eeeeee"})
    draw_recurrence(top, len(chars))
    draw_causal_attention(bottom, len(chars), query=len(chars) - 3)
    top.set_title("LSTM decoder: one character at a time, the prefix summarised in a state",
                  fontsize=11)
    bottom.set_title("Attention decoder: each position attends to every earlier one",
                     fontsize=11)
    save_figure(fig, "q3-decoder-reading", plots_dir)


def draw_recurrence(ax, n: int) -> None:
    """Boxes for the LSTM states over the characters, each fed by the previous state."""
    arrow = {"arrowstyle": "->", "color": "#1f77b4", "lw": 1.4}
    for i in range(n):
        ax.text(i, 1.2, "h", ha="center", va="center", fontsize=10, color="#1f77b4",
                bbox={"boxstyle": "square", "fc": "white", "ec": "#1f77b4"})
        ax.annotate("", (i, 0.95), (i, 0.3), arrowprops=arrow)
        ax.annotate("", (i, 2.2), (i, 1.45), arrowprops={**arrow, "color": "grey"})
        if i:
            ax.annotate("", (i - 0.25, 1.2), (i - 0.75, 1.2), arrowprops=arrow)
    ax.text(n - 0.3, 2.45, "query to the audio\n(cross-attention)", fontsize=10, color="grey",
            ha="left", va="center")
    ax.text(n + 0.2, 1.2, "state (h, c): 2 x 200\nnumbers carry the\nwhole prefix",
            fontsize=10, color="#1f77b4", va="center")


def draw_causal_attention(ax, n: int, query: int) -> None:
    """Arcs from every position up to `query` into it; later positions greyed (masked)."""
    for i in range(n):
        ax.text(i, 0.55, f"+p{i}", ha="center", va="center", fontsize=9.5, color="#2ca02c")
    for j in range(query + 1):
        ax.annotate("", (query, 1.5), (j, 0.8), arrowprops={
            "arrowstyle": "->", "color": "#d62728", "alpha": 0.35 + 0.65 * (j == query),
            "connectionstyle": "arc3,rad=-0.2" if j < query else "arc3", "lw": 1.1})
    if query + 1 < n:  # one label over the later positions, which the mask hides
        ax.text((query + n) / 2, 1.05, "masked", ha="center", va="center", fontsize=9.5,
                color="grey")
    ax.text(query, 1.75, "position t", ha="center", va="center", fontsize=10, color="#d62728",
            bbox={"boxstyle": "square", "fc": "white", "ec": "#d62728"})
    ax.annotate("", (query, 2.55), (query, 2.0), arrowprops={"arrowstyle": "->",
                                                           "color": "grey"})
    ax.text(query + 0.3, 2.45, "query to the audio (cross-attention),\nknows its position t",
            fontsize=10, color="grey", va="center")
    ax.text(n + 0.2, 0.55, "+p: learned position\nembedding", fontsize=10, color="#2ca02c",
            va="center")


def plot_real_vs_synthetic(real_rows: list[np.ndarray], synthetic_rows: list[np.ndarray],
                           classes: Sequence[str], plots_dir: Path) -> list[Path]:
    """One row per class: genuine OCT images (left) beside synthetic ones (right), with
    labels that stay readable when the figure is set at text width."""
    plt = pyplot()
    per_class = len(real_rows[0])
    fig, axes = plt.subplots(len(classes), 2 * per_class,
                             figsize=(2 * per_class * 0.9, len(classes) * 1.0), squeeze=False)
    for c, name in enumerate(classes):
        for j, image in enumerate([*real_rows[c], *synthetic_rows[c]]):
            axes[c, j].imshow(image, cmap="gray", vmin=0, vmax=255)
            axes[c, j].set_xticks([])
            axes[c, j].set_yticks([])
        axes[c, 0].set_ylabel(f"{c} {name}", fontsize=11)
    axes[0, 0].set_title("genuine (Kermany)", loc="left", fontsize=11)
    axes[0, per_class].set_title("synthetic stand-in", loc="left", fontsize=11)
    return save_figure(fig, "q2-real-vs-synthetic", plots_dir)
