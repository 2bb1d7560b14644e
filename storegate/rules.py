"""The rules every layer checks, each written once: integers, lengths, shapes, dtypes, casts.

This module sits at the bottom of the package (it imports only :mod:`storegate.errors`),
so that the parsing modules, the backends, the engine and the adapters all raise the same
error with the same message for the same fault.
"""

from __future__ import annotations

import math
import sys
import warnings
from collections.abc import Mapping
from typing import Any, TypeGuard

import numpy as np

from storegate.errors import InvalidArgumentError, ValidationError

__all__ = [
    "as_array",
    "cast",
    "check_dtype",
    "check_int",
    "check_positive",
    "check_row_shape",
    "check_seed",
    "check_shape",
    "check_storable",
    "common_dtype",
    "common_length",
    "convert",
    "is_int",
    "is_tensor",
    "with_rows",
]


def is_int(value: object) -> TypeGuard[int | np.integer[Any]]:
    """True for a Python or numpy integer that is not a bool."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def check_int(arg: str, value: object, minimum: int | None = None, maximum: int | None = None) -> int:
    """``value`` as an int within ``[minimum, maximum]``.

    Raises
    ------
    InvalidArgumentError
        Naming ``arg``, the accepted range and the value given.
    """
    if not is_int(value) or (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise InvalidArgumentError(f"{arg} must be an int{_range_text(minimum, maximum)}. Got {value!r} instead.")
    return int(value)


def _range_text(minimum: int | None, maximum: int | None) -> str:
    if minimum is not None and maximum is not None:
        return f" in [{minimum}, {maximum}]"
    if minimum is not None:
        return f" >= {minimum}"
    if maximum is not None:
        return f" <= {maximum}"
    return ""


def check_positive(arg: str, value: object) -> int:
    """``value`` as an int >= 1 (a count or a size)."""
    if not is_int(value) or value < 1:
        raise InvalidArgumentError(f"{arg} must be a positive int. Got {value!r} instead.")
    return int(value)


#: The largest seed numpy's legacy generator takes (multiml's shuffles use it).
MAX_SEED = 2**32 - 1


def check_seed(seed: object, arg: str = "seed") -> int:
    """A random seed: an int in ``[0, 2**32 - 1]``; a bool is its int, as numpy's seed takes it (multiml)."""
    if isinstance(seed, (bool, np.bool_)):
        return int(seed)
    if not is_int(seed) or not 0 <= seed <= MAX_SEED:
        raise InvalidArgumentError(f"{arg} must be a bool or a non-negative int up to 2**32 - 1. Got {seed!r} instead.")
    return int(seed)


def common_length(
    lengths: Mapping[str, int], what: str, error: type[Exception] = ValidationError, context: str = ""
) -> int:
    """The one length that every entry of ``lengths`` has (0 when there is none).

    Parameters
    ----------
    lengths
        Rows per variable name.
    what
        What must agree, for the message, e.g. ``"every variable of phase 'train'"``.
    error
        :class:`ValidationError` for stored data (the default), :class:`InvalidArgumentError`
        for data given by the caller.
    context
        Words after "rows" in the message, e.g. ``" in phase 'train' before writing"``.
    """
    values = set(lengths.values())
    if len(values) > 1:
        raise error(f"{what} must have the same number of rows{context}. Got {dict(lengths)} instead.")
    return values.pop() if values else 0


#: numpy kinds every backend stores as they are: bool, ints, floats, complex, fixed-length
#: str and bytes, datetime64 and timedelta64 (zarr's v3 data types; float128 and structured
#: dtypes have none).
STORABLE_KINDS = frozenset("biufcUSMm")
_MAX_ITEMSIZE = {"f": 8, "c": 16}

#: torch dtypes numpy has no dtype for, and the conversion that keeps every value.
_TORCH_FIXES = {
    "bfloat16": "tensor.float() (float32 holds every bfloat16 value exactly)",
    "complex32": "tensor.cfloat() (complex64 holds every complex32 value exactly)",
}


def _is_masked(data: object) -> bool:
    """A masked array with masked values. numpy imports numpy.ma lazily (tens of ms): until a
    caller has imported it, no masked array can exist, so it is not imported here."""
    ma = sys.modules.get("numpy.ma")
    return ma is not None and isinstance(data, ma.MaskedArray) and bool(ma.is_masked(data))


