#!/usr/bin/env python
"""Question 3: speech recognition on LJ Speech with the given transformer encoder and an LSTM
(Q3.1, -decoder lstm) or attention (Q3.2, -decoder transformer) text decoder.

Training follows the handed-out notebook: AdamW (lr 1e-3), a per-epoch schedule (linear
warm-up from 1e-2 x lr over the first 15% of the epochs, then linear decay to 1e-2 x lr),
teacher forcing with label-smoothed cross-entropy over all 98 target positions, greedy
decoding of 98 steps, and the three string similarities of the handed-out code (textdistance
jaccard / cosine / Damerau-Levenshtein on token-id lists cut at the stop token) plus word and
character error rates (jiwer). -fast pads each batch to its longest clip with key-padding masks
and decodes with a key/value cache (faithful by default: every clip padded to 2754 frames).

Writes report/results/q3-<decoder>.json, its test log, plots/q3-<decoder>-*.{png,pdf}, and
q3-<decoder>-analysis.json (Q3.3 attention maps, Q3.4 similarity counts on the first test
clips); a checkpoint after every epoch lets -resume continue an interrupted run to the same
result.
"""
from __future__ import annotations

import argparse
import json
import random
from collections import Counter
from pathlib import Path

import numpy as np
import textdistance
import torch
import torch.nn.functional as F
from tqdm import tqdm

import utils
from ljspeech import (FeatureCache, LJSpeech, LogMel, PadCollate, SpeechDataset,
                      TokenVectorizer)
from q3_model import SpeechToText
from utils import (Timer, add_common_args, configure_seed, fail, plot_lines, save_checkpoint,
                   write_results)

SIMILARITIES = {
    "jaccard_similarity": textdistance.jaccard.normalized_similarity,
    "cosine_similarity": textdistance.cosine.normalized_similarity,
    "damerau-levenshtein_similarity": textdistance.damerau_levenshtein.normalized_similarity,
}
STOP = 1


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


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------
def make_scheduler(optimizer, epochs: int):
    """The handed-out schedule, stepped once per epoch."""
    warmup = int(0.15 * epochs)
    return torch.optim.lr_scheduler.SequentialLR(optimizer, [
        torch.optim.lr_scheduler.LinearLR(optimizer, 1e-2, 1.0, total_iters=warmup),
        torch.optim.lr_scheduler.LinearLR(optimizer, 1.0, 1e-2, total_iters=int(0.85 * epochs)),
    ], milestones=[warmup])


