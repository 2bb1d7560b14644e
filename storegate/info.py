"""The show_info table (text for terminals, HTML for notebooks).

One :class:`Table` is collected from the gate and rendered twice, so the terminal and
the notebook always show the same rows. Below the table, a section lists the other
objects of the store (:meth:`~storegate.backends.Backend.other_objects`): what other tools
left there, which storegate skips and leaves alone.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field

from storegate.backends import Backend, TieredBackend
from storegate.engine import GroupEngine
from storegate.phases import PHASES
from storegate.ragged_store import fold, is_ragged, lengths, offsets_name, values_name

__all__ = ["HEADERS", "OTHERS_TITLE", "Table", "collect", "render_html", "render_text"]

HEADERS = (
    "phase",
    "backend",
    "var_name",
    "dtype",
    "row shape",
    "rows",
    "chunk rows",
    "stored bytes",
    "codec",
    "lengths",
)
#: Columns holding numbers: right-aligned, so magnitudes line up.
_NUMERIC = frozenset({"rows", "chunk rows", "stored bytes"})
_MISSING = "-"
#: The heading of the section that lists the other objects.
OTHERS_TITLE = "other objects (not storegate variables: skipped and left alone)"


@dataclass(frozen=True)
class Table:
    """A title, a header and rows of strings, and the other objects as ``'path: what'`` lines."""

    title: str
    headers: tuple[str, ...]
    rows: list[tuple[str, ...]]
    others: list[str] = field(default_factory=list)


def collect(backend_name: str, backend: Backend, data_id: str | None) -> Table:
    """The table of one data_id, over every tier of the backend.

    Without a data_id the table has no rows and its title lists the stored data_ids, so
    displaying a fresh StoreGate in a notebook never raises.
    """
    if data_id is None:
        title = (
            f"StoreGate backend={backend_name!r} location={backend.location}: no data_id set "
            f"(stored data_ids: {backend.data_ids()}); call set_data_id() to choose one."
        )
        return Table(title, HEADERS, [], _others(backend, None))
    meta = GroupEngine(backend, data_id).metadata()
    tiers = backend.tiers() if isinstance(backend, TieredBackend) else {backend.name: backend}
    # The hybrid tier is multiml's "mode" (set_mode); other backends have none to show.
    mode = f"mode={backend.tier!r} " if isinstance(backend, TieredBackend) else ""
    title = (
        f"StoreGate data_id={data_id!r} backend={backend_name!r} {mode}"
        f"compiled={meta['compiled']} location={backend.location}"
    )
    rows = [
        _row(phase, tier, tier_backend, data_id, var)
        for phase in PHASES
        for tier, tier_backend in tiers.items()
        for var in fold(tier_backend.var_names(data_id, phase))
    ]
    return Table(title, HEADERS, rows, _others(backend, data_id))


def _others(backend: Backend, data_id: str | None) -> list[str]:
    return [f"{other.path}: {other.what}" for other in backend.other_objects(data_id)]


def _row(phase: str, tier: str, backend: Backend, data_id: str, var: str) -> tuple[str, ...]:
    if is_ragged(backend, data_id, phase, var):
        return _ragged_row(phase, tier, backend, data_id, var)
    info = backend.info(data_id, phase, var)
    return (
        phase,
        tier,
        var,
        str(info.dtype),
        str(info.shape[1:]),
        str(info.shape[0]),
        _MISSING if info.chunk_rows is None else str(info.chunk_rows),
        _MISSING if info.stored_bytes is None else human_bytes(info.stored_bytes),
        info.codec or _MISSING,
        _MISSING,
    )


def _ragged_row(phase: str, tier: str, backend: Backend, data_id: str, var: str) -> tuple[str, ...]:
    """A ragged variable: its values' dtype and codec, rows ``(None, *inner)``, both arrays' bytes,
    and the min / mean / max row length (read from the offsets)."""
    values, offsets = backend.info(data_id, phase, values_name(var)), backend.info(data_id, phase, offsets_name(var))
    stored = None if values.stored_bytes is None else values.stored_bytes + (offsets.stored_bytes or 0)
    sizes = lengths(backend, data_id, phase, var)
    spread = f"{sizes.min()} / {sizes.mean():.1f} / {sizes.max()}" if sizes.size else _MISSING
    return (
        phase,
        tier,
        var,
        str(values.dtype),
        str((None, *values.shape[1:])),
        str(offsets.shape[0]),
        _MISSING if offsets.chunk_rows is None else str(offsets.chunk_rows),
        _MISSING if stored is None else human_bytes(stored),
        values.codec or _MISSING,
        spread,
    )


def human_bytes(n: int) -> str:
    """``n`` bytes for people: ``'524 B'``, ``'18.6 KiB'``, ``'3.2 MiB'``..."""
    if n < 1024:
        return f"{n} B"
    size = n / 1024
    for unit in ("KiB", "MiB"):
        if size < 1024:
            return f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


def render_text(table: Table) -> str:
    """A fixed-width text table: two spaces between columns, numbers right-aligned."""
    widths = [max([len(h), *(len(r[i]) for r in table.rows)]) for i, h in enumerate(table.headers)]
    rule = "  ".join("-" * w for w in widths)
    lines = [_line(table.headers, table.headers, widths)]
    lines += [_line(row, table.headers, widths) for row in table.rows] or ["(no data)"]
    others = [f"{OTHERS_TITLE}:", *(f"  {other}" for other in table.others)] if table.others else []
    return "\n".join([table.title, lines[0], rule, *lines[1:], *others])


def _line(cells: tuple[str, ...], headers: tuple[str, ...], widths: list[int]) -> str:
    padded = (c.rjust(w) if h in _NUMERIC else c.ljust(w) for c, h, w in zip(cells, headers, widths, strict=True))
    return "  ".join(padded).rstrip()


def render_html(table: Table) -> str:
    """The same table as HTML, for notebooks."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in table.headers)
    body = "".join(_html_row(row, table.headers) for row in table.rows)
    if not table.rows:
        body = f'<tr><td colspan="{len(table.headers)}">(no data)</td></tr>'
    others = ""
    if table.others:
        items = "".join(f"<li>{html.escape(other)}</li>" for other in table.others)
        others = f"<p>{html.escape(OTHERS_TITLE)}:</p><ul>{items}</ul>"
    return (
        f'<div class="storegate-info"><p>{html.escape(table.title)}</p><table>'
        f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{others}</div>"
    )


def _html_row(row: tuple[str, ...], headers: tuple[str, ...]) -> str:
    cells = "".join(
        f'<td style="text-align: right">{html.escape(c)}</td>' if h in _NUMERIC else f"<td>{html.escape(c)}</td>"
        for c, h in zip(row, headers, strict=True)
    )
    return f"<tr>{cells}</tr>"
