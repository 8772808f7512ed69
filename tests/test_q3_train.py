import functools
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys

import pytest
import torch

import hw2.ljspeech as lj
from conftest import REPO, load_script, write_corpus
from hw2 import asr_metrics as metrics
from hw2 import checkpoints
from hw2 import results as results_module
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
    sums, _ = metrics.string_scores(torch.tensor([[0, 9, 9, 10, 1]]),
                                    torch.tensor([[0, 9, 10, 9, 1]]), lj.TokenVectorizer())
    assert sums["jaccard_similarity"] == pytest.approx(1.0)  # same multiset
    assert sums["damerau-levenshtein_similarity"] == pytest.approx(1 - 1 / 5)  # one swap


def test_error_rates():
    rates = metrics.error_rates([("a bc d", "a xc d"), ("hello", "")])
    assert rates["wer"] == pytest.approx(2 / 4)
    assert rates["cer"] == pytest.approx((1 + 5) / (6 + 5))


def test_bootstrap_interval_of_the_cer():
    pairs = [("a bc d", "a xc d"), ("hello", ""), ("same", "same"), ("abc", "abd")]
    edits, chars = metrics.character_edits(pairs)
    assert edits.tolist() == [1, 5, 0, 1] and chars.tolist() == [6, 5, 4, 3]
    assert edits.sum() / chars.sum() == pytest.approx(metrics.error_rates(pairs)["cer"])
    low, high = metrics.bootstrap_cer(pairs, resamples=2000)
    assert low < edits.sum() / chars.sum() < high
    assert (low, high) == metrics.bootstrap_cer(pairs, resamples=2000)  # seeded
    assert metrics.bootstrap_cer(pairs[:1]) == pytest.approx((1 / 6, 1 / 6))  # one clip: no spread


def test_paired_cer_difference_on_the_same_clips():
    a = [("a bc d", "a xc d"), ("hello", ""), ("same", "same"), ("abc", "abd")]
    b = [("a bc d", "a bc d"), ("hello", "help"), ("same", "sane"), ("abc", "xyz")]
    point, low, high = metrics.paired_cer_difference(a, b, resamples=2000)
    assert point == pytest.approx(metrics.error_rates(b)["cer"] - metrics.error_rates(a)["cer"])
    assert low < point < high
    assert metrics.paired_cer_difference(a, a) == (0.0, 0.0, 0.0)  # a run against itself
    worse = [(t, "") for t, _ in a]  # every clip at least as wrong: the whole interval above 0
    assert metrics.paired_cer_difference(a, worse, resamples=2000)[1] > 0
    with pytest.raises(ValueError, match="not scored on the same clips"):
        metrics.paired_cer_difference(a, a[::-1])


def scheduled_rates(steps: int, *schedule, **options) -> tuple[list[float], float]:
    """The learning rate (peak 1e-3) at each of `steps` scheduler steps of
    make_scheduler(optimizer, *schedule, **options), and the rate after the last step."""
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    scheduler = q3.make_scheduler(optimizer, *schedule, **options)
    rates = []
    for _ in range(steps):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return rates, optimizer.param_groups[0]["lr"]


def test_schedule_learning_rates_per_epoch():
    rates, _ = scheduled_rates(15, 15)
    expected = [1e-5, 5.05e-4] + [1e-3 * (1 - 0.99 * k / 12) for k in range(13)]
    assert rates == pytest.approx(expected, rel=1e-6)


def test_schedule_per_update_has_the_same_shape():
    rates, last = scheduled_rates(100, 2, 50, "update", warmup_updates=10)
    assert rates[0] == pytest.approx(1e-5) and rates[10] == pytest.approx(1e-3)
    assert rates[:11] == sorted(rates[:11]) and rates[10:] == sorted(rates[10:], reverse=True)
    assert rates[55] == pytest.approx(1e-3 * (1 - 0.99 * 45 / 90))  # linear decay
    assert last == pytest.approx(1e-5)  # ends at 1e-2 x lr


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
            "-eval_batch_size", "2", "-encoder_layers", "1", "-workers", "0", "-no_progress",
            "-cache_dir", str(tmp_path / "cache"),
            "-out_dir", str(tmp_path / name), "-real_dir", str(tmp_path / "none"), *extra]


def results(tmp_path, name):
    path = tmp_path / name / "report" / "results" / "q3-transformer.json"
    return json.loads(path.read_text())["results"]


