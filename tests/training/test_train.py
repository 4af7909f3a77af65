"""The trainer on a tiny generated corpus: run dir contents, resume equivalence, budgets, refusals."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import write_tone_corpus

from asrbench.data.pipeline import ensure_data_dir
from asrbench.decoding.decode import decode
from asrbench.env import CORES_VARIABLE, available_cores, bf16_hardware, cpu_flags
from asrbench.errors import AsrbenchError
from asrbench.recipe.config import resolve
from asrbench.runs import checkpoint, rundir
from asrbench.training.loader import loader_workers
from asrbench.training.schedule import lr_factor
from asrbench.training.trainer import train


@pytest.fixture
def recipe(tmp_path: Path) -> Path:
    data_dir = write_tone_corpus(tmp_path)
    path = tmp_path / "recipe.yaml"
    path.write_text(
        f"""
data: {{dir: {data_dir}}}
features: {{sample_rate: 8000, num_mel_bins: 23}}
augment: {{time_mask_width: 5, freq_mask_width: 4}}
train: {{epochs: 3, batch_frames: 400, lr: 3.0e-3, warmup_steps: 5}}
models:
  dnn: {{context: 3, stride: 2, hidden_size: 32, num_layers: 2}}
  gru: {{subsample_channels: 4, hidden_size: 16, num_layers: 1}}
