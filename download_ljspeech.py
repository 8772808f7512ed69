#!/usr/bin/env python
"""Put LJ Speech 1.1 for Question 3 into LJSpeech-1.1 (metadata.csv + wavs/) under -data_dir,
else ./data ($HW2_DATA_DIR is only read from: -tts takes its metadata.csv there by default).
  default  download the real corpus (2.6 GB) through torchaudio, as the handed-out code does;
  -tts     offline: render every transcript with espeak-ng, flite and festival's HTS voice
           (varied per clip from -seed: voice, rate, pitch, light noise) into the same layout
           and ids, leaving out the clips whose genuine recording lies beside the source metadata.
Resumable: a clip already rendered with the voice the manifest (tts_manifest.tsv) gives it is
kept, one rendered with another voice is rendered again.
"""
from __future__ import annotations

import argparse
import io
import os
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
                     unit_fraction, write_data_dir)
from hw2.ljspeech import (SAMPLE_RATE, SPLITS, TTS_MANIFEST, LJSpeech, parse_metadata,
                          read_tts_manifest, tts_engines)
from hw2.results import Timer

FOLDER = "LJSpeech-1.1"
ESPEAK_VOICES = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan",
                 "en-gb-x-gbcwmd", "en-029")
ESPEAK_VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m7", "f1", "f2", "f3", "f4", "klatt", "klatt2")
FLITE_VOICES = ("slt", "rms", "awb", "kal")
FLITE_SHARE = 0.3
MANIFEST_HEADER = "id\tengine\tvoice\trate\tpitch\tsnr_db"
FESTIVAL_VOICE = "cmu_us_slt_arctic_hts"  # Debian's festvox-us-slt-hts: a US-English woman
FESTIVAL_SHARE = 0.2
# -more_voices (off by default): SVOX Pico's two women (US, British) and MBROLA's three US
# diphone voices (a woman, two men) spoken through espeak-ng; Debian non-free packages.
PICO_VOICES = ("en-US", "en-GB")
MBROLA_VOICES = ("mb-us1", "mb-us2", "mb-us3")
MORE_VOICES_PACKAGES = "libttspico-utils mbrola mbrola-us1 mbrola-us2 mbrola-us3"
ESPEAK_RATES = (135, 195)  # words a minute, drawn in [low, high): espeak-ng's -s, MBROLA's too
ESPEAK_PITCHES = (25, 75)  # espeak-ng's -p (0-99)
TOOLS = {"espeak-ng": "espeak-ng", "flite": "flite", "festival": "text2wave",
         "pico": "pico2wave", "mbrola": "mbrola"}


def choose_voice(seed: int, index: int, festival_share: float = FESTIVAL_SHARE,
                 more_share: float = 0.0) -> dict:
    """The speaker of clip `index`: engine, voice, rate, pitch and noise level (deterministic).
    Whether festival speaks, then whether one of the -more_voices does, is drawn from a stream
    of its own, so the other clips keep the voices of a corpus rendered with other shares (0
    and 0: the espeak-ng/flite corpus)."""
    rng = np.random.default_rng([seed, index])
    noise_db = round(float(rng.uniform(30, 50)), 1)  # signal-to-noise ratio
    festival = np.random.default_rng([seed, index, 2])
    if festival.uniform() < festival_share:
        return {"engine": "festival", "voice": FESTIVAL_VOICE,
                "rate": round(float(festival.uniform(0.8, 1.1)), 3),  # HTS speed (-r)
                "pitch": round(float(festival.uniform(-3, 3)), 1),  # semitones (-fm)
                "snr_db": noise_db}
    more = np.random.default_rng([seed, index, 3])
    if more.uniform() < more_share:
        if more.uniform() < 0.5:  # Pico's speed and pitch levels, in % of its own
            return {"engine": "pico", "voice": str(more.choice(PICO_VOICES)),
                    "rate": int(more.integers(80, 121)), "pitch": int(more.integers(85, 116)),
                    "snr_db": noise_db}
        return {"engine": "mbrola", "voice": str(more.choice(MBROLA_VOICES)),
                "rate": int(more.integers(*ESPEAK_RATES)),
                "pitch": int(more.integers(*ESPEAK_PITCHES)),
                "snr_db": noise_db}
    if rng.uniform() < FLITE_SHARE:
        return {"engine": "flite", "voice": str(rng.choice(FLITE_VOICES)),
                "rate": round(float(rng.uniform(0.85, 1.2)), 3),  # duration stretch
                "pitch": int(rng.integers(85, 170)), "snr_db": noise_db}
    return {"engine": "espeak-ng",
            "voice": f"{rng.choice(ESPEAK_VOICES)}+{rng.choice(ESPEAK_VARIANTS)}",
            "rate": int(rng.integers(*ESPEAK_RATES)), "pitch": int(rng.integers(*ESPEAK_PITCHES)),
            "snr_db": noise_db}


