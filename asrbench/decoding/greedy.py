"""Greedy searches: CTC best path (the argmax label per frame, repeats merged, blanks removed) and
an attention decoder's batched argmax until every utterance has emitted ``<eos>``.

(Transducer greedy search lives with modified beam search in :mod:`asrbench.decoding.transducer_search`.)"""

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


@torch.no_grad()
def attention_greedy(model, memory: torch.Tensor, memory_lengths: torch.Tensor) -> list[list[int]]:
    """Batched argmax over an attention decoder (``init_state`` / ``step``, ``sos`` / ``eos``,
    ``max_length``): memory (B, T', D), (B,) -> token ids per utterance, the CTC blank never emitted,
    each utterance stopped at ``<eos>`` or ``model.max_length`` tokens."""
    batch = memory.size(0)
    state = model.init_state(memory, memory_lengths)
    prefixes = torch.full((batch, 1), model.sos, dtype=torch.long, device=memory.device)
    limits = [model.max_length(int(length)) for length in memory_lengths]
    finished = [False] * batch
    hypotheses: list[list[int]] = [[] for _ in range(batch)]
    for position in range(max(limits)):
        log_probs, state = model.step(state, prefixes)
        log_probs[:, 0] = float("-inf")  # the CTC blank is never a decoder output
        best = log_probs.argmax(dim=-1)
        for i, token in enumerate(best.tolist()):
            if finished[i]:
                continue
            if token == model.eos or position >= limits[i]:
                finished[i] = True
            else:
                hypotheses[i].append(token)
        if all(finished):
            break
        prefixes = torch.cat([prefixes, best.unsqueeze(1)], dim=1)
    return hypotheses
