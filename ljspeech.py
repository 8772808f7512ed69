"""Question 3 data: LJ Speech 1.1 in its own layout, the handed-out features, and batching.

One code path reads the real corpus and the offline one (download_ljspeech.py --tts writes the
same layout): `<root>/LJSpeech-1.1/metadata.csv` (id|text|normalized text) and `wavs/<id>.wav`.

* `parse_metadata` reads the pipe-separated file exactly (quotes are text, not CSV quoting);
  `LJSpeech` keeps LJ's order, applies the assignment's index splits and uses the clips whose
  wav exists (the shared folder has 36 of 13,100).
* `LogMel` is the handed-out audio pipeline (Spectrogram n_fft 400 / hop 160 / power 2 ->
  MelScale 80 slaney with torchaudio's default 16 kHz sample rate -> Whisper-style log
  normalisation); `FeatureCache` computes it once per clip and keeps it on disk, keyed by the
  transform's settings and the audio file's size and mtime.
* `TokenVectorizer` is the handed-out 35-symbol vectorizer; `PadCollate` pads a batch either to
  the handed-out 2754 frames or to its longest clip (returning the true lengths).
All callables are module-level classes, so DataLoader workers can pickle them under "spawn".
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np
import soundfile
import torch
import torchaudio

from utils import fail

SAMPLE_RATE = 22050
SPLITS = {"train": (0, 9825), "validation": (9825, 10480), "test": (10480, 13100)}
AUDIO_TIME = 2754  # handed-out config.audio_time: frames every clip is padded / cropped to
TEXT_LEN = 99


class Clip(NamedTuple):
    id: str
    text: str
    normalized: str


def parse_metadata(path: Path) -> list[Clip]:
    """LJ Speech's metadata.csv: one `id|text|normalized text` per line, UTF-8, no quoting
    (a '"' is part of the text), in corpus order."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise fail(f"{path}: no such file (LJ Speech metadata)") from None
    except UnicodeDecodeError as err:
        raise fail(f"{path}: not UTF-8 text ({err})") from None
    clips = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        fields = line.split("|")
        if len(fields) != 3 or not fields[0]:
            raise fail(f"{path}:{number}: expected 'id|text|normalized text', got {line[:60]!r}")
        clips.append(Clip(*fields))
    return clips