class SynthesiserError(Exception):
    """A synthesiser failed on a clip (an ordinary exception, so a pool worker passes it on)."""


def run_synthesiser(command: list[str], **kwargs) -> None:
    """Run a synthesiser; its failure, or a festival script error (after which festival exits
    0 and speaks in its default voice), is a SynthesiserError quoting its first line."""
    try:
        done = subprocess.run(command, check=True, capture_output=True, **kwargs)
    except (subprocess.CalledProcessError, OSError) as err:
        stderr = getattr(err, "stderr", None) or ""
        reason = (stderr if isinstance(stderr, str) else stderr.decode(errors="replace")).strip()
        raise SynthesiserError(f"{command[0]} failed: {reason.splitlines()[0] if reason else err}")
    output = done.stdout + done.stderr
    output = output if isinstance(output, str) else output.decode(errors="replace")
    if "SIOD ERROR" in output:
        error = next(line for line in output.splitlines() if "SIOD ERROR" in line)
        raise SynthesiserError(f"{command[0]} failed: {error.strip()}")


def synthesise(text: str, voice: dict, workdir: Path) -> tuple[np.ndarray, int]:
    """Run the synthesiser; return its waveform (float32) and sample rate."""
    raw = workdir / "raw.wav"
    if voice["engine"] in ("espeak-ng", "mbrola"):  # MBROLA's voices speak through espeak-ng
        command = ["espeak-ng", "-v", voice["voice"], "-s", str(voice["rate"]), "-p",
                   str(voice["pitch"]), "-w", str(raw), "--stdin"]
        run_synthesiser(command, input=text, text=True)
        return read_output(raw, voice["engine"])
    if voice["engine"] == "pico":  # the text itself carries Pico's speed and pitch markup;
        spoken = text.replace("<", " ").replace(">", " ")  # Pico reads entities aloud: no escaping
        markup = (f'<speed level="{voice["rate"]}"><pitch level="{voice["pitch"]}">'
                  f'{spoken}</pitch></speed>')
        run_synthesiser(["pico2wave", "-l", voice["voice"], "-w", str(raw), markup])
        return read_output(raw, voice["engine"])
    text_file = workdir / "text.txt"
    text_file.write_text(text)
    if voice["engine"] == "festival":
        settings = f'(("-r" {voice["rate"]}) ("-fm" {voice["pitch"]}))'
        command = ["text2wave", "-o", str(raw), str(text_file), "-eval",
                   f"(begin (voice_{voice['voice']}) (set! hts_engine_params "
                   f"(append hts_engine_params '{settings})))"]
    else:
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
    if any((folder / "wavs").glob("*.wav")) and not (folder / TTS_MANIFEST).exists():
        raise fail(f"{folder} holds genuine recordings (wavs/ without {TTS_MANIFEST}); render "
                   "into another -data_dir")
    if folder.resolve() == metadata.parent.resolve():
        raise fail(f"{metadata} lies in the destination {folder}; render from a metadata.csv "
                   "elsewhere (-metadata) or into another -data_dir")


def check_tools(festival_share: float, more_share: float = 0.0) -> None:
    """Stop before rendering anything if a synthesiser, or one of its voices, is missing."""
    needed = ["espeak-ng", "flite"] + ["festival"] * (festival_share > 0) \
        + ["pico", "mbrola"] * (more_share > 0)
    packages = "espeak-ng flite" + " festival festvox-us-slt-hts" * (festival_share > 0) \
        + f" {MORE_VOICES_PACKAGES} (Debian non-free)" * (more_share > 0)
    missing = [TOOLS[engine] for engine in needed if shutil.which(TOOLS[engine]) is None]
    if missing:
        raise fail(f"{', '.join(missing)} not found: apt-get install {packages}")
    if festival_share > 0:  # festival loads the voice, or says it has none
        try:
            run_synthesiser(["festival", "--batch", f"(voice_{FESTIVAL_VOICE})"])
        except SynthesiserError as err:
            raise fail(f"{err} (apt-get install festvox-us-slt-hts)") from None
    if more_share > 0:  # each MBROLA voice says a word, or espeak-ng says it has none
        for voice in MBROLA_VOICES:
            try:
                run_synthesiser(["espeak-ng", "-v", voice, "-q", "a"])
            except SynthesiserError as err:
                raise fail(f"{err} ({voice}: apt-get install {MORE_VOICES_PACKAGES})") from None


