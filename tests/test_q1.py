import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import REPO, load_script

q1 = load_script("hw2-q1.py")

CASES = [(1, 2), (1, 5), (2, 3), (3, 3), (5, 3), (8, 3), (3, 4), (6, 4), (2, 6), (4, 5)]


@pytest.mark.parametrize("d,n_terms", CASES)
def test_feature_maps_reproduce_truncated_series(d, n_terms):
    gen = torch.Generator().manual_seed(d * 10 + n_terms)
    q = torch.randn(30, d, dtype=torch.float64, generator=gen)
    k = torch.randn(30, d, dtype=torch.float64, generator=gen)
    target = sum((q * k).sum(1) ** n / math.factorial(n) for n in range(n_terms))
    for features, dim in q1.FEATURE_MAPS.values():
        phi_q, phi_k = features(q, n_terms), features(k, n_terms)
        assert phi_q.shape == (30, dim(d, n_terms))
        torch.testing.assert_close((phi_q * phi_k).sum(1), target, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("d", [1, 2, 7, 64])
def test_dimensions_for_three_terms_match_closed_forms(d):
    assert q1.tensor_power_dim(d, 3) == 1 + d + d * d
    assert q1.monomial_dim(d, 3) == 1 + d + d * (d + 1) // 2


def test_monomial_dim_counts_monomials_of_degree_below_k():
    from itertools import combinations_with_replacement
    for d, n_terms in [(3, 4), (5, 5), (10, 3)]:
        count = sum(len(list(combinations_with_replacement(range(d), n))) for n in range(n_terms))
        assert q1.monomial_dim(d, n_terms) == count


def test_check_feature_maps_reports_float64_errors():
    rows = q1.check_feature_maps([(3, 3), (4, 4)], n_pairs=20)
    assert [r["M_tensor"] for r in rows] == [13, 85] and [r["M_compact"] for r in rows] == [10, 35]
    assert all(r["max_abs_err"] < 1e-12 for r in rows)


def test_linear_form_equals_quadratic_form_and_series_attention():
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(40, 6, dtype=torch.float64, generator=gen) / 2 for _ in range(3))
    series = q1.series_attention(q, k, v, 3)
    for features, _ in q1.FEATURE_MAPS.values():
        phi_q, phi_k = features(q, 3), features(k, 3)
        quadratic = q1.quadratic_feature_attention(phi_q, phi_k, v)
        torch.testing.assert_close(quadratic, series, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(q1.linear_feature_attention(phi_q, phi_k, v), quadratic,
                                   rtol=1e-12, atol=1e-12)


def test_series_attention_approaches_softmax_for_small_scores():
    gen = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(16, 4, dtype=torch.float64, generator=gen) for _ in range(3))
    exact = q1.softmax_attention(q * 0.01, k * 0.01, v)
    errors = [(q1.series_attention(q * 0.01, k * 0.01, v, n) - exact).abs().max().item()
              for n in (2, 3, 4)]
    assert errors[0] > errors[1] > errors[2] and errors[2] < 1e-8


def test_truncation_positivity_depends_on_parity_of_top_degree():
    t = torch.linspace(-40, 40, 8001, dtype=torch.float64)
    for n_terms in (3, 5, 7):
        assert q1.truncated_exp(t, n_terms).min() > 0
    for n_terms in (2, 4, 6):
        assert q1.truncated_exp(t, n_terms).min() < 0
    small = torch.linspace(-1, 1, 11, dtype=torch.float64)
    torch.testing.assert_close(q1.truncated_exp(small, 25), torch.exp(small))


def test_loglog_slope_recovers_power_law():
    xs = np.array([10, 20, 40, 80, 160.0])
    slope, intercept = q1.fit_loglog_slope(xs, 3 * xs ** 2)
    assert slope == pytest.approx(2.0) and intercept == pytest.approx(math.log(3))


