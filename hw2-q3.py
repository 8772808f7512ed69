#!/usr/bin/env python
"""Question 3: speech recognition on LJ Speech with the given transformer encoder and an LSTM
(Q3.1, -decoder lstm) or attention (Q3.2, -decoder transformer) text decoder.

Training follows the handed-out notebook: AdamW (lr 1e-3), a per-epoch schedule (linear
warm-up from 1e-2 x lr over the first 15% of the epochs, then linear decay to 1e-2 x lr),
teacher forcing with label-smoothed cross-entropy over all 98 target positions, greedy
decoding of 98 steps, and the three string similarities of the handed-out code (textdistance
jaccard / cosine / Damerau-Levenshtein on token-id lists cut at the stop token) plus word and
character error rates (jiwer). -fast draws batches of clips of similar length, pads each to its
longest clip with key-padding masks and decodes with a key/value cache (faithful by default:
shuffled batches, every clip padded to 2754 frames); -schedule update steps the same
learning-rate shape after every update.

Writes report/results/q3-<decoder>.json, its test log, plots/q3-<decoder>-*.{png,pdf}, and
q3-<decoder>-analysis.json (Q3.3 attention maps, Q3.4 similarity counts on the first test
clips); a checkpoint at every validation lets -resume continue an interrupted run of the same
configuration to the same result.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from hw2 import REPO_DIR, cli, figures
from hw2.asr_metrics import (SIMILARITIES, STOP, error_rates, first_stop, similarity_anatomy,
                             string_scores)
from hw2.asr_model import SpeechToText
from hw2.checkpoints import atomic_write, exclusive, save_checkpoint
from hw2.cli import (add_common_args, ensure_writable, fail, non_negative_int, positive_float,
                     positive_int)
from hw2.ljspeech import (AUDIO_TIME, Clip, ClipBatches, FeatureBank, FeatureCache, LJSpeech,
                          LogMel, SpeechDataset, TokenVectorizer)
from hw2.results import Timer, write_results
from utils import configure_seed


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------
def make_scheduler(optimizer, epochs: int, updates_per_epoch: int = 1, schedule: str = "epoch",
                   warmup_updates: int | None = None):
    """The handed-out learning-rate shape: linear warm-up from 1e-2 x lr to lr, then linear
    decay to 1e-2 x lr. schedule="epoch" is the handed-out one, stepped once per epoch, with
    int(0.15 x epochs) warm-up epochs (so 6 epochs or fewer have none and start at lr).
    schedule="update" has the same shape stepped after every update, over
    epochs x updates_per_epoch updates, with `warmup_updates` warm-up updates (default 15%)."""
    if schedule == "epoch":
        warmup, total = int(0.15 * epochs), epochs
        decay = int(0.85 * epochs)
    else:
        total = epochs * updates_per_epoch
        warmup = int(0.15 * total) if warmup_updates is None else warmup_updates
        decay = total - warmup
    phases = [torch.optim.lr_scheduler.LinearLR(optimizer, 1.0, 1e-2, total_iters=decay)]
    if warmup == 0:
        return phases[0]
    return torch.optim.lr_scheduler.SequentialLR(optimizer, [
        torch.optim.lr_scheduler.LinearLR(optimizer, 1e-2, 1.0, total_iters=warmup), *phases],
        milestones=[warmup])


def teacher_forced_loss(logits: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the logits for text[:, :-1] against text[:, 1:] (label smoothing 0.1,
    padding positions included, as handed out)."""
    return F.cross_entropy(logits.float(), text[:, 1:], label_smoothing=0.1)


def autocast(args):
    """bf16 autocast with -amp, else a no-op context."""
    return torch.autocast(torch.device(args.device).type, dtype=torch.bfloat16,
                          enabled=args.amp)


def model_batch(bank: FeatureBank, indices, args):
    """Audio, tokens and the lengths the model masks with: with -fast, padded to the batch's
    longest clip and masked; else padded to the handed-out AUDIO_TIME frames, lengths None (no
    masks, as handed out)."""
    audio, text, lengths = bank.batch(indices, None if args.fast else AUDIO_TIME)
    return audio, text, lengths if args.fast else None


