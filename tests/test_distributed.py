"""Many processes: `torchrun -m kit train` with two CPU processes (gloo) trains once, writes once, agrees.

Run as a script (by torchrun, from the test), this file is `kit` itself plus two reports per rank: its
validation metric every epoch, and every file it writes.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from contextlib import contextmanager

import numpy as np
import pytest
import torch
from conftest import TINY
from torch.utils.data import RandomSampler

from kit.distributed import ShardSampler

# A head on precomputed features (one rank computes them), then the whole model: DDP wraps each stage's
# trainable layers anew.
RECIPE = "stages=[{name='head', freeze_to=-1, precompute=true, augment=false, lr=1e-2}, {name='all'}]"


@pytest.mark.slow
def test_two_processes_train_write_once_and_report_the_same_metric(digits, project):
    digits()  # downloads the data into the temporary project
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        __file__,
        "train",
        "digits",
    ]
    for value in [*TINY, RECIPE]:
        command += ["--set", value]
    reports_dir = project.parent / "rank-reports"  # one file per rank: their prints would interleave
    reports_dir.mkdir()
    environment = {
        **os.environ,
        "KIT_PROJECT_ROOT": str(project),
        "OMP_NUM_THREADS": "1",
        "RANK_REPORTS": str(reports_dir),
    }
    finished = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=300)
    output = finished.stdout + finished.stderr
    assert finished.returncode == 0, output
    rank_output = {rank: (reports_dir / f"rank-{rank}.txt").read_text() for rank in (0, 1)}

    # Files once: one run folder, every write by rank 0 (and rank 0 did write).
    (run_dir,) = (project / "runs" / "digits").iterdir()
    assert re.search(r"rank 0 writes .*metrics\.json", rank_output[0]) and "writes" not in rank_output[1]
    assert output.count("CV accuracy") == 1

    # The same validation loss and metric on both ranks, bit for bit, and as rank 0 recorded them.
    reports = {rank: re.findall(rf"rank {rank} validation (\S+) (\S+)", rank_output[rank]) for rank in (0, 1)}
    assert len(reports[0]) == 2 and reports[0] == reports[1]
    history = json.loads((run_dir / "metrics.json").read_text())["folds"]["0"]["history"]
    assert [(repr(r["valid_loss"]), repr(r["accuracy"])) for r in history] == reports[0]

    # Each rank stepped through half the training rows: the epoch had half the single-process steps.
    oof = np.load(run_dir / "oof.npy")
    training_rows = len(oof) - int((~np.isnan(oof[:, 0])).sum())
    assert history[-1]["step"] == math.ceil(math.ceil(training_rows / 2) / 64)
    assert (run_dir / "fold-0" / "last.pt").exists() and not (run_dir / "fold-0" / "resume.pt").exists()


def test_shards_split_one_shuffled_order_evenly():
    def shard(count, seed, rank, world):
        sampler = ShardSampler(count, torch.Generator().manual_seed(seed))
        sampler.rank, sampler.world_size = rank, world
        return list(sampler)

    shards = [shard(10, 7, rank, 3) for rank in range(3)]
    assert [len(s) for s in shards] == [4, 4, 4]  # padded: every rank runs the same number of steps
    dealt = [shards[index % 3][index // 3] for index in range(12)]  # the padded order, as it was dealt
    assert sorted(dealt[:10]) == list(range(10)) and dealt[10:] == dealt[:2]
    assert shard(10, 7, 0, 3) == shards[0] and shard(10, 8, 0, 3) != shards[0]  # a function of the seed
    # One process: the order RandomSampler draws from the same generator state.
    assert shard(10, 7, 0, 1) == list(RandomSampler(range(10), generator=torch.Generator().manual_seed(7)))


def report_each_rank() -> None:
    """`kit`, as torchrun starts it, with each rank printing its validation metric and each file it writes."""
    from kit import cli, files
    from kit.train import loop

    rank = os.environ["RANK"]
    evaluate, atomic_path = loop.evaluate, files.atomic_path
    report_file = open(os.path.join(os.environ["RANK_REPORTS"], f"rank-{rank}.txt"), "a")  # noqa: SIM115

    def print(text, flush):  # noqa: A001 - this rank's own file
        report_file.write(text + "\n")
        report_file.flush()

    def reporting_evaluate(*arguments, **options):
        loss, score, probabilities = evaluate(*arguments, **options)
        print(f"rank {rank} validation {loss!r} {score!r}", flush=True)
        return loss, score, probabilities

    @contextmanager
    def reporting_path(target):
        print(f"rank {rank} writes {target}", flush=True)
        with atomic_path(target) as temporary:
            yield temporary

    loop.evaluate = reporting_evaluate
    import kit.commands  # noqa: F401 - loaded, so that every module that writes files is in sys.modules
    from kit.data import images  # noqa: F401
    from kit.train import features  # noqa: F401

    for name, module in list(sys.modules.items()):  # every module that bound atomic_path by name
        if name.startswith("kit") and getattr(module, "atomic_path", None) is files.atomic_path:
            module.atomic_path = reporting_path
    cli.main()


if __name__ == "__main__":
    report_each_rank()