def as_array(data: object, arg: str) -> np.ndarray:
    """``data`` as a numpy array in native byte order, from lists, numpy arrays or torch tensors.

    Byte order is normalised on the way in (``>i4`` becomes ``<i4`` on little-endian
    machines), so the same values give the same stored dtype on every backend.

    Raises
    ------
    InvalidArgumentError
        If numpy cannot convert ``data``, gives an object array (ragged rows, mixed types),
        or gives a dtype storegate does not store (:data:`STORABLE_KINDS`); for a torch dtype
        numpy lacks (bfloat16, complex32, float8...), naming the conversion to make first.
    """
    if is_tensor(data):
        data = _tensor_to_numpy(data, arg)
    elif isinstance(data, (list, tuple)) and any(is_tensor(item) for item in data):
        data = [_tensor_to_numpy(item, arg) if is_tensor(item) else item for item in data]
    if _is_masked(data):
        raise InvalidArgumentError(
            f"{arg} is a masked array with masked values, which would be stored as whatever lies under the "
            "mask. Fill them first: data.filled(value)."
        )
    try:
        array = np.asarray(data)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise InvalidArgumentError(
            f"{arg} must be array-like. Got {type(data).__name__} that numpy cannot convert ({exc})."
        ) from exc
    if array.dtype == object:
        array = _from_objects(array, arg)
    dtype = check_storable(array.dtype, arg)
    if not array.dtype.isnative:
        return array.astype(dtype)
    return array if array.dtype.char == dtype.char else array.view(dtype)  # 'q' is int64, by its name


def _from_objects(array: np.ndarray, arg: str) -> np.ndarray:
    """An object array of str (or of bytes) as fixed-length strings (pandas gives those); else refused."""
    items = array.reshape(-1).tolist()
    for kind in (str, bytes):
        if items and all(isinstance(item, kind) for item in items):
            return np.array(items).reshape(array.shape)
    raise InvalidArgumentError(
        f"{arg} must hold numbers, strings, bytes or dates with one shape per row. Got an object array "
        "(ragged rows, mixed types or Python objects) instead: give an array of one dtype (e.g. "
        "np.asarray(rows, dtype='f4')), or store each field as its own variable."
    )


def check_storable(dtype: np.dtype, arg: str) -> np.dtype:
    """``dtype`` in native byte order, when every backend stores it as it is.

    Raises
    ------
    InvalidArgumentError
        For dtypes outside :data:`STORABLE_KINDS` (structured, void, object, float128...).
    """
    limit = _MAX_ITEMSIZE.get(dtype.kind)
    if dtype.kind in "mM" and np.datetime_data(dtype)[0] == "generic":
        raise InvalidArgumentError(
            f"{arg} must give datetime64 / timedelta64 a unit, e.g. 'datetime64[s]' or 'timedelta64[ms]'. "
            f"Got dtype {dtype} (no unit) instead."
        )
    if dtype.kind in "US" and dtype.itemsize == 0:
        raise InvalidArgumentError(f"{arg} must give str or bytes a length, e.g. 'U8' or 'S8'. Got dtype {dtype}.")
    if dtype.kind not in STORABLE_KINDS or dtype.fields is not None or (limit and dtype.itemsize > limit):
        raise InvalidArgumentError(
            f"{arg} must have a dtype that every storegate backend stores: bool, (u)int8-64, float16-64, "
            f"complex64/128, fixed-length str or bytes, datetime64 or timedelta64. Got dtype {dtype} instead; "
            "convert it first (structured data: one variable per field)."
        )
    # Native byte order, and the canonical dtype of its kind and size ('q', 'longlong' are int64).
    return np.dtype((dtype if dtype.isnative else dtype.newbyteorder("=")).str)


def is_tensor(data: object) -> bool:
    """A torch.Tensor, recognised without importing torch."""
    return type(data).__module__.startswith("torch") and hasattr(data, "detach") and hasattr(data, "cpu")


def _tensor_to_numpy(tensor: Any, arg: str) -> np.ndarray:
    """A tensor's values as numpy, on the CPU, dense, with conjugation and negation resolved."""
    name = str(tensor.dtype).removeprefix("torch.")
    if tensor.is_quantized:
        raise InvalidArgumentError(
            f"{arg} is a quantized torch tensor ({tensor.dtype}), which has no numpy dtype. "
            "Convert it first: tensor.dequantize() or tensor.int_repr()."
        )
    if str(tensor.device) == "meta":
        raise InvalidArgumentError(f"{arg} is a torch tensor on the 'meta' device, which holds no values.")
    tensor = tensor.detach().cpu()
    if tensor.layout != _strided_layout(tensor):
        tensor = tensor.to_dense()
    try:
        return np.asarray(tensor.resolve_conj().resolve_neg().numpy())
    except TypeError as exc:  # torch: "Got unsupported ScalarType ..."
        fix = _TORCH_FIXES.get(name, "tensor.float() or tensor.int() to a dtype numpy has")
        raise InvalidArgumentError(
            f"{arg} has torch dtype torch.{name}, which numpy (and so zarr) cannot store. Convert it first: {fix}."
        ) from exc


