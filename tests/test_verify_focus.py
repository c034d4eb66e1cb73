"""The second look's focus (os2d.inference.verify.focus_weights): cells shared with look-alike classes weigh less."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from os2d.inference.verify import focus_weights


def _grids(seed: int, views: int, cells: int = 9, channels: int = 6) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(views, cells, channels, generator=g), dim=-1)


def test_shared_cells_weigh_less_and_the_weights_have_mean_one():
    k = _grids(0, 2)
    k[1, :6] = k[0, :6]  # two look-alikes: the first 6 cells equal, the last 3 differ
    w = focus_weights(k, torch.tensor([0, 1]), 1.0)
    assert w.shape == (2, 9)
    torch.testing.assert_close(w.mean(dim=1), torch.ones(2))
    assert torch.all(w[:, :6] < 1e-5) and torch.all(w[:, 6:] > 1.0)  # the differing cells carry the agreement
    sharper = focus_weights(k, torch.tensor([0, 1]), 2.0)
    torch.testing.assert_close(sharper.mean(dim=1), torch.ones(2))


def test_uniform_weights_when_off_alone_or_duplicated():
    k = _grids(1, 3)
    assert torch.equal(focus_weights(k, torch.tensor([0, 1, 2]), 0.0), torch.ones(3, 9))  # power 0: off
    assert torch.equal(focus_weights(k[:1], torch.tensor([0]), 2.0), torch.ones(1, 9))  # one class
    # two views of one class and nothing else: no other class to differ from
    assert torch.equal(focus_weights(k[:2], torch.tensor([4, 4]), 1.0), torch.ones(2, 9))
    dup = torch.cat([k[:1], k[:1]])  # an exact duplicate class: every weight ~0 -> the plain mean
    assert torch.equal(focus_weights(dup, torch.tensor([0, 1]), 1.0), torch.ones(2, 9))


def test_views_of_the_same_class_do_not_count_as_look_alikes():
    k = _grids(2, 3)
    k[1] = k[0]  # a second view of class 0 (same cells); class 1 differs everywhere
    w = focus_weights(k, torch.tensor([0, 0, 1]), 1.0)
    torch.testing.assert_close(w[0], w[1])
    assert torch.all(w > 0)  # nothing is shared with class 1 exactly, so no cell is dropped
