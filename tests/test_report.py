import re
import subprocess
import sys

import matplotlib
import pytest
import torch

from conftest import REPO, load_script

build = load_script("report/build.py")
from hw2 import figures  # noqa: E402  (build puts the repository on the path first)

# Figures the build cannot redraw, having no numbers for them: drawn by the scripts from the
# trained model (attention maps) or from the images (genuine beside synthetic OCT scans).
DRAWN_BY_SCRIPTS = re.compile(r"q3-.*-attention|q2-real-vs-synthetic")


# ---------------------------------------------------------------------------------------------
# The committed outputs are exactly what the build makes from the committed results
# ---------------------------------------------------------------------------------------------
def test_committed_report_and_readme_table_are_rebuilt_byte_for_byte(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text((REPO / "README.md").read_text())
    written = build.build(output_dir=tmp_path, readme=readme)
    assert [p.name for p in written] == ["report.md", "engineering.md"]
    for path in written:
        assert path.read_text() == (REPO / "report" / path.name).read_text(), \
            f"report/{path.name} is stale: run python report/build.py"
    assert readme.read_text() == (REPO / "README.md").read_text(), \
        "README.md's results table is stale: run python report/build.py"


def test_committed_figures_are_redrawn_byte_for_byte_from_the_results(tmp_path):
    build.redraw_figures(build.Results(build.RESULTS_DIR), tmp_path)
    drawn = sorted(p.name for p in tmp_path.iterdir())
    committed = sorted(p.name for p in (REPO / "plots").iterdir()
                       if not DRAWN_BY_SCRIPTS.match(p.name))
    assert drawn == committed, "plots/ holds a figure the build does not draw, or lacks one"
    stale = [name for name in drawn
             if (tmp_path / name).read_bytes() != (REPO / "plots" / name).read_bytes()]
    assert not stale, f"stale figures (run python report/build.py): {stale}"


def test_every_figure_of_the_report_exists_and_is_cited_by_its_number():
    text = (REPO / "report" / "report.md").read_text()
    shown = re.findall(r"^!\[(.+?)\]\(\.\./plots/(.+?\.png)\)", text, flags=re.M)
    assert shown and all((REPO / "plots" / path).exists() for _, path in shown)
    prose = "\n".join(line for line in text.splitlines() if not line.startswith("!["))
    for number in range(1, len(shown) + 1):
        assert re.search(rf"\bFigure {number}\b", prose), f"Figure {number} is never cited"
    assert not re.search(rf"\bFigure {len(shown) + 1}\b", prose)


def test_report_cites_no_commit_and_no_results_file():
    text = (REPO / "report" / "report.md").read_text()
    prose = "\n".join(line for line in text.splitlines() if not line.startswith("!["))
    assert "git show" not in prose and "report/results" not in prose and "plots/" not in prose


def test_every_q3_caption_says_synthetic_speech():
    text = (REPO / "report" / "src" / "q3.md").read_text()
    captions = re.findall(r"^!\[(.+?)\]\(", text, flags=re.M)
    assert captions
    for caption in captions:
        assert "synthetic speech" in caption or "a diagram, not data" in caption, caption


# ---------------------------------------------------------------------------------------------
# Placeholders, tables and figure numbers
# ---------------------------------------------------------------------------------------------
def test_readme_without_the_table_markers_fails_loudly(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# no markers here\n")
    with pytest.raises(build.BuildError, match="lacks the markers"):
        build.build(output_dir=tmp_path, readme=readme)


def test_missing_results_file_fails_loudly(tmp_path):
    with pytest.raises(build.BuildError, match="missing results file .*q3-lstm-gpu.json"):
        build.build(results_dir=tmp_path, output_dir=tmp_path, readme=None)


def test_missing_key_and_unknown_table_fail_loudly():
    res = build.Results(build.RESULTS_DIR)
    with pytest.raises(build.BuildError, match="no 'results.nope'"):
        build.render("{{ q1.results.nope }}", res)
    with pytest.raises(build.BuildError, match="unknown table"):
        build.render("{{ table nope }}", res)


def test_placeholders_format_values_and_index_lists_from_either_end():
    res = build.Results(build.RESULTS_DIR)
    slope = res.get("q1", "results.slope_softmax")
    assert build.render("s={{ q1.results.slope_softmax :.3f }}", res) == f"s={slope:.3f}"
    rows = res.get("q1", "results.feature_map")
    assert build.render("{{q1.results.feature_map.0.D}}", res) == str(rows[0]["D"])
    assert build.render("{{q1.results.feature_map.-1.K}}", res) == str(rows[-1]["K"])


def test_selector_finds_the_one_list_item_by_a_field():
    res = build.Results(build.RESULTS_DIR)
    runs = res.get("q2", "results.runs")
    run = next(r for r in runs if r["learning_rate"] == 0.001 and r["no_maxpool"])
    assert build.render("{{ q2.results.runs.[config=0.001-0.7-0-sgd-True].val_acc.-1 :.6f }}",
                        res) == f"{run['val_acc'][-1]:.6f}"
    history = res.get("q3-lstm", "results.history")
    assert res.get("q3-lstm", "results.history.[epoch=2.0].update") == history[1]["update"]
    for missing in ("[config=nope]", "[no_maxpool=False]"):  # none, and more than one
        with pytest.raises(build.BuildError, match="q2.json has no"):
            res.get("q2", f"results.runs.{missing}.val_acc")


def test_figures_are_numbered_in_order_of_appearance_and_citations_checked():
    text = ("See {{ figure b }} and {{ figure a }}.\n\n![A](../plots/a.png)\n\n"
            "![B](../plots/b.png){height=5cm}\n\nAgain {{figure a}}.\n")
    assert build.number_figures(text).splitlines()[0] == "See Figure 2 and Figure 1."
    assert build.number_figures(text).endswith("Again Figure 1.\n")
    with pytest.raises(build.BuildError, match="figure 'c' is cited but not shown"):
        build.number_figures("{{ figure c }}\n\n![A](../plots/a.png)\n")


@pytest.mark.parametrize("content", ["", '{"name": "q1", "results": {"slope'])
def test_empty_or_truncated_results_file_is_a_one_line_error_naming_it(tmp_path, content):
    (tmp_path / "q1.json").write_text(content)
    with pytest.raises(build.BuildError, match="q1.json is not valid JSON") as err:
        build.Results(tmp_path)["q1"]
    assert "\n" not in str(err.value)


def test_value_its_format_cannot_show_is_an_error_naming_it(tmp_path):
    (tmp_path / "q1.json").write_text('{"results": {"crossover_L": null}}')
    with pytest.raises(build.BuildError, match="'results.crossover_L' is None"):
        build.render("{{ q1.results.crossover_L :.0f }}", build.Results(tmp_path))


def test_report_refuses_results_not_trained_on_synthetic_speech(tmp_path):
    for path in build.RESULTS_DIR.glob("*.json"):
        (tmp_path / path.name).write_text(path.read_text().replace(
            '"synthetic_speech": true', '"synthetic_speech": false'))
    with pytest.raises(build.BuildError, match="not trained on the synthetic speech corpus"):
        build.build(results_dir=tmp_path, output_dir=tmp_path, readme=None)


def test_wrapped_table_is_wider_than_pandoc_columns_and_keeps_proportions():
    natural = build.markdown_table(["a", "bb"], [["x" * 10, "y" * 30]])
    wrapped = build.markdown_table(["a", "bb"], [["x" * 10, "y" * 30]], wrap=True)
    dashes = [len(cell) for cell in wrapped.splitlines()[1].strip("|").split("|")]
    assert max(map(len, natural.splitlines())) <= build.PANDOC_COLUMNS
    assert sum(dashes) > build.PANDOC_COLUMNS and dashes[1] == 3 * dashes[0]


# ---------------------------------------------------------------------------------------------
# Command line: help and mistakes rebuild nothing
# ---------------------------------------------------------------------------------------------
def outputs_state() -> dict:
    paths = [REPO / "README.md", *(REPO / "report").glob("report.*"),
             REPO / "report" / "engineering.md", *(REPO / "plots").iterdir()]
    return {path: (path.stat().st_mtime_ns, path.read_bytes()) for path in paths}


@pytest.mark.parametrize("argv,status,expected", [
    (["--help"], 0, "usage: build.py"), (["-h"], 0, "-no_figures"),
    (["-no_figure"], 2, "unrecognized arguments: -no_figure"),
    (["-no_pdf", "extra"], 2, "unrecognized arguments: extra")])
def test_help_and_unknown_flags_rebuild_nothing(argv, status, expected):
    before = outputs_state()
    proc = subprocess.run([sys.executable, str(REPO / "report" / "build.py"), *argv],
                          capture_output=True, text=True)
    assert proc.returncode == status and expected in proc.stdout + proc.stderr
    assert "wrote" not in proc.stdout and "Traceback" not in proc.stderr
    assert outputs_state() == before


# ---------------------------------------------------------------------------------------------
# The PDF
# ---------------------------------------------------------------------------------------------
def test_pdf_step_is_skipped_in_one_line_without_its_converter(tmp_path, monkeypatch):
    monkeypatch.setattr(build.shutil, "which", lambda tool: None)
    message = build.build_pdf_if_possible(REPO / "report" / "report.md", tmp_path / "r.pdf")
    assert message.startswith("skipped") and "pandoc" in message and "\n" not in message
    assert not (tmp_path / "r.pdf").exists()


def test_pdf_is_built_with_every_figure_embedded(tmp_path):
    missing = build.missing_pdf_tools()
    if missing:
        pytest.skip(f"{' and '.join(missing)} not installed (apt-get install {build.PDF_PACKAGES})")
    markdown = REPO / "report" / "report.md"
    pdf = build.build_pdf(markdown, tmp_path / "report.pdf")
    data = pdf.read_bytes()
    assert data.startswith(b"%PDF-")
    figures_shown = set(re.findall(r"^!\[.*\]\((.*?)\)", markdown.read_text(), flags=re.M))
    # each PNG is an image object of its own (pdflatex never packs images into object streams)
    assert figures_shown and data.count(b"/Subtype /Image") >= len(figures_shown)


def test_overfull_pages_are_read_from_the_last_latex_run_with_their_page_numbers():
    overflow = ("Overfull \\vbox (209.7511pt too high) has occurred while \\output is active []"
                "\n\n\n[8 <../plots/a.png> <../plots/b.png>] [9]")
    log = f"[makePDF] Run #1\n[1] [2] {overflow}\n[makePDF] Run #2\n[1] [2] [3]\n"
    assert build.overfull_pages(log) == []
    assert build.overfull_pages(log + overflow) == ["page 8 (209.7511 pt)"]
    assert build.overfull_pages("Overfull \\hbox (3.2pt too wide) in paragraph\n[4]") == []


def test_pdf_with_a_page_that_overflows_its_bottom_is_an_error_and_not_written(tmp_path):
    missing = build.missing_pdf_tools()
    if missing:
        pytest.skip(f"{' and '.join(missing)} not installed (apt-get install {build.PDF_PACKAGES})")
    # a table cannot break across pages: it goes to page 2, whose bottom its 90 rows overflow
    markdown = tmp_path / "long.md"
    markdown.write_text("# Long\n\n" + build.markdown_table(["i", "i squared"], [
        [i, i * i] for i in range(90)]) + "\n")
    with pytest.raises(build.BuildError, match=r"not written: text runs past the bottom of "
                                               r"page 2 \(\d"):
        build.build_pdf(markdown, tmp_path / "long.pdf")
    assert not (tmp_path / "long.pdf").exists()


def test_contributions_paragraph_comes_right_after_the_title():
    # the statement takes 10 points off a report without it
    paragraphs = (REPO / "report" / "src" / "header.md").read_text().split("\n\n")
    assert paragraphs[0].startswith("# ") and paragraphs[1].startswith("**Contributions.**")


# ---------------------------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------------------------
def test_attention_figure_is_legible_at_print_size(tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr(figures, "save_figure", lambda fig, name, plots_dir: seen.append(fig))
    n, frames = 60, 40
    row = [1] + [5 + i % 20 for i in range(n)] + [2] + [0] * 5  # start, 60 characters, stop
    maps = {kind: torch.rand(3, 70, 70).softmax(dim=-1) for kind in ("cross", "self")}
    figures.plot_attention("q3-x", "transformer", maps, row, frames, 1, tmp_path)
    fig = seen[0]
    width, height = fig.get_size_inches()
    scale = min(0.8, 6.7 / width)  # the report's PDF: 80% of natural size, at most 6.7 in wide
    assert height * scale <= 5  # half of A4's text height
    panels = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    assert len(panels) == 2 and len(fig.axes) == 4  # a colour bar per panel
    for ax in panels:
        labels = ax.get_yticklabels()
        assert 0 < len(labels) <= 30
        assert all(label.get_fontsize() * scale >= 7 for label in labels)
    assert "attention decoder" in panels[0].get_title()
    matplotlib.pyplot.close(fig)


def test_figure_legends_use_names_not_result_keys(tmp_path, monkeypatch):
    from hw2.asr_metrics import SIMILARITIES
    assert list(figures.SIMILARITY_NAMES) == list(SIMILARITIES)
    history = build.Results(build.RESULTS_DIR).get("q3-transformer", "results.history")
    seen = []
    monkeypatch.setattr(figures, "save_figure",
                        lambda fig, name, plots_dir: seen.append((name, fig)))
    figures.plot_q3_history("q3-x", "transformer", history, tmp_path)
    for name, fig in seen:
        texts = [t.get_text() for ax in fig.axes if ax.get_legend()
                 for t in ax.get_legend().get_texts()] + [ax.get_title() for ax in fig.axes]
        assert texts and not any("_" in t for t in texts), (name, texts)
        assert not any("transformer" in t for t in texts), (name, texts)
        matplotlib.pyplot.close(fig)


def test_intervals_from_the_test_logs_equal_those_the_runs_recorded():
    """The report's CER intervals are recomputed from each run's test log; for the runs that
    also recorded theirs, the two agree, and the log holds every scored clip."""
    res = build.Results(build.RESULTS_DIR)
    runs = [(name, "real_clips", "genuine")
            for name in (*build.SECOND_FORM.values(), build.Q3_RUNS["lstm", "cpu"],
                         build.Q3_RUNS["transformer", "cpu"])]
    runs += [(build.ingredient_run(arm), key, label)
             for arm in {**build.INGREDIENTS, **build.LONGER}
             for key, label in (("real_clips", "genuine"), ("heldout_clips", "held-out voice"))]
    for name, key, label in runs:
        pairs = build.logged_pairs(res, name, label)
        assert len(pairs) == res.get(name, f"results.{key}.clips")
        assert list(build.bootstrap_cer(pairs)) == res.get(name, f"results.{key}.cer_95ci")


def test_augmentation_labels_name_each_flag_once():
    config = {"speed_perturb": 0.1, "vtlp": 0.0, "freq_masks": 2, "time_masks": 2,
              "utterance_norm": True}
    assert build.augmentation_label(config) == \
        "-speed_perturb 0.1 -freq_masks 2 -time_masks 2 -utterance_norm"
    assert build.augmentation_label(config, short=True) == "tempo, masks, per-clip norm"
    assert build.augmentation_label({}) == build.augmentation_label({}, short=True) == "none"
    room = {"reverb": 0.5, "utterance_norm": False}
    assert build.augmentation_label(room) == "-reverb 0.5"
    assert build.augmentation_label(room, short=True) == "reverberation"
    floor = {"dynamic_range": 6.0, "utterance_norm": True}
    assert build.augmentation_label(floor) == "-dynamic_range 6 -utterance_norm"
    assert build.augmentation_label(floor, short=True) == "floor 6 decades, per-clip norm"
    lifter = {"lifter": 13, "utterance_norm": True, "vtlp": 0.1}
    assert build.augmentation_label(lifter) == "-vtlp 0.1 -lifter 13 -utterance_norm"
    assert build.augmentation_label(lifter, short=True) == "VTLP, 13 cosines, per-clip norm"


def test_rank_correlation_is_spearmans_with_tied_values_at_their_mean_rank():
    assert build.rank_correlation([0.1, 0.5, 0.7], [2.0, 30.0, 31.0]) == pytest.approx(1.0)
    assert build.rank_correlation([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    # ranks (1, 2.5, 2.5, 4) against (1, 2, 3, 4): 4.5 / sqrt(4.5 * 5)
    assert build.rank_correlation([1, 2, 2, 4], [1, 2, 3, 4]) == pytest.approx(3 / 10 ** 0.5)


def test_first_difference_names_the_epoch_where_two_histories_part():
    def history(*losses):
        return [{"epoch": float(e), "validation": {"loss": loss}} for e, loss in
                enumerate(losses, 1)]
    committed = history(2.3721, 2.321, 2.140, 1.871)
    assert build.first_difference(history(2.3719, 2.321, 2.169, 1.885), committed) == "3"
    assert build.first_difference(history(2.372, 2.321), committed) == "none"
    assert build.first_difference(committed[2:], history(2.372, 2.321, 2.140)) == "none"
