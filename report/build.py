#!/usr/bin/env python
"""Build report/report.md from the templates in report/src/ and the results files, the README's
"results at a glance" table between its markers, and report/report.pdf from report.md.

Templates are Markdown with two kinds of placeholders, filled from report/results/*.json:
  {{ q1.results.slope_softmax :.2f }}   a value: results file `q1.json`, then a dotted path
                                        (list items by index), then an optional format spec;
  {{ table q1_feature_map }}            a table made by one of the TABLES functions below.
A missing or unreadable results file, key or table stops the build with an error naming it,
so the report can never show a number that no run produced. The output is deterministic:
building twice from the same results gives the same bytes.

The PDF is made by pandoc with pdflatex (Debian: PDF_PACKAGES below); where they are missing
the PDF step is skipped with a one-line message and the Markdown build still succeeds.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

REPORT_DIR = Path(__file__).resolve().parent
RESULTS_DIR = REPORT_DIR / "results"
SECTIONS = ["header.md", "q1.md", "q2.md", "q3.md", "closing.md"]
OUTPUT = REPORT_DIR / "report.md"
PDF_OUTPUT = REPORT_DIR / "report.pdf"
README = REPORT_DIR.parent / "README.md"
GLANCE_BEGIN = "<!-- results-at-a-glance: begin -->"
GLANCE_END = "<!-- results-at-a-glance: end -->"

PLACEHOLDER = re.compile(r"\{\{\s*(table\s+)?([\w\-]+)((?:\.[\w\-]+)*)\s*(?::\s*([^}]*?))?\s*\}\}")


class BuildError(Exception):
    pass


class Results:
    """Lazy access to report/results/<name>.json, failing loudly on anything missing."""

    def __init__(self, results_dir: Path):
        self.dir = results_dir
        self._cache: dict[str, Any] = {}

    def __getitem__(self, name: str) -> Any:
        if name not in self._cache:
            path = self.dir / f"{name}.json"
            if not path.exists():
                raise BuildError(f"missing results file {path}; run the script that writes it")
            try:
                self._cache[name] = json.loads(path.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError) as err:
                raise BuildError(f"results file {path} is not valid JSON (empty or truncated?): "
                                 f"{err}; run the script that writes it again") from None
        return self._cache[name]

    def get(self, name: str, dotted: str) -> Any:
        value = self[name]
        for key in filter(None, dotted.split(".")):
            try:
                value = value[int(key)] if isinstance(value, list) else value[key]
            except (KeyError, IndexError, ValueError, TypeError):
                raise BuildError(f"{name}.json has no '{dotted.lstrip('.')}'") from None
        return value


def markdown_table(header: list[str], rows: list[list[Any]]) -> str:
    """A pipe table. Each column's dashes follow its longest cell (3 to 50): pandoc sizes the
    columns of a wide table by them, so long text gets room in the PDF."""
    cells = [header] + [[str(c) for c in row] for row in rows]
    widths = [min(50, max(3, max(len(row[i]) for row in cells))) for i in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "|" + "".join("-" * w + "|" for w in widths)]
    lines += ["| " + " | ".join(row) + " |" for row in cells[1:]]
    return "\n".join(lines)


def table_q1_feature_map(res: Results) -> str:
    rows = [[r["D"], r["K"], r["M_tensor"], r["M_tensor_formula"], r["M_compact"],
             r["M_compact_formula"], f"{r['max_abs_err']:.1e}"]
            for r in res.get("q1", "results.feature_map")]
    return markdown_table(["D", "K", "M tensor (measured)", "sum D^n", "M compact (measured)",
                           "C(D+K-1, K-1)", "max abs error vs series"], rows)


def table_q1_timing(res: Results) -> str:
    """Times over L with the local log-log slope from the previous L; the lengths of the
    slope fit in bold."""
    t = res.get("q1", "results.timing_vs_length")
    slopes_soft = ["-"] + [f"{x:.2f}" for x in t["local_slopes_softmax"]]
    slopes_lin = ["-"] + [f"{x:.2f}" for x in t["local_slopes_linear"]]
    rows = [[f"**{l}**" if l in t["slope_fit_lengths"] else l, f"{mib:g}", f"{s * 1e3:.2f}",
             ss, f"{n * 1e3:.2f}", sl, f"{s / n:.2f}"]
            for l, mib, s, n, ss, sl in zip(t["lengths"], t["scores_mib"], t["seconds_softmax"],
                                            t["seconds_linear"], slopes_soft, slopes_lin)]
    return markdown_table(["L", "L x L scores (MiB)", "softmax (ms)", "local slope",
                           "linear form (ms)", "local slope", "softmax / linear"], rows)


def table_q1_feature_cost(res: Results) -> str:
    t = res.get("q1", "results.timing_vs_feature_size")
    rows = [[r["D"], r["K"], r["M"], r["M_times_D"], f"{r['seconds'] * 1e3:.2f}",
             f"{r['macs'] / 1e6:.1f}"] for r in t["rows"]]
    return markdown_table(["D", "K", "M", "M x D", "time (ms)", "MMACs"], rows)


def table_q1_positivity(res: Results) -> str:
    rows = [[r["K"], r["top_degree"], f"{r['min_on_t_in_-50_50']:.4g}",
             "yes" if r["positive_everywhere"] else "no"]
            for r in res.get("q1", "results.exp_truncation.positivity")]
    return markdown_table(["K", "top degree", "min over t in [-50, 50]", "positive for all t"],
                          rows)


def table_q2_runs(res: Results) -> str:
    """Every run of the sweep; accuracies as fractions of one, like the report's prose."""
    def acc(v: float | None) -> str:
        return "diverged" if v is None else f"{v:.4f}"
    rows = []
    for r in res.get("q2", "results.runs"):
        rows.append(["no max-pool (Q2.2)" if r["no_maxpool"] else "max-pool (Q2.1)",
                     r["learning_rate"], acc(r["val_acc"][-1]), acc(max(r["val_acc"])),
                     acc(r["test_acc"]), acc(r["test_acc_full"]),
                     "-" if r["real_80_acc"] is None else acc(r["real_80_acc"]),
                     "-" if r["train_loss"][-1] is None else f"{r['train_loss'][-1]:.3f}"])
    sizes = res.get("q2", "data.sizes")
    return markdown_table(["network", "lr", "val acc, last epoch", "best val acc",
                           f"test acc, {sizes['test']} subset",
                           f"test acc, all {sizes['test_full']:,}",
                           "80 genuine OCT images", "train loss, last epoch"], rows)