def _strided_layout(tensor: Any) -> Any:
    """torch.strided, from the tensor's own module (torch is not imported here)."""
    return sys.modules[type(tensor).__module__.split(".")[0]].strided


def with_rows(array: np.ndarray, arg: str) -> np.ndarray:
    """``array`` unchanged when it has a leading row axis ``(N, ...)``."""
    if array.ndim == 0:
        raise InvalidArgumentError(f"{arg} must have a leading row axis (N, ...). Got a scalar instead.")
    return array


def check_row_shape(var: str, phase: str, stored: tuple[int, ...], given: tuple[int, ...]) -> None:
    """Rows written to a stored variable must have its row shape."""
    if stored != given:
        raise InvalidArgumentError(
            f"data for var_name {var!r} in phase {phase!r} must have row shape {stored} like the "
            f"stored rows. Got row shape {given} instead."
        )


def cast(array: np.ndarray, dtype: np.dtype, var: str) -> np.ndarray:
    """``array`` in the stored ``dtype``, every value kept.

    The cast must be allowed by numpy's ``same_kind`` rule (signed into unsigned ints too,
    as numpy allows for Python ints: ``x[0] = 5`` into uint8), and it must keep each value:
    exactly for bools, ints, strings, bytes, datetimes and timedeltas; up to the stored
    precision for floats and complex numbers, which must stay finite where they were.

    Raises
    ------
    InvalidArgumentError
        Naming the variable, the first value that does not fit, what it would become and
        the wider dtype to convert the variable to first.
    """
    if array.dtype == dtype:
        return array
    _check_kind(array.dtype, dtype, var)
    signed_into_unsigned = array.dtype.kind == "i" and dtype.kind == "u"
    if not (signed_into_unsigned or np.can_cast(array.dtype, dtype, casting="same_kind")):
        raise InvalidArgumentError(
            f"data for var_name {var!r} must be castable to the stored dtype {dtype} under numpy's "
            f"'same_kind' rule. Got dtype {array.dtype} instead: convert the data first, or change the "
            "stored dtype with astype()."
        )
    return _checked(array, dtype, var, "the stored dtype")


#: Stored kinds that take values of their own kind only: text stays text and time stays time
#: (numpy's same_kind would store 7 as '7' and 1 as one day).
_OWN_KIND = {"U": "US", "S": "US", "M": "M", "m": "m"}


def _check_kind(given: np.dtype, stored: np.dtype, var: str) -> None:
    kinds = _OWN_KIND.get(stored.kind)
    if kinds is not None and given.kind not in kinds:
        raise InvalidArgumentError(
            f"data for var_name {var!r} must hold values of the stored dtype's kind ({stored}). Got dtype {given} "
            "instead: convert the data first (numbers to text with .astype(str), times with np.datetime64)."
        )


def convert(array: np.ndarray, dtype: np.dtype, var: str) -> np.ndarray:
    """``array`` converted to ``dtype`` on request (``astype``): any kind, every value kept.

    An explicit conversion may change the kind (floats to ints drop their fractional part,
    as numpy's ``astype`` does), but no value may wrap, overflow or fail to parse: 300 into
    int8, NaN or inf into an int, 1e39 into float32 and ``'abc'`` into an int raise.

    Raises
    ------
    InvalidArgumentError
        Naming the variable and the first value that does not fit.
    """
    if array.dtype == dtype:
        return array
    if array.dtype.kind == "f" and dtype.kind in "iu":
        array = np.trunc(array)  # the fractional part goes, by request; the rest must fit
    if dtype.kind == "b":  # numpy's truthiness, asked for explicitly
        return array.astype(dtype)
    return _checked(array, dtype, var, "the dtype asked for")


