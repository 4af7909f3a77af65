"""One trained model, its dev (or test) features read from float16 and from float32 stores.

    python benchmarks/experiments/storage_dtype_decode.py RUN [RUN ...] [--split dev]

Training a model on float16 or float32 features puts it on another trajectory (as a seed does),
so two trainings differ by more than the storage's precision explains. This isolates the storage:
each run decodes the split (greedy, 1 thread) with the features rounded to float16 and to float32
(both stores of the run's data dir, extracted if missing), and the CERs are compared.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
from _common import figure, record  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, nargs="+")
    parser.add_argument("--split", default="dev")
    args = parser.parse_args()

    import torch

    from asrbench.data.features import load_features
    from asrbench.decoding.decode import recognize
    from asrbench.runs import rundir
    from asrbench.runs.checkpoint import load_model
    from asrbench.scoring.metrics import error_rates

    torch.set_num_threads(1)
    figures = {}
    for run in args.runs:
        loaded = load_model(run / rundir.BEST)
        rates = {}
        for dtype in ("float16", "float32"):
            config = dataclasses.replace(loaded.config.features, dtype=dtype)
            features = load_features(loaded.config.data.dir, args.split, config)
            recognition = recognize(loaded.model, features, loaded.cmvn, loaded.tokenizer, torch.device("cpu"))
            rates[dtype] = error_rates([u.text for u in features.utterances], recognition.hypotheses).to_dict()
        difference = rates["float16"]["cer"] - rates["float32"]["cer"]
        figures[str(run)] = figure(
            abs(difference),
            0.3,
            f"|CER points| float16 - float32 features, {args.split}",
            better="lower",
            trained_on=loaded.config.features.dtype,
            cer_float16=rates["float16"]["cer"],
            cer_float32=rates["float32"]["cer"],
            wer_float16=rates["float16"]["wer"],
            wer_float32=rates["float32"]["wer"],
        )
        print(
            f"{run}: trained on {loaded.config.features.dtype}; {args.split} CER float16 features "
            f"{rates['float16']['cer']:.2f}, float32 features {rates['float32']['cer']:.2f} ({difference:+.2f})"
        )
    record("storage_dtype_decode", figures)


if __name__ == "__main__":
    main()