def table_q2_params(res: Results) -> str:
    layers = res.get("q2", "results.params_per_layer")
    with_pool, without = layers["max-pool"], layers["no max-pool"]
    rows = [[name, f"{with_pool[name]:,}", f"{without[name]:,}"] for name in with_pool]
    rows.append(["**total**", f"**{sum(with_pool.values()):,}**", f"**{sum(without.values()):,}**"])
    return markdown_table(["layer", "max-pool (Q2.1)", "no max-pool (Q2.2)"], rows)


Q3_DECODERS = {"q3-lstm": "LSTM (Q3.1)", "q3-transformer": "attention (Q3.2)"}
Q3_METRICS = ["loss", "jaccard_similarity", "cosine_similarity",
              "damerau-levenshtein_similarity", "wer", "cer"]


def table_q2_speed(res: Results) -> str:
    ms, speed_up = (res.get("q2-bench", f"results.{k}") for k in ("ms_per_step", "speed_up"))
    labels = {"handed_out": "handed-out loop (replica), one run at a time",
              "one_run": "this repository, one run",
              "side_by_side": "this repository, the three learning rates side by side in one "
                              "process",
              "compiled": "the same under `torch.compile` (timed after compiling)",
              "two_processes": "this repository, `-sweep -jobs 2`: both networks at once in "
                               "two 1-thread processes"}
    rows = [[label] + [f"{ms[v][k]:.2f} ({speed_up[v][k]:.2f}x)" if k in ms[v] else ""
                       for v in ("max-pool", "no max-pool", "both")]
            for k, label in labels.items() if k in ms["both"]]
    return markdown_table(["loop", "max-pool", "no max-pool", "both networks"], rows)


