"""Labelled image data read from local files (nothing is downloaded): ``cifar10`` (torchvision's
loader on an existing ``cifar-10-batches-py``), ``image_folder`` (torchvision's ImageFolder),
``hf_images`` (a Hugging Face dataset with image and label columns) and ``latents`` (precomputed VAE
latents and labels in a tensor file: the DiT ImageNet setup at scale). Batching and splits are
``images.ImageData``'s.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from src.data.batches import hash_unit
from src.data.hf import load_hf_split
from src.data.images import ImageData, Images, to_unit_range
from src.errors import ConfigError, one_line


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
            xs, ys = split[hash_unit(str(Path(path).relative_to(self.root))) < self.val_fraction]
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
            held = torch.tensor([hash_unit(str(i)) < self.val_fraction for i in range(len(train.y))])
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
