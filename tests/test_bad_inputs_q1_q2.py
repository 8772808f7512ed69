"""Bad inputs and faults against hw2-q1.py, hw2-q2.py and download_octmnist.py (issue 15).

Each case ends in one error line that names the flag or file, with exit status != 0 and
no traceback, and leaves no results file behind (an existing one intact). The scripts run
as subprocesses wherever the exit status, signals or process handling are what is tested;
usage errors (argparse's exit status 2) and the -resume identity cases, whose SystemExit
says it all, run in this process. The data are a 200-image stand-in, and training runs use
one thread and a few steps.
"""
from __future__ import annotations

import os
import re
import resource
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import torch

from hw2 import checkpoints, synthetic_oct
from conftest import REPO, load_script

q1 = load_script("hw2-q1.py")
q2 = load_script("hw2-q2.py")
dl = load_script("download_octmnist.py")

SMALL_COUNTS = {"train": (60, 30, 30, 80), "val": (20, 10, 10, 20), "test": (250, 250, 250, 250)}
RUN_NAME = "q2-run-0.01-0.7-0-sgd-False"  # the results file of a default single run
CHECKPOINT = "0.01-0.7-0-sgd-False-seed42.pt"


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """A folder with a small synthetic octmnist.npz (full test split: the 529-image subset
    exists)."""
    folder = tmp_path_factory.mktemp("data")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(synthetic_oct, "SPLIT_COUNTS", SMALL_COUNTS)
        dl.write_synthetic(folder / "octmnist.npz", seed=0)
    return folder


@pytest.fixture
def one_thread():
    """In-process training on one thread (the other tests' setting is restored after)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def run(script: str, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / script), *map(str, args)],
                          capture_output=True, text=True, timeout=300)


def q2_args(data: Path, out: Path, *extra) -> list[str | Path]:
    """A one-thread hw2-q2.py run on the small data, writing under `out`."""
    return ["-data_dir", data, "-out_dir", out, "-no_progress", "-threads", "1", *extra]


def error_line(proc: subprocess.CompletedProcess, status: int) -> str:
    """The one error line a failed script printed: no traceback, nothing else on stderr
    but argparse's usage block before a usage error (status 2)."""
    assert proc.returncode == status, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    if status == 2:
        assert lines[0].startswith("usage:")
        assert all(line.startswith(" ") for line in lines[1:-1]), proc.stderr
    else:
        assert len(lines) == 1, proc.stderr
    return lines[-1]


def usage_error(parse_args, argv: list, capsys) -> str:
    """The error line of parse_args(argv), which must end the script with argparse's usage
    block, that line and exit status 2."""
    with pytest.raises(SystemExit) as stop:
        parse_args([str(a) for a in argv])
    assert stop.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[0].startswith("usage:") and all(line.startswith(" ") for line in lines[1:-1])
    return lines[-1]


def written_files(out: Path) -> list[Path]:
    """Results, figures, locks and temporary files under `out` (checkpoints aside)."""
    return [p for p in out.rglob("*") if p.is_file() and "checkpoints" not in p.parts]


def previous_results(out: Path, name: str) -> Path:
    """An earlier results file `name`.json under `out`, which a failed run must leave intact."""
    path = out / "report" / "results" / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text('{"earlier": "run"}\n')
    return path


# ---------------------------------------------------------------------------------------------
# hw2-q1.py
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("flag,value,message", [  # test_q1.py runs -K 1 as a subprocess
    ("-K", 1, "need -D >= 1, -K >= 2 and -repeats >= 1"),
    ("-D", 0, "need -D >= 1, -K >= 2 and -repeats >= 1"),
    ("-repeats", 0, "need -D >= 1, -K >= 2 and -repeats >= 1"),
    ("-seed", -1, "argument -seed: must lie in 0..4294967295 (got -1)"),
])
def test_q1_bad_value_is_a_usage_error(capsys, flag, value, message):
    assert message in usage_error(q1.parse_args, [flag, value], capsys)


def test_q1_k_beyond_memory_stops_with_the_memory_it_would_need(tmp_path):
    kept = previous_results(tmp_path, "q1")
    proc = run("hw2-q1.py", "-K", 40, "-out_dir", tmp_path)
    line = error_line(proc, 1)
    assert line.startswith("error: -D 32 -K 40: the timings (L up to ")
    assert " would need about " in line and " GiB is available; use a smaller -K or -D" in line
    assert written_files(tmp_path) == [kept] and kept.read_text() == '{"earlier": "run"}\n'