@pytest.mark.parametrize("schedule", [["-eval_every", "1", "-schedule", "update"], [],
                                      ["-speed_perturb", "0.1", "-vtlp", "0.1", "-freq_masks",
                                       "1", "-time_masks", "2", "-reverb", "0.3"]])
def test_resume_after_interruption_reproduces_the_uninterrupted_run(tiny_corpus, tmp_path,
                                                                    monkeypatch, schedule):
    """Stopped in the middle of epoch 2 (update 3 of 6), resumed from the last checkpoint:
    the same history and test metrics as the run that was never stopped."""
    run = ["-epochs", "3", "-fast", "-batch_size", "4", *schedule]  # 2 updates per epoch
    every_update = "-eval_every" in schedule
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
    with pytest.raises(SystemExit, match=r"-analysis_only: \S*q3-transformer-seed42.pt is an "
                       rf"unfinished run \(update {3 if every_update else 2} of 6\)"):
        q3.main(cli(tiny_corpus, tmp_path, "cut", *run, "-analysis_only",
                    "-checkpoint_dir", str(tmp_path / "b")))
    q3.main(cli(tiny_corpus, tmp_path, "resumed", *run, "-resume",
                "-checkpoint_dir", str(tmp_path / "b")))
    full, resumed = results(tmp_path, "full"), results(tmp_path, "resumed")
    strip = [{k: v for k, v in h.items() if k != "seconds"} for h in full["history"]]
    assert [{k: v for k, v in h.items() if k != "seconds"} for h in resumed["history"]] == strip
    assert len(strip) == (6 if every_update else 3)
    assert resumed["test"] == full["test"]


def test_resume_refuses_a_checkpoint_of_another_configuration(tiny_corpus, tmp_path):
    q3.main(cli(tiny_corpus, tmp_path, "a", "-epochs", "1", "-checkpoint_dir", str(tmp_path)))
    with pytest.raises(SystemExit, match=r"-resume: \S*q3-transformer-seed42.pt is another run "
                       r"\(epochs 1 -> 2, lr 0.001 -> 0.0001\); run without -resume"):
        q3.main(cli(tiny_corpus, tmp_path, "b", "-epochs", "2", "-learning_rate", "1e-4", "-resume",
                    "-checkpoint_dir", str(tmp_path)))


def test_a_checkpoint_older_than_a_flag_matches_that_flag_off(tiny_corpus, tmp_path):
    """-reverb came after the committed checkpoints: their identity lacks it, and it was off."""
    q3.main(cli(tiny_corpus, tmp_path, "a", "-epochs", "1", "-checkpoint_dir", str(tmp_path)))
    path = tmp_path / "q3-transformer-seed42.pt"
    state = torch.load(path, weights_only=False)
    del state["identity"]["reverb"]
    torch.save(state, path)
    q3.main(cli(tiny_corpus, tmp_path, "b", "-epochs", "1", "-analysis_only",
                "-checkpoint_dir", str(tmp_path)))
    written = tmp_path / "b" / "report" / "results" / "q3-transformer-analysis.json"
    assert json.loads(written.read_text())["config"]["reverb"] == 0.0
    with pytest.raises(SystemExit, match=r"another run \(reverb 0.0 -> 0.3\)"):
        q3.main(cli(tiny_corpus, tmp_path, "c", "-epochs", "1", "-reverb", "0.3", "-resume",
                    "-checkpoint_dir", str(tmp_path)))


def test_faithful_run_writes_results_plots_and_log(tiny_corpus, tmp_path, capsys):
    q3.main(cli(tiny_corpus, tmp_path, "out", "-epochs", "1",
                "-checkpoint_dir", str(tmp_path / "ck")))
    assert "warning: -schedule epoch with -epochs 1: int(0.15 x 1) = 0 warm-up epochs, so no " \
        "warm-up at all" in capsys.readouterr().err
    res = results(tmp_path, "out")
    assert set(res["test"]) == {"loss", "jaccard_similarity", "cosine_similarity",
                                "damerau-levenshtein_similarity", "wer", "cer"}
    assert len(res["history"]) == 1 and res["parameters"]["total"] > 0
    assert (tmp_path / "out" / "plots" / "q3-transformer-loss.png").exists()
    log = (tmp_path / "out" / "report" / "results" / "q3-transformer-test-log.txt").read_text()
    assert log.count("target: ") == 2 and "target: iota" in log