def train_step(model, bank: FeatureBank, indices, optimizer, args) -> torch.Tensor:
    """One update on the clips at `indices`; returns the loss (not synchronised)."""
    audio, text, lengths = model_batch(bank, indices, args)
    with autocast(args):
        logits = model(audio, text[:, :-1], lengths)
    loss = teacher_forced_loss(logits, text)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach()


@torch.no_grad()
def evaluate(model, bank: FeatureBank, vectorizer, args, desc="eval"
             ) -> tuple[dict, list[tuple[str, str]]]:
    """Mean batch loss, mean similarities per clip, WER / CER, and every decoded pair (in
    corpus order). -fast evaluates batches of similar length (same values, less padding)."""
    model.eval()
    if args.fast:
        batches = bank.batches_in_length_order(args.eval_batch_size)
    else:
        batches = list(torch.arange(len(bank)).split(args.eval_batch_size))
    sums, losses, pairs = dict.fromkeys(SIMILARITIES, 0.0), [], {}
    for indices in tqdm(batches, leave=False, disable=args.no_progress, desc=desc):
        audio, text, lengths = model_batch(bank, indices, args)
        with autocast(args):
            latent, padding = model.encode(audio, lengths)
            logits = model.decode(text[:, :-1], latent, padding)
            generated = model.greedy(latent, padding, use_cache=args.fast,
                                     stop_token=STOP if args.fast else None)
        losses.append(teacher_forced_loss(logits, text))
        batch_sums, batch_pairs = string_scores(text.cpu(), generated.cpu(), vectorizer)
        sums = {k: sums[k] + batch_sums[k] for k in sums}
        pairs.update(zip(indices.tolist(), batch_pairs))
    pairs = [pairs[i] for i in range(len(bank))]
    metrics = {"loss": float(torch.stack(losses).mean()),
               **{k: v / len(pairs) for k, v in sums.items()}, **error_rates(pairs)}
    model.train()
    return metrics, pairs


def load_bank(corpus: LJSpeech, clips: list[Clip], args, desc: str) -> FeatureBank:
    """The clips' features and tokens in memory (on -device), computed once into -cache_dir."""
    if not clips:
        raise fail(f"no clips with audio in {corpus.root} for this split "
                   f"({corpus.describe()['clips_with_audio']} clips have audio)")
    cache = FeatureCache(Path(args.cache_dir), LogMel())
    dataset = SpeechDataset(corpus, clips, cache, TokenVectorizer())
    return FeatureBank(dataset, args.workers, args.device, not args.no_progress, desc)


def build_model(args) -> SpeechToText:
    return SpeechToText(args.decoder, encoder_layers=args.encoder_layers,
                        hidden_dim=args.hidden_dim, feed_fwd_dim=args.ff_dim,
                        statement_norm=args.statement_norm).to(args.device)


# Flags that change what a run computes: -resume continues only a run with the same values.
RUN_IDENTITY = ("decoder", "epochs", "lr", "batch_size", "eval_batch_size", "encoder_layers",
                "statement_norm", "hidden_dim", "ff_dim", "train_clips", "eval_clips", "fast",
                "schedule", "warmup_updates", "curriculum", "eval_every", "amp", "seed")


def run_identity(args, corpus: LJSpeech) -> dict:
    return {**{name: getattr(args, name) for name in RUN_IDENTITY},
            "corpus": corpus.describe()["splits"]}


def checkpoint_path(args) -> Path:
    folder = Path(args.checkpoint_dir) if args.checkpoint_dir else \
        Path(args.out_dir or ".") / "checkpoints" / "q3"
    return folder / f"{run_name(args)}-seed{args.seed}.pt"


def load_checkpoint(path: Path) -> dict:
    try:
        return torch.load(path, weights_only=False, map_location="cpu")
    except Exception as err:  # truncated or foreign file
        raise fail(f"{path}: unreadable checkpoint ({type(err).__name__}); delete it to "
                   "start afresh") from None