def test_q1_absurd_k_and_d_do_not_hang_computing_the_memory(tmp_path):
    proc = run("hw2-q1.py", "-K", 10 ** 9, "-D", 10 ** 9, "-out_dir", tmp_path)
    assert "would need more than 1e300 GiB of memory" in error_line(proc, 1)


def test_q1_unwritable_out_dir_fails_before_any_work(tmp_path):
    (tmp_path / "file").write_text("")
    proc = run("hw2-q1.py", "-out_dir", tmp_path / "file" / "out")
    line = error_line(proc, 1)
    assert f"{tmp_path / 'file' / 'out'}" in line and "(-out_dir) is not a writable folder" in line


# ---------------------------------------------------------------------------------------------
# hw2-q2.py: flags
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("flags,message", [
    (["-learning_rate", "nan"], "argument -learning_rate: must be a finite number > 0 (got nan)"),
    (["-learning_rate", "inf"], "argument -learning_rate: must be a finite number > 0 (got inf)"),
    (["-learning_rate", "-1"], "argument -learning_rate: must be a finite number > 0 (got -1)"),
    (["-learning_rate", "0"], "argument -learning_rate: must be a finite number > 0 (got 0)"),
    (["-sweep", "-learning_rates", "0.1", "nan"],
     "argument -learning_rates: must be a finite number > 0 (got nan)"),
    (["-l2_decay", "-1"], "argument -l2_decay: must be a finite number >= 0 (got -1)"),
    (["-dropout", "1"], "argument -dropout: must lie in [0, 1) (got 1.0)"),
    (["-epochs", "0"], "argument -epochs: must be a positive integer (got 0)"),
    (["-batch_size", "0"], "argument -batch_size: must be a positive integer (got 0)"),
    (["-subset", "0"], "argument -subset: must be a positive integer (got 0)"),
    (["-sweep", "-jobs", "0"], "argument -jobs: must be a positive integer (got 0)"),
    (["-threads", "-3"], "argument -threads: must be a positive integer (got -3)"),
    (["-seed", "-1"], "argument -seed: must lie in 0..4294967295 (got -1)"),
    (["-device", "nonsense"], "argument -device: nonsense is not usable here"),
])
def test_q2_bad_flag_is_a_usage_error(capsys, flags, message):
    assert message in usage_error(q2.parse_args, flags, capsys)


def test_q2_nan_learning_rate_stops_before_anything_is_written(tmp_path):
    """The issue's case end to end: it used to train on NaN and exit 0 with results."""
    proc = run("hw2-q2.py", "-out_dir", tmp_path, "-learning_rate", "nan")
    assert error_line(proc, 2) == ("hw2-q2.py: error: argument -learning_rate: must be a "
                                   "finite number > 0 (got nan)")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")
def test_q2_device_cuda_without_a_gpu_is_a_usage_error(capsys):
    assert "argument -device: cuda: no CUDA GPU is available here (use -device cpu)" in \
        usage_error(q2.parse_args, ["-device", "cuda"], capsys)


# ---------------------------------------------------------------------------------------------
# hw2-q2.py: data and output folders
# ---------------------------------------------------------------------------------------------
def test_q2_corrupt_data_file_is_a_one_line_error(tmp_path):
    (tmp_path / "octmnist.npz").write_bytes(b"not a zip file")
    proc = run("hw2-q2.py", *q2_args(tmp_path, tmp_path / "out"))
    assert f"{tmp_path / 'octmnist.npz'}: not a readable .npz file" in error_line(proc, 1)
    assert written_files(tmp_path / "out") == []


def test_q2_missing_real_images_file_is_a_one_line_error(data, tmp_path):
    proc = run("hw2-q2.py", *q2_args(data, tmp_path, "-real_images", tmp_path / "none.npz"))
    assert error_line(proc, 1) == f"error: {tmp_path / 'none.npz'} not found (-real_images)"
    assert written_files(tmp_path) == []


@pytest.mark.parametrize("content,message", [
    (b"not a zip file", "not a readable .npz file"),
    (None, "missing key train_images"),  # a valid .npz without the OCTMNIST keys
])
def test_q2_bad_real_images_file_is_a_one_line_error_naming_it(data, tmp_path, content,
                                                              message):
    bad = tmp_path / "kermany.npz"
    if content is None:
        np.savez(bad, images=np.zeros((2, 28, 28), np.uint8))
    else:
        bad.write_bytes(content)
    proc = run("hw2-q2.py", *q2_args(data, tmp_path / "out", "-real_images", bad))
    line = error_line(proc, 1)
    assert line.startswith(f"error: {bad}: ") and message in line
    assert written_files(tmp_path / "out") == []