def test_the_console_validation_lines_read_back_as_the_results_history(tiny_corpus, tmp_path,
                                                                      capsys):
    """report/build.py reads an interrupted run's validation from its console output (the
    padding comparison): that reading gives the history the results file records."""
    build = load_script("report/build.py")
    q3.main(cli(tiny_corpus, tmp_path, "out", "-epochs", "2", "-fast",
                "-checkpoint_dir", str(tmp_path / "ck")))
    console = tmp_path / "console.txt"
    console.write_text(capsys.readouterr().out)
    logged = build.console_history(console)
    recorded = results(tmp_path, "out")["history"]
    assert len(logged) == len(recorded) == 2
    for line, record in zip(logged, recorded):
        assert (line["update"], line["epoch"]) == (record["update"], record["epoch"])
        for key in ("loss", "damerau-levenshtein_similarity", "wer", "cer"):
            assert line["validation"][key] == round(record["validation"][key], 3)
        assert line["train_loss"] == round(record["train_loss"], 3)
    console.write_text("no validation here\n")
    with pytest.raises(build.BuildError, match="has no validation lines"):
        build.console_history(console)


def test_a_held_out_voice_is_scored_apart_with_its_interval(tiny_corpus, tmp_path):
    heldout = write_corpus(tmp_path / "voice" / "LJSpeech-1.1",
                           ["LJ100|kappa|kappa", "LJ101|theta|theta", "LJ102|rho|rho"],
                           ["LJ100", "LJ101"], seconds=0.3)
    q3.main(cli(tiny_corpus, tmp_path, "out", "-epochs", "1", "-fast", "-utterance_norm",
                "-heldout_dir", str(heldout), "-checkpoint_dir", str(tmp_path / "ck")))
    scored = results(tmp_path, "out")["heldout_clips"]
    assert scored["clips"] == 2 and len(scored["examples"]) == 2
    low, high = scored["cer_95ci"]
    assert low <= scored["metrics"]["cer"] <= high
    log = (tmp_path / "out" / "report" / "results" / "q3-transformer-test-log.txt").read_text()
    assert log.count("target: [held-out voice] ") == 2
    empty = write_corpus(tmp_path / "empty" / "LJSpeech-1.1", ["LJ100|kappa|kappa"])
    with pytest.raises(SystemExit, match=rf"^error: -heldout_dir {empty}: no clip has audio$"):
        q3.main(cli(tiny_corpus, tmp_path, "out2", "-epochs", "1", "-heldout_dir", str(empty)))


def test_an_unreadable_clip_scored_apart_stops_the_run_before_training(tiny_corpus, tmp_path,
                                                                         monkeypatch):
    """A genuine folder whose clip is an empty file (as a stand-in folder made for rendering
    has) fails in seconds with a one-line error, not after the training."""
    genuine = write_corpus(tmp_path / "genuine" / "LJSpeech-1.1", ["LJ200|iota|iota"], ["LJ200"],
                           seconds=0.3)
    (genuine / "wavs" / "LJ200.wav").write_bytes(b"")
    monkeypatch.setattr(q3, "train_step", lambda *args, **kwargs: pytest.fail("trained"))
    args = cli(tiny_corpus, tmp_path, "out", "-epochs", "1", "-checkpoint_dir",
               str(tmp_path / "ck"))
    args[args.index("-real_dir") + 1] = str(genuine)
    with pytest.raises(SystemExit, match="^error: " + re.escape(f"{genuine}/wavs/LJ200.wav") +
                       ": unreadable audio"):
        q3.main(args)


@pytest.mark.parametrize("flags, change", [(["-utterance_norm"], "utterance_norm False -> True"),
                                           (["-dynamic_range", "6"], "dynamic_range None -> 6.0"),
                                           (["-lifter", "13"], "lifter None -> 13")])
