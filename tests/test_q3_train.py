import functools
import json
import os
import resource
import signal
import subprocess
import sys

import pytest
import torch

import hw2.ljspeech as lj
from conftest import REPO, load_script, write_corpus
from hw2 import asr_metrics as metrics
from hw2 import checkpoints
from hw2.asr_model import SpeechToText

q3 = load_script("hw2-q3.py")


def test_cut_at_stop_as_handed_out():
    assert metrics.cut_at_stop([0, 9, 10, 1, 2, 2], [9, 10, 11, 1, 5]) == ([0, 9, 10, 1],
                                                                      [9, 10, 11, 1])
    assert metrics.cut_at_stop([0, 9, 1], [9, 10]) == ([0, 9, 1], [9, 1])  # no stop: last -> stop


def test_similarities_on_a_hand_worked_example():
    target = torch.tensor([[0, 9, 10, 1, 2, 2]])  # "<ab>@@"
    generated = torch.tensor([[0, 9, 10, 11, 1, 5]])  # "<abc>," (generate keeps the "<")
    sums, pairs = metrics.string_scores(target, generated, lj.TokenVectorizer())
    # bags {<, a, b, >} and {<, a, b, c, >}: 4 shared of 5; cosine 4 / sqrt(4 * 5);
    # edit distance 1 (insert c) over the longer length 5
    assert sums == pytest.approx({"jaccard_similarity": 0.8,
                                  "cosine_similarity": 4 / 20 ** 0.5,
                                  "damerau-levenshtein_similarity": 0.8})
    assert pairs == [("ab", "abc")]


def test_similarities_count_repeats_and_transpositions():
    sums, _ = metrics.string_scores(torch.tensor([[0, 9, 9, 10, 1]]), torch.tensor([[0, 9, 10, 9, 1]]),
                               lj.TokenVectorizer())
    assert sums["jaccard_similarity"] == pytest.approx(1.0)  # same multiset
    assert sums["damerau-levenshtein_similarity"] == pytest.approx(1 - 1 / 5)  # one swap


def test_error_rates():
    rates = metrics.error_rates([("a bc d", "a xc d"), ("hello", "")])
    assert rates["wer"] == pytest.approx(2 / 4)
    assert rates["cer"] == pytest.approx((1 + 5) / (6 + 5))


def test_schedule_learning_rates_per_epoch():
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    scheduler = q3.make_scheduler(optimizer, 15)
    rates = []
    for _ in range(15):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    expected = [1e-5, 5.05e-4] + [1e-3 * (1 - 0.99 * k / 12) for k in range(13)]
    assert rates == pytest.approx(expected, rel=1e-6)


def test_schedule_per_update_has_the_same_shape():
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    scheduler = q3.make_scheduler(optimizer, 2, 50, "update", warmup_updates=10)
    rates = []
    for _ in range(100):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert rates[0] == pytest.approx(1e-5) and rates[10] == pytest.approx(1e-3)
    assert rates[:11] == sorted(rates[:11]) and rates[10:] == sorted(rates[10:], reverse=True)
    assert rates[55] == pytest.approx(1e-3 * (1 - 0.99 * 45 / 90))  # linear decay
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-5)  # ends at 1e-2 x lr


def test_handed_out_schedule_of_few_epochs_starts_at_the_peak():
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    q3.make_scheduler(optimizer, 5)  # int(0.15 * 5) = 0 warm-up epochs
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-3)


@pytest.mark.parametrize("decoder", ["lstm", "transformer"])
def test_tiny_model_overfits_four_clips(decoder):
    torch.manual_seed(0)
    model = SpeechToText(decoder, max_text_len=12, encoder_layers=1, hidden_dim=32, n_heads=2,
                         feed_fwd_dim=64, n_mels=8)
    vec = lj.TokenVectorizer(max_len=12)
    texts = torch.stack([vec(t) for t in ("cat", "dog sat", "a bee", "hi.")])
    audio = torch.randn(4, 8, 30)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(300):
        optimizer.zero_grad()
        q3.teacher_forced_loss(model(audio, texts[:, :-1]), texts).backward()
        optimizer.step()
    model.eval()
    for use_cache in (False, True):
        generated = model.generate(audio, use_cache=use_cache)
        for target, gen in zip(texts.tolist(), generated.tolist()):
            assert metrics.cut_at_stop(target, gen)[1] == target[:target.index(1) + 1]


@pytest.fixture(autouse=True)
def small_model(monkeypatch):
    """hw2-q3.py's runs build a small model (hidden size 16, feed-forward 32)."""
    monkeypatch.setattr(q3, "build_model", functools.partial(q3.build_model, hidden_dim=16,
                                                             ff_dim=32))