def restore_model(args) -> SpeechToText:
    """The model of the last checkpoint."""
    checkpoint, model = checkpoint_path(args), build_model(args)
    if not checkpoint.exists():
        raise fail(f"no checkpoint {checkpoint}: train first (without -analysis_only)")
    model.load_state_dict(load_checkpoint(checkpoint)["model"])
    return model


def open_corpus(args) -> LJSpeech:
    return LJSpeech(cli.resolve_data_dir(args.data_dir) / "LJSpeech-1.1")


def resume_state(args, identity: dict, model, optimizer, scheduler) -> dict:
    """The state of a fresh run, or (with -resume) that of the checkpoint, loaded into the
    model, optimiser and scheduler; a checkpoint of another configuration is refused."""
    state = {"update": 0, "history": [], "seconds": 0.0, "identity": identity}
    checkpoint = checkpoint_path(args)
    if not (args.resume and checkpoint.exists()):
        return state
    saved = load_checkpoint(checkpoint)
    changed = [k for k in identity if saved.get("identity", {}).get(k) != identity[k]]
    if changed:
        raise fail(f"{checkpoint} is another run (differs in {', '.join(changed)}); drop "
                   "-resume or delete it to start afresh")
    model.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    print(f"resuming after update {saved['update']} from {checkpoint}")
    return saved


def run(args, out: cli.Outputs) -> tuple[dict, SpeechToText, LJSpeech]:
    """Train (or resume), validating at the end of every epoch and every -eval_every updates,
    then test: (results, model, corpus)."""
    configure_seed(args.seed)
    corpus = open_corpus(args)
    real_corpus = find_real_corpus(args, corpus)
    train = load_bank(corpus, corpus.split("train", args.train_clips), args, "train features")
    validation = load_bank(corpus, corpus.split("validation", args.eval_clips), args,
                           "validation features")
    batches = ClipBatches(train.lengths, args.batch_size, args.seed, group=args.fast,
                          curriculum=args.curriculum)
    per_epoch, total = len(batches), len(batches) * args.epochs
    model = build_model(args)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr)
    scheduler = make_scheduler(optimizer, args.epochs, per_epoch, args.schedule,
                               args.warmup_updates)
    vectorizer = TokenVectorizer()
    state = resume_state(args, run_identity(args, corpus), model, optimizer, scheduler)
    model.train()
    losses, timer = [], Timer()  # timer.lap(): training + validation time
    bar = tqdm(total=total, initial=state["update"], disable=args.no_progress, desc="train",
               unit="update")
    while state["update"] < total:
        epoch, step = divmod(state["update"], per_epoch)
        for indices in batches.epoch(epoch)[step:]:
            lr = optimizer.param_groups[0]["lr"]
            losses.append(train_step(model, train, indices, optimizer, args))
            state["update"] += 1
            bar.update()
            end_of_epoch = state["update"] % per_epoch == 0
            if args.schedule == "update" or end_of_epoch:
                scheduler.step()
            if end_of_epoch or (args.eval_every and state["update"] % args.eval_every == 0):
                train_loss = float(torch.stack(losses).mean())
                if not np.isfinite(train_loss):
                    raise fail(f"training diverged: loss {train_loss} at update "
                               f"{state['update']} (epoch {epoch + 1}); lower -learning_rate")
                val, pairs = evaluate(model, validation, vectorizer, args, "validation")
                state = checkpoint_after(state, model, optimizer, scheduler, args, {
                    "update": state["update"], "epoch": state["update"] / per_epoch,
                    "clips_seen": state["update"] * args.batch_size, "lr": lr,
                    "train_loss": train_loss, "validation": val}, timer.lap())
                report_progress(state, args, pairs, bar)
                losses = []
    bar.close()
    del train
    test_bank = load_bank(corpus, corpus.split("test", args.eval_clips), args, "test features")
    test, test_pairs = evaluate(model, test_bank, vectorizer, args, "test")
    results = {"history": state["history"], "test": test, "test_examples": test_pairs[:10],
               "train_seconds": state["seconds"], "updates": total,
               "updates_per_epoch": per_epoch, "device": device_name(args.device),
               "parameters": {"total": sum(p.numel() for p in model.parameters()),
                              "encoder": sum(p.numel() for p in model._enc.parameters()),
                              "decoder": sum(p.numel() for p in model._dec.parameters())},
               "data": {"corpus": corpus.describe(), "synthetic_speech": is_tts(corpus)}}
    if real_corpus is not None:
        real_clips = [c for c, ok in zip(real_corpus.clips, real_corpus.has_audio) if ok]
        real, real_pairs = evaluate(model, load_bank(real_corpus, real_clips, args, "genuine"),
                                    vectorizer, args, "real clips")
        results["real_clips"] = {"root": str(real_corpus.root), "clips": len(real_clips),
                                 "metrics": real, "examples": real_pairs[:10]}
        test_pairs = test_pairs + [("[genuine] " + t, p) for t, p in real_pairs]
    results["test_log"] = write_test_log(run_name(args), test_pairs, out.results)
    print("test: " + json.dumps({k: round(v, 4) for k, v in test.items()}))
    return results, model, corpus


