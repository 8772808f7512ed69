import subprocess
import sys

import numpy as np
import pytest
import soundfile
import torch
from torch.utils.data import DataLoader

import ljspeech as lj
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


def test_shared_metadata_splits_and_available_clips():
    corpus = lj.LJSpeech(shared_file("LJSpeech-1.1/metadata.csv").parent)
    assert len(corpus.clips) == 13100
    info = corpus.describe()
    assert {k: v["in_metadata"] for k, v in info["splits"].items()} == \
        {"train": 9825, "validation": 655, "test": 2620}
    assert info["clips_with_audio"] == 36 and info["splits"]["train"]["with_audio"] == 36
    assert corpus.split("train")[0].id == "LJ001-0001" and corpus.split("test") == []
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
    waveform, rate = lj.read_wav(wav)
    assert rate == 22050
    features = lj.LogMel()(waveform)
    assert features.shape == (80, len(waveform) // 160 + 1)
    # the normalisation: (log10 - 4) / 4 floored at max - 8, so the range is exactly 2 wide
    assert features.max() - features.min() <= 2.0 + 1e-6
    assert -1.5 < features.min() and features.max() < 1.5
    spec = torch.stft(waveform, 400, 160, window=torch.hann_window(400), return_complex=True)
    mel = lj.LogMel().mel(spec.abs() ** 2).clamp(min=1e-10).log10()
    expected = (torch.maximum(mel, mel.max() - 8) + 4) / 4
    torch.testing.assert_close(features, expected, rtol=1e-4, atol=1e-4)
    padded = lj.pad_or_crop(features)
    assert padded.shape == (80, 2754) and (padded[:, features.shape[1]:] == 0).all()


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
    other = lj.FeatureCache(tmp_path / "cache", lj.LogMel(lj.MelSettings(n_mels=40)))
    assert other.dir != cache.dir and other.features(wav).shape[0] == 40


def test_missing_unreadable_and_empty_inputs_give_clear_errors(tmp_path):
    root = write_corpus(tmp_path / "lj", ["LJ1|a|a", "LJ2|b|b", "LJ3| | "], ["LJ1"])
    (root / "wavs" / "LJ2.wav").write_bytes(b"RIFF garbage")
    corpus = lj.LJSpeech(root)
    cache = lj.FeatureCache(tmp_path / "cache", lj.LogMel())
    with pytest.raises(SystemExit, match="LJ2.wav: unreadable audio"):
        cache.features(root / "wavs" / "LJ2.wav")
    with pytest.raises(SystemExit, match="LJ9.wav: missing audio file"):
        cache.features(root / "wavs" / "LJ9.wav")
    clips = corpus.clips
    with pytest.raises(SystemExit, match="LJ3: empty transcript"):
        lj.SpeechDataset(corpus, clips, cache, lj.TokenVectorizer())


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_dataloader_workers_and_length_aware_padding(tmp_path, context):
    ids = [f"LJ{i}" for i in range(4)]
    root = write_corpus(tmp_path / "lj", [f"{i}|t {i}|t {i}" for i in ids], ids)
    corpus = lj.LJSpeech(root)
    for i, clip_id in enumerate(ids):  # different lengths
        t = np.arange(int(lj.SAMPLE_RATE * (0.2 + 0.1 * i))) / lj.SAMPLE_RATE
        soundfile.write(str(root / "wavs" / f"{clip_id}.wav"), 0.3 * np.sin(900 * t),
                        lj.SAMPLE_RATE)
    ds = lj.SpeechDataset(corpus, corpus.clips, lj.FeatureCache(tmp_path / "c", lj.LogMel()),
                          lj.TokenVectorizer())
    loader = DataLoader(ds, batch_size=4, num_workers=2, collate_fn=lj.PadCollate(None),
                        multiprocessing_context=context)
    audio, text, lengths = next(iter(loader))
    assert audio.shape == (4, 80, int(lengths.max())) and text.shape == (4, 99)
    assert lengths.tolist() == [ds[i][0].shape[1] for i in range(4)]
    fixed, _, capped = lj.PadCollate()([ds[i] for i in range(4)])
    assert fixed.shape == (4, 80, 2754) and torch.equal(capped, lengths)
    torch.testing.assert_close(fixed[:, :, :audio.shape[2]], audio)


def test_voice_choice_is_deterministic_and_varied():
    voices = [dl.choose_voice(42, i) for i in range(200)]
    assert voices == [dl.choose_voice(42, i) for i in range(200)]
    assert {v["engine"] for v in voices} == {"espeak-ng", "flite"}
    assert len({v["voice"] for v in voices}) > 20


@pytest.mark.skipif(not all(map(__import__("shutil").which, ["espeak-ng", "flite"])),
                    reason="espeak-ng / flite not installed (apt-get install espeak-ng flite)")
def test_tts_corpus_in_lj_layout_without_the_genuine_transcripts(tmp_path):
    source = write_corpus(tmp_path / "src" / "LJSpeech-1.1",
                          ["LJ001-0001|Genuine one.|genuine one.",
                           "LJ001-0002|Mr. Smith, 1840.|mister smith, eighteen forty.",
                           "LJ001-0003|-Dash first|-dash first",
                           "LJ001-0004||"], ["LJ001-0001"])
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, str(REPO / "download_ljspeech.py"), "--tts",
                           "--metadata", str(source / "metadata.csv"), "-data_dir", str(out),
                           "--processes", "2", "--no_progress"], capture_output=True, text=True)
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
    again = subprocess.run([sys.executable, str(REPO / "download_ljspeech.py"), "--tts",
                            "--metadata", str(source / "metadata.csv"), "-data_dir", str(out),
                            "--no_progress"], capture_output=True, text=True)
    assert "rendered 0 clips, 2 already there" in again.stdout
    assert (folder / "wavs" / "LJ001-0002.wav").stat().st_mtime_ns == before


def test_download_offline_fails_in_one_line(tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "download_ljspeech.py"), "-data_dir",
                           str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "use --tts" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
