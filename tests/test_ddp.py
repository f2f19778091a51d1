"""DDP on CPU (gloo): two ranks launched by torchrun train one short epoch per stage and end with identical weights."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from diffoseg_auto.training.ddp import per_rank_batch_size
from support.toy_training import DATASET

SCRIPT = """
import os, sys, torch
from diffoseg_auto.training.run_training import run_training
from diffoseg_auto.training.training_request import ScheduleOverrides, TrainingRequest
out = sys.argv[1]
tr = run_training(TrainingRequest("{dataset}", "2d", 0, schedule=ScheduleOverrides(num_epochs=1, iterations_per_epoch=2,
                  val_iterations=1), device="cpu", num_workers=0, final_validation=False))[-1]
torch.save({{"rank": tr.rank, "stage": tr.stage, "world": tr.world_size, "batch": tr.batch_size, "weights": tr.network.state_dict(),
            "ema": tr.ema.state_dict(), "patch": tr.dl_tr.generate_train_batch()["data"]}},
           os.path.join(out, f"rank{{tr.rank}}.pt"))
"""


def test_per_rank_batch_size():
    assert per_rank_batch_size(8, 2) == 4 and per_rank_batch_size(2, 4) == 1 and per_rank_batch_size(3, 1) == 3


@pytest.mark.slow
def test_two_ranks_end_with_identical_weights(toy, tmp_path: Path):  # noqa: F811
    script = tmp_path / "ddp_run.py"
    script.write_text(textwrap.dedent(SCRIPT.format(dataset=DATASET)))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(script), str(tmp_path)], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1))
    assert (r0["rank"], r1["rank"], r0["world"], r0["batch"]) == (0, 1, 2, 1)  # batch 2 split over 2 ranks
    for name, v in r0["weights"].items():
        assert torch.equal(v, r1["weights"][name]), name
    for name, v in r0["ema"].items():
        assert torch.equal(v, r1["ema"][name]), name
    assert not (r0["patch"] == r1["patch"]).all()  # each rank draws its own data
    k = next(n for n, v in r0["weights"].items() if v.dtype.is_floating_point and v.ndim > 1)
    assert torch.equal(r0["weights"][k], r0["ema"][k])  # 2 iterations: the EMA horizon rule gives decay 0 on every rank
    assert r0["stage"] == 2 and "prompt" in " ".join(r0["weights"])  # the Stage II network
    fold_final = torch.load(next((toy["results"] / DATASET).rglob("fold_0/checkpoint_final.pth")), weights_only=False)
    assert fold_final["init_args"]["stage"] == 2 and fold_final["epoch"] == 1
    for name, v in fold_final["network_weights"].items():  # rank 0 saved what both ranks hold
        assert torch.equal(v, r1["ema"][name]), name
    logs = list((toy["results"] / DATASET).rglob("training_log_*.txt"))
    assert len(logs) == 2  # one per stage; rank 1 wrote none


@pytest.mark.slow
def test_cli_num_gpus_relaunches_with_torchrun(toy, monkeypatch):  # noqa: F811
    import pytest

    from diffoseg_auto.training.run_training import main

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    with pytest.raises(SystemExit) as e:
        main([DATASET, "2d", "1", "--stage", "1", "-device", "cpu", "-num_gpus", "2", "--num_epochs", "1",
              "--iterations_per_epoch", "1", "--val_iterations", "1", "--num_workers", "0"])
    assert e.value.code == 0
    sf = toy["results"] / DATASET / "DiffOSegTrainer__DiffOSegPlans__2d" / "fold_1" / "stage1"
    assert torch.load(sf / "checkpoint_final.pth", weights_only=False)["epoch"] == 1
    assert (sf / "validation" / "summary.json").is_file()  # validation ran on rank 0
