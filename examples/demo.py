"""End-to-end demo: scikit-learn's handwritten digits in a zarr store on local disk.

Run with ``make demo`` (or ``.venv/bin/python examples/demo.py [--output-dir DIR]``). It

1. loads the 1,797 8x8 digit images that ship inside scikit-learn (no download),
2. writes them to a zarr store with a (0.8, 0.1, 0.1) train / valid / test split,
3. compiles and prints the info table,
4. reopens the store read-only in a new StoreGate and checks that every phase and every
   variable reads back exactly equal to the source,
5. makes a view of rows (the 3s and 8s of train, class-balanced and shuffled: nothing
   copied) and checks it against numpy's fancy indexing of the source,
6. stores the ink of each digit as a ragged variable (a point set of its own length) in a
   second data_id, and reads it back one row at a time and padded,
7. trains a small torch model from the store for a few epochs (``examples/train.py``),
   printing the loss per epoch and the test accuracy, and
8. prints where the store lives.

It exits with status 1 when the round trip fails or the test accuracy is below 90%.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits

from storegate import ReadOnlyError, StoreGate
from storegate.phases import PHASES, split_counts

DATA_ID = "digits"
POINTS_ID = "digit_points"
SPLIT = (0.8, 0.1, 0.1)
IMAGES, LABELS = "images", "labels"
DEFAULT_OUTPUT_DIR = Path(__file__).resolve().parent.parent / "demo-store.zarr"


def load_source() -> dict[str, np.ndarray]:
    """The digits as ``{'images': float32 (N, 8, 8), 'labels': int64 (N,)}``."""
    digits = load_digits()
    return {IMAGES: digits.images.astype(np.float32), LABELS: digits.target.astype(np.int64)}


def build_store(output_dir: str | Path) -> StoreGate:
    """Write the digits to a fresh zarr store at ``output_dir`` (replacing it), split and compiled."""
    sg = StoreGate(backend="zarr", backend_args={"output_dir": str(output_dir), "mode": "w"}, data_id=DATA_ID)
    for var, array in load_source().items():
        sg.add_data(var, array, phase=SPLIT)
    sg.compile()
    return sg


def expected_phases(source: dict[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
    """The source cut by SPLIT: consecutive rows, train first, as ``add_data`` splits them."""
    n = len(next(iter(source.values())))
    bounds = np.cumsum([0, *split_counts(SPLIT, n)])
    return {
        phase: {var: array[bounds[i] : bounds[i + 1]] for var, array in source.items()}
        for i, phase in enumerate(PHASES)
    }


def check_round_trip(output_dir: str | Path, source: dict[str, np.ndarray]) -> list[str]:
    """Reopen the store read-only and compare it with ``source``; return the problems found."""
    sg = StoreGate(backend="zarr", backend_args={"output_dir": str(output_dir), "mode": "r"}, data_id=DATA_ID)
    problems: list[str] = []
    if not sg.get_metadata()["compiled"]:
        problems.append("the reopened store is not marked compiled")
    for phase, variables in expected_phases(source).items():
        for var, want in variables.items():
            problems += _compare(f"{phase}/{var}", sg[phase][var][:], want)
    for var, want in source.items():
        problems += _compare(f"all/{var}", sg["all"][var][:], want)
    problems += _check_refuses_writes(sg)
    return problems


def check_view(output_dir: str | Path, source: dict[str, np.ndarray]) -> list[str]:
    """A view of rows (KappaData's and DataStack's wrappers): the 3s and 8s of train,
    oversampled to equal counts and shuffled, read from the stored rows; the problems found."""
    sg = StoreGate(backend="zarr", backend_args={"output_dir": str(output_dir), "mode": "r"}, data_id=DATA_ID)
    view = sg["train"].filter(LABELS, keep=[3, 8]).oversample(LABELS).shuffled(seed=0)
    counts = np.bincount(view[LABELS][:], minlength=10)
    print(
        f"\nView of train: the 3s and 8s, oversampled to {counts[3]} + {counts[8]} rows and shuffled "
        f"({len(view)} rows, nothing copied: {len(view.row_numbers())} row numbers into the stored phase)."
    )
    train = expected_phases(source)["train"]
    want = train[IMAGES][view.row_numbers()]
    problems = _compare("view of train", view[IMAGES][:], want)
    if counts[3] != counts[8] or counts.sum() != counts[3] + counts[8]:
        problems.append(f"view of train: expected as many 3s as 8s and nothing else, got counts {counts.tolist()}")
    return problems


def _compare(where: str, got: np.ndarray, want: np.ndarray) -> list[str]:
    if got.dtype != want.dtype or got.shape != want.shape:
        return [f"{where}: expected {want.dtype} {want.shape}, got {got.dtype} {got.shape}"]
    if not np.array_equal(got, want):
        return [f"{where}: {int(np.count_nonzero(got != want))} values differ from the source"]
    return []


def ragged_points(output_dir: str | Path, source: dict[str, np.ndarray]) -> list[str]:
    """Store each digit's ink (pixels above 8) as a ragged point set ``(L_i, 2)``; check it reads back."""
    points = [np.argwhere(image > 8).astype(np.int8) for image in source[IMAGES]]
    sg = StoreGate(backend="zarr", backend_args={"output_dir": str(output_dir)}, data_id=POINTS_ID)
    sg.add_data("ink", points, phase="train")  # lengths differ: one ragged variable
    padded, lengths = sg.get_data("ink", "train", slice(0, 4), batch_mode="pad", batch_args={"constant_values": -1})
    print(
        f"Ragged point sets ({POINTS_ID!r}): {len(points)} digits of {min(map(len, points))} to "
        f"{max(map(len, points))} points; the first 4 padded to {padded.shape}, lengths {lengths.tolist()}."
    )
    if any(not np.array_equal(sg.get_data("ink", "train", i), points[i]) for i in (0, len(points) - 1)):
        return ["digit_points/train/ink: a point set differs from the source"]
    return []


