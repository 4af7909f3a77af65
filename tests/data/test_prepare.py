"""Corpus preparers: tiny generated corpora in each layout, then the real an4/fsdd/yesno."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile

from asrbench.data import prepare
from asrbench.data.manifest import Utterance, read_manifest
from asrbench.data.prepare import CORPORA, prepare_corpus
from asrbench.errors import AsrbenchError

DATA_ROOT = Path(os.environ.get("ASRBENCH_DATA_ROOT", Path(__file__).parents[2] / ".." / "shared" / "data"))


def write_tone(path: Path, seconds: float = 0.2, rate: int = 16000, format: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    time = np.arange(int(seconds * rate)) / rate
    soundfile.write(path, 0.1 * np.sin(2 * np.pi * 440 * time), rate, subtype="PCM_16", format=format)
    return path


def write_text(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def load(out: Path, split: str) -> dict[str, Utterance]:
    return {utt.id: utt for utt in read_manifest(out / f"{split}.jsonl")}


def ids(out: Path, split: str) -> list[str]:
    return [utt.id for utt in read_manifest(out / f"{split}.jsonl")]


# --- AN4 -------------------------------------------------------------------------------------


def make_an4(root: Path) -> Path:
    train = {  # source id -> transcript line; written unsorted
        "an253-mabc-b": "<s> YES </s>",
        "an251-fxyz-b": "<s> GO </s>",
        "cen1-fxyz-b": "<s> TWO   THREE </s>",
        "an254-mabc-b": "<s> </s>",  # empty transcript
        "an255-mabc-b": "<s> NO </s>",  # audio missing
        "an257-mabc-b": "<s> RUBOUT </s>",  # corrupt audio
        "an256-mabc-b": "<s> ENTER </s>",
    }
    test = {"an407-fcaw-b": "ERASE C", "an406-fcaw-b": "RUBOUT G M"}
    for folder, lines in (("an4_clstk", train), ("an4test_clstk", test)):
        for source in lines:
            if source != "an255-mabc-b":
                speaker = source.split("-")[1]
                write_tone(root / "wav" / folder / speaker / f"{source}.sph", format="NIST")
    (root / "wav/an4_clstk/mabc/an257-mabc-b.sph").write_bytes(b"NIST_1A\n garbage")
    write_text(root / "etc/an4_train.transcription", "".join(f"{w} ({s})\n" for s, w in train.items()))
    write_text(root / "etc/an4_test.transcription", "".join(f"{w} ({s})\n" for s, w in test.items()))
    return root


def test_an4_espnet_ids_sorted_dev_carved_from_train(tmp_path, monkeypatch):
    monkeypatch.setattr(prepare, "AN4_DEV_SIZE", 2)
    src, out = make_an4(tmp_path / "an4"), tmp_path / "out"
    report = prepare_corpus("an4", src, out, progress=False)

    assert ids(out, "dev") == ["fxyz-an251-b", "fxyz-cen1-b"]
    assert ids(out, "train") == ["mabc-an253-b", "mabc-an256-b"]
    assert ids(out, "test") == ["fcaw-an406-b", "fcaw-an407-b"]
    assert report.counts == {"train": 2, "dev": 2, "test": 2}
    assert report.skipped == {"empty transcript": 1, "missing audio": 1, "unreadable audio": 1}
    assert report.examples["empty transcript"] == ["mabc-an254-b"]
    assert report.examples["missing audio"][0].endswith("an4_clstk/mabc/an255-mabc-b.sph")

    utt = load(out, "dev")["fxyz-cen1-b"]
    assert utt.text == "TWO THREE"
    assert utt.speaker == "fxyz"
    assert utt.duration == pytest.approx(0.2)
    assert Path(utt.audio).is_absolute() and Path(utt.audio) == src / "wav/an4_clstk/fxyz/cen1-fxyz-b.sph"
    assert load(out, "test")["fcaw-an406-b"].text == "RUBOUT G M"


def test_an4_malformed_transcription_names_file_and_line(tmp_path):
    src = make_an4(tmp_path / "an4")
    write_text(src / "etc/an4_test.transcription", "ERASE C (an407-fcaw-b)\nNO ID HERE\n")
    with pytest.raises(AsrbenchError, match=r"an4_test\.transcription:2: expected 'WORDS \(utterance-id\)'"):
        prepare_corpus("an4", src, tmp_path / "out", progress=False)


# --- FSDD ------------------------------------------------------------------------------------


def test_fsdd_index_split_and_digit_words(tmp_path):
    recordings = tmp_path / "fsdd" / "recordings"
    for digit in (0, 7):
        for speaker in ("ann", "bob"):
            for index in (0, 5, 12):
                write_tone(recordings / f"{digit}_{speaker}_{index}.wav", rate=8000)
    write_tone(recordings / "notes.wav", rate=8000)
    write_text(recordings / "README.md", "not audio")
    out = tmp_path / "out"
    report = prepare_corpus("fsdd", tmp_path / "fsdd", out, progress=False)

    assert report.counts == {"train": 4, "dev": 4, "test": 4}
    assert report.skipped == {"unrecognized file name": 1}
    assert ids(out, "test") == ["0_ann_0", "0_bob_0", "7_ann_0", "7_bob_0"]
    assert ids(out, "dev") == ["0_ann_5", "0_bob_5", "7_ann_5", "7_bob_5"]
    utt = load(out, "train")["7_bob_12"]
    assert (utt.text, utt.speaker, utt.duration) == ("SEVEN", "bob", pytest.approx(0.2))
    # the recordings folder itself works as src too
    assert prepare_corpus("fsdd", recordings, tmp_path / "out2", progress=False).counts == report.counts


# --- yesno -----------------------------------------------------------------------------------


def test_yesno_icefall_test_and_dev_from_train(tmp_path):
    waves = tmp_path / "yesno" / "waves_yesno"
    names = sorted(f"{n >> 2 & 1}_{n >> 1 & 1}_{n & 1}_1" for n in range(8))
    names += sorted(f"1_{n >> 2 & 1}_{n >> 1 & 1}_{n & 1}_0" for n in range(8))  # 16 sorted names
    names.sort()
    for name in names:
        write_tone(waves / f"{name}.wav", rate=8000)
    write_text(waves / "README", "readme")
    out = tmp_path / "out"
    report = prepare_corpus("yesno", tmp_path / "yesno", out, progress=False)

    icefall_train = names[::2]
    assert ids(out, "test") == names[1::2]
    assert ids(out, "dev") == [icefall_train[4]]
    assert ids(out, "train") == [name for i, name in enumerate(icefall_train) if i != 4]
    assert report.counts == {"train": 7, "dev": 1, "test": 8}
    assert load(out, "test")["0_0_1_1"].text == "NO NO YES YES"
    assert prepare_corpus("yesno", waves, tmp_path / "out2", progress=False).counts == report.counts


# --- LibriSpeech -----------------------------------------------------------------------------


def make_librispeech(root: Path, subsets: tuple[str, ...]) -> Path:
    for number, subset in enumerate(subsets):
        speaker, chapter = str(100 + number), "7"
        folder = root / subset / speaker / chapter
        lines = []
        for utt in range(2):
            utt_id = f"{speaker}-{chapter}-{utt:04d}"
            write_tone(folder / f"{utt_id}.flac")
            lines.append(f"{utt_id} HELLO {subset.upper()}\n")
        write_text(folder / f"{speaker}-{chapter}.trans.txt", "".join(lines))
    return root


def test_librispeech_subsets_map_to_splits(tmp_path):
    subsets = ("train-clean-100", "train-other-500", "dev-clean", "dev-other", "test-clean", "test-other")
    src, out = make_librispeech(tmp_path / "LibriSpeech", subsets), tmp_path / "out"
    report = prepare_corpus("librispeech", src, out, progress=False)

    assert report.counts == {"train": 4, "dev": 2, "test": 2, "dev_other": 2, "test_other": 2}
    assert ids(out, "train") == ["100-7-0000", "100-7-0001", "101-7-0000", "101-7-0001"]
    utt = load(out, "test_other")["105-7-0001"]
    assert (utt.text, utt.speaker, utt.duration) == ("HELLO TEST-OTHER", "105", pytest.approx(0.2))


def test_librispeech_single_subset_writes_only_its_split(tmp_path):
    src = make_librispeech(tmp_path / "LibriSpeech", ("test-clean",))
    out = tmp_path / "out"
    assert prepare_corpus("librispeech", src / "test-clean", out, progress=False).counts == {"test": 2}
    assert sorted(path.name for path in out.iterdir()) == ["test.jsonl"]
    with pytest.raises(AsrbenchError, match="no LibriSpeech subset for train, dev"):
        prepare_corpus("librispeech", src, out, progress=False)


# --- Kaldi -----------------------------------------------------------------------------------


def make_kaldi(root: Path) -> Path:
    write_tone(root / "audio" / "rec1.wav", seconds=1.0)
    for name in ("a", "b", "c"):
        write_tone(root / "audio" / f"{name}.wav")
    write_text(root / "train/wav.scp", "rec1 ../audio/rec1.wav\n")
    segments = ["0.0 0.4", "0.5 1.0", "0.9 1.3", "0.2 2.0", "0.3 -1"]  # s3 overshoots, s4 lies outside
    write_text(root / "train/segments", "".join(f"rec1-s{i} rec1 {t}\n" for i, t in enumerate(segments, 1)))
    texts = ["HELLO  WORLD", "FOO", "OVERSHOOT", "OUTSIDE", "TO END"]
    lines = [f"rec1-s{i} {text}\n" for i, text in enumerate(texts, 1)] + ["rec9-s1 LOST\n"]  # rec9: no audio
    write_text(root / "train/text", "".join(lines))
    write_text(root / "train/utt2spk", "".join(f"rec1-s{i} spk1\n" for i in range(1, 6)))
    write_text(root / "dev/wav.scp", f"a {root / 'audio/a.wav'}\nb ../audio/missing.wav\nc ../audio/c.wav\n")
    write_text(root / "dev/text", "a YES\nb NO\nc\n")
    write_text(root / "dev/utt2spk", "a spk2\nb spk2\nc spk2\n")
    write_text(root / "test/wav.scp", "b ../audio/b.wav\n")
    write_text(root / "test/text", "b TEST ME\n")
    return root


def test_kaldi_segments_offsets_and_skips(tmp_path):
    src, out = make_kaldi(tmp_path / "data"), tmp_path / "out"
    report = prepare_corpus("kaldi", src, out, progress=False, skip_missing=True)  # dev's b has no audio

    assert report.counts == {"train": 4, "dev": 1, "test": 1}
    assert report.skipped == {
        "no audio entry": 1,
        "empty transcript": 1,
        "missing audio": 1,
        "segment outside audio": 1,
    }
    train = load(out, "train")
    assert list(train) == ["rec1-s1", "rec1-s2", "rec1-s3", "rec1-s5"]
    rec1 = str(src / "audio" / "rec1.wav")
    assert (train["rec1-s1"].audio, train["rec1-s1"].offset, train["rec1-s1"].duration) == (rec1, 0.0, 0.4)
    assert (train["rec1-s2"].offset, train["rec1-s2"].duration) == (0.5, 0.5)
    assert train["rec1-s3"].duration == pytest.approx(0.1)  # clipped overshoot
    assert train["rec1-s5"].duration == pytest.approx(0.7)  # end -1: to the end of the file
    assert (train["rec1-s1"].text, train["rec1-s1"].speaker) == ("HELLO WORLD", "spk1")
    assert load(out, "test")["b"].speaker is None
    assert load(out, "dev")["a"].speaker == "spk2"


def test_kaldi_refuses_wav_scp_commands(tmp_path):
    src = make_kaldi(tmp_path / "data")
    write_text(src / "dev/wav.scp", "a ../audio/a.wav\nb sox ../audio/b.wav -t wav - |\n")
    with pytest.raises(AsrbenchError, match=r"dev/wav\.scp:2: .*shell command; asrbench never runs commands"):
        prepare_corpus("kaldi", src, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_kaldi_espnet_layout_and_missing_dirs(tmp_path):
    src = make_kaldi(tmp_path / "data")
    (src / "dev").rename(src / "train_dev")
    with pytest.raises(AsrbenchError, match="missing Kaldi data dir.*train_nodev"):
        prepare_corpus("kaldi", src, tmp_path / "out", progress=False)
    (src / "train").rename(src / "train_nodev")
    assert prepare_corpus("kaldi", src, tmp_path / "out", progress=False, skip_missing=True).counts == {
        "train": 4,
        "dev": 1,
        "test": 1,
    }
    with pytest.raises(AsrbenchError, match="one Kaldi data dir"):
        prepare_corpus("kaldi", src / "test", tmp_path / "out", progress=False)


def test_kaldi_malformed_segments_line(tmp_path):
    src = make_kaldi(tmp_path / "data")
    write_text(src / "train/segments", "rec1-s1 rec1 0.0 0.4\nrec1-s2 rec1 zero 1.0\n")
    with pytest.raises(AsrbenchError, match=r"segments:2: start and end times must be numbers"):
        prepare_corpus("kaldi", src, tmp_path / "out", progress=False)


# --- NeMo-style manifests --------------------------------------------------------------------


def test_manifest_ids_offsets_and_duplicates(tmp_path):
    src = tmp_path / "nemo"
    for speaker in ("s1", "s2"):
        write_tone(src / "wav" / speaker / "001.wav", seconds=0.5)
    long = write_tone(src / "wav" / "long.wav", seconds=1.0)
    rows = [
        {"audio_filepath": "wav/s1/001.wav", "duration": 9.9, "text": "ONE", "speaker": "s1"},
        {"audio_filepath": "wav/s2/001.wav", "duration": 0.5, "text": "TWO", "spk": 2},
        {"audio_filepath": str(long), "offset": 0.25, "duration": 0.5, "text": "PART"},
        {"audio_filepath": "wav/gone.wav", "duration": 1.0, "text": "GONE"},
        {"audio_filepath": "wav/long.wav", "duration": 1.0, "text": " "},
    ]
    write_text(src / "train.json", "".join(json.dumps(row) + "\n" for row in rows))
    write_text(src / "validation.jsonl", json.dumps(rows[0]) + "\n")
    write_text(src / "test.json", json.dumps(rows[1]) + "\n")
    out = tmp_path / "out"
    report = prepare_corpus("manifest", src, out, progress=False)

    assert report.counts == {"train": 3, "dev": 1, "test": 1}
    assert report.skipped == {"missing audio": 1, "empty transcript": 1}
    train = load(out, "train")
    assert list(train) == ["001", "001-2", "long-0000025"]
    assert train["001"].duration == pytest.approx(0.5)  # header, not the manifest's 9.9
    assert (train["001"].speaker, train["001-2"].speaker) == ("s1", "2")
    assert train["001-2"].audio == str(src / "wav/s2/001.wav")
    assert (train["long-0000025"].offset, train["long-0000025"].duration) == (0.25, 0.5)


def test_manifest_malformed_json_names_file_and_line(tmp_path):
    src = tmp_path / "nemo"
    write_text(src / "train.json", '{"audio_filepath": "a.wav", "text": "A"}\n{"audio_filepath": \n')
    write_text(src / "dev.json", "")
    write_text(src / "test.json", "")
    with pytest.raises(AsrbenchError, match=r"train\.json:2: malformed JSON"):
        prepare_corpus("manifest", src, tmp_path / "out", progress=False)


def _nemo_rows(src: Path, names: list[str]) -> list[str]:
    lines = []
    for name in names:
        write_tone(src / "wav" / f"{name}.wav", seconds=0.3)
        lines.append(json.dumps({"audio_filepath": f"wav/{name}.wav", "duration": 0.3, "text": name.upper()}) + "\n")
    return lines


@pytest.mark.parametrize(
    "names",
    [
        ("train_manifest.json", "validation_manifest.json", "test_manifest.json"),
        ("train_manifest.jsonl", "val_manifest.json", "test_manifest.jsonl"),
        ("train.json", "dev_manifest.json", "test.json"),
    ],
)
def test_manifest_folder_accepts_nemos_usual_names(tmp_path, names):
    """Regression (issue 15.7): NeMo's ``train_manifest.json`` names were refused."""
    src = tmp_path / "nemo"
    for name, utterance in zip(names, ("one", "two", "three"), strict=True):
        write_text(src / name, "".join(_nemo_rows(src, [utterance])))
    report = prepare_corpus("manifest", src, tmp_path / "out", progress=False)
    assert report.counts == {"train": 1, "dev": 1, "test": 1}
    assert [u.text for u in load(tmp_path / "out", "dev").values()] == ["TWO"]