def table_q3_test(res: Results) -> str:
    rows = []
    for name, label in Q3_DECODERS.items():
        real, n_test = res.get(name, "results.real_clips"), res.get(
            name, "data.corpus.splits.test.with_audio")
        for data, metrics in ((f"synthetic test split ({n_test:,} clips)",
                               res.get(name, "results.test")),
                              (f"genuine recordings ({real['clips']} clips)", real["metrics"])):
            rows.append([label, data] + [f"{metrics[k]:.4f}" for k in Q3_METRICS])
    return markdown_table(["decoder", "data", "loss", "Jaccard", "cosine", "Damerau-Levenshtein",
                           "WER", "CER"], rows)


Q3_GPU = {"q3-lstm-gpu": "LSTM (Q3.1), GPU", "q3-transformer-gpu": "attention (Q3.2), GPU"}
Q3_PATHS = {"handed_out": "handed-out: shuffled, padded to 2,754 frames",
            "fast": "`-fast` padding: shuffled, padded to the longest clip, masks",
            "fast_grouped": "`-fast`: grouped by length",
            "fast_grouped_bf16": "`-fast -amp`: grouped by length, bf16 autocast"}
# The GPU forecasts of CPU recipes (report/results/q3-forecast-gpu-<name>-train-log.txt): each
# ran hw2-q3.py -fast -batch_size 16 -schedule update -warmup_updates 100 -eval_every 306
# -device cuda with these flags, six side by side on one GPU, stopped at the call's deadline.
Q3_FORECASTS = {"t": ("attention (Q3.2)", "-epochs 7"),
                "t-amp": ("attention (Q3.2)", "-epochs 7 -amp"),
                "lc": ("LSTM (Q3.1)", "-epochs 7 -curriculum"),
                "lc-amp": ("LSTM (Q3.1)", "-epochs 7 -curriculum -amp"),
                "lc-lr2-amp": ("LSTM (Q3.1)", "-epochs 7 -curriculum -amp -lr 2e-3"),
                "lc-10-amp": ("LSTM (Q3.1)", "-epochs 10 -curriculum -amp")}
LOG_LINE = re.compile(r"^\[update (\d+), epoch ([\d.]+)\].*\bcer ([\d.]+)", re.M)


def table_q3_speed(res: Results) -> str:
    """Training clips/s of each decoder and path (bench/q3_bench.py), with the speed-up over
    the handed-out path at the same thread count."""
    training = res.get("q3-bench", "results.training")
    threads = list(training["lstm"]["handed_out"])
    rows = []
    for decoder, paths in training.items():
        for path, label in Q3_PATHS.items():
            rows.append([Q3_DECODERS[f"q3-{decoder}"], label] + [
                f"{paths[path][t]:.1f} ({paths[path][t] / paths['handed_out'][t]:.1f}x)"
                for t in threads])
    return markdown_table(["decoder", "path"] + [t.replace("_", " ") for t in threads], rows)


def table_q3_speed_gpu(res: Results) -> str:
    """The GPU bench, float32 and bf16 autocast (two runs of bench/q3_bench.py -device cuda:
    q3-bench-gpu and q3-bench-gpu-amp), speed-ups over the float32 handed-out path."""
    fp32, bf16 = (res.get(name, "results.training") for name in ("q3-bench-gpu",
                                                                  "q3-bench-gpu-amp"))
    rows = []
    for decoder in fp32:
        base = fp32[decoder]["handed_out"]["1_threads"]
        rows += [[Q3_DECODERS[f"q3-{decoder}"], Q3_PATHS[path]] + [
            f"{run[decoder][path]['1_threads']:,.0f} "
            f"({run[decoder][path]['1_threads'] / base:.1f}x)" for run in (fp32, bf16)]
            for path in ("handed_out", "fast", "fast_grouped")]
    return markdown_table(["decoder", "path", "float32 clips/s", "bf16 autocast clips/s"], rows)


