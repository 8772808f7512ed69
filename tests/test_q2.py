import json
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from hw2 import checkpoints, cli, octmnist, side_by_side, synthetic_oct
from conftest import REPO, load_script, shared_file

q2 = load_script("hw2-q2.py")
dl = load_script("download_octmnist.py")
bench = load_script("bench/q2_bench.py")

SMALL_COUNTS = {"train": (60, 30, 30, 80), "val": (20, 10, 10, 20), "test": (250, 250, 250, 250)}


@pytest.fixture
def small_synthetic(tmp_path, monkeypatch):
    """A small stand-in (full test split, so the 529-image subset exists) in tmp_path."""
    monkeypatch.setattr(synthetic_oct, "SPLIT_COUNTS", SMALL_COUNTS)
    dl.write_synthetic(tmp_path / "octmnist.npz", seed=0)
    return tmp_path


@pytest.mark.parametrize("no_maxpool", [False, True])
def test_cnn_shapes_and_parameter_counts(no_maxpool):
    model = q2.CNN(0.7, no_maxpool=no_maxpool)
    out = model(torch.rand(5, 784))
    assert out.shape == (5, 4)
    torch.testing.assert_close(out.exp().sum(1), torch.ones(5))
    assert q2.get_number_trainable_params(model) == 224_892
    assert q2.params_per_layer(model) == {"conv1": 80, "conv2": 1168, "fc1": 184_640,
                                          "fc2": 38_520, "fc3": 484}


@pytest.mark.parametrize("no_maxpool,sizes", [(False, [(8, 28, 28), (16, 12, 12)]),
                                              (True, [(8, 14, 14), (16, 6, 6)])])
def test_spatial_sizes_after_each_convolution(no_maxpool, sizes):
    model = q2.CNN(0.7, no_maxpool=no_maxpool)
    seen = []
    for layer in (model.conv1, model.conv2):
        layer.register_forward_hook(lambda m, i, o: seen.append(tuple(o.shape[1:])))
    model(torch.rand(2, 784))
    assert seen == sizes  # after the pools (or stride 2) both give 16 x 6 x 6 = fc1's 576 inputs


@pytest.mark.parametrize("no_maxpool", [False, True])
def test_side_by_side_cnn_equals_each_cnn_including_dropout(no_maxpool):
    torch.manual_seed(0)
    models = [q2.CNN(0.7, no_maxpool=no_maxpool) for _ in range(3)]
    copies = side_by_side.SideBySideCNN(models)
    x = torch.rand(6, 784)
    for train in (False, True):
        copies.train(train)
        torch.manual_seed(1)
        out = copies(x)
        after = torch.rand(1)
        for r, model in enumerate(models):
            model.train(train)
            torch.manual_seed(1)  # same RNG state: same dropout mask, same draws consumed
            torch.testing.assert_close(out[r], model(x), rtol=1e-5, atol=1e-5)
            assert torch.equal(torch.rand(1), after)
    for r, model in enumerate(models):
        state = copies.copy_state_dict(r)
        assert state.keys() == model.state_dict().keys()
        assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("no_maxpool", [False, True])
def test_side_by_side_autograd_gradients_equal_cnn_gradients_with_ties_in_the_pools(no_maxpool):
    """forward_pass is differentiable and matches each CNN's gradients (sgd_step's written-out
    backward pass is checked against torch.optim.SGD below)."""
    torch.manual_seed(0)
    model = q2.CNN(0.7, no_maxpool=no_maxpool).eval()
    copies = side_by_side.SideBySideCNN([model]).eval()
    x = torch.rand(8, 784)
    x[:, :300] = 0  # a blank wedge: equal activations inside many pooling windows
    y = torch.arange(8) % 4
    torch.nn.functional.nll_loss(model(x), y).backward()
    torch.nn.functional.nll_loss(copies(x)[0], y).backward()
    for name, p in model.named_parameters():
        grad = side_by_side.stacked_layout(name, getattr(copies, name.replace(".", "_")).grad[0])
        torch.testing.assert_close(grad, p.grad, rtol=1e-5, atol=1e-7)


