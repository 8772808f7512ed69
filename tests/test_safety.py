"""Nothing of value is overwritten or mislabelled (issue 23): shared data, committed results,
check sets and broken data, each case a run of the real script as a subprocess.

Each refused case ends with exit status 1 and exactly one error line, and leaves every file of
the data folder (a copy made here) and of the results folder (a temporary -out_dir seeded with
committed results) byte for byte as it was; the repository's own report/results and plots are
checked too. Nothing trains, except the runs that show -force replacing a file.
"""
from __future__ import annotations

import hashlib
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile

from conftest import REPO, load_script, write_corpus
from hw2 import octmnist, results, synthetic_oct

dl_lj = load_script("download_ljspeech.py")
dl_oct = load_script("download_octmnist.py")

COMMITTED = [REPO / "report" / "results", REPO / "plots"]
# The command of the committed CPU recipe's LSTM run (reproduce.sh), without -data_dir, and
# the name of its results.
Q3_LSTM = ["-decoder", "lstm", "-fast", "-batch_size", "16", "-schedule", "update",
           "-warmup_updates", "100", "-amp", "-threads", "1", "-workers", "0", "-resume",
           "-no_progress", "-curriculum", "-learning_rate", "2e-3", "-utterance_norm", "-tag",
           "norm-only"]
Q3_LSTM_NAME = "q3-lstm-norm-only"
FORCE_HINT = "pass -force to replace it, or -out_dir to write elsewhere"


def run(script: str, *args, cwd: Path = REPO, **env: str) -> subprocess.CompletedProcess:
    """The script as a user runs it; `env` is added to os.environ ("" removes a variable)."""
    environ = {k: v for k, v in {**os.environ, **env}.items() if v != ""}
    return subprocess.run([sys.executable, str(REPO / script), *map(str, args)], cwd=cwd,
                          env=environ, capture_output=True, text=True, timeout=300)


def error_line(proc: subprocess.CompletedProcess) -> str:
    """The one line a refused run printed: exit status 1, no traceback, nothing else."""
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


def checksums(*folders: Path) -> dict[str, str]:
    """SHA-256 of every file under the folders (none for a folder that does not exist)."""
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for folder in folders
            for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def refused(script: str, *args, watched: list[Path], cwd: Path = REPO, **env: str) -> str:
    """Run a case that must be refused; check that no file under `watched` nor the
    repository's committed outputs changed; return the error line."""
    folders = [*watched, *COMMITTED]
    before = checksums(*folders)
    line = error_line(run(script, *args, cwd=cwd, **env))
    assert checksums(*folders) == before
    return line


def oct_file(path: Path, per_split: int, seed: int = 0) -> Path:
    """A file in OCTMNIST's schema that is neither OCTMNIST nor the synthetic stand-in."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for split in octmnist.SPLITS:
        arrays[f"{split}_images"] = rng.integers(0, 256, (per_split, 28, 28), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(per_split) % 4).astype(np.uint8)[:, None]
    np.savez(path, **arrays)
    return path


# ---------------------------------------------------------------------------------------------
# 1. Generated data go to -data_dir, else ./data; genuine recordings are never written into
# ---------------------------------------------------------------------------------------------
@pytest.fixture
def genuine(tmp_path) -> Path:
    """A data folder of genuine recordings, as $HW2_DATA_DIR is: LJSpeech-1.1 with one wav of
    four clips (the shared folder holds 36 of 13,100) and no tts_manifest.tsv."""
    write_corpus(tmp_path / "shared" / "LJSpeech-1.1",
                 ["LJ001-0001|Genuine one.|genuine one.", "LJ001-0002|Two.|two.",
                  "LJ001-0003|Three.|three.", "LJ001-0004|Four.|four."], ["LJ001-0001"])
    return tmp_path / "shared"


@pytest.fixture
def fake_synthesisers(tmp_path) -> str:
    """A PATH on which espeak-ng and flite exit 0 and write nothing."""
    folder = tmp_path / "bin"
    folder.mkdir()
    for tool in ("espeak-ng", "flite"):
        (folder / tool).write_text("#!/bin/sh\nexit 0\n")
        (folder / tool).chmod(0o755)
    return f"{folder}{os.pathsep}{os.environ['PATH']}"


@pytest.mark.skipif(not all(map(shutil.which, ["espeak-ng", "flite", "text2wave"])),
                    reason="synthesisers not installed (apt-get install espeak-ng flite festival "
                           "festvox-us-slt-hts)")
def test_tts_writes_to_dot_data_and_only_reads_hw2_data_dir(genuine, tmp_path):
    """The issue's case: HW2_DATA_DIR set as the README says, -tts without -data_dir."""
    work = tmp_path / "work"
    work.mkdir()
    before = checksums(genuine)
    proc = run("download_ljspeech.py", "-tts", "-processes", "1", "-no_progress", cwd=work,
               HW2_DATA_DIR=str(genuine))
    assert proc.returncode == 0, proc.stderr
    assert checksums(genuine) == before
    folder = work / "data" / "LJSpeech-1.1"
    assert (folder / "tts_manifest.tsv").exists()
    assert sorted(p.name for p in (folder / "wavs").iterdir()) == \
        ["LJ001-0002.wav", "LJ001-0003.wav", "LJ001-0004.wav"]  # the genuine clip left out


