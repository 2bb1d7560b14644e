"""Commit counters: a warm row read checks a data_id's commit record with one memory read.

Every read of a zarr store checks that the commit record it goes by is still the newest (see
``ZarrBackend.start_read`` / ``unchanged``): an open, a read and a close of a small file, or a
``stat``, each 2-3 us here, more than a memmap's whole random row (about 1.2 us). On a disk of
this machine a counter next to the write lock tells the same from shared memory:

- **writers** (who hold the data_id's write lock) make the counter odd before they change the
  record and even, one more than any value before, once it is changed (:func:`counting`), a
  seqlock; mode 'w' and deleting a data_id leave it odd (:func:`poison`): readers then read
  the record until the next commit;
- **readers** map the counter (:func:`watch`), read it *before* the record, and trust a record
  read under an even value for as long as the counter keeps that value;
- only file systems of this machine's own disks count (:func:`stat_is_fresh`): a NAS folder's
  writers may sit on other machines, whose writes no shared memory shows;
- what storegate does not write (files deleted or copied in by hand, storegate versions
  before this counter) changes no counter: a reader maps the counter afresh every
  second (:data:`WATCH_NS`) and then reads the record, so it sees such changes within that time;
- a mapped file cut short in place (``cp`` over a live store truncates what it overwrites)
  kills a reader with SIGBUS at its next read of it, as with a numpy memmap: a ``pread`` per
  row instead would cost 0.6 us (a third of a warm row) and release the GIL on every row.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import re
from collections.abc import Iterator

__all__ = ["WATCH_NS", "counter_key", "counting", "poison", "stat_is_fresh", "watch"]

#: How long a reader trusts its mapping of a counter before mapping it again (see above), in ns.
WATCH_NS = 1_000_000_000

_SIZE = 8  # one little-endian int64

#: File systems whose files every process of this machine shares through one page cache.
_LOCAL_FILE_SYSTEMS = frozenset(
    {"ext2", "ext3", "ext4", "xfs", "btrfs", "tmpfs", "ramfs", "f2fs", "zfs", "overlay", "bcachefs", "jfs", "nilfs2"}
)
_MOUNTINFO = "/proc/self/mountinfo"


def counter_key(locks_prefix: str, name: str) -> str:
    """The counter's key below the store root, beside the write lock ``<locks_prefix>/<name>.lock``."""
    return f"{locks_prefix}/{name}.commits"


@contextlib.contextmanager
def counting(path: str) -> Iterator[None]:
    """Around a change of the commit record the counter at ``path`` counts: odd during it, then
    a new even value (also when the change raised: it may have landed). Hold the write lock."""
    fd = _open(path)
    try:
        during = _odd(_value(fd))
        _set(fd, during)
        try:
            yield
        finally:
            _set(fd, during + 1)
    finally:
        os.close(fd)


def poison(path: str) -> None:
    """Leave the counter at ``path`` odd: readers read the record until the next commit."""
    fd = _open(path)
    try:
        _set(fd, _odd(_value(fd)))
    finally:
        os.close(fd)


def watch(path: str) -> memoryview | None:
    """The counter at ``path``, mapped read-only (``[0]`` is its value now); ``None`` when there
    is none yet, or it cannot be mapped. Map it again after :data:`WATCH_NS` (see above)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        mapped = mmap.mmap(fd, _SIZE, access=mmap.ACCESS_READ)
    except (OSError, ValueError):  # a counter cut short: no writer finished creating it
        return None
    finally:
        os.close(fd)  # the mapping keeps the file
    return memoryview(mapped).cast("q")


def stat_is_fresh(path: str) -> bool:
    """True when ``path`` lies on a disk of this machine (every process sees its writes at once).

    Reads ``/proc/self/mountinfo`` (Linux); elsewhere, or when it cannot tell, False: readers
    then read the commit record every time, which is always right.
    """
    try:
        with open(_MOUNTINFO, encoding="utf-8") as lines:
            mounts = [_mount(line) for line in lines]
    except (OSError, ValueError, IndexError):
        return False
    real = os.path.realpath(path)
    best, fstype = "", ""
    for point, kind in mounts:
        inside = real == point or real.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, fstype = point, kind
    return fstype in _LOCAL_FILE_SYSTEMS


def _mount(line: str) -> tuple[str, str]:
    """``(mount point, file system type)`` of one mountinfo line (see proc(5))."""
    fields = line.split()
    point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[4])  # a space comes as \040
    return point, fields[fields.index("-") + 1]


def _open(path: str) -> int:
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except FileNotFoundError:  # the first of its folder
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    if os.fstat(fd).st_size < _SIZE:  # new: readers map it only once it has its 8 bytes
        os.pwrite(fd, bytes(_SIZE), 0)
    return fd


def _value(fd: int) -> int:
    return int.from_bytes(os.pread(fd, _SIZE, 0), "little", signed=True)


def _set(fd: int, value: int) -> None:
    os.pwrite(fd, value.to_bytes(_SIZE, "little", signed=True), 0)


def _odd(value: int) -> int:
    return value + 1 if value % 2 == 0 else value + 2
