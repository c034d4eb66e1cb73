"""Exact resume: 2N iterations in one go == N iterations + resume for N more (loss terms and weights bitwise),
with momentum, a warm-up + step schedule and hard patch mining whose pool lives in the checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from _train_data import make_dataset, tiny_config_dict, torch_threads

from os2d.train import checkpoint as ckpt_io
from os2d.train.config import train_config_from_dict
from os2d.train.run_log import read_log
from os2d.train.trainer import train
from os2d.weights import WeightsError, load_model


@pytest.fixture(scope="module")
def dataset_spec(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    return make_dataset(tmp_path_factory.mktemp("resume_data"), num_images=4, seed=5)


def _config(spec: dict[str, object], out: Path, max_iter: int):
    return train_config_from_dict(tiny_config_dict(
        spec, out, max_iter=max_iter, checkpoint_every=2, keep_checkpoints=0,
        optim={"name": "sgd", "lr": 0.01, "momentum": 0.9},
        schedule={"kind": "multistep", "milestones": [3], "gamma": 0.5, "warmup_iters": 2, "warmup_factor": 0.5},
        mining={"enabled": True, "every": 3, "num_random_classes": 2, "num_hard": 2, "scales": [0.9, 1.1]},
        sampler={"patch_size": 160, "batch_size": 2, "class_batch_size": 4, "class_image_size": 96,
                 "random_interpolation": True, "scale_jitter": 0.85}))


def _train_terms(run: Path) -> list[dict[str, float]]:
    drop = {"time", "patches_per_s", "data_s", "step_s"}  # wall-clock measurements
    return [{k: v for k, v in r.items() if k not in drop} for r in read_log(run / "train_log.jsonl")
            if r["kind"] == "train"]


@pytest.mark.slow
def test_resume_continues_exactly(dataset_spec: dict[str, object], tmp_path: Path) -> None:
    with torch_threads(1):
        full = train(_config(dataset_spec, tmp_path / "full", 4), progress=False)
        half = train(_config(dataset_spec, tmp_path / "half", 2), progress=False)
        # resume from the run directory (its newest checkpoint) and train on to 4 iterations
        resumed = train(_config(dataset_spec, tmp_path / "half", 4), resume=tmp_path / "half", progress=False)

    assert (full.steps, half.steps, resumed.start_step, resumed.steps) == (4, 2, 2, 4)
    a, b = _train_terms(tmp_path / "full"), _train_terms(tmp_path / "half")
    assert [r["step"] for r in b] == [1, 2, 3, 4]
    assert [r["lr"] for r in a] == pytest.approx([0.005, 0.0075, 0.01, 0.005])  # warm-up; x0.5 after 3 updates
    assert a == b, "loss terms of the resumed run differ"
    sa, sb = load_model(full.final_model).state_dict(), load_model(resumed.final_model).state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(not torch.equal(sa[k], load_model(tmp_path / "full" / "checkpoints" / "step_00000002.pt")
                               .state_dict()[k]) for k in sa)  # the weights did move in iterations 3-4

    state = ckpt_io.load_training_checkpoint(ckpt_io.checkpoint_path(tmp_path / "full", 4))
    assert state["step"] == 4 and state["sampler"] == {"step": 4, "epoch": 2, "cursor": 0, "images_per_step": 2}
    assert state["mined"] and {"image_index", "crop_xyxy", "kind", "class_id"} <= set(state["mined"][0])
    assert state["train_config"]["max_iter"] == 4 and len(state["rng"]) == 1
    assert state["optimizer"]["state"], "momentum buffers are saved"


def test_resume_truncates_log_and_refuses_to_overwrite(dataset_spec: dict[str, object], tmp_path: Path) -> None:
    run = tmp_path / "run"
    cfg = train_config_from_dict(tiny_config_dict(dataset_spec, run, max_iter=2, checkpoint_every=1,
                                                  keep_checkpoints=1, freeze={"backbone": True}))
    with torch_threads(1):
        train(cfg, progress=False)
        assert [s for s, _ in ckpt_io.list_checkpoints(run)] == [2]  # keep_checkpoints=1 pruned step 1
        assert ckpt_io.resolve_resume(run) == ckpt_io.resolve_resume(run / "checkpoints") == \
            ckpt_io.checkpoint_path(run, 2)
        # records written after the last checkpoint (a crash) are dropped when the run resumes
        with (run / "train_log.jsonl").open("a") as f:
            f.write(json.dumps({"kind": "train", "step": 3, "loss": 9.0}) + "\n")
        with pytest.raises(ValueError, match="already holds checkpoints"):
            train(cfg, progress=False)
        train(cfg.replace(max_iter=3), resume=run, progress=False)
    steps = [r["step"] for r in read_log(run / "train_log.jsonl") if r["kind"] == "train"]
    assert steps == [1, 2, 3]
    assert all(r.get("loss") != 9.0 for r in read_log(run / "train_log.jsonl"))
    with pytest.raises(WeightsError, match="without training state"):
        ckpt_io.load_training_checkpoint(run / "final.pt")
    with pytest.raises(FileNotFoundError, match="no checkpoints"):
        ckpt_io.resolve_resume(tmp_path)
    # a training checkpoint is also a model file
    assert load_model(ckpt_io.checkpoint_path(run, 3)).config == cfg.model


def test_dataloader_workers_give_the_same_batches(dataset_spec: dict[str, object], tmp_path: Path) -> None:
    """Batches are a function of (seed, rank, step): worker processes change nothing."""
    runs = []
    with torch_threads(1):
        for workers in (0, 2):
            cfg = train_config_from_dict(tiny_config_dict(dataset_spec, tmp_path / f"w{workers}", max_iter=3,
                                                          checkpoint_every=0, num_workers=workers,
                                                          freeze={"backbone": True}))
            train(cfg, progress=False)
            runs.append(_train_terms(tmp_path / f"w{workers}"))
    assert len(runs[0]) == 3 and runs[0] == runs[1]