def teacher_forced_loss(logits: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the logits for text[:, :-1] against text[:, 1:] (label smoothing 0.1,
    padding positions included, as handed out)."""
    return F.cross_entropy(logits, text[:, 1:], label_smoothing=0.1)


def train_epoch(model, loader, optimizer, args) -> float:
    model.train()
    total, count = 0.0, 0
    bar = tqdm(loader, leave=False, disable=args.no_progress, desc="train")
    for audio, text, lengths in bar:
        audio, text = audio.to(args.device), text.to(args.device)
        lengths = lengths.to(args.device) if args.fast else None
        optimizer.zero_grad()
        loss = teacher_forced_loss(model(audio, text[:, :-1], lengths), text)
        loss.backward()
        optimizer.step()
        total, count = total + loss.item(), count + 1
        bar.set_postfix(loss=f"{total / count:.3f}")
    return total / count


@torch.no_grad()
def evaluate(model, loader, vectorizer, args, desc="eval") -> tuple[dict, list[tuple[str, str]]]:
    """Mean batch loss, mean similarities per clip, WER / CER, and every decoded pair."""
    model.eval()
    sums, losses, pairs = dict.fromkeys(SIMILARITIES, 0.0), [], []
    for audio, text, lengths in tqdm(loader, leave=False, disable=args.no_progress, desc=desc):
        audio, text = audio.to(args.device), text.to(args.device)
        lengths = lengths.to(args.device) if args.fast else None
        latent, padding = model.encode(audio, lengths)  # once for the loss and the decoding
        losses.append(teacher_forced_loss(model.decode(text[:, :-1], latent, padding), text).item())
        generated = model.greedy(latent, padding, use_cache=args.fast,
                                 stop_token=STOP if args.fast else None)
        batch_sums, batch_pairs = string_scores(text.cpu(), generated.cpu(), vectorizer)
        sums = {k: sums[k] + batch_sums[k] for k in sums}
        pairs += batch_pairs
    metrics = {"loss": float(np.mean(losses)), **{k: v / len(pairs) for k, v in sums.items()},
               **error_rates(pairs)}
    return metrics, pairs


def make_loader(corpus: LJSpeech, clips, args, batch_size: int, shuffle: bool):
    if not clips:
        raise fail(f"no clips with audio in {corpus.root} for this split "
                   f"({corpus.describe()['clips_with_audio']} clips have audio)")
    cache = FeatureCache(Path(args.cache_dir), LogMel())
    dataset = SpeechDataset(corpus, clips, cache, TokenVectorizer())
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=shuffle, num_workers=args.workers,
        collate_fn=PadCollate(None if args.fast else 2754),
        persistent_workers=args.workers > 0)


def rng_states() -> dict:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
            "python": random.getstate()}


def set_rng_states(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    np.random.set_state(states["numpy"])
    random.setstate(states["python"])


def build_model(args) -> SpeechToText:
    return SpeechToText(args.decoder, encoder_layers=args.encoder_layers,
                        hidden_dim=args.hidden_dim, feed_fwd_dim=args.ff_dim,
                        statement_norm=args.statement_norm).to(args.device)


def checkpoint_path(args) -> Path:
    return Path(args.checkpoint_dir) / f"q3-{args.decoder}-seed{args.seed}.pt"


def restore_model(args) -> SpeechToText:
    """The model of the last finished epoch in -checkpoint_dir."""
    checkpoint, model = checkpoint_path(args), build_model(args)
    if not checkpoint.exists():
        raise fail(f"no checkpoint {checkpoint}: train first (without -analysis_only)")
    model.load_state_dict(torch.load(checkpoint, weights_only=False)["model"])
    return model


def open_corpus(args) -> LJSpeech:
    return LJSpeech(utils.resolve_data_dir(args.data_dir) / "LJSpeech-1.1")


def run(args) -> tuple[dict, SpeechToText, LJSpeech]:
    """Train (or resume), validating after every epoch, then test: (results, model, corpus)."""
    configure_seed(args.seed)
    corpus = open_corpus(args)
    real_corpus = find_real_corpus(args, corpus)
    loaders = {
        "train": make_loader(corpus, corpus.split("train", args.train_clips), args,
                             args.batch_size, shuffle=True),
        "validation": make_loader(corpus, corpus.split("validation", args.eval_clips), args,
                                  args.eval_batch_size, shuffle=False),
    }
    model = build_model(args)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr)
    scheduler = make_scheduler(optimizer, args.epochs)
    vectorizer = TokenVectorizer()
    checkpoint = checkpoint_path(args)
    state = {"epoch": 0, "history": [], "seconds": 0.0}
    if args.resume and checkpoint.exists():
        state = torch.load(checkpoint, weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        set_rng_states(state["rng"])
        print(f"resuming after epoch {state['epoch']} from {checkpoint}")
    for epoch in range(state["epoch"] + 1, args.epochs + 1):
        with Timer() as timer:
            lr = optimizer.param_groups[0]["lr"]
            train_loss = train_epoch(model, loaders["train"], optimizer, args)
            val, pairs = evaluate(model, loaders["validation"], vectorizer, args, "validation")
            scheduler.step()
        print(f"[{epoch}/{args.epochs}] lr {lr:.2e}  train loss {train_loss:.3f}  val loss "
              f"{val['loss']:.3f}  jaccard {val['jaccard_similarity']:.3f}  cosine "
              f"{val['cosine_similarity']:.3f}  d-l {val['damerau-levenshtein_similarity']:.3f}"
              f"  wer {val['wer']:.3f}  cer {val['cer']:.3f}  ({timer.seconds:.0f} s)")
        for target, pred in pairs[-3:]:
            print(f"  target: {target}\n  pred:   {pred}")
        state = {"epoch": epoch, "seconds": state["seconds"] + timer.seconds,
                 "history": state["history"] + [{"epoch": epoch, "lr": lr,
                                                  "train_loss": train_loss, "validation": val}],
                 "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                 "scheduler": scheduler.state_dict(), "rng": rng_states()}
        save_checkpoint(state, checkpoint)
    test_loader = make_loader(corpus, corpus.split("test", args.eval_clips), args,
                              args.eval_batch_size, shuffle=False)
    test, test_pairs = evaluate(model, test_loader, vectorizer, args, "test")
    results = {"history": state["history"], "test": test, "test_examples": test_pairs[:10],
               "train_seconds": state["seconds"],
               "parameters": {"total": sum(p.numel() for p in model.parameters()),
                              "encoder": sum(p.numel() for p in model._enc.parameters()),
                              "decoder": sum(p.numel() for p in model._dec.parameters())},
               "data": {"corpus": corpus.describe(), "synthetic_speech": is_tts(corpus)}}
    if real_corpus is not None:
        real_clips = [c for c, ok in zip(real_corpus.clips, real_corpus.has_audio) if ok]
        real, real_pairs = evaluate(model, make_loader(real_corpus, real_clips, args,
                                                       args.eval_batch_size, False),
                                    vectorizer, args, "real clips")
        results["real_clips"] = {"root": str(real_corpus.root), "clips": len(real_clips),
                                 "metrics": real, "examples": real_pairs[:10]}
        test_pairs = test_pairs + [("[genuine] " + t, p) for t, p in real_pairs]
    results["test_log"] = write_test_log(args.decoder, test_pairs)
    print("test: " + json.dumps({k: round(v, 4) for k, v in test.items()}))
    return results, model, corpus


# ---------------------------------------------------------------------------------------------
# Q3.3 / Q3.4 analysis: how each decoder reads the audio and the text so far; what each
# similarity counts
# ---------------------------------------------------------------------------------------------
ANALYSIS_CLIPS = 32


def first_stop(row: list[int]) -> int:
    """Index of the first stop token after the start token (the last index when none)."""
    return row.index(STOP, 1) if STOP in row[1:] else len(row) - 1


def analysis(model: SpeechToText, corpus: LJSpeech, args) -> dict:
    """Decode the first ANALYSIS_CLIPS test clips greedily, record the decoder's attention
    while it re-reads its own transcript, summarise it and draw the shortest clip's maps;
    take the three similarities of that clip apart (Q3.4's worked example).

    Cross-attention: the encoder frame each output character attends to most (heads
    averaged) and how well that peak follows the character's position (Pearson r; near 1 =
    the decoder reads the audio left to right, an alignment). Self-attention (attention
    decoder only): how far back, in characters, each position looks on average.
    """
    loader = make_loader(corpus, corpus.split("test", ANALYSIS_CLIPS), args, ANALYSIS_CLIPS,
                         shuffle=False)
    audio, text, lengths = next(iter(loader))
    model.eval()
    latent, padding = model.encode(audio.to(args.device),
                                   lengths.to(args.device) if args.fast else None)
    tokens = model.greedy(latent, padding, use_cache=True)
    maps = {k: v.mean(dim=1).cpu() for k, v in
            model.attention_maps(tokens[:, :-1], latent, padding).items()}  # heads averaged
    frames = ((lengths + 1) // 2).tolist()  # encoder frames that hold the clip (no padding)
    correlations, lookbacks, rows = [], [], tokens.tolist()
    for i, row in enumerate(rows):
        n = first_stop(row)  # query positions 0..n-1 write the characters 1..n
        peaks = maps["cross"][i, :n, :frames[i]].argmax(dim=-1).float()
        if n >= 3 and peaks.std() > 0:
            correlations.append(float(np.corrcoef(np.arange(n), peaks.numpy())[0, 1]))
        if "self" in maps:
            distance = torch.arange(n)[:, None] - torch.arange(n)[None, :]
            lookbacks.append(float((maps["self"][i, :n, :n] * distance.clamp(min=0)).sum() / n))
    shortest = int(np.argmin(frames))
    plot_attention(args.decoder, maps, rows[shortest], frames[shortest], shortest)
    attention = {"clips": len(rows), "cross_peak_position_correlation_mean":
                 float(np.mean(correlations)) if correlations else None,
                 "clips_with_a_correlation": len(correlations),
                 "example_clip": loader.dataset.clips[shortest].id}
    if lookbacks:
        attention["self_mean_lookback_characters"] = float(np.mean(lookbacks))
    return {"attention": attention,
            "similarities": similarity_anatomy(text.tolist(), rows, shortest)}


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


def plot_attention(decoder: str, maps: dict, row: list[int], frames: int, index: int) -> None:
    import matplotlib.pyplot as plt
    n = first_stop(row)
    chars = [c if c != " " else "␣" for c in TokenVectorizer().decode(row[1:n + 1])]
    panels = [("cross", "cross-attention over the audio", "encoder frame")]
    if "self" in maps:
        panels.append(("self", "causal self-attention over the text", "input character"))
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 0.12 * n + 2),
                             squeeze=False)
    for ax, (name, title, xlabel) in zip(axes[0], panels):
        weights = maps[name][index, :n, :frames if name == "cross" else n]
        ax.imshow(weights.numpy(), aspect="auto", cmap="viridis", interpolation="nearest")
        ax.set_yticks(range(n), chars, fontsize=5)
        if name == "self":
            ax.set_xticks(range(n), ["<"] + chars[:-1], fontsize=5)
        ax.set(title=f"{decoder} decoder: {title}", xlabel=xlabel,
               ylabel="character written (greedy decoding)")
    utils.save_figure(fig, f"q3-{decoder}-attention")


def is_tts(corpus: LJSpeech) -> bool:
    return (corpus.root / "tts_manifest.tsv").exists()


def find_real_corpus(args, corpus: LJSpeech) -> LJSpeech | None:
    """The genuine recordings to score separately: -real_dir, else $HW2_DATA_DIR's LJ folder
    when it is not the training corpus itself."""
    root = Path(args.real_dir) if args.real_dir else \
        utils.resolve_data_dir(None) / "LJSpeech-1.1"
    if not (root / "metadata.csv").exists() or root.resolve() == corpus.root.resolve():
        return None
    real = LJSpeech(root)
    return real if any(real.has_audio) and not is_tts(real) else None


def write_test_log(decoder: str, pairs: list[tuple[str, str]]) -> str:
    path = utils.RESULTS_DIR / f"q3-{decoder}-test-log.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"target: {t}\npred:   {p}\n\n" for t, p in pairs))
    return str(path.relative_to(utils.RESULTS_DIR.parent.parent)
               if utils.RESULTS_DIR.is_relative_to(utils.REPO_DIR) else path)


def plot_history(decoder: str, history: list[dict]) -> None:
    epochs = [h["epoch"] for h in history]
    plot_lines(f"q3-{decoder}-loss", {
        "train": (epochs, [h["train_loss"] for h in history]),
        "validation": (epochs, [h["validation"]["loss"] for h in history])},
        "Epoch", "Loss", title=f"{decoder} decoder: loss")
    plot_lines(f"q3-{decoder}-similarities", {
        name: (epochs, [h["validation"][name] for h in history]) for name in SIMILARITIES},
        "Epoch", "Validation similarity", title=f"{decoder} decoder: string similarities")
    plot_lines(f"q3-{decoder}-error-rates", {
        name.upper(): (epochs, [h["validation"][name] for h in history])
        for name in ("wer", "cer")}, "Epoch", "Validation error rate",
        title=f"{decoder} decoder: WER and CER")


def plot_both_decoders() -> None:
    """One figure with both decoders, when both results files exist."""
    records = {}
    for decoder in ("lstm", "transformer"):
        path = utils.RESULTS_DIR / f"q3-{decoder}.json"
        if path.exists():
            records[decoder] = json.loads(path.read_text())["results"]["history"]
    if len(records) < 2:
        return
    curves = {}
    for decoder, history in records.items():
        epochs = [h["epoch"] for h in history]
        curves[f"{decoder}, validation loss"] = (epochs, [h["validation"]["loss"] for h in history])
        curves[f"{decoder}, train loss"] = (epochs, [h["train_loss"] for h in history])
    plot_lines("q3-both-loss", curves, "Epoch", "Loss", title="LSTM vs attention decoder")
    plot_lines("q3-both-similarities", {
        f"{decoder}, {name.split('_')[0]}": ([h["epoch"] for h in history],
                                             [h["validation"][name] for h in history])
        for decoder, history in records.items() for name in SIMILARITIES},
        "Epoch", "Validation similarity", title="LSTM vs attention decoder")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Question 3: LJ Speech ASR with the given transformer encoder and an LSTM "
                    "(Q3.1) or attention (Q3.2) decoder; losses, string similarities, WER/CER.")
    parser.add_argument("-decoder", choices=["lstm", "transformer"], required=True,
                        help="lstm: Q3.1, TextDecoderRecurrent; transformer: Q3.2, "
                             "TextDecoderTransformer")
    parser.add_argument("-epochs", type=int, default=15, help="default: %(default)s")
    parser.add_argument("-lr", type=float, default=1e-3, help="AdamW peak learning rate")
    parser.add_argument("-batch_size", type=int, default=64, help="training batch size")
    parser.add_argument("-eval_batch_size", type=int, default=16)
    parser.add_argument("-encoder_layers", type=int, default=2,
                        help="encoder blocks (default 2 as in the handed-out config; the "
                             "statement's appendix says 4)")
    parser.add_argument("-statement_norm", action="store_true",
                        help="residual sub-blocks as the statement's appendix writes them, "
                             "LN(x + Module(LN(x))) (default: the handed-out x + Module(LN(x)))")
    parser.add_argument("-hidden_dim", type=int, default=200, help=argparse.SUPPRESS)
    parser.add_argument("-ff_dim", type=int, default=400, help=argparse.SUPPRESS)
    parser.add_argument("-train_clips", type=int, default=None,
                        help="use only the first N training clips (smoke runs, CPU budgets)")
    parser.add_argument("-eval_clips", type=int, default=None,
                        help="use only the first N validation and test clips")
    parser.add_argument("-fast", action="store_true",
                        help="pad each batch to its longest clip with key-padding masks, "
                             "decode with a key/value cache and stop once every clip has "
                             "emitted the stop token (default: handed-out padding to 2754 "
                             "frames, prefix recomputation, all 98 steps)")
    parser.add_argument("-real_dir", default=None,
                        help="LJ-layout folder of genuine recordings scored separately "
                             "(default: LJSpeech-1.1 in $HW2_DATA_DIR when it is not the "
                             "training corpus)")
    parser.add_argument("-workers", type=int, default=2, help="DataLoader worker processes")
    parser.add_argument("-cache_dir", default="data/feature_cache",
                        help="log-mel feature cache (default: %(default)s)")
    parser.add_argument("-checkpoint_dir", default="checkpoints/q3")
    parser.add_argument("-resume", action="store_true",
                        help="continue from the last finished epoch in -checkpoint_dir")
    parser.add_argument("-device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("-analysis_only", action="store_true",
                        help="skip training: load the last checkpoint and redo only the "
                             "Q3.3 attention maps and the Q3.4 similarity breakdown")
    parser.add_argument("-no_progress", action="store_true", help="no progress bars")
    add_common_args(parser, threads=True)
    args = parser.parse_args(argv)
    if args.epochs < 1 or args.batch_size < 1 or args.eval_batch_size < 1:
        parser.error("need -epochs, -batch_size and -eval_batch_size >= 1")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    utils.apply_common_args(args)
    if not args.analysis_only:
        with Timer() as wall:
            results, model, corpus = run(args)
        data = results.pop("data")
        path = write_results(f"q3-{args.decoder}", results, config=vars(args), seed=args.seed,
                             data=data, wall_time_s=wall.seconds)
        plot_history(args.decoder, results["history"])
        plot_both_decoders()
        print(f"wrote {path} ({wall.seconds:.0f} s)")
    else:
        model, corpus = restore_model(args), open_corpus(args)
    with Timer() as wall:
        summary = analysis(model, corpus, args)
    path = write_results(f"q3-{args.decoder}-analysis", summary, config=vars(args),
                         seed=args.seed, data={"corpus": corpus.describe(),
                                               "synthetic_speech": is_tts(corpus)},
                         wall_time_s=wall.seconds)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
