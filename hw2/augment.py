"""Training-time augmentation of Question 3's log-mel batches (all off by default).

Each function takes a padded batch (B, n_mels, T) with its true lengths (B,) (None: every clip
fills T, the handed-out padding) and a torch.Generator, so a run's draws follow its seed. They
act on the features held in memory, so augmentation costs no file read and no STFT.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from hw2.ljspeech import SAMPLE_RATE, MelSettings, log_mel_from_power, power_from_log_mel

Tensor = torch.Tensor
FRAMES_PER_SECOND = SAMPLE_RATE / MelSettings.hop_length  # 137.8 log-mel frames a second
REVERB_DRR_DB = (5.0, 20.0)  # direct-to-reverberant ratio of a small room, close microphone


@dataclass(frozen=True)
class Augmentation:
    """Which augmentations a training step applies, and how strongly."""
    speed: float = 0.0        # tempo factor drawn in [1 - speed, 1 + speed] per batch
    vtlp: float = 0.0         # mel-axis warp factor drawn in [1 - vtlp, 1 + vtlp] per batch
    freq_masks: int = 0       # SpecAugment: masks of up to freq_width mel bins per clip
    freq_width: int = 15
    time_masks: int = 0       # SpecAugment: masks of up to time_width frames per clip
    time_width: int = 40
    reverb: float = 0.0       # room reverberation time (RT60) drawn in [0, reverb] s per batch

    @property
    def enabled(self) -> bool:
        return bool(self.speed or self.vtlp or self.freq_masks or self.time_masks or self.reverb)


def uniform(generator: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator))


def change_speed(audio: Tensor, lengths: Tensor | None, factor: float
                 ) -> tuple[Tensor, Tensor | None]:
    """Play the batch `factor` times faster: frames resampled linearly along time, so a clip
    of n frames lasts round(n / factor). Without lengths the batch keeps its T frames (cropped
    or zero-padded), as the handed-out padding needs."""
    frames = audio.shape[-1]
    resampled = F.interpolate(audio, size=max(1, round(frames / factor)), mode="linear",
                              align_corners=False)
    if lengths is None:
        return F.pad(resampled, (0, frames - resampled.shape[-1]))[..., :frames], None
    return resampled, (lengths.float() / factor).round().clamp(min=1).long()


def warp_mel_axis(audio: Tensor, factor: float) -> Tensor:
    """Vocal-tract-length perturbation on the mel axis: bin i takes the value at i * factor
    (linear interpolation, the top bin repeated past the edge)."""
    n_mels = audio.shape[1]
    source = (torch.arange(n_mels, dtype=audio.dtype, device=audio.device) * factor) \
        .clamp(max=n_mels - 1)
    low = source.floor().long()
    high = (low + 1).clamp(max=n_mels - 1)
    weight = (source - low)[None, :, None]
    return audio[:, low] * (1 - weight) + audio[:, high] * weight


def reverberate(audio: Tensor, lengths: Tensor | None, rt60: float, drr_db: float) -> Tensor:
    """A room's late reverberation, in the power domain of the handed-out log-mel
    ((log10 power + 4) / 4): every frame's power also reaches the next frames, decaying by 60 dB
    in `rt60` seconds, with a tail of `drr_db` dB less energy than the direct sound. Causal, so
    a clip's frames never hear the padding after it; the handed-out floor (8 decades under each
    clip's loudest value) is applied again, and frames past `lengths` stay zero (without
    lengths the batch is the handed-out input, whose padding the tail reaches as a room's
    would)."""
    taps = round(rt60 * FRAMES_PER_SECOND)
    if taps == 0:  # a tail shorter than half a frame: nothing the log-mel frames can show
        return audio
    # the decay's shape, summing to one, times the tail's energy relative to the direct sound's
    decay = torch.softmax(-math.log(1e6) / (rt60 * FRAMES_PER_SECOND)
                          * torch.arange(taps, 0, -1, device=audio.device), dim=0)
    tail = decay * 10 ** (-drr_db / 10)
    kernel = torch.cat([tail, torch.ones_like(tail[:1])])  # oldest frame first, then the direct
    power = power_from_log_mel(audio.float())
    heard = F.pad(power, (taps, 0)).unfold(-1, taps + 1, 1) @ kernel  # (B, n_mels, T)
    heard = log_mel_from_power(heard).to(audio.dtype)
    if lengths is None:
        return heard
    inside = torch.arange(audio.shape[-1], device=audio.device) < lengths.to(audio.device)[:, None]
    return heard * inside[:, None, :]


def mask_bands(audio: Tensor, axis: int, count: int, width: int, limits: Tensor,
               generator: torch.Generator) -> Tensor:
    """Zero `count` bands of up to `width` positions per clip along `axis` (1: mel, 2: time),
    each inside the clip's first `limits` positions (B,)."""
    b, size = audio.shape[0], audio.shape[axis]
    widths = (torch.rand(b, count, generator=generator) * (width + 1)).long()
    starts = (torch.rand(b, count, generator=generator)
              * (limits[:, None].cpu() - widths).clamp(min=0)).long()
    positions = torch.arange(size)[None, None, :]
    masked = ((positions >= starts[..., None]) & (positions < (starts + widths)[..., None])) \
        .any(dim=1).to(audio.device)  # (B, size)
    shape = (b, size, 1) if axis == 1 else (b, 1, size)
    return audio.masked_fill(masked.view(shape), 0.0)


def augment(audio: Tensor, lengths: Tensor | None, settings: Augmentation,
            generator: torch.Generator) -> tuple[Tensor, Tensor | None]:
    """The batch as one training step sees it: tempo, mel warp, room, then SpecAugment masks."""
    if settings.speed:
        audio, lengths = change_speed(audio, lengths, uniform(generator, 1 - settings.speed,
                                                              1 + settings.speed))
    if settings.vtlp:
        audio = warp_mel_axis(audio, uniform(generator, 1 - settings.vtlp, 1 + settings.vtlp))
    if settings.reverb:
        audio = reverberate(audio, lengths, uniform(generator, 0.0, settings.reverb),
                            uniform(generator, *REVERB_DRR_DB))
    frames = lengths if lengths is not None else torch.full((audio.shape[0],), audio.shape[-1])
    if settings.freq_masks:
        audio = mask_bands(audio, 1, settings.freq_masks, settings.freq_width,
                           torch.full_like(frames, audio.shape[1]), generator)
    if settings.time_masks:
        audio = mask_bands(audio, 2, settings.time_masks, settings.time_width, frames, generator)
    return audio, lengths
