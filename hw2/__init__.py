"""What the homework's scripts import: data, models, metrics, checkpoints, results files.

One module per role; no module imports a script (hw2-q*.py, download_*.py).
"""
from pathlib import Path

REPO_DIR = Path(__file__).resolve().parents[1]
