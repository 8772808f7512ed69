#!/usr/bin/env bash
# Regenerate every results file, figure and the report (run times on 2 CPU cores in README).
# Offline, put the data folder in HW2_DATA_DIR (e.g. ../shared/data); written data go to ./data.
set -euo pipefail
cd "$(dirname "$0")"
python hw2-q1.py
[ -f data/octmnist.npz ] || python download_octmnist.py -data_dir data \
  || python download_octmnist.py -data_dir data --synthetic
python hw2-q2.py -data_dir data -sweep -resume -threads 1
python report/build.py
