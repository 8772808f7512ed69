#!/usr/bin/env bash
# Regenerate every results file, figure and the report (run times on 2 CPU cores in README).
# Offline, put the data folder in HW2_DATA_DIR (e.g. ../shared/data); written data go to ./data.
set -euo pipefail
cd "$(dirname "$0")"
python hw2-q1.py
[ -f data/octmnist.npz ] || python download_octmnist.py -data_dir data \
  || python download_octmnist.py -data_dir data --synthetic
python hw2-q2.py -data_dir data -sweep -resume -jobs 2
python bench/q2_bench.py  # the loop's speed-up and agreement, quoted in the report
# Q3: the real corpus, else the offline synthetic one (needs espeak-ng and flite); the genuine
# recordings in $HW2_DATA_DIR/LJSpeech-1.1, if any, are scored apart
[ -f data/LJSpeech-1.1/metadata.csv ] || python download_ljspeech.py -data_dir data \
  || python download_ljspeech.py -data_dir data --tts
# both decoders at once, one thread each: the 2-hour CPU budget of the committed runs
for decoder in lstm transformer; do
  python hw2-q3.py -decoder "$decoder" -fast -batch_size 16 -train_clips 800 -data_dir data \
    -threads 1 -workers 0 -resume -no_progress &
done
wait -n && wait -n
python report/build.py
