"""The rules every layer checks, each written once: integers, lengths, shapes, dtypes, casts.

This module sits at the bottom of the package (it imports only :mod:`storegate.errors`),
so that the parsing modules, the backends, the engine and the adapters all raise the same
error with the same message for the same fault.
"""

from __future__ import annotations

import importlib
import math
import sys
import warnings
from collections.abc import Iterator, Mapping
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
    "check_timeout",
    "common_dtype",
    "common_length",
    "convert",
    "is_int",
    "is_tensor",
    "optional_module",
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


def check_bool(arg: str, value: object) -> bool:
    """``value`` as a bool: ``True`` / ``False`` (numpy's too); anything else raises.

    Raises
    ------
    InvalidArgumentError
        Naming ``arg`` and the value given (``'yes'`` would otherwise count as true).
    """
    if not isinstance(value, (bool, np.bool_)):
        raise InvalidArgumentError(f"{arg} must be True or False. Got {value!r} instead.")
    return bool(value)


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


#: The longest wait storegate takes, in seconds (about 115 days): the OS's timers overflow long before infinity.
MAX_TIMEOUT = 10**7


def check_timeout(arg: str, value: object) -> float:
    """``value`` as seconds: a real number in ``(0, MAX_TIMEOUT]`` (a bool is refused)."""
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))
    if not ok or not 0 < float(value) <= MAX_TIMEOUT:  # type: ignore[arg-type]  # NaN fails too
        raise InvalidArgumentError(
            f"{arg} must be a number of seconds > 0 and at most {MAX_TIMEOUT:.0e} (e.g. 60 or 0.5; there is no "
            f"'wait for ever'). Got {value!r} instead."
        )
    return float(value)  # type: ignore[arg-type]


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
    elif isinstance(data, (list, tuple)) and array.dtype.kind in "USf":
        _check_list_values(data, array.dtype, arg)
    dtype = check_storable(array.dtype, arg)
    if not array.dtype.isnative:
        return array.astype(dtype)
    return array if array.dtype.char == dtype.char else array.view(dtype)  # 'q' is int64, by its name


def _check_list_values(data: list[Any] | tuple[Any, ...], dtype: np.dtype, arg: str) -> None:
    """Refuse what numpy changes without a word when it converts a list: numbers mixed with
    text become text (``[1, 'a']`` is ``['1', 'a']``), ints past 2**53 mixed with floats, or
    past int64, become rounded floats."""
    for value in _leaves(data):
        if dtype.kind in "US":
            bad = value.dtype.kind not in "US" if isinstance(value, np.ndarray) else not isinstance(value, (str, bytes))
            if bad:
                raise InvalidArgumentError(
                    f"{arg} mixes text with {type(value).__name__} values ({_brief(value)}), which numpy would store "
                    "as text. Give one kind of value: convert the numbers with str() first, or store them apart."
                )
        elif _inexact_int(value):
            raise InvalidArgumentError(
                f"{arg} holds the integer {_brief(value)}, which float64 cannot hold exactly (numpy would round it "
                "when it mixes ints and floats or an int does not fit int64). Give an integer array "
                "(np.array(values, dtype='u8') or 'i8'), or floats."
            )


def _leaves(data: Any) -> Iterator[Any]:
    """The scalars (and arrays) inside nested lists and tuples."""
    stack = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, (list, tuple)):
            stack.extend(item)
        else:
            yield item


def _inexact_int(value: Any) -> bool:
    if isinstance(value, np.ndarray):
        return value.dtype.kind in "iu" and value.size > 0 and int(np.abs(value).max()) > 2**53
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool) and abs(int(value)) > 2**53


