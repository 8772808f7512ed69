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

Writes report/results/q3-<decoder>.json, its test log, and plots/q3-<decoder>-*.{png,pdf};
a checkpoint after every epoch lets -resume continue an interrupted run to the same result.
"""
from __future__ import annotations

import argparse
import json
import random
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


def teacher_forced_loss(model: SpeechToText, audio, text, lengths) -> torch.Tensor:
    """Cross-entropy (label smoothing 0.1, padding positions included, as handed out)."""
    logits = model(audio, text[:, :-1], lengths)
    return F.cross_entropy(logits, text[:, 1:], label_smoothing=0.1)


def train_epoch(model, loader, optimizer, args) -> float:
    model.train()
    total, count = 0.0, 0
    bar = tqdm(loader, leave=False, disable=args.no_progress, desc="train")
    for audio, text, lengths in bar:
        audio, text = audio.to(args.device), text.to(args.device)
        lengths = lengths.to(args.device) if args.fast else None
        optimizer.zero_grad()
        loss = teacher_forced_loss(model, audio, text, lengths)
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
        losses.append(teacher_forced_loss(model, audio, text, lengths).item())
        generated = model.generate(audio, lengths, use_cache=args.fast)
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


def run(args) -> dict:
    configure_seed(args.seed)
    corpus = LJSpeech(utils.resolve_data_dir(args.data_dir) / "LJSpeech-1.1")
    real_corpus = find_real_corpus(args, corpus)
    loaders = {
        "train": make_loader(corpus, corpus.split("train", args.train_clips), args,
                             args.batch_size, shuffle=True),
        "validation": make_loader(corpus, corpus.split("validation", args.eval_clips), args,
                                  args.eval_batch_size, shuffle=False),
    }
    model = SpeechToText(args.decoder, encoder_layers=args.encoder_layers,
                         hidden_dim=args.hidden_dim, feed_fwd_dim=args.ff_dim,
                         statement_norm=args.statement_norm).to(args.device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr)
    scheduler = make_scheduler(optimizer, args.epochs)
    vectorizer = TokenVectorizer()
    checkpoint = Path(args.checkpoint_dir) / f"q3-{args.decoder}-seed{args.seed}.pt"
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
    return results


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
                        help="pad each batch to its longest clip with key-padding masks, and "
                             "decode with a key/value cache (default: handed-out padding to "
                             "2754 frames, prefix recomputation)")
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
    parser.add_argument("-no_progress", action="store_true", help="no progress bars")
    add_common_args(parser)
    args = parser.parse_args(argv)
    if args.epochs < 1 or args.batch_size < 1 or args.eval_batch_size < 1:
        parser.error("need -epochs, -batch_size and -eval_batch_size >= 1")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.out_dir:
        utils.set_output_root(args.out_dir)
    with Timer() as wall:
        results = run(args)
    data = results.pop("data")
    path = write_results(f"q3-{args.decoder}", results, config=vars(args), seed=args.seed,
                         data=data, wall_time_s=wall.seconds)
    plot_history(args.decoder, results["history"])
    plot_both_decoders()
    print(f"wrote {path} ({wall.seconds:.0f} s)")


if __name__ == "__main__":
    main()