@pytest.mark.parametrize("flag", ["-out_dir", "-checkpoint_dir"])
def test_q2_unwritable_output_folder_fails_before_training(data, tmp_path, flag):
    (tmp_path / "file").write_text("")
    folder = tmp_path / "file" / "sub"
    args = {"-out_dir": tmp_path / "out", "-checkpoint_dir": tmp_path / "ck", flag: folder}
    proc = run("hw2-q2.py", "-data_dir", data, "-threads", "1",
               *[str(x) for pair in args.items() for x in pair])
    line = error_line(proc, 1)
    assert line.startswith(f"error: {folder}") and f"({flag}) is not a writable folder" in line
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == ["file"]


# ---------------------------------------------------------------------------------------------
# hw2-q2.py: failed training, locks
# ---------------------------------------------------------------------------------------------
def test_q2_diverging_training_stops_with_status_1_and_writes_nothing(data, tmp_path):
    name = "q2-run-1e+30-0.7-0-sgd-False"
    kept = previous_results(tmp_path, name)
    proc = run("hw2-q2.py", *q2_args(data, tmp_path, "-learning_rate", "1e30", "-epochs", "2"))
    assert error_line(proc, 1) == (
        "error: training diverged: loss nan at epoch 1, step 2 of 25 (1e+30-0.7-0-sgd-False); "
        "nothing was written for it; lower the learning rate")
    assert written_files(tmp_path) == [kept] and kept.read_text() == '{"earlier": "run"}\n'
    assert list((tmp_path / "checkpoints" / "q2").iterdir()) == []  # epoch 1 never saved


def test_q2_diverging_sweep_group_stops_the_sweep(data, tmp_path):
    proc = run("hw2-q2.py", *q2_args(data, tmp_path, "-sweep", "-learning_rates", "1e30",
                                      "0.01", "-epochs", "1", "-jobs", "2"))
    assert re.fullmatch(  # the first group to fail, by its worker's error line
        r"error: sweep group ([01]) \((no )?max-pool, learning rates 1e\+30, 0.01\) failed: "
        r"training diverged: loss nan at epoch 1, step 2 of 25 \(1e\+30-0.7-0-sgd-\w+\); "
        r"nothing was written for it; lower the learning rate", error_line(proc, 1))
    assert written_files(tmp_path) == []


@pytest.mark.parametrize("lock", ["results", "checkpoint"])
def test_q2_second_run_writing_the_same_files_stops_at_the_lock(data, tmp_path, lock):
    checkpoint = tmp_path / "checkpoints" / "q2" / CHECKPOINT
    lock_path, what = {
        "results": (tmp_path / "report" / "results" / f"{RUN_NAME}.lock", f"{RUN_NAME}.json"),
        "checkpoint": (checkpoint.with_suffix(".lock"), f"the checkpoint {checkpoint}")}[lock]
    with checkpoints.exclusive(lock_path, "its files"):  # this process plays the first run
        proc = run("hw2-q2.py", *q2_args(data, tmp_path, "-epochs", "1"))
        assert lock_path.exists()  # the second run left the first one's lock alone
    assert error_line(proc, 1) == (f"error: {lock_path}: process {os.getpid()} is already "
                                   f"writing {what}; wait for it to finish or use another "
                                   "-out_dir")
    assert written_files(tmp_path) == []  # and the lock file went with the first run


def test_q2_finished_run_leaves_no_lock_or_temporary_file(data, tmp_path):
    proc = run("hw2-q2.py", *q2_args(data, tmp_path, "-epochs", "1"))
    assert proc.returncode == 0, proc.stderr
    assert not [p for p in tmp_path.rglob("*") if p.suffix in (".lock", ".tmp")]
    assert (tmp_path / "checkpoints" / "q2" / CHECKPOINT).exists()  # under -out_dir


