"""tools/bit_identity.py, the before/after check a refactor must pass: its digests and its verdict."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

TOOL = Path(__file__).resolve().parents[1] / "tools" / "bit_identity.py"


def _tool():
    spec = importlib.util.spec_from_file_location("bit_identity", TOOL)
    module = importlib.util.module_from_spec(spec)
    sys.modules["bit_identity"] = module
    spec.loader.exec_module(module)
    return module


def test_the_weights_digest_sees_every_bit_and_nothing_else(tmp_path: Path):
    tool = _tool()
    weights = {"w": torch.tensor([[1.0, 2.0], [3.0, 4.0]]), "steps": torch.tensor(3)}

    def digest(state: dict, name: str) -> str:
        torch.save({"model_state": state, "epoch": len(name)}, tmp_path / name)  # other entries do not count
        return tool.weights_digest(tmp_path / name)

    same = digest(dict(weights), "a.pt")
    assert digest(dict(weights), "other_name.pt") == same
    nudged = dict(weights, w=weights["w"].clone())
    nudged["w"][1, 1] = torch.nextafter(torch.tensor(4.0), torch.tensor(5.0))  # one ulp
    assert digest(nudged, "b.pt") != same
    assert digest(dict(weights, w=weights["w"].double()), "c.pt") != same  # same values, another dtype
    assert digest(dict(weights, w=weights["w"].reshape(4)), "d.pt") != same  # same bytes, another shape


def _record(path: Path, **models) -> Path:
    path.write_text(json.dumps({"commit": "0" * 40, "models": models}))
    return path


@pytest.mark.parametrize(
    "change, code",
    [
        ({}, 0),
        ({"losses": [[1.0, 2.5]]}, 1),
        ({"last_weights": "e"}, 1),
        ({"weights": "f"}, 1),
        ({"hypotheses": "g"}, 1),
    ],
)
def test_compare_passes_only_when_every_fingerprint_is_equal(tmp_path: Path, capsys, change: dict, code: int):
    tool = _tool()
    row = {"last_weights": "a", "weights": "b", "hypotheses": "c", "losses": [[1.0, 2.0]], "test_wer": 5.0}
    before = _record(tmp_path / "before.json", **{"yesno/cnn": row})
    after = _record(tmp_path / "after.json", **{"yesno/cnn": {**row, **change}})
    with pytest.raises(SystemExit) as exit_info:
        tool.compare(type("Args", (), {"before": before, "after": after}))
    assert exit_info.value.code == code
    assert ("bit-identical" in capsys.readouterr().out) == (code == 0)


def test_a_model_on_one_side_only_is_a_difference(tmp_path: Path):
    tool = _tool()
    row = {"last_weights": "a", "weights": "b", "hypotheses": "c", "losses": [], "test_wer": 5.0}
    before = _record(tmp_path / "before.json", **{"yesno/cnn": row, "yesno/gru": row})
    after = _record(tmp_path / "after.json", **{"yesno/cnn": row})
    with pytest.raises(SystemExit) as exit_info:
        tool.compare(type("Args", (), {"before": before, "after": after}))
    assert exit_info.value.code == 1
