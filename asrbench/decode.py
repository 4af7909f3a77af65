"""Batched greedy CTC decoding of a prepared split with a trained run dir.

Writes ``<run>/decode/<split>/hypotheses.jsonl`` (id, ref, hyp, normalized as scored) and
``result.json`` (error rates, RTFx, parameters, options, environment). ``result.json`` is
written last and atomically, so an interrupted decode leaves none behind.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from asrbench import fileio, rundir
from asrbench.checkpoint import load_model
from asrbench.data.batching import BucketBatchSampler, Collator
from asrbench.data.features import FeatureSet, GlobalCMVN, load_features
from asrbench.data.tokenizer import CharTokenizer
from asrbench.env import environment, resolve_device
from asrbench.models import count_parameters
from asrbench.scoring import error_rates
from asrbench.text import DEFAULT_NORMALIZER, normalize


@dataclass
class Recognition:
    hypotheses: list[str]  # in the order of the FeatureSet
    loss: float  # the model's mean loss per utterance (nan when targets were not given)
    model_seconds: float  # forward + search, excluding the warm-up batch
    audio_seconds: float  # audio covered by the timed batches


@torch.inference_mode()
def recognize(
    model: nn.Module,
    features: FeatureSet,
    cmvn: GlobalCMVN,
    tokenizer: CharTokenizer,
    device: torch.device,
    batch_frames: int = 60000,
    token_ids: list[list[int]] | None = None,
    warmup: bool = False,
    search=None,
) -> Recognition:
    """Recognize a FeatureSet; optionally the model's loss against ``token_ids``.

    ``search(features, feature_lengths) -> token ids per utterance`` defaults to the model's
    greedy decoding (best path for CTC, argmax for attention decoders).
    """
    search = search or model.greedy_decode
    was_training = model.training
    model.eval()
    collate = Collator(features, token_ids or [[] for _ in range(len(features))], cmvn)
    batches = BucketBatchSampler(features.lengths.tolist(), batch_frames, max_batch_size=256, shuffle=False)
    batches = batches.batches()
    hypotheses: list[str] = [""] * len(features)
    total_loss, model_seconds, audio_seconds = 0.0, 0.0, 0.0
    if warmup and batches:
        batch = collate(batches[0]).to(device)
        search(batch.features, batch.feature_lengths)
    for indices in batches:
        batch = collate(indices).to(device)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        for index, ids in zip(indices, search(batch.features, batch.feature_lengths), strict=True):
            hypotheses[index] = tokenizer.decode(ids)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        model_seconds += time.perf_counter() - start
        audio_seconds += sum(features.utterances[i].duration for i in indices)
        if token_ids is not None:
            loss = model.compute_loss(batch.features, batch.feature_lengths, batch.targets, batch.target_lengths)
            total_loss += float(loss) * len(indices)
    model.train(was_training)
    mean_loss = total_loss / len(features) if token_ids is not None and len(features) else float("nan")
    return Recognition(hypotheses, mean_loss, model_seconds, audio_seconds)


def decode(
    run_dir: str | Path,
    split: str = "test",
    data_dir: str | Path | None = None,
    device: str = "auto",
    batch_frames: int | None = None,
    checkpoint: str = "best",
) -> dict:
    """Decode ``split`` with the run's best checkpoint; returns the result dict written to disk."""
    run_dir = rundir.require_run_dir(run_dir)
    loaded = load_model(run_dir / (rundir.BEST if checkpoint == "best" else rundir.LAST))
    config = loaded.config
    data_dir = Path(data_dir) if data_dir else Path(config.data.dir)
    torch_device = resolve_device(device)
    model = loaded.model.to(torch_device)
    features = load_features(data_dir, split, config.features)
    batch_frames = batch_frames or config.train.eval_batch_frames
    recognition = recognize(model, features, loaded.cmvn, loaded.tokenizer, torch_device, batch_frames, warmup=True)
    normalizer = DEFAULT_NORMALIZER
    references = [utt.text for utt in features.utterances]
    rates = error_rates(references, recognition.hypotheses, normalizer)
    out_dir = run_dir / "decode" / split
    rows = [
        {"id": utt.id, "ref": normalize(utt.text, normalizer), "hyp": normalize(hyp, normalizer)}
        for utt, hyp in zip(features.utterances, recognition.hypotheses, strict=True)
    ]
    fileio.write_jsonl(out_dir / "hypotheses.jsonl", rows)
    result = {
        "run": str(run_dir),
        "model": config.model.name,
        "split": split,
        "data_dir": str(data_dir),
        **rates.to_dict(),
        "rtfx": recognition.audio_seconds / recognition.model_seconds if recognition.model_seconds else None,
        "audio_seconds": sum(utt.duration for utt in features.utterances),
        "decode_seconds": recognition.model_seconds,
        "params": count_parameters(model),
        "decoder": {"kind": "ctc_greedy", "batch_frames": batch_frames, "checkpoint": checkpoint,
                    "rtfx_covers": "model forward + greedy search, after one warm-up batch; features from cache"},
        "config_hash": config.hash(),
        "environment": environment(torch_device),
    }
    fileio.write_json(out_dir / "result.json", result)
    return result