# ---------------------------------------------------------------------------------------------
# hw2-q2.py: -resume continues only the same run
# ---------------------------------------------------------------------------------------------
@pytest.fixture
def one_epoch_run(data, tmp_path, one_thread) -> Path:
    """The output folder of a finished one-epoch single run (its checkpoint inside)."""
    q2.main(["-data_dir", str(data), "-out_dir", str(tmp_path / "out"), "-no_progress",
             "-epochs", "1"])
    return tmp_path / "out"


def test_q2_resume_with_other_epochs_is_refused_naming_the_field(data, one_epoch_run):
    results = one_epoch_run / "report" / "results" / f"{RUN_NAME}.json"
    before = results.read_bytes()
    proc = run("hw2-q2.py", *q2_args(data, one_epoch_run, "-epochs", "2", "-resume", "-force"))
    checkpoint = one_epoch_run / "checkpoints" / "q2" / CHECKPOINT
    assert error_line(proc, 1) == (f"error: -resume: {checkpoint} is another run (epochs 1 -> "
                                   "2); run without -resume, or delete it, to start afresh")
    assert results.read_bytes() == before


def _other_data(data: Path, folder: Path) -> Path:
    """A copy of the data with one pixel changed: same shapes, another MD5."""
    with np.load(data / "octmnist.npz") as d:
        arrays = dict(d)
    arrays["train_images"][0, 0, 0] ^= 1
    folder.mkdir()
    np.savez(folder / "octmnist.npz", **arrays)
    return folder


def _check_set(data: Path, path: Path) -> Path:
    """A small check file in OCTMNIST's schema (10 images a split), not the training file."""
    with np.load(data / "octmnist.npz") as d:
        np.savez(path, **{k: v[:10] for k, v in d.items()})
    return path


@pytest.mark.parametrize("change,field", [
    (lambda data, tmp: ["-batch_size", "4"], "batch_size 8 -> 4"),
    (lambda data, tmp: ["-subset", "100"], "subset None -> 100"),
    (lambda data, tmp: ["-data_dir", str(_other_data(data, tmp / "other"))], "data_md5 '"),
    (lambda data, tmp: ["-real_images", str(_check_set(data, tmp / "check.npz"))],
     "real_images_md5 "),
])
def test_q2_resume_with_any_other_setting_is_refused(data, tmp_path, one_epoch_run, change,
                                                     field):
    args = ["-data_dir", str(data), "-out_dir", str(one_epoch_run), "-no_progress",
            "-epochs", "1", "-resume", "-force", *change(data, tmp_path)]
    with pytest.raises(SystemExit, match=r"^error: -resume: .* is another run") as stop:
        q2.main(args)
    assert field in str(stop.value.code)


@pytest.mark.parametrize("content,message", [
    (b"truncated", r"unreadable checkpoint \(\w+\); delete it to start afresh"),
    (None, r"records no run identity \(an older version wrote it\)"),
])
def test_q2_resume_from_a_broken_or_old_checkpoint_is_a_one_line_error(data, one_epoch_run,
                                                                      content, message):
    checkpoint = one_epoch_run / "checkpoints" / "q2" / CHECKPOINT
    if content is None:
        state = torch.load(checkpoint, weights_only=False)
        del state["identity"]
        torch.save(state, checkpoint)
    else:
        checkpoint.write_bytes(content)
    with pytest.raises(SystemExit, match=message):
        q2.main(["-data_dir", str(data), "-out_dir", str(one_epoch_run), "-no_progress",
                 "-epochs", "1", "-resume"])


def test_q2_truncated_finished_run_file_is_a_one_line_error(tmp_path):
    path = tmp_path / "0.1-0.7-0-sgd-False-seed42.json"
    path.write_text('{"identity": {"epo')
    with pytest.raises(SystemExit, match=rf"^error: {re.escape(str(path))}: unreadable "
                                         r"finished-run file \(JSONDecodeError\)"):
        q2.load_finished_run(path, {"epochs": 1})


def test_q2_resume_does_not_publish_a_smoke_sweeps_runs(data, tmp_path, one_thread):
    """The issue's case: a 1-epoch smoke sweep, then the full sweep with -resume."""
    common = ["-data_dir", str(data), "-out_dir", str(tmp_path), "-no_progress", "-sweep"]
    q2.main([*common, "-epochs", "1"])
    results = tmp_path / "report" / "results" / "q2.json"
    before = results.read_bytes()
    finished = tmp_path / "checkpoints" / "q2" / "0.1-0.7-0-sgd-False-seed42.json"
    with pytest.raises(SystemExit, match=rf"^error: -resume: {re.escape(str(finished))} is "
                                         r"another run \(epochs 1 -> 2\)"):
        q2.main([*common, "-epochs", "2", "-resume", "-force"])
    assert results.read_bytes() == before