def test_tts_into_a_folder_of_genuine_recordings_is_refused(genuine, fake_synthesisers):
    line = refused("download_ljspeech.py", "-tts", "-data_dir", genuine, "-no_progress",
                   watched=[genuine], HW2_DATA_DIR=str(genuine), PATH=fake_synthesisers)
    assert line == (f"error: {genuine / 'LJSpeech-1.1'} holds genuine recordings (wavs/ "
                    "without tts_manifest.tsv); render into another -data_dir")


def test_tts_into_the_folder_of_its_source_metadata_is_refused(tmp_path, fake_synthesisers):
    """Without HW2_DATA_DIR, -tts reads ./data/LJSpeech-1.1/metadata.csv: rendering beside
    it would make its own wavs pass for genuine ones later."""
    write_corpus(tmp_path / "data" / "LJSpeech-1.1", ["LJ001-0001|One.|one."])
    line = refused("download_ljspeech.py", "-tts", "-no_progress", watched=[tmp_path / "data"],
                   cwd=tmp_path, HW2_DATA_DIR="", PATH=fake_synthesisers)
    assert line == ("error: data/LJSpeech-1.1/metadata.csv lies in the destination "
                    "data/LJSpeech-1.1; render from a metadata.csv elsewhere (-metadata) or "
                    "into another -data_dir")


def test_a_synthesiser_that_writes_no_wav_is_one_line_naming_clip_and_engine(
        genuine, tmp_path, fake_synthesisers):
    engine = dl_lj.choose_voice(42, 1)["engine"]  # LJ001-0001 is genuine: LJ001-0002 is first
    line = refused("download_ljspeech.py", "-tts", "-data_dir", tmp_path / "out", "-limit", 1,
                   "-processes", 1, "-no_progress", watched=[genuine],
                   HW2_DATA_DIR=str(genuine), PATH=fake_synthesisers)
    assert line == (f"error: clip LJ001-0002: {engine} exited 0 but wrote no wav (rendering "
                    f"into {tmp_path / 'out' / 'LJSpeech-1.1'})")


@pytest.mark.skipif(not all(map(shutil.which, ["espeak-ng", "flite", "text2wave"])),
                    reason="synthesisers not installed (apt-get install espeak-ng flite festival "
                           "festvox-us-slt-hts)")
def test_tts_under_a_file_size_limit_is_one_line_and_leaves_no_partial_wav(genuine, tmp_path):
    """A full disk in a rendering worker reaches the parent as one line (not a worker that
    dies silently and leaves the pool waiting)."""
    def limit_file_size():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit get EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (16_000, 16_000))  # a wav is ~40 KB

    environ = {**os.environ, "HW2_DATA_DIR": str(genuine)}
    proc = subprocess.run([sys.executable, str(REPO / "download_ljspeech.py"), "-tts",
                           "-data_dir", str(tmp_path / "out"), "-limit", "1", "-processes", "1",
                           "-no_progress"], env=environ, capture_output=True, text=True,
                          timeout=120, preexec_fn=limit_file_size)
    wav = tmp_path / "out" / "LJSpeech-1.1" / "wavs" / "LJ001-0002.wav"
    assert error_line(proc) == (f"error: clip LJ001-0002: {wav}: could not be written (File too "
                                "large); the previous file, if any, is unchanged (rendering "
                                f"into {wav.parent.parent})")
    assert list(wav.parent.iterdir()) == []  # neither the wav nor a temporary


