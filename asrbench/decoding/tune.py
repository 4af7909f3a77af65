"""Grid search of decoding values (beam, LM weight, word bonus, CTC weight) on a dev split.

The network runs once over the split; every grid point re-runs only the search on its stored
outputs. The best point (lowest WER, then CER, then the smaller beam, then the first in grid
order: :data:`TIE_RULE`) is saved to the run dir's ``tuned.json`` with the whole grid and the
points that tied with it, and ``asrbench decode --tuned`` uses it on test (only then). Tuning on
the test split is refused: values chosen on test make its WER a biased estimate.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import torch

from asrbench import fileio
from asrbench.data.features import FeatureSet, GlobalCMVN, load_features
from asrbench.data.manifest import require_prepared
from asrbench.data.tokenizer import Tokenizer
from asrbench.decoding.decode import TUNED, batches_of
from asrbench.decoding.lm import load_lm
from asrbench.decoding.search_table import build_searcher, tuning_grid
from asrbench.decoding.searchers import DecodeOptions, Searcher, TuningRequest, load_lexicon
from asrbench.env import environment, resolve_device
from asrbench.errors import AsrbenchError
from asrbench.progress import progress_bar
from asrbench.runs import rundir
from asrbench.runs.checkpoint import load_model
from asrbench.scoring.metrics import error_rates
from asrbench.text import DEFAULT_NORMALIZER

TIE_RULE = "lowest WER, then lowest CER, then the smallest beam, then the first in grid order"


def _network_outputs(
    model: torch.nn.Module,
    base: Searcher,
    features: FeatureSet,
    cmvn: GlobalCMVN,
    batch_frames: int,
    device: torch.device,
) -> list[tuple[list[int], object]]:
    """The network's outputs over the whole split, once, with the utterance indices of each batch:
    every grid point's search runs on these."""
    collate, batches = batches_of(features, cmvn, batch_frames)
    stored = []
    with torch.inference_mode():
        model.eval()
        for indices in batches:
            batch = collate(indices).to(device)
            stored.append((indices, base.outputs(batch.features, batch.feature_lengths)))
    return stored


def _search_grid(
    grid: list[DecodeOptions],
    searcher_for: Callable[[DecodeOptions], Searcher],
    stored: list[tuple[list[int], object]],
    tokenizer: Tokenizer,
    features: FeatureSet,
    split: str,
) -> list[dict]:
    """Each grid point's search over the stored outputs, scored against the split's references: one
    row per point (its options, WER, CER and search seconds), in grid order."""
    references = [utt.text for utt in features.utterances]
    rows = []
    with progress_bar("wer") as progress, torch.inference_mode():
        task = progress.add_task(f"tune on {split}", total=len(grid), wer="-")
        for options in grid:
            searcher = searcher_for(options)
            hypotheses = [""] * len(features)
            start = time.perf_counter()
            for indices, outputs in stored:
                for index, ids in zip(indices, searcher.search(outputs), strict=True):
                    hypotheses[index] = tokenizer.decode(ids)
            seconds = time.perf_counter() - start
            rates = error_rates(references, hypotheses, DEFAULT_NORMALIZER)
            rows.append({"options": options.to_dict(), "wer": rates.wer, "cer": rates.cer, "search_seconds": seconds})
            progress.update(task, advance=1, wer=f"{rates.wer:.2f}")
    return rows


def _best_point(rows: list[dict]) -> dict:
    """``tuned.json``'s choice: the best row's options, WER and CER by :data:`TIE_RULE`, and the
    options of every point that tied with it."""
    best = min(rows, key=lambda row: (row["wer"], row["cer"], row["options"]["beam"]))
    chosen = dict(best["options"])
    tied = [row for row in rows if (row["wer"], row["cer"]) == (best["wer"], best["cer"])]
    return {
        "options": chosen,
        "wer": best["wer"],
        "cer": best["cer"],
        # Grid points as good as the chosen one on dev (WER and CER); TIE_RULE says which one won.
        "tied": [row["options"] for row in tied],
        "tie_rule": TIE_RULE,
    }