def table_q3_gpu(res: Results) -> str:
    """The statement's setting on a GPU: time and test results of each decoder."""
    rows = []
    for name, label in Q3_GPU.items():
        r = res.get(name, "results")
        corr = res.get(f"{name}-analysis",
                       "results.attention.cross_peak_position_correlation_mean")
        rows.append([label, f"{r['train_seconds']:.0f}",
                     f"{r['train_seconds'] / res.get(name, 'config.epochs'):.1f}",
                     f"{r['test']['loss']:.4f}",
                     f"{r['test']['damerau-levenshtein_similarity']:.4f}",
                     f"{r['test']['cer']:.4f}", f"{r['test']['wer']:.4f}", f"{corr:.2f}",
                     f"{r['real_clips']['metrics']['cer']:.4f}"])
    return markdown_table(["decoder", "15 epochs + validation (s)", "s per epoch", "test loss",
                           "test D-L", "test CER", "test WER", "alignment correlation",
                           "genuine recordings CER"], rows)


def validation_curve(res: Results, log_name: str) -> list[tuple[int, float, float]]:
    """(update, epoch, validation CER) at each validation of a hw2-q3.py training log."""
    path = res.dir / f"{log_name}-train-log.txt"
    if not path.exists():
        raise BuildError(f"missing training log {path}")
    return [(int(u), float(e), float(c)) for u, e, c in LOG_LINE.findall(path.read_text())]


def table_q3_forecasts(res: Results) -> str:
    """Validation CER of the CPU recipes trained on a GPU, at equal epochs."""
    epochs = (2.0, 4.0, 5.0)
    rows = []
    for name, (decoder, flags) in Q3_FORECASTS.items():
        curve = validation_curve(res, f"q3-forecast-gpu-{name}")
        at = {epoch: cer for _, epoch, cer in curve}
        rows.append([decoder, f"`{flags}`"] + [f"{at[e]:.3f}" if e in at else "" for e in epochs]
                    + [f"{curve[-1][2]:.3f} ({curve[-1][1]:g})"])
    return markdown_table(["decoder", "flags", "epoch 2", "epoch 4", "epoch 5",
                           "last (epoch)"], rows)


def table_q3_runs(res: Results) -> str:
    """Each Q3 run's setting, time and data, CPU and GPU."""
    rows = []
    for name, label in {**Q3_DECODERS, **Q3_GPU}.items():
        config, results = res.get(name, "config"), res.get(name, "results")
        rows.append([label, results["device"], f"{config['epochs']}",
                     f"{config['batch_size']}", f"{results['updates']:,}",
                     f"{config['lr']:g}, {config['schedule']}"
                     + (", curriculum" if config["curriculum"] else ""),
                     "bf16 autocast" if config["amp"] else "float32",
                     f"{results['train_seconds'] / 60:.1f}",
                     f"{res.get(name, 'wall_time_s') / 60:.1f}"])
    return markdown_table(["decoder", "device", "epochs", "batch", "updates",
                           "peak learning rate, schedule", "precision",
                           "training + validation (min)", "whole run (min)"], rows)


def table_q3_params(res: Results) -> str:
    rows = [[label] + [f"{res.get(name, 'results.parameters.' + part):,}"
                       for part in ("encoder", "decoder", "total")]
            for name, label in Q3_DECODERS.items()]
    return markdown_table(["model", "encoder", "decoder", "total trainable parameters"], rows)


def table_q3_similarity_example(res: Results) -> str:
    rows = []
    for name, label in Q3_DECODERS.items():
        e = res.get(f"{name}-analysis", "results.similarities.example")
        rows.append([label, f"`{e['target']}`", f"`{e['prediction']}`", e["m"], e["n"],
                     e["intersection"], e["union"], e["edit_distance"],
                     f"{e['jaccard_similarity']:.4f}", f"{e['cosine_similarity']:.4f}",
                     f"{e['damerau-levenshtein_similarity']:.4f}"])
    return markdown_table(["decoder", "target", "prediction", "m", "n", "I", "U", "d",
                           "Jaccard = I/U", "cosine = I/sqrt(mn)", "D-L = 1 - d/max(m,n)"], rows)