"""
    )
    return path


def _train_killed_after_epoch(monkeypatch: pytest.MonkeyPatch, epoch: int, *args, **kwargs) -> None:
    """``train(*args, **kwargs)`` dying (KeyboardInterrupt) right after the resumable checkpoint of
    ``epoch`` is written, as a killed process would."""
    real_save = checkpoint.save

    def save_then_die(path, *save_args, **save_kwargs):
        real_save(path, *save_args, **save_kwargs)
        if path.name == "last.pt" and save_kwargs["epoch"] == epoch:
            raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint, "save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train(*args, **kwargs)
    monkeypatch.setattr(checkpoint, "save", real_save)


@pytest.mark.slow
def test_run_dir_holds_everything_decode_needs(recipe: Path, tmp_path: Path):
    run = tmp_path / "run"
    summary = train(recipe, "dnn", run, seed=1)
    for name in (rundir.CONFIG, rundir.TOKENIZER, rundir.ENVIRONMENT, rundir.METRICS, rundir.SUMMARY):
        assert (run / name).is_file(), name
    metrics = rundir.read_metrics(run)
    assert [row["epoch"] for row in metrics] == [1, 2, 3]
    assert summary["epochs"] == 3 and summary["params"] > 0 and summary["stop_reason"] == "epochs"
    assert summary["best_dev_cer"] == min(row["dev_cer"] for row in metrics)
    assert rundir.read_config(run).train.seed == 1
    result = decode(run, "test")
    assert result.utterances == 4 and result.model == "dnn"
    saved = json.loads((run / "decode" / "test" / "result.json").read_text())
    assert {"wer", "cer", "substitutions", "deletions", "insertions", "words", "rtfx", "params"} <= set(saved)
    assert saved["wer"] == result.wer
    lines = (run / "decode" / "test" / "hypotheses.jsonl").read_text().splitlines()
    assert len(lines) == 4


@pytest.mark.slow
def test_resume_reaches_the_same_state_as_an_uninterrupted_run(
    recipe: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    train(recipe, "gru", straight, epochs=3, seed=3)

    _train_killed_after_epoch(monkeypatch, 2, recipe, "gru", resumed, epochs=3, seed=3)
    assert len(rundir.read_metrics(resumed)) == 2
    train(None, None, resumed, resume=True)
    assert len(rundir.read_metrics(resumed)) == 3
    assert rundir.read_metrics(straight)[-1]["train_loss"] == pytest.approx(
        rundir.read_metrics(resumed)[-1]["train_loss"], rel=1e-6
    )
    a = torch.load(straight / rundir.LAST, weights_only=True)["model_state"]
    b = torch.load(resumed / rundir.LAST, weights_only=True)["model_state"]
    assert all(torch.allclose(a[key], b[key], atol=1e-6) for key in a)


@pytest.mark.slow
def test_a_run_dir_is_never_overwritten(recipe: Path, tmp_path: Path):
    run = tmp_path / "run"
    train(recipe, "dnn", run, epochs=1)
    with pytest.raises(AsrbenchError, match="already holds a run"):
        train(recipe, "dnn", run, epochs=1)


@pytest.mark.slow
def test_wall_clock_budget_stops_training(recipe: Path, tmp_path: Path):
    summary = train(recipe, "dnn", tmp_path / "run", epochs=50, max_minutes=0.0001)
    assert summary["stop_reason"] == "time budget" and summary["epochs"] == 1


@pytest.mark.slow
def test_per_model_train_overrides_and_set(recipe: Path, tmp_path: Path):
    entry = "hidden_size: 32, num_layers: 2"
    text = recipe.read_text().replace(entry + "}", entry + ", train: {lr: 0.01}}")
    recipe.write_text(text)
    train(recipe, "dnn", tmp_path / "run", epochs=1, overrides=["model.hidden_size=8"])
    config = rundir.read_config(tmp_path / "run")
    assert config.train.lr == 0.01 and config.model.options["hidden_size"] == 8


def test_learning_rate_warms_up_then_decays():
    class Schedule:
        warmup_steps, schedule, final_lr_ratio = 10, "cosine", 0.1

    factors = [lr_factor(step, 100, Schedule) for step in range(100)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(factors[10:], factors[11:], strict=False))
    assert factors[-1] == pytest.approx(0.1, abs=0.01)


@pytest.mark.slow
def test_budgeted_run_ends_near_the_final_learning_rate(recipe: Path, tmp_path: Path):
    # 1000 epochs could never finish in 0.05 minutes; the schedule, fitted to the budget after the
    # first epoch, must still decay to (near) its end.
    summary = train(
        recipe,
        "dnn",
        tmp_path / "run",
        epochs=1000,
        max_minutes=0.05,
        overrides=["train.warmup_steps=1", "train.final_lr_ratio=0.1"],
    )
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    config = rundir.read_config(tmp_path / "run")
    assert rows[-1]["epoch"] < 1000 and summary["stop_reason"] == "time budget"
    assert summary["schedule_steps"] < 1000 * rows[0]["step"]
    assert rows[-1]["lr"] <= config.train.lr * 0.5


def _losses(run: Path) -> list[tuple]:
    """Every logged loss, as exact floats (bitwise comparison)."""
    return [(row["epoch"], row["step"], row["train_loss"], row["dev_loss"]) for row in rundir.read_metrics(run)]


@pytest.mark.slow
def test_the_same_seed_trains_to_the_same_bits_however_busy_the_machine(
    recipe: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """Issue 28.6: a time budget that does not bind changes nothing; a slower machine (here every
    batch stalls 0.3 s, as when another job holds the core) neither; nor does a kill and resume."""
    import time

    from asrbench.data import batching

    overrides = ["train.num_threads=1", "train.data_workers=0", "train.warmup_steps=2"]
    budget = dict(epochs=4, seed=5, max_minutes=0.1, overrides=overrides)  # 6 s: >> the work, << the stalls
    train(recipe, "gru", tmp_path / "idle", **budget)
    real_collate = batching.Collator.__call__

    def stalled(self, indices, seed=None):
        time.sleep(0.3)  # wall time passes, no work is done
        return real_collate(self, indices, seed)

    monkeypatch.setattr(batching.Collator, "__call__", stalled)
    busy = train(recipe, "gru", tmp_path / "busy", **budget)
    monkeypatch.setattr(batching.Collator, "__call__", real_collate)
    assert busy["stop_reason"] == "epochs"

    _train_killed_after_epoch(monkeypatch, 2, recipe, "gru", tmp_path / "resumed", **budget)
    train(None, None, tmp_path / "resumed", resume=True)

    idle = _losses(tmp_path / "idle")
    assert len(idle) == 4 and all(isinstance(row[2], float) for row in idle)
    assert _losses(tmp_path / "busy") == idle
    assert _losses(tmp_path / "resumed") == idle
    weights = [checkpoint.load_state(tmp_path / name / rundir.LAST)["model_state"] for name in ("idle", "resumed")]
    assert all(torch.equal(weights[0][key], weights[1][key]) for key in weights[0])


@pytest.mark.slow
def test_a_budgeted_run_is_repeated_exactly_by_its_recorded_steps(recipe: Path, tmp_path: Path):
    """Issue 28.7: train_summary.json's ``repeat`` (--max-steps, train.schedule_steps) gives the
    budget-stopped run's learning rates and losses step for step, with no budget."""
    overrides = ["train.num_threads=1", "train.data_workers=0", "train.warmup_steps=2"]
    budgeted = train(recipe, "dnn", tmp_path / "budgeted", epochs=400, seed=4, max_minutes=0.03, overrides=overrides)
    assert budgeted["stop_reason"] == "time budget" and budgeted["budget"]["clock"] == "compute"
    words = budgeted["repeat"].split()
    assert words[:2] == ["--max-steps", str(budgeted["steps"])]
    repeat = [f"train.max_steps={budgeted['steps']}"]
    if len(words) > 2:
        assert words[2:4] == ["--set", f"train.schedule_steps={budgeted['schedule_steps']}"]
        repeat.append(words[3])
    repeated = train(
        recipe, "dnn", tmp_path / "repeated", epochs=400, seed=4, max_minutes=0, overrides=overrides + repeat
    )
    assert repeated["stop_reason"] == "max steps" and repeated["steps"] == budgeted["steps"]
    assert _losses(tmp_path / "repeated") == _losses(tmp_path / "budgeted")
    lrs = [[row["lr"] for row in rundir.read_metrics(tmp_path / name)] for name in ("budgeted", "repeated")]
    assert lrs[0] == lrs[1]