def test_download_octmnist_writes_to_dot_data_and_only_reads_hw2_data_dir(genuine, tmp_path):
    source = oct_file(tmp_path / "small.npz", 10)
    work = tmp_path / "work"
    work.mkdir()
    before = checksums(genuine)
    proc = run("download_octmnist.py", "-source", source, cwd=work, HW2_DATA_DIR=str(genuine))
    assert proc.returncode == 0, proc.stderr
    assert checksums(genuine) == before
    assert (work / "data" / "octmnist.npz").read_bytes() == source.read_bytes()


def test_download_octmnist_source_folder_is_one_line(tmp_path):
    (tmp_path / "folder.npz").mkdir()
    line = refused("download_octmnist.py", "-source", tmp_path / "folder.npz", "-data_dir",
                   tmp_path / "dest", watched=[tmp_path])
    assert line == f"error: {tmp_path / 'folder.npz'}: is a folder, not an .npz file"
    assert not (tmp_path / "dest").exists()


# ---------------------------------------------------------------------------------------------
# 2. A results file of another configuration is replaced only with -force
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """A data folder whose LJSpeech-1.1 has the real split positions (10,482 clips in the
    metadata) and audio for six training, two validation and two test clips of 0.3 s."""
    ids = [f"LJ{i:05d}" for i in range(10482)]
    words = ["alpha", "beta", "gamma", "delta", "omega", "sigma"]
    lines = [f"{clip}|{words[i % 6]}|{words[i % 6]}" for i, clip in enumerate(ids)]
    folder = tmp_path_factory.mktemp("corpus")
    write_corpus(folder / "LJSpeech-1.1", lines,
                 [ids[i] for i in (0, 1, 2, 3, 4, 5, 9825, 9826, 10480, 10481)], seconds=0.3)
    return folder


def seeded_out(tmp_path: Path, *committed: str) -> Path:
    """A -out_dir holding copies of committed results files and the figures of their runs."""
    out = tmp_path / "out"
    (out / "report" / "results").mkdir(parents=True)
    (out / "plots").mkdir()
    for name in committed:
        shutil.copy(REPO / "report" / "results" / name, out / "report" / "results" / name)
        for figure in (REPO / "plots").glob(f"{name.split('.')[0]}-*.png"):
            shutil.copy(figure, out / "plots" / figure.name)
    return out


def corpus_change(corpus: Path) -> str:
    """How the committed q3-lstm.json's corpus differs from the tests' small one."""
    recorded = json.loads((REPO / "report" / "results" / f"{Q3_LSTM_NAME}.json").read_text())
    digest = load_script("hw2-q3.py").LJSpeech(corpus / "LJSpeech-1.1").digest()
    return f"data corpus_sha256 {recorded['data']['corpus_sha256']} -> {digest}"


def q3_flags(corpus: Path, tmp_path: Path, out: Path) -> list:
    return ["-data_dir", corpus, "-out_dir", out, "-cache_dir", tmp_path / "cache",
            "-real_dir", tmp_path / "none"]


def test_q3_smoke_run_does_not_replace_committed_results_and_force_does(corpus, tmp_path):
    """The issue's case: hw2-q3.py -train_clips 6 used to replace q3-lstm.json, its test
    log, the analysis and the figures. The committed command with smoke sizes is refused
    before it reads a clip; with -force it runs and replaces the file."""
    out = seeded_out(tmp_path, *(f"{Q3_LSTM_NAME}{end}" for end in
                                 (".json", "-analysis.json", "-test-log.txt")))
    smoke = [*Q3_LSTM, "-epochs", "1", "-train_clips", "6", "-eval_clips", "2",
             *q3_flags(corpus, tmp_path, out)]
    line = refused("hw2-q3.py", *smoke, watched=[out, corpus])
    results = out / "report" / "results" / f"{Q3_LSTM_NAME}.json"
    assert line == (f"error: {results} records another configuration (epochs 11 -> 1, "
                    f"eval_clips None -> 2, train_clips None -> 6, {corpus_change(corpus)}); "
                    f"{FORCE_HINT}")
    assert not (tmp_path / "cache").exists()  # stopped before computing any feature
    proc = run("hw2-q3.py", *smoke, "-force")
    assert proc.returncode == 0, proc.stderr
    config = json.loads(results.read_text())["config"]
    assert (config["train_clips"], config["epochs"], config["force"]) == (6, 1, True)