def test_index_loader_draws_the_handed_out_loaders_batches():
    """The side-by-side loop's DataLoader over indices and the handed-out DataLoader over the
    images: the same batches, and the global RNG left in the same state (dropout's draws)."""
    x, y = torch.rand(50, 784), torch.arange(50) % 4
    torch.manual_seed(7)
    handed_out = list(DataLoader(TensorDataset(x, y), batch_size=8, shuffle=True))
    after = torch.rand(3)
    torch.manual_seed(7)
    indices = list(DataLoader(range(50), batch_size=8, shuffle=True))
    assert torch.equal(torch.rand(3), after)
    assert [len(i) for i in indices] == [8] * 6 + [2]
    for (xb, yb), i in zip(handed_out, indices, strict=True):
        assert torch.equal(xb, x[i]) and torch.equal(yb, y[i])


def test_side_by_side_and_one_run_match_the_handed_out_loop():
    splits = {"train": bench.synthetic_split(96, 1), "dev": bench.synthetic_split(40, 2)}
    lrs = [0.1, 0.01]
    models, losses = bench.repo_runs(lrs, splits, epochs=2, seed=5)
    assert losses.shape == (2, 24)
    for r, lr in enumerate(lrs):
        drift = bench.drift(models, losses, r, bench.handed_out_run(lr, splits, epochs=2, seed=5))
        assert drift["max_loss_diff"] < 1e-5 and drift["max_weight_diff"] < 1e-5
    one, one_losses = bench.repo_runs([0.01], splits, epochs=2, seed=5)
    reference = bench.handed_out_run(0.01, splits, epochs=2, seed=5)
    assert bench.drift(one, one_losses, 0, reference) == {"max_weight_diff": 0.0,
                                                         "max_loss_diff": 0.0}


def test_bench_times_every_way_and_reports_the_agreement(tmp_path):
    """The bench end to end on a few steps: every way timed, the side-by-side runs within
    float rounding of the handed-out ones, the results file written."""
    subprocess.run([sys.executable, str(REPO / "bench" / "q2_bench.py"), "-train", "48", "-val",
                    "16", "-epochs", "1", "-repeats", "2", "-out_dir", str(tmp_path)],
                   check=True, capture_output=True)
    results = json.loads((tmp_path / "report" / "results" / "q2-bench.json").read_text())
    speed_up = results["results"]["speed_up"]
    assert set(speed_up["both"]) == {"handed_out", "one_run", "side_by_side", "two_processes"}
    assert all(v > 0 for d in speed_up.values() for v in d.values())
    for agreement in results["results"]["agreement"].values():
        assert agreement["agreement_one_run_lr_0_01"]["max_weight_diff"] == 0.0
        assert max(d["max_loss_diff"] for d in agreement["agreement_side_by_side"]) < 1e-5


def _cnns_with_torch_sgd(no_maxpool, lrs, weight_decay):
    """One CNN per learning rate, all with the same initial weights, each with torch's SGD."""
    torch.manual_seed(0)
    models = [q2.CNN(0.7, no_maxpool=no_maxpool) for _ in lrs]
    for model in models[1:]:
        model.load_state_dict(models[0].state_dict())
    return models, [torch.optim.SGD(m.parameters(), lr=lr, weight_decay=weight_decay)
                    for m, lr in zip(models, lrs)]


@pytest.mark.parametrize("no_maxpool", [False, True])
@pytest.mark.parametrize("weight_decay", [0.0, 0.5])
def test_side_by_side_step_makes_the_updates_of_torch_sgd_on_each_cnn(no_maxpool, weight_decay):
    """sgd_step's written-out backward pass and update against autograd and torch.optim.SGD
    on each CNN, with dropout on, ties in the pooling windows, a strong weight decay and a
    short last batch (as OCTMNIST's 97,477 training images end with 5)."""
    lrs = [0.1, 0.01, 0.001]
    models, optimizers = _cnns_with_torch_sgd(no_maxpool, lrs, weight_decay)
    copies = side_by_side.SideBySideCNN(models)
    x = torch.rand(29, 784)
    x[:, :300] = 0  # a blank wedge: equal activations inside many pooling windows
    y = torch.arange(29) % 4
    for step in range(4):
        xb, yb = x[8 * step:8 * (step + 1)], y[8 * step:8 * (step + 1)]
        expected = []
        for model, opt in zip(models, optimizers):
            torch.manual_seed(step)  # the same dropout mask for every run
            expected.append(q2.train_batch(xb, yb, model, opt, torch.nn.NLLLoss()))
        torch.manual_seed(step)
        losses = copies.sgd_step(xb, yb, torch.tensor(lrs), weight_decay)
        torch.testing.assert_close(losses, torch.tensor(expected), rtol=1e-5, atol=1e-6)
    for r, model in enumerate(models):
        for name, theirs in model.state_dict().items():
            torch.testing.assert_close(copies.copy_state_dict(r)[name], theirs, rtol=1e-5,
                                       atol=1e-6)


