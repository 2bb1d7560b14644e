"""Train a small MLP on the digits zarr store that ``examples/demo.py`` writes.

The training loop (a small CNN) reads the store itself through :class:`storegate.torch.StoreGateDataset`
and :class:`storegate.torch.StoreGateDataLoader` (whole batches in a chunk-aware shuffled order,
a new one each epoch), and prints the loss of each epoch
(with a tqdm progress bar), the validation accuracy and, at the end, the test accuracy.
Everything is seeded, so two runs print the same numbers.

Run ``make demo`` (which calls :func:`train`), or on an existing store::

    .venv/bin/python examples/train.py --store demo-store.zarr
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from storegate import StoreGate
from storegate.torch import StoreGateDataLoader, StoreGateDataset

DATA_ID = "digits"
IMAGES, LABELS = "images", "labels"
#: The demo fails below this test accuracy.
MIN_ACCURACY = 0.9
DEFAULT_STORE = Path(__file__).resolve().parent.parent / "demo-store.zarr"


@dataclass(frozen=True)
class TrainResult:
    """What a training run measured: mean training loss and validation accuracy per epoch."""

    losses: list[float]
    valid_accuracies: list[float]
    test_accuracy: float


def make_model() -> nn.Module:
    """A small CNN from an 8x8 digit (pixels 0..1) to 10 class scores."""
    return nn.Sequential(
        nn.Unflatten(1, (1, 8)),  # (B, 8, 8) -> (B, 1, 8, 8): one channel
        nn.Conv2d(1, 16, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Dropout(0.25),
        nn.Linear(32 * 4 * 4, 10),
    )


def train(
    store: str | Path = DEFAULT_STORE,
    data_id: str = DATA_ID,
    epochs: int = 10,
    batch_size: int = 32,
    seed: int = 0,
    num_workers: int = 0,
    progress: bool = True,
) -> TrainResult:
    """Train on phase 'train' of a read-only digits store; report valid and test accuracy.

    ``num_workers=0`` is the right choice for these tiny batches on a small machine: a
    worker process costs more to start and to talk to than it saves. For the same reason
    torch computes on one thread here (restored afterwards): on 2 busy cores, a second
    thread for a model this small makes each step many times slower, not faster.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _train(store, data_id, epochs, batch_size, seed, num_workers, progress)
    finally:
        torch.set_num_threads(threads)


def _train(
    store: str | Path, data_id: str, epochs: int, batch_size: int, seed: int, num_workers: int, progress: bool
) -> TrainResult:
    torch.manual_seed(seed)
    sg = StoreGate("zarr", {"output_dir": str(store), "mode": "r"}, data_id=data_id)
    train_set = StoreGateDataset(sg, "train", IMAGES, LABELS)
    valid_set = StoreGateDataset(sg, "valid", IMAGES, LABELS)
    # Each pass over the loader is the next epoch's order, reproducible from the seed.
    loader = StoreGateDataLoader(train_set, batch_size, shuffle=True, seed=seed, num_workers=num_workers)
    model = make_model()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)  # settle at the end
    losses: list[float] = []
    valid_accuracies: list[float] = []
    for epoch in range(epochs):
        losses.append(_train_epoch(model, optimizer, loader, f"epoch {epoch + 1}/{epochs}", progress))
        schedule.step()
        valid_accuracies.append(evaluate(model, valid_set))
        print(f"epoch {epoch + 1}/{epochs}: loss {losses[-1]:.4f}, valid accuracy {valid_accuracies[-1]:.3f}")
    test_accuracy = evaluate(model, StoreGateDataset(sg, "test", IMAGES, LABELS))
    print(f"test accuracy {test_accuracy:.3f} on {len(sg['test'])} digits")
    return TrainResult(losses, valid_accuracies, test_accuracy)


def _train_epoch(
    model: nn.Module, optimizer: torch.optim.Optimizer, loader: StoreGateDataLoader, desc: str, progress: bool
) -> float:
    model.train()
    total, count = 0.0, 0
    for images, labels in tqdm(loader, desc=desc, leave=False, disable=not progress, file=sys.stderr):
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(_scale(images)), labels)
        loss.backward()
        optimizer.step()
        total += loss.item() * len(labels)
        count += len(labels)
    return total / max(count, 1)


@torch.no_grad()
def evaluate(model: nn.Module, dataset: StoreGateDataset) -> float:
    """Accuracy of ``model`` on a dataset of (image, label) items."""
    model.eval()
    correct = 0
    for images, labels in StoreGateDataLoader(dataset, batch_size=256):
        correct += int((model(_scale(images)).argmax(dim=1) == labels).sum())
    return correct / max(len(dataset), 1)


def _scale(images: torch.Tensor) -> torch.Tensor:
    return images / 16.0  # digits pixels are 0..16


def main(argv: Sequence[str] | None = None) -> int:
    """Train on ``--store``; exit status 1 when the test accuracy is below MIN_ACCURACY."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, default=DEFAULT_STORE, help="the digits zarr store (make demo)")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--num-workers", type=int, default=0)
    args = parser.parse_args(argv)
    result = train(args.store, epochs=args.epochs, num_workers=args.num_workers)
    return 0 if result.test_accuracy >= MIN_ACCURACY else 1


if __name__ == "__main__":
    sys.exit(main())