def _brief(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


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
    as numpy's ``astype`` does), but no value may wrap, overflow, lose its imaginary part or
    fail to parse: 300 into int8, NaN or inf into an int, 1e39 into float32, 1+1j into a
    float and ``'abc'`` into an int raise.

    Raises
    ------
    InvalidArgumentError
        Naming the variable and the first value that does not fit.
    """
    if array.dtype == dtype:
        return array
    if dtype.kind == "b":  # numpy's truthiness, asked for explicitly
        return array.astype(dtype)
    source = np.trunc(array) if array.dtype.kind == "f" and dtype.kind in "iu" else array
    return _checked(source, dtype, var, "the dtype asked for", shown=array)


def _checked(array: np.ndarray, dtype: np.dtype, var: str, target: str, shown: np.ndarray | None = None) -> np.ndarray:
    """``array.astype(dtype)``, or InvalidArgumentError naming the first value it does not keep.

    ``shown`` is the array the caller gave, when ``array`` was derived from it (truncated).
    """
    try:
        with np.errstate(over="ignore", invalid="ignore"), warnings.catch_warnings():
            # The overflow (and numpy's ComplexWarning) is reported below, with the value.
            warnings.simplefilter("ignore", RuntimeWarning)
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
        given = (array if shown is None else shown).reshape(-1)[first]
        raise InvalidArgumentError(
            f"data for var_name {var!r} holds {_show(given)}, which {target} {dtype} cannot hold (it would "
            f"become {_show(out.reshape(-1)[first])}; {lost.size} value(s) do not fit). "
            + _widen_hint(array.dtype, dtype, var, target)
        )
    return out


def _show(value: Any) -> str:
    """A value for a message: dates as dates, not as their integer count."""
    return repr(str(value)) if isinstance(value, (np.datetime64, np.timedelta64)) else repr(value.item())


def _widen_hint(given: np.dtype, stored: np.dtype, var: str, target: str) -> str:
    """How to make room: a dtype that holds every value of both, when one exists."""
    if given.kind == "f" and stored.kind in "iu":
        wider: np.dtype | None = given
    elif stored.kind in "US" and given.kind in "iufUS":  # text long enough for every value
        wider = np.result_type(given, stored)
    else:
        wider = _lossless(given, stored)
    if wider is None:
        return f"No dtype holds every {given} and every {stored} value exactly: convert the data first."
    if target == "the stored dtype":
        return f"Widen the stored dtype first, e.g. sg.astype({var!r}, {wider.str!r}, phase=...)."
    return f"Choose a dtype that holds every value, e.g. {wider.str!r}."


def _lossless(a: np.dtype, b: np.dtype) -> np.dtype | None:
    try:
        wider = np.result_type(a, b)
    except TypeError:
        return None
    return wider if _holds(wider, a) and _holds(wider, b) else None


def _lost(array: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Which values of ``array`` its cast ``out`` does not keep (a flat boolean mask)."""
    source, target = array.reshape(-1), out.reshape(-1)
    lost = np.zeros(source.shape, dtype=bool)
    if source.dtype.kind == "c" and target.dtype.kind != "c":
        lost |= source.imag != 0  # the imaginary part would go (a NaN one too)
        source = source.real
    kind, to = source.dtype.kind, target.dtype.kind
    if to in "fc" and kind in "fc":  # precision may go, magnitude may not (each part of a complex)
        for part in (np.real, np.imag):
            lost |= np.isfinite(part(source)) & ~np.isfinite(part(target))
        return lost
    if to in "fc" and kind in "iub":
        return np.asarray(lost | ~np.isfinite(target))
    if to in "iu" and kind == "f":
        info = np.iinfo(target.dtype)
        # Exact bounds: min is -2**k and max + 1 is 2**k as floats (float(max) of int64 rounds
        # up to 2**63, which would wrap). NaN and inf fail both comparisons: they are lost too.
        return np.asarray(lost | ~((source >= float(info.min)) & (source < float(int(info.max) + 1))))
    if to in "iu" and kind in "iub":
        info = np.iinfo(target.dtype)
        return np.asarray(lost | (source < int(info.min)) | (source > int(info.max)))
    if kind in "US" and to not in "US":
        return lost  # parsed text: a value that does not parse raised already
    return np.asarray(lost | ~_round_trips(source, target))


def _round_trips(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Which values come back unchanged from ``target`` (NaN as NaN, NaT as NaT)."""
    try:
        back = target.astype(source.dtype)
    except (ValueError, TypeError, OverflowError):  # text that no longer parses: '1e' of 1e20
        if source.size <= 1:
            return np.zeros(source.shape, dtype=bool)
        return np.concatenate([_round_trips(source[i : i + 1], target[i : i + 1]) for i in range(source.size)])
    same = np.asarray(back == source)
    if source.dtype.kind in "mM":
        same |= np.isnat(source) & np.isnat(back)
    elif source.dtype.kind in "fc":
        same |= np.isnan(source) & np.isnan(back)
    return same


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
    if narrow.kind in "US" or wide.kind in "US":  # numbers are not text, and bytes are not str
        return narrow.kind == wide.kind and bool(np.can_cast(narrow, wide, casting="safe"))
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


def optional_module(name: str, needed_by: str, install: str) -> Any:
    """Import an optional dependency, or raise an InvalidArgumentError naming the command that installs it."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise InvalidArgumentError(f"{needed_by} needs {name}, which is not installed. Install it: {install}") from exc