def test_manifest_files_named_one_by_one(tmp_path):
    """Regression (issue 15.7): a single manifest file was refused as "corpus folder not found"."""
    src = tmp_path / "mine"
    train_file = write_text(src / "a.json", "".join(_nemo_rows(src, ["one", "two"])))
    test_file = write_text(src / "b.json", "".join(_nemo_rows(src, ["three"])))
    out = tmp_path / "out"
    report = prepare_corpus("manifest", None, out, progress=False, files={"train": train_file, "test": test_file})
    assert report.counts == {"train": 2, "test": 1}
    assert sorted(path.name for path in out.iterdir()) == ["test.jsonl", "train.jsonl"]
    with pytest.raises(
        AsrbenchError,
        match=r"a.json: a file, not a corpus folder; to prepare one manifest file, "
        r"name its split: --train .*a.json",
    ):
        prepare_corpus("manifest", train_file, tmp_path / "out2", progress=False)
    with pytest.raises(AsrbenchError, match=r"--dev .*missing.json: manifest file not found"):
        prepare_corpus("manifest", None, tmp_path / "out2", progress=False, files={"dev": src / "missing.json"})
    with pytest.raises(AsrbenchError, match="not both"):
        prepare_corpus("manifest", src, tmp_path / "out2", progress=False, files={"train": train_file})
    with pytest.raises(AsrbenchError, match="use them with 'manifest' or 'lhotse', not 'kaldi'"):
        prepare_corpus("kaldi", None, tmp_path / "out2", progress=False, files={"train": train_file})
    assert not (tmp_path / "out2").exists()


