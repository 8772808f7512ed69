#!/usr/bin/env python
"""Q3 speed, side by side in one run: training clips/s of each decoder on four paths (PATHS:
handed-out padding, -fast's masks, length-grouped batches, bf16) through hw2-q3.py's own
training step, and greedy decoding by prefix recomputation against the key/value cache (same
tokens). Writes report/results/q3-bench.json (report/engineering.md quotes it).

    python bench/q3_bench.py [-data_dir DIR] [-batch_size 16] [-batches 12] [-threads 1 2] [-amp]
"""
import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import utils  # noqa: E402
from hw2 import REPO_DIR, cli, results  # noqa: E402
from hw2 import asr_metrics as metrics  # noqa: E402
from hw2.asr_model import SpeechToText  # noqa: E402
from hw2.ljspeech import (ClipBatches, FeatureBank, FeatureCache, LJSpeech,  # noqa: E402
                          LogMel, SpeechDataset, TokenVectorizer)

q3 = utils.load_script("hw2-q3.py")
COMMITTED_THREADS = 1  # reproduce.sh trains the two decoders side by side, one thread each
COMMITTED_PATH = "fast_grouped_bf16"  # reproduce.sh's -fast -amp
# path: (grouped by length, -fast padding and masks, bf16 autocast)
PATHS = {"handed_out": (False, False, False), "fast": (False, True, False),
         "fast_grouped": (True, True, False), "fast_grouped_bf16": (True, True, True)}


def chosen_batches(lengths: torch.Tensor, batch_size: int, count: int, group: bool
                   ) -> list[torch.Tensor]:
    """`count` batches of epoch 0 as hw2-q3.py draws them; grouped ones spread evenly over
    the epoch's batches ordered by length (so short and long batches weigh as in an epoch)."""
    batches = ClipBatches(lengths, batch_size, seed=0, group=group).epoch(0)
    batches = [b for b in batches if len(b) == batch_size]
    if group:
        batches.sort(key=lambda b: int(lengths[b].max()))
        return [batches[round(i * (len(batches) - 1) / max(count - 1, 1))] for i in range(count)]
    return batches[:count]