def test_feature_settings_are_part_of_the_run_identity(tiny_corpus, tmp_path, flags, change):
    q3.main(cli(tiny_corpus, tmp_path, "a", "-epochs", "1", "-checkpoint_dir", str(tmp_path)))
    with pytest.raises(SystemExit, match=rf"another run \({change}\)"):
        q3.main(cli(tiny_corpus, tmp_path, "b", "-epochs", "1", *flags, "-resume",
                    "-checkpoint_dir", str(tmp_path)))


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
    maps = attention["example_maps"]  # what the figure draws: characters x 21 encoder frames
    n = len(maps["characters"])
    assert sorted(maps) == ["characters", "cross", "self"] and 1 <= n <= 98
    assert len(maps["cross"]) == len(maps["self"]) == n
    assert {len(row) for row in maps["cross"]} == {21} and {len(row) for row in maps["self"]} == {n}
    for row in maps["cross"] + maps["self"]:
        assert all(round(v, 4) == v >= 0 for v in row)
    for row in maps["self"] + (maps["cross"] if fast else []):  # handed out: padding attended
        assert sum(row) == pytest.approx(1, abs=1e-3)
    assert all(v == 0 for i, row in enumerate(maps["self"]) for v in row[i + 1:])  # causal


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


@pytest.mark.parametrize("epochs,per_epoch,schedule,warmup,expected", [
    (6, 10, "epoch", None, "-schedule epoch with -epochs 6: int(0.15 x 6) = 0 warm-up epochs, so "
     "no warm-up at all (training starts at the peak learning rate; 7 epochs or more warm up)"),
    (7, 10, "epoch", None, None),
    (2, 3, "update", None, "-schedule update over 6 updates: int(0.15 x 6) = 0 warm-up updates, "
     "so no warm-up at all (training starts at the peak learning rate)"),
    (2, 50, "update", 100, "-warmup_updates 100 >= the run's 100 updates (-epochs 2 x 50 per "
     "epoch): the learning rate never leaves its warm-up (it never reaches the peak and never "
     "decays)"),
    (2, 50, "update", 10, None),
    (2, 50, "update", 0, None)])  # no warm-up, as asked
def test_a_schedule_that_never_leaves_or_lacks_its_warm_up_is_named(epochs, per_epoch, schedule,
                                                                      warmup, expected):
    assert q3.schedule_warning(epochs, per_epoch, schedule, warmup) == expected


def test_a_warm_up_longer_than_the_run_never_reaches_the_peak():
    rates, _ = scheduled_rates(100, 2, 50, "update", warmup_updates=150)
    assert rates == sorted(rates) and rates[-1] < 1e-3  # rising all the way, below the peak


def usage_error(argv: list[str], capsys) -> str:
    """The error line of hw2-q3.py's main(argv): argparse's usage block, that one line and
    exit status 2."""
    with pytest.raises(SystemExit) as stop:
        q3.main(argv)
    assert stop.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[0].startswith("usage:") and all(line.startswith(" ") for line in lines[1:-1])
    return lines[-1]


def test_device_tpu_is_a_usage_error_before_any_feature_is_computed(tiny_corpus, tmp_path,
                                                                     capsys):
    line = usage_error(cli(tiny_corpus, tmp_path, "x", "-epochs", "1", "-device", "tpu"), capsys)
    assert ": error: argument -device: tpu is not usable here (" in line
    assert not (tmp_path / "cache").exists() and not (tmp_path / "x").exists()


def test_a_floor_under_the_features_own_is_a_usage_error(tiny_corpus, tmp_path, capsys):
    line = usage_error(cli(tiny_corpus, tmp_path, "x", "-dynamic_range", "9"), capsys)
    assert line.endswith("error: argument -dynamic_range: must lie in (0, 8], the features' own "
                         "floor (got 9)")
    assert not (tmp_path / "cache").exists()


def test_a_lifter_of_every_mel_bin_is_a_usage_error(tiny_corpus, tmp_path, capsys):
    line = usage_error(cli(tiny_corpus, tmp_path, "x", "-lifter", "80"), capsys)
    assert line.endswith("error: argument -lifter: must lie in [1, 80), fewer than the mel bins "
                         "(got 80)")
    assert not (tmp_path / "cache").exists()


@pytest.mark.parametrize("flags, does", [(["-utterance_norm"], "-utterance_norm normalises"),
                                         (["-lifter", "13"], "-lifter smooths")])
def test_reverberation_with_a_feature_setting_is_a_usage_error(tiny_corpus, tmp_path, capsys,
                                                               flags, does):
    line = usage_error(cli(tiny_corpus, tmp_path, "x", "-reverb", "0.5", *flags), capsys)
    assert line.endswith(f"error: -reverb acts on the log-mel power, which {does} before any "
                         "augmentation: use one or the other")