def test_q3_analysis_only_of_another_configuration_is_refused(corpus, tmp_path):
    out = seeded_out(tmp_path, f"{Q3_LSTM_NAME}.json", f"{Q3_LSTM_NAME}-analysis.json")
    line = refused("hw2-q3.py", *Q3_LSTM, "-epochs", "11", "-analysis_only", "-encoder_layers",
                   "4", *q3_flags(corpus, tmp_path, out), watched=[out, corpus])
    results_file = out / "report" / "results" / f"{Q3_LSTM_NAME}.json"
    assert line == (f"error: {results_file} records another "
                    f"configuration (encoder_layers 2 -> 4, {corpus_change(corpus)}); "
                    f"{FORCE_HINT}")


def test_the_committed_commands_pass_and_run_control_flags_do_not_count():
    """reproduce.sh's commands, with other run-control flags, replace their own files."""
    q2, q3 = load_script("hw2-q2.py"), load_script("hw2-q3.py")
    for name, args in [
            (Q3_LSTM_NAME, q3.parse_args([*Q3_LSTM, "-epochs", "11", "-workers", "2",
                                          "-data_dir", "elsewhere", "-out_dir", "o",
                                          "-cache_dir", "c"])),
            ("q2", q2.parse_args(["-sweep", "-jobs", "1", "-threads", "2", "-device", "cpu"]))]:
        recorded = json.loads((REPO / "report" / "results" / f"{name}.json").read_text())
        assert results.config_changes(recorded["config"], vars(args)) == []
    changes = results.config_changes({"lr": 0.1, "old_flag": None, "gone": 3},
                                     {"lr": 0.2, "new_flag": False, "tag": "", "added": 4})
    assert changes == ["added unset -> 4", "lr 0.1 -> 0.2"]  # a removed flag: nothing to compare


@pytest.fixture(scope="module")
def oct_data(tmp_path_factory) -> Path:
    """A data folder with a small octmnist.npz (40 images a split) that is not synthetic."""
    folder = tmp_path_factory.mktemp("oct")
    oct_file(folder / "octmnist.npz", 40, seed=1)
    return folder


def test_q2_sweep_smoke_run_does_not_replace_committed_results(oct_data, tmp_path):
    out = seeded_out(tmp_path, "q2.json")
    line = refused("hw2-q2.py", "-sweep", "-epochs", "1", "-subset", "50", "-data_dir",
                   oct_data, "-out_dir", out, "-no_progress", watched=[out, oct_data])
    assert line == (f"error: {out / 'report' / 'results' / 'q2.json'} records another "
                    f"configuration (epochs 15 -> 1, subset None -> 50); {FORCE_HINT}")


def test_q2_sweep_on_other_data_does_not_replace_committed_results(oct_data, tmp_path):
    """The committed flags exactly, on another octmnist.npz: refused once the file is read,
    before any training."""
    out = seeded_out(tmp_path, "q2.json")
    recorded = json.loads((out / "report" / "results" / "q2.json").read_text())["data"]["md5"]
    other = octmnist.md5sum(oct_data / "octmnist.npz")
    line = refused("hw2-q2.py", "-sweep", "-jobs", "2", "-data_dir", oct_data, "-out_dir", out,
                   "-no_progress", watched=[out, oct_data])
    assert line == (f"error: {out / 'report' / 'results' / 'q2.json'} records another "
                    f"configuration (data md5 {recorded} -> {other}); {FORCE_HINT}")


def test_q2_single_run_with_other_epochs_needs_force(oct_data, tmp_path):
    out = tmp_path / "out"
    common = ["-data_dir", oct_data, "-out_dir", out, "-no_progress", "-threads", "1"]
    assert run("hw2-q2.py", *common, "-epochs", "1").returncode == 0
    results = out / "report" / "results" / "q2-run-0.01-0.7-0-sgd-False.json"
    line = refused("hw2-q2.py", *common, "-epochs", "2", watched=[out / "report",
                                                                   out / "plots", oct_data])
    assert line == f"error: {results} records another configuration (epochs 1 -> 2); {FORCE_HINT}"
    proc = run("hw2-q2.py", *common, "-epochs", "2", "-force")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(results.read_text())["config"]["epochs"] == 2


# ---------------------------------------------------------------------------------------------
# 3. -real_images is a check set of a few genuine images
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def stand_in(tmp_path_factory) -> Path:
    """The synthetic stand-in, as download_octmnist.py -synthetic writes it (fewer images)."""
    path = tmp_path_factory.mktemp("stand_in") / "octmnist.npz"
    counts = {"train": (6, 3, 3, 8), "val": (2, 1, 1, 2), "test": (5, 5, 5, 5)}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(synthetic_oct, "SPLIT_COUNTS", counts)
        dl_oct.write_synthetic(path, seed=0)
    return path


