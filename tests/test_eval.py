"""Offline image evaluation: the local classifier learns the digits, its Fréchet distance separates
real from noise and is zero for identical sets, it is cached, and grids are written."""

from __future__ import annotations

import pytest
import torch

from src.data.images import DigitsData
from src.eval.images import FeatureNet, class_accuracy, classifier, frechet_distance, save_grid, train_classifier


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


def test_classifier_trains_on_one_thread_whatever_the_callers_count(tmp_path, monkeypatch):
    """Its weights (hence every Fréchet distance) must not depend on the machine's core count: on two
    threads a reduction's order differs, and so do the trained weights' last bits."""
    import src.eval.images as images

    short = lambda train, classes: train_classifier(train, classes, steps=50)  # noqa: E731
    monkeypatch.setattr(images, "train_classifier", short)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        net = classifier(DigitsData(), tmp_path)
        assert torch.get_num_threads() == 2  # the caller's count is restored
    finally:
        torch.set_num_threads(threads)
    data = DigitsData()
    data.setup()
    with images.one_thread():
        reference = short(data.train, data.classes)
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), reference.state_dict().values()))