def test_analysis_only_refuses_a_checkpoint_of_another_configuration(tiny_corpus, tmp_path):
    checkpoint = ["-checkpoint_dir", str(tmp_path / "ck")]
    q3.main(cli(tiny_corpus, tmp_path, "trained", "-epochs", "1", *checkpoint))
    for flags, changed in [(["-epochs", "1", "-learning_rate", "5e-3"], "lr 0.001 -> 0.005"),
                           (["-epochs", "9"], "epochs 1 -> 9"),
                           (["-epochs", "1", "-encoder_layers", "2"], "encoder_layers 1 -> 2")]:
        with pytest.raises(SystemExit, match=r"^error: -analysis_only: \S*q3-transformer-seed42"
                           rf".pt is another run \({changed}\); run without -analysis_only"):
            q3.main(cli(tiny_corpus, tmp_path, "again", "-analysis_only", *flags, *checkpoint))
    assert not list((tmp_path / "again").rglob("*.json"))


def test_resume_refuses_a_corpus_with_other_transcripts_and_the_same_counts(tiny_corpus,
                                                                           tmp_path):
    checkpoint = ["-checkpoint_dir", str(tmp_path / "ck")]
    q3.main(cli(tiny_corpus, tmp_path, "a", "-epochs", "1", *checkpoint))
    metadata = tiny_corpus / "LJSpeech-1.1" / "metadata.csv"
    metadata.write_text(metadata.read_text().replace("|beta|beta\n", "|bata|bata\n"))
    for flag in ("-resume", "-analysis_only"):
        with pytest.raises(SystemExit, match=rf"^error: {flag}: \S*q3-transformer-seed42.pt is "
                           r"another run \(corpus_sha256 '[0-9a-f]{64}' -> '[0-9a-f]{64}'\); "):
            q3.main(cli(tiny_corpus, tmp_path, "b", "-epochs", "1", flag, *checkpoint))
    assert not list((tmp_path / "b").rglob("*.json"))


def test_the_lock_is_held_until_the_last_output_is_written(tiny_corpus, tmp_path, monkeypatch):
    argv = cli(tiny_corpus, tmp_path, "x", "-epochs", "1", "-checkpoint_dir", str(tmp_path / "ck"))
    lock = q3.checkpoint_path(q3.parse_args(argv)).with_suffix(".lock")
    written = []

    def under_the_lock(name, write):
        def checked(*args, **kwargs):
            with pytest.raises(SystemExit, match=f"{lock}: process {os.getpid()} is already"):
                with checkpoints.exclusive(lock, "a second run"):
                    pass
            written.append(name)
            return write(*args, **kwargs)
        return checked
    for module, name in [(q3, "write_results"), (q3, "write_test_log"),
                         (q3.figures, "plot_q3_history"), (q3.figures, "plot_attention")]:
        monkeypatch.setattr(module, name, under_the_lock(name, getattr(module, name)))
    q3.main(argv)
    assert written == ["write_test_log", "write_results", "plot_q3_history", "plot_attention",
                       "write_results"]  # the analysis's results last
    assert not lock.exists()


CACHE_ERROR = (r"\S+/LJ000-\d+-\d+.npy: cannot write the feature cache \({}\); -cache_dir must "
               "be a writable folder with room")


def test_a_cache_dir_that_is_a_file_is_one_line_naming_it(tiny_corpus, tmp_path):
    (tmp_path / "cache").write_text("not a folder")  # cli()'s -cache_dir
    with pytest.raises(SystemExit, match="^error: " + re.escape(str(tmp_path / "cache")) +
                       CACHE_ERROR.format("Not a directory") + "$"):
        q3.main(cli(tiny_corpus, tmp_path, "x", "-epochs", "1"))


