#!/usr/bin/env python
"""Build the report from the results files: redraw its figures (plots/), fill the templates of
report/src/ into report/report.md and report/engineering.md, regenerate the README's "results
at a glance" table, and typeset report/report.pdf.

Templates are Markdown with two kinds of placeholders, filled from report/results/*.json:
  {{ q1.results.slope_softmax :.2f }}   a value: results file `q1.json`, a dotted path and an
                                        optional format spec; a path step is a key, a list
                                        index (-1: the last) or a selector [field=value]
                                        (the one list item whose field prints as value);
  {{ table q2_runs }}                   a table made by one of the functions in TABLES.
A missing results file, key or table stops the build with an error naming it, so no number
can appear that no run produced; building twice from the same results gives the same bytes.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

REPORT_DIR = Path(__file__).resolve().parent
REPO_DIR = REPORT_DIR.parent
sys.path.insert(0, str(REPO_DIR))

from hw2 import figures  # noqa: E402
from hw2.asr_metrics import bootstrap_cer, paired_cer_difference  # noqa: E402
from hw2.results import read_test_log, test_log_path  # noqa: E402

RESULTS_DIR = REPORT_DIR / "results"
PLOTS_DIR = REPO_DIR / "plots"
# Each document and the templates it is made of, in order.
DOCUMENTS = {"report.md": ["header.md", "q1.md", "q2.md", "q3.md", "appendix.md"],
             "engineering.md": ["engineering.md"]}
PDF_OUTPUT = REPORT_DIR / "report.pdf"
README = REPO_DIR / "README.md"
GLANCE_BEGIN = "<!-- results-at-a-glance: begin -->"
GLANCE_END = "<!-- results-at-a-glance: end -->"

PLACEHOLDER = re.compile(
    r"\{\{\s*(table\s+)?([\w\-]+)((?:\.(?:\[[^\]]*\]|[\w\-]+))*)\s*(?::\s*([^}]*?))?\s*\}\}")
PATH_STEP = re.compile(r"\[([^\]=]+)=([^\]]*)\]|([\w\-]+)")
PANDOC_COLUMNS = 110  # pandoc's --columns: wider Markdown tables are fitted to the page


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
        for field, wanted, key in PATH_STEP.findall(dotted):
            try:
                value = (select(value, field, wanted) if field else
                         value[int(key)] if isinstance(value, list) else value[key])
            except (KeyError, IndexError, ValueError, TypeError):
                raise BuildError(f"{name}.json has no '{dotted.lstrip('.')}'") from None
        return value


def select(items: list[dict], field: str, wanted: str) -> dict:
    """The one item of `items` whose `field` prints as `wanted` (ValueError otherwise)."""
    found = [item for item in items if str(item.get(field)) == wanted]
    if len(found) != 1:
        raise ValueError(f"{len(found)} items with {field}={wanted}")
    return found[0]


def markdown_table(header: list[str], rows: list[list[Any]], wrap: bool = False) -> str:
    """A pipe table. Each column's dashes follow its longest cell (3 to 50). A table whose
    lines all fit PANDOC_COLUMNS keeps its natural widths in the PDF; `wrap` lengthens the
    dashes past that, so pandoc fits the table to the text width in proportion to them,
    wrapping long cells."""
    cells = [header] + [[str(c) for c in row] for row in rows]
    widths = [min(50, max(3, max(len(row[i]) for row in cells))) for i in range(len(header))]
    if wrap:
        widths = [w * -(-(PANDOC_COLUMNS + 1) // sum(widths)) for w in widths]
    lines = ["| " + " | ".join(header) + " |", "|" + "".join("-" * w + "|" for w in widths)]
    lines += ["| " + " | ".join(row) + " |" for row in cells[1:]]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Question 1
# ---------------------------------------------------------------------------------------------
def table_q1_timing(res: Results) -> str:
    """Times over L with the local log-log slope from the previous L; the times of each slope
    fit in bold; softmax attention stops where its L x L scores would outgrow memory."""
    t = res.get("q1", "results.timing_vs_length")
    soft, lin = t["softmax"], t["linear"]

    def cells(form: dict, i: int) -> list[str]:
        if i >= len(form["seconds"]):
            return ["-", "-"]
        time = f"{form['seconds'][i] * 1e3:.2f}"
        bold = form["lengths"][i] in form["fit_lengths"]
        return [f"**{time}**" if bold else time,
                f"{form['local_slopes'][i - 1]:.2f}" if i else "-"]
    rows = [[f"{length:,}", f"{soft['working_set_mib'][i]:g}" if i < len(soft["seconds"])
             else "-", *cells(soft, i), f"{lin['working_set_mib'][i]:.0f}", *cells(lin, i)]
            for i, length in enumerate(lin["lengths"])]
    return markdown_table(["L", "scores (MiB)", "softmax (ms)", "slope", "features (MiB)",
                           "linear form (ms)", "slope"], rows)


def table_q1_feature_cost(res: Results) -> str:
    t = res.get("q1", "results.timing_vs_feature_size")
    rows = [[r["D"], r["K"], f"{r['M']:,}", f"{r['M_times_D']:,}", f"{r['seconds'] * 1e3:.2f}",
             f"{r['macs'] / 1e6:,.0f}"] for r in t["rows"]]
    return markdown_table(["D", "K", "M", "M x D", "time (ms)", "million multiply-adds"], rows)


def table_q1_feature_map(res: Results) -> str:
    rows = [[r["D"], r["K"], r["M_tensor"], r["M_tensor_formula"], r["M_compact"],
             r["M_compact_formula"], f"{r['max_abs_err']:.1e}"]
            for r in res.get("q1", "results.feature_map")]
    return markdown_table(["D", "K", "M tensor", "sum D^n", "M compact", "C(D+K-1, K-1)",
                           "largest error"], rows)


def table_q1_positivity(res: Results) -> str:
    rows = [[r["K"], r["top_degree"], f"{r['min_on_t_in_-50_50']:.4g}",
             "yes" if r["positive_everywhere"] else "no"]
            for r in res.get("q1", "results.exp_truncation.positivity")]
    return markdown_table(["K", "top degree", "minimum on [-50, 50]", "positive for all t"],
                          rows)


# ---------------------------------------------------------------------------------------------
# Question 2
# ---------------------------------------------------------------------------------------------
def table_q2_runs(res: Results) -> str:
    """Every run of the sweep; accuracies as fractions of one, like the report's prose."""
    def acc(v: float | None) -> str:
        return "diverged" if v is None else f"{v:.4f}"
    rows = [["no max-pool" if r["no_maxpool"] else "max-pool", r["learning_rate"],
             acc(r["val_acc"][-1]), acc(max(r["val_acc"])), acc(r["test_acc"]),
             acc(r["test_acc_full"]), "-" if r["real_80_acc"] is None else acc(r["real_80_acc"]),
             "-" if r["train_loss"][-1] is None else f"{r['train_loss'][-1]:.3f}"]
            for r in res.get("q2", "results.runs")]
    sizes = res.get("q2", "data.sizes")
    return markdown_table(["network", "lr", "val. (last)", "val. (best)",
                           f"test ({sizes['test']})", f"test ({sizes['test_full']:,})",
                           "genuine (80)", "loss (last)"], rows)


