import shutil
import subprocess
import sys

import numpy as np
import pytest
import soundfile
import torch

import hw2.ljspeech as lj
from conftest import REPO, load_script, shared_file, write_corpus

dl = load_script("download_ljspeech.py")


def test_metadata_parsing_keeps_quotes_commas_and_unicode(tmp_path):
    path = tmp_path / "metadata.csv"
    path.write_text('LJ1|"Quoted," she said, "twice"|"quoted," she said, "twice"\n'
                    "LJ2|Café à la 1840s|Cafe a la eighteen forties\n\n"
                    'LJ3|a "|a "\n', encoding="utf-8")
    clips = lj.parse_metadata(path)
    assert [c.id for c in clips] == ["LJ1", "LJ2", "LJ3"]
    assert clips[0].text == '"Quoted," she said, "twice"'
    assert clips[1] == lj.Clip("LJ2", "Café à la 1840s", "Cafe a la eighteen forties")
    assert clips[2].normalized == 'a "'


def test_malformed_metadata_line_is_a_clear_error(tmp_path):
    path = tmp_path / "metadata.csv"
    path.write_text("LJ1|only two fields\n")
    with pytest.raises(SystemExit, match=r"metadata.csv:1: expected 'id\|text\|normalized"):
        lj.parse_metadata(path)
    with pytest.raises(SystemExit, match="no such file"):
        lj.parse_metadata(tmp_path / "missing.csv")


def test_repeated_ids_and_empty_metadata_are_refused_naming_lines_or_file(tmp_path):
    path = tmp_path / "metadata.csv"
    path.write_text("LJ1|a|a\nLJ2|b|b\n\nLJ1|c|c\n")  # one wav, two transcripts
    with pytest.raises(SystemExit, match=r"^error: \S*metadata.csv:4: clip id LJ1 repeats "
                                         r"line 1$"):
        lj.parse_metadata(path)
    path.write_text("\n\n")
    with pytest.raises(SystemExit, match=r"^error: \S*metadata.csv: no clips \(LJ Speech"):
        lj.parse_metadata(path)


def test_shared_metadata_splits_and_available_clips():
    corpus = lj.LJSpeech(shared_file("LJSpeech-1.1/metadata.csv").parent)
    assert len(corpus.clips) == 13100
    info = corpus.describe()
    assert {k: v["in_metadata"] for k, v in info["splits"].items()} == \
        {"train": 9825, "validation": 655, "test": 2620}
    assert info["clips_with_audio"] == 36 and info["splits"]["train"]["with_audio"] == 36
    assert corpus.split("train")[0].id == "LJ001-0001" and corpus.split("test") == []
    assert corpus.clips_with_audio() == corpus.split("train")  # the 36 genuine ones, in order
    with pytest.raises(SystemExit, match="unknown split"):
        corpus.split("dev")


def test_vectorizer_round_trip_and_unknown_characters():
    vec = lj.TokenVectorizer()
    assert len(vec.vocab) == 35 and vec.vocab[:9] == ("<", ">", "@", "#", " ", ",", ".", "?", "-")
    ids = vec("Hello, World?")
    assert ids.shape == (99,) and ids.dtype == torch.long
    assert vec.decode(ids.tolist()).rstrip("@") == "<hello, world?>"
    odd = vec("it's: café!")
    assert vec.decode(odd.tolist()).rstrip("@") == "<it#s# caf##>"
    long = vec("a" * 200)
    assert long[0] == 0 and long[98] == 1 and (long[1:98] == vec.mapper["a"]).all()


