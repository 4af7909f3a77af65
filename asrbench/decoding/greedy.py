"""Greedy (best-path) CTC decoding: the argmax label per frame, repeats merged, blanks removed."""

from __future__ import annotations

import torch

BLANK_ID = 0  # every tokenizer puts the CTC blank at index 0


def ctc_greedy(log_probs: torch.Tensor, lengths: torch.Tensor) -> list[list[int]]:
    """Best path: (B, T, V), (B,) -> token ids per utterance with repeats merged and blanks removed."""
    best = log_probs.argmax(dim=-1)  # (B, T)
    keep = torch.ones_like(best, dtype=torch.bool)
    keep[:, 1:] = best[:, 1:] != best[:, :-1]
    keep &= best != BLANK_ID
    keep &= torch.arange(best.size(1), device=best.device).unsqueeze(0) < lengths.unsqueeze(1)
    best, keep = best.cpu(), keep.cpu()
    return [best[i][keep[i]].tolist() for i in range(best.size(0))]