def table_q2_params(res: Results) -> str:
    layers = res.get("q2", "results.params_per_layer")
    with_pool, without = layers["max-pool"], layers["no max-pool"]
    rows = [[name, f"{with_pool[name]:,}", f"{without[name]:,}"] for name in with_pool]
    rows.append(["**total**", f"**{sum(with_pool.values()):,}**", f"**{sum(without.values()):,}**"])
    return markdown_table(["layer", "max-pooling (Q2.1)", "no max-pooling (Q2.2)"], rows)


def table_q2_speed(res: Results) -> str:
    ms, speed_up = (res.get("q2-bench", f"results.{k}") for k in ("ms_per_step", "speed_up"))
    labels = {"handed_out": "handed-out loop (replica), one run at a time",
              "one_run": "hw2-q2.py, one configuration",
              "side_by_side": "hw2-q2.py -sweep: the three learning rates side by side",
              "compiled": "the same under torch.compile (timed after compiling)",
              "two_processes": "hw2-q2.py -sweep -jobs 2: both networks at once, two "
                               "1-thread processes"}
    rows = [[label] + [f"{ms[v][k]:.2f} ({speed_up[v][k]:.2f}x)" if k in ms[v] else ""
                       for v in ("max-pool", "no max-pool", "both")]
            for k, label in labels.items() if k in ms["both"]]
    return markdown_table(["loop", "max-pool", "no max-pool", "both networks"], rows)


# ---------------------------------------------------------------------------------------------
# Question 3
# ---------------------------------------------------------------------------------------------
DECODERS = {"lstm": "LSTM decoder", "transformer": "attention decoder"}
# The runs the report shows: the statement's setting (on a GPU) answers Q3.1 / Q3.2; the CPU
# recipe, an addition, is hw2-q3's -tag norm-only (festival's voice, per-clip normalisation).
SETTINGS = {"gpu": "statement's setting", "cpu": "CPU recipe"}
Q3_RUNS = {("lstm", "gpu"): "q3-lstm-gpu", ("transformer", "gpu"): "q3-transformer-gpu",
           ("lstm", "cpu"): "q3-lstm-norm-only",
           ("transformer", "cpu"): "q3-transformer-norm-only"}
METRICS = {"loss": "loss", "jaccard_similarity": "Jaccard", "cosine_similarity": "cosine",
           "damerau-levenshtein_similarity": "D-L", "wer": "WER", "cer": "CER"}


def check_synthetic_speech(res: Results) -> None:
    """The report's Q3 text says every run trained on synthetic speech: refuse to build from
    results that say otherwise rather than print a false caption."""
    for name in Q3_RUNS.values():
        if res.get(name, "data").get("synthetic_speech") is not True:
            raise BuildError(f"{name}.json was not trained on the synthetic speech corpus, "
                             "which the report's Q3 text describes; update report/src/q3.md")


def table_q3_test(res: Results) -> str:
    """Test results of the four runs on the synthetic test split, with how closely each
    cross-attention follows the audio (correlation of peak frame and character position), and
    the CER on the genuine recordings."""
    rows = []
    for (decoder, setting), name in Q3_RUNS.items():
        test = res.get(name, "results.test")
        align = res.get(f"{name}-analysis",
                        "results.attention.cross_peak_position_correlation_mean")
        genuine = res.get(name, "results.real_clips.metrics.cer")
        rows.append([DECODERS[decoder], SETTINGS[setting]]
                    + [f"{test[k]:.4f}" for k in METRICS] + [f"{align:.2f}", f"{genuine:.3f}"])
    return markdown_table(["decoder", "run", *METRICS.values(), "alignment", "genuine CER"],
                          rows)


# Issue 25's runs: the CPU recipe before it (espeak-ng and flite voices, no augmentation), its
# first form with festival's voice (every ingredient, SpecAugment's masks included, 8 epochs), its
# second (tempo, VTLP and per-clip normalisation, 11 epochs; the CPU recipe is the same without
# tempo and VTLP), and the short attention-decoder runs that measure each ingredient alone on the
# corpus without festival's voice, chosen on that voice (never on the genuine recordings).
BEFORE = {"lstm": "q3-lstm-espeak-flite", "transformer": "q3-transformer-espeak-flite"}
WITH_MASKS = {"lstm": "q3-lstm-masks", "transformer": "q3-transformer-masks"}
SECOND_FORM = {"lstm": "q3-lstm", "transformer": "q3-transformer"}
INGREDIENTS = {"none": "nothing (espeak-ng and flite voices only)",
               "none-seed43": "nothing, another seed (43 instead of 42)",
               "speed": "tempo perturbation", "vtlp": "vocal-tract-length perturbation",
               "specaugment": "SpecAugment masks", "reverb": "room reverberation",
               "utterance-norm": "per-clip feature normalisation"}
# A higher log-mel floor with the normalisation, against the normalisation alone, clip by clip.
FLOOR = {"long-floor6-norm": "per-clip normalisation, floor 6 decades under the peak",
         "long-floor5-norm": "per-clip normalisation, floor 5 decades under the peak"}
# Wider tempo and VTLP ranges with the normalisation, against the second form's ±0.1.
WIDER = {"long-aug2-norm": "tempo and VTLP ±0.2, and per-clip normalisation",
         "long-aug3-norm": "tempo and VTLP ±0.3, and per-clip normalisation"}
# Tempo and VTLP each alone with the normalisation: which of the two the second form's gain
# on the genuine recordings comes from.
SPLIT = {"long-speed-norm": "tempo ±0.1 and per-clip normalisation",
         "long-vtlp-norm": "VTLP ±0.1 and per-clip normalisation"}
# Cepstral liftering with the normalisation: each frame's spectral envelope without the pitch
# harmonics, against the normalisation alone.
LIFTER = {"long-lifter13-norm": "per-clip normalisation, 13 cosines of each frame kept",
          "long-lifter26-norm": "per-clip normalisation, 26 cosines of each frame kept"}
# The same runs trained longer: each ingredient but the masks alone, the CPU recipe's three,
# then the arms above.
LONGER = {"long-none": "nothing", "long-speed": INGREDIENTS["speed"],
          "long-vtlp": INGREDIENTS["vtlp"], "long-utterance-norm": INGREDIENTS["utterance-norm"],
          "long-reverb": INGREDIENTS["reverb"],
          "long-recipe": "tempo, VTLP and per-clip normalisation (the second form's)",
          "long-voices-norm": "per-clip normalisation, and Pico's and MBROLA's voices for 30% "
                              "of the other clips (another corpus)",
          **FLOOR, **WIDER, **SPLIT, **LIFTER}
# The augmentation flags that take a value, in words; -utterance_norm is a switch.
INGREDIENT_FLAGS = {"speed_perturb": "tempo", "vtlp": "VTLP", "freq_masks": "masks",
                    "time_masks": "masks", "reverb": "reverberation"}


