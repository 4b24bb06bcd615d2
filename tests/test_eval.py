"""Offline image evaluation: the local classifier learns the digits, its Fréchet distance separates
real from noise and is zero for identical sets, it is cached, and grids are written."""

from __future__ import annotations

import pytest
import torch

from src.data.images import DigitsData
from src.eval.images import FeatureNet, class_accuracy, classifier, frechet_distance, save_grid


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def digits_and_net(cache):
    data = DigitsData()
    return data, classifier(data, cache)


def test_classifier_learns_the_held_out_digits(digits_and_net):
    data, net = digits_and_net
    assert class_accuracy(net, data.val.x, data.val.y) > 0.9


def test_frechet_distance_separates_real_from_noise(digits_and_net):
    data, net = digits_and_net
    real = data.train.x
    half = len(real) // 2
    same = frechet_distance(net, real[:half], real[:half])
    halves = frechet_distance(net, real[:half], real[half:])
    noise = frechet_distance(net, real[:half], torch.rand_like(real[half:]) * 2 - 1)
    assert abs(same) < 1e-3 and halves < 0.1 * noise


def test_classifier_is_cached(digits_and_net, cache):
    data, first = digits_and_net
    assert len(list((cache / "classifiers").glob("*.pt"))) == 1
    again = classifier(DigitsData(), cache)  # loaded, not retrained
    x = data.val.x[:8]
    assert isinstance(again, FeatureNet) and again is not first and torch.equal(first(x), again(x))


def test_sample_grid_png(tmp_path):
    from PIL import Image

    save_grid(torch.rand(20, 1, 8, 8) * 2 - 1, tmp_path / "grid.png", nrow=10)
    assert Image.open(tmp_path / "grid.png").size == (10 * 9 + 1, 2 * 9 + 1)