def time_training(model, bank: FeatureBank, batches, fast: bool, amp: bool) -> float:
    """Seconds for one AdamW update per batch through hw2-q3.py's own training step (after
    one untimed warm-up update)."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    options = q3.Options(fast=fast, amp=amp, device=bank.device)
    q3.train_step(model, bank, batches[0], optimizer, options)
    synchronize(torch.device(bank.device))
    start = time.perf_counter()
    for indices in batches:
        q3.train_step(model, bank, indices, optimizer, options)
    synchronize(torch.device(bank.device))
    return time.perf_counter() - start


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def decoding(bank: FeatureBank, batch_size: int) -> dict:
    torch.manual_seed(0)
    model = SpeechToText("transformer").to(bank.device).eval()
    audio, _, lengths = bank.batch(torch.arange(batch_size), None)
    with torch.no_grad():
        latent, padding = model.encode(audio, lengths)
        start = time.perf_counter()
        prefix = model.greedy(latent, padding, use_cache=False).tolist()
        t_prefix = time.perf_counter() - start
        start = time.perf_counter()
        cached = model.greedy(latent, padding, use_cache=True, stop_token=metrics.STOP).tolist()
        t_cached = time.perf_counter() - start
    same = all(metrics.cut_at_stop([0, 1], p)[1] == metrics.cut_at_stop([0, 1], c)[1]
               for p, c in zip(prefix, cached))
    return {"prefix_recompute_s": t_prefix, "cached_with_stop_s": t_cached,
            "speed_up": t_prefix / t_cached, "identical_tokens": same}


def training_rates(decoder: str, bank: FeatureBank, picked: dict, args) -> dict:
    """Clips/s of `decoder` on each path (its batches in `picked`), per -threads count."""
    rates = {path: {} for path in PATHS}
    for threads in args.threads:
        torch.set_num_threads(threads)
        for path, (_, fast, amp) in PATHS.items():
            torch.manual_seed(0)
            model = SpeechToText(decoder).to(args.device)
            seconds = time_training(model, bank, picked[path], fast, amp or args.amp)
            rate = rates[path][f"{threads}_threads"] = args.batch_size * args.batches / seconds
            print(f"{decoder:12s} {path:17s} {threads} thread(s): {rate:7.2f} clips/s")
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-data_dir", default=None,
                        help=f"holds LJSpeech-1.1 (default: ${utils.DATA_DIR_ENV}, else ./data)")
    parser.add_argument("-cache_dir", default="data/feature_cache")
    parser.add_argument("-batch_size", type=cli.positive_int, default=16)
    parser.add_argument("-batches", type=cli.positive_int, default=12,
                        help="timed batches per path")
    parser.add_argument("-threads", type=cli.positive_int, nargs="+", default=[1, 2])
    parser.add_argument("-device", type=cli.torch_device, default="cpu")
    parser.add_argument("-amp", action="store_true",
                        help="bf16 autocast on every path (the report's GPU table)")
    parser.add_argument("-tag", default="", help="results name q3-bench-<tag>.json")
    parser.add_argument("-out_dir", default=None)
    parser.add_argument("-force", action="store_true", help=cli.FORCE_HELP)
    args = parser.parse_args()
    wall = results.Timer()
    out = cli.Outputs(Path(args.out_dir) if args.out_dir else REPO_DIR)
    results.check_replaceable(out.results, "q3-bench" + (f"-{args.tag}" if args.tag else ""),
                              vars(args), args.force)
    corpus = LJSpeech(utils.resolve_data_dir(args.data_dir) / "LJSpeech-1.1")
    train = corpus.split("train")
    if len(train) < args.batch_size * 4:
        raise cli.fail(f"{corpus.root}: too few training clips with audio ({len(train)})")
    lengths = torch.tensor([corpus.frames(clip) for clip in train])
    picked = {path: chosen_batches(lengths, args.batch_size, args.batches, group)
              for path, (group, _, _) in PATHS.items()}
    needed = sorted({int(i) for batches in picked.values() for b in batches for i in b})
    bank = FeatureBank(SpeechDataset(corpus, [train[i] for i in needed],
                                     FeatureCache(Path(args.cache_dir), LogMel()),
                                     TokenVectorizer()), workers=2, device=args.device,
                      desc="bench features")
    position = {clip: row for row, clip in enumerate(needed)}
    picked = {path: [torch.tensor([position[int(i)] for i in b]) for b in batches]
              for path, batches in picked.items()}
    print(f"torch {torch.__version__}; {len(train)} training clips, mean "
          f"{lengths.float().mean():.0f} frames (max {int(lengths.max())}); batch "
          f"{args.batch_size}, {args.batches} timed batches per path")
    training = {decoder: training_rates(decoder, bank, picked, args)
                for decoder in ("lstm", "transformer")}
    key = f"{COMMITTED_THREADS}_threads"
    speed_up = {d: r[COMMITTED_PATH][key] / r["handed_out"][key] for d, r in training.items()
                if key in r[COMMITTED_PATH]}
    for decoder, ratio in speed_up.items():
        print(f"{decoder}: committed configuration ({COMMITTED_PATH}, {COMMITTED_THREADS} "
              f"thread) {ratio:.2f}x the handed-out path")
    torch.set_num_threads(max(args.threads))
    decode = decoding(bank, args.batch_size)
    print(f"decoding: prefix {decode['prefix_recompute_s']:.2f} s, cached "
          f"{decode['cached_with_stop_s']:.2f} s ({decode['speed_up']:.2f}x), identical "
          f"tokens: {decode['identical_tokens']}")
    path = results.write_results("q3-bench" + (f"-{args.tag}" if args.tag else ""), {
        "training": training, "speed_up": speed_up, "committed_threads": COMMITTED_THREADS,
        "committed_path": COMMITTED_PATH,
        "decoding": decode, "device": q3.device_name(args.device)}, config=vars(args), seed=0,
        data={"corpus": corpus.describe(), "clips_timed": len(needed)}, wall_time_s=wall.lap(),
        results_dir=out.results)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
