"""The show_info table (text for terminals, HTML for notebooks)."""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import TYPE_CHECKING

from storegate.phases import PHASES

if TYPE_CHECKING:
    from storegate.gate import StoreGate

__all__ = ["Table", "collect", "render_html", "render_text"]

HEADERS = ("phase", "backend", "var_name", "dtype", "row shape", "rows", "chunk rows", "stored", "codec")


@dataclass(frozen=True)
class Table:
    """A title, a header and rows of strings."""

    title: str
    headers: tuple[str, ...]
    rows: list[tuple[str, ...]]


def collect(gate: StoreGate) -> Table:
    """The table of the gate's current data_id, over every store behind its backend."""
    data_id = gate._id()
    meta = gate.get_metadata()
    title = (
        f"StoreGate data_id={data_id!r} backend={gate.backend!r} mode={gate.mode!r} "
        f"compiled={meta['compiled']} location={gate.store.location}"
    )
    rows = [
        _row(phase, mode, store, data_id, var)
        for phase in PHASES
        for mode, store in gate.store.stores().items()
        for var in store.var_names(data_id, phase)
    ]
    return Table(title, HEADERS, rows)


def _row(phase: str, mode: str, store: object, data_id: str, var: str) -> tuple[str, ...]:
    info = store.info(data_id, phase, var)  # type: ignore[attr-defined]
    return (
        phase,
        mode,
        var,
        str(info.dtype),
        str(info.shape[1:]),
        str(info.shape[0]),
        "-" if info.chunk_rows is None else str(info.chunk_rows),
        "-" if info.stored_bytes is None else _human_bytes(info.stored_bytes),
        info.codec or "-",
    )


def _human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def render_text(table: Table) -> str:
    """A fixed-width text table."""
    widths = [max(len(h), *(len(r[i]) for r in table.rows)) for i, h in enumerate(table.headers)]
    line = "  ".join("-" * w for w in widths)
    head = "  ".join(h.ljust(w) for h, w in zip(table.headers, widths, strict=True))
    body = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in table.rows] or ["(no data)"]
    return "\n".join([table.title, head, line, *body])


def render_html(table: Table) -> str:
    """The same table as HTML, for notebooks."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in table.headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in table.rows)
    return (
        f"<div><p>{html.escape(table.title)}</p><table><thead><tr>{head}</tr></thead>"
        f"<tbody>{body}</tbody></table></div>"
    )
