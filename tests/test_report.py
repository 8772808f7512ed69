import re

import pytest

from conftest import REPO, load_script

build = load_script("report/build.py")


def test_committed_report_and_readme_table_are_rebuilt_byte_for_byte(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text((REPO / "README.md").read_text())
    out = build.build(output=tmp_path / "report.md", readme=readme)
    assert out.read_text() == (REPO / "report" / "report.md").read_text(), \
        "report/report.md is stale: run python report/build.py"
    assert readme.read_text() == (REPO / "README.md").read_text(), \
        "README.md's results table is stale: run python report/build.py"


def test_readme_without_the_table_markers_fails_loudly(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# no markers here\n")
    with pytest.raises(build.BuildError, match="lacks the markers"):
        build.build(output=tmp_path / "report.md", readme=readme)


def test_missing_results_file_fails_loudly(tmp_path):
    with pytest.raises(build.BuildError, match="missing results file .*q1.json"):
        build.build(results_dir=tmp_path, output=tmp_path / "r.md", readme=None)


def test_missing_key_and_unknown_table_fail_loudly():
    res = build.Results(build.RESULTS_DIR)
    with pytest.raises(build.BuildError, match="no 'results.nope'"):
        build.render("{{ q1.results.nope }}", res)
    with pytest.raises(build.BuildError, match="unknown table"):
        build.render("{{ table nope }}", res)


def test_placeholders_format_values_and_index_lists():
    res = build.Results(build.RESULTS_DIR)
    slope = res.get("q1", "results.slope_softmax")
    assert build.render("s={{ q1.results.slope_softmax :.3f }}", res) == f"s={slope:.3f}"
    first = res.get("q1", "results.feature_map")[0]["D"]
    assert build.render("{{q1.results.feature_map.0.D}}", res) == str(first)


@pytest.mark.parametrize("content", ["", '{"name": "q1", "results": {"slope'])
def test_empty_or_truncated_results_file_is_a_one_line_error_naming_it(tmp_path, content):
    (tmp_path / "q1.json").write_text(content)
    with pytest.raises(build.BuildError, match="q1.json is not valid JSON") as err:
        build.build(results_dir=tmp_path, output=tmp_path / "r.md", readme=None)
    assert "\n" not in str(err.value)


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
    figures = set(re.findall(r"^!\[.*\]\((.*)\)$", markdown.read_text(), flags=re.M))
    # each PNG is an image object of its own (pdflatex never packs images into object streams)
    assert figures and data.count(b"/Subtype /Image") >= len(figures)


def test_contributions_paragraph_comes_right_after_the_title():
    # the statement takes 10 points off a report without it
    paragraphs = (REPO / "report" / "src" / "header.md").read_text().split("\n\n")
    assert paragraphs[0].startswith("# ") and paragraphs[1].startswith("**Contributions.**")


def test_value_its_format_cannot_show_is_an_error_naming_it(tmp_path):
    (tmp_path / "q1.json").write_text('{"results": {"crossover_L": null}}')
    with pytest.raises(build.BuildError, match="'results.crossover_L' is None"):
        build.render("{{ q1.results.crossover_L :.0f }}", build.Results(tmp_path))