def test_the_compute_clock_does_not_count_a_stalled_process():
    import time

    from asrbench.training.schedule import BudgetClock

    clock = BudgetClock("auto", torch.device("cpu"))
    assert clock.kind == "compute" and BudgetClock("auto", torch.device("cuda")).kind == "wall"
    start = clock()
    time.sleep(0.3)
    assert clock() - start < 0.1  # sleeping is not work
    start, cpu = clock(), time.process_time()
    while time.process_time() - cpu < 0.3:
        pass
    assert clock() - start >= 0.3 / torch.get_num_threads() - 0.01  # working is, over the compute threads


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_trains_on_cpu(recipe: Path, tmp_path: Path, precision: str):
    # The autocast path GPUs use, exercised on CPU: losses stay finite, the run decodes.
    summary = train(recipe, "gru", tmp_path / "run", epochs=2, overrides=[f"train.precision={precision}"])
    rows = rundir.read_metrics(tmp_path / "run")
    assert summary["skipped_batches"] == 0 and all(np.isfinite(row["train_loss"]) for row in rows)
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]
    assert rundir.read_config(tmp_path / "run").train.precision == precision
    assert decode(tmp_path / "run", "test").utterances == 4
    # What computed bf16 is recorded (this CPU's flags decide), and nothing for fp16.
    assert summary["bf16_hardware"] == (bf16_hardware(torch.device("cpu")) if precision == "bf16" else None)
    assert summary["environment"]["cpu_flags"] == cpu_flags()


def test_bf16_hardware_follows_the_cpu_flags_and_the_trainer_warns_where_it_is_emulated(monkeypatch):
    from asrbench import env
    from asrbench.training.report import _bf16_note

    cpu = torch.device("cpu")
    for flags, expected in [
        (["avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16"], "amx"),
        (["avx2", "avx512f", "avx512_bf16"], "avx512_bf16"),
        (["avx2", "avx512f"], "emulated"),
        ([], None),  # flags unknown (not Linux)
    ]:
        monkeypatch.setattr(env, "cpu_flags", lambda flags=flags: flags)
        assert env.bf16_hardware(cpu) == expected
        note = _bf16_note(cpu)
        assert ("slower than fp32" in note) == (expected == "emulated")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)
    assert env.bf16_hardware(torch.device("cuda", 0)) == "cuda"
    monkeypatch.undo()
    flags = open("/proc/cpuinfo").read().split("flags", 1)[1].split("\n", 1)[0].split()
    assert env.cpu_flags() == [flag for flag in env.CPU_FLAGS if flag in flags]