@pytest.fixture
def tiny_corpus(tmp_path, monkeypatch):
    monkeypatch.setattr(lj, "SPLITS", {"train": (0, 6), "validation": (6, 8), "test": (8, 10)})
    ids = [f"LJ{i:03d}" for i in range(10)]
    words = ["alpha", "beta", "gamma", "delta", "omega", "sigma", "kappa", "theta", "iota", "rho"]
    return write_corpus(tmp_path / "data" / "LJSpeech-1.1",
                        [f"{i}|{w}|{w}" for i, w in zip(ids, words)], ids, seconds=0.3).parent


def cli(data_dir, tmp_path, name, *extra):
    return ["-decoder", "transformer", "-data_dir", str(data_dir), "-batch_size", "3",
            "-eval_batch_size", "2", "-encoder_layers", "1", "-workers", "0", "-no_progress", "-cache_dir", str(tmp_path / "cache"),
            "-out_dir", str(tmp_path / name), "-real_dir", str(tmp_path / "none"), *extra]


def results(tmp_path, name):
    path = tmp_path / name / "report" / "results" / "q3-transformer.json"
    return json.loads(path.read_text())["results"]


@pytest.mark.parametrize("schedule", [["-eval_every", "1", "-schedule", "update"], []])
def test_resume_after_interruption_reproduces_the_uninterrupted_run(tiny_corpus, tmp_path,
                                                                    monkeypatch, schedule):
    """Stopped in the middle of epoch 2 (update 3 of 6), resumed from the last checkpoint:
    the same history and test metrics as the run that was never stopped."""
    run = ["-epochs", "3", "-fast", "-batch_size", "4", *schedule]  # 2 updates per epoch
    q3.main(cli(tiny_corpus, tmp_path, "full", *run, "-checkpoint_dir", str(tmp_path / "a")))
    original, calls = q3.train_step, []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(q3, "train_step", interrupted)
    with pytest.raises(KeyboardInterrupt):
        q3.main(cli(tiny_corpus, tmp_path, "cut", *run, "-checkpoint_dir", str(tmp_path / "b")))
    monkeypatch.setattr(q3, "train_step", original)
    q3.main(cli(tiny_corpus, tmp_path, "resumed", *run, "-resume",
                "-checkpoint_dir", str(tmp_path / "b")))
    full, resumed = results(tmp_path, "full"), results(tmp_path, "resumed")
    strip = [{k: v for k, v in h.items() if k != "seconds"} for h in full["history"]]
    assert [{k: v for k, v in h.items() if k != "seconds"} for h in resumed["history"]] == strip
    assert len(strip) == (6 if schedule else 3)
    assert resumed["test"] == full["test"]


def test_resume_refuses_a_checkpoint_of_another_configuration(tiny_corpus, tmp_path):
    q3.main(cli(tiny_corpus, tmp_path, "a", "-epochs", "1", "-checkpoint_dir", str(tmp_path)))
    with pytest.raises(SystemExit, match=r"-resume: \S*q3-transformer-seed42.pt is another run "
                       r"\(epochs 1 -> 2, lr 0.001 -> 0.0001\); run without -resume"):
        q3.main(cli(tiny_corpus, tmp_path, "b", "-epochs", "2", "-learning_rate", "1e-4", "-resume",
                    "-checkpoint_dir", str(tmp_path)))


def test_faithful_run_writes_results_plots_and_log(tiny_corpus, tmp_path):
    q3.main(cli(tiny_corpus, tmp_path, "out", "-epochs", "1",
                "-checkpoint_dir", str(tmp_path / "ck")))
    res = results(tmp_path, "out")
    assert set(res["test"]) == {"loss", "jaccard_similarity", "cosine_similarity",
                                "damerau-levenshtein_similarity", "wer", "cer"}
    assert len(res["history"]) == 1 and res["parameters"]["total"] > 0
    assert (tmp_path / "out" / "plots" / "q3-transformer-loss.png").exists()
    log = (tmp_path / "out" / "report" / "results" / "q3-transformer-test-log.txt").read_text()
    assert log.count("target: ") == 2 and "target: iota" in log


def attention_summary(tmp_path, name):
    path = tmp_path / name / "report" / "results" / "q3-transformer-analysis.json"
    return json.loads(path.read_text())["results"]


