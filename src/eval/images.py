"""Offline image evaluation with a small classifier trained on the same data (no Inception download).

* ``FeatureNet``: a 3-layer CNN; its penultimate 64-d features stand in for Inception's pool3 features.
* ``classifier(data, cache_dir)``: trained once per data set (kind, size, channels, split) and cached.
* ``frechet_distance``: ‖μ_r − μ_g‖² + Tr(Σ_r + Σ_g − 2(Σ_r Σ_g)^½) in those features, computed by
  torchmetrics' ``FrechetInceptionDistance`` with the feature net as its custom extractor.
* ``class_accuracy``: the fraction of conditional samples the classifier labels as requested (a
  GenEval-like consistency score).
* ``save_grid``: a PNG of samples in [−1, 1].
* ``one_thread``: evaluation runs on one torch thread, so that its numbers are a pure function of
  the weights: a CPU reduction's order, hence its last bits, depends on the thread count (a
  classifier trained on 2 threads differs from one trained on 1 in the 8th digit of its weights,
  which moved Fréchet distances in the 5th).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from src.data.images import Images

log = logging.getLogger(__name__)


@contextlib.contextmanager
def one_thread():
    """Run the block on one torch thread, then restore the caller's thread count."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


class FeatureNet(nn.Module):
    """conv 3×3 (C→32) → conv 3×3 stride 2 (→64) → conv 3×3 stride 2 (→64) → mean pool → 64 features
    → Linear → class logits. ``forward`` returns the features (what torchmetrics' FID calls)."""

    num_features = 64

    def __init__(self, channels: int, num_classes: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, 32, 3, padding=1), nn.GELU(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.GELU(),
            nn.Conv2d(64, 64, 3, stride=2, padding=1), nn.GELU(),
        )
        self.classify = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x).mean(dim=(2, 3))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify(self(x))


def train_classifier(train: Images, num_classes: int, steps: int = 600, batch_size: int = 64,
                     seed: int = 0) -> FeatureNet:
    """AdamW (lr 3e-3) cross-entropy on random batches of the training split; eval mode on return."""
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        net = FeatureNet(train.x.shape[1], num_classes)
    optimizer = torch.optim.AdamW(net.parameters(), lr=3e-3)
    for _ in range(steps):
        idx = torch.randint(0, len(train.y), (batch_size,), generator=gen)
        loss = F.cross_entropy(net.logits(train.x[idx]), train.y[idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return net.eval()


def classifier(data, cache_dir: str | Path) -> FeatureNet:
    """The feature net of an ``ImageData`` module, trained on its training split once (on one
    thread) and cached under ``<cache_dir>/classifiers/``."""
    data.setup()
    x = data.train.x
    key = f"{data.kind}|{tuple(x.shape)}|{float(x.double().sum()):.6f}|{data.classes}|one thread"
    path = Path(cache_dir) / "classifiers" / f"{data.kind}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.pt"
    net = FeatureNet(x.shape[1], data.classes)
    if path.exists():
        net.load_state_dict(torch.load(path, weights_only=True))
        return net.eval()
    log.info("training the evaluation classifier for %s", data.kind)
    with one_thread():
        net = train_classifier(data.train, data.classes)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(net.state_dict(), tmp)
    tmp.replace(path)
    return net


@torch.no_grad()
def frechet_distance(net: FeatureNet, real: torch.Tensor, fake: torch.Tensor, batch_size: int = 500) -> float:
    """Fréchet distance between two image sets in the feature net's features (torchmetrics' FID)."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    metric = FrechetInceptionDistance(feature=net, input_img_size=tuple(real.shape[1:]))
    for images, is_real in ((real, True), (fake, False)):
        for chunk in images.split(batch_size):
            metric.update(chunk, real=is_real)
    return float(metric.compute())


@torch.no_grad()
def class_accuracy(net: FeatureNet, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of images the classifier assigns to their requested label."""
    predicted = torch.cat([net.logits(chunk).argmax(-1) for chunk in images.split(500)])
    return float((predicted == labels).float().mean())


def save_grid(images: torch.Tensor, path: str | Path, nrow: int = 10) -> None:
    """Images in [−1, 1] as one PNG grid."""
    from torchvision.utils import save_image

    save_image((images.clamp(-1, 1) + 1) / 2, str(path), nrow=nrow, padding=1)
