"""TensorFlow training loops over a StoreGate: a ``tf.data.Dataset`` of batches.

:class:`StoreGateDataset` is matorage's ``matorage.tensorflow.Dataset`` (``batch_size``,
``shuffle``, ``seed``, index mode ``dataset[i]``, the ``dataloader`` property) over a phase
or a view of rows of a StoreGate, with multiml's ``input_var_names`` / ``true_var_names``.
It reads the store itself with the same machinery as :mod:`storegate.torch`
(:class:`storegate.reading.BatchReader`): each batch fetches every stored chunk it needs
once (one storage call per run of adjacent chunks), an LRU cache keeps decoded chunks for
the next batches, and with ``shuffle=True`` each epoch follows the chunk-aware order of
:class:`storegate.torch.ChunkShuffleSampler` (:func:`storegate.loader.epoch_order`): the
same rows in the same order for the same ``seed``, ``window`` and epoch.

The dataset's batches come from a Python generator (``tf.data.Dataset.from_generator``),
run by tf.data in this process; the store is opened read-only for it, apart from the
StoreGate that made it. Reading overlaps training when the caller adds
``.prefetch(tf.data.AUTOTUNE)``. Data the backend cannot reopen from configuration (the
numpy backend, hybrid in mode 'numpy', a zarr ``MemoryStore``) are copied into memory when
the dataset is made, as in :mod:`storegate.torch`.

TensorFlow is optional: ``import storegate`` works without it, and importing this module
without it raises an ImportError that names the package to install.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np

try:
    import tensorflow as tf
except ImportError as exc:  # an optional dependency: the rest of storegate works without it
    raise ImportError(
        "storegate.tensorflow needs TensorFlow: pip install 'storegate[tensorflow]' (or pip install tensorflow-cpu)."
    ) from exc

from storegate.errors import InvalidArgumentError
from storegate.gate import StoreGate
from storegate.indexing import normalize_index
from storegate.loader import DEFAULT_CHUNK_CACHE_BYTES, DEFAULT_WINDOW, epoch_order
from storegate.names import VarNames, parse_var_names
from storegate.reading import BatchReader, check_source
from storegate.rules import check_bool, check_int
from storegate.views import View

__all__ = ["StoreGateDataset", "to_tf_dataset"]

_CONCAT_FIX = (
    "make one dataset per part and join their dataloaders with tf.data.Dataset.concatenate "
    "(or tf.data.Dataset.sample_from_datasets)."
)


class StoreGateDataset:
    """Batches of one phase (or view of rows) of a StoreGate, for tf.data and Keras.

    Parameters
    ----------
    storegate
        The StoreGate to read, with its data_id set. Any backend: a zarr store (local, NAS
        or S3) is read by chunks; in-memory data are copied when the dataset is made.
    phase
        ``'train'``, ``'valid'``, ``'test'`` or ``'all'``, or a view of rows of this StoreGate
        (``sg['train'].filter('y', keep=[0, 1])``, see :mod:`storegate.views`): row ``i`` of
        the dataset is then the view's row ``i``, read from the stored rows.
    input_var_names
        The inputs, in the forms of :meth:`StoreGate.get_data`: a str gives a tensor
        ``(B, ...)``, a tuple one tensor ``(B, M, ...)`` stacked from M variables (numpy's
        common dtype), a list a tuple of tensors (a Keras model with several inputs).
    true_var_names
        The targets, in the same forms. Elements are ``(inputs, targets)``, or the inputs
        alone when this is None.
    batch_size
        Rows per batch (matorage's ``batch_size``; 32 by default, Keras's).
    shuffle
        A new chunk-aware random order each epoch (matorage's ``shuffle``; True by default,
        as Keras's dataset utilities). False reads the rows in order (a view: its order).
    seed
        Seed of the order; epoch ``k`` of the dataset uses ``(seed, k)``.
    drop_remainder
        Leave out the last, smaller batch of an epoch (tf.data's ``drop_remainder``); the
        batch axis of ``element_spec`` is then ``batch_size`` instead of None.
    window
        Chunks whose rows are shuffled together: more is more random and needs a chunk
        cache of about ``window`` chunks per variable.
    preload
        Read the variables into memory now (multiml's ``preload``).
    chunk_cache_bytes
        Bound of the LRU cache of decoded chunks; 0 disables it.

    Raises
    ------
    InvalidArgumentError
        For an argument of the wrong type or value (the message names it), a variable a
        tf.Tensor cannot hold (str, bytes, dates), or tuple var_names of different row shapes.
    NotFoundError
        If a variable does not exist in the phase.

    Notes
    -----
    Made for the layout the store has when it is made: after a write through a StoreGate
    of this process it reads the new values, or raises StoreGateError if rows were added or
    deleted (make a new dataset). Each iteration of :attr:`dataloader` is one epoch, counted
    from 0 for every ``dataloader`` made; :meth:`epoch_order` gives any epoch's order.
    """

    def __init__(
        self,
        storegate: StoreGate,
        phase: str | View = "train",
        input_var_names: Any = None,
        true_var_names: Any = None,
        *,
        batch_size: int = 32,
        shuffle: bool = True,
        seed: int = 0,
        drop_remainder: bool = False,
        window: int = DEFAULT_WINDOW,
        preload: bool = False,
        chunk_cache_bytes: int = DEFAULT_CHUNK_CACHE_BYTES,
    ) -> None:
        view = check_source(storegate, phase, _CONCAT_FIX)
        self._inputs = _parse_inputs(input_var_names)
        self._targets = None if true_var_names is None else parse_var_names(true_var_names)
        self.batch_size = check_int("batch_size", batch_size, minimum=1)
        self.shuffle = check_bool("shuffle", shuffle)
        self.seed = check_int("seed", seed, minimum=0)
        self.drop_remainder = check_bool("drop_remainder", drop_remainder)
        self.window = check_int("window", window, minimum=1)
        names = [*self._inputs.names, *(self._targets.names if self._targets else ())]
        self._reader = BatchReader(
            storegate,
            phase if view is None else view,
            names,
            preload=check_bool("preload", preload),
            chunk_cache_bytes=chunk_cache_bytes,
        )
        _check_tf_dtypes(self._reader, names)
        self._spec = self._make_spec()
        self._lock = threading.Lock()  # tf.data may run two iterators' generators at once

    # --- layout --------------------------------------------------------------------------

    def __len__(self) -> int:
        """Rows of the phase or view (not batches: see :attr:`num_batches`)."""
        return len(self._reader)

    @property
    def num_batches(self) -> int:
        """Batches per epoch."""
        n = len(self._reader)
        return n // self.batch_size if self.drop_remainder else -(-n // self.batch_size)

    @property
    def phase(self) -> str:
        """The phase read."""
        return self._reader.phase

    @property
    def element_spec(self) -> Any:
        """The ``tf.TensorSpec`` structure of a batch: ``(inputs, targets)`` or ``inputs``."""
        return self._spec

    @property
    def chunk_bounds(self) -> np.ndarray:
        """Row offsets where a stored chunk starts, then the number of rows (see
        :attr:`storegate.reading.BatchReader.chunk_bounds`)."""
        return self._reader.chunk_bounds

    def epoch_order(self, epoch: int = 0) -> np.ndarray:
        """The rows of epoch ``epoch`` in the order its batches hold them (int64).

        With ``shuffle=True``, the order :class:`storegate.torch.ChunkShuffleSampler` gives
        for the same ``seed``, ``window`` and epoch; else ``0, 1, ..., len - 1``.
        """
        check_int("epoch", epoch, minimum=0)
        if not self.shuffle:
            return np.arange(len(self._reader), dtype=np.int64)
        return epoch_order(self._reader.chunk_bounds, self._reader.chunk_order, self.seed, epoch, self.window)

    # --- reading -------------------------------------------------------------------------

    def __getitem__(self, index: Any) -> Any:
        """matorage's index mode: rows as numpy arrays in the var_names forms.

        An int gives one row (no batch axis); a slice, list, array or mask a batch.
        """
        selection = normalize_index(index, len(self._reader))
        if isinstance(selection, int):
            one = self._batch(np.array([selection], dtype=np.int64))
            return tf.nest.map_structure(lambda a: a[0], one)
        rows = np.arange(selection.start, selection.stop, selection.step) if isinstance(selection, slice) else selection
        return self._batch(rows.astype(np.int64, copy=False))

    def batches(self, epoch: int = 0) -> Iterator[Any]:
        """The batches of epoch ``epoch`` as numpy arrays, in :meth:`epoch_order`."""
        order = self.epoch_order(epoch)
        stop = self.num_batches * self.batch_size
        for start in range(0, stop, self.batch_size):
            yield self._batch(order[start : start + self.batch_size])

    @property
    def dataloader(self) -> tf.data.Dataset:
        """A ``tf.data.Dataset`` of the batches (matorage's ``dataloader``).

        Each iteration over it is the next epoch (0, 1, ...: ``model.fit(epochs=n)`` sees n
        orders); its cardinality is :attr:`num_batches`. Add ``.prefetch(tf.data.AUTOTUNE)``
        to read the next batches while the model trains.
        """
        epochs = itertools.count()

        def generate() -> Iterator[Any]:
            yield from self.batches(next(epochs))

        dataset = tf.data.Dataset.from_generator(generate, output_signature=self._spec)
        return dataset.apply(tf.data.experimental.assert_cardinality(self.num_batches))

    def _batch(self, rows: np.ndarray) -> Any:
        with self._lock:
            arrays = self._reader.read(rows)
        data = _join(arrays, self._inputs)
        return data if self._targets is None else (data, _join(arrays, self._targets))

    def _make_spec(self) -> Any:
        """TensorSpecs from the variables' layouts (nothing is read): joined as batches are."""
        empty = {
            var: np.empty((0, *shape), dtype)
            for var in self._reader.variables
            for dtype, shape in [self._reader.layout(var)]
        }
        batch = None if not self.drop_remainder else self.batch_size
        data = _join(empty, self._inputs)
        joined = data if self._targets is None else (data, _join(empty, self._targets))
        return tf.nest.map_structure(lambda a: tf.TensorSpec((batch, *a.shape[1:]), tf.as_dtype(a.dtype)), joined)

    def __repr__(self) -> str:
        view = "" if self._reader.view is None else f", view={self._reader.view!r}"
        return (
            f"storegate.tensorflow.StoreGateDataset(phase={self.phase!r}, inputs={self._inputs.given()!r}, "
            f"targets={self._targets and self._targets.given()!r}, "
            f"rows={len(self)}, batch_size={self.batch_size}, "
            f"shuffle={self.shuffle}, source={self._reader.source!r}{view})"
        )


#: The keyword arguments of StoreGateDataset that to_tf_dataset passes on.
_OPTIONS = {"batch_size", "shuffle", "seed", "drop_remainder", "window", "preload", "chunk_cache_bytes"}


def to_tf_dataset(
    storegate: StoreGate,
    phase: str | View = "train",
    input_var_names: Any = None,
    true_var_names: Any = None,
    **options: Any,
) -> tf.data.Dataset:
    """A ``tf.data.Dataset`` of batches of a phase or view: ``StoreGateDataset(...).dataloader``.

    ``options`` are the keyword arguments of :class:`StoreGateDataset` (``batch_size``,
    ``shuffle``, ``seed``, ``drop_remainder``, ``window``, ``preload``, ``chunk_cache_bytes``).

    Raises
    ------
    InvalidArgumentError, NotFoundError
        As :class:`StoreGateDataset`.
    """
    unknown = sorted(set(options) - _OPTIONS)
    if unknown:
        raise InvalidArgumentError(
            f"to_tf_dataset takes the options {sorted(_OPTIONS)}. Got {unknown} instead: check their spelling."
        )
    return StoreGateDataset(storegate, phase, input_var_names, true_var_names, **options).dataloader


def _parse_inputs(input_var_names: object) -> VarNames:
    if input_var_names is None:
        raise InvalidArgumentError(
            "input_var_names must be a str, a tuple of str or a list of str naming the inputs. Got None instead."
        )
    return parse_var_names(input_var_names)


def _check_tf_dtypes(reader: BatchReader, names: list[str]) -> None:
    """Numbers and bools only: a str, bytes or date variable is refused up front."""
    for var in names:
        dtype, _ = reader.layout(var)
        if dtype.kind not in "biufc":
            raise InvalidArgumentError(
                f"var_name {var!r} has dtype {dtype}, which storegate.tensorflow does not turn into a tf.Tensor "
                "(numbers and bools only). Leave it out of input_var_names / true_var_names, or store it encoded "
                "as numbers (e.g. class indices)."
            )


def _join(arrays: dict[str, np.ndarray], names: VarNames) -> Any:
    """A batch in the form of ``names``: an array, a stacked array or a tuple of arrays."""
    joined = names.join([arrays[v] for v in names.names], scalar=False)
    return tuple(joined) if names.form == "list" else joined
