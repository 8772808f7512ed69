#!/usr/bin/env python
"""Question 3: speech recognition on LJ Speech with the given transformer encoder and an LSTM
(Q3.1, -decoder lstm) or attention (Q3.2, -decoder transformer) text decoder.

Trains as the handed-out notebook does (the defaults), validates every epoch, tests, then
analyses the decoder (Q3.3 attention maps, Q3.4 what each similarity counts). Writes
report/results/q3-<decoder>.json, its -analysis.json and test log, and plots/q3-<decoder>-*;
a checkpoint at every validation lets -resume finish an interrupted run with the same numbers.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from hw2 import cli, figures
from hw2.asr_metrics import (SIMILARITIES, STOP, bootstrap_cer, error_rates, first_stop,
                             similarity_anatomy, string_scores)
from hw2.asr_model import SpeechToText
from hw2.augment import REVERB_DRR_DB, Augmentation, augment
from hw2.checkpoints import Checkpoint, check_identity, exclusive, read_checkpoint
from hw2.cli import (add_common_args, ensure_writable, fail, non_negative_float,
                     non_negative_int, positive_float, positive_int, torch_device)
from hw2.ljspeech import (AUDIO_TIME, LOG_MEL_DECADES, TTS_MANIFEST, Clip, ClipBatches,
                          FeatureBank, FeatureCache, LJSpeech, LogMel, MelSettings, SpeechDataset,
                          TokenVectorizer, read_tts_manifest, tts_engines)
from hw2.results import (Timer, check_replaceable, read_test_log, test_log_path,
                         write_results, write_test_log)
from utils import configure_seed


# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------
def open_corpus(args: argparse.Namespace) -> LJSpeech:
    return LJSpeech(cli.resolve_data_dir(args.data_dir) / "LJSpeech-1.1")


def is_tts(corpus: LJSpeech) -> bool:
    return (corpus.root / TTS_MANIFEST).exists()


def corpus_record(corpus: LJSpeech) -> dict:
    """What the results files say about the data: counts, content digest, synthetic or not,
    and for synthetic speech how many of the clips with audio each engine spoke."""
    record = {"corpus": corpus.describe(), "corpus_sha256": corpus.digest(),
              "synthetic_speech": is_tts(corpus)}
    if is_tts(corpus):
        engines = clip_engines(corpus, corpus.clips_with_audio())
        record["engines"] = dict(sorted(Counter(engines).items()))
    return record


def clip_engines(corpus: LJSpeech, clips: list[Clip]) -> list[str]:
    """The engine that spoke each clip of a synthetic corpus, as its manifest says ("unknown"
    for a clip the manifest does not list)."""
    engine = tts_engines(read_tts_manifest(corpus.root))
    return [engine.get(clip.id, "unknown") for clip in clips]


def find_real_corpus(args: argparse.Namespace, corpus: LJSpeech) -> LJSpeech | None:
    """The genuine recordings to score separately: -real_dir, else $HW2_DATA_DIR's LJ folder
    when it is not the training corpus itself."""
    root = Path(args.real_dir) if args.real_dir else \
        cli.resolve_data_dir(None) / "LJSpeech-1.1"
    if not (root / "metadata.csv").exists() or root.resolve() == corpus.root.resolve():
        return None
    real = LJSpeech(root)
    return real if any(real.has_audio) and not is_tts(real) else None


def heldout_corpus(args: argparse.Namespace) -> LJSpeech | None:
    """-heldout_dir: clips of a voice kept out of training, on which choices may be made."""
    if args.heldout_dir is None:
        return None
    folder = LJSpeech(Path(args.heldout_dir))
    if not any(folder.has_audio):
        raise fail(f"-heldout_dir {args.heldout_dir}: no clip has audio")
    return folder


def load_bank(corpus: LJSpeech, clips: list[Clip], args: argparse.Namespace,
              desc: str) -> FeatureBank:
    """The clips' features and tokens in memory (on -device), computed once into -cache_dir."""
    if not clips:
        raise fail(f"no clips with audio in {corpus.root} for this split "
                   f"({corpus.describe()['clips_with_audio']} clips have audio)")
    cache = FeatureCache(Path(args.cache_dir), LogMel())
    dataset = SpeechDataset(corpus, clips, cache, TokenVectorizer())
    bank = FeatureBank(dataset, args.workers, args.device, not args.no_progress, desc)
    if args.dynamic_range is not None:
        bank.raise_floor(args.dynamic_range)
    if args.lifter is not None:
        bank.smooth_spectrum(args.lifter)
    if args.utterance_norm:
        bank.normalise_per_clip()
    return bank