def test_a_read_only_cache_dir_is_one_line_naming_it(tiny_corpus, tmp_path):
    """As a subprocess with a worker; as root, without the capability that overrides file
    permissions (setpriv), since root writes into a read-only folder."""
    cache = tmp_path / "cache"
    cache.mkdir()
    cache.chmod(0o555)
    drop = ["setpriv", "--bounding-set", "-dac_override", "--inh-caps", "-dac_override"]
    if os.geteuid() == 0 and not shutil.which("setpriv"):
        pytest.skip("root writes into a read-only folder, and setpriv is missing")
    proc = subprocess.run(
        [*(drop if os.geteuid() == 0 else []), sys.executable, str(REPO / "hw2-q3.py"),
         "-decoder", "lstm", "-epochs", "1", "-workers", "1", "-no_progress", "-data_dir",
         str(tiny_corpus), "-cache_dir", str(cache), "-out_dir", str(tmp_path / "out"),
         "-real_dir", str(tmp_path / "none")],  # no genuine folder from $HW2_DATA_DIR
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr
    assert re.fullmatch("error: " + re.escape(str(cache)) + CACHE_ERROR.format(
        "Permission denied") + "\n", proc.stderr), proc.stderr
    assert not list(cache.iterdir())


def file_size_limit(limit: int, xfsz):
    """A subprocess's preexec_fn: RLIMIT_FSIZE of `limit` bytes, SIGXFSZ as given (Python
    ignores it at start-up either way, so writes past the limit fail with EFBIG)."""
    def limit_files():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        signal.signal(signal.SIGXFSZ, xfsz)
    return limit_files


@pytest.mark.parametrize("xfsz", [signal.SIG_IGN, signal.SIG_DFL])
def test_a_file_size_limit_with_a_worker_is_one_line_not_a_hang(tiny_corpus, tmp_path, xfsz):
    proc = subprocess.run(
        [sys.executable, str(REPO / "hw2-q3.py"), "-decoder", "lstm", "-epochs", "1",
         "-workers", "1", "-no_progress", "-data_dir", str(tiny_corpus), "-cache_dir",
         str(tmp_path / "cache"), "-out_dir", str(tmp_path / "out"), "-real_dir",
         str(tmp_path / "none")],  # no genuine folder from $HW2_DATA_DIR
        capture_output=True, text=True, timeout=300, preexec_fn=file_size_limit(4096, xfsz))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert re.fullmatch("error: " + re.escape(str(tmp_path / "cache")) + CACHE_ERROR.format(
        r"short write: \d+ requested and \d+ written") + "\n", proc.stderr), proc.stderr


def test_a_worker_under_a_file_size_limit_still_delivers_cached_features(tmp_path):
    """Read from a full cache, each clip crosses from the worker by value: a tensor would go
    through a shared-memory file, which the limit forbids, and the parent would wait forever."""
    root = write_corpus(tmp_path / "lj", ["LJ1|a|a", "LJ2|b|b"], ["LJ1", "LJ2"])
    corpus = lj.LJSpeech(root)
    cache = lj.FeatureCache(tmp_path / "cache", lj.LogMel())
    frames = [cache.features(corpus.wav_path(clip)).shape[1] for clip in corpus.clips]
    script = ("import hw2.ljspeech as lj\n"
              f"corpus = lj.LJSpeech({str(root)!r})\n"
              f"cache = lj.FeatureCache({str(tmp_path / 'cache')!r}, lj.LogMel())\n"
              "dataset = lj.SpeechDataset(corpus, corpus.clips, cache, lj.TokenVectorizer())\n"
              "print(lj.FeatureBank(dataset, workers=1, progress=False).lengths.tolist())\n")
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True,
                          text=True, timeout=120, preexec_fn=file_size_limit(4096, signal.SIG_DFL))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"{frames}\n"


class DyingDataset(lj.SpeechDataset):
    def __getitem__(self, index: int):
        os.kill(os.getpid(), signal.SIGKILL)


def test_a_killed_feature_worker_is_one_line(tmp_path):
    root = write_corpus(tmp_path / "lj", ["LJ1|a|a"], ["LJ1"])
    corpus = lj.LJSpeech(root)
    dataset = DyingDataset(corpus, corpus.clips, lj.FeatureCache(tmp_path / "c", lj.LogMel()),
                           lj.TokenVectorizer())
    with pytest.raises(SystemExit, match=r"^error: features: a feature worker died \(DataLoader "
                       r"worker \(pid.*\); -workers 0 computes the features in this process$"):
        lj.FeatureBank(dataset, workers=1, progress=False)