def test_features_match_the_handed_out_pipeline_on_a_genuine_clip():
    wav = shared_file("LJSpeech-1.1/wavs/LJ001-0002.wav")
    waveform = lj.read_wav(wav)
    assert soundfile.info(str(wav)).samplerate == lj.SAMPLE_RATE
    features = lj.LogMel()(waveform)
    assert features.shape == (80, len(waveform) // 160 + 1)
    # the normalisation: (log10 - 4) / 4 floored at max - 8, so the range is exactly 2 wide
    assert features.max() - features.min() <= 2.0 + 1e-6
    assert -1.5 < features.min() and features.max() < 1.5
    spec = torch.stft(waveform, 400, 160, window=torch.hann_window(400), return_complex=True)
    mel = lj.LogMel().mel(spec.abs() ** 2).clamp(min=1e-10).log10()
    expected = (torch.maximum(mel, mel.max() - 8) + 4) / 4
    torch.testing.assert_close(features, expected, rtol=1e-4, atol=1e-4)


def test_cache_reuses_and_invalidates(tmp_path):
    root = write_corpus(tmp_path / "lj", ["LJ1|a|a"], ["LJ1"])
    cache = lj.FeatureCache(tmp_path / "cache", lj.LogMel())
    wav = root / "wavs" / "LJ1.wav"
    first = cache.features(wav)
    (stored,) = cache.dir.glob("LJ1-*.npy")
    np.save(stored, np.full((80, 3), 7.0, np.float32))  # a cache hit must not recompute
    assert (cache.features(wav) == 7).all()
    write_corpus(root, ["LJ1|a|a"], ["LJ1"], seconds=0.7)  # new audio: new key, recomputed
    second = cache.features(wav)
    assert second.shape[1] > first.shape[1] and len(list(cache.dir.glob("LJ1-*.npy"))) == 1
    (stored,) = cache.dir.glob("LJ1-*.npy")
    stored.write_bytes(stored.read_bytes()[:100])  # truncated: recomputed, not a traceback
    torch.testing.assert_close(cache.features(wav), second)
    other = lj.FeatureCache(tmp_path / "cache", lj.LogMel(lj.MelSettings(n_mels=40)))
    assert other.dir != cache.dir and other.features(wav).shape[0] == 40


def test_missing_unreadable_and_empty_inputs_give_clear_errors(tmp_path):
    root = write_corpus(tmp_path / "lj", ["LJ1|a|a", "LJ2|b|b", "LJ3| | "], ["LJ1"])
    (root / "wavs" / "LJ2.wav").write_bytes(b"RIFF garbage")
    corpus = lj.LJSpeech(root)
    cache = lj.FeatureCache(tmp_path / "cache", lj.LogMel())
    with pytest.raises(lj.DataError, match="LJ2.wav: unreadable audio"):
        cache.features(root / "wavs" / "LJ2.wav")
    with pytest.raises(lj.DataError, match="LJ9.wav: missing audio file"):
        cache.features(root / "wavs" / "LJ9.wav")
    clips = corpus.clips
    with pytest.raises(SystemExit, match="LJ3: empty transcript"):
        lj.SpeechDataset(corpus, clips, cache, lj.TokenVectorizer())


def test_audio_is_checked_resampled_and_truncation_detected(tmp_path):
    wavs = tmp_path / "wavs"
    wavs.mkdir()
    t = np.arange(8000) / 8000
    soundfile.write(str(wavs / "slow.wav"), 0.3 * np.sin(2 * np.pi * 300 * t), 8000,
                    subtype="PCM_16")  # one second at 8 kHz
    assert lj.read_wav(wavs / "slow.wav").shape == (lj.SAMPLE_RATE,)  # resampled, same length
    soundfile.write(str(wavs / "short.wav"), np.zeros(150), lj.SAMPLE_RATE, subtype="PCM_16")
    with pytest.raises(lj.DataError, match="short.wav: too short .150 samples"):
        lj.read_wav(wavs / "short.wav")
    soundfile.write(str(wavs / "cut.wav"), np.zeros(4000), lj.SAMPLE_RATE, subtype="PCM_16")
    whole = (wavs / "cut.wav").read_bytes()
    (wavs / "cut.wav").write_bytes(whole[:len(whole) - 2000])  # 1,000 samples lost
    with pytest.raises(lj.DataError, match="cut.wav: truncated wav .3000 of the 4000"):
        lj.read_wav(wavs / "cut.wav")


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_audio_is_refused_at_read_time_naming_the_file(tmp_path, value):
    audio = np.zeros(1000, np.float32)
    audio[[10, 500]] = value
    soundfile.write(str(tmp_path / "bad.wav"), audio, lj.SAMPLE_RATE, subtype="FLOAT")
    with pytest.raises(lj.DataError, match=r"bad.wav: 2 of its 1000 samples are NaN or "
                                           r"infinite$"):
        lj.read_wav(tmp_path / "bad.wav")
    audio[[10, 500]] = 0.5  # the same float wav, finite: read as it is
    soundfile.write(str(tmp_path / "bad.wav"), audio, lj.SAMPLE_RATE, subtype="FLOAT")
    assert lj.read_wav(tmp_path / "bad.wav")[500] == 0.5


def speech_dataset(tmp_path, seconds) -> lj.SpeechDataset:
    """Tone clips of the given durations in a tiny LJ-layout corpus."""
    ids = [f"LJ{i}" for i in range(len(seconds))]
    root = write_corpus(tmp_path / "lj", [f"{i}|t {i}|t {i}" for i in ids], ids)
    for clip_id, length in zip(ids, seconds):
        t = np.arange(int(lj.SAMPLE_RATE * length)) / lj.SAMPLE_RATE
        soundfile.write(str(root / "wavs" / f"{clip_id}.wav"), 0.3 * np.sin(900 * t),
                        lj.SAMPLE_RATE)
    corpus = lj.LJSpeech(root)
    return lj.SpeechDataset(corpus, corpus.clips, lj.FeatureCache(tmp_path / "c", lj.LogMel()),
                            lj.TokenVectorizer())


@pytest.mark.parametrize("workers", [0, 2])
def test_feature_bank_batches_equal_the_handed_out_padding(tmp_path, workers):
    ds = speech_dataset(tmp_path, [0.2, 0.5, 0.3, 0.4])
    bank = lj.FeatureBank(ds, workers=workers, progress=False)
    clips = [ds[i] for i in range(4)]
    assert bank.lengths.tolist() == [f.shape[1] for f, _, _ in clips]
    order = [2, 0, 3]
    audio, text, lengths = bank.batch(order, None)  # padded to the longest of the three
    longest = max(clips[i][0].shape[1] for i in order)
    assert audio.shape == (3, 80, longest) and lengths.tolist() == [clips[i][2] for i in order]
    fixed, fixed_text, fixed_lengths = bank.batch(order)  # the handed-out 2754 frames
    assert fixed.shape == (3, 80, lj.AUDIO_TIME) and torch.equal(fixed_lengths, lengths)
    for row, i in enumerate(order):
        features, tokens, frames = clips[i]
        torch.testing.assert_close(fixed[row, :, :frames], features, rtol=0, atol=0)
        assert (fixed[row, :, frames:] == 0).all() and (audio[row, :, frames:] == 0).all()
        assert torch.equal(text[row], tokens) and torch.equal(fixed_text[row], tokens)
    torch.testing.assert_close(fixed[:, :, :longest], audio, rtol=0, atol=0)


def test_per_clip_normalisation_equals_each_clip_normalised_alone(tmp_path):
    bank = lj.FeatureBank(speech_dataset(tmp_path, [0.3, 0.5, 0.4]), progress=False)
    before = [bank.batch([i], None)[0][0] for i in range(len(bank))]  # (n_mels, frames) each
    bank.normalise_per_clip()
    audio, _, lengths = bank.batch(torch.arange(len(bank)), None)
    for clip, (original, frames) in enumerate(zip(before, lengths.tolist())):
        mean = original.mean(dim=1, keepdim=True)
        expected = (original - mean) / (original - mean).pow(2).mean(dim=1, keepdim=True).sqrt()
        torch.testing.assert_close(audio[clip, :, :frames], expected, atol=1e-4, rtol=1e-4)
        assert not audio[clip, :, frames:].any()  # the padding stays zero


def test_a_raised_floor_equals_each_clip_floored_alone_and_8_decades_change_nothing(tmp_path):
    bank = lj.FeatureBank(speech_dataset(tmp_path, [0.3, 0.5, 0.4]), progress=False)
    before = bank.features.clone()
    bank.raise_floor(lj.LOG_MEL_DECADES)  # the cached features' own floor
    assert torch.equal(bank.features, before)
    originals = [bank.batch([i], None)[0][0] for i in range(len(bank))]
    bank.raise_floor(3.0)
    audio, _, lengths = bank.batch(torch.arange(len(bank)), None)
    for clip, (original, frames) in enumerate(zip(originals, lengths.tolist())):
        expected = original.clamp(min=float(original.max()) - 3.0 / 4)  # 3 decades, features /4
        assert torch.equal(audio[clip, :, :frames], expected)
        assert (expected > original).any()  # the floor did rise
        assert not audio[clip, :, frames:].any()  # the padding stays zero


def cosine_basis(n: int) -> np.ndarray:
    """The orthonormal DCT-II basis, row k = cos(pi k (2m + 1) / 2n), written out."""
    k, m = np.arange(n)[:, None], np.arange(n)[None, :]
    basis = np.sqrt(2 / n) * np.cos(np.pi * k * (2 * m + 1) / (2 * n))
    basis[0] /= np.sqrt(2)
    return basis


def test_liftering_keeps_the_first_cosines_of_each_frame_and_drops_the_rest(tmp_path):
    bank = lj.FeatureBank(speech_dataset(tmp_path, [0.3, 0.5, 0.4]), progress=False)
    basis = cosine_basis(80)
    frames = bank.features.shape[1]
    bank.features[:, :2] = torch.from_numpy(basis[[12, 13]].T).float()  # two pure cosines
    before = bank.features.double().numpy()
    bank.smooth_spectrum(13, chunk=7)  # chunks that cut across clips change nothing
    after = bank.features.double().numpy()
    kept = basis[:13]
    np.testing.assert_allclose(after, kept.T @ (kept @ before), atol=1e-5)
    np.testing.assert_allclose(after[:, 0], basis[12], atol=1e-6)  # the 13th cosine stays
    np.testing.assert_allclose(after[:, 1], 0, atol=1e-6)  # the 14th goes
    assert after.shape == (80, frames) and np.abs(after - before).max() > 0.01
    bank.smooth_spectrum(13)  # a projection: once is all it does
    np.testing.assert_allclose(bank.features.double().numpy(), after, atol=1e-5)


def test_feature_bank_crops_long_clips_and_names_a_bad_file(tmp_path, capsys):
    ds = speech_dataset(tmp_path, [0.3, 21.0])  # 21 s: 2,895 frames > 2,754
    bank = lj.FeatureBank(ds, progress=False)
    assert bank.lengths.tolist() == [ds[0][2], lj.AUDIO_TIME] and bank.cropped == 1
    assert "1 clip(s) of features cropped to 2754 frames" in capsys.readouterr().out
    assert bank.batch([0, 1], None)[0].shape == (2, 80, lj.AUDIO_TIME)
    wav = ds.corpus.wav_path(ds.clips[1])
    wav.write_bytes(wav.read_bytes()[:1000])
    for workers in (0, 2):
        with pytest.raises(SystemExit, match=r"^error: \S*LJ1.wav: truncated wav"):
            lj.FeatureBank(ds, workers=workers, progress=False)


def test_clip_batches_cover_each_clip_once_and_resume_from_the_epoch_alone():
    lengths = torch.randint(100, 1700, (203,), generator=torch.Generator().manual_seed(1))
    for group in (False, True):
        batches = lj.ClipBatches(lengths, 16, seed=3, group=group, window=4)
        epoch = batches.epoch(2)
        assert len(epoch) == len(batches) == 13
        assert sorted(torch.cat(epoch).tolist()) == list(range(203))
        again = lj.ClipBatches(lengths, 16, seed=3, group=group, window=4).epoch(2)
        assert all(torch.equal(a, b) for a, b in zip(epoch, again))  # a resumed run's epoch
        assert not all(torch.equal(a, b) for a, b in zip(epoch, batches.epoch(3)))
    padding = {}
    for group in (False, True):
        epoch = lj.ClipBatches(lengths, 16, seed=3, group=group, window=4).epoch(0)
        padding[group] = sum(int(lengths[b].max()) * len(b) - int(lengths[b].sum())
                             for b in epoch)
    assert padding[True] < padding[False] / 2  # grouping is what -fast is for
    first = lj.ClipBatches(lengths, 16, seed=3, group=True, curriculum=True).epoch(0)
    maxima = [int(lengths[b].max()) for b in first]
    assert maxima == sorted(maxima)  # the first epoch from the shortest clips up


def test_voice_choice_is_deterministic_and_varied():
    voices = [dl.choose_voice(42, i) for i in range(400)]
    assert voices == [dl.choose_voice(42, i) for i in range(400)]
    assert {v["engine"] for v in voices} == {"espeak-ng", "flite", "festival"}
    assert len({v["voice"] for v in voices}) > 20
    festival = [v for v in voices if v["engine"] == "festival"]
    assert 0.15 < len(festival) / len(voices) < 0.25  # FESTIVAL_SHARE = 0.2
    assert all(0.8 <= v["rate"] <= 1.1 and -3 <= v["pitch"] <= 3 for v in festival)


def test_festival_takes_its_share_without_changing_the_other_clips_voices():
    """A clip that festival does not speak keeps the voice of the espeak-ng/flite corpus
    (share 0), so a corpus rendered before festival is re-rendered only in festival's part."""
    for index in range(300):
        voice = dl.choose_voice(42, index)
        if voice["engine"] != "festival":
            assert voice == dl.choose_voice(42, index, festival_share=0.0)
    assert all(dl.choose_voice(7, i, festival_share=1.0)["engine"] == "festival"
               for i in range(20))


def test_more_voices_take_their_share_without_changing_the_other_clips_voices():
    """-more_voices draws from a stream of its own, after festival: festival's clips stay
    festival's, the others keep their espeak-ng/flite voice unless Pico or MBROLA takes them."""
    voices = [dl.choose_voice(42, i, more_share=0.3) for i in range(600)]
    assert voices == [dl.choose_voice(42, i, more_share=0.3) for i in range(600)]
    for index, voice in enumerate(voices):
        default = dl.choose_voice(42, index)
        if voice["engine"] not in ("pico", "mbrola"):
            assert voice == default
        else:
            assert default["engine"] != "festival"
    more = [v for v in voices if v["engine"] in ("pico", "mbrola")]
    assert 0.2 < len(more) / (len(voices) * (1 - dl.FESTIVAL_SHARE)) < 0.4
    assert {v["voice"] for v in more} == {*dl.PICO_VOICES, *dl.MBROLA_VOICES}
    assert all(80 <= v["rate"] <= 120 and 85 <= v["pitch"] <= 115
               for v in more if v["engine"] == "pico")
    assert {dl.choose_voice(7, i, festival_share=0.0, more_share=1.0)["engine"]
            for i in range(40)} == {"pico", "mbrola"}


def test_missing_extra_voices_are_one_line_naming_their_packages(monkeypatch):
    found = shutil.which
    monkeypatch.setattr(dl.shutil, "which", lambda tool: None if tool == "pico2wave"
                        else found(tool) or f"/usr/bin/{tool}")
    with pytest.raises(SystemExit, match=r"^error: pico2wave not found: apt-get install "
                       r"espeak-ng flite libttspico-utils mbrola mbrola-us1 mbrola-us2 "
                       r"mbrola-us3 \(Debian non-free\)$"):
        dl.check_tools(festival_share=0.0, more_share=0.5)
    dl.check_tools(festival_share=0.0, more_share=0.0)  # not needed: not asked for


def more_voices_ready() -> bool:
    try:
        dl.check_tools(festival_share=0.0, more_share=1.0)
    except SystemExit:
        return False
    return True


@pytest.mark.skipif(not more_voices_ready(), reason="Pico and MBROLA not installed (Debian "
                    f"non-free: apt-get install {dl.MORE_VOICES_PACKAGES})")
def test_more_voices_render_in_the_corpus_format(tmp_path):
    lines = [f"LJ001-{i:04d}|Clip number {i}.|clip number {i} & more." for i in range(1, 9)]
    source = write_corpus(tmp_path / "src" / "LJSpeech-1.1", lines)
    proc = render(source / "metadata.csv", tmp_path / "out", "-festival_share", "0",
                  "-more_voices", "1")
    assert proc.returncode == 0, proc.stderr
    folder = tmp_path / "out" / "LJSpeech-1.1"
    engines = [line.split("\t")[1] for line in
               (folder / "tts_manifest.tsv").read_text().splitlines()[1:]]
    assert set(engines) == {"pico", "mbrola"} and len(engines) == 8
    for wav in (folder / "wavs").glob("*.wav"):
        info = soundfile.info(str(wav))
        assert info.samplerate == 22050 and info.channels == 1 and info.duration > 0.5


def synthesisers_ready() -> bool:
    try:
        dl.check_tools(festival_share=1.0)  # every engine, and festival's voice, say a word
    except SystemExit:
        return False
    return True


needs_synthesisers = pytest.mark.skipif(
    not synthesisers_ready(), reason="synthesisers not installed (apt-get install espeak-ng "
                                     "flite festival festvox-us-slt-hts)")


@needs_synthesisers
def test_tts_corpus_in_lj_layout_without_the_genuine_transcripts(tmp_path):
    source = write_corpus(tmp_path / "src" / "LJSpeech-1.1",
                          ["LJ001-0001|Genuine one.|genuine one.",
                           "LJ001-0002|Mr. Smith, 1840.|mister smith, eighteen forty.",
                           "LJ001-0003|-Dash first|-dash first",
                           "LJ001-0004||"], ["LJ001-0001"])
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, str(REPO / "download_ljspeech.py"), "-tts",
                           "-metadata", str(source / "metadata.csv"), "-data_dir", str(out),
                           "-processes", "2", "-no_progress"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "1 genuine clips left out, 1 empty transcripts skipped" in proc.stdout
    folder = out / "LJSpeech-1.1"
    assert (folder / "metadata.csv").read_text() == (source / "metadata.csv").read_text()
    wavs = sorted(p.name for p in (folder / "wavs").glob("*"))
    assert wavs == ["LJ001-0002.wav", "LJ001-0003.wav"]  # no genuine, no empty, no partials
    for name in wavs:
        info = soundfile.info(str(folder / "wavs" / name))
        assert info.samplerate == 22050 and info.channels == 1 and info.subtype == "PCM_16"
        assert info.duration > 0.3
    manifest = (folder / "tts_manifest.tsv").read_text().splitlines()
    assert manifest[0].startswith("id\tengine") and len(manifest) == 3
    before = (folder / "wavs" / "LJ001-0002.wav").stat().st_mtime_ns
    again = subprocess.run([sys.executable, str(REPO / "download_ljspeech.py"), "-tts",
                            "-metadata", str(source / "metadata.csv"), "-data_dir", str(out),
                            "-no_progress"], capture_output=True, text=True)
    assert "rendered 0 clips (0 in another voice before), 2 already there" in again.stdout
    assert (folder / "wavs" / "LJ001-0002.wav").stat().st_mtime_ns == before


def render(source, out, *flags):
    return subprocess.run([sys.executable, str(REPO / "download_ljspeech.py"), "-tts",
                           "-metadata", str(source), "-data_dir", str(out), "-no_progress",
                           "-processes", "2", *flags], capture_output=True, text=True)


@needs_synthesisers
def test_a_clip_given_another_voice_is_rendered_again_and_the_corpus_splits_by_voice(tmp_path):
    lines = [f"LJ001-{i:04d}|Clip number {i}.|clip number {i}." for i in range(1, 5)]
    source = write_corpus(tmp_path / "src" / "LJSpeech-1.1", lines)
    out = tmp_path / "out"
    assert render(source / "metadata.csv", out, "-festival_share", "0").returncode == 0
    folder = out / "LJSpeech-1.1"
    before = {p.name: p.stat().st_mtime_ns for p in (folder / "wavs").glob("*.wav")}
    proc = render(source / "metadata.csv", out, "-festival_share", "1", "-hold_out", "festival")
    assert proc.returncode == 0, proc.stderr
    assert "rendered 4 clips (4 in another voice before), 0 already there" in proc.stdout
    after = {p.name: p.stat().st_mtime_ns for p in (folder / "wavs").glob("*.wav")}
    assert after.keys() == before.keys() and all(after[k] != before[k] for k in after)
    engines = [line.split("\t")[1] for line in
               (folder / "tts_manifest.tsv").read_text().splitlines()[1:]]
    assert engines == ["festival"] * 4
    # every clip is festival's and none is in the validation split (LJ001 is training)
    without, heard = (out / "without-festival" / "LJSpeech-1.1",
                      out / "festival-validation" / "LJSpeech-1.1")
    assert not list((without / "wavs").iterdir()) and not list((heard / "wavs").iterdir())
    assert (without / "metadata.csv").read_text() == (folder / "metadata.csv").read_text()


def test_hold_out_splits_by_engine_and_split_with_links(tmp_path, capsys):
    """A corpus whose validation clips are spoken by two engines: the held-out engine's
    validation clips go to one folder, every other clip (all splits) to the other."""
    validation = lj.SPLITS["validation"][0]
    ids = [f"LJ{i:03d}-0001" for i in range(validation + 4)]
    folder = write_corpus(tmp_path / "LJSpeech-1.1", [f"{i}|a b.|a b." for i in ids],
                          ids[:2] + ids[validation:])
    engines = {i: "festival" if n % 2 else "flite" for n, i in enumerate(ids)}
    present = ids[:2] + ids[validation:]
    (folder / "tts_manifest.tsv").write_text("id\tengine\tvoice\trate\tpitch\tsnr_db\n" + "".join(
        f"{i}\t{engines[i]}\tv\t1\t0\t40\n" for i in present))
    dl.main(["-data_dir", str(tmp_path), "-hold_out", "festival"])  # no -tts: split only
    without, heard = (tmp_path / "without-festival" / "LJSpeech-1.1",
                      tmp_path / "festival-validation" / "LJSpeech-1.1")
    assert capsys.readouterr().out.splitlines() == [f"{without}: 3 clips have audio",
                                                    f"{heard}: 2 clips have audio"]
    assert sorted(p.stem for p in (heard / "wavs").iterdir()) == \
        [i for i in ids[validation:] if engines[i] == "festival"]
    assert sorted(p.stem for p in (without / "wavs").iterdir()) == \
        sorted(i for i in present if engines[i] == "flite")
    assert all(p.is_symlink() and p.resolve().parent == (folder / "wavs").resolve()
               for p in (heard / "wavs").iterdir())
    assert lj.LJSpeech(without).split("validation") and (without / "tts_manifest.tsv").exists()
    with pytest.raises(SystemExit, match="no clip of .* is spoken by espeak-ng"):
        dl.hold_out_engine(folder, "espeak-ng")
    real = tmp_path / "festival-validation" / "LJSpeech-1.1" / "wavs" / "mine.wav"
    real.unlink(missing_ok=True)
    real.write_bytes(b"RIFF")  # a file of the user's in the way: refused, left alone
    with pytest.raises(SystemExit, match="festival-validation is in the way and is not a copy "
                                         "that -hold_out made"):
        dl.hold_out_engine(folder, "festival")
    assert real.read_bytes() == b"RIFF"
    (folder / "tts_manifest.tsv").unlink()
    with pytest.raises(SystemExit, match="-hold_out needs a corpus rendered with -tts"):
        dl.hold_out_engine(folder, "festival")


def test_download_offline_fails_in_one_line(tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "download_ljspeech.py"), "-data_dir",
                           str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "use -tts" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("flags,message", [
    (["-limit", "-1"], "argument -limit: must be a positive integer (got -1)"),
    (["-processes", "0"], "argument -processes: must be a positive integer (got 0)"),
    (["-seed", "-1"], "argument -seed: must lie in 0..4294967295 (got -1)"),
    (["-festival_share", "1.5"], "argument -festival_share: must lie in 0..1 (got 1.5)"),
    (["-hold_out", "sapi"], "argument -hold_out: invalid choice: 'sapi'")])
def test_download_bad_counts_are_usage_errors(flags, message, capsys):
    dl = load_script("download_ljspeech.py")
    with pytest.raises(SystemExit) as stop:
        dl.parse_args(["-tts", *flags])
    assert stop.value.code == 2 and message in capsys.readouterr().err


def test_a_failing_synthesiser_says_why_in_one_line():
    """Its stderr's first line reaches the message (it used to be swallowed)."""
    dl = load_script("download_ljspeech.py")
    failing = [sys.executable, "-c", "import sys; sys.stderr.write('no voice xyz\\nmore'); "
               "sys.exit(3)"]
    with pytest.raises(dl.SynthesiserError, match=r"failed: no voice xyz$"):
        dl.run_synthesiser(failing)
    with pytest.raises(dl.SynthesiserError, match="no-such-synthesiser failed"):
        dl.run_synthesiser(["no-such-synthesiser"])


def test_a_festival_script_error_is_a_synthesiser_error_though_festival_exits_0():
    """festival, asked for a voice it lacks, says so and speaks in its default voice."""
    erring = [sys.executable, "-c", "print('SIOD ERROR: unbound variable : voice_x'); "
              "print('more')"]
    with pytest.raises(dl.SynthesiserError, match="failed: SIOD ERROR: unbound variable : "
                                                  "voice_x$"):
        dl.run_synthesiser(erring)


def test_a_synthesiser_without_audio_is_a_synthesiser_error(tmp_path):
    raw = tmp_path / "raw.wav"
    with pytest.raises(dl.SynthesiserError, match="^flite exited 0 but wrote no wav$"):
        dl.read_output(raw, "flite")
    raw.write_bytes(b"")
    with pytest.raises(dl.SynthesiserError, match=r"^flite wrote an unreadable wav \("):
        dl.read_output(raw, "flite")
    soundfile.write(str(raw), np.zeros(0), 16000, subtype="PCM_16")
    with pytest.raises(dl.SynthesiserError, match="^espeak-ng wrote a wav without samples$"):
        dl.read_output(raw, "espeak-ng")
    soundfile.write(str(raw), np.full((300, 2), 0.25), 16000, subtype="PCM_16")
    audio, rate = dl.read_output(raw, "espeak-ng")
    assert rate == 16000 and audio.shape == (300,)
