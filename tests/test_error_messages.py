"""Error details from other libraries (torch, onnx, sentencepiece) are shown whole or cut at a word."""

from __future__ import annotations

import fractions

import pytest
import torch

from asrbench.errors import AsrbenchError, excerpt
from asrbench.runs.checkpoint import load_state


def test_a_long_message_is_cut_at_a_word_boundary_with_an_ellipsis():
    text = "Weights only load failed. This file can still be loaded, to do so you have two options"
    assert excerpt(text, 200) == text
    cut = excerpt(text, 40)
    assert cut == "Weights only load failed. This file can …" and len(cut) <= 42
    assert excerpt("one\n\tline  \x1b[1mbold\x1b[0m", 200) == "one line bold"  # escapes and breaks gone
    assert excerpt("x" * 50, 20) == "x" * 20 + " …"  # one word longer than the limit: cut, and said so


def test_an_unreadable_checkpoint_names_the_reason_in_whole_words(tmp_path):
    """Regression (issue 28.14): the detail was cut mid-word (``... only if you t)``, ``If yo)``)."""
    path = tmp_path / "foreign.pt"
    torch.save({"x": fractions.Fraction(1, 3)}, path)
    with pytest.raises(AsrbenchError) as caught:
        load_state(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: unreadable checkpoint (UnpicklingError: ")
    assert "Unsupported global: GLOBAL fractions.Fraction" in message and "\x1b" not in message
    detail = message.split("(UnpicklingError: ", 1)[1]
    assert detail.endswith(" …)") or detail.endswith(".)"), detail
    shown = detail.removesuffix(")").removesuffix(" …")
    assert f" {shown} " in f" {' '.join(_torch_message(path).split())} "  # whole words of torch's message


def _torch_message(path) -> str:
    try:
        torch.load(path, weights_only=True)
    except Exception as err:  # noqa: BLE001 - the message torch gives
        return str(err)
    raise AssertionError("torch loaded it")
