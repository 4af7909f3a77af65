"""Speed of asrbench's pure-PyTorch RNN-T loss, forward and forward+backward, on an AN4-sized batch.

    python benchmarks/rnnt_loss_speed.py [--batch 32 --frames 150 --units 40 --vocabs 32,256] [--threads 1]

The batch is B utterances of T encoder frames and U target tokens, all at full length (the lattice
loops run to the batch's longest utterance, so shorter ones would not change the time). Only
``rnnt_loss`` is timed, on float32 log-probs that already exist: no joiner, no log_softmax. Each
figure is the median of ``--repeat`` runs after one warm-up. Prints a table and writes JSON to
``benchmarks/results/rnnt_loss_speed.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as `python benchmarks/x.py` from anywhere
    sys.path.insert(0, str(ROOT))


def median_ms(function, repeat: int) -> float:
    function()  # warm-up: allocator, first-call dispatch
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def measure(batch: int, frames: int, units: int, vocab: int, repeat: int, seed: int = 0) -> dict:
    import torch

    from asrbench.models.rnnt_loss import joint_memory_bytes, rnnt_loss

    generator = torch.Generator().manual_seed(seed)
    log_probs = torch.randn(batch, frames, units + 1, vocab, generator=generator).log_softmax(-1)
    log_probs.requires_grad_(True)
    targets = torch.randint(1, vocab, (batch, units), generator=generator)
    logit_lengths = torch.full((batch,), frames)
    target_lengths = torch.full((batch,), units)

    def forward():
        with torch.no_grad():
            rnnt_loss(log_probs, targets, logit_lengths, target_lengths)

    def forward_backward():
        log_probs.grad = None
        rnnt_loss(log_probs, targets, logit_lengths, target_lengths).backward()

    return {
        "batch": batch,
        "frames": frames,
        "units": units,
        "vocab": vocab,
        "forward_ms": median_ms(forward, repeat),
        "forward_backward_ms": median_ms(forward_backward, repeat),
        "joint_mib": joint_memory_bytes(batch, frames, units, vocab) / 2**20,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--frames", type=int, default=150, help="Encoder frames T.")
    parser.add_argument("--units", type=int, default=40, help="Target tokens U.")
    parser.add_argument("--vocabs", default="32,256", help="Comma-separated vocabulary sizes V.")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads.")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "rnnt_loss_speed.json")
    args = parser.parse_args()

    import torch

    from asrbench.env import cpu_name

    torch.set_num_threads(args.threads)
    rows = [measure(args.batch, args.frames, args.units, int(v), args.repeat) for v in args.vocabs.split(",")]

    print(f"{'B':>4} {'T':>5} {'U':>4} {'V':>5} {'forward ms':>11} {'fwd+bwd ms':>11} {'joint MiB':>10}")
    for row in rows:
        print(
            f"{row['batch']:>4} {row['frames']:>5} {row['units']:>4} {row['vocab']:>5} {row['forward_ms']:>11.1f} "
            f"{row['forward_backward_ms']:>11.1f} {row['joint_mib']:>10.1f}"
        )
    report = {
        "benchmark": "rnnt_loss_speed",
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "repeat": args.repeat,
        "statistic": "median after one warm-up",
        "results": rows,
        "environment": {
            "cpu_model": cpu_name(),
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(f"cpu: {report['environment']['cpu_model']}, torch threads: {torch.get_num_threads()}; wrote {args.json}")


if __name__ == "__main__":
    main()