def ingredient_run(arm: str) -> str:
    """The results name of one run without festival's voice (hw2-q3 -tag ingredient-<arm>)."""
    return f"q3-transformer-ingredient-{arm}"


def logged_pairs(res: Results, name: str, label: str) -> list[tuple[str, str]]:
    """The (target, prediction) pairs of one kind of clip in a run's test log."""
    path = test_log_path(res.dir, name)
    if not path.exists():
        raise BuildError(f"missing test log {path}; run the script that writes it")
    prefix = f"[{label}] "
    pairs = [(target.removeprefix(prefix), prediction) for target, prediction
             in read_test_log(path) if target.startswith(prefix)]
    if not pairs:
        raise BuildError(f"{path} has no [{label}] clips")
    return pairs


def cer_with_interval(res: Results, name: str, key: str, label: str) -> str:
    """A CER with its 95% bootstrap interval over the clips (from the run's test log)."""
    low, high = bootstrap_cer(logged_pairs(res, name, label))
    return f"{res.get(name, f'results.{key}.metrics.cer'):.3f} [{low:.2f}, {high:.2f}]"


def paired_gap(res: Results, base: str, other: str, label: str) -> str:
    """Run `other`'s CER minus run `base`'s on the same [label] clips, with a 95% bootstrap
    interval that draws the same clips for both runs (separate intervals overlap even where
    the difference is clear); '*' where the interval excludes 0."""
    gap, low, high = paired_cer_difference(logged_pairs(res, base, label),
                                           logged_pairs(res, other, label))
    return f"{gap:+.3f} [{low:+.3f}, {high:+.3f}]" + ("*" if low > 0 or high < 0 else "")


def held_out_and_genuine_gaps(res: Results, base: str, other: str) -> list[str]:
    """paired_gap on the held-out voice's clips (what a choice is made on), then on the genuine
    recordings (reported only)."""
    return [paired_gap(res, base, other, clips) for clips in ("held-out voice", "genuine")]


def table_q3_genuine_paired(res: Results) -> str:
    """The committed recipe against its second form on the genuine recordings, clip by clip."""
    rows = [[DECODERS[d], paired_gap(res, SECOND_FORM[d], Q3_RUNS[d, "cpu"], "genuine")]
            for d in DECODERS]
    return markdown_table(["decoder", "genuine CER, committed recipe minus second form "
                           "[95% paired interval; *: excludes 0]"], rows)


# The attention decoder's committed recipe and second form trained again with another seed.
SEEDS = {42: (Q3_RUNS["transformer", "cpu"], SECOND_FORM["transformer"]),
         43: ("q3-transformer-norm-only-seed43", "q3-transformer-seed43")}


def table_q3_seeds(res: Results) -> str:
    """The choice (synthetic validation CER) and its cost on the genuine recordings, per seed."""
    def cer(name: str, key: str) -> str:
        return f"{res.get(name, key):.3f}"
    rows = [[seed] + [f"{cer(recipe, key)} / {cer(second, key)}" for key in
                      ("results.history.-1.validation.cer", "results.test.cer",
                       "results.real_clips.metrics.cer")]
            + [paired_gap(res, second, recipe, "genuine")]
            for seed, (recipe, second) in SEEDS.items()]
    return markdown_table(["seed", "synthetic validation CER, recipe / second form",
                           "synthetic test CER, recipe / second form",
                           "genuine CER, recipe / second form",
                           "genuine CER, recipe minus second form [95% paired interval; "
                           "*: excludes 0]"], rows)


# A scored run is named for the run it scores: hw2-q3's -tag <tag>-scored-mbrola.
SCORED = "-scored-mbrola"
# The committed runs' checkpoints scored again, untrained further, on MBROLA's three voices
# (validation clips), which none of them heard: (recipe, second form) per decoder and seed.
SCORED_MBROLA = {key: (recipe + SCORED, second + SCORED) for key, (recipe, second) in
                 {**{("transformer", seed): runs for seed, runs in SEEDS.items()},
                  ("lstm", 42): (Q3_RUNS["lstm", "cpu"], SECOND_FORM["lstm"])}.items()}


def table_q3_mbrola(res: Results) -> str:
    """The committed recipe against its second form on MBROLA's held-out voices (a choice may
    use them) and on the genuine recordings (reported only), clip by clip."""
    def cer(name: str) -> str:
        return f"{res.get(name, 'results.heldout_clips.metrics.cer'):.3f}"
    rows = [[DECODERS[decoder], seed, f"{cer(recipe)} / {cer(second)}"]
            + held_out_and_genuine_gaps(res, second, recipe)
            for (decoder, seed), (recipe, second) in SCORED_MBROLA.items()]
    return markdown_table(["decoder", "seed", "MBROLA's voices CER, recipe / second form",
                           "MBROLA's voices, recipe minus second form [95% paired interval; "
                           "*: excludes 0]", "genuine CER, the same"], rows)


def rank_correlation(x: list[float], y: list[float]) -> float:
    """Spearman's rank correlation (ties take their mean rank)."""
    def ranks(values: list[float]) -> np.ndarray:
        values = np.asarray(values, dtype=float)
        return np.array([(values < v).sum() + ((values == v).sum() + 1) / 2 for v in values])
    return float(np.corrcoef(ranks(x), ranks(y))[0, 1])


# The longer runs that heard none of MBROLA's voices (all but the one trained on them).
UNHEARD_MBROLA = [arm for arm in LONGER if arm != "long-voices-norm"]


# Festival's voice as an ingredient, measurable once MBROLA's voices are the held-out ones: the
# same longer runs on the corpus with festival's voice (its first clips, as many), against
# each run without it, scored on MBROLA's voices.
FESTIVAL = {"long-festival-norm": ("long-utterance-norm", "per-clip normalisation"),
            "long-festival-recipe": ("long-recipe", "tempo, VTLP and per-clip normalisation")}


def table_q3_festival(res: Results) -> str:
    """Each run with festival's voice against the same run without it, clip by clip, on
    MBROLA's held-out voices (a choice may use them) and the genuine recordings."""
    rows = []
    for arm, (without, label) in FESTIVAL.items():
        base, run = ingredient_run(without) + SCORED, ingredient_run(arm)
        rows.append([label] + [f"{res.get(base, key):.3f} / {res.get(run, key):.3f}"
                               for key in ("results.heldout_clips.metrics.cer",
                                           "results.real_clips.metrics.cer")]
                    + held_out_and_genuine_gaps(res, base, run))
    return markdown_table(["ingredients", "MBROLA's voices CER, without / with festival",
                           "genuine CER, without / with festival",
                           "MBROLA's voices, with minus without [95% paired interval; "
                           "*: excludes 0]", "genuine, the same"], rows)


