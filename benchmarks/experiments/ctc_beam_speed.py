"""Search-only speed of CTC decoders: greedy, our prefix beam search (± LM), flashlight (± LM).

    python benchmarks/experiments/ctc_beam_speed.py --run runs/an4/conformer --split test [--data DIR] [--lm LM_DIR]
    python benchmarks/experiments/ctc_beam_speed.py --synthetic 600 [--lm LM_DIR] [--json OUT]

With a run dir the model's log-probs are computed once (forward passes untimed); with
``--synthetic N`` they are generated for N seconds of audio: peaky CTC-like outputs at 25 frames
per second (10 ms frames, 4x subsampled), mostly blank, one or two spike frames per character of
random texts. Only the searches are timed, each over the whole set, best of ``--repeat`` passes,
all in this run so the ratios to greedy compare like with like. RTFx = audio seconds / search
seconds; torch runs on one thread. WER/CER are against the references (the generated texts with
``--synthetic``). With ``--synthetic`` and no ``--lm``, a 3-gram word LM is trained on other random
texts of the same words (into a temporary dir) so the LM rows still run.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from asrbench.data.tokenizer import CharTokenizer
from asrbench.decoding.ctc_beam import CTCBeamOptions, Lexicon, ctc_prefix_beam_search
from asrbench.decoding.greedy import ctc_greedy
from asrbench.env import environment
from asrbench.scoring.metrics import error_rates

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/, for experiment_data
from experiment_data import FRAME_RATE, peaky_log_probs  # noqa: E402

WORDS = (
    "the of and to in is was he for it with as his on be at by had not are but from or have an they which one "
    "you were her all she there would their we him been has when who will more no if out so said what up its "
    "about into than them can only other new some could time these two may then do first any my now such like "
    "our over man me even most made after also did many before must through back years where much your way "
    "well down should because each just those people how too little state good very make world still own see "
    "men work long get here between both life being under never day same another know while last might us "
    "great old year off come since against go came right used take three"
).split()


def random_texts(count: int, seconds: float, rng: np.random.Generator) -> list[str]:
    """Texts of about 13 characters per second of speech, words drawn Zipf-like from WORDS."""
    weights = 1.0 / np.arange(1, len(WORDS) + 1)
    weights /= weights.sum()
    texts = []
    for _ in range(count):
        words: list[str] = []
        while sum(len(word) + 1 for word in words) < 13 * seconds:
            words.append(WORDS[rng.choice(len(WORDS), p=weights)])
        texts.append(" ".join(words))
    return texts


def synthetic_batches(seconds: float, seed: int, batch_size: int = 16):
    """-> (tokenizer, [(log_probs (B, T, V), lengths (B,))], audio seconds, references, texts for an LM)."""
    rng = np.random.default_rng(seed)
    durations = []
    while sum(durations) < seconds:
        durations.append(float(min(rng.uniform(4.0, 14.0), max(seconds - sum(durations), 1.0))))
    texts = [random_texts(1, duration, rng)[0] for duration in durations]
    tokenizer = CharTokenizer.build([" ".join(WORDS) + "'"])
    pieces, references = [], []
    for text, duration in zip(texts, durations, strict=True):
        frames = int(duration * FRAME_RATE)
        while len(text) * 2.3 > frames:  # drop words until the spikes surely fit
            text = text.rsplit(" ", 1)[0]
        pieces.append(torch.from_numpy(peaky_log_probs(text, frames, tokenizer, rng)))
        references.append(text)
    batches = []
    for start in range(0, len(pieces), batch_size):
        group = pieces[start : start + batch_size]
        lengths = torch.tensor([piece.size(0) for piece in group])
        padded = torch.nn.utils.rnn.pad_sequence(group, batch_first=True, padding_value=0.0)
        batches.append((padded, lengths))
    audio_seconds = sum(int(d * FRAME_RATE) for d in durations) / FRAME_RATE
    lm_texts = random_texts(2000, 6.0, np.random.default_rng(seed + 1))
    return tokenizer, batches, audio_seconds, references, lm_texts


@torch.inference_mode()
def model_batches(run_dir: Path, split: str, data_dir: Path | None):
    """-> (tokenizer, [(log_probs, lengths)], audio seconds, references) from a trained run dir, on CPU."""
    from asrbench.data.batching import BucketBatchSampler, Collator
    from asrbench.data.features import load_features
    from asrbench.runs import rundir
    from asrbench.runs.checkpoint import load_model

    run_dir = rundir.require_run_dir(run_dir)
    loaded = load_model(run_dir / rundir.BEST)
    config = loaded.config
    features = load_features(Path(data_dir) if data_dir else Path(config.data.dir), split, config.features)
    collate = Collator(features, [[] for _ in range(len(features))], loaded.cmvn)
    sampler = BucketBatchSampler(
        features.lengths.tolist(), config.train.eval_batch_frames, max_batch_size=256, shuffle=False
    )
    batches, references = [], []
    for indices in sampler.batches():
        batch = collate(indices)
        log_probs, lengths = loaded.model(batch.features, batch.feature_lengths)
        batches.append((log_probs.float().contiguous(), lengths.cpu()))
        references.extend(features.utterances[i].text for i in indices)
    audio_seconds = sum(utt.duration for utt in features.utterances)
    return loaded.tokenizer, batches, audio_seconds, references


def train_synthetic_lm(texts: list[str], out_dir: Path) -> Path:
    from asrbench import fileio
    from asrbench.decoding.lm import LM_FORMAT, train_ngram

    lm = train_ngram([text.split() for text in texts], 3)
    lm.write_arpa(out_dir / "lm.arpa")
    words = sorted({word for text in texts for word in text.split()})
    fileio.write_text(out_dir / "lexicon.txt", "".join(f"{word}\t{' '.join(word)}\n" for word in words))
    fileio.write_json(out_dir / "lm.json", {"format": LM_FORMAT, "order": 3, "unit": "word"})
    return out_dir


def time_search(search, batches, repeat: int) -> tuple[float, list]:
    best, outputs = math.inf, []
    for _ in range(repeat):
        start = time.perf_counter()
        outputs = [search(log_probs, lengths) for log_probs, lengths in batches]
        best = min(best, time.perf_counter() - start)
    return best, outputs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="Run dir whose best checkpoint gives the log-probs.")
    parser.add_argument("--split", default="test")
    parser.add_argument("--data", type=Path, help="Prepared data dir (default: the run's).")
    parser.add_argument("--synthetic", type=float, metavar="SECONDS", help="Generate this much peaky CTC output.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lm", type=Path, help="LM dir (lm.arpa, lexicon.txt, lm.json) for the LM rows.")
    parser.add_argument("--beam", type=int, default=10)
    parser.add_argument("--lm-weight", type=float, default=0.5)
    parser.add_argument("--word-bonus", type=float, default=1.0)
    parser.add_argument("--repeat", type=int, default=3, help="Timed passes per decoder; the fastest counts.")
    parser.add_argument("--no-flashlight", action="store_true")
    parser.add_argument("--json", type=Path, help="Write the rows here.")
    args = parser.parse_args()
    if (args.run is None) == (args.synthetic is None):
        raise SystemExit("give either --run RUN_DIR or --synthetic SECONDS")
    torch.set_num_threads(1)

    with tempfile.TemporaryDirectory() as tmp:
        if args.synthetic is not None:
            tokenizer, batches, audio_seconds, references, lm_texts = synthetic_batches(args.synthetic, args.seed)
            source = f"synthetic {args.synthetic:g} s (seed {args.seed})"
            lm_dir = args.lm or train_synthetic_lm(lm_texts, Path(tmp))
        else:
            tokenizer, batches, audio_seconds, references = model_batches(args.run, args.split, args.data)
            source = f"{args.run} {args.split}"
            lm_dir = args.lm
        rows = run_all(tokenizer, batches, audio_seconds, references, args, lm_dir)

    table = Table(title=f"CTC search speed: {source}, {audio_seconds:.0f} s of audio, beam {args.beam}")
    for column in ("decoder", "search s", "RTFx", "x greedy time", "WER %", "CER %", "same text as greedy"):
        table.add_column(column, justify="left" if column == "decoder" else "right")
    for row in rows:
        table.add_row(
            row["decoder"],
            f"{row['search_seconds']:.3f}",
            f"{row['rtfx']:.0f}",
            f"{row['ratio_to_greedy']:.1f}",
            f"{row['wer']:.2f}",
            f"{row['cer']:.2f}",
            f"{row['same_as_greedy']:.1%}",
        )
    Console(width=140).print(table)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        report = {
            "benchmark": "ctc_beam_speed",
            "source": source,
            "audio_seconds": audio_seconds,
            "beam": args.beam,
            "lm_weight": args.lm_weight,
            "word_bonus": args.word_bonus,
            "lm": str(args.lm) if args.lm else None,
            "rows": rows,
            "environment": environment(torch.device("cpu")),
        }
        args.json.write_text(json.dumps(report, indent=2))


def run_all(tokenizer, batches, audio_seconds: float, references: list[str], args, lm_dir: Path | None) -> list[dict]:
    plain = CTCBeamOptions(beam=args.beam)
    fused = CTCBeamOptions(beam=args.beam, lm_weight=args.lm_weight, word_bonus=args.word_bonus, lexicon=True)
    searches = [("greedy", lambda lp, ln: ctc_greedy(lp, ln))]
    searches.append((f"ours beam {args.beam}", lambda lp, ln: ctc_prefix_beam_search(lp, ln, tokenizer, plain)))
    if lm_dir is not None:
        from asrbench.decoding.lm import load_lm

        lm, metadata = load_lm(lm_dir)
        lexicon = Lexicon.from_file(Path(lm_dir) / "lexicon.txt", tokenizer) if metadata["unit"] == "word" else None
        options = (
            fused
            if lexicon is not None
            else CTCBeamOptions(beam=args.beam, lm_weight=args.lm_weight, word_bonus=args.word_bonus)
        )
        searches.append(
            (
                f"ours beam {args.beam} + {lm.order}-gram {metadata['unit']} LM",
                lambda lp, ln: ctc_prefix_beam_search(lp, ln, tokenizer, options, lm, lexicon),
            )
        )
    if not args.no_flashlight:
        from asrbench.decoding.flashlight import FlashlightDecoder

        decoder = FlashlightDecoder(tokenizer, plain)
        searches.append((f"flashlight beam {args.beam} (lexicon-free)", decoder))
        if lm_dir is not None:
            decoder_lm = FlashlightDecoder(tokenizer, fused, lm_dir)
            kind = "lexicon + word LM" if decoder_lm.unit == "word" else "char LM"
            searches.append((f"flashlight beam {args.beam} + {kind}", decoder_lm))

    rows, greedy_seconds, greedy_texts = [], None, None
    for name, search in searches:
        seconds, outputs = time_search(search, batches, args.repeat)
        # greedy gives token ids per utterance, the beam searches n-best Hypothesis lists
        texts = [
            tokenizer.decode(best if name == "greedy" else (best[0].token_ids if best else []))
            for output in outputs
            for best in output
        ]
        if greedy_seconds is None:
            greedy_seconds, greedy_texts = seconds, texts
        same = sum(a == b for a, b in zip(texts, greedy_texts, strict=True)) / max(len(texts), 1)
        rates = error_rates(references, texts)
        rows.append(
            {
                "decoder": name,
                "search_seconds": seconds,
                "rtfx": audio_seconds / seconds,
                "ratio_to_greedy": seconds / greedy_seconds,
                "wer": rates.wer,
                "cer": rates.cer,
                "same_as_greedy": same,
            }
        )
    return rows


if __name__ == "__main__":
    main()
