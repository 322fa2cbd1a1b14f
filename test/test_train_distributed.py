"""Two-process DistributedDataParallel training on the gloo backend (CPU), through torchrun."""
from __future__ import annotations

import json

import pytest

from pmt_perception.checkpoint import load_checkpoint
from pmt_perception.training.monitor import read_jsonl
from pmt_perception.training.sampling import ResumableSampler
from test_train_helpers import start_training, tiny_argv

TORCHRUN = ["-m", "torch.distributed.run", "--standalone", "--nnodes", "1", "--nproc-per-node", "2"]


@pytest.mark.slow
def test_two_gloo_processes_train_validate_checkpoint_and_resume(tmp_path):
    run = tmp_path / "ddp"
    # Global batch 4 = 2 per process; uncertainty weighting puts the loss's own parameters under
    # DDP too. (SyncBatchNorm is GPU-only in torch, so not here.)
    argv = tiny_argv(run, iterations=3, batch_size=4, eval_interval=3, checkpoint_interval=2,
                     loss_overrides="{uncertainty_weighting: true}")
    process = start_training(argv, launcher=TORCHRUN, log=tmp_path / "torchrun.log")
    assert process.wait(timeout=600) == 0, (tmp_path / "torchrun.log").read_text()[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == 3
    validation = read_jsonl(run / "val_log.jsonl")[-1]
    assert validation["num_samples"] == 2   # one validation sample on each process, all-reduced
    checkpoint = load_checkpoint(run / "last.pt")
    assert len(checkpoint["rng"]) == 2      # every rank's RNG state
    # 8 scenes over 2 ranks at 2 per rank: 2 steps per epoch, so step 3 is epoch 1's first.
    assert (checkpoint["progress"]["epoch"], checkpoint["progress"]["position"]) == (1, 2)
    log_variances = [v for k, v in checkpoint["loss_state"].items() if "log_variances" in k]
    assert log_variances and any(float(v) != 0.0 for v in log_variances)  # they were trained

    process = start_training(argv[:argv.index("--iterations") + 1] + ["5"]
                             + argv[argv.index("--iterations") + 2:] + ["--resume", "auto"],
                             launcher=TORCHRUN, log=tmp_path / "resume.log")
    assert process.wait(timeout=600) == 0, (tmp_path / "resume.log").read_text()[-3000:]
    assert load_checkpoint(run / "last.pt")["progress"]["step"] == 5


def test_sampler_deals_disjoint_shares_and_resumes_mid_epoch():
    ranks = [ResumableSampler(10, seed=3, rank=r, world_size=2) for r in range(2)]
    shares = [[index for index, _seed in sampler] for sampler in ranks]
    assert len(shares[0]) == len(shares[1]) == 5
    assert sorted(shares[0] + shares[1]) == list(range(10))
    full = list(ranks[0])
    ranks[0].set_epoch(0, start=2)
    assert list(ranks[0]) == full[2:]            # same indices AND same per-sample seeds
    ranks[0].set_epoch(1)
    assert [i for i, _ in ranks[0]] != shares[0]   # a new epoch reshuffles
