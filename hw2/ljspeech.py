"""Question 3 data: LJ Speech 1.1 in its own layout (metadata.csv + wavs/, the real corpus and
the offline one alike), the handed-out log-mel features (LogMel, cached once per clip by
FeatureCache) and 35-symbol vectorizer, and batching: FeatureBank holds a split's features in
memory and cuts padded batches out of it without a file read; ClipBatches draws each epoch's
batches from (seed, epoch) alone, so a run resumes exactly. Callables are module-level
classes, so DataLoader workers can pickle them under "spawn".
"""
from __future__ import annotations

import hashlib
import json
import wave
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator, NamedTuple, Sequence

import numpy as np
import soundfile
import torch
import torchaudio
from tqdm import tqdm

from hw2.checkpoints import atomic_write
from hw2.cli import fail

SAMPLE_RATE = 22050
SPLITS = {"train": (0, 9825), "validation": (9825, 10480), "test": (10480, 13100)}
AUDIO_TIME = 2754  # handed-out config.audio_time: frames every clip is padded / cropped to
TEXT_LEN = 99
TTS_MANIFEST = "tts_manifest.tsv"  # a corpus rendered by download_ljspeech.py -tts: its voices


class Clip(NamedTuple):
    id: str
    text: str
    normalized: str


def parse_metadata(path: Path) -> list[Clip]:
    """LJ Speech's metadata.csv: one `id|text|normalized text` per line, UTF-8, no quoting
    (a '"' is part of the text), in corpus order. A repeated id (one wav, two transcripts)
    and a file without any clip are refused."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise fail(f"{path}: no such file (LJ Speech metadata)") from None
    except UnicodeDecodeError as err:
        raise fail(f"{path}: not UTF-8 text ({err})") from None
    clips, first_line = [], {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        fields = line.split("|")
        if len(fields) != 3 or not fields[0]:
            raise fail(f"{path}:{number}: expected 'id|text|normalized text', got {line[:60]!r}")
        if fields[0] in first_line:
            raise fail(f"{path}:{number}: clip id {fields[0]} repeats line "
                       f"{first_line[fields[0]]}")
        first_line[fields[0]] = number
        clips.append(Clip(*fields))
    if not clips:
        raise fail(f"{path}: no clips (LJ Speech metadata has one 'id|text|normalized text' "
                   "line per clip)")
    return clips


def read_tts_manifest(root: Path) -> dict[str, str]:
    """Clip id -> its line of a rendered corpus's manifest ({} for a folder without one): what
    -tts compares a new render with, and what says which engine spoke each clip."""
    path = Path(root) / TTS_MANIFEST
    lines = path.read_text().splitlines()[1:] if path.exists() else []
    return {line.split("\t", 1)[0]: line for line in lines}


def tts_engines(manifest: dict[str, str]) -> dict[str, str]:
    """Clip id -> the engine that spoke it (the second column of read_tts_manifest's lines)."""
    return {clip_id: line.split("\t")[1] for clip_id, line in manifest.items() if "\t" in line}


LOG_MEL_DECADES = 8.0  # the handed-out floor: 8 decades under each clip's loudest value


@dataclass(frozen=True)
class MelSettings:
    """The handed-out transform settings (config.transforms.audio)."""
    n_fft: int = 400
    hop_length: int = 160
    n_mels: int = 80
    mel_sample_rate: int = 16000  # torchaudio's default: the handed-out code never set it

    def key(self) -> str:
        return hashlib.sha1(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:12]


class LJSpeech:
    """The clips of one LJ-layout folder, in metadata order, with the assignment's splits."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.wav_dir = self.root / "wavs"
        self.clips = parse_metadata(self.root / "metadata.csv")
        present = {p.stem for p in self.wav_dir.glob("*.wav")} if self.wav_dir.is_dir() else set()
        self.has_audio = [clip.id in present for clip in self.clips]
        self._digest: str | None = None

    def wav_path(self, clip: Clip) -> Path:
        return self.wav_dir / f"{clip.id}.wav"

    def clips_with_audio(self) -> list[Clip]:
        """Every clip whose wav is present, in metadata order."""
        return [clip for clip, ok in zip(self.clips, self.has_audio) if ok]

    def frames(self, clip: Clip, hop_length: int = MelSettings.hop_length) -> int:
        """Log-mel frames of the clip (centred STFT: 1 + samples // hop), from the wav header."""
        try:
            return 1 + soundfile.info(str(self.wav_path(clip))).frames // hop_length
        except (RuntimeError, soundfile.LibsndfileError) as err:
            raise fail(f"{self.wav_path(clip)}: unreadable audio ({err})") from None

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

    def digest(self) -> str:
        """sha256 over each clip's id, normalized transcript and wav size in bytes (-1 without
        audio), in corpus order: part of a run's identity, so that a checkpoint is continued
        only on the corpus it was trained on (same counts, other transcripts: another run).
        Computed once per corpus (a stat of every wav)."""
        if self._digest is None:
            sha = hashlib.sha256()
            for clip, has_audio in zip(self.clips, self.has_audio):
                size = self.wav_path(clip).stat().st_size if has_audio else -1
                sha.update(f"{clip.id}|{clip.normalized}|{size}\n".encode())
            self._digest = sha.hexdigest()
        return self._digest


class DataError(Exception):
    """A missing, unreadable or unusable audio file. An ordinary exception (not SystemExit), so
    a DataLoader worker hands it to the main process, where FeatureBank turns it into the same
    one-line error the single-process path gives."""


MIN_SAMPLES = MelSettings.n_fft // 2 + 1  # the centred STFT's reflect padding needs more


def read_wav(path: Path) -> torch.Tensor:
    """Mono float32 waveform (N,) at 22,050 Hz, read with soundfile (no FFmpeg needed); other
    sample rates are resampled; truncated wavs (fewer samples than the header declares), clips
    too short for one STFT frame and samples that are NaN or infinite (a float wav) are
    refused, naming the file."""
    try:
        data, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except FileNotFoundError:
        raise DataError(f"{path}: missing audio file") from None
    except (RuntimeError, soundfile.LibsndfileError) as err:
        raise DataError(f"{path}: unreadable audio ({err})") from None
    declared = declared_wav_frames(path)
    if declared is not None and declared > data.shape[0]:
        raise DataError(f"{path}: truncated wav ({data.shape[0]} of the {declared} samples its "
                        "header declares)")
    if data.shape[0] < MIN_SAMPLES:
        raise DataError(f"{path}: too short ({data.shape[0]} samples; one frame needs "
                        f"{MIN_SAMPLES})")
    if not np.isfinite(data).all():
        bad = int((~np.isfinite(data)).any(axis=1).sum())
        raise DataError(f"{path}: {bad} of its {data.shape[0]} samples are NaN or infinite")
    waveform = torch.from_numpy(data.mean(axis=1))
    if rate != SAMPLE_RATE:
        waveform = torchaudio.functional.resample(waveform, rate, SAMPLE_RATE)
    return waveform


def declared_wav_frames(path: Path) -> int | None:
    """Frames a PCM wav's header declares (its data chunk's size), None for other formats."""
    try:
        with wave.open(str(path)) as reader:
            return reader.getnframes()
    except (wave.Error, EOFError, OSError):
        return None


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
        return log_mel_from_power(self.mel(self.spectrogram(waveform)))


def log_mel_from_power(mel_power: torch.Tensor) -> torch.Tensor:
    """The handed-out scaling of mel power (..., n_mels, frames): log10 clamped at 1e-10,
    floored 8 decades under each clip's loudest value, then (x + 4) / 4. Shared by LogMel and
    the augmentations that act on the power (hw2/augment.py)."""
    log_spec = mel_power.clamp(min=1e-10).log10()
    log_spec = torch.maximum(log_spec,
                             log_spec.amax(dim=(-2, -1), keepdim=True) - LOG_MEL_DECADES)
    return (log_spec + 4.0) / 4.0


def power_from_log_mel(features: torch.Tensor) -> torch.Tensor:
    """The mel power behind handed-out log-mel features (the inverse of the scaling above,
    above the floor)."""
    return 10 ** (4 * features - 4)


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
            raise DataError(f"{wav}: missing audio file") from None
        return self.dir / f"{wav.stem}-{stat.st_size}-{stat.st_mtime_ns}.npy"

    def features(self, wav: Path) -> torch.Tensor:
        """(n_mels, frames) float32 for this wav, from the cache or computed and stored."""
        path = self.path(wav)
        if path.exists():
            try:
                return torch.from_numpy(np.load(path))
            except (ValueError, OSError, EOFError):  # a damaged cache file: computed again
                pass
        features = self.transform(read_wav(wav))
        with self._write_errors(path):
            self.dir.mkdir(parents=True, exist_ok=True)
            for stale in self.dir.glob(f"{wav.stem}-*.npy"):  # older audio, or a damaged file
                stale.unlink(missing_ok=True)
            with atomic_write(path) as tmp, self._write_errors(path), open(tmp, "wb") as f:
                np.save(f, features.numpy())  # parallel workers, Ctrl-C: never half a file
        return features

    @staticmethod
    @contextmanager
    def _write_errors(path: Path) -> Iterator[None]:
        """A cache that cannot be written (read-only, full, over a file-size limit) is a
        DataError naming the file: an ordinary exception, which a DataLoader worker hands to
        the parent (it is caught before atomic_write's own handling of write errors)."""
        try:
            yield
        except OSError as err:
            reason = err.strerror or f"short write: {err}"  # numpy's, at a file-size limit
            raise DataError(f"{path}: cannot write the feature cache ({reason}); -cache_dir "
                            "must be a writable folder with room") from None


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


class FeatureBank:
    """The features and tokens of a list of clips, held as one (n_mels, total frames) tensor
    with each clip's offset and length, plus a (clips, max_len) token tensor, on `device`.

    Built once through a DataLoader over `dataset` (its workers compute or read the disk
    cache in parallel); afterwards `batch` gathers any set of clips into a padded batch in a
    few tensor operations, so training and evaluation read no file and copy no clip twice.
    """

    def __init__(self, dataset: SpeechDataset, workers: int = 0, device: str = "cpu",
                 progress: bool = True, desc: str = "features"):
        loader = torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=workers,
                                             collate_fn=self.as_arrays)
        features, tokens = [], []
        try:
            for clip_features, clip_tokens, _ in tqdm(loader, total=len(dataset), desc=desc,
                                                      disable=not progress, leave=False):
                features.append(torch.from_numpy(clip_features[:, :AUDIO_TIME]))  # cropped
                tokens.append(torch.from_numpy(clip_tokens))
        except DataError as err:  # from a worker, the message's last line is the original
            raise fail(str(err).strip().splitlines()[-1].split("DataError: ", 1)[-1]) from None
        except RuntimeError as err:  # DataLoader: a worker was killed (a signal, memory)
            if not workers:
                raise
            raise fail(f"{desc}: a feature worker died ({str(err).strip().splitlines()[0]}); "
                       "-workers 0 computes the features in this process") from None
        self.clips = dataset.clips
        self.lengths = torch.tensor([f.shape[-1] for f in features])
        self.cropped = int((self.lengths == AUDIO_TIME).sum())
        if self.cropped:
            print(f"warning: {self.cropped} clip(s) of {desc} cropped to {AUDIO_TIME} frames "
                  "(20 s), as the handed-out padding crops them")
        self.offsets = torch.cumsum(self.lengths, 0) - self.lengths
        self.features = torch.cat(features, dim=1).to(device)
        self.tokens = torch.stack(tokens).to(device)
        self.device = device

    def __len__(self) -> int:
        return len(self.clips)

    def clip_of_each_frame(self) -> torch.Tensor:
        """(total frames,) the index of the clip each column of `features` belongs to."""
        return torch.repeat_interleave(torch.arange(len(self)), self.lengths).to(self.device)

    def raise_floor(self, decades: float) -> None:
        """Floor each clip's log-mel `decades` under its loudest value instead of the handed-out
        8, in place. The synthesisers' clips carry a white noise floor 6-7 decades down where
        a quiet studio recording sits at the 8-decade floor: a higher floor makes both silent.
        Exact on cached features, whose floor is lower (the peak is unchanged)."""
        owner = self.clip_of_each_frame()
        peaks = torch.full((len(self),), -torch.inf, device=self.device).scatter_reduce(
            0, owner, self.features.amax(dim=0), "amax")
        torch.maximum(self.features, (peaks - decades / 4)[owner], out=self.features)

    def smooth_spectrum(self, keep: int, chunk: int = 1 << 18) -> None:
        """Keep the first `keep` cosine (DCT-II) coefficients of each frame's log-mel and drop
        the rest (cepstral liftering), in place; the features keep their n_mels bins. A voice's
        pitch harmonics are a ripple along the mel axis (a 200 Hz voice's, in the scale's
        linear lower part: about 4 bins, near the 40th coefficient of 80) while what is said
        lies in the smooth envelope (formants), and synthesisers and readers differ in the
        first more than in the second. A linear map of each frame: it commutes with the
        per-clip mean but not with the per-bin scaling, hence done before normalising."""
        n_mels = self.features.shape[0]
        basis = torchaudio.functional.create_dct(keep, n_mels, norm="ortho")  # (n_mels, keep)
        projection = (basis @ basis.T).to(self.device)  # orthogonal projection onto the span
        for columns in self.features.split(chunk, dim=1):  # views: written in place
            columns.copy_(projection @ columns)

    def normalise_per_clip(self) -> None:
        """Give each mel bin of each clip zero mean and unit variance over the clip's frames
        (cepstral mean and variance normalisation), in place: a recording channel or a
        synthesiser's spectral colour is a per-clip offset of the log-mel, which this removes.
        At most one temporary the size of the features (the bank can hold gigabytes)."""
        owner = self.clip_of_each_frame()
        count = self.lengths.to(self.device, torch.float32)
        sums = torch.zeros(self.features.shape[0], len(self), device=self.device)
        self.features -= (sums.index_add(1, owner, self.features) / count)[:, owner]
        var = sums.index_add(1, owner, self.features.square()) / count
        self.features /= var.sqrt().clamp(min=1e-4)[:, owner]

    @staticmethod
    def as_arrays(item: tuple[torch.Tensor, torch.Tensor, int]
                  ) -> tuple[np.ndarray, np.ndarray, int]:
        """A SpeechDataset item with numpy arrays for tensors (the loader's collate function).
        Workers then send features through their pipe by value: a tensor goes through a
        shared-memory file, and when that file cannot be sized (a file-size limit, a full
        /dev/shm) the worker's queue thread drops the item and the parent waits forever."""
        features, tokens, frames = item
        return features.numpy(), tokens.numpy(), frames

    def batch(self, indices: Sequence[int] | torch.Tensor, frames: int | None = AUDIO_TIME
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Audio (B, n_mels, T), tokens (B, max_len) and true lengths (B,) of the clips at
        `indices`: padded with zeros to `frames` (the handed-out 2754; longer clips were
        cropped when the bank was built) or, with frames=None, to the longest of them."""
        indices = torch.as_tensor(indices, dtype=torch.long)
        lengths = self.lengths[indices]
        frames = frames or int(lengths.max())
        lengths = lengths.clamp(max=frames)
        time = torch.arange(frames)
        valid = time[None, :] < lengths[:, None]  # (B, T)
        where = torch.where(valid, self.offsets[indices, None] + time[None, :], 0)
        valid, where = valid.to(self.device), where.to(self.device)
        audio = self.features[:, where] * valid  # (n_mels, B, T), zero past each clip's end
        return (audio.permute(1, 0, 2).contiguous(), self.tokens[indices.to(self.device)],
                lengths.to(self.device))

    def batches_in_length_order(self, batch_size: int) -> list[torch.Tensor]:
        """Every clip once, in batches of similar length (evaluation: least padding)."""
        return list(torch.argsort(self.lengths, stable=True).split(batch_size))


class ClipBatches:
    """The training batches of every epoch, drawn from (seed, epoch) alone.

    group=False: a fresh random permutation cut into batches (the handed-out shuffled
    DataLoader, last batch smaller). group=True: the permutation is cut into windows of
    `window` batches, each window is sorted by clip length and cut into batches, and the
    batch order is shuffled; batches then hold clips of similar length (little padding)
    while their make-up still changes every epoch. `curriculum` orders the first epoch's
    batches from the shortest clips to the longest (short clips are aligned most easily).
    """

    def __init__(self, lengths: torch.Tensor, batch_size: int, seed: int, group: bool = False,
                 window: int = 50, curriculum: bool = False):
        self.lengths, self.batch_size, self.seed = lengths, batch_size, seed
        self.group, self.window, self.curriculum = group, window, curriculum

    def __len__(self) -> int:
        return -(-len(self.lengths) // self.batch_size)

    def epoch(self, epoch: int) -> list[torch.Tensor]:
        """The batches (index tensors) of 0-based `epoch`."""
        generator = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        order = torch.randperm(len(self.lengths), generator=generator)
        if not self.group:
            return list(order.split(self.batch_size))
        if self.curriculum and epoch == 0:
            return list(order[torch.argsort(self.lengths[order], stable=True)]
                        .split(self.batch_size))
        batches = []
        for window in order.split(self.batch_size * self.window):
            window = window[torch.argsort(self.lengths[window], stable=True)]
            batches += list(window.split(self.batch_size))
        shuffled = torch.randperm(len(batches), generator=generator).tolist()
        return [batches[i] for i in shuffled]