def test_automatic_data_workers_leave_the_compute_threads_their_cores(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    assert loader_workers(-1, cpu, cores=2) == 0  # a worker would share a core with the step's threads
    assert loader_workers(-1, cpu, cores=3) == 1
    assert loader_workers(-1, cpu, cores=64) == 4
    assert loader_workers(-1, cuda, cores=2) == 1  # on a GPU collation overlaps the device's work
    assert loader_workers(-1, cuda, cores=1) == 0
    assert loader_workers(3, cpu, cores=2) == 3  # an explicit number is taken as given
    monkeypatch.setenv(CORES_VARIABLE, "3")  # bench --jobs gives each job its share
    assert available_cores() == min(3, len(os.sched_getaffinity(0)))
    monkeypatch.setenv(CORES_VARIABLE, "not a number")
    assert available_cores() == len(os.sched_getaffinity(0))


@pytest.mark.slow
def test_run_records_the_resolved_data_workers(recipe: Path, tmp_path: Path):
    train(recipe, "dnn", tmp_path / "auto", epochs=1)
    assert rundir.read_config(tmp_path / "auto").train.data_workers == -1
    expected = loader_workers(-1, torch.device("cpu"))
    assert rundir.read_metrics(tmp_path / "auto")[-1]["data_workers"] == expected
    train(recipe, "dnn", tmp_path / "one", epochs=1, overrides=["train.data_workers=1"])
    assert rundir.read_metrics(tmp_path / "one")[-1]["data_workers"] == 1
    with pytest.raises(AsrbenchError, match="train.data_workers must be -1"):
        train(recipe, "dnn", tmp_path / "bad", epochs=1, overrides=["train.data_workers=-2"])


@pytest.mark.slow
def test_each_epoch_records_the_resident_memory_after_returning_free_heap_pages(recipe: Path, tmp_path: Path):
    from asrbench.env import release_free_memory, resident_mb

    before = resident_mb()
    assert before is not None and before > 10  # this pytest process holds torch: far more than 10 MB
    block = bytearray(64 * 2**20)  # touched, so resident
    assert resident_mb() > before + 50
    del block
    release_free_memory()
    assert resident_mb() < before + 50
    train(recipe, "dnn", tmp_path / "run", epochs=2)
    rows = rundir.read_metrics(tmp_path / "run")
    assert all(isinstance(row["rss_mb"], float) and row["rss_mb"] > 10 for row in rows)
    # The peak of every step so far: never below what is resident at the epoch's end, never falling.
    assert all(row["peak_memory_mb"] >= row["rss_mb"] for row in rows)
    assert rows[1]["peak_memory_mb"] >= rows[0]["peak_memory_mb"]


@pytest.mark.slow
def test_amp_picks_bf16_where_the_gpu_has_it_else_fp16_and_fp32_on_cpu(monkeypatch, recipe: Path, tmp_path: Path):
    from asrbench.training.optimization import resolve_precision

    cpu, cuda = torch.device("cpu"), torch.device("cuda", 0)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)
    assert resolve_precision("amp", cuda) == "bf16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: False)
    assert resolve_precision("amp", cuda) == "fp16"
    assert resolve_precision("amp", cpu) == "fp32"
    assert resolve_precision("bf16", cpu) == "bf16"  # an explicit choice is kept
    summary = train(recipe, "dnn", tmp_path / "run", epochs=1, overrides=["train.precision=amp"])
    assert summary["precision"] == "fp32"
    assert rundir.read_config(tmp_path / "run").train.precision == "amp"


def test_flat_gradients_clip_like_torch_and_stay_views_through_backward():
    from asrbench.training.optimization import FlatGradients

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3))
    reference = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3))
    reference.load_state_dict(model.state_dict())
    gradients = FlatGradients(model)
    x = torch.randn(8, 6)
    for _ in range(2):  # the second backward must land in the same (zeroed) buffer
        gradients.zero_()
        reference.zero_grad(set_to_none=True)
        (model(x) ** 2).sum().backward()
        (reference(x) ** 2).sum().backward()
        assert all(p.grad.data_ptr() >= gradients.buffer.data_ptr() for p in model.parameters())
        norm = gradients.clip_(0.5)
        expected = torch.nn.utils.clip_grad_norm_(reference.parameters(), 0.5)
        assert norm.item() == pytest.approx(expected.item(), rel=1e-5) and norm > 0.5
        for ours, theirs in zip(model.parameters(), reference.parameters(), strict=True):
            assert torch.allclose(ours.grad, theirs.grad, atol=1e-6)
    assert torch.linalg.vector_norm(gradients.buffer).item() == pytest.approx(0.5, rel=1e-4)


