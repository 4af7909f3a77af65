"""CTC decoding speed after the encoder: greedy search, and prefix beam search against flashlight.

    python benchmarks/decode_bench.py --run runs/final/an4/conformer [--data data/an4] [--split test]
    python benchmarks/decode_bench.py --max-utterances 5 --repeat 1     # synthetic, a quick check
    python benchmarks/decode_bench.py --run RUN --lexicon train [--beam 10]   # the lexicon search

Emissions (log-probs, (T', V) per utterance) are made once, untimed: with ``--run``, the run's
best checkpoint over the split's cached features (``ctc_log_probs``, as decoding calls it);
without, synthetic peaky CTC outputs (``experiment_data.peaky_log_probs``) for the split's
manifest texts and durations, at 25 frames per second (10 ms frames, 4x subsampling), over a
character tokenizer built from the split's texts (~30 tokens). They are padded into length-sorted
batches (as decoding's bucketed batches are) before timing.

Timed, best of ``--repeat`` passes over the whole split, each search exactly as ``asrbench
decode`` runs it: ``ctc_searcher(...).search((log_probs, lengths))`` per batch, then
``tokenizer.decode`` per utterance. RTFx = audio seconds / search seconds.

- greedy (``ctc_greedy``) at batch size 1 and 16: target >= 50,000x real time at both;
- CTC prefix beam search, ``--beam`` 10, lexicon-free, no LM, batches of 16: ours against
  flashlight-text's lexicon-free decoder on the same emissions, in this process; the figure is
  our speed / flashlight's (target >= 1.5), with both WERs (and how often the texts agree). Our
  search runs its compiled loop (numba, ``asrbench.decoding.ctc_beam_kernel``); the same search
  with the Python loop (``CTCBeamOptions(kernel="python")``) is timed beside it, and the figure
  records whether the two returned the same n-best lists, scores included, for every utterance.

With ``--lexicon`` (what ``asrbench decode --lexicon`` takes: ``train``, a word list or a
pronunciation file), or on a phone model (whose searches keep to its lexicon), the beam search is
the lexicon search instead, and its figure ``ctc_beam_lexicon_vs_python_loop`` is the compiled
loop's speed over the Python loop's on the same lexicon (target >= 1), with whether the n-best
lists are the same; flashlight-text (lexicon-free here) is not compared.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from _common import best_time, figure, record, set_threads, skipped
from experiment_data import sorted_batches, synthetic_emissions

from asrbench.data.tokenizer import CharTokenizer
from asrbench.decoding.ctc_beam import CTCBeamOptions, ctc_prefix_beam_search
from asrbench.decoding.searchers import DecodeOptions, ctc_searcher, word_knowledge
from asrbench.errors import AsrbenchError
from asrbench.scoring.metrics import error_rates

GREEDY_TARGET = 50000.0  # x real time
BEAM_TARGET = 1.5  # x flashlight-text's speed (issue 34: >= 1.5 on the machine measured, so >= 1.0 on the other kind)


@torch.inference_mode()
def model_emissions(run_dir: Path, data_dir: Path, split: str, limit: int):
    """-> (tokenizer, [log_probs (T', V)], references, durations) from a run's best checkpoint, on CPU."""
    from asrbench.data.features import load_features
    from asrbench.decoding.decode import batches_of
    from asrbench.runs import rundir
    from asrbench.runs.checkpoint import load_model

    loaded = load_model(rundir.require_run_dir(run_dir) / rundir.BEST)
    features = load_features(data_dir, split, loaded.config.features)
    if limit:
        features = features.subset(list(range(min(limit, len(features)))))
    collate, batches = batches_of(features, loaded.cmvn, loaded.config.train.eval_batch_frames)
    emissions: list[torch.Tensor] = [torch.empty(0)] * len(features)
    for indices in batches:
        batch = collate(indices)
        log_probs, lengths = loaded.model.ctc_log_probs(batch.features, batch.feature_lengths)
        for index, rows, length in zip(indices, log_probs.float(), lengths.tolist(), strict=True):
            emissions[index] = rows[:length].clone()
    utterances = features.utterances
    return loaded.tokenizer, emissions, [u.text for u in utterances], [u.duration for u in utterances]


def transcribe(search, tokenizer: CharTokenizer, batches, count: int) -> list[str]:
    """What ``asrbench.decoding.decode.recognize`` does after the network: search, then ids -> text."""
    texts = [""] * count
    for indices, log_probs, lengths in batches:
        for index, ids in zip(indices, search((log_probs, lengths)), strict=True):
            texts[index] = tokenizer.decode(ids)
    return texts


def timed(search, tokenizer, batches, count: int, repeat: int) -> tuple[float, list[str]]:
    """(best seconds of ``repeat`` passes, texts); one untimed pass first warms up and gives the texts."""
    texts = transcribe(search, tokenizer, batches, count)
    return best_time(lambda: transcribe(search, tokenizer, batches, count), repeat), texts


def python_loop(tokenizer: CharTokenizer, batches, beam: int, repeat: int, lexicon=None) -> tuple[float, bool]:
    """(best seconds of the search with the Python loop, whether every utterance's n-best list,
    scores included, equals the compiled loop's); within ``lexicon`` when one is given."""
    within = lexicon is not None
    compiled = CTCBeamOptions(beam=beam, lexicon=within)
    python = CTCBeamOptions(beam=beam, kernel="python", lexicon=within)

    def nbest(options):
        return [
            ctc_prefix_beam_search(log_probs, lengths, tokenizer, options, lexicon=lexicon)
            for _, log_probs, lengths in batches
        ]

    same = nbest(compiled) == nbest(python)
    return best_time(lambda: nbest(python), repeat), same


def measure(
    tokenizer: CharTokenizer,
    emissions: list[torch.Tensor],
    references: list[str],
    audio_seconds: float,
    beam: int = 10,
    repeat: int = 3,
    lexicon_spec: str = "",
    data_dir: Path | None = None,
) -> dict[str, dict]:
    """The three figures: greedy RTFx at batch 1 and 16, and our beam search's speed / flashlight's
    (with a lexicon: / the Python loop's)."""
    count, figures = len(emissions), {}
    by_size = {size: sorted_batches(emissions, size) for size in (1, 16)}
    # The model is never called: searches get the emissions directly, so none is needed.
    greedy = ctc_searcher(None, tokenizer, DecodeOptions(beam=1)).search
    for size, batches in by_size.items():
        seconds, texts = timed(greedy, tokenizer, batches, count, repeat)
        figures[f"greedy_rtfx_batch{size}"] = figure(
            audio_seconds / seconds,
            GREEDY_TARGET,
            "x real time",
            seconds=seconds,
            wer=error_rates(references, texts).wer,
        )

    options = DecodeOptions(beam=beam, lexicon=lexicon_spec)
    _, _, lexicon, _ = word_knowledge(options, tokenizer, data_dir)
    native = ctc_searcher(None, tokenizer, options, data_dir=data_dir, lexicon=lexicon)
    native_seconds, native_texts = timed(native.search, tokenizer, by_size[16], count, repeat)
    python_seconds, same_nbest = python_loop(tokenizer, by_size[16], beam, repeat, lexicon)
    details = {
        "beam": beam,
        "batch_size": 16,
        "native_rtfx": audio_seconds / native_seconds,
        "native_wer": error_rates(references, native_texts).wer,
        "search": native.description,
        "python_loop_rtfx": audio_seconds / python_seconds,
        "compiled_vs_python_loop": python_seconds / native_seconds,
        "same_nbest_as_python_loop": same_nbest,
    }
    if lexicon is not None:
        figures["ctc_beam_lexicon_vs_python_loop"] = figure(
            python_seconds / native_seconds, 1.0, "x the Python loop's speed, same lexicon", **details
        )
        return figures
    try:
        flashlight = ctc_searcher(None, tokenizer, DecodeOptions(beam=beam, backend="flashlight")).search
    except AsrbenchError as err:
        figures["ctc_beam_vs_flashlight"] = skipped(
            BEAM_TARGET, "x flashlight speed", f"no flashlight to compare with: {err}", note=str(err), **details
        )
        return figures
    flashlight_seconds, flashlight_texts = timed(flashlight, tokenizer, by_size[16], count, repeat)
    flashlight_wer = error_rates(references, flashlight_texts).wer
    same = sum(a == b for a, b in zip(native_texts, flashlight_texts, strict=True)) / max(count, 1)
    difference = details["native_wer"] - flashlight_wer
    note = "same WER" if abs(difference) < 1e-9 else f"WER differs: native - flashlight = {difference:+.2f} points"
    figures["ctc_beam_vs_flashlight"] = figure(
        flashlight_seconds / native_seconds,
        BEAM_TARGET,
        "x flashlight speed",
        **details,
        flashlight_rtfx=audio_seconds / flashlight_seconds,
        flashlight_wer=flashlight_wer,
        same_text_fraction=same,
        note=note,
    )
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, help="Run dir whose best checkpoint makes the emissions (else synthetic).")
    parser.add_argument("--data", type=Path, default=Path("data/an4"), help="Prepared data dir.")
    parser.add_argument("--split", default="test")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default).")
    parser.add_argument("--repeat", type=int, default=3, help="Timed passes per search; the fastest counts.")
    parser.add_argument("--beam", type=int, default=10)
    parser.add_argument("--max-utterances", type=int, default=0, help="Only the first N utterances (0 = all).")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the synthetic emissions.")
    parser.add_argument("--lexicon", default="", help="Search within this lexicon (as decode --lexicon takes it).")
    args = parser.parse_args()
    threads = set_threads(args.threads)

    if args.run is not None:
        tokenizer, emissions, references, durations = model_emissions(
            args.run, args.data, args.split, args.max_utterances
        )
    else:
        from asrbench.data.manifest import read_manifest, split_path

        every = read_manifest(split_path(args.data, args.split))
        utterances = every[: args.max_utterances] if args.max_utterances else every
        tokenizer, emissions, references, durations = synthetic_emissions(
            [u.text for u in utterances], [u.duration for u in utterances], [u.text for u in every], args.seed
        )
    audio_seconds = sum(durations)
    figures = measure(tokenizer, emissions, references, audio_seconds, args.beam, args.repeat, args.lexicon, args.data)
    record(
        "decode_bench",
        figures,
        {
            "utterances": len(emissions),
            "audio_seconds": audio_seconds,
            "frames": sum(e.size(0) for e in emissions),
            "vocab": len(tokenizer),
            "threads": threads,
            "run": str(args.run) if args.run else None,
            "emissions": "model" if args.run else f"synthetic (seed {args.seed})",
            "data": str(args.data),
            "split": args.split,
            "repeat": args.repeat,
            "lexicon": args.lexicon or None,
        },
    )


if __name__ == "__main__":
    main()
