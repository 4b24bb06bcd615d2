"""Image data: the built-in sets (values, splits, classes), batches as a pure function of (seed,
step, rank), and the file loaders (ImageFolder, HF datasets, latents) on local files, with one-line
errors for missing or malformed data."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from src.errors import ConfigError
from src.data.image_files import Cifar10Data, HFImagesData, ImageFolderData, LatentsData
from src.data.images import DigitsData, Mnist5kData, ShapesData


def test_mnist5k_is_the_real_digits_split_by_class():
    data = Mnist5kData(image_size=16)
    assert data.model_inputs == {"image_size": 16, "in_channels": 1, "num_classes": 10}
    data.setup()
    assert data.train.x.shape == (4500, 1, 16, 16) and data.val.x.shape == (500, 1, 16, 16)
    assert torch.equal(torch.bincount(data.val.y), torch.full((10,), 50))
    assert len(torch.unique(data.val.y[:30])) == 10  # the file is sorted by class; any prefix is mixed
    assert float(data.train.x.min()) == -1.0 and float(data.train.x.max()) == 1.0
    native = Mnist5kData(image_size=None, val_size=20)
    native.setup()
    assert native.val.x.shape == (20, 1, 28, 28) and torch.equal(native.val.y, data.val.y[:20])


def test_digits_values_and_split():
    data = DigitsData()
    data.setup()
    assert data.train.x.shape == (1497, 1, 8, 8) and len(data.val.y) == 300
    values = torch.unique(data.train.x)
    assert len(values) == 17 and float(values[0]) == -1.0 and float(values[-1]) == 1.0  # x/8 − 1, x ∈ 0..16


def test_training_batches_are_a_pure_function_of_seed_step_and_rank():
    a, b = DigitsData(seed=3), DigitsData(seed=3)
    a.setup(), b.setup()
    first_a, first_b = next(iter(a.train_dataloader())), next(iter(b.train_dataloader()))
    assert torch.equal(first_a[0], first_b[0]) and torch.equal(first_a[1], first_b[1])
    other = DigitsData(seed=4)
    other.setup()
    assert not torch.equal(next(iter(other.train_dataloader()))[1], first_a[1])
    x, y, index = next(iter(a.val_dataloader()))
    assert torch.equal(index, torch.arange(100)) and torch.equal(x, a.val.x[:100])


def test_shapes_are_unlimited_and_labelled():
    data = ShapesData(size=16, batch_size=64, val_size=60)
    assert data.model_inputs == {"image_size": 16, "in_channels": 1, "num_classes": 6}
    data.setup()
    batches = iter(data.train_dataloader())
    x1, y1 = next(batches)
    x2, _ = next(batches)
    assert x1.shape == (64, 1, 16, 16) and not torch.equal(x1, x2) and set(y1.tolist()) <= set(range(6))
    bars = x1[y1 == 0]  # horizontal bars: more columns than rows lit
    lit = bars > -1
    assert bool((lit.any(dim=2).sum(-1) >= lit.any(dim=3).sum(-1)).all())


def test_image_folder_loads_local_files_and_names_a_missing_root(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for label in ("cat", "dog"):
        (tmp_path / label).mkdir()
        for i in range(15):
            Image.fromarray(rng.integers(0, 255, (12, 10, 3), dtype=np.uint8)).save(tmp_path / label / f"{i}.png")
    data = ImageFolderData(root=str(tmp_path), image_size=8, val_fraction=0.2)
    assert data.model_inputs == {"image_size": 8, "in_channels": 3, "num_classes": 2}
    data.setup()
    assert data.train.x.shape[1:] == (3, 8, 8) and len(data.train.y) + len(data.val.y) == 30
    assert 0 < len(data.val.y) < 15 and float(data.train.x.abs().max()) <= 1.0
    with pytest.raises(ConfigError, match="data.root='/nowhere': image folder not found"):
        ImageFolderData(root="/nowhere").model_inputs


def test_hf_images_from_a_saved_dataset(tmp_path):
    import datasets
    from PIL import Image

    rng = np.random.default_rng(0)
    rows = {"image": [Image.fromarray(rng.integers(0, 255, (6, 6), dtype=np.uint8)) for _ in range(40)],
            "label": [i % 4 for i in range(40)]}
    features = datasets.Features({"image": datasets.Image(), "label": datasets.Value("int64")})
    datasets.Dataset.from_dict(rows, features=features).save_to_disk(str(tmp_path / "ds"))
    data = HFImagesData(name_or_path=str(tmp_path / "ds"), channels=1, image_size=8)
    data.setup()
    assert data.model_inputs == {"image_size": 8, "in_channels": 1, "num_classes": 4}
    assert len(data.train.y) + len(data.val.y) == 40 and data.train.x.shape[1:] == (1, 8, 8)
    with pytest.raises(ConfigError, match="'picture' is not a column"):
        HFImagesData(name_or_path=str(tmp_path / "ds"), image_field="picture").setup()


def test_latents_file_and_its_errors(tmp_path):
    path = tmp_path / "latents.pt"
    torch.save({"latents": torch.randn(50, 4, 8, 8), "labels": torch.arange(50) % 5}, path)
    data = LatentsData(path=str(path), val_fraction=0.1)
    assert data.model_inputs == {"image_size": 8, "in_channels": 4, "num_classes": 5}
    assert len(data.train.y) == 45 and len(data.val.y) == 5 and data.val.y.tolist() != [0, 1, 2, 3, 4]
    assert set(data.train.y.tolist()) | set(data.val.y.tolist()) == set(range(5))
    with pytest.raises(ValueError, match="latents are used at their own size"):
        LatentsData(path=str(path), image_size=4)
    torch.save({"latents": torch.randn(5, 4, 8, 8)}, tmp_path / "bad.pt")
    with pytest.raises(ConfigError, match="missing 'labels'"):
        LatentsData(path=str(tmp_path / "bad.pt")).setup()
    with pytest.raises(ConfigError, match="latents file not found"):
        LatentsData(path=str(tmp_path / "none.pt")).setup()


def test_cifar10_without_files_is_one_clear_line(tmp_path):
    with pytest.raises(ConfigError, match="CIFAR-10 .* not found; this machine cannot download"):
        Cifar10Data(root=str(tmp_path)).setup()
