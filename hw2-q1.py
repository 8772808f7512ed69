#!/usr/bin/env python
"""Question 1: self-attention complexity and the McLaurin feature-map approximation of softmax.

Checks each claim of the report's Q1 on random matrices: the two feature maps and their lengths
(Q1.2), the three forms of the approximation and its error (Q1.3), and the time of softmax
attention and of the linear form against L, M and D on one CPU thread (Q1.1, Q1.4).
Writes report/results/q1.json and plots/q1-*.{png,pdf}.
"""
from __future__ import annotations

import argparse
import math
import os
import time
from functools import lru_cache
from itertools import combinations_with_replacement
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from hw2 import REPO_DIR
from hw2 import figures
from hw2.cli import add_common_args, apply_common_args, fail
from hw2.results import Timer, check_replaceable, write_results
from utils import configure_seed

Tensor = torch.Tensor


# ---------------------------------------------------------------------------------------------
# The maths
# ---------------------------------------------------------------------------------------------
def truncated_exp(t: Tensor, n_terms: int) -> Tensor:
    """McLaurin series of exp with `n_terms` terms: sum_{n<K} t^n / n!."""
    total, term = torch.ones_like(t), torch.ones_like(t)
    for n in range(1, n_terms):
        term = term * t / n
        total = total + term
    return total


def tensor_power_dim(d: int, n_terms: int) -> int:
    """Length of the tensor-power map: sum_{n<K} D^n (1 + D + D^2 for K = 3)."""
    return sum(d ** n for n in range(n_terms))


def monomial_dim(d: int, n_terms: int) -> int:
    """Length of the monomial map: number of monomials of degree < K in D variables,
    C(D + K - 1, K - 1) (1 + D + D(D+1)/2 for K = 3)."""
    return math.comb(d + n_terms - 1, n_terms - 1)


def tensor_power_features(x: Tensor, n_terms: int) -> Tensor:
    """phi(x) = [x^{(x)n} / sqrt(n!)]_{n<K}, flattened: (L, D) -> (L, sum_n D^n).

    Because <x^{(x)n}, y^{(x)n}> = (x^T y)^n, phi(x)^T phi(y) is the truncated series.
    """
    power = torch.ones(x.shape[0], 1, dtype=x.dtype)
    blocks = [power]
    for n in range(1, n_terms):
        power = (power[:, :, None] * x[:, None, :]).reshape(x.shape[0], -1)
        blocks.append(power / math.sqrt(math.factorial(n)))
    return torch.cat(blocks, dim=1)


@lru_cache(maxsize=None)
def _monomials(d: int, degree: int) -> tuple[Tensor, Tensor]:
    """Index tuples of the degree-n monomials in d variables and their weights 1/sqrt(alpha!)."""
    combos = torch.tensor(list(combinations_with_replacement(range(d), degree)),
                          dtype=torch.long).reshape(-1, degree)
    counts = (combos[:, :, None] == torch.arange(d)).sum(dim=1)  # multi-index alpha
    log_alpha_factorial = torch.lgamma(counts.double() + 1).sum(dim=1)
    return combos, torch.exp(-0.5 * log_alpha_factorial)


def monomial_features(x: Tensor, n_terms: int) -> Tensor:
    """phi(x) = [x^alpha / sqrt(alpha!)]_{|alpha|<K}: (L, D) -> (L, C(D+K-1, K-1)).

    Multinomial theorem: (x^T y)^n / n! = sum_{|alpha|=n} x^alpha y^alpha / alpha!, so this
    compact map has the same inner products as the tensor-power map without repeating
    x_i x_j and x_j x_i.
    """
    blocks = [torch.ones(x.shape[0], 1, dtype=x.dtype)]
    for degree in range(1, n_terms):
        combos, weights = _monomials(x.shape[1], degree)
        blocks.append(x[:, combos].prod(dim=2) * weights.to(x.dtype))
    return torch.cat(blocks, dim=1)


FEATURE_MAPS: dict[str, tuple[Callable[[Tensor, int], Tensor], Callable[[int, int], int]]] = {
    "tensor": (tensor_power_features, tensor_power_dim),
    "compact": (monomial_features, monomial_dim),
}


