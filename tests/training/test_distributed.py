"""Data-parallel training: torchrun with 2 Gloo ranks on CPU against 1 process with the same
global batch, resume on another number of ranks, the distributed batch split, concurrent caches."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading

import pytest
import torch
from helpers import TINY, make, write_tone_corpus

from asrbench.data import features as features_module
from asrbench.data.batching import BucketBatchSampler, EpochKeys
from asrbench.data.manifest import Utterance, write_manifest
from asrbench.errors import AsrbenchError
from asrbench.models import MODELS
from asrbench.recipe.config import FeatureConfig
from asrbench.runs import checkpoint, rundir
from asrbench.training import distributed

# --- the batch split -------------------------------------------------------------------------


def test_group_one_is_the_single_process_batch_list():
    lengths = [((i * 37) % 200) + 20 for i in range(300)]
    sampler = BucketBatchSampler(lengths, 1200, 64, True, seed=3)
    for epoch in range(3):
        sampler.set_epoch(epoch)
        assert sampler.batches(1) == sampler.batches() == list(sampler)


@pytest.mark.parametrize("group", [2, 3, 4])
def test_groups_hold_neighbouring_lengths_and_leave_out_different_batches(group):
    lengths = [((i * 37) % 200) + 20 for i in range(300)]
    sampler = BucketBatchSampler(lengths, 1200, 64, True, seed=3)
    every = sampler.batches()
    left_out_by_epoch = []
    for epoch in range(4):
        sampler.set_epoch(epoch)
        batches = sampler.batches(group)
        assert len(batches) % group == 0
        assert len(batches) == len(sampler.batches()) // group * group
        used = [i for batch in batches for i in batch]
        assert len(used) == len(set(used))  # no utterance twice
        # The batches of one step (one per rank) have similar lengths: within a group, the
        # longest utterances differ far less than across the epoch.
        longest = [max(lengths[i] for i in batch) for batch in batches]
        spread = max(max(longest[s : s + group]) - min(longest[s : s + group]) for s in range(0, len(batches), group))
        assert spread < (max(longest) - min(longest)) / 3
        left_out_by_epoch.append(frozenset(range(len(lengths))) - frozenset(used))
    assert len(every) % group == 0 or len(set(left_out_by_epoch)) > 1


def test_each_rank_takes_every_world_th_batch_of_the_group():
    keys = EpochKeys()
    shares = []
    for rank in range(2):
        keys.set(5, 4 + rank, 12, group=2, stride=2)
        shares.append([index for _, _, index in keys])
        assert all(epoch == 5 and group == 2 for epoch, group, _ in keys)
    assert shares == [[4, 6, 8, 10], [5, 7, 9, 11]]
    assert len(keys) == 4


def test_every_parameter_of_every_model_takes_part_in_its_loss():
    # DDP all-reduces each parameter's gradient; one left out of the loss would hang the ranks.
    for name in sorted(MODELS):
        model = make(name)
        model.train()
        features, lengths = torch.randn(3, 60, 20), torch.tensor([60, 50, 41])
        targets, target_lengths = torch.randint(1, 7, (9,)), torch.tensor([4, 3, 2])  # concatenated
        model.compute_loss(features, lengths, targets, target_lengths).backward()
        missing = [key for key, p in model.named_parameters() if p.requires_grad and p.grad is None]
        assert not missing, f"{name} ({TINY.get(name)}): {missing}"


# --- torchrun's environment ------------------------------------------------------------------


def test_context_outside_torchrun_is_one_process(monkeypatch):
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert distributed.context_from_environment() == distributed.Context(1, 0, 0)
    context, device = distributed.setup("cpu")
    assert not context.distributed and context.main and device == "cpu"
    assert context.any(True, False) == [True, False] and context.sum(2.0, 3.0) == [2.0, 3.0]
    assert context.broadcast({"a": 1}) == {"a": 1} and context.gather(7) == [7]


def test_context_reads_torchrun_variables_and_rejects_bad_ones(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert distributed.context_from_environment() == distributed.Context(4, 3, 1)
    monkeypatch.setenv("RANK", "4")
    with pytest.raises(AsrbenchError, match="outside the world"):
        distributed.context_from_environment()
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(AsrbenchError, match=r"\$WORLD_SIZE: expected an integer"):
        distributed.context_from_environment()


# --- caches built once when several processes start at once ----------------------------------


def test_concurrent_loaders_extract_the_features_once(tmp_path, write_audio, monkeypatch):
    utterances = [
        Utterance(f"u{i}", str(write_audio(tmp_path / f"u{i}.wav", 0.4, rate=8000, frequency=400 + i)), 0.4, "yes")
        for i in range(3)
    ]
    write_manifest(tmp_path / "data" / "train.jsonl", utterances)
    calls, real_build = [], features_module.build_store

    def slow_build(*args, **kwargs):
        calls.append(1)
        threading.Event().wait(0.3)  # long enough for the other loader to arrive and wait
        return real_build(*args, **kwargs)

    monkeypatch.setattr(features_module, "build_store", slow_build)
    config = FeatureConfig(sample_rate=8000, num_mel_bins=23)
    results = [None, None]

    def load(slot):
        results[slot] = features_module.load_features(tmp_path / "data", "train", config)

    threads = [threading.Thread(target=load, args=(slot,)) for slot in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1
    assert torch.equal(results[0].frames(), results[1].frames())


# --- torchrun, 2 Gloo ranks against 1 process ------------------------------------------------

RECIPE = """
data: {{dir: {data_dir}}}
features: {{sample_rate: 8000, num_mel_bins: 23}}
augment: {{time_mask_width: 5, freq_mask_width: 4}}
train: {{epochs: 6, batch_frames: 200, lr: 3.0e-3, warmup_steps: 2, data_workers: 0, patience: 0}}
models:
  gru: {{subsample_channels: 4, hidden_size: 16, num_layers: 1, dropout: 0.0}}