def _ranked_epochs(run: Path, size: int) -> list[int]:
    """The ``size`` best epochs by (dev CER, dev loss, epoch), read from metrics.jsonl."""
    rows = sorted((row["dev_cer"], row["dev_loss"], row["epoch"]) for row in rundir.read_metrics(run))
    return [epoch for _, _, epoch in rows[:size]]


@pytest.mark.slow
def test_average_best_writes_the_mean_of_the_n_best_epochs_as_the_final_model(recipe: Path, tmp_path: Path):
    run = tmp_path / "run"
    summary = train(recipe, "dnn", run, epochs=5, seed=2, overrides=["train.average_best=3"])
    epochs = _ranked_epochs(run, 3)
    assert summary["averaged"]["epochs"] == epochs
    kept = sorted(path.name for path in (run / rundir.NBEST).iterdir())
    assert kept == sorted(rundir.nbest_checkpoint(epoch).name for epoch in epochs)  # the others were deleted
    states = [checkpoint.load_state(run / rundir.nbest_checkpoint(epoch)) for epoch in epochs]
    assert [state["epoch"] for state in states] == epochs
    best = checkpoint.load_state(run / rundir.BEST)
    averaged = summary["averaged"]
    assert averaged["batch_norm_layers_recomputed"] == 2  # the dnn's two MaskedBatchNorm1d
    if averaged["kept"]:
        assert best["averaged_epochs"] == epochs and summary["final_model"]["kept"] == "average"
        for key, value in best["model_state"].items():
            if key.endswith(("running_mean", "running_var", "num_batches_tracked")):
                continue  # re-estimated for the averaged weights (test_batch_norm_is_re_estimated...)
            expected = sum(state["model_state"][key] for state in states) / 3
            assert torch.allclose(value, expected, atol=1e-6), key
        assert averaged["dev_cer"] == best["dev_cer"]
    else:
        assert "averaged_epochs" not in best and best["epoch"] == epochs[0]
        assert summary["final_model"] == {"kept": "best epoch", "epochs": [epochs[0]], "dev_cer": best["dev_cer"]}
    # The average's own dev figures are measured and recorded either way; the run decodes.
    assert 0.0 <= averaged["dev_loss"] < float("inf")
    assert decode(run, "test").utterances == 4


