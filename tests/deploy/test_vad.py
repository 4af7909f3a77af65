"""Voice-activity detection: speech regions of generated recordings, block reading, long regions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile

from asrbench.deploy import vad
from asrbench.deploy.vad import VadOptions, detect, energy_scores, pieces_of, speech_regions
from asrbench.errors import AsrbenchError

RATE = 16000
BURSTS = [(1.0, 3.0), (4.5, 7.0), (8.0, 8.6), (12.0, 24.0)]  # seconds of "speech" in a 26 s file


def _recording(path: Path, bursts=BURSTS, seconds: float = 26.0, rate: int = RATE) -> Path:
    rng = np.random.default_rng(0)
    samples = rng.normal(0.0, 0.001, int(seconds * rate))  # a quiet background
    for start, end in bursts:
        time = np.arange(int(start * rate), int(end * rate)) / rate
        samples[int(start * rate) : int(end * rate)] += (
            0.3 * np.sin(2 * np.pi * 220 * time) * (1 + 0.5 * np.sin(2 * np.pi * 3 * time))
        )  # a syllable-rate envelope
    soundfile.write(path, samples, rate, subtype="PCM_16")
    return path


def test_energy_detector_finds_each_burst_and_pads_it(tmp_path: Path):
    path = _recording(tmp_path / "long.wav")
    options = VadOptions(max_segment=20.0)
    regions = detect(str(path), 26.0, options)
    assert len(regions) == 4
    for (start, end), (burst_start, burst_end) in zip(regions, BURSTS, strict=True):
        assert burst_start - options.pad - 0.05 <= start <= burst_start
        assert burst_end <= end <= burst_end + options.pad + 0.05
    assert all(a[1] <= b[0] for a, b in zip(regions, regions[1:], strict=False))
    # The 1 s pause between the 2nd and 3rd bursts is shared at its middle, not padded twice.
    assert regions[1][1] == pytest.approx(7.5, abs=0.03) and regions[2][0] == pytest.approx(7.5, abs=0.03)


def test_a_region_longer_than_max_segment_is_cut_into_pieces_that_fit(tmp_path: Path):
    path = _recording(tmp_path / "long.wav")
    regions = detect(str(path), 26.0, VadOptions(max_segment=5.0))
    assert all(end - start <= 5.0 + 1e-6 for start, end in regions)
    covered = sum(end - start for start, end in regions if start >= 10.3)  # after the pause middle
    assert covered >= 11.9  # the 12 s burst is all still there, in pieces
    assert len([r for r in regions if r[0] >= 10.3]) >= 3


def test_a_short_file_is_decoded_whole_and_none_gives_fixed_pieces(tmp_path: Path):
    path = _recording(tmp_path / "long.wav")
    assert detect(str(path), 10.0, VadOptions(max_segment=20.0)) == [(0.0, 10.0)]
    pieces = detect(str(path), 26.0, VadOptions(kind="none", max_segment=10.0))
    assert pieces == pieces_of(26.0, 10.0) and len(pieces) == 3 and pieces[-1][1] == 26.0


def test_scores_read_in_blocks_equal_one_read_and_any_sample_rate_gives_the_same_frames(tmp_path, monkeypatch):
    path = _recording(tmp_path / "long.wav")
    whole = energy_scores(str(path))
    monkeypatch.setattr(vad, "BLOCK_SECONDS", 0.37)  # blocks that cut frames in the middle
    np.testing.assert_allclose(energy_scores(str(path)), whole, atol=1e-4)
    assert abs(whole.size - 2600) <= 3  # one frame per 10 ms
    slow = _recording(tmp_path / "slow.wav", rate=8000)
    assert abs(energy_scores(str(slow)).size - whole.size) <= 2


def test_smoothing_merges_short_pauses_and_drops_short_blips():
    flags = np.zeros(300, dtype=bool)
    flags[10:50] = flags[60:100] = True  # a 0.1 s pause: merged
    flags[200:205] = True  # 50 ms: dropped
    regions = speech_regions(
        flags, flags.astype(float), 0.01, VadOptions(min_silence=0.3, min_speech=0.2, pad=0.0), 3.0
    )
    assert regions == [(0.1, 1.0)]


def test_padding_never_crosses_the_middle_of_a_pause():
    flags = np.zeros(100, dtype=bool)
    flags[10:40] = flags[50:90] = True  # a 0.1 s pause, kept with min_silence 0.05
    regions = speech_regions(flags, flags.astype(float), 0.01, VadOptions(min_silence=0.05, pad=0.3), 1.0)
    assert regions == [(0.0, 0.45), (0.45, 1.0)]


def test_a_long_region_is_cut_at_its_longest_pause_not_its_quietest_frame():
    flags = np.zeros(900, dtype=bool)
    flags[0:300] = flags[320:600] = flags[610:900] = True  # pauses of 0.2 s and 0.1 s, both kept inside
    scores = flags.astype(float)
    scores[605] = -5.0  # the quietest frame is in the shorter pause
    options = VadOptions(min_silence=0.3, min_speech=0.2, pad=0.0, max_segment=6.1)
    assert speech_regions(flags, scores, 0.01, options, 9.0) == [(0.0, 3.0), (3.2, 9.0)]
    # Without pauses inside, the quietest frame is where it is cut.
    solid = np.ones(900, dtype=bool)
    assert speech_regions(solid, scores, 0.01, options, 9.0) == [(0.0, 6.05), (6.05, 9.0)]
    # Padded pieces (each within max_segment - 2 pad: cut again) stop at the middle of their pauses.
    padded = speech_regions(flags, scores, 0.01, VadOptions(min_silence=0.3, pad=0.2, max_segment=6.1), 9.0)
    assert padded == [(0.0, 3.1), (3.1, 6.05), (6.05, 9.0)]


@pytest.mark.parametrize(
    "settings,message",
    [
        ({"kind": "webrtc"}, "unknown --vad 'webrtc'"),
        ({"max_segment": 1.0}, "--max-segment must be at least 2"),
        ({"pad": -1.0}, "pad must not be negative"),
    ],
)
def test_bad_vad_settings_are_one_clear_error(settings, message):
    with pytest.raises(AsrbenchError, match=message):
        VadOptions(**settings)


def test_silero_finds_the_speech_of_real_recordings_and_not_the_silence_between(tmp_path: Path):
    """Three yesno recordings (real speech, 8 kHz) with 3 s of silence between them."""
    yesno = Path(__file__).resolve().parents[3] / "shared" / "data" / "yesno"
    files = sorted(yesno.rglob("*.wav"))[:3]
    assert len(files) == 3, f"yesno corpus not found under {yesno}"
    pieces, gaps, position = [], [], 0.0
    for file in files:
        samples, rate = soundfile.read(file, dtype="float32")
        pieces += [samples, np.zeros(3 * rate, dtype=np.float32)]
        position += samples.size / rate
        gaps.append((position, position + 3.0))
        position += 3.0
    path = tmp_path / "yesno3.wav"
    soundfile.write(path, np.concatenate(pieces), rate)
    regions = detect(str(path), position, VadOptions(kind="silero", max_segment=10.0))
    assert len(regions) >= 3
    for gap_start, gap_end in gaps[:-1]:
        middle = (gap_start + gap_end) / 2
        assert not any(start < middle < end for start, end in regions)
    speech = sum(end - start for start, end in regions)
    assert speech >= 0.5 * (position - 9.0)  # most of each recording is inside a region
