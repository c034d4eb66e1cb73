"""DistributedDataParallel on CPU: two Gloo processes launched by torchrun train a few iterations; every rank
takes its own images, the weights stay identical across ranks, rank 0 alone writes logs and checkpoints.

Run as a script, this file is the per-rank worker: ``python -m torch.distributed.run ... test_train_ddp.py
CONFIG.json OUT_DIR``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

NUM_STEPS = 3


def worker(config_json: str, out_dir: str) -> None:
    """One rank: train, record the images of every batch it built, save its final weights."""
    from os2d.train.config import train_config_from_dict
    from os2d.train.trainer import Trainer

    torch.set_num_threads(1)
    cfg = train_config_from_dict(json.loads(Path(config_json).read_text()))
    trainer = Trainer(cfg, progress=False)
    seen: dict[int, list[str]] = {}
    build = trainer.batches.__class__.__getitem__

    def recording(self, step):  # type: ignore[no-untyped-def]
        batch = build(self, step)
        seen[int(step)] = list(batch.image_ids)
        return batch

    trainer.batches.__class__.__getitem__ = recording  # type: ignore[method-assign]
    try:
        summary = trainer.fit()
    finally:
        trainer.close()
    rank = int(os.environ["RANK"])
    torch.save({"state": trainer.model.state_dict(), "seen": seen, "steps": summary.steps,
                "world_size": trainer.ctx.world_size}, Path(out_dir) / f"rank{rank}.pt")


@pytest.mark.slow
def test_two_process_gloo_training(tmp_path: Path) -> None:
    from _train_data import make_dataset, tiny_config_dict

    spec = make_dataset(tmp_path / "data", num_images=8, seed=2)
    run = tmp_path / "run"
    cfg = tiny_config_dict(spec, run, max_iter=NUM_STEPS, checkpoint_every=NUM_STEPS,
                           sampler={"patch_size": 160, "batch_size": 1, "class_batch_size": 4,
                                    "class_image_size": 96, "scale_jitter": 0.85})
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(
        [str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1", "--nproc_per_node", "2",
           __file__, str(tmp_path / "cfg.json"), str(tmp_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]

    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert r0["world_size"] == r1["world_size"] == 2 and r0["steps"] == r1["steps"] == NUM_STEPS
    assert all(torch.equal(r0["state"][k], r1["state"][k]) for k in r0["state"]), "ranks diverged"
    assert sorted(r0["seen"]) == sorted(r1["seen"]) == list(range(1, NUM_STEPS + 1))
    for step in range(1, NUM_STEPS + 1):  # each rank trains on its own shard of the global batch
        assert set(r0["seen"][step]).isdisjoint(r1["seen"][step])
    # the weights moved, and what rank 0 wrote is what both ranks hold
    from os2d.train.config import train_config_from_dict
    from os2d.train.trainer import build_training_model
    from os2d.weights import load_model

    final = load_model(run / "final.pt").state_dict()
    assert all(torch.equal(final[k], r0["state"][k]) for k in final)
    init = build_training_model(train_config_from_dict(cfg)).state_dict()
    assert any(not torch.equal(init[k], final[k]) for k in final)
    log = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if r["kind"] == "train"] == list(range(1, NUM_STEPS + 1))  # rank 0 only
    ckpt = torch.load(run / "checkpoints" / f"step_{NUM_STEPS:08d}.pt", weights_only=True)
    assert ckpt["world_size"] == 2 and len(ckpt["rng"]) == 2
    assert ckpt["sampler"]["images_per_step"] == 2



def test_context_from_env_reads_torchrun_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    from os2d.train.distributed import DistContext, context_from_env

    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    ctx = context_from_env()
    assert ctx == DistContext(0, 1, 0) and ctx.is_main and not ctx.enabled
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    ctx = context_from_env()
    assert (ctx.rank, ctx.world_size, ctx.local_rank, ctx.is_main, ctx.enabled) == (3, 4, 1, False, True)
    monkeypatch.setenv("RANK", "4")
    with pytest.raises(ValueError, match="rank 4 of world size 4"):
        context_from_env()
    monkeypatch.setenv("RANK", "x")
    with pytest.raises(ValueError, match="must be integers"):
        context_from_env()


if __name__ == "__main__":
    worker(sys.argv[1], sys.argv[2])