def test_augmentation_is_off_by_default_and_each_part_changes_the_step(tiny_corpus, tmp_path):
    """Off by default: the handed-out step, draw for draw; each part alone changes the loss,
    and the same seed gives the same augmented step."""
    corpus = lj.LJSpeech(tiny_corpus / "LJSpeech-1.1")
    args = q3.parse_args(cli(tiny_corpus, tmp_path, "aug"))
    assert q3.Augmentation(args.speed_perturb, args.vtlp, args.freq_masks,
                           time_masks=args.time_masks) == q3.Augmentation()
    bank = q3.load_bank(corpus, corpus.split("train"), args, "train")
    options = q3.Options(fast=True)

    def loss(augmentation: q3.Augmentation, seed: int = 1) -> float:  # seed 1: tempo 1.10
        torch.manual_seed(0)
        model = q3.build_model("transformer", encoder_layers=1)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        return float(q3.train_step(model, bank, torch.arange(4), optimizer, options,
                                   augmentation, torch.Generator().manual_seed(seed)))

    plain = loss(q3.Augmentation())
    for part in (dict(speed=0.2), dict(vtlp=0.2), dict(freq_masks=2), dict(time_masks=2)):
        augmented = q3.Augmentation(**part)
        assert loss(augmented) != plain, part
        assert loss(augmented) == loss(augmented)
    assert loss(q3.Augmentation(speed=0.2), seed=1) != loss(q3.Augmentation(speed=0.2), seed=2)


@pytest.mark.parametrize("flag", ["-speed_perturb", "-vtlp"])
def test_a_tempo_or_warp_range_of_a_half_or_more_is_a_usage_error(flag, capsys):
    assert usage_error(["-decoder", "lstm", flag, "0.5"], capsys).endswith(
        f": error: argument {flag}: must lie in [0, 0.5) (got 0.5)")


def test_test_log_path_is_recorded_relative_to_the_repository(tmp_path, monkeypatch):
    monkeypatch.setattr(results_module, "REPO_DIR", tmp_path)  # an -out_dir inside the repository
    results = tmp_path / "smoke" / "report" / "results"
    assert q3.write_test_log("q3-x", [("ab", "ab")], results) == \
        "smoke/report/results/q3-x-test-log.txt"
    outside = tmp_path.parent / f"{tmp_path.name}-out" / "report" / "results"
    assert q3.write_test_log("q3-x", [], outside) == str(outside / "q3-x-test-log.txt")
    assert (results / "q3-x-test-log.txt").read_text() == "target: ab\npred:   ab\n\n"


def test_engine_breakdown_groups_the_test_log_by_voice(tmp_path):
    """The test split's pairs, read back from the test log, grouped by the engine that spoke
    each clip: per-engine WER / CER equal error_rates on each group; clips scored apart (the
    genuine ones, after the split) do not count; a log of another split is refused."""
    start = lj.SPLITS["test"][0]
    ids = [f"LJ{i:03d}-0001" for i in range(start + 4)]
    long = "Qr \"st\" café; " * 10  # past 97 characters, with symbols outside the vocabulary
    texts = ["Ab, cd.", "Ef gh?", "Ij kl", long]
    folder = write_corpus(tmp_path / "LJSpeech-1.1",
                          [f"{i}|x|x" for i in ids[:start]]
                          + [f"{i}|{t}|{t}" for i, t in zip(ids[start:], texts)], ids[start:])
    (folder / lj.TTS_MANIFEST).write_text("id\tengine\tvoice\trate\tpitch\tsnr_db\n" + "".join(
        f"{i}\t{e}\tv\t1\t0\t40\n" for i, e in zip(ids[start:], ["flite", "festival"] * 2)))
    corpus = lj.LJSpeech(folder)
    logged = long.lower().replace('"', "#").replace("é", "#").replace(";", "#")[:97]
    pairs = [("ab, cd.", "ab, cd."), ("ef gh?", "ef xx?"), ("ij kl", "ij k"), (logged, "")]
    log = tmp_path / "q3-test-log.txt"
    q3.write_test_log("q3", pairs + [("[genuine] ab", "zz")], tmp_path)
    by_engine = q3.engine_breakdown(corpus, corpus.split("test"), log)
    assert by_engine == {"festival": {"clips": 2, **metrics.error_rates(pairs[1::2])},
                         "flite": {"clips": 2, **metrics.error_rates(pairs[::2])}}
    q3.write_test_log("q3", [("ab, cd", "ab")] + pairs[1:], tmp_path)  # another target
    with pytest.raises(SystemExit, match=r"error: \S*q3-test-log.txt does not hold this corpus's "
                                         r"test split: run the training again$"):
        q3.engine_breakdown(corpus, corpus.split("test"), log)