def table_glance(res: Results) -> str:
    """The README's "results at a glance" (build() writes it between the README's markers)."""
    worst = max(r["max_abs_err"] for r in res.get("q1", "results.feature_map"))
    rows = [["Q1", "feature map: worst error of phi(q)^T phi(k) vs the series (13 (D, K) pairs)",
             f"{worst:.1e}", "float64 random vectors"],
            ["Q1", "measured crossover length, linear form faster (D=32, K=3)",
             f"{res.get('q1', 'results.crossover_L'):.0f}", "timings, this CPU"]]
    q2 = res.get("q2", "results")
    for key, label in (("q2_1", "max-pool"), ("q2_2", "no max-pool")):
        rows.append(["Q2", f"test accuracy, {label}, lr {q2['best_learning_rate']} "
                     "(529-image subset / all 1,000)",
                     f"{q2[key]['test_acc']:.4f} / {q2[key]['test_acc_full']:.4f}",
                     "synthetic OCTMNIST stand-in"])
    for name, label in {**Q3_DECODERS, **Q3_GPU}.items():
        test, config = res.get(name, "results.test"), res.get(name, "config")
        rows.append(["Q3", f"{label}: test Damerau-Levenshtein similarity / CER",
                     f"{test['damerau-levenshtein_similarity']:.4f} / {test['cer']:.4f}",
                     f"synthetic speech, whole training split, {config['epochs']} epochs, "
                     f"batch {config['batch_size']}"])
    return markdown_table(["question", "result", "value", "data"], rows)


TABLES: dict[str, Callable[[Results], str]] = {
    name.removeprefix("table_"): fn for name, fn in globals().items() if name.startswith("table_")
}


def render(text: str, res: Results) -> str:
    def substitute(match: re.Match) -> str:
        is_table, name, dotted, spec = match.groups()
        if is_table:
            if name not in TABLES:
                raise BuildError(f"unknown table '{name}'")
            return TABLES[name](res)
        value = res.get(name, dotted)
        try:
            return format(value, spec) if spec else str(value)
        except (TypeError, ValueError):
            raise BuildError(f"{name}.json: '{dotted.lstrip('.')}' is {value!r}, which format "
                             f"'{spec}' cannot show") from None
    return PLACEHOLDER.sub(substitute, text)


def with_glance(readme: str, res: Results) -> str:
    """The README text with its results-at-a-glance block regenerated."""
    start, end = readme.find(GLANCE_BEGIN), readme.find(GLANCE_END)
    if start < 0 or end < start:
        raise BuildError(f"README.md lacks the markers {GLANCE_BEGIN} ... {GLANCE_END}")
    return (readme[:start + len(GLANCE_BEGIN)] + "\n" + table_glance(res) + "\n"
            + readme[end:])


def build(results_dir: Path = RESULTS_DIR, output: Path = OUTPUT,
          readme: Path | None = README) -> Path:
    """Write the report (and, unless readme is None, the README's results table)."""
    res = Results(results_dir)
    parts = [render((REPORT_DIR / "src" / name).read_text(), res) for name in SECTIONS]
    text = "\n\n".join(p.strip() for p in parts) + "\n"
    new_readme = with_glance(readme.read_text(), res) if readme is not None else None
    output.write_text(text)
    if new_readme is not None:
        readme.write_text(new_readme)
    return output