def test_q2_two_output_folders_never_share_checkpoints(data, one_epoch_run, tmp_path):
    other = tmp_path / "other"
    q2.main(["-data_dir", str(data), "-out_dir", str(other), "-no_progress", "-epochs", "1",
             "-batch_size", "4", "-resume"])  # would be refused if it saw the first checkpoint
    assert (other / "checkpoints" / "q2" / CHECKPOINT).exists()


# ---------------------------------------------------------------------------------------------
# hw2-q2.py -sweep -jobs 2: interruption, a failing group, a killed parent
# ---------------------------------------------------------------------------------------------
TAG = "HW2_TEST_SWEEP"  # set in a sweep's environment: its pool's command lines do not name it


def start_sweep(data: Path, out: Path, *extra) -> subprocess.Popen:
    """hw2-q2.py -sweep -jobs 2 in a session of its own, its processes tagged with `out`."""
    return subprocess.Popen(
        [sys.executable, str(REPO / "hw2-q2.py"),
         *map(str, q2_args(data, out, "-sweep", "-jobs", "2", *extra))],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True,
        env={**os.environ, TAG: str(out), "PYTHONFAULTHANDLER": "1"})


def sweep_stderr(process: subprocess.Popen, timeout: float) -> str:
    """The sweep's stderr once it has ended. One that does not end within `timeout` fails the
    test with every process's Python stacks: SIGABRT makes each (PYTHONFAULTHANDLER, set by
    start_sweep) write all its threads' tracebacks to the shared stderr before it dies."""
    try:
        return process.communicate(timeout=timeout)[1]
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGABRT)
        try:
            stacks = process.communicate(timeout=30)[1]
        except subprocess.TimeoutExpired:
            stacks = "(no stacks within 30 s)"
        pytest.fail(f"the sweep did not end within {timeout} s; its processes' stacks:\n{stacks}")