def table_q3_choice_sets(res: Results) -> str:
    """How well each set of choice data ranks the longer runs as the genuine recordings do:
    the rank correlation of its CER with the genuine CER across the runs, and the run of its
    lowest CER (a plain minimum, not the rule's choice, which asks for a paired interval
    excluding 0) with that run's genuine CER."""
    def cers(key: str, suffix: str = "") -> list[float]:
        return [res.get(ingredient_run(arm) + suffix, key) for arm in UNHEARD_MBROLA]
    genuine = cers("results.real_clips.metrics.cer")
    sets = {"synthetic validation split": cers("results.history.-1.validation.cer"),
            "festival's held-out voice": cers("results.heldout_clips.metrics.cer"),
            "MBROLA's held-out voices": cers("results.heldout_clips.metrics.cer", SCORED),
            "genuine recordings (reported only)": genuine}
    rows = []
    for label, values in sets.items():
        best = int(np.argmin(values))
        rows.append([label, f"{rank_correlation(values, genuine):+.2f}",
                     LONGER[UNHEARD_MBROLA[best]], f"{genuine[best]:.3f}"])
    return markdown_table(["choice data", "rank correlation with the genuine CER",
                           "its lowest-CER run", "that run's genuine CER"], rows)


def paired_arms_table(res: Results, base_arm: str, base_label: str, arms: dict) -> str:
    """Each arm against a base arm on the held-out voice (what a choice is made on) and on the
    genuine recordings (reported only), clip by clip."""
    base = ingredient_run(base_arm)
    rows = [[label] + held_out_and_genuine_gaps(res, base, ingredient_run(arm))
            for arm, label in arms.items()]
    return markdown_table(["run", f"held-out voice CER, minus {base_label} "
                           "[95% paired interval; *: excludes 0]",
                           "genuine CER, the same"], rows)


def table_q3_floor(res: Results) -> str:
    """Each higher floor against the normalisation alone."""
    return paired_arms_table(res, "long-utterance-norm", "the normalisation alone's", FLOOR)


def table_q3_split(res: Results) -> str:
    """Tempo, VTLP and the two together, each with the normalisation, against it alone."""
    return paired_arms_table(res, "long-utterance-norm", "the normalisation alone's",
                             {**SPLIT, "long-recipe": LONGER["long-recipe"]})


def table_q3_lifter(res: Results) -> str:
    """Each lifter (with the normalisation) against the normalisation alone."""
    return paired_arms_table(res, "long-utterance-norm", "the normalisation alone's", LIFTER)


def table_q3_wider(res: Results) -> str:
    """Wider tempo and VTLP ranges against the second form's ±0.1 (both with the normalisation)."""
    return paired_arms_table(res, "long-recipe", "±0.1's (the second form's)", WIDER)


def augmentation_label(config: dict, short: bool = False) -> str:
    """The augmentation flags a run was given ("none" without any); `short`: in words."""
    given = [flag for flag in INGREDIENT_FLAGS if config.get(flag)]
    floor = config.get("dynamic_range")  # feature settings, like the normalisation
    lifter = config.get("lifter")
    norm = bool(config.get("utterance_norm"))
    if short:
        words = [*dict.fromkeys(INGREDIENT_FLAGS[flag] for flag in given)]
        words += ([f"floor {floor:g} decades"] if floor is not None else []) \
            + ([f"{lifter} cosines"] if lifter is not None else []) + ["per-clip norm"] * norm
        return ", ".join(words) or "none"
    flags = [f"-{flag} {config[flag]}" for flag in given]
    flags += ([f"-dynamic_range {floor:g}"] if floor is not None else []) \
        + ([f"-lifter {lifter}"] if lifter is not None else []) + ["-utterance_norm"] * norm
    return " ".join(flags) or "none"


def corpus_label(res: Results, name: str) -> str:
    """The engines that spoke the training corpus, with their shares (results files written
    before the corpus had festival's voice do not count them: espeak-ng and flite)."""
    engines = res.get(name, "data").get("engines", {"espeak-ng": 0, "flite": 0})
    total = sum(engines.values())
    return ", ".join(f"{e} {n / total:.0%}" if total else e for e, n in engines.items())


def table_q3_genuine(res: Results) -> str:
    """Synthetic test and genuine CER of every committed run: the statement's setting and the
    CPU recipe's forms, from before issue 25 to now."""
    runs = [(d, SETTINGS["gpu"], Q3_RUNS[d, "gpu"]) for d in DECODERS] + \
        [(d, "CPU recipe, previous form", BEFORE[d]) for d in DECODERS] + \
        [(d, "CPU recipe, first form with festival", WITH_MASKS[d]) for d in DECODERS] + \
        [(d, "CPU recipe, second form", SECOND_FORM[d]) for d in DECODERS] + \
        [(d, "CPU recipe (committed)", Q3_RUNS[d, "cpu"]) for d in DECODERS]
    rows = [[DECODERS[d], f"{run}, {res.get(name, 'config.epochs')} epochs",
             corpus_label(res, name), augmentation_label(res.get(name, "config"), short=True),
             f"{res.get(name, 'results.history.-1.validation.cer'):.3f}",
             f"{res.get(name, 'results.test.cer'):.3f}",
             cer_with_interval(res, name, "real_clips", "genuine")] for d, run, name in runs]
    return markdown_table(["decoder", "run", "training voices", "augmentation, normalisation",
                           "synthetic validation CER", "synthetic test CER",
                           "genuine CER [95% interval]"], rows)


def table_q3_ingredients(res: Results) -> str:
    """Each ingredient alone, in short attention-decoder runs."""
    return ingredient_table(res, INGREDIENTS)


def table_q3_longer(res: Results) -> str:
    """Each ingredient but the masks alone, and the committed recipe's three together, in
    longer attention-decoder runs."""
    return ingredient_table(res, LONGER)


def ingredient_table(res: Results, arms: dict[str, str]) -> str:
    """Synthetic test CER, the voice no model heard (what a choice is made on) and the genuine
    recordings (reported only) of the attention-decoder runs without festival's voice."""
    rows = []
    for arm, label in arms.items():
        name = ingredient_run(arm)
        rows.append([label, augmentation_label(res.get(name, "config")),
                     f"{res.get(name, 'results.test.cer'):.3f}",
                     cer_with_interval(res, name, "heldout_clips", "held-out voice"),
                     cer_with_interval(res, name, "real_clips", "genuine")])
    return markdown_table(["ingredient", "flags", "synthetic test CER",
                           "held-out voice CER [95% interval]",
                           "genuine CER [95% interval]"], rows)


# Issue 26, on one H200: candidate GPU recipes trained side by side (per decoder, the one with
# the lower final validation CER is the GPU recipe), and the LSTM decoder at the statement's
# setting with the handed-out padding and with -fast, both stopped after 8 and 7 of their 15
# epochs so that the candidates could finish: their validation lines survive only in the
# console logs.
GPU_CANDIDATES = {"transformer": {"plain": "q3-transformer-gpu-t64",
                                  "augmented": "q3-transformer-gpu-t64aug"},
                  "lstm": {"plain": "q3-lstm-gpu-l64", "augmented": "q3-lstm-gpu-l64aug"}}
