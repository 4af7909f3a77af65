"""Decode one split with several searches through `asrbench.decoding.decode.decode`, in one process, and
report WER and speed for each: RTFx (network + search) and search RTFx (the search alone; for
attention search the decoder network is part of the search), with the ratio to greedy measured
in the same run.

    python benchmarks/experiments/decode_speed.py runs/an4/conformer_aed --split test --lm lms/an4/lm3 --threads 2 \
        --json benchmarks/results/decode_speed_an4.json

Searches: greedy; CTC prefix beam 10 (native, and flashlight); CTC beam 10 + lexicon + LM when
--lm is given; attention beam 10 with joint CTC scoring for attention models. Each writes its own
decode/<split>-speed-<name>/ dir in the run.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

from asrbench import fileio
from asrbench.decoding.decode import decode
from asrbench.decoding.searchers import DecodeOptions
from asrbench.runs.checkpoint import load_model


def searches(run_dir: Path, lm: str | None, beam: int) -> list[tuple[str, DecodeOptions]]:
    model = load_model(run_dir / "checkpoints" / "best.pt").model
    modes = model.search_modes()  # e.g. ("ctc",), ("attention", "ctc"): the default first
    attention = modes[0] == "attention"
    has_ctc = "ctc" in modes
    rows = [("greedy", DecodeOptions(beam=1, mode="ctc" if attention and has_ctc else "auto"))]
    if has_ctc:
        mode = "ctc" if attention else "auto"
        rows.append((f"ctc-beam{beam}", DecodeOptions(beam=beam, mode=mode)))
        rows.append((f"ctc-beam{beam}-flashlight", DecodeOptions(beam=beam, mode=mode, backend="flashlight")))
        if lm:
            rows.append(
                (
                    f"ctc-beam{beam}-lexicon-lm",
                    DecodeOptions(beam=beam, mode=mode, lm=lm, lm_weight=0.5, lexicon="train"),
                )
            )
    if attention:
        rows.append(("attention-greedy", DecodeOptions(beam=1, mode="attention", ctc_weight=0.0)))
        rows.append((f"attention-beam{beam}", DecodeOptions(beam=beam, mode="attention")))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path)
    parser.add_argument("--split", default="test")
    parser.add_argument("--lm", default=None, help="LM dir for the lexicon + LM row")
    parser.add_argument("--beam", type=int, default=10)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    rows = []
    for name, options in searches(args.run, args.lm, args.beam):
        result = decode(args.run, args.split, options=options, tag=f"speed-{name}", threads=args.threads).to_dict()
        rows.append(
            {
                "search": name,
                "kind": result["decoder"]["kind"],
                "wer": result["wer"],
                "cer": result["cer"],
                "rtfx": result["rtfx"],
                "search_rtfx": result["search_rtfx"],
                "decode_seconds": result["decode_seconds"],
                "search_seconds": result["search_seconds"],
                "audio_seconds": result["audio_seconds"],
                "threads": result["decoder"]["threads"],
                "options": options.to_dict(),
            }
        )
    greedy = rows[0]["decode_seconds"]
    for row in rows:
        row["time_vs_greedy"] = row["decode_seconds"] / greedy if greedy else None

    table = Table(title=f"{args.run} {args.split}: decoding speed ({rows[0]['threads']} threads)")
    for column in ("search", "WER %", "CER %", "RTFx", "search RTFx", "time / greedy"):
        table.add_column(column, justify="left" if column == "search" else "right")
    for row in rows:
        table.add_row(
            row["search"],
            f"{row['wer']:.2f}",
            f"{row['cer']:.2f}",
            f"{row['rtfx']:,.0f}",
            f"{row['search_rtfx']:,.0f}",
            f"{row['time_vs_greedy']:.1f}x",
        )
    Console().print(table)
    if args.json:
        fileio.write_text(args.json, json.dumps({"run": str(args.run), "split": args.split, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