# The PDF: pandoc turns report.md into LaTeX and pdflatex typesets it.
PDF_ENGINE = "pdflatex"
PDF_PACKAGES = "pandoc texlive-latex-recommended texlive-fonts-recommended lmodern"
# Characters beyond Latin-1 that the report uses, as LaTeX (pdflatex's utf8 input encoding
# already knows Latin-1: the multiplication sign, the middle dot, dashes, accented letters).
PDF_CHARACTERS = {
    "\u2192": r"\ensuremath{\rightarrow}", "\u2212": r"\ensuremath{-}",
    "\u2264": r"\ensuremath{\leq}", "\u2265": r"\ensuremath{\geq}",
    "\u221a": r"\ensuremath{\surd}", "\u221e": r"\ensuremath{\infty}",
    "\u2229": r"\ensuremath{\cap}", "\u222a": r"\ensuremath{\cup}",
    "\u2248": r"\ensuremath{\approx}", "\u2260": r"\ensuremath{\neq}",
    "\u2026": r"\ldots{}",
    **{chr(0x2070 + i): rf"\ensuremath{{^{{{i}}}}}" for i in (0, 4, 5, 6, 7, 8, 9)},
    "\u207b": r"\ensuremath{^{-}}",
    **{chr(0x2080 + i): rf"\ensuremath{{_{{{i}}}}}" for i in range(10)},
    "\u208b": r"\ensuremath{_{-}}", "\u209c": r"\ensuremath{_{t}}",
}
PDF_PREAMBLE = r"""
% Figures stay where the text puts them, under the answer they belong to, at 80% of their
% natural size (labels stay legible, two plots fit on a page) and at most the text width.
\usepackage{float}
\floatplacement{figure}{H}
\makeatletter
\def\maxwidth{\ifdim0.8\Gin@nat@width>\linewidth\linewidth\else0.8\Gin@nat@width\fi}
\makeatother
% A fixed document ID (pdflatex derives it from the temporary file's path otherwise).
\pdftrailerid{hw2-report}
"""
PANDOC_OPTIONS = [
    # GitHub's Markdown has no ~sub~ or ^super^ script: a tilde stays a tilde in the PDF too
    "--from=markdown-subscript-superscript", f"--pdf-engine={PDF_ENGINE}",
    "--shift-heading-level-by=-1",  # the report's one "#" heading becomes the title
    "--variable=geometry:margin=2cm", "--variable=fontsize=10pt", "--variable=papersize=a4",
    "--variable=colorlinks=true",
]


def missing_pdf_tools() -> list[str]:
    """The PDF converter's programs that are not installed (empty when the PDF can be built)."""
    return [tool for tool in ("pandoc", PDF_ENGINE) if shutil.which(tool) is None]


def pdf_preamble(text: str) -> str:
    """LaTeX preamble for the report: the layout settings and a declaration for each character
    of PDF_CHARACTERS that `text` uses (pdflatex names any other it cannot typeset)."""
    used = sorted({c for c in text if c in PDF_CHARACTERS})
    declarations = [rf"\DeclareUnicodeCharacter{{{ord(c):04X}}}{{{PDF_CHARACTERS[c]}}}"
                    for c in used]
    return PDF_PREAMBLE + "\n".join(declarations) + "\n"


def build_pdf(markdown: Path = OUTPUT, pdf: Path = PDF_OUTPUT) -> Path:
    """Typeset `markdown` (its image paths relative to report/) as `pdf` with pandoc.

    SOURCE_DATE_EPOCH fixes the dates pdflatex writes, so the same report gives the same PDF
    and a committed PDF changes only when its content does.
    """
    # An image alone in its paragraph becomes a captioned figure at a legible size; images
    # on consecutive lines would otherwise share one line of the page and overflow it.
    text = re.sub(r"^(!\[.*\]\(.*\))\n(?=!\[)", r"\1\n\n", markdown.read_text(), flags=re.M)
    env = {**os.environ, "SOURCE_DATE_EPOCH": os.environ.get("SOURCE_DATE_EPOCH", "0")}
    with tempfile.TemporaryDirectory() as tmp:
        preamble = Path(tmp) / "preamble.tex"
        preamble.write_text(pdf_preamble(text))
        command = ["pandoc", *PANDOC_OPTIONS, f"--include-in-header={preamble}",
                   f"--resource-path={REPORT_DIR}", "--output", str(pdf)]
        proc = subprocess.run(command, input=text, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        detail = " ".join(line.strip() for line in proc.stderr.splitlines()[:4] if line.strip())
        raise BuildError(f"pandoc could not build {pdf}: {detail}")
    return pdf


def build_pdf_if_possible(markdown: Path = OUTPUT, pdf: Path = PDF_OUTPUT) -> str:
    """Build the PDF where its converter is installed; the one line to print either way."""
    missing = missing_pdf_tools()
    if missing:
        return (f"skipped {pdf}: {' and '.join(missing)} not found "
                f"(apt-get install -y --no-install-recommends {PDF_PACKAGES})")
    return f"wrote {build_pdf(markdown, pdf)}"


def main() -> None:
    try:
        print(f"wrote {build()}")
        print(build_pdf_if_possible())
    except BuildError as err:
        sys.exit(f"error: {err}")


if __name__ == "__main__":
    main()