# ---------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------
def build_model(decoder: str, encoder_layers: int = 2, statement_norm: bool = False,
                hidden_dim: int = 200, ff_dim: int = 400) -> SpeechToText:
    """The handed-out model (hidden size 200, feed-forward 400, 2 heads) with `decoder`; the
    sizes are arguments so that tests run small models through this same script."""
    return SpeechToText(decoder, encoder_layers=encoder_layers, hidden_dim=hidden_dim,
                        feed_fwd_dim=ff_dim, statement_norm=statement_norm)


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Options:
    """How the step and evaluation functions pad, compute and decode (not what is trained):
    fast = -fast's per-batch padding with key-padding masks and cached decoding that stops at
    the stop token, amp = bf16 autocast, progress = progress bars."""
    fast: bool = False
    amp: bool = False
    device: str = "cpu"
    eval_batch_size: int = 16
    progress: bool = False

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "Options":
        return cls(args.fast, args.amp, args.device, args.eval_batch_size, not args.no_progress)


def schedule_steps(epochs: int, updates_per_epoch: int, schedule: str = "epoch",
                   warmup_updates: int | None = None) -> tuple[int, int, int]:
    """(warm-up, decay, total) scheduler steps: epochs for the handed-out "epoch" schedule
    (int(0.15 x epochs) warm-up, int(0.85 x epochs) decay), updates for "update" (15% of
    them, or `warmup_updates`, warm up; the rest decay)."""
    if schedule == "epoch":
        return int(0.15 * epochs), int(0.85 * epochs), epochs
    total = epochs * updates_per_epoch
    warmup = int(0.15 * total) if warmup_updates is None else warmup_updates
    return warmup, total - warmup, total


def make_scheduler(optimizer, epochs: int, updates_per_epoch: int = 1, schedule: str = "epoch",
                   warmup_updates: int | None = None):
    """The handed-out learning-rate shape: linear warm-up from 1e-2 x lr to lr, then linear
    decay to 1e-2 x lr, over the steps of schedule_steps (stepped once per epoch for
    "epoch", after every update for "update")."""
    warmup, decay, _ = schedule_steps(epochs, updates_per_epoch, schedule, warmup_updates)
    phases = [torch.optim.lr_scheduler.LinearLR(optimizer, 1.0, 1e-2, total_iters=decay)]
    if warmup == 0:
        return phases[0]
    return torch.optim.lr_scheduler.SequentialLR(optimizer, [
        torch.optim.lr_scheduler.LinearLR(optimizer, 1e-2, 1.0, total_iters=warmup), *phases],
        milestones=[warmup])


def schedule_warning(epochs: int, updates_per_epoch: int, schedule: str = "epoch",
                     warmup_updates: int | None = None) -> str | None:
    """What is off, in numbers, with a schedule that has no warm-up though the handed-out
    shape has one, or never leaves its warm-up; None for a schedule that warms up and decays."""
    warmup, _, total = schedule_steps(epochs, updates_per_epoch, schedule, warmup_updates)
    if schedule == "epoch" and warmup == 0:
        return (f"-schedule epoch with -epochs {epochs}: int(0.15 x {epochs}) = 0 warm-up "
                "epochs, so no warm-up at all (training starts at the peak learning rate; "
                "7 epochs or more warm up)")
    if schedule == "update" and warmup_updates is None and warmup == 0:
        return (f"-schedule update over {total} updates: int(0.15 x {total}) = 0 warm-up "
                "updates, so no warm-up at all (training starts at the peak learning rate)")
    if schedule == "update" and warmup >= total:
        return (f"-warmup_updates {warmup} >= the run's {total} updates (-epochs {epochs} x "
                f"{updates_per_epoch} per epoch): the learning rate never leaves its warm-up "
                "(it never reaches the peak and never decays)")
    return None