def checkpoint_after(state: dict, model, optimizer, scheduler, args, record: dict,
                     seconds: float) -> dict:
    """Append one evaluation record (with the training time so far) and save the checkpoint
    that -resume continues from."""
    total_seconds = state["seconds"] + seconds
    state = {**state, "seconds": total_seconds,
             "history": state["history"] + [{**record, "seconds": total_seconds}],
             "model": model.state_dict(), "optimizer": optimizer.state_dict(),
             "scheduler": scheduler.state_dict()}
    save_checkpoint(state, checkpoint_path(args))
    return state


def report_progress(state: dict, args, pairs: list[tuple[str, str]], bar) -> None:
    record, write = state["history"][-1], (bar.write if not args.no_progress else print)
    val = record["validation"]
    write(f"[update {record['update']}, epoch {record['epoch']:.2f}] lr {record['lr']:.2e}  "
          f"train loss {record['train_loss']:.3f}  val loss {val['loss']:.3f}  d-l "
          f"{val['damerau-levenshtein_similarity']:.3f}  wer {val['wer']:.3f}  cer "
          f"{val['cer']:.3f}  ({record['seconds']:.0f} s)")
    for target, pred in pairs[:2]:
        write(f"  target: {target}\n  pred:   {pred}")


def device_name(device: str) -> str:
    if torch.device(device).type == "cuda":
        return torch.cuda.get_device_name(torch.device(device))
    return f"cpu ({torch.get_num_threads()} threads)"


# ---------------------------------------------------------------------------------------------
# Q3.3 / Q3.4 analysis: how each decoder reads the audio and the text so far; what each
# similarity counts
# ---------------------------------------------------------------------------------------------
ANALYSIS_CLIPS = 32