@pytest.mark.slow
def test_an_average_worse_on_dev_than_the_best_epoch_is_not_kept(
    recipe: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """Issue 28.1: the final model is never worse on dev than the best epoch."""
    real_average = checkpoint.average_weights

    def ruined(paths):  # an average that has lost what the epochs learnt
        return {
            key: torch.zeros_like(value) if value.is_floating_point() else value
            for key, value in real_average(paths).items()
        }

    monkeypatch.setattr(checkpoint, "average_weights", ruined)
    run = tmp_path / "run"
    summary = train(recipe, "dnn", run, epochs=3, seed=2, overrides=["train.average_best=2"])
    best_epoch = _ranked_epochs(run, 1)[0]
    assert summary["averaged"]["kept"] is False and summary["averaged"]["dev_cer"] > summary["best_dev_cer"]
    assert summary["final_model"] == {"kept": "best epoch", "epochs": [best_epoch], "dev_cer": summary["best_dev_cer"]}
    assert "average" in summary["final_model_rule"]
    best = checkpoint.load_state(run / rundir.BEST)
    assert best["epoch"] == best_epoch and "averaged_epochs" not in best
    single = checkpoint.load_state(run / rundir.nbest_checkpoint(best_epoch))["model_state"]
    assert all(torch.equal(best["model_state"][key], single[key]) for key in single)
    result = decode(run, "dev")
    assert result.cer == pytest.approx(summary["best_dev_cer"])


def test_batch_norm_is_re_estimated_as_a_cumulative_mean_over_the_batches():
    from types import SimpleNamespace

    from asrbench.models.common import MaskedBatchNorm1d
    from asrbench.training.averaging import recompute_batch_norm

    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(3, 4)
            self.norm = torch.nn.BatchNorm1d(4)
            self.masked = MaskedBatchNorm1d(4)
            self.dropout = torch.nn.Dropout(0.5)

        def compute_loss(self, features, feature_lengths, targets, target_lengths):
            assert not self.dropout.training  # only the norms are in training mode
            hidden = self.linear(features).transpose(1, 2)  # (B, C, T)
            pad = torch.arange(features.size(1))[None, None, :] >= feature_lengths[:, None, None]
            return self.masked(self.norm(hidden), pad).sum()

    torch.manual_seed(0)
    model = Tiny().eval()
    model.norm.running_mean.fill_(5.0)  # stale statistics, as an average of checkpoints has
    batches = [
        SimpleNamespace(
            features=torch.randn(2, 6, 3) * (i + 1),
            feature_lengths=torch.tensor([6, 4]),
            targets=None,
            target_lengths=None,
        )
        for i in range(3)
    ]
    assert recompute_batch_norm(model, batches) == 2
    assert not model.training and model.norm.momentum == 0.1 and model.masked.momentum == 0.1
    with torch.no_grad():
        hidden = [model.linear(batch.features).transpose(1, 2) for batch in batches]
    expected = torch.stack([h.mean(dim=(0, 2)) for h in hidden]).mean(0)
    assert torch.allclose(model.norm.running_mean, expected, atol=1e-5)
    assert model.norm.num_batches_tracked.item() == 3 and model.masked.num_batches_tracked.item() == 3


@pytest.mark.slow
def test_average_best_survives_a_resume(recipe: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    overrides = ["train.average_best=2"]
    train(recipe, "gru", straight, epochs=4, seed=3, overrides=overrides)
    _train_killed_after_epoch(monkeypatch, 3, recipe, "gru", resumed, epochs=4, seed=3, overrides=overrides)
    summary = train(None, None, resumed, resume=True)
    assert summary["averaged"]["epochs"] == _ranked_epochs(straight, 2) == _ranked_epochs(resumed, 2)
    a = checkpoint.load_state(straight / rundir.BEST)["model_state"]
    b = checkpoint.load_state(resumed / rundir.BEST)["model_state"]
    assert all(torch.allclose(a[key], b[key], atol=1e-6) for key in a)


@pytest.mark.slow
def test_without_averaging_the_final_model_is_the_best_epoch(recipe: Path, tmp_path: Path):
    run = tmp_path / "run"
    summary = train(recipe, "dnn", run, epochs=3, seed=2)
    assert summary["averaged"] is None and not (run / rundir.NBEST).exists()
    assert checkpoint.load_state(run / rundir.BEST)["epoch"] == _ranked_epochs(run, 1)[0]


@pytest.mark.slow
def test_average_weights_means_floats_and_keeps_integer_counters(tmp_path: Path, recipe: Path):
    run = tmp_path / "run"
    train(recipe, "dnn", run, epochs=1)
    base = checkpoint.load_state(run / rundir.BEST)
    paths = []
    for index, scale in enumerate((1.0, 3.0)):
        state = dict(base)
        state["model_state"] = {"w": torch.full((2, 2), scale), "steps": torch.tensor(7 + index)}
        paths.append(tmp_path / f"c{index}.pt")
        torch.save(state, paths[-1])
    averaged = checkpoint.average_weights(paths)
    assert torch.equal(averaged["w"], torch.full((2, 2), 2.0)) and averaged["w"].dtype == torch.float32
    assert averaged["steps"].item() == 7 and averaged["steps"].dtype == torch.int64
    mismatched = dict(base)
    mismatched["model_state"] = {"w": torch.zeros(3), "steps": torch.tensor(1)}
    torch.save(mismatched, tmp_path / "bad.pt")
    with pytest.raises(AsrbenchError, match="bad.pt: its weights do not match"):
        checkpoint.average_weights([paths[0], tmp_path / "bad.pt"])


def test_average_best_must_be_positive(recipe: Path, tmp_path: Path):
    with pytest.raises(AsrbenchError, match="train.average_best"):
        train(recipe, "dnn", tmp_path / "run", epochs=1, overrides=["train.average_best=0"])


@pytest.mark.slow
def test_decode_can_score_a_kept_epoch_instead_of_the_average(recipe: Path, tmp_path: Path, monkeypatch, capsys):
    import sys

    from asrbench import cli

    run = tmp_path / "run"
    summary = train(recipe, "dnn", run, epochs=3, seed=2, overrides=["train.average_best=2"])
    single = rundir.nbest_checkpoint(summary["averaged"]["epochs"][0])

    def main(*args: str) -> tuple[int, str]:
        monkeypatch.setattr(sys, "argv", ["asrbench", *args])
        try:
            cli.run_app()
            code = 0
        except SystemExit as exit_:
            code = exit_.code
        return code, capsys.readouterr().err

    assert main("decode", str(run), "--split", "dev", "--checkpoint", str(single), "--tag", "single")[0] == 0
    result = json.loads((run / "decode" / "dev-single" / "result.json").read_text())
    assert result["decoder"]["checkpoint"] == str(single)
    # The single best epoch's dev CER, as recorded when it was kept.
    assert result["cer"] == pytest.approx(checkpoint.load_state(run / single)["dev_cer"])
    code, err = main("decode", str(run), "--checkpoint", "checkpoints/nbest/epoch0099.pt")
    assert code == 2 and err.count("\n") == 1 and "epoch0099.pt: checkpoint not found" in err


@pytest.mark.slow
def test_a_resume_forgets_kept_epochs_whose_files_are_gone(recipe: Path, tmp_path: Path):
    """As after falling back to last.prev.pt, which may list an epoch deleted after it was written."""
    run = tmp_path / "run"
    first = train(recipe, "dnn", run, epochs=3, seed=2, overrides=["train.average_best=2"])
    gone = first["averaged"]["epochs"][1]
    (run / rundir.nbest_checkpoint(gone)).unlink()
    summary = train(None, None, run, resume=True, epochs=4)
    assert summary["epochs"] == 4 and len(summary["averaged"]["epochs"]) == 2
    assert gone not in summary["averaged"]["epochs"]
    assert all((run / rundir.nbest_checkpoint(epoch)).is_file() for epoch in summary["averaged"]["epochs"])


def test_a_named_data_dir_must_be_prepared_and_is_never_prepared_from_the_recipe(tmp_path: Path, monkeypatch):
    """Regression (issue 15.1): ``--data data/mykaldl`` (a typo) printed "preparing yesno from ..."
    and trained on the recipe's corpus. A data dir the user names must already be prepared."""
    import asrbench.data.pipeline as prepare_module

    def must_not_prepare(*args, **kwargs):
        raise AssertionError("a named --data dir was prepared from the recipe's corpus")

    monkeypatch.setattr(prepare_module, "prepare_corpus", must_not_prepare)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"data: {{dir: {tmp_path / 'own'}, corpus: yesno, source: yesno}}\nmodels:\n  dnn: {{}}\n")
    typo = tmp_path / "mykaldl"
    with pytest.raises(AsrbenchError, match=r"--data .*mykaldl: no such data dir"):
        train(recipe, "dnn", tmp_path / "run", data_dir=str(typo))
    assert not typo.exists() and not (tmp_path / "run").exists()
    typo.mkdir()
    (typo / "test.jsonl").write_text("")
    with pytest.raises(
        AsrbenchError,
        match=r"not a prepared data dir \(missing train.jsonl, dev.jsonl; it holds "
        r"test.jsonl",
    ):
        train(recipe, "dnn", tmp_path / "run", data_dir=str(typo))
    with pytest.raises(AsrbenchError, match=r"--set data.dir .*mykaldl: not a prepared data dir"):
        train(recipe, "dnn", tmp_path / "run", overrides=[f"data.dir={typo}"])
    assert not (tmp_path / "run").exists()


def test_the_recipes_own_data_dir_is_still_prepared_on_the_fly(tmp_path: Path, monkeypatch):
    import asrbench.data.pipeline as prepare_module

    calls = []
    monkeypatch.setattr(
        prepare_module, "prepare_corpus", lambda corpus, source, out, *a, **k: calls.append((corpus, Path(out)))
    )
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"data: {{dir: {tmp_path / 'own'}, corpus: yesno, source: yesno}}\nmodels:\n  dnn: {{}}\n")
    assert ensure_data_dir(resolve(recipe, "dnn")) == tmp_path / "own"
    assert calls == [("yesno", tmp_path / "own")]