# --- common behaviour ------------------------------------------------------------------------


def test_unknown_corpus_lists_valid_names(tmp_path):
    with pytest.raises(AsrbenchError, match="unknown corpus 'timit'.*an4, fsdd, yesno, librispeech, kaldi, manifest"):
        prepare_corpus("timit", tmp_path, tmp_path / "out")
    assert set(CORPORA) == {"an4", "fsdd", "yesno", "librispeech", "kaldi", "manifest", "lhotse"}


def test_missing_src_is_named(tmp_path):
    with pytest.raises(AsrbenchError, match="nowhere: corpus folder not found"):
        prepare_corpus("an4", tmp_path / "nowhere", tmp_path / "out")


def test_empty_split_fails_and_writes_nothing(tmp_path):
    src = make_kaldi(tmp_path / "data")
    write_text(src / "test/wav.scp", "b ../audio/missing.wav\n")
    out = tmp_path / "out"
    with pytest.raises(AsrbenchError, match="split 'test' has no usable utterances.*missing audio: 2"):
        prepare_corpus("kaldi", src, out, progress=False, skip_missing=True)
    assert not out.exists()


def test_progress_bar_runs(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("ASRBENCH_NO_PROGRESS")  # the one switch that turns every bar off
    src = make_kaldi(tmp_path / "data")
    prepare_corpus("kaldi", src, tmp_path / "out", progress=True, skip_missing=True)
    assert "kaldi: reading audio headers" in capsys.readouterr().err


# --- the real corpora in ../shared/data ------------------------------------------------------


def real_corpus(name: str) -> Path:
    path = DATA_ROOT / name
    assert path.is_dir(), f"corpus {name} not found at {path} (set ASRBENCH_DATA_ROOT to the shared data folder)"
    return path


def test_real_an4_matches_espnet(tmp_path):
    src, out = real_corpus("an4"), tmp_path / "an4"
    report = prepare_corpus("an4", src, out, progress=False)
    assert report.counts == {"train": 848, "dev": 100, "test": 130}
    assert report.skipped == {}

    train, dev, test = ids(out, "train"), ids(out, "dev"), ids(out, "test")
    assert train == sorted(train) and dev == sorted(dev) and test == sorted(test)
    assert dev[-1] < train[0]  # dev is the first 100 of the sorted train ids
    assert (dev[0], dev[-1], train[0]) == ("fash-an251-b", "fjmd-cen8-b", "fkai-an311-b")
    utts = {**load(out, "train"), **load(out, "dev"), **load(out, "test")}
    assert utts["fash-an251-b"].text == "YES"
    assert utts["fcaw-an406-b"].text == "RUBOUT G M E F THREE NINE"
    for utt in utts.values():
        speaker, utterance, mic = utt.id.split("-")
        assert utt.speaker == speaker and utt.audio.endswith(f"/{speaker}/{utterance}-{speaker}-{mic}.sph")
    minutes = sum(utts[i].duration for i in train + dev) / 60, sum(utts[i].duration for i in test) / 60
    assert minutes == (pytest.approx(42.4, abs=0.1), pytest.approx(6.0, abs=0.1))


def test_real_fsdd(tmp_path):
    out = tmp_path / "fsdd"
    report = prepare_corpus("fsdd", real_corpus("fsdd"), out, progress=False)
    assert report.counts == {"train": 2400, "dev": 300, "test": 300}
    assert report.skipped == {}
    test = load(out, "test")
    assert all(int(utt_id.split("_")[-1]) <= 4 for utt_id in test)
    assert {utt.speaker for utt in test.values()} == {
        "george",
        "jackson",
        "lucas",
        "nicolas",
        "theo",
        "yweweler",
    }
    assert test["9_theo_3"].text == "NINE"


def test_real_yesno(tmp_path):
    src, out = real_corpus("yesno"), tmp_path / "yesno"
    report = prepare_corpus("yesno", src, out, progress=False)
    assert report.counts == {"train": 24, "dev": 6, "test": 30}
    names = sorted(path.stem for path in (src / "waves_yesno").glob("*.wav"))
    assert ids(out, "test") == names[1::2]  # icefall's test set
    assert sorted(ids(out, "train") + ids(out, "dev")) == names[::2]
    assert load(out, "train")["0_0_0_0_1_1_1_1"].text == "NO NO NO NO YES YES YES YES"


# --- lhotse manifests ---------------------------------------------------------------------------------


def _lhotse_recording(rec_id: str, path: Path, seconds: float, rate: int = 16000) -> dict:
    """A Recording as lhotse writes it (``Recording.to_dict()``)."""
    return {
        "id": rec_id,
        "sources": [{"type": "file", "channels": [0], "source": str(path)}],
        "sampling_rate": rate,
        "num_samples": int(seconds * rate),
        "duration": seconds,
        "channel_ids": [0],
    }


def _write_jsonl_gz(path: Path, rows: list[dict]) -> Path:
    import gzip

    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row) + "\n")
    return path