def test_local_slopes_show_where_a_power_law_bends():
    xs = [1, 2, 4, 8]
    ys = [1, 4, 16, 16 * 8 ** 3 / 4 ** 3]  # slope 2, then 3 past x = 4
    assert q1.local_slopes(xs, ys) == pytest.approx([2, 2, 3])


def test_power_law_fits_only_from_its_first_length_on():
    lengths = [100, 200, 400, 800, 1600]
    seconds = [1.0, 1.0, 4.0, 8.0, 16.0]  # flat, then slope 2, then slope 1
    law = q1.power_law(lengths, seconds, 400, [1, 2, 3, 4, 5])
    assert law["fit_lengths"] == [400, 800, 1600] and law["slope"] == pytest.approx(1.0)
    assert law["local_slopes"] == pytest.approx([0, 2, 1, 1])
    assert law["fit_working_set_mib"] == [3, 5]


def test_power_law_of_a_shorter_series_keeps_its_own_lengths():
    law = q1.power_law([100, 200, 400, 800], [1.0, 4.0, 16.0], 100, [1, 2, 3, 4])
    assert law["lengths"] == [100, 200, 400] and law["slope"] == pytest.approx(2.0)
    assert law["working_set_mib"] == [1, 2, 3]


def test_softmax_is_timed_only_up_to_its_limit():
    t_soft, t_lin = q1.time_forms([16, 32, 64], 32, d=4, n_terms=3, repeats=1)
    assert len(t_soft) == 2 and len(t_lin) == 3 and min(t_soft + t_lin) > 0


def test_crossover_interpolates_sign_change():
    lengths = [100, 1000]
    # ratio lin/quad goes from 10 to 0.1: equal at the geometric midpoint
    assert q1.crossover_length(lengths, [1, 1], [10, 0.1])[0] == pytest.approx(316.227766)
    assert q1.crossover_length(lengths, [1, 1], [2, 2])[0] is None
    assert q1.crossover_length(lengths, [1, 1], [0.5, 0.1])[0] == 100


def test_multiply_add_counts():
    assert q1.softmax_attention_macs(4, 3) == 2 * 16 * 3
    assert q1.linear_attention_macs(4, 10, 3) == 2 * 4 * 10 * 3 + 2 * 4 * 10


def test_quick_run_writes_results_and_plots(tmp_path):
    q1.main(["-quick", "-out_dir", str(tmp_path), "-repeats", "1"])
    record = json.loads((tmp_path / "report" / "results" / "q1.json").read_text())
    res = record["results"]
    for key in ("slope_softmax", "slope_linear", "crossover_L", "feature_map",
                "linear_vs_quadratic_max_abs_err"):
        assert key in res
    assert res["linear_vs_quadratic_max_abs_err"] < 1e-12
    for row in res["feature_map"]:
        assert row["M_tensor"] == row["M_tensor_formula"] and row["max_abs_err"] < 1e-10
    assert record["config"]["quick"] is True
    timing = res["timing_vs_length"]
    assert timing["threads"] == 1 and record["machine"]["torch_threads"] == 1
    for form in (timing["softmax"], timing["linear"]):
        low, high = form["fit_range"]
        assert form["fit_lengths"] == [l for l in form["lengths"] if low <= l <= high]
        assert len(form["local_slopes"]) == len(form["lengths"]) - 1 == len(form["seconds"]) - 1
    assert timing["softmax"]["lengths"] == timing["linear"]["lengths"][:len(
        timing["softmax"]["lengths"])]
    for name in ("q1-time-vs-length", "q1-exp-approximation", "q1-approx-error-vs-scale",
                 "q1-linear-cost-vs-MD", "q1-truncation"):
        assert (tmp_path / "plots" / f"{name}.png").exists()


def test_bad_flag_value_is_a_short_error():
    proc = subprocess.run([sys.executable, str(REPO / "hw2-q1.py"), "-K", "1"],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "need -D >= 1, -K >= 2" in proc.stderr
    assert "Traceback" not in proc.stderr