@pytest.mark.slow
def test_tensorboard_events_mirror_the_metrics(recipe: Path, tmp_path: Path):
    """train.tensorboard (the CLI's --tensorboard) writes event files tensorboard's own reader
    reads: per-epoch dev figures equal to metrics.jsonl, and the step loss every N steps."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from typer.testing import CliRunner

    from asrbench.cli import app

    run = tmp_path / "run"
    outcome = CliRunner().invoke(
        app,
        [
            "train",
            str(recipe),
            "--model",
            "dnn",
            "--out",
            str(run),
            "--tensorboard",
            "--set",
            "train.tensorboard_every_steps=2",
        ],
    )
    assert outcome.exit_code == 0, outcome.output
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "lr", "dev/loss", "dev/cer", "dev/wer", "train/epoch_loss"} <= tags
    metrics = rundir.read_metrics(run)
    dev_cer = events.Scalars("dev/cer")
    assert [event.step for event in dev_cer] == [row["step"] for row in metrics]
    assert [event.value for event in dev_cer] == pytest.approx([row["dev_cer"] for row in metrics])
    assert [event.step for event in events.Scalars("train/loss")] == list(range(2, metrics[-1]["step"] + 1, 2))
    assert rundir.read_config(run).train.tensorboard is True
    plain = tmp_path / "plain"
    train(recipe, "dnn", plain, epochs=1)
    assert not (plain / "tensorboard").exists()  # off by default


@pytest.mark.slow
def test_the_training_bar_ends_at_its_total(recipe: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Issue 28.14: bucketed epochs differ in batch count; the bar neither stops short nor overshoots."""
    import asrbench.training.trainer as trainer

    bars = []

    def recording_bar(*columns, **kwargs):
        bars.append(trainer_progress(*columns, **kwargs))
        return bars[-1]

    trainer_progress = trainer.progress_bar
    monkeypatch.setattr(trainer, "progress_bar", recording_bar)
    from asrbench.data.batching import BucketBatchSampler

    real_batches = BucketBatchSampler.batches

    def uneven(self, group=1):  # bucketing noise changes an epoch's batch count; here every other epoch
        batches = real_batches(self, group)
        return batches[:-1] if self.epoch % 2 else batches

    monkeypatch.setattr(BucketBatchSampler, "batches", uneven)
    summary = train(recipe, "dnn", tmp_path / "run", epochs=5, seed=1)
    counts = {row["loop_steps"] for row in rundir.read_metrics(tmp_path / "run")}
    assert len(counts) > 1  # the case that matters: epochs of different lengths
    (task,) = bars[0].tasks
    assert task.completed == task.total == summary["steps"]


@pytest.mark.slow
def test_the_summary_records_the_audio_trained_on_for_the_throughput(recipe: Path, tmp_path: Path):
    summary = train(recipe, "dnn", tmp_path / "run", epochs=2)
    rows = rundir.read_metrics(tmp_path / "run")
    assert summary["audio_hours_trained"] == pytest.approx(sum(row["loop_audio_seconds"] for row in rows) / 3600)
    # every utterance twice, counted as frames x shift: a 0.4 s utterance's last 15 ms (window - shift) are not
    assert summary["audio_hours_trained"] == pytest.approx(2 * summary["train_hours"], rel=0.05)


@pytest.mark.slow
def test_the_loader_workers_are_stopped_when_train_returns(recipe: Path, tmp_path: Path):
    """Regression: left to the garbage collector, torch's loader shutdown waited 5 s for a worker that
    never saw its stop sentinel, at the end of every run (and of every test that trains)."""
    import multiprocessing

    train(recipe, "dnn", tmp_path / "run", epochs=1, seed=0, overrides=["train.data_workers=1"])
    assert multiprocessing.active_children() == []