def _lhotse_corpus(root: Path) -> Path:
    """icefall's layout: cuts for train, supervisions + recordings for dev and test, a dev-other part."""
    src = root / "manifests"
    long = write_tone(root / "audio" / "long.wav", seconds=2.0)
    short = write_tone(root / "audio" / "short.wav", seconds=0.6)
    cuts = [
        {
            "id": "cut-a",
            "start": 0.5,
            "duration": 1.0,
            "channel": 0,
            "type": "MonoCut",
            "supervisions": [
                {
                    "id": "sup-a",
                    "recording_id": "long",
                    "start": 0.1,
                    "duration": 0.6,
                    "channel": 0,
                    "text": "hello  world",
                    "speaker": "spk1",
                    "language": "English",
                }
            ],
            "recording": _lhotse_recording("long", long, 2.0),
        },
        {
            "id": "cut-b",
            "start": 0.0,
            "duration": 0.6,
            "channel": 0,
            "type": "MonoCut",
            "supervisions": [
                {
                    "id": "b1",
                    "recording_id": "short",
                    "start": 0.0,
                    "duration": 0.3,
                    "channel": 0,
                    "text": "one",
                    "speaker": "spk2",
                },
                {
                    "id": "b2",
                    "recording_id": "short",
                    "start": 0.3,
                    "duration": 0.3,
                    "channel": 0,
                    "text": "two",
                    "speaker": "spk2",
                },
            ],
            "recording": _lhotse_recording("short", short, 0.6),
        },
        {
            "id": "cut-url",
            "start": 0.0,
            "duration": 1.0,
            "channel": 0,
            "type": "MonoCut",
            "supervisions": [{"id": "u", "recording_id": "r", "start": 0.0, "duration": 1.0, "text": "x"}],
            "recording": {
                "id": "r",
                "sources": [{"type": "url", "channels": [0], "source": "https://x/y.flac"}],
                "sampling_rate": 16000,
                "num_samples": 16000,
                "duration": 1.0,
            },
        },
    ]
    _write_jsonl_gz(src / "librispeech_cuts_train-clean-100.jsonl.gz", cuts)
    for part in ("dev-clean", "dev-other", "test-clean"):
        _write_jsonl_gz(src / f"librispeech_recordings_{part}.jsonl.gz", [_lhotse_recording("long", long, 2.0)])
        _write_jsonl_gz(
            src / f"librispeech_supervisions_{part}.jsonl.gz",
            [
                {
                    "id": f"{part}-1",
                    "recording_id": "long",
                    "start": 1.2,
                    "duration": 0.5,
                    "channel": 0,
                    "text": part.upper(),
                    "speaker": "spk3",
                },
                {"id": f"{part}-gone", "recording_id": "nowhere", "start": 0.0, "duration": 0.5, "text": "lost"},
            ],
        )
    return src


