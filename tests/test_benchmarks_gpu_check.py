"""benchmarks/gpu_check.py without a GPU: the one line and exit 0 when CUDA is missing, and the
judgements the GPU run will make (losses that fall and stay finite, the same hypotheses on both
devices, the report's ``ok``), on made-up numbers. The check itself trains; its CPU smoke run
(``--device cpu``, ~30 s) is not part of the tests."""

from __future__ import annotations

import importlib
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def gpu_check(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # the script imports _common as a sibling
    return importlib.import_module("gpu_check")


@pytest.mark.slow  # trains nothing, but starts a Python with torch (3 s): kept out of make test-fast
def test_without_cuda_it_says_so_in_one_line_measures_nothing_and_exits_0(tmp_path):
    out = tmp_path / "result.json"
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    process = subprocess.run(
        [sys.executable, str(BENCHMARKS / "gpu_check.py"), "--json", str(out)],
        cwd=tmp_path,  # from anywhere, not only the repository root
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert process.returncode == 0, process.stderr
    lines = process.stdout.splitlines()
    assert len(lines) == 1
    printed = json.loads(lines[0])
    assert printed["cuda"] is False and printed["measured"] == "nothing"
    assert "no CUDA device" in printed["reason"]
    assert json.loads(out.read_text()) == printed
    assert not (tmp_path / "runs").exists() and list(tmp_path.iterdir()) == [out]  # nothing trained or prepared


def test_a_falling_finite_loss_passes(gpu_check):
    losses = [150.0, 140.0, 120.0, 125.0, 100.0, 90.0, 60.0, 40.0, 30.0, 35.0, 25.0, 20.0]
    verdict = gpu_check.judge_losses(losses, window=3)
    assert verdict["finite"] and verdict["falls"]
    assert verdict["loss_first"] == pytest.approx(410.0 / 3) and verdict["loss_last"] == pytest.approx(80.0 / 3)
    assert verdict["loss_steps"] == 12


@pytest.mark.parametrize(
    "losses",
    [
        [20.0, 25.0, 30.0, 60.0, 90.0, 150.0],  # rising
        [50.0] * 6,  # flat: not falling
        [150.0, 120.0, math.nan, 60.0, 40.0, 20.0],  # falls, but one step was NaN
        [150.0, 120.0, 90.0, 60.0, 40.0, math.inf],
        [150.0],  # one step cannot show a fall
        [],
    ],
)
def test_a_loss_that_rises_stalls_or_is_not_finite_fails(gpu_check, losses):
    verdict = gpu_check.judge_losses(losses, window=3)
    assert not verdict["falls"]
    assert verdict["finite"] == (bool(losses) and all(math.isfinite(loss) for loss in losses))
    json.dumps(verdict, allow_nan=False)  # NaN means become None: the report stays valid JSON


def test_a_run_passes_only_finite_falling_and_complete(gpu_check):
    falling = [100.0, 90.0, 70.0, 50.0, 40.0, 30.0]
    assert gpu_check.training_entry(falling, 0, 6, 6, steps_per_s=3.0)["ok"]
    skipped = gpu_check.training_entry(falling, 1, 6, 6)  # a non-finite loss or gradient skipped a step
    assert not skipped["finite"] and not skipped["ok"]
    assert not gpu_check.training_entry(falling, 0, 4, 6)["ok"]  # stopped short of --steps


def test_decoding_must_match_on_every_utterance_and_in_loss(gpu_check):
    same = gpu_check.decode_entry(["yes no", "", "no"], ["yes no", "", "no"], 12.0, 12.0 * (1 + 1e-6))
    assert same["ok"] and same["same"] == 3 and same["nonempty"] == 2
    differ = gpu_check.decode_entry(["yes no", "no"], ["yes no", "yes"], 12.0, 12.0)
    assert not differ["ok"] and differ["same"] == 1 and differ["first_differences"] == [{"cpu": "no", "gpu": "yes"}]
    assert not gpu_check.decode_entry(["yes"], ["yes"], 12.0, 12.1)["ok"]  # 0.8% apart: beyond 1e-3
    assert not gpu_check.decode_entry([], [], 0.0, 0.0)["ok"]


def test_the_report_is_ok_only_when_every_check_is(gpu_check):
    good = {"ok": True}
    models = {"conformer": {"fp32": good, "bf16": good}, "las": {"fp32": good}}
    report = gpu_check.build_report(True, "GPU", "2.x", models, {"conformer": good}, {"ok": True}, steps=50)
    assert report["ok"] and report["cuda"] and report["steps"] == 50
    assert set(report) >= {"cuda", "device", "torch", "models", "decode_same", "torchrun", "ok"}
    models["las"]["fp16"] = {"ok": False, "error": "AsrbenchError: 20 batches in a row had a non-finite loss"}
    assert not gpu_check.build_report(True, "GPU", "2.x", models, {"conformer": good}, None)["ok"]
    assert not gpu_check.build_report(True, "GPU", "2.x", {}, {}, None)["ok"]  # nothing checked is no pass


def test_arguments(gpu_check):
    assert gpu_check.parse_args([]).precisions == ["fp32", "bf16", "fp16"]
    assert gpu_check.parse_args([]).models == ["conformer", "las", "conformer_transducer"]
    assert gpu_check.parse_args(["--device", "cpu"]).precisions == ["fp32"]  # the smoke run
    assert gpu_check.parse_args(["--precisions", "bf16"]).precisions == ["bf16"]
    for bad in (["--precisions", "fp8"], ["--steps", "1"], ["--device", "tpu"]):
        with pytest.raises(SystemExit):
            gpu_check.parse_args(bad)


@pytest.mark.slow  # trains nothing, but sets up a process group and DDP (2 s): kept out of make test-fast
def test_the_nccl_probe_loss_is_a_function_of_the_checkpoint(gpu_check, tmp_path, monkeypatch):
    """The probe runs the model in train mode, so dropout draws from torch's global RNG, whose
    startup seed differs from process to process: unseeded, the same checkpoint probed twice gave
    two losses (25.01 and 24.30 for one yesno conformer), which read as two different checkpoints."""
    import socket

    from asrbench.data.features import GlobalCMVN
    from asrbench.data.tokenizer import CharTokenizer
    from asrbench.models import build_model, default_options
    from asrbench.recipe.config import FeatureConfig, ModelSpec, RunConfig
    from asrbench.runs import checkpoint, rundir

    options = {**default_options("conformer"), "d_model": 16, "num_heads": 2, "num_layers": 1, "ff_dim": 32,
               "kernel_size": 5, "subsample_channels": 4, "dropout": 0.3}  # fmt: skip
    torch.manual_seed(0)
    config = RunConfig(features=FeatureConfig(num_mel_bins=20), model=ModelSpec("conformer", options))
    tokenizer = CharTokenizer.build(["YES NO"])
    model = build_model("conformer", options, 20, len(tokenizer))
    checkpoint.save(rundir.checkpoint_path(tmp_path, must_exist=False), config, tokenizer,
                    GlobalCMVN(torch.zeros(20), torch.ones(20)), model)  # fmt: skip
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    for name, value in {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": "0", "WORLD_SIZE": "1"}.items():
        monkeypatch.setenv(name, value)
    losses = []
    for startup_seed in (1, 2):  # two processes: torch's global RNG starts elsewhere in each
        torch.manual_seed(startup_seed)
        probe = gpu_check.nccl_probe(tmp_path, "cpu")
        assert probe["ok"] and probe["backend"] == "gloo" and probe["world_size"] == 1
        losses.append(probe["loss"])
    assert losses[0] == losses[1]