def softmax_attention(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """Z = Softmax(Q K^T) V, row-wise softmax (the statement has no 1/sqrt(D))."""
    return torch.softmax(q @ k.T, dim=-1) @ v


def series_attention(q: Tensor, k: Tensor, v: Tensor, n_terms: int) -> Tensor:
    """Row-normalised attention whose weights are the truncated series of Q K^T."""
    weights = truncated_exp(q @ k.T, n_terms)
    return weights @ v / weights.sum(dim=1, keepdim=True)


def quadratic_feature_attention(phi_q: Tensor, phi_k: Tensor, v: Tensor) -> Tensor:
    """D^{-1} Phi(Q) Phi(K)^T V with D = Diag(Phi(Q) Phi(K)^T 1_L): O(L^2 M)."""
    scores = phi_q @ phi_k.T
    return scores @ v / scores.sum(dim=1, keepdim=True)


def linear_feature_attention(phi_q: Tensor, phi_k: Tensor, v: Tensor) -> Tensor:
    """The same as `quadratic_feature_attention`, associated the other way: O(L M D).

    Phi(K)^T V (M x D) and Phi(K)^T 1_L (M) are computed once; each query then costs O(M D).
    """
    kv = phi_k.T @ v
    normaliser = phi_q @ phi_k.sum(dim=0)
    return phi_q @ kv / normaliser[:, None]


def softmax_attention_macs(length: int, d: int) -> int:
    """Multiply-adds of Softmax(QK^T)V: L^2 D for QK^T, L^2 D for the product with V
    (the L^2 exponentials, sums and divisions of the softmax come on top)."""
    return 2 * length * length * d


def linear_attention_macs(length: int, m: int, d: int) -> int:
    """Multiply-adds of Phi(Q)(Phi(K)^T V) / Phi(Q)(Phi(K)^T 1): 2 L M D for the two products
    with V's columns, 2 L M for the normaliser (building Phi is O(L M) on top)."""
    return 2 * length * m * d + 2 * length * m


def fit_loglog_slope(xs, ys) -> tuple[float, float]:
    """Least-squares line through (log x, log y): returns (slope, intercept)."""
    slope, intercept = np.polyfit(np.log(np.asarray(xs, float)), np.log(np.asarray(ys, float)), 1)
    return float(slope), float(intercept)


def local_slopes(xs, ys) -> list[float]:
    """Log-log slope between each pair of neighbouring points: shows where a power law bends
    (e.g. where the L x L scores outgrow a cache), which one global fit would average away."""
    log_x, log_y = np.log(np.asarray(xs, float)), np.log(np.asarray(ys, float))
    return (np.diff(log_y) / np.diff(log_x)).tolist()


def cpu_caches_mib() -> dict[str, float]:
    """Sizes of cpu0's data caches in MiB as Linux reports them ({"L1d": .., "L2": .., "L3": ..};
    empty elsewhere): the timings change regime where the L x L scores outgrow each level."""
    mib_per_unit = {"K": 2.0 ** -10, "M": 1.0, "G": 2.0 ** 10}
    caches = {}
    for index in sorted(Path("/sys/devices/system/cpu/cpu0/cache").glob("index*")):
        kind = (index / "type").read_text().strip()
        size = (index / "size").read_text().strip()  # e.g. "32K", "32768K"
        if kind == "Instruction" or size[-1:] not in mib_per_unit:
            continue
        level = (index / "level").read_text().strip()
        caches[f"L{level}" + ("d" if kind == "Data" else "")] = (
            float(size[:-1]) * mib_per_unit[size[-1]])
    return caches


def crossover_length(lengths, t_quadratic, t_linear) -> tuple[float | None, str]:
    """First L where the linear form is at least as fast, interpolated in log-log between the
    two grid points around the sign change of log(t_lin / t_quad); None if it never is."""
    log_ratio = np.log(np.asarray(t_linear) / np.asarray(t_quadratic))
    log_l = np.log(np.asarray(lengths, float))
    if log_ratio[0] <= 0:
        return float(lengths[0]), f"linear already faster at the smallest L ({lengths[0]})"
    for i in range(1, len(lengths)):
        if log_ratio[i] <= 0:
            frac = log_ratio[i - 1] / (log_ratio[i - 1] - log_ratio[i])
            return float(np.exp(log_l[i - 1] + frac * (log_l[i] - log_l[i - 1]))), \
                "log-log interpolation between measured grid points"
    return None, "no crossover within the measured lengths"


def best_time(fn: Callable[[], object], repeats: int) -> float:
    """Minimum wall time of `repeats` calls after one warm-up (the least noisy estimator)."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


# ---------------------------------------------------------------------------------------------
# The experiments
# ---------------------------------------------------------------------------------------------
def check_feature_maps(cases: list[tuple[int, int]], n_pairs: int) -> list[dict]:
    """Q1.2: both maps reproduce the truncated series and have the stated lengths."""
    rows = []
    for d, n_terms in cases:
        q = torch.randn(n_pairs, d, dtype=torch.float64) / d ** 0.25
        k = torch.randn(n_pairs, d, dtype=torch.float64) / d ** 0.25
        target = truncated_exp((q * k).sum(dim=1), n_terms)
        row = {"D": d, "K": n_terms}
        errors = []
        for kind, (features, dim_formula) in FEATURE_MAPS.items():
            phi_q, phi_k = features(q, n_terms), features(k, n_terms)
            row[f"M_{kind}"] = phi_q.shape[1]
            row[f"M_{kind}_formula"] = dim_formula(d, n_terms)
            errors.append((phi_q * phi_k).sum(dim=1).sub(target).abs().max().item())
            row[f"max_abs_err_{kind}"] = errors[-1]
        row["max_abs_err"] = max(errors)
        rows.append(row)
    return rows


def exp_truncation_curves(term_counts: list[int], plots_dir: Path) -> dict:
    """Q1.2 figure: exp(t) against its truncations; where each truncation stays positive.

    A truncation with an even top degree (K odd) is positive for every t (its minimum is at
    the root of the previous odd truncation, where it equals the last term t^{K-1}/(K-1)! > 0);
    an odd top degree (K even) goes to -inf as t -> -inf, so the normaliser can vanish.
    """
    wide = torch.linspace(-50, 50, 20001, dtype=torch.float64)
    positivity = []
    for n_terms in term_counts:
        minimum = truncated_exp(wide, n_terms).min().item()
        positivity.append({"K": n_terms, "top_degree": n_terms - 1,
                           "min_on_t_in_-50_50": minimum, "positive_everywhere": minimum > 0})
    figures.plot_q1_exp(term_counts, plots_dir)
    return {"positivity": positivity}


def check_attention_identities(length: int, d: int, n_terms: int) -> dict:
    """Q1.3 / Q1.4: the three ways of writing the approximation agree to float64 precision."""
    q, k, v = (torch.randn(length, d, dtype=torch.float64) / d ** 0.25 for _ in range(3))
    series = series_attention(q, k, v, n_terms)
    out = {"L": length, "D": d, "K": n_terms}
    for kind, (features, _) in FEATURE_MAPS.items():
        phi_q, phi_k = features(q, n_terms), features(k, n_terms)
        quadratic = quadratic_feature_attention(phi_q, phi_k, v)
        linear = linear_feature_attention(phi_q, phi_k, v)
        out[f"quadratic_vs_series_max_abs_err_{kind}"] = (quadratic - series).abs().max().item()
        out[f"linear_vs_quadratic_max_abs_err_{kind}"] = (linear - quadratic).abs().max().item()
    out["softmax_vs_series_max_abs_err"] = (softmax_attention(q, k, v) - series).abs().max().item()
    return out


def error_against_scale(length: int, d: int, term_counts: list[int], scales: np.ndarray,
                        plots_dir: Path) -> dict:
    """Q1.3 figure: how far the approximation is from softmax attention as |q^T k| grows."""
    base = [torch.randn(length, d, dtype=torch.float64) for _ in range(3)]
    errors = {n: [] for n in term_counts}
    negative = {n: [] for n in term_counts}
    for scale in scales:
        # q^T k has standard deviation `scale` for these inputs.
        q, k = (x * math.sqrt(scale) / d ** 0.25 for x in base[:2])
        exact = softmax_attention(q, k, base[2])
        for n_terms in term_counts:
            approx = series_attention(q, k, base[2], n_terms)
            errors[n_terms].append((approx - exact).abs().max().item())
            negative[n_terms].append((truncated_exp(q @ k.T, n_terms) < 0).double().mean().item())
    scale = {"L": length, "D": d, "scales": scales.tolist(),
             "max_abs_err": {str(n): errors[n] for n in term_counts},
             "fraction_negative_weights": {str(n): negative[n] for n in term_counts}}
    figures.plot_q1_error_vs_scale(scale, plots_dir)
    return scale


def time_forms(lengths: list[int], softmax_up_to: int, d: int, n_terms: int,
               repeats: int) -> tuple[list[float], list[float]]:
    """Best-of-`repeats` seconds, float32, of softmax attention (for L <= softmax_up_to: its
    L x L scores outgrow memory first) and of the linear form with the compact map, features
    built inside the timed call, for every L."""
    t_soft, t_lin = [], []
    for length in lengths:
        q, k, v = (torch.randn(length, d) / d ** 0.25 for _ in range(3))
        if length <= softmax_up_to:
            t_soft.append(best_time(lambda: softmax_attention(q, k, v), repeats))
        t_lin.append(best_time(lambda: linear_feature_attention(
            monomial_features(q, n_terms), monomial_features(k, n_terms), v), repeats))
    return t_soft, t_lin


def power_law(lengths: list[int], seconds: list[float], fit_from: int,
              working_set_mib: list[float]) -> dict:
    """Log-log slope of time against L fitted over L >= fit_from (where the working set is
    far out of the caches), and the local slope between neighbouring lengths."""
    fit = [length for length in lengths[:len(seconds)] if length >= fit_from]
    if len(fit) < 2:
        raise ValueError(f"need two lengths >= {fit_from} to fit a slope, got {lengths}")
    slope, _ = fit_loglog_slope(fit, seconds[-len(fit):])
    return {"lengths": lengths[:len(seconds)], "seconds": seconds, "fit_lengths": fit,
            "fit_range": [fit[0], fit[-1]], "slope": slope,
            "local_slopes": local_slopes(lengths[:len(seconds)], seconds),
            "working_set_mib": working_set_mib[:len(seconds)],
            "fit_working_set_mib": [working_set_mib[lengths.index(fit[0])],
                                    working_set_mib[lengths.index(fit[-1])]]}


def time_over_length(lengths: list[int], softmax_up_to: int, d: int, n_terms: int,
                     repeats: int, fit_from: tuple[int, int], plots_dir: Path) -> dict:
    """Q1.1 and Q1.4: softmax attention vs the linear form (compact map) over L, float32.

    Each slope is fitted where its working set (softmax: one L x L score matrix; linear form:
    Phi(Q) and Phi(K)) is at least twice the last-level cache, so every pass runs at
    main-memory speed; below, per-call costs and cache effects bend the curves.
    """
    m = monomial_dim(d, n_terms)
    t_soft, t_lin = time_forms(lengths, softmax_up_to, d, n_terms, repeats)
    softmax = power_law(lengths, t_soft, fit_from[0], [4 * l * l / 2 ** 20 for l in lengths])
    linear = power_law(lengths, t_lin, fit_from[1], [2 * 4 * l * m / 2 ** 20 for l in lengths])
    steepest = int(np.argmax(softmax["local_slopes"]))
    shared = softmax["lengths"]
    crossover, how = crossover_length(shared, t_soft, t_lin[:len(shared)])
    timing = {
        "D": d, "K": n_terms, "M": m, "repeats": repeats, "threads": torch.get_num_threads(),
        "softmax": softmax, "linear": linear,
        "steepest_local_slope_softmax": {
            "slope": softmax["local_slopes"][steepest],
            "from_L": shared[steepest], "to_L": shared[steepest + 1],
            "from_scores_mib": softmax["working_set_mib"][steepest],
            "to_scores_mib": softmax["working_set_mib"][steepest + 1]},
        "cpu_caches_mib": cpu_caches_mib(),
        "crossover_L": crossover, "crossover_method": how,
        # By multiply-add count the two meet where 2 L^2 D = 2 L M (D + 1), i.e. L = M (D+1)/D.
        "crossover_L_by_macs": m * (d + 1) / d,
        "macs_softmax": [softmax_attention_macs(l, d) for l in shared],
        "macs_linear": [linear_attention_macs(l, m, d) for l in lengths],
    }
    figures.plot_q1_time(timing, plots_dir)
    return timing


def timing_memory_bytes(length: int, softmax_length: int, d: int, n_terms: int) -> float:
    """About the peak memory of `time_over_length`, float32: softmax attention at its longest
    L holds the L x L scores and their softmax; the linear form holds Phi(Q) (L x M) while it
    builds Phi(K), whose top-degree block first gathers (L, n_top, K - 1) factors. Computed
    with lgamma in floating point: for an absurd -K, M has more digits than is worth counting
    exactly (inf once it passes 1e300)."""
    def exp(x: float) -> float:
        return math.exp(x) if x < 690 else math.inf
    m = exp(math.lgamma(d + n_terms) - math.lgamma(d + 1) - math.lgamma(n_terms))
    top = exp(math.lgamma(d + n_terms - 1) - math.lgamma(d) - math.lgamma(n_terms))
    return max(8.0 * softmax_length ** 2, 4.0 * length * (2 * m + (n_terms - 1) * top))


def available_memory_bytes() -> int:
    """MemAvailable of /proc/meminfo (Linux), else the physical memory."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def check_timing_memory(length: int, softmax_length: int, d: int, n_terms: int) -> None:
    """Stop before any work if the timings need more memory than this machine has free
    (-K 40 would otherwise allocate until the process is killed), saying how much."""
    need = timing_memory_bytes(length, softmax_length, d, n_terms)
    available = available_memory_bytes()
    if need > available:
        gib = need / 2 ** 30
        raise fail(f"-D {d} -K {n_terms}: the timings (L up to {length}) would need "
                   + (f"about {gib:.3g} GiB" if gib < 1e300 else "more than 1e300 GiB")
                   + f" of memory, {available / 2 ** 30:.1f} GiB is available; use a smaller "
                   "-K or -D")


def time_over_feature_size(length: int, configs: list[tuple[int, int]], repeats: int,
                           plots_dir: Path) -> dict:
    """Q1.4: at fixed L the linear form costs O(L M D); time it for several (D, K)."""
    rows = []
    for d, n_terms in configs:
        q, k, v = (torch.randn(length, d) / d ** 0.25 for _ in range(3))
        phi_q, phi_k = monomial_features(q, n_terms), monomial_features(k, n_terms)
        seconds = best_time(lambda: linear_feature_attention(phi_q, phi_k, v), repeats)
        m = monomial_dim(d, n_terms)
        rows.append({"D": d, "K": n_terms, "M": m, "M_times_D": m * d, "seconds": seconds,
                     "macs": linear_attention_macs(length, m, d)})
    slope, _ = fit_loglog_slope([r["M_times_D"] for r in rows], [r["seconds"] for r in rows])
    cost = {"L": length, "rows": rows, "slope_vs_MD": slope}
    figures.plot_q1_feature_cost(cost, plots_dir)
    return cost


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Question 1: attention complexity and the McLaurin feature-map "
                    "approximation of softmax, each claim checked numerically.")
    add_common_args(parser, data=False)
    parser.add_argument("-D", type=int, default=32,
                        help="hidden size used for the timings (default: %(default)s)")
    parser.add_argument("-K", type=int, default=3,
                        help="McLaurin terms used for the timings (default: %(default)s, "
                             "as in the statement)")
    parser.add_argument("-repeats", type=int, default=10,
                        help="timing repeats, the best is kept (default: %(default)s)")
    parser.add_argument("-quick", action="store_true",
                        help="small sizes for a smoke run (under 20 s); timings less reliable; "
                             "writes under quick_runs/ unless -out_dir is given")
    args = parser.parse_args(argv)
    if args.D < 1 or args.K < 2 or args.repeats < 1:
        parser.error("need -D >= 1, -K >= 2 and -repeats >= 1")
    if args.quick and not args.out_dir:
        args.out_dir = str(REPO_DIR / "quick_runs")
    return args


