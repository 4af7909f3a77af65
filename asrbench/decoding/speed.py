"""Decoding speed as the leaderboards define it: RTFx of the whole recognizer, front end included.

``result.json``'s ``rtfx`` (:func:`asrbench.decoding.decode.recognize`) times the network and the
search on features read from the store, the figure asrbench has always reported. The Open ASR
Leaderboard's RTFx is total audio seconds / total wall seconds of the decode *including* feature
extraction and search, after a warm-up, at a stated batch size and thread count. :func:`end_to_end_speed`
measures that, as a second pass over the split: each batch's audio is read into memory untimed (the
leaderboard's datasets hand the model decoded arrays), then the clock runs over the filterbanks, CMVN
and padding, the network, the search and the detokenization, batch by batch, after one untimed
warm-up batch. The batches are decode's own (the same utterances together, ``batch_frames``).
"""

from __future__ import annotations

import time

import torch
from torch import nn

from asrbench.data.audio import load_audio
from asrbench.data.batching import Collator
from asrbench.data.fbank import FeatureExtractor
from asrbench.data.features import FeatureSet, GlobalCMVN
from asrbench.data.manifest import Utterance
from asrbench.data.tokenizer import Tokenizer
from asrbench.decoding.searchers import Searcher
from asrbench.errors import AsrbenchError
from asrbench.progress import console
from asrbench.recipe.config import FeatureConfig

COVERS = (
    "audio in memory -> features (fbank, CMVN, padding) -> network -> search -> text, summed over decode's "
    "batches after one warm-up batch; reading the audio files is not timed"
)


def _waveforms(utterances: list[Utterance], sample_rate: int) -> list[torch.Tensor]:
    """The utterances' audio, decoded into memory (an utterance with an offset is a slice of its file)."""
    return [load_audio(utt.audio, sample_rate, utt.offset, utt.duration if utt.offset else None) for utt in utterances]


def _recognize_audio(
    waveforms: list[torch.Tensor],
    utterances: list[Utterance],
    extractor: FeatureExtractor,
    cmvn: GlobalCMVN,
    searcher: Searcher,
    tokenizer: Tokenizer,
    device: torch.device,
) -> list[str]:
    """Texts of one batch from its audio: what the timed section runs."""
    frames = extractor.batch(waveforms)
    offsets = torch.tensor([0] + [piece.size(0) for piece in frames]).cumsum(0)
    batch_set = FeatureSet.from_frames(utterances, torch.cat(frames), offsets)
    batch = Collator(batch_set, [[] for _ in utterances], cmvn)(list(range(len(utterances)))).to(device)
    outputs = searcher.outputs(batch.features, batch.feature_lengths)
    texts = [tokenizer.decode(ids) for ids in searcher.search(outputs)]
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return texts


@torch.inference_mode()
def end_to_end_speed(
    model: nn.Module,
    searcher: Searcher,
    utterances: list[Utterance],
    batches: list[list[int]],
    config: FeatureConfig,
    cmvn: GlobalCMVN,
    tokenizer: Tokenizer,
    device: torch.device,
) -> dict:
    """``result.json``'s end-to-end speed figures (module docstring): ``rtfx_end_to_end``, the wall
    seconds it covers, the mean utterances per batch and the thread count; {} (with a note) when the
    split's audio cannot be read."""
    was_training = model.training
    model.eval()
    extractor = FeatureExtractor(config)
    audio_seconds, wall_seconds = 0.0, 0.0
    try:
        for number, indices in enumerate(batches):
            members = [utterances[i] for i in indices]
            waveforms = _waveforms(members, config.sample_rate)
            if number == 0:  # the warm-up: allocations, one-time kernel choices, lazy initialisation
                _recognize_audio(waveforms, members, extractor, cmvn, searcher, tokenizer, device)
            start = time.perf_counter()
            _recognize_audio(waveforms, members, extractor, cmvn, searcher, tokenizer, device)
            wall_seconds += time.perf_counter() - start
            audio_seconds += sum(waveform.numel() for waveform in waveforms) / config.sample_rate
    except AsrbenchError as err:  # features stored, audio gone (moved, deleted): the other figures stand
        console.print(f"[yellow]note[/yellow]: rtfx_end_to_end not measured ({err})", soft_wrap=True)
        return {}
    finally:
        model.train(was_training)
    return {
        "rtfx_end_to_end": audio_seconds / wall_seconds if wall_seconds else None,
        "end_to_end_seconds": wall_seconds,
        "end_to_end_batch_size": len(utterances) / len(batches) if batches else None,
        "end_to_end_threads": torch.get_num_threads(),
    }