def test_sweep_trains_sgd_rates_side_by_side_and_adam_rates_one_by_one():
    sgd = q2.parse_args(["-sweep"])
    assert q2.sweep_groups(sgd) == [([0.1, 0.01, 0.001], False), ([0.1, 0.01, 0.001], True)]
    adam = q2.parse_args(["-sweep", "-optimizer", "adam", "-learning_rates", "0.1", "0.01"])
    assert q2.sweep_groups(adam) == [([0.1], False), ([0.01], False), ([0.1], True),
                                     ([0.01], True)]


def test_render_is_deterministic_and_in_range():
    labels = np.arange(8, dtype=np.uint8) % 4
    a = synthetic_oct.render(labels, np.random.default_rng(1))
    b = synthetic_oct.render(labels, np.random.default_rng(1))
    assert a.dtype == np.uint8 and a.shape == (8, 28, 28) and np.array_equal(a, b)
    assert not np.array_equal(a, synthetic_oct.render(labels, np.random.default_rng(2)))


def test_make_dataset_same_for_any_number_of_processes(monkeypatch):
    monkeypatch.setattr(synthetic_oct, "SPLIT_COUNTS", {"train": (3000, 1000, 500, 4000),
                                                 "val": (5, 5, 5, 5), "test": (2, 2, 2, 2)})
    one = synthetic_oct.make_dataset(9, processes=1)
    two = synthetic_oct.make_dataset(9, processes=2)
    assert sorted(one) == sorted(two) == sorted(f"{s}_{k}" for s in ("train", "val", "test")
                                                for k in ("images", "labels"))
    assert all(np.array_equal(one[k], two[k]) for k in one)
    assert np.bincount(one["train_labels"].ravel()).tolist() == [3000, 1000, 500, 4000]


def test_synthetic_file_has_octmnist_schema_counts_and_mark(tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "download_octmnist.py"), "-synthetic",
                           "-data_dir", str(tmp_path), "-out_dir", str(tmp_path / "out")],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    drawn = (tmp_path / "out" / "plots" / "q2-real-vs-synthetic.png").exists()
    assert drawn == (octmnist.find_real_check(None, tmp_path) is not None)
    path = tmp_path / "octmnist.npz"
    with np.load(path) as data:
        assert sorted(data.files) == sorted(f"{s}_{k}" for s in ("train", "val", "test")
                                            for k in ("images", "labels"))
        for split, counts in synthetic_oct.SPLIT_COUNTS.items():
            images, labels = data[f"{split}_images"], data[f"{split}_labels"]
            assert images.dtype == np.uint8 and images.shape == (sum(counts), 28, 28)
            assert labels.dtype == np.uint8 and labels.shape == (sum(counts), 1)
            assert np.bincount(labels.ravel(), minlength=4).tolist() == list(counts)
    assert octmnist.read(path).describe()["synthetic"] is True
    assert "NOT the real OCTMNIST" in zipfile.ZipFile(path).comment.decode()


def _run_download(*args):
    return subprocess.run([sys.executable, str(REPO / "download_octmnist.py"), *map(str, args)],
                          capture_output=True, text=True)


def test_source_rejects_corrupt_file(tmp_path):
    bad = tmp_path / "octmnist.npz"
    bad.write_bytes(b"not a zip file at all")
    proc = _run_download("-source", bad, "-data_dir", tmp_path / "out")
    assert proc.returncode == 1 and "not a readable .npz" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


