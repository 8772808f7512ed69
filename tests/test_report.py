import importlib.util

import pytest

from conftest import REPO

spec = importlib.util.spec_from_file_location("report_build", REPO / "report" / "build.py")
build = importlib.util.module_from_spec(spec)
spec.loader.exec_module(build)


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