PADDING_LOGS = {"handed-out padding": "q3-lstm-gpu-padded-console-log.txt",
                "-fast": "q3-lstm-gpu-fast-console-log.txt"}
VALIDATION_LINE = re.compile(  # as hw2-q3.py's validate() prints it
    r"^\[update (\d+), epoch ([\d.]+)\] lr \S+  train loss ([\d.]+)  val loss ([\d.]+)  "
    r"d-l ([\d.]+)  wer ([\d.]+)  cer ([\d.]+)  \((\d+) s\)$", re.M)


def console_history(path: Path) -> list[dict]:
    """The validation records of an interrupted run, read back from its console output."""
    if not path.exists():
        raise BuildError(f"missing console log {path}")
    records = [{"update": int(u), "epoch": float(e), "train_loss": float(t), "seconds": int(s),
                "validation": {"loss": float(v), "damerau-levenshtein_similarity": float(dl),
                               "wer": float(w), "cer": float(c)}}
               for u, e, t, v, dl, w, c, s in VALIDATION_LINE.findall(path.read_text())]
    if not records:
        raise BuildError(f"{path} has no validation lines")
    return records


def gpu_recipe(res: Results, decoder: str) -> str:
    """The candidate with the lower validation CER after its last epoch (never the test)."""
    return min(GPU_CANDIDATES[decoder].values(),
               key=lambda name: res.get(name, "results.history.-1.validation.cer"))


def table_q3_gpu_recipe(res: Results) -> str:
    """The candidate GPU recipes: what each was given, its validation and test results, and
    its time while sharing the GPU with the other runs."""
    rows = []
    for decoder, candidates in GPU_CANDIDATES.items():
        chosen = gpu_recipe(res, decoder)
        for name in candidates.values():
            config, test = res.get(name, "config"), res.get(name, "results.test")
            rows.append([DECODERS[decoder] + (" (chosen)" if name == chosen else ""),
                         augmentation_label(config, short=True), config["batch_size"],
                         config["lr"], config["epochs"],
                         f"{res.get(name, 'results.history.-1.validation.cer'):.3f}",
                         f"{test['cer']:.3f}", f"{test['damerau-levenshtein_similarity']:.3f}",
                         f"{res.get(name, 'results.train_seconds') / 60:.1f}"])
    return markdown_table(["decoder", "augmentation", "batch", "peak lr", "epochs",
                           "validation CER", "test CER", "test D-L similarity",
                           "training + validation (min, GPU shared)"], rows)


def table_q3_gpu_padding(res: Results) -> str:
    """Validation loss and CER per epoch of the LSTM decoder at the statement's setting: the
    handed-out padding and -fast side by side (interrupted), and the committed -fast run."""
    histories = [console_history(res.dir / log) for log in PADDING_LOGS.values()]
    histories.append(res.get(Q3_RUNS["lstm", "gpu"], "results.history"))
    epochs = max(len(history) for history in histories[:-1])

    def cell(history: list[dict], epoch: int) -> str:
        found = [h["validation"] for h in history if h["epoch"] == epoch]
        return f"{found[0]['loss']:.3f} / {found[0]['cer']:.3f}" if found else "—"
    rows = [[epoch] + [cell(history, epoch) for history in histories]
            for epoch in range(1, epochs + 1)]
    return markdown_table(["epoch", *(f"{label}: val loss / CER" for label in PADDING_LOGS),
                           "committed -fast run (espeak-ng/flite corpus, other validation "
                           "split): val loss / CER"], rows)


# The GPU recipe run again with the same seed, and a stronger tempo / VTLP arm, three side by
# side on an H100 (issue 25): they stopped when they came to score the genuine recordings (the
# device's copy held empty stand-ins), so their validation lines survive only in the console
# logs. (decoder, run, console log, the run it is set against: a committed results file that
# it repeats, or the console log of the repeat run beside it)
GPU_RERUNS = [("transformer", "the recipe again", "q3-transformer-gpu30-aug-console-log.txt",
               "q3-transformer-gpu-t64aug"),
              ("transformer", "tempo and VTLP ±0.2", "q3-transformer-gpu30-aug2-console-log.txt",
               "q3-transformer-gpu30-aug-console-log.txt"),
              ("lstm", "the recipe again", "q3-lstm-gpu30-aug-console-log.txt",
               "q3-lstm-gpu-l64aug")]


def first_difference(history: list[dict], other: list[dict]) -> str:
    """The first epoch whose validation loss (3 decimals) differs between two histories, over
    the epochs both have."""
    theirs = {h["epoch"]: f"{h['validation']['loss']:.3f}" for h in other}
    for mine in history:
        if mine["epoch"] in theirs and f"{mine['validation']['loss']:.3f}" != theirs[mine["epoch"]]:
            return f"{mine['epoch']:g}"
    return "none"


def table_q3_gpu_rerun(res: Results) -> str:
    """The GPU recipe again (same seed, another GPU) against its committed runs, and a stronger
    augmentation against that repeat: validation CER after the last epoch, where a repeat's
    history parts from the committed one, time."""
    rows = []
    for decoder, run, log, against in GPU_RERUNS:
        history = console_history(res.dir / log)
        repeats = not against.endswith("-console-log.txt")
        other = res.get(against, "results.history") if repeats else \
            console_history(res.dir / against)
        rows.append([DECODERS[decoder], run, f"{history[-1]['epoch']:g}",
                     f"{history[-1]['validation']['cer']:.3f}",
                     (f"committed run ({res.get(against, 'machine.cuda')}): " if repeats
                      else "the repeat beside it: ")
                     + f"{other[-1]['validation']['cer']:.3f}",
                     first_difference(history, other) if repeats else "—",
                     f"{history[-1]['seconds'] / 60:.1f}"])
    return markdown_table(["decoder", "run", "epochs", "validation CER", "set against: "
                           "validation CER", "first epoch whose validation loss differs",
                           "training + validation (min, GPU shared by three)"], rows)


def table_q3_engines(res: Results) -> str:
    """The committed CPU runs' synthetic test CER per voice (from their analysis files), beside
    the genuine recordings' CER."""
    analysis = {d: f"{Q3_RUNS[d, 'cpu']}-analysis" for d in DECODERS}
    engines = sorted(res.get(analysis["transformer"], "results.test_by_engine"))
    rows = [[DECODERS[d]]
            + [f"{res.get(analysis[d], f'results.test_by_engine.{e}.cer'):.3f}" for e in engines]
            + [f"{res.get(Q3_RUNS[d, 'cpu'], 'results.real_clips.metrics.cer'):.3f}"]
            for d in DECODERS]
    counts = [f"{e} ({res.get(analysis['transformer'], f'results.test_by_engine.{e}.clips'):,}"
              " clips)" for e in engines]
    genuine = res.get(Q3_RUNS["transformer", "cpu"], "results.real_clips.clips")
    return markdown_table(["decoder", *counts, f"genuine recordings ({genuine} clips)"], rows)