@pytest.mark.parametrize("check,message", [
    ("stand_in", ": is the synthetic stand-in, a training file, not a check set of genuine "
                 "images (-real_images)"),
    ("training", ": is the training file, not a check set (-real_images)"),
    ("large", ": holds 600 images; a check set of genuine images has at most 500 "
              "(-real_images)"),
    ("folder", " is a folder, not an .npz file (-real_images)"),
])
def test_q2_real_images_must_be_a_small_check_set(oct_data, stand_in, tmp_path, check,
                                                  message):
    path = {"stand_in": stand_in, "training": oct_data / "octmnist.npz",
            "large": tmp_path / "large.npz", "folder": tmp_path / "folder.npz"}[check]
    if check == "large":
        oct_file(path, 200)
    if check == "folder":
        path.mkdir()
    out = tmp_path / "out"
    line = refused("hw2-q2.py", "-data_dir", oct_data, "-real_images", path, "-out_dir", out,
                   "-epochs", "1", "-no_progress", watched=[oct_data, stand_in.parent, out])
    assert line == f"error: {path}{message}"


def test_real_octmnist_is_not_a_check_set():
    """OCTMNIST itself (its MD5) cannot be made here: the check is called on its description."""
    arrays = {f"{s}_{k}": np.zeros((1, 28, 28) if k == "images" else (1, 1), np.uint8)
              for s in octmnist.SPLITS for k in ("images", "labels")}
    real = octmnist.OctFile(Path("octmnist.npz"), arrays, octmnist.REAL_MD5, None)
    with pytest.raises(SystemExit, match=r"^error: octmnist.npz: is OCTMNIST itself, a training "
                                         r"file, not a check set of genuine images"):
        octmnist.check_is_check_set(real)


# ---------------------------------------------------------------------------------------------
# 4. Broken data: non-finite audio, repeated ids, empty metadata
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("clip", ["LJ00000", "LJ09825"])  # a training and a validation clip
def test_q3_non_finite_audio_is_refused_naming_the_file(corpus, tmp_path, clip):
    data = tmp_path / "data"
    shutil.copytree(corpus, data)
    wav = data / "LJSpeech-1.1" / "wavs" / f"{clip}.wav"
    audio, rate = soundfile.read(str(wav), dtype="float32")
    audio[100] = np.nan
    soundfile.write(str(wav), audio, rate, subtype="FLOAT")
    out = tmp_path / "out"
    line = refused("hw2-q3.py", "-decoder", "lstm", "-epochs", "1", "-workers", "0",
                   "-no_progress", *q3_flags(data, tmp_path, out), watched=[data, out])
    assert line == f"error: {wav}: 1 of its {len(audio)} samples are NaN or infinite"
    assert not (out / "report" / "results" / "q3-lstm.json").exists()


@pytest.mark.parametrize("script", ["hw2-q3.py", "download_ljspeech.py"])
@pytest.mark.parametrize("lines,message", [
    (["LJ001-0001|One.|one.", "LJ001-0002|Two.|two.", "LJ001-0001|Again.|again."],
     ":3: clip id LJ001-0001 repeats line 1"),
    ([], ": no clips (LJ Speech metadata has one 'id|text|normalized text' line per clip)"),
])
def test_repeated_ids_and_empty_metadata_are_refused(tmp_path, fake_synthesisers, script,
                                                     lines, message):
    folder = write_corpus(tmp_path / "data" / "LJSpeech-1.1", lines,
                          ["LJ001-0001", "LJ001-0002"])
    if not lines:
        (folder / "metadata.csv").write_text("")
    flags = {"hw2-q3.py": ["-decoder", "lstm", "-workers", "0", "-no_progress",
                           *q3_flags(tmp_path / "data", tmp_path, tmp_path / "out")],
             "download_ljspeech.py": ["-tts", "-metadata", folder / "metadata.csv",
                                      "-data_dir", tmp_path / "out", "-no_progress"]}[script]
    line = refused(script, *flags, watched=[tmp_path / "data", tmp_path / "out"],
                   PATH=fake_synthesisers)
    assert line == f"error: {folder / 'metadata.csv'}{message}"