def test_lhotse_cuts_supervisions_and_recordings_become_utterances(tmp_path):
    src = _lhotse_corpus(tmp_path)
    out = tmp_path / "out"
    report = prepare_corpus("lhotse", src, out, progress=False, skip_missing=True)
    assert report.counts == {"train": 3, "dev": 1, "dev_other": 1, "test": 1}
    assert report.skipped == {
        "recording is not an audio file (url, command or memory source)": 1,
        "no recording in the RecordingSet": 3,
    }
    train = load(out, "train")
    assert sorted(train) == ["b1", "b2", "cut-a"]
    # A cut's supervision starts relative to the cut, the cut relative to its recording.
    assert (train["cut-a"].offset, train["cut-a"].duration, train["cut-a"].text) == (0.6, 0.6, "hello world")
    assert (train["b2"].offset, train["b2"].speaker) == (0.3, "spk2")
    assert train["cut-a"].audio == str(tmp_path / "audio" / "long.wav")
    dev = load(out, "dev")
    assert list(dev) == ["dev-clean-1"] and dev["dev-clean-1"].offset == 1.2 and dev["dev-clean-1"].text == "DEV-CLEAN"
    assert list(load(out, "dev_other")) == ["dev-other-1"]


def test_lhotse_files_named_by_split_and_clear_errors(tmp_path):
    src = _lhotse_corpus(tmp_path)
    cuts = src / "librispeech_cuts_train-clean-100.jsonl.gz"
    supervisions = src / "librispeech_supervisions_test-clean.jsonl.gz"
    report = prepare_corpus(
        "lhotse", None, tmp_path / "out", progress=False, skip_missing=True, files={"train": cuts, "test": supervisions}
    )
    assert report.counts == {"train": 3, "test": 1}
    with pytest.raises(AsrbenchError, match="a RecordingSet has no transcripts"):
        prepare_corpus(
            "lhotse",
            None,
            tmp_path / "o2",
            progress=False,
            files={"test": src / "librispeech_recordings_test-clean.jsonl.gz"},
        )
    bad = _write_jsonl_gz(tmp_path / "bad" / "cuts_train.jsonl.gz", [{"id": "c", "start": 0.0}])
    with pytest.raises(AsrbenchError, match=r"cuts_train.jsonl.gz:1: missing field 'recording'"):
        prepare_corpus("lhotse", None, tmp_path / "o3", progress=False, files={"train": bad})
    with pytest.raises(AsrbenchError, match="no lhotse manifest"):
        prepare_corpus("lhotse", tmp_path / "audio", tmp_path / "o4", progress=False)