def remove_stale(folder: Path, lines: dict[str, str]) -> int:
    """Delete the wavs that a previous render made with another voice than `lines` gives."""
    previous, removed = read_tts_manifest(folder), 0
    for clip_id, line in lines.items():
        wav = folder / "wavs" / f"{clip_id}.wav"
        if previous.get(clip_id) != line and wav.exists():
            wav.unlink()
            removed += 1
    return removed


def build_tts_corpus(metadata: Path, out_root: Path, seed: int, limit: int | None,
                     processes: int | None, progress: bool = True,
                     festival_share: float = FESTIVAL_SHARE, more_share: float = 0.0) -> dict:
    """Render the corpus into <out_root>/LJSpeech-1.1; returns counts for the summary line."""
    check_tools(festival_share, more_share)
    clips = parse_metadata(metadata)
    excluded = genuine_ids(metadata)
    folder = out_root / FOLDER
    check_destination(folder, metadata)
    (folder / "wavs").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(metadata, folder / "metadata.csv")  # same ids, order and splits
    jobs, empty = [], []
    for index, clip in enumerate(clips):
        if clip.id in excluded:
            continue
        if not clip.normalized.strip():
            empty.append(clip.id)
            continue
        voice = choose_voice(seed, index, festival_share, more_share)
        line = (f"{clip.id}\t{voice['engine']}\t{voice['voice']}\t{voice['rate']}\t"
                f"{voice['pitch']}\t{voice['snr_db']}")
        jobs.append((index, (clip.id, clip.normalized, voice, str(folder / "wavs"), seed, index),
                     line))
    if limit:  # the first `limit` clips of each split, so a subset has all three splits
        jobs = [job for start, stop in SPLITS.values()
                for job in [j for j in jobs if start <= j[0] < stop][:limit]]
    lines = {job[0]: line for _, job, line in jobs}
    removed = remove_stale(folder, lines)  # before the new manifest: an interrupted render
    with atomic_write(folder / TTS_MANIFEST) as tmp:  # then keeps no wav of another voice
        tmp.write_text("\n".join([MANIFEST_HEADER, *lines.values()]) + "\n")
    counts = {"rendered": 0, "skipped": 0}
    with get_context("spawn").Pool(processes, initializer=torch.set_num_threads,
                                   initargs=(1,)) as pool:  # one thread per process: see below
        try:
            for status in tqdm(pool.imap_unordered(render_clip, [job for _, job, _ in jobs],
                                                   chunksize=8),
                               total=len(jobs), disable=not progress, desc="rendering",
                               unit="clip"):
                counts[status] += 1
        except SynthesiserError as err:
            raise fail(f"{err} (rendering into {folder})") from None
    return {**counts, "rerendered": removed,
            "excluded_genuine": len(excluded & {c.id for c in clips}),
            "empty_transcripts": empty, "folder": str(folder)}


