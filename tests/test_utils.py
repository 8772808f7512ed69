import os
import json
from pathlib import Path

import matplotlib.figure

import utils
from hw2 import cli, results


def test_data_dir_rule_flag_then_env_then_default(monkeypatch):
    monkeypatch.setenv(utils.DATA_DIR_ENV, "/from/env")
    assert utils.resolve_data_dir("/from/flag") == Path("/from/flag")
    assert utils.resolve_data_dir(None) == Path("/from/env")
    monkeypatch.delenv(utils.DATA_DIR_ENV)
    assert utils.resolve_data_dir(None) == Path("data")


def test_write_results_records_numbers_and_provenance(tmp_path):
    path = results.write_results("demo", {"acc": 0.5, "curve": [1, 2]}, config={"lr": 0.1},
                               seed=7, data={"name": "toy", "synthetic": True},
                               wall_time_s=1.23456, results_dir=tmp_path)
    record = json.loads(path.read_text())
    assert path == tmp_path / "demo.json"
    assert record["results"] == {"acc": 0.5, "curve": [1, 2]}
    assert record["config"] == {"lr": 0.1} and record["seed"] == 7
    assert record["data"]["synthetic"] is True
    assert record["wall_time_s"] == 1.235
    assert {"python", "torch", "numpy"} <= set(record["versions"])
    assert record["machine"]["cores"] >= 1


def test_write_results_converts_numpy_and_torch_values(tmp_path):
    import numpy as np
    import torch
    path = results.write_results("conv", {"a": np.float32(0.25), "b": torch.tensor([1, 2]),
                                        "c": np.arange(2)}, config={}, seed=0, data="x",
                               wall_time_s=0, results_dir=tmp_path)
    assert json.loads(path.read_text())["results"] == {"a": 0.25, "b": [1, 2], "c": [0, 1]}


def test_write_results_stores_non_finite_values_as_null(tmp_path):
    import numpy as np
    path = results.write_results("nan", {"x": float("nan"), "y": [1.0, float("inf")],
                                       "z": np.float64("nan")}, config={}, seed=0, data="x",
                               wall_time_s=0, results_dir=tmp_path)
    assert json.loads(path.read_text())["results"] == {"x": None, "y": [1.0, None], "z": None}


def test_plot_lines_writes_png_and_pdf_with_legend_and_labels(tmp_path, monkeypatch):
    seen = []
    original = matplotlib.figure.Figure.savefig

    def spy(fig, path, **kwargs):
        ax = fig.axes[0]
        legend = ax.get_legend()
        seen.append((legend is not None and [t.get_text() for t in legend.get_texts()],
                     ax.get_xlabel(), ax.get_ylabel()))
        return original(fig, path, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", spy)
    paths = utils.plot_lines("demo", {"a": ([1, 2], [3, 4]), "b": ([1, 2], [4, 3])},
                             "epoch", "loss", plots_dir=tmp_path)
    assert [p.name for p in paths] == ["demo.png", "demo.pdf"]
    assert all(p.stat().st_size > 0 for p in paths)
    assert seen == [(["a", "b"], "epoch", "loss")] * 2  # legend present when each file is saved


def test_fail_is_a_one_line_exit():
    err = cli.fail("missing file x")
    assert isinstance(err, SystemExit) and str(err.code) == "error: missing file x"


def test_configure_seed_repeats_torch_draws():
    import torch
    utils.configure_seed(3)
    a = torch.rand(3)
    utils.configure_seed(3)
    assert torch.equal(a, torch.rand(3))


def test_atomic_write_removes_temporaries_of_killed_writers_only(tmp_path):
    import subprocess
    import sys
    from hw2.checkpoints import atomic_write
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    target = tmp_path / "q2.json"
    stale = tmp_path / f".q2.json.{dead}.tmp"  # what a SIGKILLed writer leaves
    live = tmp_path / f".q2.json.{os.getppid()}.tmp"  # a writer still running
    other = tmp_path / f".q2.jsonl.{dead}.tmp"  # another file's temporary
    for path in (stale, live, other):
        path.write_text("half")
    with atomic_write(target) as tmp:
        tmp.write_text("{}")
    assert target.read_text() == "{}"
    assert not stale.exists() and live.exists() and other.exists()