# --- missing audio never shrinks dev or test silently (issue 28.5) ---------------------------


def _lhotse_cuts(root: Path, name: str, ids: list[str], missing: set[str]) -> Path:
    rows = []
    for cut_id in ids:
        audio = root / "audio" / f"{cut_id}.wav"
        if cut_id not in missing:
            write_tone(audio, seconds=0.4)
        rows.append(
            {
                "id": cut_id,
                "start": 0.0,
                "duration": 0.4,
                "channel": 0,
                "type": "MonoCut",
                "supervisions": [{"id": cut_id, "recording_id": cut_id, "start": 0.0, "duration": 0.4, "text": "yes"}],
                "recording": _lhotse_recording(cut_id, audio, 0.4),
            }
        )
    return _write_jsonl_gz(root / "manifests" / f"cuts_{name}.jsonl.gz", rows)


def test_missing_audio_in_dev_or_test_fails_unless_skip_missing(tmp_path):
    """Regression (issue 28.5): a lhotse cut whose recording was missing was skipped and the test split
    shrank from 30 to 29 with exit 0. Missing audio in dev/test fails, naming the ids (first few and the
    count), unless skip_missing; train still skips with a note."""
    root = tmp_path / "corpus"
    _lhotse_cuts(root, "train", ["t1", "t2", "t3"], missing={"t2"})
    _lhotse_cuts(root, "dev", ["d1", "d2"], missing=set())
    _lhotse_cuts(root, "test", [f"e{i}" for i in range(1, 7)], missing={"e2", "e3", "e4", "e5", "e6"})
    out = tmp_path / "out"
    with pytest.raises(AsrbenchError) as caught:
        prepare_corpus("lhotse", root / "manifests", out, progress=False)
    message = str(caught.value)
    assert "test: 5 utterances without audio (e2, e3, e4, ...)" in message
    assert "--skip-missing" in message and "t2" not in message
    assert not out.exists()

    report = prepare_corpus("lhotse", root / "manifests", out, progress=False, skip_missing=True)
    assert report.counts == {"train": 2, "dev": 2, "test": 1}
    assert report.skipped == {"missing audio": 6}