def teacher_forced_loss(logits: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the logits (B, 35, T-1) for text[:, :-1] against text[:, 1:] (label
    smoothing 0.1, padding positions included, as handed out)."""
    return F.cross_entropy(logits.float(), text[:, 1:], label_smoothing=0.1)


def autocast(options: Options):
    """bf16 autocast with -amp, else a no-op context."""
    return torch.autocast(torch.device(options.device).type, dtype=torch.bfloat16,
                          enabled=options.amp)


def model_batch(bank: FeatureBank, indices, options: Options):
    """Audio (B, 80, T), tokens (B, 99) and the lengths (B,) the model masks with: with -fast,
    padded to the batch's longest clip and masked; else padded to the handed-out AUDIO_TIME
    frames, lengths None (no masks, as handed out)."""
    audio, text, lengths = bank.batch(indices, None if options.fast else AUDIO_TIME)
    return audio, text, lengths if options.fast else None


def train_step(model: SpeechToText, bank: FeatureBank, indices, optimizer, options: Options,
               augmentation: Augmentation = Augmentation(),
               generator: torch.Generator | None = None) -> torch.Tensor:
    """One update on the clips at `indices`, augmented as asked (draws from `generator`);
    returns the loss (not synchronised)."""
    audio, text, lengths = model_batch(bank, indices, options)
    if augmentation.enabled:
        audio, lengths = augment(audio, lengths, augmentation, generator)
    with autocast(options):
        logits = model(audio, text[:, :-1], lengths)
    loss = teacher_forced_loss(logits, text)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach()


# Flags that change what a run computes: -resume and -analysis_only accept only a checkpoint
# of the same values, trained on a corpus of the same content (LJSpeech.digest).
RUN_IDENTITY = ("decoder", "epochs", "lr", "batch_size", "eval_batch_size", "encoder_layers",
                "statement_norm", "train_clips", "eval_clips", "fast", "schedule",
                "warmup_updates", "curriculum", "eval_every", "amp", "seed", "speed_perturb",
                "vtlp", "freq_masks", "time_masks", "reverb", "utterance_norm", "dynamic_range",
                "lifter")
# Flags added after checkpoints were committed, with the value those checkpoints were trained at.
ADDED_LATER = {"utterance_norm": False, "reverb": 0.0, "dynamic_range": None, "lifter": None}


def run_identity(args: argparse.Namespace, corpus: LJSpeech) -> dict:
    return {**{name: getattr(args, name) for name in RUN_IDENTITY},
            "corpus_sha256": corpus.digest()}


def checkpoint_path(args: argparse.Namespace) -> Path:
    folder = Path(args.checkpoint_dir) if args.checkpoint_dir else \
        Path(args.out_dir or ".") / "checkpoints" / "q3"
    return folder / f"{run_name(args)}-seed{args.seed}.pt"


def train(args: argparse.Namespace, options: Options, corpus: LJSpeech, bank: FeatureBank,
          validation: FeatureBank) -> tuple[SpeechToText, dict]:
    """Train (or, with -resume, continue) on `bank`, validating at the end of every epoch and
    every -eval_every updates: the model and {history, seconds, updates, updates_per_epoch}."""
    batches = ClipBatches(bank.lengths, args.batch_size, args.seed, group=args.fast,
                          curriculum=args.curriculum)
    per_epoch, total = len(batches), len(batches) * args.epochs
    model = build_model(args.decoder, args.encoder_layers, args.statement_norm)
    model = model.to(options.device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr)
    scheduler = make_scheduler(optimizer, args.epochs, per_epoch, args.schedule,
                               args.warmup_updates)
    warning = schedule_warning(args.epochs, per_epoch, args.schedule, args.warmup_updates)
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
    augmentation = Augmentation(args.speed_perturb, args.vtlp, args.freq_masks,
                                time_masks=args.time_masks, reverb=args.reverb)
    checkpoint = Checkpoint(checkpoint_path(args), run_identity(args, corpus), args.resume,
                            ADDED_LATER)
    state = resume(checkpoint, model, optimizer, scheduler)
    model.train()
    losses, timer = [], Timer()  # timer.lap(): training + validation time
    bar = tqdm(total=total, initial=state["update"], disable=not options.progress, desc="train",
               unit="update")
    while state["update"] < total:
        epoch, step = divmod(state["update"], per_epoch)
        for indices in batches.epoch(epoch)[step:]:
            lr = optimizer.param_groups[0]["lr"]
            draws = torch.Generator().manual_seed(args.seed * 1_000_003 + state["update"])
            losses.append(train_step(model, bank, indices, optimizer, options, augmentation,
                                     draws))
            state["update"] += 1
            bar.update()
            end_of_epoch = state["update"] % per_epoch == 0
            if args.schedule == "update" or end_of_epoch:
                scheduler.step()
            if end_of_epoch or (args.eval_every and state["update"] % args.eval_every == 0):
                record = {"update": state["update"], "epoch": state["update"] / per_epoch,
                          "clips_seen": state["update"] * args.batch_size, "lr": lr,
                          "train_loss": mean_loss(losses, state["update"], epoch)}
                state = validate(state, record, model, validation, options, timer)
                checkpoint.save({**state, "updates": total, "model": model.state_dict(),
                                 "optimizer": optimizer.state_dict(),
                                 "scheduler": scheduler.state_dict()})
                losses = []
    bar.close()
    return model, {"history": state["history"], "seconds": state["seconds"],
                   "updates": total, "updates_per_epoch": per_epoch}


def resume(checkpoint: Checkpoint, model: SpeechToText, optimizer, scheduler) -> dict:
    """A fresh run's {update, history, seconds}, or with -resume the checkpoint's, its model,
    optimiser and scheduler loaded (Checkpoint.load refuses another run's checkpoint)."""
    saved = checkpoint.load()
    if saved is None:
        return {"update": 0, "history": [], "seconds": 0.0}
    model.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    print(f"resuming after update {saved['update']} from {checkpoint.path}")
    return {key: saved[key] for key in ("update", "history", "seconds")}


def mean_loss(losses: list[torch.Tensor], update: int, epoch: int) -> float:
    """The mean training loss since the last validation; a diverged run stops here, before
    anything is checkpointed or written."""
    loss = float(torch.stack(losses).mean())
    if not np.isfinite(loss):
        raise fail(f"training diverged: loss {loss} at update {update} (epoch {epoch + 1}); "
                   "lower -learning_rate")
    return loss


def validate(state: dict, record: dict, model: SpeechToText, bank: FeatureBank,
             options: Options, timer: Timer) -> dict:
    """The state with one more history record: `record`, the validation metrics and the
    training time so far (validation included); prints it with two decoded examples."""
    metrics, pairs = evaluate(model, bank, TokenVectorizer(), options, "validation")
    seconds = state["seconds"] + timer.lap()
    record = {**record, "validation": metrics, "seconds": seconds}
    tqdm.write(f"[update {record['update']}, epoch {record['epoch']:.2f}] lr {record['lr']:.2e}"
               f"  train loss {record['train_loss']:.3f}  val loss {metrics['loss']:.3f}  d-l "
               f"{metrics['damerau-levenshtein_similarity']:.3f}  wer {metrics['wer']:.3f}  "
               f"cer {metrics['cer']:.3f}  ({seconds:.0f} s)")
    for target, pred in pairs[:2]:
        tqdm.write(f"  target: {target}\n  pred:   {pred}")
    return {**state, "seconds": seconds, "history": state["history"] + [record]}


# ---------------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------------
@torch.no_grad()
def evaluate(model: SpeechToText, bank: FeatureBank, vectorizer: TokenVectorizer,
             options: Options, desc: str = "eval") -> tuple[dict, list[tuple[str, str]]]:
    """Mean batch loss, mean similarities per clip, WER / CER, and every decoded (target,
    prediction) pair in corpus order. -fast evaluates batches of similar length (the same
    values with less padding)."""
    model.eval()
    if options.fast:
        batches = bank.batches_in_length_order(options.eval_batch_size)
    else:
        batches = list(torch.arange(len(bank)).split(options.eval_batch_size))
    sums, losses, pairs = dict.fromkeys(SIMILARITIES, 0.0), [], {}
    for indices in tqdm(batches, leave=False, disable=not options.progress, desc=desc):
        audio, text, lengths = model_batch(bank, indices, options)
        with autocast(options):
            latent, padding = model.encode(audio, lengths)
            logits = model.decode(text[:, :-1], latent, padding)
            generated = model.greedy(latent, padding, use_cache=options.fast,
                                     stop_token=STOP if options.fast else None)
        losses.append(teacher_forced_loss(logits, text))
        batch_sums, batch_pairs = string_scores(text.cpu(), generated.cpu(), vectorizer)
        sums = {k: sums[k] + batch_sums[k] for k in sums}
        pairs.update(zip(indices.tolist(), batch_pairs))
    pairs = [pairs[i] for i in range(len(bank))]
    metrics = {"loss": float(torch.stack(losses).mean()),
               **{k: v / len(pairs) for k, v in sums.items()}, **error_rates(pairs)}
    model.train()
    return metrics, pairs


# ---------------------------------------------------------------------------------------------
# Q3.1 / Q3.2: train, then test
# ---------------------------------------------------------------------------------------------
def train_and_test(args: argparse.Namespace, corpus: LJSpeech, out: cli.Outputs
                   ) -> SpeechToText:
    """Train (or resume), test, and write the results file, the test log and the figures."""
    wall = Timer()
    # the folders scored apart are read first: a bad clip there stops the run in seconds, not
    # after the training (their features are few: they stay in memory); before the seed, as
    # reading draws from the global generator
    apart = [(key, label, folder, folder_bank(folder, args, label))
             for key, label, folder in (("real_clips", "genuine", find_real_corpus(args, corpus)),
                                        ("heldout_clips", "held-out voice", heldout_corpus(args)))
             if folder is not None]
    configure_seed(args.seed)
    options = Options.from_args(args)
    bank = load_bank(corpus, corpus.split("train", args.train_clips), args, "train features")
    validation = load_bank(corpus, corpus.split("validation", args.eval_clips), args,
                           "validation features")
    model, trained = train(args, options, corpus, bank, validation)
    del bank
    test_bank = load_bank(corpus, corpus.split("test", args.eval_clips), args, "test features")
    vectorizer = TokenVectorizer()
    test, pairs = evaluate(model, test_bank, vectorizer, options, "test")
    results = {"history": trained["history"], "test": test, "test_examples": pairs[:10],
               "train_seconds": trained["seconds"], "updates": trained["updates"],
               "updates_per_epoch": trained["updates_per_epoch"],
               "device": device_name(options.device), "parameters": model.parameter_counts()}
    for key, label, folder, folder_features in apart:
        results[key], folder_pairs = score_folder(model, folder, folder_features, options, label)
        pairs = pairs + [(f"[{label}] " + t, p) for t, p in folder_pairs]
    results["test_log"] = write_test_log(run_name(args), pairs, out.results)
    print("test: " + json.dumps({k: round(v, 4) for k, v in test.items()}))
    seconds = wall.lap()
    path = write_results(run_name(args), results, config=vars(args), seed=args.seed,
                         data=corpus_record(corpus), wall_time_s=seconds,
                         results_dir=out.results)
    figures.plot_q3_history(run_name(args), args.decoder, results["history"], out.plots)
    plot_both_decoders(args, out)
    print(f"wrote {path} ({seconds:.0f} s)")
    return model


def folder_bank(folder: LJSpeech, args: argparse.Namespace, label: str) -> FeatureBank:
    """The features of every clip with audio of a folder scored apart from the test split."""
    return load_bank(folder, folder.clips_with_audio(), args, label)


def score_folder(model: SpeechToText, folder: LJSpeech, bank: FeatureBank, options: Options,
                 label: str) -> tuple[dict, list[tuple[str, str]]]:
    """A folder scored apart from the test split: its metrics, a bootstrap interval of its CER
    (few clips), the first examples, and all its pairs."""
    metrics, pairs = evaluate(model, bank, TokenVectorizer(), options, label)
    return {"root": str(folder.root), "clips": len(bank), "metrics": metrics,
            "cer_95ci": bootstrap_cer(pairs), "examples": pairs[:10]}, pairs


def device_name(device: str) -> str:
    if torch.device(device).type == "cuda":
        return torch.cuda.get_device_name(torch.device(device))
    return f"cpu ({torch.get_num_threads()} threads)"


def plot_both_decoders(args: argparse.Namespace, out: cli.Outputs) -> None:
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


# ---------------------------------------------------------------------------------------------
# Q3.3 / Q3.4 analysis: how each decoder reads the audio and the text so far; what each
# similarity counts
# ---------------------------------------------------------------------------------------------
ANALYSIS_CLIPS = 32


def restore_model(args: argparse.Namespace, corpus: LJSpeech) -> SpeechToText:
    """The model of the finished run's checkpoint, if it is the run the flags describe."""
    path = checkpoint_path(args)
    saved = read_checkpoint(path)
    check_identity(path, saved.get("identity"), run_identity(args, corpus), "-analysis_only",
                   ADDED_LATER)
    if saved["update"] < saved["updates"]:
        raise fail(f"-analysis_only: {path} is an unfinished run (update {saved['update']} of "
                   f"{saved['updates']}); finish it with -resume first")
    model = build_model(args.decoder, args.encoder_layers, args.statement_norm)
    model.load_state_dict(saved["model"])
    return model.to(args.device)


@torch.no_grad()
def analysis(model: SpeechToText, corpus: LJSpeech, args: argparse.Namespace,
             out: cli.Outputs) -> dict:
    """Decode the first ANALYSIS_CLIPS test clips greedily, take the decoder's attention while
    it re-reads its own transcript (heads averaged), summarise it, draw and keep the shortest
    clip's maps; take the three similarities of that clip apart (Q3.4's worked example); on a
    synthetic corpus, break the run's test CER down by synthesiser."""
    bank = load_bank(corpus, corpus.split("test", ANALYSIS_CLIPS), args, "analysis features")
    audio, text, lengths = model_batch(bank, torch.arange(len(bank)), Options.from_args(args))
    model.eval()
    latent, padding = model.encode(audio, lengths)
    tokens = model.greedy(latent, padding, use_cache=True)
    _, weights = model.decode(tokens[:, :-1], latent, padding, return_attention=True)
    maps = {kind: w.mean(dim=1).cpu() for kind, w in weights.items()}  # (clips, T, keys)
    frames = ((bank.lengths + 1) // 2).tolist()  # encoder frames that hold the clip (no padding)
    rows, shortest = tokens.tolist(), int(np.argmin(frames))
    figures.plot_attention(run_name(args), args.decoder, maps, rows[shortest], frames[shortest],
                           shortest, out.plots)
    attention = {**attention_summary(maps, rows, frames),
                 "example_clip": bank.clips[shortest].id,
                 "example_maps": example_maps(maps, rows[shortest], frames[shortest], shortest)}
    summary = {"attention": attention,
               "similarities": similarity_anatomy(text.tolist(), rows, shortest)}
    test_log = test_log_path(out.results, run_name(args))
    if is_tts(corpus) and test_log.exists():
        summary["test_by_engine"] = engine_breakdown(
            corpus, corpus.split("test", args.eval_clips), test_log)
    elif is_tts(corpus):  # -analysis_only into another -out_dir than the training's
        print(f"no test log {test_log}: the test CER per synthesiser is left out")
    return summary


def engine_breakdown(corpus: LJSpeech, clips: list[Clip],
                     test_log: Path) -> dict[str, dict[str, float]]:
    """WER and CER of the test split per synthesiser, from the run's test log (whose first
    pairs are `clips`, in order): the test split mixes voices, so its one CER hides which voice
    the models transcribe worst, and it cannot be compared with the CER of a corpus whose test
    split has other voices."""
    pairs, vectorizer = read_test_log(test_log)[:len(clips)], TokenVectorizer()
    rows = [vectorizer(clip.normalized).tolist() for clip in clips]
    logged = [vectorizer.decode(row[1:first_stop(row)]) for row in rows]  # cut as logged
    if [target for target, _ in pairs] != logged:
        raise fail(f"{test_log} does not hold this corpus's test split: run the training again")
    by_engine = defaultdict(list)
    for engine, pair in zip(clip_engines(corpus, clips), pairs):
        by_engine[engine].append(pair)
    return {name: {"clips": len(group), **error_rates(group)}
            for name, group in sorted(by_engine.items())}


def attention_summary(maps: dict[str, torch.Tensor], rows: list[list[int]],
                      frames: list[int]) -> dict:
    """Cross-attention: the encoder frame each written character attends to most and how well
    that peak follows the character's position (Pearson r; near 1 = the decoder reads the audio
    left to right). Self-attention (attention decoder): how many characters back it looks."""
    correlations, lookbacks = [], []
    for i, row in enumerate(rows):
        n = first_stop(row)  # query positions 0..n-1 write the characters 1..n
        peaks = maps["cross"][i, :n, :frames[i]].argmax(dim=-1).float()
        if n >= 3 and peaks.std() > 0:
            correlations.append(float(np.corrcoef(np.arange(n), peaks.numpy())[0, 1]))
        if "self" in maps:
            distance = torch.arange(n)[:, None] - torch.arange(n)[None, :]
            lookbacks.append(float((maps["self"][i, :n, :n] * distance.clamp(min=0)).sum() / n))
    summary = {"clips": len(rows), "cross_peak_position_correlation_mean":
               float(np.mean(correlations)) if correlations else None,
               "clips_with_a_correlation": len(correlations)}
    if lookbacks:
        summary["self_mean_lookback_characters"] = float(np.mean(lookbacks))
    return summary


def example_maps(maps: dict[str, torch.Tensor], row: list[int], frames: int,
                 index: int) -> dict:
    """Clip `index`'s characters and its heads-averaged maps, rounded to 4 decimals: 'cross'
    (characters x frames) and 'self' (characters x characters), the numbers plot_attention
    draws, kept in the results so that the figure can be redrawn from them."""
    n = first_stop(row)
    example = {"characters": TokenVectorizer().decode(row[1:n + 1])}
    for kind, weights in maps.items():
        weights = weights[index, :n, :frames if kind == "cross" else n]
        example[kind] = [[round(value, 4) for value in line] for line in weights.tolist()]
    return example


def write_analysis(model: SpeechToText, corpus: LJSpeech, args: argparse.Namespace,
                   out: cli.Outputs) -> None:
    with Timer() as wall:
        summary = analysis(model, corpus, args, out)
    path = write_results(f"{run_name(args)}-analysis", summary, config=vars(args),
                         seed=args.seed, data=corpus_record(corpus), wall_time_s=wall.seconds,
                         results_dir=out.results)
    print(f"wrote {path}")


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------
def run_name(args: argparse.Namespace, decoder: str | None = None) -> str:
    """q3-<decoder>, with -tag appended: the stem of every file a run writes."""
    return f"q3-{decoder or args.decoder}" + (f"-{args.tag}" if args.tag else "")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Question 3: LJ Speech ASR with the given transformer encoder and an LSTM "
                    "(Q3.1) or attention (Q3.2) decoder; losses, string similarities, WER/CER.")
    add_configuration_args(parser.add_argument_group(
        "handed-out configuration", "what is trained; the defaults are the handed-out ones"))
    add_augmentation_args(parser.add_argument_group(
        "augmentation", "of the training batches, drawn from the seed and the update, and "
                        "per-clip normalisation (all off by default, as handed out)"))
    add_speed_args(parser.add_argument_group(
        "speed", "-fast and -amp change the batches or the precision, the others nothing but "
                 "the time"))
    add_run_control_args(parser.add_argument_group(
        "run control", "which clips, resuming, analysis, folders; the flags every script takes"))
    outputs = parser.add_argument_group("outputs")
    outputs.add_argument("-tag", default="",
                         help="appended to the names of the results, figures and checkpoint "
                              "(e.g. gpu: q3-lstm-gpu.json)")
    outputs.add_argument("-no_progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    for flag in ("speed_perturb", "vtlp"):
        if getattr(args, flag) >= 0.5:
            parser.error(f"argument -{flag}: must lie in [0, 0.5) (got {getattr(args, flag)})")
    if args.dynamic_range is not None and args.dynamic_range > LOG_MEL_DECADES:
        parser.error(f"argument -dynamic_range: must lie in (0, {LOG_MEL_DECADES:g}], the "
                     f"features' own floor (got {args.dynamic_range:g})")
    if args.lifter is not None and args.lifter >= MelSettings.n_mels:
        parser.error(f"argument -lifter: must lie in [1, {MelSettings.n_mels}), fewer than the "
                     f"mel bins (got {args.lifter})")
    for flag, does in (("utterance_norm", "normalises"), ("lifter", "smooths")):
        if args.reverb and getattr(args, flag):
            parser.error(f"-reverb acts on the log-mel power, which -{flag} {does} before any "
                         "augmentation: use one or the other")
    if args.tag and not args.tag.replace("-", "").isalnum():
        parser.error(f"-tag must be letters, digits and '-' (got {args.tag!r})")
    return args


def add_configuration_args(group) -> None:
    group.add_argument("-decoder", choices=["lstm", "transformer"], required=True,
                       help="lstm: Q3.1, TextDecoderRecurrent; transformer: Q3.2, "
                            "TextDecoderTransformer")
    group.add_argument("-epochs", type=positive_int, default=15, help="default: %(default)s")
    group.add_argument("-learning_rate", dest="lr", metavar="RATE", type=positive_float,
                       default=1e-3, help="AdamW peak learning rate (default: %(default)s)")
    group.add_argument("-batch_size", type=positive_int, default=64, help="default: %(default)s")
    group.add_argument("-eval_batch_size", type=positive_int, default=16,
                       help="default: %(default)s")
    group.add_argument("-encoder_layers", type=positive_int, default=2,
                       help="encoder blocks (default 2 as in the handed-out config; the "
                            "statement's appendix says 4)")
    group.add_argument("-statement_norm", action="store_true",
                       help="residual sub-blocks as the statement's appendix writes them, "
                            "LN(x + Module(LN(x))) (default: the handed-out x + Module(LN(x)))")
    group.add_argument("-schedule", choices=["epoch", "update"], default="epoch",
                       help="epoch: the handed-out warm-up / decay stepped once per epoch "
                            "(15%% of the epochs warm up: none with 6 epochs or fewer); "
                            "update: the same shape stepped after every update")
    group.add_argument("-warmup_updates", type=non_negative_int, default=None,
                       help="with -schedule update: warm-up length (default: 15%% of the "
                            "updates)")
    group.add_argument("-curriculum", action="store_true",
                       help="with -fast: the first epoch goes from the shortest clips to the "
                            "longest")


def add_augmentation_args(group) -> None:
    group.add_argument("-speed_perturb", type=non_negative_float, default=0.0, metavar="S",
                       help="play each batch at a tempo drawn in [1 - S, 1 + S] (e.g. 0.1)")
    group.add_argument("-vtlp", type=non_negative_float, default=0.0, metavar="A",
                       help="vocal-tract-length perturbation: warp each batch's mel axis by a "
                            "factor drawn in [1 - A, 1 + A] (e.g. 0.1)")
    group.add_argument("-freq_masks", type=non_negative_int, default=0, metavar="N",
                       help=f"SpecAugment: N masks of up to {Augmentation.freq_width} mel bins "
                            "per clip")
    group.add_argument("-time_masks", type=non_negative_int, default=0, metavar="N",
                       help=f"SpecAugment: N masks of up to {Augmentation.time_width} frames "
                            "per clip")
    group.add_argument("-reverb", type=non_negative_float, default=0.0, metavar="R",
                       help="a room's reverberation on each batch: decay time (RT60) drawn in "
                            "[0, R] seconds, the tail {:g}-{:g} dB under the direct sound "
                            "(e.g. 0.5; not with -utterance_norm or -lifter)"
                            .format(*REVERB_DRR_DB))
    group.add_argument("-dynamic_range", type=positive_float, metavar="D",
                       help="floor each clip's log-mel D decades under its loudest value, "
                            f"training and evaluation alike (default: the handed-out "
                            f"{LOG_MEL_DECADES:g}; e.g. 6 silences the synthesisers' noise floor)")
    group.add_argument("-lifter", type=positive_int, metavar="K",
                       help="keep the first K cosine coefficients of each frame's log-mel "
                            "(cepstral liftering: the spectral envelope without the pitch "
                            "harmonics), training and evaluation alike (e.g. 13 of the 80, "
                            "as an MFCC front end keeps; not with -reverb)")
    group.add_argument("-utterance_norm", action="store_true",
                       help="normalise each mel bin of each clip to zero mean and unit "
                            "variance over the clip (training and evaluation alike)")


def add_speed_args(group) -> None:
    group.add_argument("-fast", action="store_true",
                       help="a preset of three parts: batches of clips of similar length; "
                            "each batch padded to its longest clip, with key-padding masks; "
                            "greedy decoding with a key/value cache that stops once every clip "
                            "has emitted the stop token (default: the handed-out shuffled "
                            f"batches padded to {AUDIO_TIME} frames, prefix recomputation, all "
                            "98 steps)")
    group.add_argument("-amp", action="store_true",
                       help="bf16 autocast for the model (default: float32); pays on CPUs with "
                            "native bf16 (AVX512-BF16, AMX) and for the handed-out padding on "
                            "GPUs")
    group.add_argument("-device", type=torch_device,
                       default="cuda" if torch.cuda.is_available() else "cpu",
                       help="default: %(default)s")
    group.add_argument("-workers", type=non_negative_int, default=2,
                       help="processes that compute the features (once; they are then held in "
                            "memory)")
    group.add_argument("-cache_dir", default="data/feature_cache",
                       help="log-mel feature cache (default: %(default)s)")


def add_run_control_args(group) -> None:
    group.add_argument("-train_clips", type=positive_int, default=None,
                       help="use only the first N training clips (smoke runs)")
    group.add_argument("-eval_clips", type=positive_int, default=None,
                       help="use only the first N validation and test clips")
    group.add_argument("-eval_every", type=non_negative_int, default=0,
                       help="also validate (and checkpoint) every N updates (default: at the end "
                            "of each epoch only)")
    group.add_argument("-resume", action="store_true",
                       help="continue from the last checkpoint (only a run of the same "
                            "configuration and corpus)")
    group.add_argument("-analysis_only", action="store_true",
                       help="skip training: load the finished run's checkpoint (same flags) and "
                            "redo only the Q3.3 attention maps and the Q3.4 similarity breakdown")
    group.add_argument("-checkpoint_dir", default=None,
                       help="default: checkpoints/q3 under -out_dir, else under the current "
                            "folder")
    group.add_argument("-real_dir", default=None,
                       help="LJ-layout folder of genuine recordings scored separately (default: "
                            "LJSpeech-1.1 in $HW2_DATA_DIR when it is not the training corpus)")
    group.add_argument("-heldout_dir", default=None,
                       help="LJ-layout folder of a voice kept out of training, scored "
                            "separately: what choices are made on, never the genuine clips")
    add_common_args(group, threads=True)


def main(argv=None) -> None:
    args = parse_args(argv)
    out = cli.apply_common_args(args)
    name = run_name(args)
    corpus = open_corpus(args)
    for stem in (name, f"{name}-analysis"):  # of other settings or data: only with -force
        check_replaceable(out.results, stem, vars(args), args.force,
                          {"corpus_sha256": corpus.digest()})
    checkpoint = checkpoint_path(args)
    out.ensure_writable()
    if args.analysis_only and not checkpoint.exists():
        raise fail(f"no checkpoint {checkpoint}: train first (without -analysis_only)")
    ensure_writable(checkpoint.parent, "-checkpoint_dir")
    with exclusive(checkpoint.with_suffix(".lock"), f"the {name} run"):
        if args.analysis_only:
            model = restore_model(args, corpus)
        else:
            model = train_and_test(args, corpus, out)
        write_analysis(model, corpus, args, out)


if __name__ == "__main__":
    main()