@pytest.mark.parametrize("change,message", [
    (lambda a: a.pop("val_labels"), "missing key val_labels"),
    (lambda a: a.update(train_images=a["train_images"].astype(np.float32)), "must be uint8"),
    (lambda a: a.update(test_labels=a["test_labels"].ravel()), "must have shape"),
    (lambda a: a.update(train_labels=a["train_labels"] + 4), "must lie in 0..3"),
])
def test_source_rejects_wrong_schema(tmp_path, change, message):
    arrays = {f"{s}_images": np.zeros((3, 28, 28), np.uint8) for s in ("train", "val", "test")}
    arrays.update({f"{s}_labels": np.zeros((3, 1), np.uint8) for s in ("train", "val", "test")})
    change(arrays)
    np.savez(tmp_path / "x.npz", **arrays)
    proc = _run_download("-source", tmp_path / "x.npz", "-data_dir", tmp_path / "out")
    assert proc.returncode == 1 and message in proc.stderr and "Traceback" not in proc.stderr


def test_source_checks_md5_of_a_file_claiming_to_be_octmnist(tmp_path, monkeypatch):
    monkeypatch.setattr(octmnist, "REAL_SIZES", {"train": 3, "val": 3, "test": 3})
    arrays = {f"{s}_images": np.zeros((3, 28, 28), np.uint8) for s in ("train", "val", "test")}
    arrays.update({f"{s}_labels": np.zeros((3, 1), np.uint8) for s in ("train", "val", "test")})
    np.savez(tmp_path / "x.npz", **arrays)
    with pytest.raises(SystemExit, match="not its MD5"):
        octmnist.read(tmp_path / "x.npz")


def test_source_copies_a_valid_file(small_synthetic, tmp_path):
    proc = _run_download("-source", small_synthetic / "octmnist.npz", "-data_dir",
                         tmp_path / "copy")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "copy" / "octmnist.npz").read_bytes() == \
        (small_synthetic / "octmnist.npz").read_bytes()


def test_loader_follows_handed_out_conventions(small_synthetic):
    splits, info = octmnist.load_splits(small_synthetic)
    x, y = splits["train"]
    assert x.shape == (200, 784) and x.dtype == torch.float32 and x.max() < 1
    assert y.shape == (200,) and y.dtype == torch.long
    with np.load(small_synthetic / "octmnist.npz") as raw:
        np.testing.assert_array_equal(x[0].numpy(), (raw["train_images"][0].ravel() / 256)
                                      .astype(np.float32))
    test_y = splits["test"][1]
    assert len(test_y) == 529 and len(splits["test_full"][1]) == 1000
    subset_labels = torch.arange(4).repeat_interleave(torch.tensor(octmnist.TEST_SUBSET))
    assert torch.equal(test_y, subset_labels)
    assert info["synthetic"] is True and info["md5"] == octmnist.md5sum(
        small_synthetic / "octmnist.npz")
    assert info["sizes"] == {"train": 200, "dev": 60, "test_full": 1000, "test": 529}


def test_each_data_file_is_read_once(small_synthetic, monkeypatch):
    reads = []
    original = type(small_synthetic).read_bytes
    monkeypatch.setattr(type(small_synthetic), "read_bytes",
                        lambda path: reads.append(path.name) or original(path))
    real = shared_file("octmnist_kermany.npz")
    data = octmnist.load(small_synthetic, None, str(real), "cpu")
    assert sorted(reads) == ["octmnist.npz", "octmnist_kermany.npz"]
    assert len(data.real_check[1]) == 80 and data.info["real_check_md5"] == octmnist.md5sum(real)


def test_missing_data_file_is_a_one_line_error(tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "hw2-q2.py"), "-data_dir", str(tmp_path)],
                          capture_output=True, text=True)
    assert proc.returncode == 1 and "run python download_octmnist.py" in proc.stderr
    assert "Traceback" not in proc.stderr


def _args(data_dir, *extra):
    """Arguments for train_runs; checkpoints go under the (temporary) data folder unless set."""
    default = [] if "-checkpoint_dir" in extra else ["-checkpoint_dir", str(data_dir / "ck")]
    return q2.parse_args(["-data_dir", str(data_dir), "-no_progress", *default, *extra])


def _train(data_dir, lrs, *extra):
    args = _args(data_dir, *extra)
    data = octmnist.load(data_dir, None, None, "cpu")
    return q2.train_runs(lrs, False, args, data, cli.Outputs(data_dir / "out"))