def table_q3_genuine_examples(res: Results) -> str:
    """The first genuine recordings as the attention decoder of the CPU recipe transcribed
    them before issue 25 and now."""
    before = res.get(BEFORE["transformer"], "results.real_clips.examples")
    now = res.get(Q3_RUNS["transformer", "cpu"], "results.real_clips.examples")
    if [t for t, _ in before[:4]] != [t for t, _ in now[:4]]:
        raise BuildError("the two runs' first genuine examples are not the same clips")
    rows = [[target, old, new] for (target, old), (_, new) in zip(before[:4], now[:4])]
    return markdown_table(["genuine recording (transcript, first 98 characters)",
                           "CPU recipe, previous form",
                           "CPU recipe (festival's voice, per-clip normalisation)"],
                          rows, wrap=True)


def table_q3_settings(res: Results) -> str:
    """The two settings side by side, one row per property; where the decoders differ within
    a setting, each decoder's value."""
    def properties(name: str) -> dict[str, str]:
        config, results = res.get(name, "config"), res.get(name, "results")
        return {"epochs": f"{config['epochs']}", "batch": f"{config['batch_size']}",
                "updates": f"{results['updates']:,}", "peak learning rate": f"{config['lr']:g}",
                "schedule stepped": ("per epoch" if config["schedule"] == "epoch" else
                                     f"per update, {config['warmup_updates']} warm-up updates"),
                "precision": "bf16" if config["amp"] else "float32",
                "first epoch": "shortest clip first" if config["curriculum"] else "shuffled",
                "training voices": corpus_label(res, name),
                "augmentation, normalisation": augmentation_label(config, short=True),
                "device": device_label(name, res)}

    def cell(setting: str, key: str) -> str:
        values = {d: properties(Q3_RUNS[d, setting])[key] for d in DECODERS}
        if len(set(values.values())) == 1:
            return values["transformer"]
        return "; ".join(f"{DECODERS[d].split()[0]}: {v}" for d, v in values.items())
    keys = list(properties(Q3_RUNS["lstm", "gpu"]))
    return markdown_table(["", *(SETTINGS[s] for s in SETTINGS)],
                          [[key, *(cell(s, key) for s in SETTINGS)] for key in keys])


def table_q3_similarity_example(res: Results) -> str:
    """Q3.4's worked example, one column per decoder (statement's setting)."""
    examples = {decoder: res.get(f"{Q3_RUNS[decoder, 'gpu']}-analysis",
                                 "results.similarities.example") for decoder in DECODERS}
    quantities = [("target", "target", "`{}`"), ("prediction", "prediction", "`{}`"),
                  ("m, n (lengths)", ("m", "n"), "{}, {}"),
                  ("I, U (shared, union)", ("intersection", "union"), "{}, {}"),
                  ("d (edits)", "edit_distance", "{}"),
                  ("Jaccard = I/U", "jaccard_similarity", "{:.4f}"),
                  ("cosine = I/sqrt(mn)", "cosine_similarity", "{:.4f}"),
                  ("D-L = 1 - d/max(m, n)", "damerau-levenshtein_similarity", "{:.4f}")]
    rows = [[label] + [form.format(*(e[k] for k in ((keys,) if isinstance(keys, str) else keys)))
                       for e in examples.values()] for label, keys, form in quantities]
    return markdown_table(["", *DECODERS.values()], rows, wrap=True)


THREADS = {"1_threads": "1 thread", "2_threads": "2 threads"}
Q3_PATHS = {"handed_out": "handed-out: shuffled, padded to 2,754 frames",
            "fast": "-fast padding only: shuffled, padded to the longest clip, masks",
            "fast_grouped": "-fast: grouped by length",
            "fast_grouped_bf16": "-fast -amp: grouped by length, bf16"}


def table_q3_speed(res: Results) -> str:
    """Training clips/s of each decoder and path (bench/q3_bench.py), with the speed-up over
    the handed-out path at the same thread count."""
    training = res.get("q3-bench", "results.training")
    threads = list(training["lstm"]["handed_out"])
    rows = [[DECODERS[decoder], label] + [
        f"{paths[path][t]:.1f} ({paths[path][t] / paths['handed_out'][t]:.1f}x)"
        for t in threads] for decoder, paths in training.items()
        for path, label in Q3_PATHS.items()]
    return markdown_table(["decoder", "path"] + [THREADS.get(t, t) for t in threads], rows)


def table_q3_speed_gpu(res: Results) -> str:
    """The GPU bench in float32 and in bf16 (q3-bench-gpu, q3-bench-gpu-amp), speed-ups over
    the float32 handed-out path."""
    fp32, bf16 = (res.get(name, "results.training") for name in ("q3-bench-gpu",
                                                                  "q3-bench-gpu-amp"))
    rows = []
    for decoder in fp32:
        base = fp32[decoder]["handed_out"]["1_threads"]
        rows += [[DECODERS[decoder], Q3_PATHS[path]] + [
            f"{run[decoder][path]['1_threads']:,.0f} "
            f"({run[decoder][path]['1_threads'] / base:.1f}x)" for run in (fp32, bf16)]
            for path in ("handed_out", "fast", "fast_grouped")]
    return markdown_table(["decoder", "path", "float32 clips/s", "bf16 clips/s"], rows)


def device_label(name: str, res: Results) -> str:
    """'CPU, 1 thread' or the GPU's name, from a run's results file."""
    machine, config = res.get(name, "machine"), res.get(name, "config")
    if config["device"].startswith("cuda"):
        return machine["cuda"]
    threads = machine["torch_threads"]
    return f"CPU, {threads} thread{'s' if threads > 1 else ''}"


def table_q3_runs(res: Results) -> str:
    """Each Q3 run's device and time."""
    rows = [[DECODERS[decoder], SETTINGS[setting], device_label(name, res),
             f"{res.get(name, 'results.train_seconds') / 60:.1f}",
             f"{res.get(name, 'wall_time_s') / 60:.1f}"]
            for (decoder, setting), name in Q3_RUNS.items()]
    return markdown_table(["decoder", "run", "device", "training + validation (min)",
                           "whole run (min)"], rows)


def table_q3_commands(res: Results) -> str:
    rows = [[DECODERS[decoder], SETTINGS[setting], f"`{res.get(name, 'command')}`"]
            for (decoder, setting), name in Q3_RUNS.items()]
    for decoder, candidates in GPU_CANDIDATES.items():
        chosen = gpu_recipe(res, decoder)
        rows += [[DECODERS[decoder], "GPU recipe" if name == chosen else "GPU recipe candidate",
                  f"`{res.get(name, 'command')}`"] for name in candidates.values()]
    return markdown_table(["decoder", "run", "command"], rows)


