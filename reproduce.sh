#!/usr/bin/env bash
# Regenerate every results file, figure and the report (see README for run times).
set -euo pipefail
cd "$(dirname "$0")"
python hw2-q1.py
python report/build.py