def _checked(array: np.ndarray, dtype: np.dtype, var: str, target: str) -> np.ndarray:
    """``array.astype(dtype)``, or InvalidArgumentError naming the first value it does not keep."""
    try:
        with np.errstate(over="ignore", invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # the overflow is reported below, with the value
            out = array.astype(dtype)
    except (ValueError, TypeError, OverflowError) as exc:  # '12a' into int, a str into a datetime...
        raise InvalidArgumentError(
            f"data for var_name {var!r} cannot be converted to {target} ({exc}). Convert it first."
        ) from exc
    if np.can_cast(array.dtype, dtype, casting="safe") and dtype.kind not in "mM":
        return out  # numpy calls datetime unit changes safe, yet years past 2262 overflow in ns
    lost = np.flatnonzero(_lost(array, out))
    if lost.size:
        first = int(lost[0])
        wider = np.result_type(array.dtype, dtype) if array.dtype.kind != "f" or dtype.kind == "f" else array.dtype
        raise InvalidArgumentError(
            f"data for var_name {var!r} holds {array.reshape(-1)[first].item()!r}, which {target} {dtype} "
            f"cannot hold (it would become {out.reshape(-1)[first].item()!r}; {lost.size} value(s) do not fit). "
            + (
                f"Widen the stored dtype first, e.g. sg.astype({var!r}, {wider.str!r}, phase=...)."
                if target == "the stored dtype"
                else f"Choose a dtype that holds every value, e.g. {wider.str!r}."
            )
        )
    return out


def _lost(array: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Which values of ``array`` its cast ``out`` does not keep (a flat boolean mask)."""
    source, target = array.reshape(-1), out.reshape(-1)
    if target.dtype.kind in "fc" and source.dtype.kind in "fc":  # precision may go, magnitude may not
        return np.asarray(np.isfinite(source) & ~np.isfinite(target))
    if target.dtype.kind in "fc":
        return np.asarray(~np.isfinite(target))
    if target.dtype.kind in "iu" and source.dtype.kind == "f":
        info = np.iinfo(target.dtype)  # NaN and inf fail both comparisons: they are lost too
        return np.asarray(~((source >= float(info.min)) & (source <= float(info.max))))
    if target.dtype.kind in "iu" and source.dtype.kind in "iub":
        info = np.iinfo(target.dtype)
        return np.asarray((source < int(info.min)) | (source > int(info.max)))
    if source.dtype.kind in "US" and target.dtype.kind not in "US":
        return np.zeros(source.shape, dtype=bool)  # parsed text: a value that does not parse raised already
    back = target.astype(source.dtype)
    if target.dtype.kind in "mM":
        return np.asarray(~(np.isnat(source) & np.isnat(back)) & (back != source))
    return np.asarray(back != source)


#: Elements one variable may hold: numpy indexes arrays with int64.
MAX_ELEMENTS = 2**62


def common_dtype(dtypes: list[np.dtype], what: str) -> np.dtype:
    """The dtype that holds every value of every one of ``dtypes`` (phases read as one array).

    numpy's promotion can lose values (int64 and float32 become float64, past 2**53 inexact;
    datetime64 units overflow; ints and strings become strings): a promotion that could is
    refused instead.

    Raises
    ------
    ValidationError
        Naming the dtypes and the fix (one dtype for the variable, as compile() requires).
    """
    unique = sorted(set(dtypes), key=str)
    if len(unique) == 1:
        return unique[0]
    try:
        result = np.result_type(*unique)
    except TypeError:  # no common dtype at all (datetime and int, bytes and str...)
        result = None
    if result is None or not all(_holds(result, d) for d in unique):
        why = "they have no common dtype" if result is None else f"promoting them to {result} would lose values"
        raise ValidationError(
            f"{what} must have dtypes that one dtype holds exactly to be read as one array. Got "
            f"{[str(d) for d in unique]}: {why}. Convert the phases to one dtype with astype(), as compile() requires."
        )
    return result


def _holds(wide: np.dtype, narrow: np.dtype) -> bool:
    """True when every value of ``narrow`` is exactly a value of ``wide``."""
    if (narrow.kind in "US") != (wide.kind in "US"):  # numbers are not text
        return False
    if narrow.kind in "iub" and wide.kind in "fc":  # ints into floats: the mantissa must hold them
        mantissa = np.finfo(wide).nmant + 1
        return narrow.kind == "b" or 8 * narrow.itemsize - (narrow.kind == "i") <= mantissa
    if narrow.kind in "mM" or wide.kind in "mM":
        return narrow == wide
    return bool(np.can_cast(narrow, wide, casting="safe"))


def check_shape(shape: Any) -> tuple[int, ...]:
    """A full shape ``(N, ...)`` of non-negative ints, with fewer than 2**62 elements in all."""
    ok = isinstance(shape, (tuple, list)) and len(shape) >= 1 and all(is_int(d) and d >= 0 for d in shape)
    if not ok:
        raise InvalidArgumentError(f"shape must be a tuple of non-negative ints (N, ...). Got {shape!r} instead.")
    dims = tuple(int(d) for d in shape)
    if math.prod(dims) >= MAX_ELEMENTS:
        raise InvalidArgumentError(f"shape must hold fewer than 2**62 elements. Got {dims} ({math.prod(dims)}).")
    return dims


def check_dtype(dtype: Any) -> np.dtype:
    """A storable numpy dtype, in native byte order, from a dtype or its name."""
    try:
        parsed = np.dtype(dtype)
    except (TypeError, ValueError) as exc:
        raise InvalidArgumentError(f"dtype must be a numpy dtype or its name. Got {dtype!r} instead.") from exc
    return check_storable(parsed, "dtype")
