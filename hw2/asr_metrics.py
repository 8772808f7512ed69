"""Question 3's string metrics: the handed-out similarities (textdistance jaccard, cosine and
Damerau-Levenshtein on token-id lists cut at the stop token), word and character error rates
(jiwer), and the counts behind each similarity (Q3.4)."""
from __future__ import annotations

from collections import Counter

import numpy as np
import textdistance
import torch

from hw2.ljspeech import TokenVectorizer


SIMILARITIES = {
    "jaccard_similarity": textdistance.jaccard.normalized_similarity,
    "cosine_similarity": textdistance.cosine.normalized_similarity,
    "damerau-levenshtein_similarity": textdistance.damerau_levenshtein.normalized_similarity,
}


STOP = TokenVectorizer().stop


# ---------------------------------------------------------------------------------------------
# Metrics, as handed out (token-id lists cut at the stop token), plus WER / CER
# ---------------------------------------------------------------------------------------------
def cut_at_stop(target: list[int], generated: list[int]) -> tuple[list[int], list[int]]:
    """The handed-out _preprocess_text: both sequences up to and including their first stop
    token (the target keeps its leading start token); a generation with no stop token gets its
    last element replaced by one."""
    target = target[:target.index(STOP) + 1]
    if STOP in generated:
        generated = generated[:generated.index(STOP) + 1]
    else:
        generated = generated[:-1] + [STOP]
    return target, generated


def string_scores(targets: torch.Tensor, generated: torch.Tensor,
                  vectorizer: TokenVectorizer) -> tuple[dict[str, float], list[tuple[str, str]]]:
    """Summed similarities over the batch (as handed out) and the decoded (target, prediction)
    strings without start / stop / padding symbols."""
    sums = dict.fromkeys(SIMILARITIES, 0.0)
    pairs = []
    for target, gen in zip(targets.tolist(), generated.tolist()):
        target, gen = cut_at_stop(target, gen)
        for name, similarity in SIMILARITIES.items():
            sums[name] += similarity(target, gen)
        pairs.append((vectorizer.decode(target[1:-1]), vectorizer.decode(gen[1:-1])))
    return sums, pairs


def error_rates(pairs: list[tuple[str, str]]) -> dict[str, float]:
    """Corpus-level word and character error rates of the decoded strings."""
    import jiwer
    refs = [t for t, _ in pairs]
    hyps = [p if p.strip() else "<empty>" for _, p in pairs]  # jiwer needs non-empty words
    return {"wer": jiwer.wer(refs, hyps), "cer": jiwer.cer(refs, [p for _, p in pairs])}


def character_edits(pairs: list[tuple[str, str]]) -> tuple[np.ndarray, np.ndarray]:
    """Per clip: character edits (substitutions, deletions, insertions) and reference
    characters, as jiwer.cer counts them (their sums' ratio is the corpus CER)."""
    import jiwer
    edits, chars = [], []
    for target, prediction in pairs:
        counts = jiwer.process_characters(target, prediction)
        edits.append(counts.substitutions + counts.deletions + counts.insertions)
        chars.append(counts.hits + counts.substitutions + counts.deletions)
    return np.array(edits), np.array(chars)


def bootstrap_cer(pairs: list[tuple[str, str]], resamples: int = 10_000, seed: int = 0,
                  level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the corpus CER over clips drawn with replacement:
    the uncertainty of a CER measured on a few clips (36 genuine recordings)."""
    edits, chars = character_edits(pairs)
    draws = clip_draws(len(pairs), resamples, seed)
    return percentile_interval(resampled_cer(edits, chars, draws), level)


def paired_cer_difference(pairs_a: list[tuple[str, str]], pairs_b: list[tuple[str, str]],
                          resamples: int = 10_000, seed: int = 0, level: float = 0.95
                          ) -> tuple[float, float, float]:
    """CER of run b minus CER of run a on the same clips, with a percentile bootstrap interval
    that draws the clips once for both runs: two runs find the same clips hard, so the paired
    interval is narrower than two separate intervals suggest."""
    if [target for target, _ in pairs_a] != [target for target, _ in pairs_b]:
        raise ValueError("the two runs were not scored on the same clips in the same order")
    (edits_a, chars), (edits_b, _) = character_edits(pairs_a), character_edits(pairs_b)
    draws = clip_draws(len(pairs_a), resamples, seed)
    gaps = resampled_cer(edits_b, chars, draws) - resampled_cer(edits_a, chars, draws)
    point = float((edits_b.sum() - edits_a.sum()) / max(chars.sum(), 1))
    return (point, *percentile_interval(gaps, level))


def clip_draws(clips: int, resamples: int, seed: int) -> np.ndarray:
    """(resamples, clips) clip indices drawn with replacement."""
    return np.random.default_rng(seed).integers(0, clips, (resamples, clips))


def resampled_cer(edits: np.ndarray, chars: np.ndarray, draws: np.ndarray) -> np.ndarray:
    """The corpus CER of each row of clip indices."""
    return edits[draws].sum(axis=1) / np.maximum(chars[draws].sum(axis=1), 1)


def percentile_interval(values: np.ndarray, level: float) -> tuple[float, float]:
    """The central `level` share of bootstrap values (a percentile interval)."""
    tail = (1 - level) / 2 * 100
    return float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail))


def similarity_anatomy(targets: list[list[int]], generated: list[list[int]],
                       example: int) -> dict:
    """The counts behind each similarity, for one clip, and how the three rank on every clip.

    On the token lists the metrics see (cut at the stop token): with bags (multisets) A, B of
    sizes m, n, I = |A & B| and U = |A | B|, jaccard = I / U and cosine = I / sqrt(mn) (both
    blind to order), Damerau-Levenshtein = 1 - d / max(m, n) with d the edit distance
    (insertions, deletions, substitutions, adjacent swaps). Since U >= max(m, n) >= sqrt(mn)
    and d >= max(m, n) - I, cosine >= I / max(m, n) >= both others on every pair.
    """
    rows, cut = [], [cut_at_stop(t, g) for t, g in zip(targets, generated)]
    for target, gen in cut:
        a, b = Counter(target), Counter(gen)
        rows.append({"m": len(target), "n": len(gen), "intersection": sum((a & b).values()),
                     "union": sum((a | b).values()),
                     "edit_distance": textdistance.damerau_levenshtein.distance(target, gen),
                     **{name: sim(target, gen) for name, sim in SIMILARITIES.items()}})
    vectorizer = TokenVectorizer()
    target, gen = cut[example]
    return {"example": {"target": vectorizer.decode(target), "prediction": vectorizer.decode(gen),
                        **rows[example]},
            "clips": len(rows),
            "cosine_highest": sum(r["cosine_similarity"] >= max(
                r["jaccard_similarity"], r["damerau-levenshtein_similarity"]) - 1e-12
                for r in rows),
            "damerau_levenshtein_below_jaccard": sum(
                r["damerau-levenshtein_similarity"] < r["jaccard_similarity"] for r in rows),
            "mean": {name: float(np.mean([r[name] for r in rows])) for name in SIMILARITIES}}


def first_stop(row: list[int]) -> int:
    """Index of the first stop token after the start token (the last index when none)."""
    return row.index(STOP, 1) if STOP in row[1:] else len(row) - 1