def hold_out_engine(folder: Path, engine: str) -> tuple[Path, Path]:
    """Split a rendered corpus by voice, for choices made on a voice the model never heard:
    without-<engine>/LJSpeech-1.1 beside the corpus (every clip of the other engines, all
    splits, with its manifest; a -data_dir) and <engine>-validation/LJSpeech-1.1 (that engine's
    validation clips; a -heldout_dir). Both hold relative links to the corpus's wavs (no disk
    used) and are built under a temporary name, then renamed: never half there."""
    voices = read_tts_manifest(folder)
    if not voices:
        raise fail(f"{folder / TTS_MANIFEST} not found: -hold_out needs a corpus rendered "
                   "with -tts")
    start, stop = SPLITS["validation"]
    ids = [clip.id for clip in parse_metadata(folder / "metadata.csv")]
    spoken = {i for i, spoke in tts_engines(voices).items() if spoke == engine}
    if not spoken:
        raise fail(f"no clip of {folder} is spoken by {engine}")
    kept = {"without": set(voices) - spoken, "validation": spoken & set(ids[start:stop])}
    roots = (folder.parent / f"without-{engine}" / FOLDER,
             folder.parent / f"{engine}-validation" / FOLDER)
    for root, chosen in zip(roots, kept.values()):
        partial = root.parent.with_name(root.parent.name + ".partial")
        remove_linked_copy(partial)
        (partial / FOLDER / "wavs").mkdir(parents=True)
        shutil.copyfile(folder / "metadata.csv", partial / FOLDER / "metadata.csv")
        for clip_id in chosen:
            link = partial / FOLDER / "wavs" / f"{clip_id}.wav"
            link.symlink_to(os.path.relpath(folder / "wavs" / f"{clip_id}.wav", link.parent))
        if root == roots[0]:
            (partial / FOLDER / TTS_MANIFEST).write_text("\n".join(
                [MANIFEST_HEADER, *(voices[i] for i in ids if i in chosen)]) + "\n")
        remove_linked_copy(root.parent)
        partial.rename(root.parent)
    return roots


def remove_linked_copy(top: Path) -> None:
    """Delete a folder that hold_out_engine made (its wavs all links); refuse any other."""
    if not top.exists() and not top.is_symlink():
        return
    wavs = top / FOLDER / "wavs"
    if top.is_symlink() or not wavs.is_dir() or any(not w.is_symlink() for w in wavs.iterdir()):
        raise fail(f"{top} is in the way and is not a copy that -hold_out made (its wavs are "
                   "not all links); move it elsewhere")
    shutil.rmtree(top)


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
    parser.add_argument("-festival_share", type=unit_fraction, default=FESTIVAL_SHARE,
                        help="share of the clips spoken by festival's HTS voice (0: the "
                             "espeak-ng/flite corpus; default: %(default)s)")
    parser.add_argument("-more_voices", type=unit_fraction, default=0.0, metavar="SHARE",
                        help="share of the other clips spoken by SVOX Pico's two voices and "
                             "MBROLA's three US voices (Debian non-free: "
                             f"{MORE_VOICES_PACKAGES}; default: 0)")
    parser.add_argument("-hold_out", default=None, choices=sorted(TOOLS), metavar="ENGINE",
                        help="split the rendered corpus by voice (after rendering, with -tts): "
                             "one copy (links) without ENGINE's clips to train on, one of "
                             "ENGINE's validation clips to score (a voice no model heard)")
    parser.add_argument("-limit", type=positive_int, default=None,
                        help="render only the first N clips of each split (smoke runs)")
    parser.add_argument("-processes", type=positive_int, default=None,
                        help="parallel workers (default: one per core)")
    parser.add_argument("-no_progress", action="store_true")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    root = write_data_dir(args.data_dir)
    if args.hold_out and not args.tts:  # only split the corpus already rendered there
        print_hold_out(hold_out_engine(root / FOLDER, args.hold_out))
        return
    with Timer() as timer:
        if args.tts:
            metadata = args.metadata or resolve_data_dir(None) / FOLDER / "metadata.csv"
            summary = build_tts_corpus(metadata, root, args.seed, args.limit, args.processes,
                                       not args.no_progress, args.festival_share,
                                       args.more_voices)
        else:
            root.mkdir(parents=True, exist_ok=True)
            download(root)
    corpus = LJSpeech(root / FOLDER)
    if args.tts:
        print(f"rendered {summary['rendered']} clips ({summary['rerendered']} in another "
              f"voice before), {summary['skipped']} already there, "
              f"{summary['excluded_genuine']} genuine clips left out, "
              f"{len(summary['empty_transcripts'])} empty transcripts skipped")
    print(f"{corpus.root}: {sum(corpus.has_audio)} of {len(corpus.clips)} clips have audio "
          f"({timer.seconds:.0f} s)")
    if args.hold_out:
        print_hold_out(hold_out_engine(corpus.root, args.hold_out))


def print_hold_out(roots: tuple[Path, Path]) -> None:
    for split_root in roots:
        print(f"{split_root}: {sum(LJSpeech(split_root).has_audio)} clips have audio")


if __name__ == "__main__":
    main()