def timing_sizes(quick: bool) -> dict:
    """The lengths and sizes timed. The full grid times the linear form up to L = 2^18, where
    Phi(Q) and Phi(K) (D = 32, K = 3: 1.1 GiB) are far out of any cache, and fits each slope
    where its working set is at least 64 MiB, twice the 32 MiB last-level cache timed here."""
    if quick:
        return {"lengths": [128, 256, 512, 1024, 2048], "softmax_up_to": 2048,
                "fit_from": (512, 512), "feature_len": 512,
                "size_configs": [(8, 3), (16, 3), (32, 3), (8, 2), (16, 2), (8, 4)]}
    return {"lengths": [256, 512, 1024, 2048, 3072, 4096, 6144, 8192, 12288, 16384, 32768,
                        65536, 131072, 262144],
            "softmax_up_to": 16384, "fit_from": (4096, 32768), "feature_len": 65536,
            "size_configs": [(8, 3), (16, 3), (32, 3), (64, 3), (8, 2), (16, 2), (32, 2),
                             (64, 2), (8, 4), (16, 4)]}


def main(argv=None) -> None:
    args = parse_args(argv)
    out = apply_common_args(args)
    check_replaceable(out.results, "q1", vars(args), args.force)  # else only with -force
    configure_seed(args.seed)
    # One thread: the timings measure the algorithm, not how a second core shared with
    # other processes happens to be scheduled.
    torch.set_num_threads(1)
    out.ensure_writable()  # before the work, not after
    with Timer() as wall:
        sizes = timing_sizes(args.quick)
        repeats = min(args.repeats, 2) if args.quick else args.repeats
        check_timing_memory(max(sizes["lengths"]), sizes["softmax_up_to"], args.D, args.K)
        cases = [(1, 3), (2, 2), (2, 3), (3, 3), (4, 3), (8, 3), (16, 3), (3, 4), (5, 4),
                 (8, 4), (2, 5), (4, 5), (3, 6)]
        feature_map = check_feature_maps(cases, n_pairs=200)
        feature_map_worst = max(r["max_abs_err"] for r in feature_map)
        print(f"Q1.2 feature maps: worst |phi(q)^T phi(k) - series| = "
              f"{feature_map_worst:.2e} over {len(cases)} (D, K)")
        exp_fit = exp_truncation_curves([2, 3, 4, 5, 6], out.plots)
        identities = check_attention_identities(length=64, d=8, n_terms=3)
        print(f"Q1.3 D^-1 Phi Phi^T V vs series attention: "
              f"{identities['quadratic_vs_series_max_abs_err_compact']:.2e}")
        scale = error_against_scale(64, 16, [2, 3, 4, 5], np.logspace(-2, 1, 13), out.plots)
        figures.plot_q1_truncation([row["K"] for row in exp_fit["positivity"]], scale, out.plots)
        timing = time_over_length(sizes["lengths"], sizes["softmax_up_to"], args.D, args.K,
                                  repeats, sizes["fit_from"], out.plots)
        print(f"Q1.1 softmax slope {timing['softmax']['slope']:.2f} "
              f"(L {'-'.join(map(str, timing['softmax']['fit_range']))}); Q1.4 linear slope "
              f"{timing['linear']['slope']:.2f} "
              f"(L {'-'.join(map(str, timing['linear']['fit_range']))}); "
              f"crossover L ~ {timing['crossover_L']}")
        feature_cost = time_over_feature_size(sizes["feature_len"], sizes["size_configs"],
                                              repeats, out.plots)
        print(f"Q1.4 linear-form time vs M*D: slope {feature_cost['slope_vs_MD']:.2f}")
    results = {
        "slope_softmax": timing["softmax"]["slope"],
        "slope_linear": timing["linear"]["slope"],
        "crossover_L": timing["crossover_L"],
        "linear_vs_quadratic_max_abs_err": max(
            identities["linear_vs_quadratic_max_abs_err_tensor"],
            identities["linear_vs_quadratic_max_abs_err_compact"]),
        "feature_map": feature_map,
        "feature_map_max_abs_err": feature_map_worst,
        "exp_truncation": exp_fit,
        "identities": identities,
        "error_vs_scale": scale,
        "timing_vs_length": timing,
        "timing_vs_feature_size": feature_cost,
        "quick": args.quick,
    }
    path = write_results("q1", results, config=vars(args),
                         seed=args.seed, data="random Gaussian matrices (no data set)",
                         wall_time_s=wall.seconds, results_dir=out.results)
    print(f"wrote {path} ({wall.seconds:.1f} s)")


if __name__ == "__main__":
    main()