def analysis(model: SpeechToText, corpus: LJSpeech, args, out: cli.Outputs) -> dict:
    """Decode the first ANALYSIS_CLIPS test clips greedily, record the decoder's attention
    while it re-reads its own transcript, summarise it and draw the shortest clip's maps;
    take the three similarities of that clip apart (Q3.4's worked example).

    Cross-attention: the encoder frame each output character attends to most (heads
    averaged) and how well that peak follows the character's position (Pearson r; near 1 =
    the decoder reads the audio left to right, an alignment). Self-attention (attention
    decoder only): how far back, in characters, each position looks on average.
    """
    bank = load_bank(corpus, corpus.split("test", ANALYSIS_CLIPS), args, "analysis features")
    audio, text, lengths = model_batch(bank, torch.arange(len(bank)), args)
    model.eval()
    latent, padding = model.encode(audio, lengths)
    tokens = model.greedy(latent, padding, use_cache=True)
    maps = {k: v.mean(dim=1).cpu() for k, v in
            model.attention_maps(tokens[:, :-1], latent, padding).items()}  # heads averaged
    frames = ((bank.lengths + 1) // 2).tolist()  # encoder frames that hold the clip (no padding)
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
    figures.plot_attention(run_name(args), args.decoder, maps, rows[shortest], frames[shortest],
                   shortest, out.plots)
    attention = {"clips": len(rows), "cross_peak_position_correlation_mean":
                 float(np.mean(correlations)) if correlations else None,
                 "clips_with_a_correlation": len(correlations),
                 "example_clip": bank.clips[shortest].id}
    if lookbacks:
        attention["self_mean_lookback_characters"] = float(np.mean(lookbacks))
    return {"attention": attention,
            "similarities": similarity_anatomy(text.tolist(), rows, shortest)}




def is_tts(corpus: LJSpeech) -> bool:
    return (corpus.root / "tts_manifest.tsv").exists()


def find_real_corpus(args, corpus: LJSpeech) -> LJSpeech | None:
    """The genuine recordings to score separately: -real_dir, else $HW2_DATA_DIR's LJ folder
    when it is not the training corpus itself."""
    root = Path(args.real_dir) if args.real_dir else \
        cli.resolve_data_dir(None) / "LJSpeech-1.1"
    if not (root / "metadata.csv").exists() or root.resolve() == corpus.root.resolve():
        return None
    real = LJSpeech(root)
    return real if any(real.has_audio) and not is_tts(real) else None


def run_name(args, decoder: str | None = None) -> str:
    """q3-<decoder>, with -tag appended: the stem of every file a run writes."""
    return f"q3-{decoder or args.decoder}" + (f"-{args.tag}" if args.tag else "")


def write_test_log(name: str, pairs: list[tuple[str, str]], results_dir: Path) -> str:
    path = results_dir / f"{name}-test-log.txt"
    with atomic_write(path) as tmp:
        tmp.write_text("".join(f"target: {t}\npred:   {p}\n\n" for t, p in pairs))
    return str(path.relative_to(results_dir.parent.parent)
               if results_dir.is_relative_to(REPO_DIR) else path)


def plot_both_decoders(args, out: cli.Outputs) -> None:
    """Both decoders' validation curves against training updates, once both have run."""
    records = {}
    for decoder in ("lstm", "transformer"):
        path = out.results / f"{run_name(args, decoder)}.json"
        if path.exists():
            history = json.loads(path.read_text())["results"]["history"]
            if all("update" in h for h in history):  # not a results file of an older layout
                records[decoder] = history
    if len(records) < 2:
        return
    figures.plot_q3_decoders(run_name(args, "both"), records, out.plots)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Question 3: LJ Speech ASR with the given transformer encoder and an LSTM "
                    "(Q3.1) or attention (Q3.2) decoder; losses, string similarities, WER/CER. "
                    "Defaults are the handed-out configuration.")
    parser.add_argument("-decoder", choices=["lstm", "transformer"], required=True,
                        help="lstm: Q3.1, TextDecoderRecurrent; transformer: Q3.2, "
                             "TextDecoderTransformer")
    parser.add_argument("-epochs", type=positive_int, default=15, help="default: %(default)s")
    parser.add_argument("-learning_rate", "-lr", dest="lr", type=positive_float, default=1e-3,
                        help="AdamW peak learning rate (default: %(default)s; -lr: the earlier "
                             "spelling, kept for the commands of the committed runs)")
    parser.add_argument("-batch_size", type=positive_int, default=64, help="training batch size")
    parser.add_argument("-eval_batch_size", type=positive_int, default=16)
    parser.add_argument("-encoder_layers", type=positive_int, default=2,
                        help="encoder blocks (default 2 as in the handed-out config; the "
                             "statement's appendix says 4)")
    parser.add_argument("-statement_norm", action="store_true",
                        help="residual sub-blocks as the statement's appendix writes them, "
                             "LN(x + Module(LN(x))) (default: the handed-out x + Module(LN(x)))")
    parser.add_argument("-hidden_dim", type=positive_int, default=200, help=argparse.SUPPRESS)
    parser.add_argument("-ff_dim", type=positive_int, default=400, help=argparse.SUPPRESS)
    parser.add_argument("-schedule", choices=["epoch", "update"], default="epoch",
                        help="epoch: the handed-out warm-up / decay stepped once per epoch "
                             "(15%% of the epochs warm up: none with 6 epochs or fewer); "
                             "update: the same shape stepped after every update")
    parser.add_argument("-warmup_updates", type=non_negative_int, default=None,
                        help="with -schedule update: warm-up length (default: 15%% of the "
                             "updates)")
    parser.add_argument("-train_clips", type=positive_int, default=None,
                        help="use only the first N training clips (smoke runs)")
    parser.add_argument("-eval_clips", type=positive_int, default=None,
                        help="use only the first N validation and test clips")
    parser.add_argument("-fast", action="store_true",
                        help="batches of clips of similar length, each padded to its longest "
                             "clip with key-padding masks; decoding with a key/value cache "
                             "that stops once every clip has emitted the stop token (default: "
                             f"handed-out shuffled batches padded to {AUDIO_TIME} frames, prefix "
                             "recomputation, all 98 steps)")
    parser.add_argument("-curriculum", action="store_true",
                        help="with -fast: the first epoch goes from the shortest clips to the "
                             "longest")
    parser.add_argument("-eval_every", type=non_negative_int, default=0,
                        help="also validate (and checkpoint) every N updates (default: at the "
                             "end of each epoch only)")
    parser.add_argument("-amp", action="store_true",
                        help="bf16 autocast for the model (default: float32); pays on CPUs with "
                        "native bf16 (AVX512-BF16, AMX) and for the handed-out padding on GPUs")
    parser.add_argument("-real_dir", default=None,
                        help="LJ-layout folder of genuine recordings scored separately "
                             "(default: LJSpeech-1.1 in $HW2_DATA_DIR when it is not the "
                             "training corpus)")
    parser.add_argument("-workers", type=non_negative_int, default=2,
                        help="processes that compute the features (once; they are then held "
                             "in memory)")
    parser.add_argument("-cache_dir", default="data/feature_cache",
                        help="log-mel feature cache (default: %(default)s)")
    parser.add_argument("-checkpoint_dir", default=None,
                        help="default: checkpoints/q3 under -out_dir (else the repository)")
    parser.add_argument("-resume", action="store_true",
                        help="continue from the last checkpoint (only a run of the same "
                             "configuration)")
    parser.add_argument("-device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("-analysis_only", action="store_true",
                        help="skip training: load the last checkpoint and redo only the "
                             "Q3.3 attention maps and the Q3.4 similarity breakdown")
    parser.add_argument("-tag", default="",
                        help="appended to the names of the results, figures and checkpoint "
                             "(e.g. gpu: q3-lstm-gpu.json)")
    parser.add_argument("-no_progress", action="store_true", help="no progress bars")
    add_common_args(parser, threads=True)
    args = parser.parse_args(argv)
    if args.tag and not args.tag.replace("-", "").isalnum():
        parser.error(f"-tag must be letters, digits and '-' (got {args.tag!r})")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("-device cuda: no CUDA GPU is available here (use -device cpu)")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    out = cli.apply_common_args(args)
    name = run_name(args)
    out.check_replaceable(vars(args), name, f"{name}-analysis")  # other settings: only -force
    if not args.analysis_only:
        out.ensure_writable()
        ensure_writable(checkpoint_path(args).parent, "-checkpoint_dir")
        with Timer() as wall, exclusive(checkpoint_path(args).with_suffix(".lock"),
                                        f"the {name} run"):
            results, model, corpus = run(args, out)
        data = results.pop("data")
        path = write_results(name, results, config=vars(args), seed=args.seed, data=data,
                             wall_time_s=wall.seconds, results_dir=out.results)
        figures.plot_q3_history(name, args.decoder, results["history"], out.plots)
        plot_both_decoders(args, out)
        print(f"wrote {path} ({wall.seconds:.0f} s)")
    else:
        model, corpus = restore_model(args), open_corpus(args)
    with Timer() as wall:
        summary = analysis(model, corpus, args, out)
    path = write_results(f"{name}-analysis", summary, config=vars(args), seed=args.seed,
                         data={"corpus": corpus.describe(), "synthetic_speech": is_tts(corpus)},
                         wall_time_s=wall.seconds, results_dir=out.results)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