def sweep_processes(out: Path) -> dict[int, str]:
    """The live processes tagged with `out` (the sweep, its pool's workers and multiprocessing's
    resource tracker), pid -> command line, from Linux /proc. Zombies count as ended: this
    machine's init may never reap an orphan."""
    found = {}
    for entry in Path("/proc").iterdir():
        try:
            if (entry.name.isdigit()
                    and f"{TAG}={out}".encode() in (entry / "environ").read_bytes().split(b"\0")
                    and (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"):
                found[int(entry.name)] = (entry / "cmdline").read_bytes().decode()
        except OSError:  # ended meanwhile, or not ours
            pass
    return found


def survivors(out: Path, seconds: float = 10) -> dict[int, str]:
    """sweep_processes(out) once they have ended, or after `seconds`."""
    deadline = time.monotonic() + seconds
    while (left := sweep_processes(out)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


def wait_for_checkpoints(process: subprocess.Popen, folder: Path) -> None:
    """Until both groups are past epoch 1."""
    deadline = time.monotonic() + 120
    while len(list(folder.glob("*.pt"))) < 2:
        assert process.poll() is None and time.monotonic() < deadline, "no checkpoints"
        time.sleep(0.2)


@contextmanager
def long_sweep(data: Path, out: Path) -> Iterator[subprocess.Popen]:
    """A 500-epoch `-sweep -jobs 2` once both groups are past epoch 1; on the way out its
    whole process group is killed (the group outlives its leader while any is left)."""
    process = start_sweep(data, out, "-epochs", "500")
    try:
        wait_for_checkpoints(process, out / "checkpoints" / "q2")
        yield process
    finally:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:  # every process of the group has ended
            pass


def assert_resumable(folder: Path, epochs: int) -> None:
    """Only checkpoints are left in `folder` (no lock, no temporary file), each past epoch 1."""
    for path in folder.iterdir():
        assert path.suffix == ".pt"
        state = torch.load(path, weights_only=False)
        assert state["epoch"] >= 1 and state["identity"]["epochs"] == epochs


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs Linux /proc to find processes")
@pytest.mark.parametrize("how", ["SIGTERM to the parent", "Ctrl-C (SIGINT to the group)"])
def test_q2_interrupted_sweep_stops_its_processes_and_keeps_resumable_checkpoints(
        data, tmp_path, how):
    out = tmp_path / "out"
    process = start_sweep(data, out, "-epochs", "500")
    checkpoints = out / "checkpoints" / "q2"
    try:
        wait_for_checkpoints(process, checkpoints)
        running = sweep_processes(out)
        workers = [pid for pid, cmd in running.items() if "--multiprocessing-fork" in cmd]
        assert len([process.pid, *workers]) == 3  # the sweep and its two groups
        assert process.pid in running
        if how.startswith("SIGTERM"):
            process.send_signal(signal.SIGTERM)
        else:
            os.killpg(process.pid, signal.SIGINT)
        stderr = sweep_stderr(process, 120)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 1 and "Traceback" not in stderr
    assert stderr.strip().splitlines() == [
        f"error: interrupted; every finished epoch is kept in {checkpoints}: rerun with "
        "-resume to continue"]
    assert survivors(out) == {}
    assert written_files(out) == []  # no results, figures, locks or temporary files
    assert_resumable(checkpoints, 500)


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs Linux /proc to find processes")
def test_q2_sweep_processes_die_with_a_killed_parent(data, tmp_path):
    out = tmp_path / "out"
    checkpoints = out / "checkpoints" / "q2"
    with long_sweep(data, out) as process:
        process.kill()
        process.wait(timeout=30)
        assert survivors(out) == {}
    # nothing but the killed parent's results lock (its flock went with it)
    assert [p.relative_to(out) for p in written_files(out)] == [
        Path("report/results/q2.lock")]
    assert_resumable(checkpoints, 500)


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs Linux /proc to find processes")
def test_q2_sweep_with_a_killed_process_ends_in_one_line_instead_of_waiting(data, tmp_path):
    out = tmp_path / "out"
    checkpoints = out / "checkpoints" / "q2"
    with long_sweep(data, out) as process:
        worker = next(pid for pid, cmd in sweep_processes(out).items()
                      if "--multiprocessing-fork" in cmd)
        os.kill(worker, signal.SIGKILL)  # as the out-of-memory killer would
        stderr = sweep_stderr(process, 60)
    proc = subprocess.CompletedProcess(process.args, process.returncode, "", stderr)
    assert error_line(proc, 1) == (
        "error: a sweep process died before its group finished (killed, or out of memory?); "
        f"every finished epoch is kept in {checkpoints}: rerun with -resume to continue")
    assert survivors(out) == {}
    stale = list(checkpoints.glob("*.lock"))  # the killed process's (its flock went with it)
    assert len(stale) <= 1
    for lock in stale:
        lock.unlink()
    assert_resumable(checkpoints, 500)


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs Linux /proc to find processes")
def test_q2_failing_sweep_group_stops_the_other_and_ends_in_one_line(data, tmp_path):
    """Adam trains each learning rate alone: the group at 1e30 fails after one epoch while the
    group at 1e-3 would train for minutes."""
    out = tmp_path / "out"
    process = start_sweep(data, out, "-optimizer", "adam", "-learning_rates", "1e30", "1e-3",
                          "-epochs", "500")
    try:
        stderr = sweep_stderr(process, 120)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    proc = subprocess.CompletedProcess(process.args, process.returncode, "", stderr)
    assert re.fullmatch(
        r"error: sweep group [02] \((no )?max-pool, learning rates 1e\+30\) failed: training "
        r"diverged: loss nan at epoch 1, step \d+ of 25 \(1e\+30-0.7-0-adam-\w+\); nothing "
        r"was written for it; lower the learning rate", error_line(proc, 1))
    assert survivors(out) == {}
    assert written_files(out) == []
    assert not [p for p in out.rglob("*") if p.suffix in (".lock", ".tmp")]


# ---------------------------------------------------------------------------------------------
# A full disk or a file-size limit while a checkpoint, results file or figure is written
# ---------------------------------------------------------------------------------------------
def file_size_limit(size: int):
    """A preexec_fn: files of this process can grow to `size` bytes; a larger write fails
    with EFBIG (SIGXFSZ ignored rather than killing it), as on a full disk."""
    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))
    return limit


def not_written(path: Path) -> str:
    return (f"error: {path}: could not be written (File too large); the previous file, if any, "
            "is unchanged")


def test_q2_file_size_limit_on_a_checkpoint_keeps_the_previous_files(data, tmp_path):
    kept = previous_results(tmp_path, RUN_NAME)
    checkpoint = tmp_path / "checkpoints" / "q2" / CHECKPOINT
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(b"an earlier checkpoint")
    proc = subprocess.run([sys.executable, str(REPO / "hw2-q2.py"),
                           *map(str, q2_args(data, tmp_path, "-epochs", "1"))],
                          capture_output=True, text=True, timeout=300,
                          preexec_fn=file_size_limit(100_000))  # the checkpoint is ~900 kB
    assert error_line(proc, 1) == not_written(checkpoint)
    assert checkpoint.read_bytes() == b"an earlier checkpoint"
    assert written_files(tmp_path) == [kept] and kept.read_text() == '{"earlier": "run"}\n'


@pytest.mark.parametrize("writer,filename", [
    ("from hw2.results import write_results\n"
     "write_results('big', {'x': [0.5] * 100_000}, config={}, seed=0, data='x', wall_time_s=0, "
     "results_dir=folder)", "big.json"),
    ("from hw2.figures import plot_lines\n"
     "xs = list(range(10_000))\n"
     "plot_lines('big', {'x': (xs, [x % 7 for x in xs])}, 'x', 'y', plots_dir=folder)",
     "big.png"),
])
def test_file_size_limit_on_a_results_file_or_figure_keeps_the_previous_one(tmp_path, writer,
                                                                            filename):
    from matplotlib import font_manager
    assert font_manager.fontManager.ttflist  # the font cache is written now, not under the limit
    previous = tmp_path / filename
    previous.write_bytes(b"an earlier file")
    proc = subprocess.run([sys.executable, "-c", f"folder = {str(tmp_path)!r}\n{writer}"],
                          cwd=REPO, capture_output=True, text=True, timeout=300,
                          preexec_fn=file_size_limit(10_000))
    assert error_line(proc, 1) == not_written(previous)
    assert [p.name for p in tmp_path.iterdir()] == [filename]  # no temporary file left
    assert previous.read_bytes() == b"an earlier file"


# ---------------------------------------------------------------------------------------------
# download_octmnist.py
# ---------------------------------------------------------------------------------------------
def test_download_source_does_not_replace_a_different_file_without_force(data, tmp_path):
    target = tmp_path / "octmnist.npz"
    target.write_bytes(b"the file already there")
    proc = run("download_octmnist.py", "-source", data / "octmnist.npz", "-data_dir", tmp_path)
    assert error_line(proc, 1) == (f"error: {target} exists and differs from "
                                   f"{data / 'octmnist.npz'}; pass -force to replace it")
    assert target.read_bytes() == b"the file already there"
    proc = run("download_octmnist.py", "-source", data / "octmnist.npz", "-data_dir", tmp_path,
               "-force")
    assert proc.returncode == 0, proc.stderr
    assert target.read_bytes() == (data / "octmnist.npz").read_bytes()
    assert [p.name for p in tmp_path.iterdir()] == ["octmnist.npz"]  # no temporary left


def test_download_source_over_an_identical_file_is_fine(data, tmp_path):
    (tmp_path / "octmnist.npz").write_bytes((data / "octmnist.npz").read_bytes())
    proc = run("download_octmnist.py", "-source", data / "octmnist.npz", "-data_dir", tmp_path)
    assert proc.returncode == 0, proc.stderr


def test_download_synthetic_does_not_replace_a_real_file_without_force(tmp_path):
    target = tmp_path / "octmnist.npz"
    target.write_bytes(b"not synthetic")
    proc = run("download_octmnist.py", "-synthetic", "-data_dir", tmp_path)
    assert error_line(proc, 1) == (f"error: {target} exists and is not synthetic; pass "
                                   "-force to replace it")
    assert target.read_bytes() == b"not synthetic"


def test_download_bad_seed_is_a_usage_error(capsys):
    assert "argument -seed: must lie in 0..4294967295 (got -1)" in \
        usage_error(dl.parse_args, ["-synthetic", "-seed", "-1"], capsys)


def test_download_keeps_the_handed_out_root_flag(tmp_path):
    assert dl.parse_args(["--root", str(tmp_path)]).data_dir == str(tmp_path)


def test_download_unwritable_data_dir_is_a_one_line_error(tmp_path):
    (tmp_path / "file").write_text("")
    proc = run("download_octmnist.py", "-synthetic", "-data_dir", tmp_path / "file" / "data")
    assert error_line(proc, 1).startswith(f"error: {tmp_path / 'file' / 'data'} (-data_dir) "
                                          "is not a writable folder")
