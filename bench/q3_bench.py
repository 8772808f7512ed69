#!/usr/bin/env python
"""Q3 speed, side by side on the same batches: handed-out vs -fast.

1. Training clips/s: every clip padded to 2754 frames with no masks (handed-out) against
   per-batch padding with key-padding masks (-fast), same model and batches.
2. Greedy decoding of 98 tokens with the attention decoder: recomputing the whole prefix at
   every step (handed-out) against the key/value cache (-fast); the token sequences must be
   identical.
Clips are random log-mels whose lengths follow LJ Speech's (1-10 s, mean about 6.5 s, i.e.
about 900 frames at hop 160 on 22,050 Hz audio), so no data set is needed.

    python bench/q3_bench.py [-batch 16] [-steps 2] [-decode_batch 16]
"""
import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from ljspeech import AUDIO_TIME, pad_or_crop  # noqa: E402
from q3_model import SpeechToText  # noqa: E402

import importlib.util  # noqa: E402
spec = importlib.util.spec_from_file_location(
    "hw2_q3", Path(__file__).resolve().parents[1] / "hw2-q3.py")
q3 = importlib.util.module_from_spec(spec)
spec.loader.exec_module(q3)


def random_batch(n: int, generator: torch.Generator):
    seconds = (torch.rand(n, generator=generator) * 7 + 2.5).clamp(max=10)
    lengths = (seconds * 22050 / 160).long()
    clips = [torch.randn(80, int(l), generator=generator) for l in lengths]
    text = torch.randint(4, 35, (n, 99), generator=generator)
    text[:, 0], text[:, -1] = 0, 1
    return clips, text, lengths


def time_training(model, clips, text, lengths, fast: bool, steps: int) -> float:
    frames = int(lengths.max()) if fast else AUDIO_TIME
    audio = torch.stack([pad_or_crop(c, frames) for c in clips])
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    start = time.perf_counter()
    for _ in range(steps):
        optimizer.zero_grad()
        logits = model(audio, text[:, :-1], lengths if fast else None)
        q3.teacher_forced_loss(logits, text).backward()
        optimizer.step()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-batch", type=int, default=16)
    parser.add_argument("-steps", type=int, default=2)
    parser.add_argument("-decode_batch", type=int, default=16)
    args = parser.parse_args()
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = SpeechToText("transformer")
    clips, text, lengths = random_batch(args.batch, gen)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; batch {args.batch}, "
          f"mean clip {lengths.float().mean():.0f} frames (padded: {AUDIO_TIME} handed-out, "
          f"{int(lengths.max())} per batch)")
    time_training(model, clips, text, lengths, True, 1)  # warm-up
    slow = time_training(model, clips, text, lengths, False, args.steps)
    fast = time_training(model, clips, text, lengths, True, args.steps)
    clips_done = args.batch * args.steps
    print(f"training   handed-out {clips_done / slow:7.2f} clips/s   -fast "
          f"{clips_done / fast:7.2f} clips/s   speed-up {slow / fast:.2f}x")

    model.eval()
    clips, _, lengths = random_batch(args.decode_batch, gen)
    audio = torch.stack([pad_or_crop(c, int(lengths.max())) for c in clips])
    with torch.no_grad():
        start = time.perf_counter()
        model._enc(audio, lengths)
        t_encoder = time.perf_counter() - start  # paid once by both; reported apart
    start = time.perf_counter()
    prefix = model.generate(audio, lengths, use_cache=False)
    t_prefix = time.perf_counter() - start
    start = time.perf_counter()
    cached = model.generate(audio, lengths, use_cache=True)
    t_cached = time.perf_counter() - start
    d_prefix, d_cached = t_prefix - t_encoder, t_cached - t_encoder
    print(f"decoding   prefix recompute {t_prefix:6.2f} s   cached {t_cached:6.2f} s   "
          f"(encoder {t_encoder:.2f} s of each)\n"
          f"           decoder loop alone: {d_prefix:6.2f} s vs {d_cached:6.2f} s, speed-up "
          f"{d_prefix / d_cached:.2f}x (with the encoder {t_prefix / t_cached:.2f}x); "
          f"identical tokens: {torch.equal(prefix, cached)}")


if __name__ == "__main__":
    main()