def table_glance(res: Results) -> str:
    """The README's "results at a glance" (build() writes it between the README's markers)."""
    worst = max(r["max_abs_err"] for r in res.get("q1", "results.feature_map"))
    timing = res.get("q1", "results.timing_vs_length")
    rows = [["Q1", "feature map: worst error of phi(q)^T phi(k) vs the series",
             f"{worst:.1e}", "float64 random vectors"],
            ["Q1", f"time slope in L, softmax / linear form (D={timing['D']}, K={timing['K']})",
             f"{timing['softmax']['slope']:.2f} / {timing['linear']['slope']:.2f}",
             "timings, one CPU thread"]]
    q2 = res.get("q2", "results")
    sizes = res.get("q2", "data.sizes")
    for key, label in (("q2_1", "max-pooling"), ("q2_2", "no max-pooling")):
        rows.append(["Q2", f"test accuracy, {label}, lr {q2['best_learning_rate']} "
                     f"({sizes['test']}-image subset / all {sizes['test_full']:,})",
                     f"{q2[key]['test_acc']:.4f} / {q2[key]['test_acc_full']:.4f}",
                     "synthetic OCTMNIST stand-in"])
    for (decoder, setting), name in Q3_RUNS.items():
        test, config = res.get(name, "results.test"), res.get(name, "config")
        rows.append(["Q3", f"{DECODERS[decoder]}, {SETTINGS[setting]}: test loss / CER",
                     f"{test['loss']:.4f} / {test['cer']:.4f}",
                     f"synthetic speech, {config['epochs']} epochs, batch {config['batch_size']}"])
    return markdown_table(["question", "result", "value", "data"], rows)


TABLES: dict[str, Callable[[Results], str]] = {
    "q1_timing": table_q1_timing, "q1_feature_cost": table_q1_feature_cost,
    "q1_feature_map": table_q1_feature_map, "q1_positivity": table_q1_positivity,
    "q2_runs": table_q2_runs, "q2_params": table_q2_params, "q2_speed": table_q2_speed,
    "q3_test": table_q3_test, "q3_genuine": table_q3_genuine, "q3_settings": table_q3_settings,
    "q3_ingredients": table_q3_ingredients, "q3_longer": table_q3_longer,
    "q3_engines": table_q3_engines,
    "q3_genuine_examples": table_q3_genuine_examples,
    "q3_genuine_paired": table_q3_genuine_paired, "q3_floor": table_q3_floor,
    "q3_seeds": table_q3_seeds,
    "q3_similarity_example": table_q3_similarity_example, "q3_speed": table_q3_speed,
    "q3_speed_gpu": table_q3_speed_gpu, "q3_runs": table_q3_runs,
    "q3_commands": table_q3_commands, "q3_gpu_recipe": table_q3_gpu_recipe,
    "q3_gpu_rerun": table_q3_gpu_rerun, "q3_wider": table_q3_wider, "q3_split": table_q3_split,
    "q3_lifter": table_q3_lifter, "q3_mbrola": table_q3_mbrola,
    "q3_choice_sets": table_q3_choice_sets, "q3_festival": table_q3_festival,
    "q3_gpu_padding": table_q3_gpu_padding,
}


# ---------------------------------------------------------------------------------------------
# Figures, documents, README
# ---------------------------------------------------------------------------------------------
def redraw_figures(res: Results, plots_dir: Path = PLOTS_DIR) -> None:
    """Every figure the report shows that a results file holds the numbers of. (The attention
    maps of Q3.3 are drawn by hw2-q3.py from the trained model; the genuine-vs-synthetic OCT
    images by download_octmnist.py from the images.)"""
    q1 = res.get("q1", "results")
    figures.plot_q1_exp([row["K"] for row in q1["exp_truncation"]["positivity"]], plots_dir)
    figures.plot_q1_error_vs_scale(q1["error_vs_scale"], plots_dir)
    figures.plot_q1_truncation([row["K"] for row in q1["exp_truncation"]["positivity"]],
                               q1["error_vs_scale"], plots_dir)
    figures.plot_q1_time(q1["timing_vs_length"], plots_dir)
    figures.plot_q1_feature_cost(q1["timing_vs_feature_size"], plots_dir)
    runs = res.get("q2", "results.runs")
    for run in runs:
        figures.plot_q2_run(run, plots_dir)
    figures.plot_q2_comparison(runs, plots_dir)
    histories = {key: res.get(name, "results.history") for key, name in Q3_RUNS.items()}
    for (decoder, _), name in Q3_RUNS.items():
        figures.plot_q3_history(name, decoder, histories[decoder, _], plots_dir)
    # issue 25's shorter and longer runs, and the attention decoder's two forms with seed 43
    for name in [*map(ingredient_run, {**INGREDIENTS, **LONGER, **FESTIVAL}), *SEEDS[43]]:
        figures.plot_q3_history(name, "transformer", res.get(name, "results.history"), plots_dir)
    second = {d: res.get(name, "results.history") for d, name in SECOND_FORM.items()}
    for decoder, history in second.items():
        figures.plot_q3_history(SECOND_FORM[decoder], decoder, history, plots_dir)
    figures.plot_q3_decoders("q3-both", second, plots_dir)  # as hw2-q3 draws it
    for decoder, candidates in GPU_CANDIDATES.items():  # issue 26's GPU recipes
        for name in candidates.values():
            figures.plot_q3_history(name, decoder, res.get(name, "results.history"), plots_dir)
    figures.plot_q3_comparison("q3-gpu-recipes", {
        title: {d: res.get(GPU_CANDIDATES[d][key], "results.history") for d in DECODERS}
        for key, title in (("plain", "No augmentation"), ("augmented", "Augmented"))},
        plots_dir)
    figures.plot_q3_decoders("q3-both-norm-only", {d: histories[d, "cpu"] for d in DECODERS},
                             plots_dir)
    figures.plot_q3_comparison("q3-decoders", {
        title: {d: histories[d, s] for d in DECODERS}
        for s, title in (("gpu", "Statement's setting"), ("cpu", "CPU recipe"))}, plots_dir)
    example = res.get("q3-transformer-gpu-analysis", "results.similarities.example")
    figures.plot_decoder_reading(example["target"], plots_dir)


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


FIGURE = re.compile(r"^!\[[^\]]+\]\(\.\./plots/([\w\-.]+)\.png\)", re.M)
FIGURE_REF = re.compile(r"\{\{\s*figure\s+([\w\-.]+)\s*\}\}")


def number_figures(text: str) -> str:
    """Replace each {{ figure <plot name> }} with "Figure N", N counting the captioned images
    of `text` in order, as LaTeX numbers them."""
    numbers: dict[str, int] = {}
    for name in FIGURE.findall(text):
        numbers.setdefault(name, len(numbers) + 1)

    def cite(match: re.Match) -> str:
        if match.group(1) not in numbers:
            raise BuildError(f"figure '{match.group(1)}' is cited but not shown")
        return f"Figure {numbers[match.group(1)]}"
    return FIGURE_REF.sub(cite, text)


def with_glance(readme: str, res: Results) -> str:
    """The README text with its results-at-a-glance block regenerated."""
    start, end = readme.find(GLANCE_BEGIN), readme.find(GLANCE_END)
    if start < 0 or end < start:
        raise BuildError(f"README.md lacks the markers {GLANCE_BEGIN} ... {GLANCE_END}")
    return (readme[:start + len(GLANCE_BEGIN)] + "\n" + table_glance(res) + "\n"
            + readme[end:])


