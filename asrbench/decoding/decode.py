"""Decoding of a prepared split with a trained run dir: greedy, CTC beam (+ lexicon, LM), attention beam.

Writes into ``<run>/decode/<split>/`` (or ``<split>-<tag>/``): ``hypotheses.jsonl`` (id, ref,
hyp, normalized as scored), ``alignments.txt`` (sclite-like), ``ref.trn`` and ``hyp.trn`` (for
NIST sclite), ``report.json`` (per-speaker rates, confusion pairs) and ``result.json`` (error
rates with bootstrap CIs, RTFx, parameters, decoder options, environment). ``result.json`` is
written last and atomically, so an interrupted decode leaves none behind.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from asrbench import fileio
from asrbench.data.batching import BucketBatchSampler, Collator
from asrbench.data.features import FeatureSet, GlobalCMVN, load_features
from asrbench.data.manifest import require_prepared, split_path
from asrbench.data.tokenizer import Tokenizer
from asrbench.decoding import streaming
from asrbench.decoding.result import FORMAT, DecodeResult, load_result, result_path, write_result
from asrbench.decoding.search_table import build_searcher, greedy_searcher
from asrbench.decoding.searchers import DecodeOptions, Searcher, describe_search
from asrbench.decoding.speed import end_to_end_speed
from asrbench.env import environment, resolve_device
from asrbench.errors import AsrbenchError
from asrbench.models import count_parameters
from asrbench.models.base import ASRModel
from asrbench.models.cost import forward_gflops_per_second
from asrbench.progress import console
from asrbench.recipe.config import PRESETS
from asrbench.runs import rundir
from asrbench.runs.checkpoint import load_model
from asrbench.scoring.metrics import (
    confidence_intervals,
    error_rates,
    score_utterances,
    speaker_groups,
    token_error_rate,
    write_report,
)
from asrbench.text import DEFAULT_NORMALIZER, normalize


@dataclass
class Recognition:
    hypotheses: list[str]  # in the order of the FeatureSet
    loss: float  # the model's mean loss per utterance (nan when targets were not given)
    model_seconds: float  # network + search, excluding the warm-up batch
    audio_seconds: float  # audio covered by the timed batches
    search_seconds: float = 0.0  # the search alone (for attention search: the decoder network included)
    token_ids: list[list[int]] = field(default_factory=list)  # what the search output, per utterance


def batches_of(
    features: FeatureSet, cmvn: GlobalCMVN, batch_frames: int, token_ids: list[list[int]] | None = None
) -> tuple[Collator, list[list[int]]]:
    """Length-bucketed, unshuffled batches of a FeatureSet (as decoding uses them)."""
    collate = Collator(features, token_ids or [[] for _ in range(len(features))], cmvn)
    sampler = BucketBatchSampler(features.lengths.tolist(), batch_frames, max_batch_size=256, shuffle=False)
    return collate, sampler.batches()


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.inference_mode()
def recognize(
    model: nn.Module,
    features: FeatureSet,
    cmvn: GlobalCMVN,
    tokenizer: Tokenizer,
    device: torch.device,
    batch_frames: int = 60000,
    token_ids: list[list[int]] | None = None,
    warmup: bool = False,
    searcher: Searcher | None = None,
) -> Recognition:
    """Recognize a FeatureSet; optionally the model's loss against ``token_ids``.

    ``searcher`` (see :mod:`asrbench.decoding.searchers`) defaults to the model's greedy decoding
    (best path for CTC, argmax for attention decoders). The network and the search are timed
    separately, after one untimed warm-up batch when ``warmup`` is set.
    """
    searcher = searcher or greedy_searcher(model)
    was_training = model.training
    model.eval()
    collate, batches = batches_of(features, cmvn, batch_frames, token_ids)
    hypotheses: list[str] = [""] * len(features)
    searched_ids: list[list[int]] = [[] for _ in range(len(features))]
    total_loss, model_seconds, search_seconds, audio_seconds = 0.0, 0.0, 0.0, 0.0
    if warmup and batches:
        batch = collate(batches[0]).to(device)
        searcher(batch.features, batch.feature_lengths)
    for indices in batches:
        batch = collate(indices).to(device)
        _synchronize(device)
        start = time.perf_counter()
        outputs = searcher.outputs(batch.features, batch.feature_lengths)
        _synchronize(device)
        searched = time.perf_counter()
        for index, ids in zip(indices, searcher.search(outputs), strict=True):
            hypotheses[index] = tokenizer.decode(ids)
            searched_ids[index] = list(ids)
        _synchronize(device)
        end = time.perf_counter()
        model_seconds += end - start
        search_seconds += end - searched
        audio_seconds += sum(features.utterances[i].duration for i in indices)
        if token_ids is not None:
            if searcher.loss is not None:
                loss = searcher.loss(outputs, batch.targets, batch.target_lengths)
            else:
                loss = cast(ASRModel, model).compute_loss(
                    batch.features, batch.feature_lengths, batch.targets, batch.target_lengths
                )
            total_loss += float(loss) * len(indices)
    model.train(was_training)
    mean_loss = total_loss / len(features) if token_ids is not None and len(features) else float("nan")
    return Recognition(hypotheses, mean_loss, model_seconds, audio_seconds, search_seconds, searched_ids)


def _write_scores(out_dir: Path, features: FeatureSet, hypotheses: list[str], normalizer: str) -> list:
    """hypotheses.jsonl (with the manifest's speaker, where it gives one), then the per-utterance
    scores: readable alignments, sclite trn files, per-speaker rates, confusions (the CIs come
    from the returned scores)."""
    utterances = features.utterances
    fileio.write_jsonl(
        out_dir / "hypotheses.jsonl",
        [
            {
                "id": utt.id,
                "ref": normalize(utt.text, normalizer),
                "hyp": normalize(hyp, normalizer),
                **({"speaker": utt.speaker} if utt.speaker else {}),
            }
            for utt, hyp in zip(utterances, hypotheses, strict=True)
        ],
    )
    scores = score_utterances([utt.text for utt in utterances], hypotheses, normalizer, [utt.id for utt in utterances])
    write_report(out_dir, scores, {utt.id: utt.speaker for utt in utterances}, normalizer)
    return scores


def _set_chunks(model: nn.Module, config, chunk_ms: float, left_chunks: int) -> str:
    """Make a streaming model decode in chunks; the default tag of its decode dir."""
    encoder = streaming.require_streaming(model, config.model.name)
    encoder.set_chunk(streaming.chunk_frames(model, chunk_ms, config.features.frame_shift_ms), left_chunks)
    return f"chunk{chunk_ms:g}" + (f"-left{left_chunks}" if left_chunks >= 0 else "")


def _streaming_figures(
    run_dir: Path,
    split: str,
    model: nn.Module,
    loaded,
    features: FeatureSet,
    recognition: Recognition,
    chunk_ms: float,
    left_chunks: int,
    device: torch.device,
    references: list[str],
) -> dict:
    """``result.json``'s ``streaming``: the chunk and its algorithmic latency; for a CTC model or a transducer on
    CPU also the measured latencies (:func:`asrbench.decoding.streaming.measure`); and the split's
    full-context WER when the run has it."""
    config, tokenizer = loaded.config, loaded.tokenizer
    figures: dict[str, Any] = {
        "chunk_ms": chunk_ms,
        "left_chunks": left_chunks,
        "algorithmic_latency_ms": round(
            streaming.algorithmic_latency_ms(
                chunk_ms,
                config.features.frame_shift_ms,
                config.features.frame_length_ms,
                streaming.lookahead_frames(streaming.require_streaming(model, config.model.name)),
            ),
            1,
        ),
    }
    if not PRESETS[config.features.preset].snip_edges:
        # The masked pass above is the chunked model's output; asrbench's streaming front end, which
        # the latency figures run through, reads snip-edges frames only (sherpa-onnx streams these).
        figures["latency_not_measured"] = (
            f"features.preset {config.features.preset} centres its frames; asrbench's streaming front end "
            "reads snip-edges frames"
        )
    elif streaming.streams(model) and device.type == "cpu":
        console.print(f"streaming {len(features)} utterances at {chunk_ms:g} ms chunks for the latency figures")
        ignored = {tokenizer.blank_id, tokenizer.sos_id}
        figures = streaming.measure(
            model,
            tokenizer,
            loaded.cmvn,
            config.features,
            features.utterances,
            chunk_ms,
            left_chunks,
            recognition.token_ids,
            [[i for i in tokenizer.encode(text) if i not in ignored] for text in references],
        )
    full_context = result_path(run_dir, split)  # the same split at full context, if decoded
    figures["full_context_wer"] = load_result(full_context).wer if full_context.is_file() else None
    return figures


TUNED = "tuned.json"  # decoding values chosen on dev by `asrbench tune`


def read_tuned(run_dir: Path) -> dict | None:
    path = run_dir / TUNED
    return rundir.read_json(path) if path.is_file() else None


def resolve_options(run_dir: Path, options: DecodeOptions, explicit: set[str], use_tuned: bool) -> tuple:
    """With ``use_tuned`` (``--tuned``), fill the values the user did not give from ``tuned.json``.

    Tuned values apply only when asked for: never because the same LM was named. ``explicit``
    names the options given on the command line; they always win. Returns the options and where
    the tuned values came from (None when none were used).
    """
    tuned = read_tuned(run_dir)
    if not use_tuned:
        if tuned is not None:
            console.print(
                f"[dim]note: {run_dir / TUNED} holds values tuned on {tuned.get('split', 'dev')}; "
                "add --tuned to use them[/dim]"
            )
        return options, None
    if tuned is None:
        raise AsrbenchError(f"{run_dir}: no {TUNED} (run `asrbench tune {run_dir} --split dev` first)")
    values = {key: value for key, value in tuned["options"].items() if key not in explicit}
    if "lm" in explicit:
        values.pop("lm", None)
        tuned_lm = tuned["options"].get("lm") or "none"
        if tuned_lm != (options.lm or "none"):
            console.print(
                f"[yellow]note[/yellow]: {TUNED} was tuned with LM {tuned_lm}; its other values are used "
                f"with --lm {options.lm or 'none'}"
            )
    merged = DecodeOptions(**{**options.to_dict(), **values})
    if "lm_weight" in explicit and not merged.lm:
        raise AsrbenchError(f"--lm-weight only applies with --lm ({run_dir / TUNED} has no LM)")
    return merged, {"file": str(run_dir / TUNED), "split": tuned.get("split"), "values": values}


def _split_data_dir(run_dir: Path, config, data_dir: str | Path | None, split: str) -> Path:
    """The prepared data dir to decode ``split`` from: ``--data`` (a folder that exists) or the
    run's own; refuses a split that is not prepared there (:func:`split_path` names it)."""
    if data_dir:
        require_prepared(data_dir, (), "--data")  # a folder that exists; split_path names the missing split
    data_dir = Path(data_dir) if data_dir else rundir.data_dir(run_dir, config)
    split_path(data_dir, split)  # a plain, prepared split name
    return data_dir


def _fresh_decode_dir(run_dir: Path, split: str, tag: str) -> Path:
    """``<run>/decode/<split>`` (or ``<split>-<tag>``), without the result.json of an earlier decode."""
    out_dir = run_dir / "decode" / (f"{split}-{tag}" if tag else split)
    # The result is written last; an old one goes first, so an interrupted decode leaves none behind.
    (out_dir / "result.json").unlink(missing_ok=True)
    return out_dir


def _token_rates(tokenizer: Tokenizer, references: list[str], token_ids: list[list[int]], normalizer: str) -> dict:
    """The token error rate of what the search output against the normalized references, in the
    tokenizer's units, blank and <sos/eos> left out of both."""
    ignored = {tokenizer.blank_id, tokenizer.sos_id}
    return token_error_rate(
        [[i for i in tokenizer.encode(normalize(text, normalizer)) if i not in ignored] for text in references],
        [[i for i in ids if i not in ignored] for ids in token_ids],
    )


def _score_split(
    out_dir: Path, features: FeatureSet, recognition: Recognition, tokenizer: Tokenizer, normalizer: str
) -> dict:
    """``result.json``'s error rates: WER and CER with their bootstrap CIs, and the token error
    rate; writes the per-utterance scores into ``out_dir`` on the way (:func:`_write_scores`)."""
    references = [utt.text for utt in features.utterances]
    rates = error_rates(references, recognition.hypotheses, normalizer)
    # the token error rate is in the model's units: its references normalized as the tokenizer's were
    token_rates = _token_rates(tokenizer, references, recognition.token_ids, DEFAULT_NORMALIZER)
    scores = _write_scores(out_dir, features, recognition.hypotheses, normalizer)
    speakers = speaker_groups(scores, {utt.id: utt.speaker for utt in features.utterances})
    return {**rates.to_dict(), **confidence_intervals(scores, groups=speakers), **token_rates}


def _speed(recognition: Recognition, features: FeatureSet) -> dict:
    """``result.json``'s speed figures: RTFx of network + search and of the search alone over the
    timed batches, the split's audio and the seconds spent."""
    audio = recognition.audio_seconds
    return {
        "rtfx": audio / recognition.model_seconds if recognition.model_seconds else None,
        "search_rtfx": audio / recognition.search_seconds if recognition.search_seconds else None,
        "audio_seconds": sum(utt.duration for utt in features.utterances),
        "decode_seconds": recognition.model_seconds,
        "search_seconds": recognition.search_seconds,
    }


def _decoder_settings(
    searcher: Searcher, options: DecodeOptions, tuned_from: dict | None, batch_frames: int, checkpoint: str
) -> dict:
    """``result.json``'s ``decoder``: the search, the options it ran with (and the tuned values
    among them), the batch size, checkpoint and thread count the speed was measured with."""
    return {
        **searcher.description,
        "options": options.to_dict(),
        "tuned": tuned_from,
        "batch_frames": batch_frames,
        "checkpoint": checkpoint,
        "threads": torch.get_num_threads(),
        "rtfx_covers": "network + search after one warm-up batch, features from cache; search_rtfx: the "
        "search alone (attention search includes its decoder network); rtfx_end_to_end: features included "
        "(asrbench.decoding.speed)",
    }


def _end_to_end(
    model: nn.Module, searcher: Searcher, features: FeatureSet, loaded, batch_frames: int, device: torch.device
) -> dict:
    """``result.json``'s ``rtfx_end_to_end`` figures: decode's batches again, from the audio (features included)."""
    batches = batches_of(features, loaded.cmvn, batch_frames)[1]
    return end_to_end_speed(
        model, searcher, features.utterances, batches, loaded.config.features, loaded.cmvn, loaded.tokenizer, device
    )


def _gflops(model: nn.Module, frontend) -> float:
    """The model's forward GFLOPs per second of audio at the recipe's framing (asrbench.models.cost)."""
    return forward_gflops_per_second(model, frontend.dim(), frontend.frame_shift_ms, frontend.frame_length_ms)


def decode(
    run_dir: str | Path,
    split: str = "test",
    data_dir: str | Path | None = None,
    device: str = "auto",
    batch_frames: int | None = None,
    checkpoint: str = "best",
    options: DecodeOptions | None = None,
    tag: str = "",
    explicit: set[str] | None = None,
    use_tuned: bool = False,
    threads: int = 0,
    chunk_ms: float = 0.0,
    left_chunks: int = -1,
    measure_cost: bool = True,
    normalizer: str = DEFAULT_NORMALIZER,
) -> DecodeResult:
    """Decode ``split`` with the run's best checkpoint; returns the :class:`DecodeResult` written to result.json.

    Results go to ``decode/<split>/`` (or ``decode/<split>-<tag>/`` to keep several decodings of
    one split side by side). ``options`` selects greedy, CTC beam (+ lexicon, LM) or attention
    beam search; see :mod:`asrbench.decoding.searchers`.

    ``chunk_ms`` > 0 decodes a streaming model in chunks of that many ms with ``left_chunks`` of
    left context (-1: all), into ``decode/<split>-chunk<ms>/`` unless tagged, and measures its
    latency (:func:`_streaming_figures`). ``measure_cost`` False skips the cost figures (GFLOPs/s,
    the end-to-end RTFx pass): result.json then holds neither, like a file written before them.
    ``normalizer`` (asrbench.text) scores WER and CER; result.json records it.
    """
    normalize("", normalizer)  # an unknown name, or a normalizer whose package is missing: one line, before any work
    run_dir = rundir.require_run_dir(run_dir)
    if threads > 0:
        torch.set_num_threads(threads)
    if tag and not tag.replace("-", "").replace("_", "").isalnum():
        raise AsrbenchError(f"--tag '{tag}': use letters, digits, '-' and '_' only")
    options, tuned_from = resolve_options(run_dir, options or DecodeOptions(), explicit or set(), use_tuned)
    loaded = load_model(rundir.checkpoint_path(run_dir, checkpoint))
    config = loaded.config
    data_dir = _split_data_dir(run_dir, config, data_dir, split)
    model = loaded.model
    frontend = config.features  # the cost at full context, before any chunking
    gflops = _gflops(model, frontend) if measure_cost else None
    if chunk_ms:
        chunked_tag = _set_chunks(model, config, chunk_ms, left_chunks)
        tag = tag or chunked_tag
    out_dir = _fresh_decode_dir(run_dir, split, tag)
    torch_device = resolve_device(device)
    model = model.to(torch_device)
    searcher = build_searcher(model, loaded.tokenizer, options, config.data.dir)
    console.print(
        f"decoding {run_dir} {split}: {describe_search(searcher.description, checkpoint, tuned_from)}", soft_wrap=True
    )
    features = load_features(data_dir, split, config.features)
    batch_frames = batch_frames or config.train.eval_batch_frames
    recognition = recognize(
        model, features, loaded.cmvn, loaded.tokenizer, torch_device, batch_frames, warmup=True, searcher=searcher
    )
    speed = _end_to_end(model, searcher, features, loaded, batch_frames, torch_device) if measure_cost else {}
    rates = _score_split(out_dir, features, recognition, loaded.tokenizer, normalizer)
    streamed = (
        None
        if not chunk_ms
        else _streaming_figures(
            run_dir,
            split,
            model,
            loaded,
            features,
            recognition,
            chunk_ms,
            left_chunks,
            torch_device,
            [normalize(utt.text, DEFAULT_NORMALIZER) for utt in features.utterances],  # tokenized: the model's units
        )
    )
    result = DecodeResult.from_dict(
        {
            "format": FORMAT,
            "run": str(run_dir),
            "model": config.model.name,
            "split": split,
            "tag": tag or None,
            "data_dir": str(data_dir),
            **rates,
            "units": loaded.tokenizer.kind,
            **_speed(recognition, features),
            "params": count_parameters(model),
            "gflops_per_second": gflops,
            **speed,
            "decoder": _decoder_settings(searcher, options, tuned_from, batch_frames, checkpoint),
            "streaming": streamed,
            "config_hash": config.hash(),
            "environment": environment(torch_device),
        }
    )
    write_result(out_dir / "result.json", result)
    return result
