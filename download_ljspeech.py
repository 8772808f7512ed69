#!/usr/bin/env python
"""Put LJ Speech 1.1 for Question 3 into LJSpeech-1.1 (metadata.csv + wavs/) under -data_dir,
else ./data ($HW2_DATA_DIR is only read from: -tts takes its metadata.csv there by default).
  default  download the real corpus (2.6 GB) through torchaudio, as the handed-out code does;
  -tts     offline: render every transcript with espeak-ng and flite voices (varied per clip
           from -seed: voice, rate, pitch, light noise) into the same layout and ids, leaving
           out the clips whose genuine recording lies beside the source metadata.
Resumable (finished clips are skipped); tts_manifest.tsv records which voice made each clip.
"""
from __future__ import annotations

import argparse
import io
import shutil
import subprocess
import tempfile
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import soundfile
import torch
import torchaudio
from tqdm import tqdm

from hw2.checkpoints import atomic_write
from hw2.cli import (DATA_DIR_ENV, fail, positive_int, resolve_data_dir, seed_value,
                     write_data_dir)
from hw2.ljspeech import SAMPLE_RATE, SPLITS, LJSpeech, parse_metadata
from hw2.results import Timer

FOLDER = "LJSpeech-1.1"
MANIFEST = "tts_manifest.tsv"
ESPEAK_VOICES = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan",
                 "en-gb-x-gbcwmd", "en-029")
ESPEAK_VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m7", "f1", "f2", "f3", "f4", "klatt", "klatt2")
FLITE_VOICES = ("slt", "rms", "awb", "kal")
FLITE_SHARE = 0.3


def choose_voice(seed: int, index: int) -> dict:
    """The speaker of clip `index`: engine, voice, rate, pitch and noise level (deterministic)."""
    rng = np.random.default_rng([seed, index])
    noise_db = round(float(rng.uniform(30, 50)), 1)  # signal-to-noise ratio
    if rng.uniform() < FLITE_SHARE:
        return {"engine": "flite", "voice": str(rng.choice(FLITE_VOICES)),
                "rate": round(float(rng.uniform(0.85, 1.2)), 3),  # duration stretch
                "pitch": int(rng.integers(85, 170)), "snr_db": noise_db}
    return {"engine": "espeak-ng",
            "voice": f"{rng.choice(ESPEAK_VOICES)}+{rng.choice(ESPEAK_VARIANTS)}",
            "rate": int(rng.integers(135, 195)), "pitch": int(rng.integers(25, 75)),
            "snr_db": noise_db}


class SynthesiserError(Exception):
    """A synthesiser failed on a clip (an ordinary exception, so a pool worker passes it on)."""


def run_synthesiser(command: list[str], **kwargs) -> None:
    try:
        subprocess.run(command, check=True, capture_output=True, **kwargs)
    except (subprocess.CalledProcessError, OSError) as err:
        stderr = getattr(err, "stderr", None) or ""
        reason = (stderr if isinstance(stderr, str) else stderr.decode(errors="replace")).strip()
        raise SynthesiserError(f"{command[0]} failed: {reason.splitlines()[0] if reason else err}")


def synthesise(text: str, voice: dict, workdir: Path) -> tuple[np.ndarray, int]:
    """Run the synthesiser; return its waveform (float32) and sample rate."""
    raw = workdir / "raw.wav"
    if voice["engine"] == "espeak-ng":
        command = ["espeak-ng", "-v", voice["voice"], "-s", str(voice["rate"]), "-p",
                   str(voice["pitch"]), "-w", str(raw), "--stdin"]
        run_synthesiser(command, input=text, text=True)
    else:
        text_file = workdir / "text.txt"
        text_file.write_text(text)
        command = ["flite", "-voice", voice["voice"], "-f", str(text_file), "-o", str(raw),
                   "--setf", f"duration_stretch={voice['rate']}",
                   "--setf", f"int_f0_target_mean={voice['pitch']}"]
        run_synthesiser(command)
    return read_output(raw, voice["engine"])


