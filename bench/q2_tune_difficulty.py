#!/usr/bin/env python
"""Tune the synthetic OCTMNIST's difficulty: for each severity power, write the stand-in and
train the Q2.1 network (15 epochs, batch 8, SGD) at the given learning rates side by side,
printing validation and test accuracy. Used to pick octgen.SEVERITY_POWER; on a GPU
(-device cuda) one setting takes a few minutes.

    python bench/q2_tune_difficulty.py -powers 1.6 2.4 -device cuda
"""
import argparse
import importlib.util
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
import octgen  # noqa: E402
from download_octmnist import write_synthetic  # noqa: E402

spec = importlib.util.spec_from_file_location("hw2_q2", REPO / "hw2-q2.py")
q2 = importlib.util.module_from_spec(spec)
spec.loader.exec_module(q2)

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-powers", type=float, nargs="+", default=[octgen.SEVERITY_POWER])
    parser.add_argument("-learning_rates", type=float, nargs="+", default=[0.1, 0.01])
    parser.add_argument("-epochs", type=int, default=15)
    parser.add_argument("-device", default="cpu")
    args = parser.parse_args()
    for power in args.powers:
        with tempfile.TemporaryDirectory() as tmp:
            write_synthetic(Path(tmp) / "octmnist.npz", 42, severity_power=power)
            print(f"== severity power {power}", flush=True)
            run_args = q2.parse_args(["-data_dir", tmp, "-epochs", str(args.epochs), "-device",
                                      args.device, "-no_progress", "-out_dir", str(Path(tmp))])
            q2.utils.set_output_root(tmp)
            splits, info = q2.load_splits(tmp, None)
            splits = {k: tuple(t.to(args.device) for t in v) for k, v in splits.items()}
            for run in q2.train_runs(args.learning_rates, False, run_args, splits, None,
                                     info):
                print(f"power {power} lr {run['learning_rate']}: val {run['val_acc'][-1]:.4f} "
                      f"test(529) {run['test_acc']:.4f} test(1000) {run['test_acc_full']:.4f}",
                      flush=True)


if __name__ == "__main__":
    main()