def test_missing_audio_is_refused_alike_by_every_importer(tmp_path):
    """Kaldi (no wav.scp entry, or a file that is not there), NeMo manifests, a lhotse SupervisionSet whose
    recording is not in the RecordingSet, and the built-in corpora (AN4) refuse it the same way."""
    kaldi = make_kaldi(tmp_path / "kaldi")  # dev: b's audio file is missing
    write_text(kaldi / "test/text", "b TEST ME\nz NOT LISTED\n")  # z: no wav.scp entry
    with pytest.raises(
        AsrbenchError,
        match=r"dev: 1 utterance without audio \(b\); test: 1 utterance without "
        r"audio \(z\)",
    ):
        prepare_corpus("kaldi", kaldi, tmp_path / "o1", progress=False)
    report = prepare_corpus("kaldi", kaldi, tmp_path / "o1", progress=False, skip_missing=True)
    assert report.counts == {"train": 4, "dev": 1, "test": 1}

    nemo = tmp_path / "nemo"
    write_text(nemo / "train.json", "".join(_nemo_rows(nemo, ["one"])))
    write_text(nemo / "dev.json", "".join(_nemo_rows(nemo, ["two"])))
    write_text(
        nemo / "test.json",
        "".join(_nemo_rows(nemo, ["three"]))
        + json.dumps({"audio_filepath": "wav/gone.wav", "duration": 1.0, "text": "GONE"})
        + "\n",
    )
    with pytest.raises(AsrbenchError, match=r"test: 1 utterance without audio \(gone\)"):
        prepare_corpus("manifest", nemo, tmp_path / "o2", progress=False)

    lhotse = _lhotse_corpus(tmp_path / "lh")  # dev, dev-other and test each hold a supervision with no recording
    with pytest.raises(
        AsrbenchError,
        match=r"dev: 1 utterance without audio \(dev-clean-gone\); test: 1 "
        r"utterance without audio \(test-clean-gone\); dev_other: 1 ",
    ):
        prepare_corpus("lhotse", lhotse, tmp_path / "o3", progress=False)

    an4 = make_an4(tmp_path / "an4")
    (an4 / "wav/an4test_clstk/fcaw/an406-fcaw-b.sph").unlink()
    with pytest.raises(AsrbenchError, match=r"test: 1 utterance without audio \(fcaw-an406-b\)"):
        prepare_corpus("an4", an4, tmp_path / "o4", progress=False)


def test_cli_prepare_with_missing_test_audio_is_one_line_exit_2(tmp_path, monkeypatch, capsys):
    from helpers import run_main

    root = tmp_path / "corpus"
    for split, names in (("train", ["t1"]), ("dev", ["d1"]), ("test", ["e1", "e2"])):
        _lhotse_cuts(root, split, names, missing={"e2"})
    out = tmp_path / "out"
    code, _, err = run_main(
        monkeypatch, capsys, "data", "prepare", "lhotse", str(root / "manifests"), "--out", str(out)
    )
    assert (code, err.count("\n")) == (2, 1), err
    assert err.startswith("error: lhotse: test: 1 utterance without audio (e2)")
    assert not out.exists()
    code, _, err = run_main(
        monkeypatch, capsys, "data", "prepare", "lhotse", str(root / "manifests"), "--out", str(out), "--skip-missing"
    )
    assert code == 0
    assert "test 1" in err and "skipped 1: missing audio" in err