def test_short_training_lowers_the_loss_and_repeats_exactly(small_synthetic):
    first = _train(small_synthetic, [0.05], "-epochs", "3")[0]
    assert first["train_loss"][-1] < first["train_loss"][0]
    plots = small_synthetic / "out" / "plots"
    assert (plots / f"q2-run-training-loss-{first['config']}.pdf").exists()
    assert not list(plots.glob("q2-training-loss-*"))  # a single run never replaces the sweep's
    again = _train(small_synthetic, [0.05], "-epochs", "3")[0]
    assert again["train_loss"] == first["train_loss"] and again["val_acc"] == first["val_acc"]
    # the handed-out running mean: mean of all batch losses since epoch 1
    assert first["train_loss_running_mean"][1] == pytest.approx(np.mean(first["train_loss"][:2]))


def test_sweep_end_to_end_with_real_image_check(small_synthetic, tmp_path):
    real = shared_file("octmnist_kermany.npz")
    q2.main(["-data_dir", str(small_synthetic), "-sweep", "-epochs", "1", "-no_progress",
             "-real_images", str(real), "-out_dir", str(tmp_path / "out"),
             "-checkpoint_dir", str(tmp_path / "ck")])
    record = json.loads((tmp_path / "out" / "report" / "results" / "q2.json").read_text())
    res = record["results"]
    assert record["data"]["synthetic"] is True and record["data"]["real_check"] == str(real)
    assert len(res["runs"]) == 6 and res["best_learning_rate"] in (0.1, 0.01, 0.001)
    assert res["trainable_params"] == {"max-pool": 224_892, "no max-pool": 224_892}
    for run in res["runs"]:
        assert 0 <= run["real_80_acc"] <= 1 and len(run["val_acc"]) == 1
        for kind in ("training-loss", "validation-accuracy"):
            assert (tmp_path / "out" / "plots" / f"q2-{kind}-{run['config']}.png").exists()
    assert res["q2_2"]["config"].endswith("True")
    # -resume reuses the finished runs instead of training them again
    q2.main(["-data_dir", str(small_synthetic), "-sweep", "-epochs", "1", "-no_progress",
             "-resume", "-out_dir", str(tmp_path / "out2"), "-checkpoint_dir",
             str(tmp_path / "ck")])
    again = json.loads((tmp_path / "out2" / "report" / "results" / "q2.json").read_text())
    assert again["results"]["runs"] == res["runs"]


def test_sweep_in_two_processes_equals_sweep_in_one(small_synthetic, tmp_path):
    runs = {}
    for jobs in ("1", "2"):
        proc = subprocess.run(
            [sys.executable, str(REPO / "hw2-q2.py"), "-data_dir", str(small_synthetic),
             "-sweep", "-epochs", "2", "-no_progress", "-threads", "1", "-jobs", jobs,
             "-out_dir", str(tmp_path / jobs), "-checkpoint_dir", str(tmp_path / f"ck{jobs}")],
            capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        record = json.loads((tmp_path / jobs / "report" / "results" / "q2.json").read_text())
        runs[jobs] = [{k: v for k, v in run.items() if k != "wall_time_s"}
                      for run in record["results"]["runs"]]
    assert len(runs["2"]) == 6 and runs["2"] == runs["1"]


@pytest.mark.parametrize("lrs", [[0.05], [0.05, 0.01]])  # the handed-out loop; side by side
def test_resume_after_interruption_reproduces_uninterrupted_run(small_synthetic, tmp_path,
                                                                monkeypatch, lrs):
    full = _train(small_synthetic, lrs, "-epochs", "2", "-checkpoint_dir", str(tmp_path / "a"))
    save = checkpoints.save_checkpoint

    def save_then_interrupt(state, path):  # Ctrl-C right after epoch 1 is saved
        save(state, path)
        raise KeyboardInterrupt

    with monkeypatch.context() as patch, pytest.raises(KeyboardInterrupt):
        patch.setattr(checkpoints, "save_checkpoint", save_then_interrupt)
        _train(small_synthetic, lrs, "-epochs", "2", "-checkpoint_dir", str(tmp_path / "b"))
    resumed = _train(small_synthetic, lrs, "-epochs", "2", "-resume", "-checkpoint_dir",
                     str(tmp_path / "b"))
    for a, b in zip(full, resumed, strict=True):
        for key in ("train_loss", "train_loss_running_mean", "val_acc", "test_acc",
                    "test_acc_full"):
            assert a[key] == b[key], key