def read_output(raw: Path, engine: str) -> tuple[np.ndarray, int]:
    """The synthesiser's wav as float32 mono; an engine that exits 0 without audio is an
    error like any other failure of it."""
    if not raw.exists():
        raise SynthesiserError(f"{engine} exited 0 but wrote no wav")
    try:
        data, rate = soundfile.read(str(raw), dtype="float32", always_2d=True)
    except RuntimeError as err:  # soundfile's errors
        raise SynthesiserError(f"{engine} wrote an unreadable wav ({err})") from None
    if not len(data):
        raise SynthesiserError(f"{engine} wrote a wav without samples")
    return data.mean(axis=1), rate


def render_clip(job: tuple[str, str, dict, str, int, int]) -> str:
    """Render one clip to <wavs>/<id>.wav (written to a temporary name, then renamed)."""
    clip_id, text, voice, wav_dir, seed, index = job
    target = Path(wav_dir) / f"{clip_id}.wav"
    if target.exists():
        return "skipped"
    try:
        with tempfile.TemporaryDirectory() as tmp:
            write_wav(target, with_noise(*synthesise(text, voice, Path(tmp)), voice, seed, index))
    except SynthesiserError as err:
        raise SynthesiserError(f"clip {clip_id}: {err}") from None
    return "rendered"


def with_noise(audio: np.ndarray, rate: int, voice: dict, seed: int, index: int) -> np.ndarray:
    """The clip at 22,050 Hz with its background noise, scaled so that nothing clips."""
    if rate != SAMPLE_RATE:
        audio = torchaudio.functional.resample(torch.from_numpy(audio), rate,
                                               SAMPLE_RATE).numpy()
    rng = np.random.default_rng([seed, index, 1])  # the noise: a stream of its own
    power = float(np.mean(audio ** 2)) or 1e-8
    audio = audio + rng.normal(0, np.sqrt(power / 10 ** (voice["snr_db"] / 10)),
                               audio.shape).astype(np.float32)
    return audio / max(1.0, float(np.abs(audio).max()) / 0.95)


def write_wav(target: Path, audio: np.ndarray) -> None:
    """Write a 16-bit wav atomically. Encoded in memory, so a failing write (a full disk, a
    file-size limit) is an OSError naming its cause; raised as a SynthesiserError, which a pool
    worker hands to the parent, rather than as atomic_write's SystemExit, which would end the
    worker silently."""
    encoded = io.BytesIO()
    soundfile.write(encoded, audio, SAMPLE_RATE, subtype="PCM_16", format="WAV")
    try:
        with atomic_write(target) as partial:
            partial.write_bytes(encoded.getvalue())
    except SystemExit as stop:
        raise SynthesiserError(str(stop.code).removeprefix("error: ")) from None


def genuine_ids(metadata: Path) -> set[str]:
    """Ids whose genuine recording lies beside the source metadata (kept out of the corpus)."""
    wavs = metadata.parent / "wavs"
    return {p.stem for p in wavs.glob("*.wav")} if wavs.is_dir() else set()


def check_destination(folder: Path, metadata: Path) -> None:
    """Refuse to render into a folder of genuine recordings (wavs but no tts_manifest.tsv) or
    into the folder of the source metadata, whose wavs are taken for genuine ones."""
    if any((folder / "wavs").glob("*.wav")) and not (folder / MANIFEST).exists():
        raise fail(f"{folder} holds genuine recordings (wavs/ without {MANIFEST}); render into "
                   "another -data_dir")
    if folder.resolve() == metadata.parent.resolve():
        raise fail(f"{metadata} lies in the destination {folder}; render from a metadata.csv "
                   "elsewhere (-metadata) or into another -data_dir")