@pytest.mark.parametrize("fast", [[], ["-fast"]])
def test_analysis_after_training_and_from_the_checkpoint_agree(tiny_corpus, tmp_path,
                                                                         fast):
    checkpoint = ["-checkpoint_dir", str(tmp_path / "ck")]
    q3.main(cli(tiny_corpus, tmp_path, "trained", "-epochs", "1", *fast, *checkpoint))
    q3.main(cli(tiny_corpus, tmp_path, "again", "-analysis_only", "-epochs", "1", *fast,
                *checkpoint))
    trained, again = attention_summary(tmp_path, "trained"), attention_summary(tmp_path, "again")
    assert trained == again  # the same checkpoint, the same analysis
    attention, similarities = trained["attention"], trained["similarities"]
    assert attention["clips"] == similarities["clips"] == 2  # the whole two-clip test split
    assert "self_mean_lookback_characters" in attention
    example = similarities["example"]
    assert example["target"] in ("<iota>", "<rho>")
    assert example["jaccard_similarity"] == pytest.approx(
        example["intersection"] / example["union"])
    assert example["cosine_similarity"] == pytest.approx(
        example["intersection"] / (example["m"] * example["n"]) ** 0.5)
    assert example["damerau-levenshtein_similarity"] == pytest.approx(
        1 - example["edit_distance"] / max(example["m"], example["n"]))
    assert similarities["cosine_highest"] == 2
    assert (tmp_path / "again" / "plots" / "q3-transformer-attention.png").exists()


def test_analysis_only_without_a_checkpoint_is_a_clear_error(tiny_corpus, tmp_path):
    with pytest.raises(SystemExit, match="no checkpoint .*train first"):
        q3.main(cli(tiny_corpus, tmp_path, "x", "-analysis_only",
                    "-checkpoint_dir", str(tmp_path / "none")))


def test_no_audio_for_a_split_is_a_clear_error(tiny_corpus, tmp_path):
    for wav in (tiny_corpus / "LJSpeech-1.1" / "wavs").glob("LJ00[67].wav"):
        wav.unlink()
    with pytest.raises(SystemExit, match="no clips with audio .* for this split"):
        q3.main(cli(tiny_corpus, tmp_path, "x", "-epochs", "1"))


def test_a_diverging_run_fails_without_writing_results(tiny_corpus, tmp_path, monkeypatch):
    monkeypatch.setattr(q3, "teacher_forced_loss", lambda logits, text: logits.sum() * float("nan"))
    with pytest.raises(SystemExit, match="training diverged: loss nan at update 2 .epoch 1"):
        q3.main(cli(tiny_corpus, tmp_path, "nan", "-epochs", "1"))
    assert not (tmp_path / "nan" / "report" / "results" / "q3-transformer.json").exists()


@pytest.mark.parametrize("flags,message", [
    (["-learning_rate", "nan"], "argument -learning_rate: must be a finite number > 0"),
    (["-learning_rate", "0"], "argument -learning_rate: must be a finite"),
    (["-lr", "2e-3"], "unrecognized arguments: -lr 2e-3"),  # the earlier spelling is gone
    (["-epochs", "0"], "-epochs: must be a positive integer"),
    (["-encoder_layers", "0"], "-encoder_layers: must be a positive integer"),
    (["-train_clips", "-3"], "-train_clips: must be a positive integer"),
    (["-workers", "-1"], "-workers: must be an integer >= 0"),
    (["-threads", "-3"], "-threads: must be a positive integer"),
    (["-tag", "a/b"], "-tag must be letters")])
def test_bad_flags_are_one_line_errors(flags, message, capsys):
    with pytest.raises(SystemExit) as stop:
        q3.parse_args(["-decoder", "lstm", *flags])
    assert stop.value.code == 2 and message in capsys.readouterr().err


def test_a_second_identical_run_stops_at_the_lock(tiny_corpus, tmp_path):
    args = q3.parse_args(cli(tiny_corpus, tmp_path, "x", "-checkpoint_dir", str(tmp_path / "ck")))
    with checkpoints.exclusive(q3.checkpoint_path(args).with_suffix(".lock"), "a run"):
        with pytest.raises(SystemExit, match="already writing the q3-transformer run"):
            q3.main(cli(tiny_corpus, tmp_path, "x", "-epochs", "1",
                        "-checkpoint_dir", str(tmp_path / "ck")))
    assert not (tmp_path / "x" / "report" / "results" / "q3-transformer.json").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_device_cuda_without_a_gpu_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as stop:
        q3.parse_args(["-decoder", "lstm", "-device", "cuda"])
    assert stop.value.code == 2 and "no CUDA GPU is available" in capsys.readouterr().err


def test_an_unwritable_output_folder_stops_before_training(tiny_corpus, tmp_path):
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(SystemExit, match="is not a writable folder"):
        q3.main(cli(tiny_corpus, tmp_path, "file/out", "-epochs", "1"))
