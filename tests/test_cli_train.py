"""``os2d train`` / ``os2d plot-log`` end to end, and the example configs in configs/."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _train_data import make_dataset, torch_threads

from os2d.apps.cli.main import main
from os2d.data.spec import FL27_TRAIN_BRANDS, FL27_VAL_BRANDS
from os2d.train.config import load_train_config
from os2d.train.run_log import read_log
from os2d.weights import load_model

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_example_configs_load_with_the_reference_recipe() -> None:
    names = sorted(p.stem for p in CONFIGS.glob("*.yaml"))
    assert names == ["fl27", "tiny", "v1", "v2"]
    v1, v2 = load_train_config(CONFIGS / "v1.yaml"), load_train_config(CONFIGS / "v2.yaml")
    for cfg in (v1, v2):  # reference sec. 3.1 / 3.7
        assert (cfg.optim.name, cfg.optim.lr, cfg.optim.momentum, cfg.optim.weight_decay, cfg.optim.max_grad_norm) \
            == ("sgd", 1e-4, 0.9, 1e-4, 100.0)
        assert (cfg.schedule.kind, cfg.schedule.milestones, cfg.schedule.gamma) == ("multistep", (100000, 150000), 0.1)
        assert (cfg.sampler.batch_size, cfg.sampler.class_batch_size, cfg.sampler.patch_size) == (4, 15, 600)
        assert cfg.max_iter == 200000 and cfg.eval_every == 1000 and cfg.seed == 0 and cfg.model.frozen_bn
        assert cfg.loss.remap and (cfg.loss.remap_pos_iou, cfg.loss.remap_neg_iou) == (0.8, 0.4)
    assert (v1.model.backbone, v1.model.variant, v1.loss.loc_weight, v1.mining.enabled) == ("resnet101", "v1", 0.2, False)
    assert not v1.model.frozen_bn_transform and v1.init.backbone_file == "resnet101-gl18-cirtorch"
    assert (v2.model.backbone, v2.model.variant, v2.loss.loc_weight, v2.mining.enabled) == ("resnet50", "v2", 0.0, True)
    assert v2.model.frozen_bn_transform and (v2.init.backbone_file, v2.init.transform) == \
        ("resnet50-caffe2", "weakalign-resnet101")
    assert v2.mining.every == 5000 and v2.mining.num_random_classes == 200
    fl27 = load_train_config(CONFIGS / "fl27.yaml")
    assert fl27.train_data is not None and fl27.val_data is not None
    assert fl27.train_data.class_names == FL27_TRAIN_BRANDS and fl27.val_data.class_names == FL27_VAL_BRANDS
    assert fl27.val_data.exclude_class_sources and fl27.drop_empty_train_images
    tiny = load_train_config(CONFIGS / "tiny.yaml")
    assert tiny.model.anchor_size == 16 * (tiny.model.class_grid_size - 1) + 16
    assert tiny.sampler.class_image_size == tiny.model.class_image_size


@pytest.fixture(scope="module")
def data_override(tmp_path_factory: pytest.TempPathFactory) -> str:
    spec = make_dataset(tmp_path_factory.mktemp("cli_data"), num_images=4, seed=7)
    return "train_data=" + json.dumps(spec)  # JSON is YAML


@pytest.mark.slow
def test_train_resume_and_plot(data_override: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    common = ["--config", str(CONFIGS / "tiny.yaml"), data_override, "val_data=null", "freeze.backbone=true",
              "checkpoint_every=1", "eval.at_start=false", "--quiet"]
    with torch_threads(1):
        assert main(["train", *common, "max_iter=2", "--output-dir", str(run)]) == 0
        assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step_00000001.pt", "step_00000002.pt"]
        # resume: config from the checkpoint, one override (train longer), output = the run directory
        assert main(["train", "--resume", str(run), "max_iter=3", "--quiet"]) == 0
    assert [r["step"] for r in read_log(run / "train_log.jsonl")] == [1, 2, 3]
    assert load_train_config(run / "config.yaml").max_iter == 3
    model = load_model(run / "final.pt")
    assert model.config.class_grid_size == 7
    capsys.readouterr()
    assert main(["plot-log", str(run / "train_log.jsonl"), "--output", str(tmp_path / "curves.png")]) == 0
    assert "curves.png" in capsys.readouterr().out
    assert (tmp_path / "curves.png").stat().st_size > 10_000


@pytest.mark.parametrize(("args", "message"), [
    (["train", "--config", str(CONFIGS / "tiny.yaml"), "sampler.batchsize=2"],
     "unknown config key 'sampler.batchsize'; did you mean 'sampler.batch_size'"),
    (["train", "--config", str(CONFIGS / "tiny.yaml"), "optim.lr"], "expected KEY=VALUE"),
    (["train", "sampler.batch_size=2"], "give --config"),
    (["train", "--config", "missing.yaml"], "config file not found: missing.yaml"),
    (["train", "--resume", "no/such/run"], "no such checkpoint file or run directory"),
    (["plot-log", "no/such/train_log.jsonl", "--output", "x.png"], "training log not found"),
])
def test_cli_errors_are_clear(args: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("os2d: error:") and message in err


@pytest.mark.shared_data
@pytest.mark.slow
def test_tiny_config_on_flickrlogos(shared_data: Path, tmp_path: Path) -> None:
    with torch_threads(1):
        assert main(["train", "--config", str(CONFIGS / "tiny.yaml"), "max_iter=1", "val_data=null", "--quiet",
                     "--output-dir", str(tmp_path / "run")]) == 0
    rec = [r for r in read_log(tmp_path / "run" / "train_log.jsonl") if r["kind"] == "train"]
    assert len(rec) == 1 and rec[0]["num_classes"] == 3