def _check_refuses_writes(sg: StoreGate) -> list[str]:
    try:
        sg.add_data(LABELS, np.zeros(1, dtype=np.int64))
    except ReadOnlyError:
        return []
    return ["the store opened with mode 'r' accepted a write"]


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--output-dir",
        type=Path,
        default=DEFAULT_OUTPUT_DIR,
        help=f"where to write the zarr store (replaced if it exists; default: {DEFAULT_OUTPUT_DIR})",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo; return the process exit status (0 when the round trip holds)."""
    output_dir = _parse_args(argv).output_dir.resolve()

    sg = build_store(output_dir)
    sizes = sg.get_metadata()["sizes"]
    print(
        f"Wrote {sizes['all']} digits to {output_dir} (train / valid / test = {sizes['train']} / "
        f"{sizes['valid']} / {sizes['test']}).\n"
    )
    sg.show_info()

    problems = check_round_trip(output_dir, load_source())
    problems += ragged_points(output_dir, load_source())
    if problems:
        print("\nRound trip FAILED:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 1
    print("\nRound trip OK: every phase and variable of the read-only store equals the source.")
    problems = check_view(output_dir, load_source())
    if problems:
        print("\nView FAILED:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 1

    # --- Training: examples/train.py reads the same store read-only through storegate.torch.
    if str(Path(__file__).resolve().parent) not in sys.path:  # loaded by file path (tests)
        sys.path.insert(0, str(Path(__file__).resolve().parent))
    from train import MIN_ACCURACY, train

    print("\nTraining a small CNN from the store (StoreGateDataset + StoreGateDataLoader):")
    accuracy = train(output_dir, data_id=DATA_ID).test_accuracy
    if accuracy < MIN_ACCURACY:
        print(f"\nTraining FAILED: test accuracy {accuracy:.3f} < {MIN_ACCURACY}.", file=sys.stderr)
        return 1

    print(f"\nThe store lives at {output_dir} (data_id {DATA_ID!r}).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
