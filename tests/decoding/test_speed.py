"""RTFx as the Open ASR Leaderboard defines it (asrbench.decoding.speed): features, network and
search timed together after a warm-up, at decode's batches; the audio reading is not timed."""

from __future__ import annotations

import torch
from helpers import tiny_options, write_tone_corpus

import asrbench.decoding.speed as speed
from asrbench.data.features import load_features
from asrbench.data.tokenizer import CharTokenizer
from asrbench.decoding.decode import batches_of, recognize
from asrbench.decoding.search_table import greedy_searcher
from asrbench.models import build_model
from asrbench.recipe.config import FeatureConfig


def _setup(tmp_path):
    data_dir = write_tone_corpus(tmp_path)
    config = FeatureConfig(sample_rate=8000, num_mel_bins=23, dtype="float32")
    features = load_features(data_dir, "test", config, jobs=1)
    tokenizer = CharTokenizer.build(["LOW HIGH"])
    torch.manual_seed(0)
    model = build_model("cnn", tiny_options("cnn"), config.dim(), len(tokenizer))
    return config, features, features.cmvn(), tokenizer, model


def _measure(setup, searcher=None, batch_frames=120):
    config, features, cmvn, tokenizer, model = setup
    batches = batches_of(features, cmvn, batch_frames)[1]
    searcher = searcher or greedy_searcher(model)
    figures = speed.end_to_end_speed(
        model, searcher, features.utterances, batches, config, cmvn, tokenizer, torch.device("cpu")
    )
    return figures, batches


class _Clock:
    """A clock that moves only when the pipeline's stages run: 1 s per feature batch, 0.5 s per search."""

    def __init__(self):
        self.now = 0.0

    def perf_counter(self):
        return self.now


def test_the_clock_covers_features_network_and_search_after_a_warm_up(tmp_path, monkeypatch):
    setup = _setup(tmp_path)
    clock = _Clock()
    monkeypatch.setattr(speed, "time", clock)
    extract = speed.FeatureExtractor.batch

    def timed_extract(self, waveforms):
        clock.now += 1.0
        return extract(self, waveforms)

    monkeypatch.setattr(speed.FeatureExtractor, "batch", timed_extract)
    searcher = greedy_searcher(setup[4])
    search = searcher.search

    def timed_search(outputs):
        clock.now += 0.5
        return search(outputs)

    searcher.search = timed_search
    figures, batches = _measure(setup, searcher)
    assert len(batches) > 1
    audio = sum(utt.duration for utt in setup[1].utterances)
    # every batch once, the warm-up batch (run twice) counted once
    assert figures["end_to_end_seconds"] == 1.5 * len(batches)
    assert abs(figures["rtfx_end_to_end"] - audio / (1.5 * len(batches))) < 1e-3
    assert figures["end_to_end_batch_size"] == len(setup[1]) / len(batches)
    assert figures["end_to_end_threads"] == torch.get_num_threads()


def test_the_timed_pass_recognizes_what_decode_recognizes_from_the_store(tmp_path, monkeypatch):
    """The same texts from the audio as from the stored features (float32 store: the same values)."""
    config, features, cmvn, tokenizer, model = setup = _setup(tmp_path)
    texts = []
    recognize_audio = speed._recognize_audio

    def recorded(waveforms, utterances, *args):
        recognized = recognize_audio(waveforms, utterances, *args)
        texts.append(dict(zip([u.id for u in utterances], recognized, strict=True)))
        return recognized

    monkeypatch.setattr(speed, "_recognize_audio", recorded)
    _measure(setup)
    from_audio = {key: text for batch in texts for key, text in batch.items()}
    stored = recognize(model, features, cmvn, tokenizer, torch.device("cpu"), 120)
    assert from_audio == {utt.id: text for utt, text in zip(features.utterances, stored.hypotheses, strict=True)}


def test_audio_that_is_gone_leaves_the_figure_out_with_a_note(tmp_path, capsys):
    setup = _setup(tmp_path)
    (tmp_path / "audio" / "test0.wav").unlink()
    figures, _ = _measure(setup)
    assert figures == {}
    assert "rtfx_end_to_end not measured" in capsys.readouterr().err  # the console writes notes to stderr