def build_tts_corpus(metadata: Path, out_root: Path, seed: int, limit: int | None,
                     processes: int | None, progress: bool = True) -> dict:
    """Render the corpus into <out_root>/LJSpeech-1.1; returns counts for the summary line."""
    for tool in ("espeak-ng", "flite"):
        if shutil.which(tool) is None:
            raise fail(f"{tool} not found: apt-get install espeak-ng flite")
    clips = parse_metadata(metadata)
    excluded = genuine_ids(metadata)
    folder = out_root / FOLDER
    check_destination(folder, metadata)
    (folder / "wavs").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(metadata, folder / "metadata.csv")  # same ids, order and splits
    jobs, manifest, empty = [], ["id\tengine\tvoice\trate\tpitch\tsnr_db"], []
    for index, clip in enumerate(clips):
        if clip.id in excluded:
            continue
        if not clip.normalized.strip():
            empty.append(clip.id)
            continue
        voice = choose_voice(seed, index)
        line = (f"{clip.id}\t{voice['engine']}\t{voice['voice']}\t{voice['rate']}\t"
                f"{voice['pitch']}\t{voice['snr_db']}")
        jobs.append((index, (clip.id, clip.normalized, voice, str(folder / "wavs"), seed, index),
                     line))
    if limit:  # the first `limit` clips of each split, so a subset has all three splits
        jobs = [job for start, stop in SPLITS.values()
                for job in [j for j in jobs if start <= j[0] < stop][:limit]]
    manifest += [line for _, _, line in jobs]
    jobs = [job for _, job, _ in jobs]
    with atomic_write(folder / MANIFEST) as tmp:
        tmp.write_text("\n".join(manifest) + "\n")
    counts = {"rendered": 0, "skipped": 0}
    with get_context("spawn").Pool(processes, initializer=torch.set_num_threads,
                                   initargs=(1,)) as pool:  # one thread per process: see below
        try:
            for status in tqdm(pool.imap_unordered(render_clip, jobs, chunksize=8),
                               total=len(jobs), disable=not progress, desc="rendering",
                               unit="clip"):
                counts[status] += 1
        except SynthesiserError as err:
            raise fail(f"{err} (rendering into {folder})") from None
    return {**counts, "excluded_genuine": len(excluded & {c.id for c in clips}),
            "empty_transcripts": empty, "folder": str(folder)}


def download(root: Path) -> None:
    """The handed-out behaviour: torchaudio downloads and extracts LJ Speech 1.1 into root."""
    try:
        torchaudio.datasets.LJSPEECH(str(root), download=True)
    except Exception as err:
        reason = " ".join(str(err).split())[:120]
        raise fail(f"could not download LJ Speech ({reason}); offline, use -tts to render "
                   "the corpus from a metadata.csv") from None


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Get LJ Speech 1.1 for Question 3: download it, or render an offline "
                    "corpus in the same layout with speech synthesisers (-tts).")
    parser.add_argument("-data_dir", default=None,
                        help=f"destination folder (default: ./data, never ${DATA_DIR_ENV}, "
                             "which is only read from)")
    parser.add_argument("-tts", action="store_true", help="render the offline corpus")
    parser.add_argument("-metadata", type=Path, default=None,
                        help="LJ metadata.csv to render (default: LJSpeech-1.1/metadata.csv "
                             f"in ${DATA_DIR_ENV}, else in ./data)")
    parser.add_argument("-seed", type=seed_value, default=42,
                        help="speaker choices (default: %(default)s)")
    parser.add_argument("-limit", type=positive_int, default=None,
                        help="render only the first N clips of each split (smoke runs)")
    parser.add_argument("-processes", type=positive_int, default=None,
                        help="parallel workers (default: one per core)")
    parser.add_argument("-no_progress", action="store_true")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    root = write_data_dir(args.data_dir)
    with Timer() as timer:
        if args.tts:
            metadata = args.metadata or resolve_data_dir(None) / FOLDER / "metadata.csv"
            summary = build_tts_corpus(metadata, root, args.seed, args.limit, args.processes,
                                       progress=not args.no_progress)
        else:
            root.mkdir(parents=True, exist_ok=True)
            download(root)
    corpus = LJSpeech(root / FOLDER)
    if args.tts:
        print(f"rendered {summary['rendered']} clips, {summary['skipped']} already there, "
              f"{summary['excluded_genuine']} genuine clips left out, "
              f"{len(summary['empty_transcripts'])} empty transcripts skipped")
    print(f"{corpus.root}: {sum(corpus.has_audio)} of {len(corpus.clips)} clips have audio "
          f"({timer.seconds:.0f} s)")


if __name__ == "__main__":
    main()