def tune(
    run_dir: str | Path,
    split: str = "dev",
    lm: str | None = None,
    beams: list[int] | None = None,
    lm_weights: list[float] | None = None,
    word_bonuses: list[float] | None = None,
    ctc_weights: list[float] | None = None,
    length_bonuses: list[float] | None = None,
    lexicon: str = "",
    mode: str = "auto",
    data_dir: str | Path | None = None,
    device: str = "auto",
) -> dict:
    """Search the grid on ``split`` and write ``tuned.json``; returns what it wrote."""
    if split == "test":
        raise AsrbenchError("tuning on the test split is not offered: tune on dev, then decode test")
    run_dir = rundir.require_run_dir(run_dir)
    loaded = load_model(run_dir / rundir.BEST)
    config, model, tokenizer = loaded.config, loaded.model, loaded.tokenizer
    torch_device = resolve_device(device)
    model.to(torch_device)
    if data_dir:
        require_prepared(data_dir, (), "--data")
    data_dir = Path(data_dir) if data_dir else rundir.data_dir(run_dir, config)

    features = load_features(data_dir, split, config.features)

    def listed(values):
        return None if values is None else tuple(values)

    # The model's family decides which values make up the grid (see asrbench.decoding.searchers).
    grid = tuning_grid(
        model,
        TuningRequest(
            beams=tuple(beams or [10]),
            lm=str(lm or ""),
            lm_weights=listed(lm_weights),
            word_bonuses=listed(word_bonuses),
            ctc_weights=listed(ctc_weights),
            length_bonuses=listed(length_bonuses),
            lexicon=lexicon,
            mode=mode,
        ),
    )
    lm_model = load_lm(lm)[0] if lm and any(options.lm for options in grid) else None
    lexicon_trie = (
        load_lexicon(lexicon, tokenizer, config.data.dir) if any(options.lexicon for options in grid) else None
    )

    def searcher_for(options: DecodeOptions) -> Searcher:
        return build_searcher(model, tokenizer, options, config.data.dir, lm=lm_model, lexicon=lexicon_trie)

    # The network runs once; outputs of a searcher that needs the most (CTC branch included).
    widest = max(grid, key=lambda o: o.ctc_weight or 0.0)
    stored = _network_outputs(
        model, searcher_for(widest), features, loaded.cmvn, config.train.eval_batch_frames, torch_device
    )
    rows = _search_grid(grid, searcher_for, stored, tokenizer, features, split)
    if rows and rows[0]["wer"] is None:
        raise AsrbenchError(f"{data_dir}/{split}.jsonl: no reference words after normalization; nothing to tune on")
    result = {
        "split": split,
        "data_dir": str(data_dir),
        **_best_point(rows),
        "grid": rows,
        "config_hash": config.hash(),
        "environment": environment(torch_device),
    }
    fileio.write_json(run_dir / TUNED, result)
    return result


def _grid_values(options: list[dict]) -> list[str]:
    """The option names that vary over ``options``."""
    return [key for key in options[0] if len({json.dumps(o[key]) for o in options}) > 1]


def summarize_tuning(result: dict, split: str = "dev") -> str:
    """One line: the chosen value of every option the grid searched (0 and empty values included),
    and, when several points tied on dev, how many and which rule picked one."""
    grid = [row["options"] for row in result["grid"]]
    searched = _grid_values(grid) or ["beam"]
    defaults = DecodeOptions().to_dict()
    fixed = [key for key, value in result["options"].items() if key not in searched and value != defaults.get(key)]
    options = result["options"]
    chosen = ", ".join(f"{key} {options[key]!r}" for key in searched)
    line = (
        f"best on {split} of {len(grid)} grid points: WER {result['wer']:.2f}% CER {result['cer']:.2f}% with {chosen}"
    )
    if fixed:
        line += " (fixed: " + ", ".join(f"{key} {options[key]!r}" for key in fixed) + ")"
    tied = result.get("tied") or []
    if len(tied) > 1:
        line += f"; {len(tied)} points tie at this WER and CER, picked by {result.get('tie_rule', TIE_RULE)}"
    return line