class LJSpeech:
    """The clips of one LJ-layout folder, in metadata order, with the assignment's splits."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.wav_dir = self.root / "wavs"
        self.clips = parse_metadata(self.root / "metadata.csv")
        present = {p.stem for p in self.wav_dir.glob("*.wav")} if self.wav_dir.is_dir() else set()
        self.has_audio = [clip.id in present for clip in self.clips]

    def wav_path(self, clip: Clip) -> Path:
        return self.wav_dir / f"{clip.id}.wav"

    def split(self, name: str, limit: int | None = None) -> list[Clip]:
        """The clips of a split that have audio (at most `limit`, from the split's start)."""
        if name not in SPLITS:
            raise fail(f"unknown split {name!r} (choose from {', '.join(SPLITS)})")
        start, stop = SPLITS[name]
        chosen = [c for c, ok in zip(self.clips[start:stop], self.has_audio[start:stop]) if ok]
        return chosen[:limit] if limit else chosen

    def describe(self) -> dict:
        """How much of the corpus is there, per split (for results files and messages)."""
        counts = {name: {"with_audio": sum(self.has_audio[a:b]), "in_metadata": b - a}
                  for name, (a, b) in SPLITS.items()}
        return {"root": str(self.root), "clips_in_metadata": len(self.clips),
                "clips_with_audio": sum(self.has_audio), "splits": counts}


def read_wav(path: Path) -> tuple[torch.Tensor, int]:
    """Mono float32 waveform (N,) and its sample rate, read with soundfile (no FFmpeg needed)."""
    try:
        data, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except FileNotFoundError:
        raise fail(f"{path}: missing audio file") from None
    except (RuntimeError, soundfile.LibsndfileError) as err:
        raise fail(f"{path}: unreadable audio ({err})") from None
    if data.shape[0] == 0:
        raise fail(f"{path}: empty audio file")
    return torch.from_numpy(data.mean(axis=1)), rate


@dataclass(frozen=True)
class MelSettings:
    """The handed-out transform settings (config.transforms.audio)."""
    n_fft: int = 400
    hop_length: int = 160
    n_mels: int = 80
    mel_sample_rate: int = 16000  # torchaudio's default: the handed-out code never set it

    def key(self) -> str:
        return hashlib.sha1(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:12]


class LogMel:
    """waveform (N,) -> normalised log-mel (n_mels, frames), as the handed-out pipeline computes
    it before padding: power spectrogram, slaney mel scale, log10 clamped at 1e-10, floored at
    the clip's max - 8, then (x + 4) / 4."""

    def __init__(self, settings: MelSettings = MelSettings()):
        self.settings = settings
        self.spectrogram = torchaudio.transforms.Spectrogram(
            n_fft=settings.n_fft, hop_length=settings.hop_length, power=2, center=True,
            normalized=False)
        self.mel = torchaudio.transforms.MelScale(
            n_mels=settings.n_mels, sample_rate=settings.mel_sample_rate,
            n_stft=settings.n_fft // 2 + 1, norm="slaney", mel_scale="slaney")

    def __call__(self, waveform: torch.Tensor) -> torch.Tensor:
        log_spec = self.mel(self.spectrogram(waveform)).clamp(min=1e-10).log10()
        log_spec = torch.maximum(log_spec, log_spec.max() - 8.0)
        return (log_spec + 4.0) / 4.0


def pad_or_crop(features: torch.Tensor, frames: int = AUDIO_TIME) -> torch.Tensor:
    """Zero-pad on the right of the time axis and keep the first `frames` (handed-out Pad +
    crop; zero is not the normalised floor value, as in the handed-out code)."""
    if features.shape[-1] >= frames:
        return features[..., :frames]
    return torch.nn.functional.pad(features, (0, frames - features.shape[-1]))


class FeatureCache:
    """Log-mel features computed once per clip and stored as .npy under
    <cache_dir>/<settings key>/<id>-<audio size>-<audio mtime>.npy: a change of the transform
    settings or of the audio file makes a new name, so stale features are never read."""

    def __init__(self, cache_dir: Path, transform: LogMel):
        self.transform = transform
        self.dir = Path(cache_dir) / transform.settings.key()

    def path(self, wav: Path) -> Path:
        try:
            stat = wav.stat()
        except FileNotFoundError:
            raise fail(f"{wav}: missing audio file") from None
        return self.dir / f"{wav.stem}-{stat.st_size}-{stat.st_mtime_ns}.npy"

    def features(self, wav: Path) -> torch.Tensor:
        """(n_mels, frames) float32 for this wav, from the cache or computed and stored."""
        path = self.path(wav)
        if path.exists():
            return torch.from_numpy(np.load(path))
        waveform, _ = read_wav(wav)
        features = self.transform(waveform)
        self.dir.mkdir(parents=True, exist_ok=True)
        for stale in self.dir.glob(f"{wav.stem}-*.npy"):
            stale.unlink(missing_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            np.save(f, features.numpy())
        tmp.replace(path)  # atomic: parallel workers or an interruption never leave half a file
        return features


class TokenVectorizer:
    """The handed-out 35-symbol vectorizer: `<` start, `>` stop, `@` padding, `#` unknown,
    then space , . ? - and a-z. Lower-cases, truncates to max_len - 2 characters, wraps in
    `<`...`>` and pads with `@` to max_len."""

    SPECIALS = ("<", ">", "@", "#")
    BASE = (" ", ",", ".", "?", "-") + tuple("abcdefghijklmnopqrstuvwxyz")

    def __init__(self, n_vocab: int = 35, max_len: int = TEXT_LEN):
        self.vocab = self.SPECIALS + self.BASE
        assert not set(self.SPECIALS) & set(self.BASE) and len(self.vocab) == n_vocab
        self.max_len = max_len
        self.mapper = {ch: i for i, ch in enumerate(self.vocab)}
        self.start, self.stop, self.empty, self.unk = range(4)

    def __call__(self, text: str) -> torch.Tensor:
        body = text.lower()[: self.max_len - 2]
        ids = [self.start] + [self.mapper.get(ch, self.unk) for ch in body] + [self.stop]
        ids += [self.empty] * (self.max_len - len(ids))
        return torch.tensor(ids, dtype=torch.long)

    def decode(self, ids: Sequence[int]) -> str:
        return "".join(self.vocab[i] for i in ids)


class SpeechDataset(torch.utils.data.Dataset):
    """(features (n_mels, frames), tokens (max_len,), frames) for each clip of a split."""

    def __init__(self, corpus: LJSpeech, clips: list[Clip], cache: FeatureCache,
                 vectorizer: TokenVectorizer):
        for clip in clips:
            if not clip.normalized.strip():
                raise fail(f"{clip.id}: empty transcript in {corpus.root / 'metadata.csv'}")
        self.corpus, self.clips, self.cache, self.vectorizer = corpus, clips, cache, vectorizer

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, index: int):
        clip = self.clips[index]
        features = self.cache.features(self.corpus.wav_path(clip))
        return features, self.vectorizer(clip.normalized), features.shape[-1]


class PadCollate:
    """Stack a batch: pad every clip to `frames` (the handed-out 2754) or, with frames=None, to
    the batch's longest clip. Returns audio (B, n_mels, T), text (B, max_len) and the true
    frame counts (B,), capped at T."""

    def __init__(self, frames: int | None = AUDIO_TIME):
        self.frames = frames

    def __call__(self, batch):
        features, tokens, lengths = zip(*batch)
        frames = self.frames or max(lengths)
        audio = torch.stack([pad_or_crop(f, frames) for f in features])
        lengths = torch.tensor(lengths).clamp(max=frames)
        return audio, torch.stack(tokens), lengths
