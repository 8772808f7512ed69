#!/usr/bin/env python
"""Q3 data throughput: clips/s through the loader with the feature cache empty (every clip
read and transformed) and full (features read back from disk), on the same clips.

    python bench/q3_data_bench.py -data_dir data [-clips 2000] [-workers 0] [-cache_dir DIR]

With -cache_dir pointing at the training cache (data/feature_cache) the first pass also
builds it for the clips measured; by default a temporary cache is used and removed.
"""
import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import utils  # noqa: E402
from ljspeech import (FeatureCache, LJSpeech, LogMel, PadCollate, SpeechDataset,  # noqa: E402
                      TokenVectorizer)


def one_pass(dataset, workers: int) -> float:
    loader = torch.utils.data.DataLoader(dataset, batch_size=16, num_workers=workers,
                                         collate_fn=PadCollate(None))
    start = time.perf_counter()
    for _ in loader:
        pass
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-data_dir", default=None)
    parser.add_argument("-clips", type=int, default=None, help="first N clips with audio")
    parser.add_argument("-workers", type=int, default=0)
    parser.add_argument("-cache_dir", default=None)
    args = parser.parse_args()
    corpus = LJSpeech(utils.resolve_data_dir(args.data_dir) / "LJSpeech-1.1")
    clips = [c for c, ok in zip(corpus.clips, corpus.has_audio) if ok][:args.clips]
    with tempfile.TemporaryDirectory() as tmp:
        cache = FeatureCache(Path(args.cache_dir or tmp), LogMel())
        dataset = SpeechDataset(corpus, clips, cache, TokenVectorizer())
        uncached = one_pass(dataset, args.workers)
        cached = one_pass(dataset, args.workers)
    print(f"{len(clips)} clips, {args.workers} workers, {torch.get_num_threads()} threads: "
          f"uncached {len(clips) / uncached:.1f} clips/s ({uncached:.1f} s), cached "
          f"{len(clips) / cached:.1f} clips/s ({cached:.1f} s), ratio {uncached / cached:.1f}x")


if __name__ == "__main__":
    main()