def build(results_dir: Path = RESULTS_DIR, output_dir: Path = REPORT_DIR,
          readme: Path | None = README) -> list[Path]:
    """Write the documents into output_dir (and, unless readme is None, the README's results
    table); return the documents' paths. Everything is rendered before anything is written."""
    res = Results(results_dir)
    check_synthetic_speech(res)
    texts = {name: number_figures("\n\n".join(
        render((REPORT_DIR / "src" / part).read_text(), res).strip() for part in parts) + "\n")
        for name, parts in DOCUMENTS.items()}
    new_readme = with_glance(readme.read_text(), res) if readme is not None else None
    for name, text in texts.items():
        (output_dir / name).write_text(text)
    if new_readme is not None:
        readme.write_text(new_readme)
    return [output_dir / name for name in texts]


# ---------------------------------------------------------------------------------------------
# The PDF: pandoc turns report.md into LaTeX and pdflatex typesets it
# ---------------------------------------------------------------------------------------------
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
% Figures float to the nearest place they fit (a figure that does not fit at the bottom of
% a page no longer leaves it half empty), at 80% of their natural size (labels stay legible,
% two plots fit on a page) and at most the text width.
\usepackage{float}
\floatplacement{figure}{htbp}
\makeatletter
\def\maxwidth{\ifdim0.8\Gin@nat@width>\linewidth\linewidth\else0.8\Gin@nat@width\fi}
\makeatother
% Figures may fill most of a page of text, and a page of figures alone is at least 70% full:
% no page but the last is more than a third blank.
\renewcommand{\topfraction}{0.85}
\renewcommand{\bottomfraction}{0.6}
\renewcommand{\textfraction}{0.1}
\renewcommand{\floatpagefraction}{0.7}
% Every table of the report is short: pandoc's longtable becomes an unbreakable, centred
% tabular in small type. (A longtable that starts on a page with a figure floated to its top
% breaks that page too late: its last lines ran past the bottom, under the page number.)
\renewenvironment{longtable}[1][]
  {\begin{center}\small\let\endhead\relax\begin{tabular}}{\end{tabular}\end{center}}
% Captions in small type; words are hyphenated only where nothing else fits.
\usepackage[font=small,labelfont=bf]{caption}
\hyphenpenalty=1000
% A fixed document ID (pdflatex derives it from the temporary file's path otherwise).
\pdftrailerid{hw2-report}
"""
PANDOC_OPTIONS = [
    # GitHub's Markdown has no ~sub~ or ^super^ script: a tilde stays a tilde in the PDF too
    "--from=markdown-subscript-superscript", f"--pdf-engine={PDF_ENGINE}",
    "--shift-heading-level-by=-1",  # the report's one "#" heading becomes the title
    # a table whose source lines are shorter gets its natural column widths (no wrapping)
    f"--columns={PANDOC_COLUMNS}",
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


OVERFULL_PAGE = re.compile(r"Overfull \\vbox \(([\d.]+)pt too high\) has occurred while "
                           r"\\output is active.*?\[(\d+)", re.S)


def overfull_pages(log: str) -> list[str]:
    """'page N (X pt)' for each page whose content ran X pt past its bottom, from the LaTeX
    transcript that pandoc --verbose prints (its last run; the page is the next one shipped)."""
    last_run = log.rsplit("[makePDF] Run #", 1)[-1]
    return [f"page {page} ({points} pt)" for points, page in OVERFULL_PAGE.findall(last_run)]


def build_pdf(markdown: Path = REPORT_DIR / "report.md", pdf: Path = PDF_OUTPUT) -> Path:
    """Typeset `markdown` (its image paths relative to report/) as `pdf` with pandoc; a PDF
    with a page whose text runs past its bottom is an error and is not written.

    SOURCE_DATE_EPOCH fixes the dates pdflatex writes, so the same report gives the same PDF
    and a committed PDF changes only when its content does.
    """
    # An image alone in its paragraph becomes a captioned figure at a legible size; images
    # on consecutive lines would otherwise share one line of the page and overflow it.
    text = re.sub(r"^(!\[.*\]\(.*\).*)\n(?=!\[)", r"\1\n\n", markdown.read_text(), flags=re.M)
    env = {**os.environ, "SOURCE_DATE_EPOCH": os.environ.get("SOURCE_DATE_EPOCH", "0")}
    with tempfile.TemporaryDirectory() as tmp:
        preamble, typeset = Path(tmp) / "preamble.tex", Path(tmp) / "report.pdf"
        preamble.write_text(pdf_preamble(text))
        command = ["pandoc", *PANDOC_OPTIONS, f"--include-in-header={preamble}",
                   f"--resource-path={REPORT_DIR}", "--verbose", "--output", str(typeset)]
        proc = subprocess.run(command, input=text, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            # pandoc's own message follows the LaTeX transcript that --verbose prints
            tail = proc.stderr.rsplit("Error producing PDF.", 1)[-1]
            detail = " ".join(line.strip() for line in tail.splitlines()[:4] if line.strip())
            raise BuildError(f"pandoc could not build {pdf}: {detail}")
        overflows = overfull_pages(proc.stderr)
        if overflows:
            raise BuildError(f"{pdf} not written: text runs past the bottom of "
                             f"{', '.join(overflows)}")
        shutil.copyfile(typeset, pdf)
    return pdf


def build_pdf_if_possible(markdown: Path = REPORT_DIR / "report.md",
                          pdf: Path = PDF_OUTPUT) -> str:
    """Build the PDF where its converter is installed; the one line to print either way."""
    missing = missing_pdf_tools()
    if missing:
        return (f"skipped {pdf}: {' and '.join(missing)} not found "
                f"(apt-get install -y --no-install-recommends {PDF_PACKAGES})")
    return f"wrote {build_pdf(markdown, pdf)}"


OPTIONS = {"-no_figures": "keep the figures in plots/ as they are",
           "-no_pdf": "do not typeset the PDF"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        allow_abbrev=False,
        description="Redraw the report's figures from report/results/*.json into plots/, "
                    "write report/report.md, report/engineering.md and the README's results "
                    "table, and typeset report/report.pdf (needs pandoc and pdflatex).")
    for flag, meaning in OPTIONS.items():
        parser.add_argument(flag, action="store_true", help=meaning)
    argv = sys.argv[1:] if argv is None else argv
    # Python 3.11's argparse takes -no_fig for -no_figures even with allow_abbrev=False.
    unknown = [arg for arg in argv if arg.startswith("-") and arg not in {"-h", "--help",
                                                                          *OPTIONS}]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        if not args.no_figures:
            redraw_figures(Results(RESULTS_DIR))
            print(f"redrew the figures in {PLOTS_DIR}")
        for path in build():
            print(f"wrote {path}")
        if not args.no_pdf:
            print(build_pdf_if_possible())
    except BuildError as err:
        sys.exit(f"error: {err}")


if __name__ == "__main__":
    main()
