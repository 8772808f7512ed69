import pytest
import torch

from hw2.augment import (FRAMES_PER_SECOND, Augmentation, augment, change_speed, mask_bands,
                         reverberate, warp_mel_axis)


def batch(b: int = 3, frames: int = 50) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    return torch.rand(b, 80, frames) + 0.1, torch.tensor([frames, 30, 17])


def test_off_by_default_returns_the_batch_unchanged():
    audio, lengths = batch()
    settings = Augmentation()
    assert not settings.enabled
    out, out_lengths = augment(audio, lengths, settings, torch.Generator().manual_seed(1))
    assert out is audio and out_lengths is lengths


def test_same_seed_same_draws_other_seed_other_draws():
    audio, lengths = batch()
    settings = Augmentation(speed=0.1, vtlp=0.1, freq_masks=2, time_masks=2, reverb=0.3)
    a = augment(audio, lengths, settings, torch.Generator().manual_seed(7))
    b = augment(audio, lengths, settings, torch.Generator().manual_seed(7))
    c = augment(audio, lengths, settings, torch.Generator().manual_seed(8))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert a[0].shape != c[0].shape or not torch.equal(a[0], c[0])


@pytest.mark.parametrize("factor", [0.9, 1.1])
def test_speed_change_scales_every_length_and_keeps_the_handed_out_padding(factor):
    audio, lengths = batch()
    out, out_lengths = change_speed(audio, lengths, factor)
    assert out.shape == (3, 80, round(50 / factor))
    assert out_lengths.tolist() == [round(n / factor) for n in lengths.tolist()]
    padded, none = change_speed(audio, None, factor)  # handed-out: always T frames
    assert padded.shape == audio.shape and none is None
    assert torch.equal(change_speed(audio, lengths, 1.0)[0], audio)  # factor 1: identity


def test_speed_change_of_a_constant_clip_stays_constant():
    audio = torch.full((1, 80, 40), 0.5)
    out, _ = change_speed(audio, torch.tensor([40]), 1.1)
    assert torch.allclose(out, torch.full_like(out, 0.5))


def test_mel_warp_reads_bin_i_at_i_times_the_factor():
    ramp = torch.arange(80, dtype=torch.float32).view(1, 80, 1).expand(2, 80, 5)
    assert torch.equal(warp_mel_axis(ramp, 1.0), ramp)
    warped = warp_mel_axis(ramp, 0.9)
    assert torch.allclose(warped[0, :, 0], torch.arange(80) * 0.9)
    stretched = warp_mel_axis(ramp, 1.1)  # past the top bin: the top bin repeated
    assert torch.allclose(stretched[0, :, 0], (torch.arange(80) * 1.1).clamp(max=79))


def test_time_masks_stay_inside_each_clip_and_within_their_width():
    audio, lengths = batch()
    out = mask_bands(audio, 2, count=2, width=6, limits=lengths,
                     generator=torch.Generator().manual_seed(3))
    zeroed = (out == 0).all(dim=1)  # (B, T): whole frames zeroed
    for clip, n in enumerate(lengths.tolist()):
        assert not zeroed[clip, n:].any()  # never in the padding
        assert int(zeroed[clip].sum()) <= 2 * 6
    untouched = ~zeroed
    assert torch.equal(out[untouched.unsqueeze(1).expand_as(out)],
                       audio[untouched.unsqueeze(1).expand_as(audio)])


def test_frequency_masks_zero_whole_mel_bands():
    audio, lengths = batch()
    out = mask_bands(audio, 1, count=1, width=15, limits=torch.full((3,), 80),
                     generator=torch.Generator().manual_seed(4))
    zeroed_bins = (out == 0).all(dim=2)  # (B, n_mels)
    assert zeroed_bins.sum(dim=1).max() <= 15 and zeroed_bins.any()
    assert ((out == 0) == zeroed_bins[:, :, None].expand_as(out)).all()


def power(features: torch.Tensor) -> torch.Tensor:
    """The handed-out log-mel ((log10 power + 4) / 4) back to power."""
    return 10 ** (4 * features.double() - 4)


def test_reverberation_of_a_click_decays_60_db_in_rt60_with_the_tail_energy_asked():
    floor = (-8.0 + 4) / 4  # 8 decades under the click: the handed-out floor
    click = torch.full((1, 2, 200), floor)
    click[..., 10] = 1.0  # log10 power 0
    rt60, drr_db = 0.3, 10.0
    out = reverberate(click, None, rt60, drr_db)
    room = reverberate(torch.full_like(click, floor), None, rt60, drr_db)  # the floor's echo
    assert torch.equal(out[..., :10], room[..., :10])  # causal: nothing before the click
    added = power(out[0, 0]) - power(room[0, 0])
    assert float(added[10]) == pytest.approx(1.0, rel=1e-6)  # the click itself
    tail = added[11:]
    assert (tail[1:] <= tail[:-1]).all()  # decays
    assert float(tail.sum()) == pytest.approx(10 ** (-drr_db / 10), rel=1e-3)
    decay_db = 10 * torch.log10(tail[20] / tail[0]) / 20 * rt60 * FRAMES_PER_SECOND
    assert float(decay_db) == pytest.approx(-60.0, rel=1e-3)  # 60 dB down in RT60
    assert torch.equal(reverberate(click, None, 0.0, drr_db), click)  # no room: unchanged
    assert torch.equal(reverberate(click, None, 0.4 / FRAMES_PER_SECOND, drr_db), click)
    short = 0.6 / FRAMES_PER_SECOND  # one tap: the next frame hears the whole tail
    one_tap = power(reverberate(click, None, short, drr_db)[0, 0])
    assert torch.isfinite(one_tap).all()
    added = one_tap - power(reverberate(torch.full_like(click, floor), None, short, drr_db)[0, 0])
    assert float(added[11]) == pytest.approx(10 ** (-drr_db / 10), rel=1e-3)
    assert float(added[12:].abs().max()) < 1e-9


def test_reverberation_keeps_zeros_past_each_clip_and_a_clip_deaf_to_its_padding():
    audio, lengths = batch()
    padded = audio * (torch.arange(50) < lengths[:, None])[:, None, :]
    out = reverberate(padded, lengths, 0.4, 5.0)
    assert out.shape == padded.shape
    for clip, n in enumerate(lengths.tolist()):
        assert (out[clip, :, n:] == 0).all()  # the padding stays zero
        assert (out[clip, :, :n] >= padded[clip, :, :n] - 1e-6).all()  # a room only adds
        alone = reverberate(padded[clip:clip + 1, :, :n], None, 0.4, 5.0)
        assert torch.allclose(out[clip:clip + 1, :, :n], alone, atol=1e-6)
