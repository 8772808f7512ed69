#!/usr/bin/env python
"""Build report/report.md from the templates in report/src/ and the results files, and the
README's "results at a glance" table between its markers.

Templates are Markdown with two kinds of placeholders, filled from report/results/*.json:
  {{ q1.results.slope_softmax :.2f }}   a value: results file `q1.json`, then a dotted path
                                        (list items by index), then an optional format spec;
  {{ table q1_feature_map }}            a table made by one of the TABLES functions below.
A missing results file, key or table stops the build with an error naming it, so the report
can never show a number that no run produced. The output is deterministic: building twice
from the same results gives the same bytes.
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any, Callable

REPORT_DIR = Path(__file__).resolve().parent
RESULTS_DIR = REPORT_DIR / "results"
SECTIONS = ["header.md", "q1.md", "q2.md", "q3.md", "closing.md"]
OUTPUT = REPORT_DIR / "report.md"
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
            self._cache[name] = json.loads(path.read_text())
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
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def table_q1_feature_map(res: Results) -> str:
    rows = [[r["D"], r["K"], r["M_tensor"], r["M_tensor_formula"], r["M_compact"],
             r["M_compact_formula"], f"{r['max_abs_err']:.1e}"]
            for r in res.get("q1", "results.feature_map")]
    return markdown_table(["D", "K", "M tensor (measured)", "sum D^n", "M compact (measured)",
                           "C(D+K-1, K-1)", "max abs error vs series"], rows)


def table_q1_timing(res: Results) -> str:
    t = res.get("q1", "results.timing_vs_length")
    rows = [[l, f"{s * 1e3:.2f}", f"{n * 1e3:.2f}", f"{s / n:.2f}", f"{ms / 1e6:.1f}",
             f"{ml / 1e6:.1f}"]
            for l, s, n, ms, ml in zip(t["lengths"], t["seconds_softmax"], t["seconds_linear"],
                                       t["macs_softmax"], t["macs_linear"])]
    return markdown_table(["L", "softmax (ms)", "linear form (ms)", "softmax / linear",
                           "softmax MMACs", "linear MMACs"], rows)


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
    def pct(v):
        return "diverged" if v is None else f"{100 * v:.1f}"
    rows = []
    for r in res.get("q2", "results.runs"):
        rows.append(["no max-pool (Q2.2)" if r["no_maxpool"] else "max-pool (Q2.1)",
                     r["learning_rate"], pct(r["val_acc"][-1]), pct(max(r["val_acc"])),
                     pct(r["test_acc"]), pct(r["test_acc_full"]),
                     "-" if r["real_80_acc"] is None else pct(r["real_80_acc"]),
                     "-" if r["train_loss"][-1] is None else f"{r['train_loss'][-1]:.3f}"])
    return markdown_table(["network", "lr", "val acc, last epoch (%)", "best val acc (%)",
                           "test acc, 529 subset (%)", "test acc, all 1000 (%)",
                           "80 real Kermany (%)", "train loss, last epoch"], rows)


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
              "side_by_side": "this repository, the three learning rates side by side",
              "two_processes": "this repository, `-sweep -jobs 2`: both networks at once in "
                               "two 1-thread processes"}
    rows = [[label] + [f"{ms[v][k]:.2f} ({speed_up[v][k]:.2f}x)" if k in ms[v] else ""
                       for v in ("max-pool", "no max-pool", "both")]
            for k, label in labels.items()]
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
    for name, label in Q3_DECODERS.items():
        test = res.get(name, "results.test")
        rows.append(["Q3", f"{label}: test Damerau-Levenshtein similarity / CER",
                     f"{test['damerau-levenshtein_similarity']:.4f} / {test['cer']:.4f}",
                     f"synthetic speech, {res.get(name, 'config.train_clips')} training clips"])
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
        return format(value, spec) if spec else str(value)
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


def main() -> None:
    try:
        path = build()
    except BuildError as err:
        sys.exit(f"error: {err}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
