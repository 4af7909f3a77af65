"""`data prepare hf` and `data prepare commonvoice`: datasets built in their real formats with the
real libraries (a `datasets.Dataset` with an `Audio` feature saved to disk, Parquet shards as the
hub holds them, a Common Voice folder of MP3 clips written by soundfile), prepared, and trained on."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile
from helpers import TINY, run_main, write_tone_corpus, write_tone_recipe

from asrbench.data.manifest import read_manifest
from asrbench.data.prepare import prepare_corpus
from asrbench.errors import AsrbenchError

RATE = 8000


def _clip(seed: int, seconds: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (0.3 * np.sin(2 * np.pi * (300 + 100 * seed) * t)).astype(np.float32)


def _encoded(samples: np.ndarray, fmt: str) -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, samples, RATE, format=fmt, subtype="PCM_16")
    return buffer.getvalue()


def _datasets():
    """The datasets package, imported when a test builds a dataset (it takes seconds to import, and
    every test process collects this file)."""
    import datasets

    return datasets


def _dataset(rows: list[dict]):
    """A Dataset whose ``audio`` column has the Audio feature (bytes and path stored, as the hub does)."""
    datasets = _datasets()
    raw = datasets.Features(
        {
            "audio": {"bytes": datasets.Value("binary"), "path": datasets.Value("string")},
            "sentence": datasets.Value("string"),
            "client_id": datasets.Value("string"),
        }
    )
    return datasets.Dataset.from_dict({key: [row[key] for row in rows] for key in raw}, features=raw).cast_column(
        "audio", datasets.Audio(sampling_rate=RATE)
    )


def _split_rows(split: str, count: int) -> list[dict]:
    rows = []
    for index in range(count):
        samples = _clip(index, 0.4 + 0.1 * index)
        audio = {"bytes": _encoded(samples, "FLAC" if index % 2 else "WAV"), "path": f"{split}_{index}.wav"}
        rows.append({"audio": audio, "sentence": f"Hello  world {index}", "client_id": f"spk{index % 2}"})
    return rows


def test_a_saved_dataset_dict_prepares_with_its_audio_bytes_written_once_as_flac(tmp_path: Path):
    saved = tmp_path / "saved"
    _datasets().DatasetDict(
        {name: _dataset(_split_rows(name, 3)) for name in ("train", "validation", "test")}
    ).save_to_disk(str(saved))
    out = tmp_path / "data"
    report = prepare_corpus("hf", saved, out, progress=False)
    assert report.counts == {"train": 3, "dev": 3, "test": 3}
    dev = read_manifest(out / "dev.jsonl")
    assert [u.id for u in dev] == ["validation_0", "validation_1", "validation_2"]  # the audio paths' stems
    assert [u.text for u in dev] == ["Hello world 0", "Hello world 1", "Hello world 2"]  # spaces collapsed
    assert [u.speaker for u in dev] == ["spk0", "spk1", "spk0"]
    for index, utterance in enumerate(dev):
        assert Path(utterance.audio) == out / "audio" / "dev" / f"validation_{index}.flac"
        samples, rate = soundfile.read(utterance.audio, dtype="float32")
        assert rate == RATE and utterance.duration == pytest.approx(0.4 + 0.1 * index)
        assert np.abs(samples - _clip(index, 0.4 + 0.1 * index)).max() < 1e-3  # PCM_16 either way
    flac_given = _split_rows("validation", 3)[1]["audio"]["bytes"]
    assert (out / "audio" / "dev" / "validation_1.flac").read_bytes() == flac_given  # FLAC bytes copied as given


def test_parquet_shards_as_the_hub_holds_them_with_a_split_map_and_named_columns(tmp_path: Path):
    source = tmp_path / "hub"
    (source / "data").mkdir(parents=True)
    for name, count in (("train", 4), ("dev_clean", 2), ("test_clean", 2)):
        for shard in range(2 if name == "train" else 1):
            rows = _split_rows(name, count)[shard::2] if name == "train" else _split_rows(name, count)
            total = 2 if name == "train" else 1
            _dataset(rows).to_parquet(str(source / "data" / f"{name}-{shard:05d}-of-{total:05d}.parquet"))
    out = tmp_path / "data"
    with pytest.raises(
        AsrbenchError, match=r"no split for dev=validation, test=test \(it has: dev_clean, test_clean, train\)"
    ):
        prepare_corpus("hf", source, out, progress=False)
    report = prepare_corpus(
        "hf",
        source,
        out,
        progress=False,
        options={"split_map": "dev=dev_clean,test=test_clean", "text_column": "sentence"},
    )
    assert report.counts == {"train": 4, "dev": 2, "test": 2}
    with pytest.raises(AsrbenchError, match=r"no column 'words' for the text \(it has audio, sentence, client_id\)"):
        prepare_corpus(
            "hf",
            source,
            out,
            progress=False,
            options={"split_map": "dev=dev_clean,test=test_clean", "text_column": "words"},
        )


def test_hf_refusals_are_one_line(tmp_path: Path, monkeypatch, capsys):
    code, _, err = run_main(
        monkeypatch, capsys, "data", "prepare", "hf", "mozilla/common_voice_x", "-o", str(tmp_path / "d")
    )
    assert code == 2 and "asrbench never downloads" in err and "hf download" in err
    assert len(err.strip().splitlines()) == 1
    code, _, err = run_main(
        monkeypatch, capsys, "data", "prepare", "yesno", str(tmp_path), "--text-column", "x", "-o", str(tmp_path / "d")
    )
    assert code == 2 and "--text-column is an option of `data prepare hf`, not of yesno" in err
    (tmp_path / "shards").mkdir()
    _dataset(_split_rows("train", 1)).to_parquet(str(tmp_path / "shards" / "train.parquet"))
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    code, _, err = run_main(
        monkeypatch, capsys, "data", "prepare", "hf", str(tmp_path / "shards"), "-o", str(tmp_path / "d")
    )
    assert code == 2 and "pip install 'asrbench[hf]'" in err


def _common_voice(root: Path, speakers: dict[str, list[str]]) -> Path:
    """A Common Voice language folder: clips/*.mp3 and the TSVs (split -> client ids of its clips)."""
    (root / "clips").mkdir(parents=True)
    header = ["client_id", "path", "sentence_id", "sentence", "sentence_domain", "up_votes", "down_votes", "age"]
    validated = []
    for split, clients in speakers.items():
        rows = []
        for index, client in enumerate(clients):
            name = f"common_voice_xx_{split}{index}.mp3"
            soundfile.write(root / "clips" / name, _clip(index), RATE, format="MP3")
            rows.append([client, name, f"s{index}", f'He said "hi" {index}', "", "2", "0", ""])
        validated += rows
        _write_tsv(root / f"{split}.tsv", [header, *rows])
    extra = [["dev_speaker", "common_voice_xx_extra0.mp3", "e", "more from a dev speaker", "", "2", "0", ""]]
    extra += [["new_speaker", "common_voice_xx_extra1.mp3", "f", "a new voice", "", "2", "0", ""]]
    for _, name, *_ in extra:
        soundfile.write(root / "clips" / name, _clip(5), RATE, format="MP3")
    _write_tsv(root / "validated.tsv", [header, *validated, *extra])
    return root


def _write_tsv(path: Path, rows: list[list[str]]) -> None:
    """As Common Voice writes its tables: tab-separated, quotes in a sentence left as they are."""
    path.write_text("".join("\t".join(row) + "\n" for row in rows), encoding="utf-8")


def test_a_common_voice_folder_prepares_from_mp3_through_libsndfile(tmp_path: Path):
    source = _common_voice(tmp_path / "cv" / "xx", {"train": ["a", "a", "b"], "dev": ["dev_speaker"], "test": ["c"]})
    out = tmp_path / "data"
    report = prepare_corpus("commonvoice", source, out, progress=False)
    assert report.counts == {"train": 3, "dev": 1, "test": 1}
    train = read_manifest(out / "train.jsonl")
    assert [u.id for u in train] == ["common_voice_xx_train0", "common_voice_xx_train1", "common_voice_xx_train2"]
    assert train[0].text == 'He said "hi" 0' and train[0].speaker == "a"
    assert train[0].audio.endswith("clips/common_voice_xx_train0.mp3") and train[0].duration == pytest.approx(
        0.5, abs=0.01
    )
    report = prepare_corpus(
        "commonvoice", source, tmp_path / "validated", progress=False, options={"train_from": "validated"}
    )
    train = read_manifest(tmp_path / "validated" / "train.jsonl")
    assert {u.speaker for u in train} == {"a", "b", "new_speaker"}  # the dev speaker's extra clip is not trained on
    assert report.skipped == {"validated clip of a dev/test speaker (not trained on)": 1}


def test_a_common_voice_folder_without_its_tables_is_named(tmp_path: Path):
    (tmp_path / "cv" / "clips").mkdir(parents=True)
    with pytest.raises(AsrbenchError, match=r"dev.tsv: missing"):
        prepare_corpus("commonvoice", tmp_path / "cv", tmp_path / "out", progress=False)


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["hf", "commonvoice"])
def test_an_imported_corpus_trains_and_decodes_end_to_end(tmp_path: Path, layout: str):
    from asrbench.decoding.decode import decode
    from asrbench.training.trainer import train

    tones = write_tone_corpus(tmp_path / "tones")
    source = tmp_path / "source"
    for split in ("train", "dev", "test"):
        rows = [json.loads(line) for line in (tones / f"{split}.jsonl").read_text().splitlines()]
        if layout == "hf":
            entries = [
                {
                    "audio": {"bytes": Path(r["audio"]).read_bytes(), "path": f"{r['id']}.wav"},
                    "sentence": r["text"],
                    "client_id": "x",
                }
                for r in rows
            ]
            _dataset(entries).save_to_disk(str(source / ("validation" if split == "dev" else split)))
        else:
            (source / "clips").mkdir(parents=True, exist_ok=True)
            for r in rows:
                samples, rate = soundfile.read(r["audio"])
                soundfile.write(source / "clips" / f"{r['id']}.mp3", samples, rate, format="MP3")
            _write_tsv(
                source / f"{split}.tsv",
                [["client_id", "path", "sentence"]] + [["x", f"{r['id']}.mp3", r["text"]] for r in rows],
            )
    data_dir = tmp_path / "data"
    prepare_corpus(layout, source, data_dir, progress=False)
    recipe = write_tone_recipe(tmp_path / "recipe.yaml", data_dir, {"cnn": TINY["cnn"]})
    run = tmp_path / "run"
    train(recipe, "cnn", run, seed=0)
    result = decode(run, "test")
    assert result.utterances == 4 and result.wer is not None and result.wer <= 50.0