"""


def _asrbench(*args: str, ranks: int = 1, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "ASRBENCH_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1"}
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}"]
    command = (launcher if ranks > 1 else [sys.executable]) + ["-m", "asrbench", *args]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    if check and result.returncode != 0:
        raise AssertionError(f"{command} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


@pytest.fixture(scope="module")
def two_rank_runs(tmp_path_factory):
    """One gru trained by 2 Gloo ranks (1 batch each per step) and by 1 process accumulating 2."""
    root = tmp_path_factory.mktemp("ddp")
    data_dir = write_tone_corpus(root)
    recipe = root / "recipe.yaml"
    recipe.write_text(RECIPE.format(data_dir=data_dir))
    two, one = root / "two_ranks", root / "one_rank"
    _asrbench("train", str(recipe), "--model", "gru", "--out", str(two), ranks=2)
    _asrbench("train", str(recipe), "--model", "gru", "--out", str(one), "--set", "train.grad_accum=2")
    return recipe, two, one


@pytest.mark.slow
def test_two_gloo_ranks_follow_the_single_process_loss_trajectory(two_rank_runs):
    # Tolerance: the ranks average their gradients by all-reduce, the single process by
    # accumulation; the sums differ in rounding only (float32, ~1e-7), which 3 epochs of AdamW
    # keep far below 1e-4 relative.
    _, two, one = two_rank_runs
    ranked, single = rundir.read_metrics(two), rundir.read_metrics(one)
    assert [row["epoch"] for row in ranked] == [row["epoch"] for row in single] == [1, 2, 3, 4, 5, 6]
    assert {row["world_size"] for row in ranked} == {2} and {row["world_size"] for row in single} == {1}
    for a, b in zip(ranked, single, strict=True):
        assert a["step"] == b["step"]
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)
        assert a["dev_loss"] == pytest.approx(b["dev_loss"], rel=1e-4)
        assert a["lr"] == pytest.approx(b["lr"], rel=1e-9)
    first, last = ranked[0]["train_loss"], ranked[-1]["train_loss"]
    assert last < first  # it learned something: the comparison is not between two untrained models
    weights_two = checkpoint.load_state(two / rundir.LAST)["model_state"]
    weights_one = checkpoint.load_state(one / rundir.LAST)["model_state"]
    for key, value in weights_two.items():
        assert torch.allclose(value, weights_one[key], rtol=1e-4, atol=1e-5), key
    # Rank 0 alone wrote the run dir: one metrics row per epoch, one summary, every rank's RNG.
    state = checkpoint.load_state(two / rundir.LAST)
    assert state["world_size"] == 2 and len(state["rank_rng"]) == 2
    assert json.loads((two / rundir.SUMMARY).read_text())["world_size"] == 2


@pytest.mark.slow
def test_a_two_rank_checkpoint_resumes_on_one_rank(two_rank_runs, tmp_path):
    recipe, two, _ = two_rank_runs
    run = tmp_path / "resumed"
    shutil.copytree(two, run)
    before = checkpoint.load_state(run / rundir.LAST)
    result = _asrbench("train", "--out", str(run), "--resume", "--epochs", "8")
    assert "written by 2 rank(s), this run has 1" in result.stderr
    rows = rundir.read_metrics(run)
    assert [row["epoch"] for row in rows] == list(range(1, 9))
    assert [row["world_size"] for row in rows] == [2] * 6 + [1] * 2
    # One rank now takes a step per batch where two ranks took one per pair of batches.
    steps_per_epoch_two = rows[0]["step"]
    assert rows[6]["step"] - rows[5]["step"] > steps_per_epoch_two
    assert rows[5]["step"] == before["step"]
    assert rows[6]["train_loss"] < rows[0]["train_loss"]  # went on from the trained weights, not from scratch
    assert (run / rundir.BEST).is_file() and json.loads((run / rundir.SUMMARY).read_text())["world_size"] == 1
