"""``transform_grad: positives``: TransformNet's autograd only where the loss reaches it gives the dense gradient.

:meth:`TransformNet.forward_at` must equal the dense forward at any location (map borders included, where the
dense layers zero-pad), values and gradients; a training step in that mode must give the dense step's loss and
gradients for every loss the objective supports.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from _train_data import make_dataset, tiny_config_dict, torch_threads
from torch import nn

from os2d.model.transform_net import TransformNet
from os2d.train.config import ConfigError, train_config_from_dict
from os2d.train.trainer import Trainer, _float_output


def _random_transform_net(seed: int = 0) -> TransformNet:
    torch.manual_seed(seed)
    net = TransformNet(6, frozen_bn=True)
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, std=0.05)
            nn.init.normal_(m.bias, std=0.1)
        if isinstance(m, nn.BatchNorm2d):  # statistics that matter, so a wrong mask or halo shows
            m.running_mean.normal_(0.0, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            nn.init.normal_(m.weight, 1.0, 0.2)
            nn.init.normal_(m.bias, 0.0, 0.2)
    return net.train()  # frozen_bn keeps BatchNorm in eval mode


def test_forward_at_equals_the_dense_forward_in_values_and_gradients() -> None:
    net = _random_transform_net()
    corr = torch.randn(3, 225, 13, 17, dtype=torch.float64)
    net = net.double()
    # corners, edges, the interior, a cluster and a lone cell per pair
    where = torch.tensor([[0, 0, 0], [0, 12, 16], [0, 6, 8], [1, 5, 5], [1, 6, 5], [1, 6, 6], [1, 0, 11],
                          [2, 12, 0], [2, 3, 15]])
    dense_in = corr.clone().requires_grad_(True)
    dense = net(dense_in)[where[:, 0], :, where[:, 1], where[:, 2]]  # (P, 6)
    sparse_in = corr.clone().requires_grad_(True)
    sparse = net.forward_at(sparse_in, where)
    torch.testing.assert_close(sparse, dense, rtol=1e-10, atol=1e-10)

    upstream = torch.randn_like(dense)
    dense_grads = torch.autograd.grad((dense * upstream).sum(), [dense_in, *net.parameters()])
    sparse_grads = torch.autograd.grad((sparse * upstream).sum(), [sparse_in, *net.parameters()])
    for d, s in zip(dense_grads, sparse_grads, strict=True):
        torch.testing.assert_close(s, d, rtol=1e-9, atol=1e-10)


def test_forward_at_refuses_batch_statistics() -> None:
    net = TransformNet(6, frozen_bn=False).train()
    with pytest.raises(RuntimeError, match="BatchNorm in eval mode"):
        net.forward_at(torch.randn(1, 225, 8, 8), torch.tensor([[0, 3, 3]]))


@pytest.fixture(scope="module")
def dataset_spec(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    return make_dataset(tmp_path_factory.mktemp("sparse_data"), num_images=4)


@pytest.mark.parametrize("loss", [
    {},  # V2: ranked list loss, no localisation term
    {"kind": "contrastive", "loc_weight": 0.2},  # V1-like: localisation positives need the transform too
    {"train_transform_on_negs": True},  # negatives with the transform attached: nearly every location
])
def test_positives_mode_gives_the_dense_gradient(dataset_spec: dict[str, object], tmp_path: Path,
                                                 loss: dict[str, object]) -> None:
    cfg = train_config_from_dict(tiny_config_dict(dataset_spec, tmp_path / "run", max_iter=1, checkpoint_every=0,
                                                  loss={"remap": False, **loss}, transform_grad="positives",
                                                  freeze={"backbone": True, "backbone_train_last": 2}))
    with torch_threads(1):
        trainer = Trainer(cfg, progress=False)
        trainer.net.train()
        positives_seen = 0
        for step in (1, 2, 3):
            batch = trainer.batches[step]
            results = {}
            for mode in ("dense", "positives"):
                trainer.config = dataclasses.replace(cfg, transform_grad=mode)
                trainer.optimizer.zero_grad(set_to_none=False)
                out = trainer.net(batch.images, batch.class_images, trainer._transform_grad_at(batch))
                terms = trainer.objective(_float_output(out), batch)
                terms["loss"].backward()
                results[mode] = (terms, [p.grad.clone() for p in trainer.params])
            (dense_terms, dense_grads), (sparse_terms, sparse_grads) = results["dense"], results["positives"]
            positives_seen += int(dense_terms["num_pos"])
            for key in ("loss", "num_pos", "num_neg", "num_neg_active"):
                torch.testing.assert_close(sparse_terms[key], dense_terms[key], rtol=1e-5, atol=1e-7)
            scale = max(float(torch.cat([g.flatten() for g in dense_grads]).abs().max()), 1e-12)
            for d, s in zip(dense_grads, sparse_grads, strict=True):
                torch.testing.assert_close(s, d, rtol=1e-4, atol=1e-5 * scale)
    assert positives_seen > 0  # the transform's gradient was exercised


def test_positives_mode_trains_auto_picks_it_and_it_needs_frozen_transform_bn(dataset_spec: dict[str, object], tmp_path: Path) -> None:
    base = tiny_config_dict(dataset_spec, tmp_path / "run", max_iter=2, checkpoint_every=0,
                            transform_grad="positives", freeze={"backbone": True})
    with pytest.raises((ConfigError, ValueError), match="frozen_bn_transform"):
        train_config_from_dict({**base, "model": {**base["model"], "frozen_bn_transform": False}})
    with pytest.raises((ConfigError, ValueError), match="transform_grad must be one of"):
        train_config_from_dict({**base, "transform_grad": "sparse"})
    auto = {**base, "transform_grad": "auto"}
    assert train_config_from_dict(auto).resolved_transform_grad() == "positives"  # V2: frozen TransformNet BN
    assert train_config_from_dict({**auto, "model": {**base["model"], "frozen_bn_transform": False}}
                                  ).resolved_transform_grad() == "dense"  # V1: batch statistics
    assert train_config_from_dict({**auto, "loss": {"train_transform_on_negs": True}}
                                  ).resolved_transform_grad() == "dense"  # every location needs it
    cfg = train_config_from_dict(base)
    with torch_threads(1):
        trainer = Trainer(cfg, progress=False)
        before = [p.detach().clone() for p in trainer.model.transform_net.parameters()]
        summary = trainer.fit()
    assert summary.steps == 2 and summary.skipped_steps == 0
    after = list(trainer.model.transform_net.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(after, before, strict=True))
