"""The ``storegate`` command (also ``python -m storegate``): stores from a shell.

Subcommands: ``ls`` and ``info`` (what a store holds; ``--json`` for scripts), ``import``
and ``export`` (``.npy`` / ``.npz`` / HDF5 / CSV files in, ``.npz`` / HDF5 out), ``verify``
(every variable readable, commits and compile state; exit status 1 on a problem),
``migrate`` (zarr v2 to v3, in place) and ``cp`` (a store between a local folder, a NAS
path and S3, with its metadata). A STORE is a local or NAS path, a ``file://`` URL or an
fsspec URL such as ``s3://bucket/prefix``; fsspec options are given as in the API's
``storage_options``, with ``--storage-options JSON`` or ``-o KEY=VALUE`` (repeatable,
dotted keys nest: ``-o client_kwargs.endpoint_url=http://127.0.0.1:9000``; values are JSON
when they parse as JSON, else strings).

Exit status: 0 done; 1 a storegate error (the message on stderr) or, for ``verify``,
a problem found; 2 a bad command line. Built on click.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import click
import fsspec

from storegate.errors import NotFoundError, StoreGateError, ValidationError
from storegate.gate import StoreGate
from storegate.info import collect, render_text
from storegate.locations import inspect_root, resolve_location
from storegate.migrate import add_dimension_names, convert_to_v3
from storegate.phases import PHASES
from storegate.transfer import copy_store, unfinished_copy

__all__ = ["main"]

F = TypeVar("F", bound=Callable[..., Any])

_EPILOG = """\b
Examples:
  storegate ls ./store.zarr
  storegate info ./store.zarr digits --json
  storegate verify s3://bucket/store -o client_kwargs.endpoint_url=http://127.0.0.1:9000
  storegate cp ./store.zarr s3://bucket/store --dst-options '{"anon": false}'
  storegate migrate /nas/old-multiml-store
  storegate import ./store.zarr digits https://host/digits.npz --phase 0.8,0.1,0.1 --sha256 <hex>
  storegate export ./store.zarr digits ./digits.h5 --phase test
"""


def _options(values: Sequence[str], json_text: str | None, flag: str) -> dict[str, Any] | None:
    """fsspec storage_options from ``--storage-options JSON`` and ``-o KEY=VALUE`` pairs."""
    options: dict[str, Any] = {}
    if json_text is not None:
        try:
            loaded = json.loads(json_text)
        except ValueError as exc:
            raise click.BadParameter(f"must be a JSON object. Got {json_text!r} ({exc}).", param_hint=flag) from None
        if not isinstance(loaded, dict):
            raise click.BadParameter(f"must be a JSON object. Got {json_text!r}.", param_hint=flag)
        options.update(loaded)
    for item in values:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"must be KEY=VALUE. Got {item!r}.", param_hint="-o")
        *parents, leaf = key.split(".")
        node = options
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = _value(raw)
    return options or None


def _value(raw: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def _store_options(func: F) -> F:
    func = click.option("-o", "option", multiple=True, metavar="KEY=VALUE", help="An fsspec storage option.")(func)
    return click.option("--storage-options", metavar="JSON", help="fsspec storage_options as a JSON object.")(func)


def _open(store: str, option: Sequence[str], storage_options: str | None, data_id: str | None = None) -> StoreGate:
    args = {"output_dir": store, "storage_options": _options(option, storage_options, "--storage-options"), "mode": "r"}
    return StoreGate("zarr", args, data_id=data_id)


def _run(action: Callable[[], int | None]) -> None:
    """Run a subcommand: a storegate error becomes its message on stderr and exit status 1."""
    try:
        status = action()
    except StoreGateError as exc:
        click.echo(f"storegate: error: {exc}", err=True)
        sys.exit(1)
    sys.exit(status or 0)


@click.group(epilog=_EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="storegate")
def cli() -> None:
    """storegate: a Zarr-native array store for machine-learning data."""


@cli.command(epilog=_EPILOG)
@click.argument("store")
@click.argument("data_id", required=False)
@click.argument("phase", required=False, type=click.Choice(PHASES))
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@_store_options
def ls(store: str, data_id: str | None, phase: str | None, as_json: bool, **kw: Any) -> None:
    """List the data_ids of STORE, the phases of a DATA_ID, or the variables of a PHASE."""

    def action() -> None:
        sg = _open(store, kw["option"], kw["storage_options"], data_id)
        listing = _listing(sg, data_id, phase)
        if as_json:
            click.echo(json.dumps(list(listing) if data_id is None else listing, indent=2))
        else:
            for name, what in listing.items():
                click.echo(name if what is None else f"{name}\t{_text(what)}")

    _run(action)


def _listing(sg: StoreGate, data_id: str | None, phase: str | None) -> dict[str, Any]:
    if data_id is None:
        return dict.fromkeys(sg.get_data_ids())
    if data_id not in sg.get_data_ids():
        raise _no_data_id(sg, data_id)
    if phase is None:
        return {p: {"rows": _rows(sg, p), "var_names": sg.get_var_names(p)} for p in PHASES}
    table = collect("zarr", sg.backend_object, data_id)
    rows = [dict(zip(table.headers, r, strict=True)) for r in table.rows if r[0] == phase]
    return {
        r["var_name"]: {"dtype": r["dtype"], "rows": int(r["rows"]), "row shape": _shape(r["row shape"])} for r in rows
    }


def _json_row(row: dict[str, str]) -> dict[str, Any]:
    """A show_info row for scripts: numbers as numbers, the row shape as a list, '-' as null."""
    out: dict[str, Any] = {k: None if v == "-" else v for k, v in row.items()}
    out["row shape"] = _shape(row["row shape"])
    for key in ("rows", "chunk rows"):
        out[key] = None if row[key] == "-" else int(row[key])
    return out


def _rows(sg: StoreGate, phase: str) -> int | None:
    """The rows of a phase; None when its variables disagree (``storegate ls ... <phase>`` shows each)."""
    try:
        return len(sg[phase])
    except ValidationError:
        return None


def _shape(text: str) -> list[int | None]:
    """A row shape as show_info prints it, ``'(None, 2)'``, as a JSON list."""
    inside = text.strip("()").replace(" ", "")
    return [None if part == "None" else int(part) for part in inside.split(",") if part]


def _text(what: dict[str, Any]) -> str:
    if "row shape" in what:
        what = {**what, "row shape": tuple(what["row shape"])}
    return "  ".join(f"{key}={value}" for key, value in what.items())


def _no_data_id(sg: StoreGate, data_id: str) -> StoreGateError:
    return NotFoundError(
        f"data_id {data_id!r} does not exist in the store at {sg.backend_object.location}. "
        f"Stored data_ids: {sg.get_data_ids()}."
    )


@cli.command(epilog=_EPILOG)
@click.argument("store")
@click.argument("data_id", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@_store_options
def info(store: str, data_id: str | None, as_json: bool, **kw: Any) -> None:
    """The show_info table of each data_id of STORE (or of DATA_ID)."""

    def action() -> None:
        sg = _open(store, kw["option"], kw["storage_options"])
        chosen = sg.get_data_ids() if data_id is None else [data_id]
        tables = []
        for one in chosen:
            if one not in sg.get_data_ids():
                raise _no_data_id(sg, one)
            sg.set_data_id(one)
            tables.append((one, collect("zarr", sg.backend_object, one), sg.get_metadata(), sg.get_sources()))
        if as_json:
            out = {
                one: {
                    "metadata": meta,
                    "variables": [_json_row(dict(zip(t.headers, r, strict=True))) for r in t.rows],
                    "sources": sources,
                }
                for one, t, meta, sources in tables
            }
            click.echo(json.dumps(out, indent=2))
        else:
            click.echo("\n\n".join(render_text(t) for _, t, _, _ in tables) or "no data_id in this store")

    _run(action)


@cli.command(epilog=_EPILOG)
@click.argument("store")
@click.argument("data_ids", nargs=-1)
@click.option("--no-read-data", is_flag=True, help="Check metadata and commits only; read no chunk.")
@click.option("--progress/--no-progress", default=None, help="A progress bar (default: on a terminal).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@_store_options
def verify(
    store: str, data_ids: tuple[str, ...], no_read_data: bool, progress: bool | None, as_json: bool, **kw: Any
) -> None:
    """Check every variable of STORE (or of DATA_IDS): exit status 1 when a problem is found."""

    def action() -> int:
        options = _options(kw["option"], kw["storage_options"], "--storage-options")
        sg = _open(store, kw["option"], kw["storage_options"])
        unfinished = unfinished_copy(store, options)
        if unfinished is not None:  # its commit records are copied last: the data_ids would look fine or absent
            click.echo(
                f"{store}: an unfinished copy ({unfinished}): storegate cp was stopped; remove it and copy again"
            )
            return 1
        chosen = list(data_ids) or sg.get_data_ids()
        reports = []
        for one in chosen:
            if one not in sg.get_data_ids():
                raise _no_data_id(sg, one)
            sg.set_data_id(one)
            show = sys.stderr.isatty() if progress is None else progress
            reports.append((one, sg.verify(read_data=not no_read_data, progress=show), sg.get_metadata()))
        if as_json:
            out = {
                one: {
                    "ok": r.ok,
                    "compiled": meta["compiled"],
                    "findings": [{"path": f.path, "what": f.what, "repairable": f.repairable} for f in r.findings],
                }
                for one, r, meta in reports
            }
            click.echo(json.dumps(out, indent=2))
        else:
            for _, report, meta in reports:
                click.echo(f"{report} (compiled={meta['compiled']})" if report.ok else str(report))
        return 0 if all(r.ok for _, r, _ in reports) else 1

    _run(action)


@cli.command(epilog=_EPILOG)
@click.argument("store")
@click.option("--progress/--no-progress", default=None, help="A progress bar (default: on a terminal).")
@_store_options
def migrate(store: str, progress: bool | None, **kw: Any) -> None:
    """Bring STORE up to date: zarr v2 (multiml's) to v3, checked, and zarr v3 dimension_names for xarray."""

    def action() -> None:
        options = _options(kw["option"], kw["storage_options"], "--storage-options")
        try:
            root = inspect_root(resolve_location(store, options).make_store(read_only=True))
        except FileNotFoundError:
            raise NotFoundError(f"STORE must hold a zarr store to migrate. Got {store}, where there is none.") from None
        if root.formats == (2,):
            convert_to_v3(store, options, progress=sys.stderr.isatty() if progress is None else progress)
            click.echo(f"converted {store} to zarr v3 (with dimension_names)")
            return
        named = add_dimension_names(store, options)
        click.echo(f"named the dimensions of {named} array(s) of {store}" if named else f"{store} is up to date")

    _run(action)


@cli.command(epilog=_EPILOG)
@click.argument("source")
@click.argument("destination")
@click.option("--data-id", "data_ids", multiple=True, help="A data_id to copy (repeatable; default: every one).")
@click.option("--src-options", metavar="JSON", help="fsspec storage_options of SOURCE as a JSON object.")
@click.option("--dst-options", metavar="JSON", help="fsspec storage_options of DESTINATION as a JSON object.")
@click.option("--progress/--no-progress", default=None, help="A progress bar (default: on a terminal).")
def cp(
    source: str,
    destination: str,
    data_ids: tuple[str, ...],
    src_options: str | None,
    dst_options: str | None,
    progress: bool | None,
) -> None:
    """Copy the store SOURCE to the empty location DESTINATION, with its metadata, then verify the copy."""

    def action() -> int:
        src = _options((), src_options, "--src-options")
        dst = _options((), dst_options, "--dst-options")
        show = sys.stderr.isatty() if progress is None else progress
        copied = copy_store(
            source,
            destination,
            source_options=src,
            destination_options=dst,
            data_ids=list(data_ids) or None,
            progress=show,
        )
        sg = StoreGate("zarr", {"output_dir": destination, "storage_options": dst, "mode": "r"})
        bad = []
        for one in copied:
            sg.set_data_id(one)
            report = sg.verify(read_data=False)
            if not report.ok:
                bad.append(str(report))
        click.echo(f"copied {len(copied)} data_id(s) {copied} from {source} to {destination}")
        for text in bad:
            click.echo(text, err=True)
        return 1 if bad else 0

    _run(action)


@contextlib.contextmanager
def _undone_if_failed(args: dict[str, Any], data_id: str) -> Iterator[None]:
    """A failed import leaves no store and no data_id that it made (the import itself writes nothing)."""
    existed = _data_ids(args)
    try:
        yield
    except BaseException:
        if existed is None:  # there was no store: remove the one opening it made
            with contextlib.suppress(Exception):
                fs, path = fsspec.core.url_to_fs(str(args["output_dir"]), **(args["storage_options"] or {}))
                fs.rm(path, recursive=True)
        elif data_id not in existed:
            with contextlib.suppress(Exception):
                sg = StoreGate("zarr", {**args, "mode": "a"})
                if data_id in sg.get_data_ids() and not sg.backend_object.var_names(data_id, "train"):
                    sg.backend_object.delete_data_id(data_id)
        raise


def _data_ids(args: dict[str, Any]) -> list[str] | None:
    """The store's data_ids, or None when there is no store."""
    try:
        return StoreGate("zarr", {**args, "mode": "r"}).get_data_ids()
    except NotFoundError:
        return None


def _phase(text: str) -> Any:
    """A phase name, or three fractions / counts separated by commas (``0.8,0.1,0.1``)."""
    if "," not in text:
        return text
    parts = [p.strip() for p in text.split(",")]
    try:
        return tuple(int(p) if p.lstrip("-").isdigit() else float(p) for p in parts)
    except ValueError:
        raise click.BadParameter(
            f"must be a phase name or three fractions or counts (0.8,0.1,0.1). Got {text!r}.", param_hint="--phase"
        ) from None


@cli.command(name="import", epilog=_EPILOG)
@click.argument("store")
@click.argument("data_id")
@click.argument("source")
@click.option("--var", "var_names", multiple=True, help="Variable name, one per key (default: from the file).")
@click.option("--key", "keys", multiple=True, help="npz member, HDF5 dataset or CSV column to import (repeatable).")
@click.option("--phase", default="train", show_default=True, help="A phase, or fractions / counts: 0.8,0.1,0.1.")
@click.option("--sha256", help="The source's SHA-256: checked before anything is written.")
@click.option("--format", "format_", type=click.Choice(["npy", "npz", "hdf5", "csv", "tsv"]), help="Default: suffix.")
@click.option("--source-options", metavar="JSON", help="fsspec storage_options of SOURCE as a JSON object.")
@click.option("--progress/--no-progress", default=None, help="A progress bar (default: on a terminal).")
@_store_options
def import_(store: str, data_id: str, source: str, var_names: tuple[str, ...], keys: tuple[str, ...], phase: str,
            sha256: str | None, format_: str | None, source_options: str | None, progress: bool | None,
            **kw: Any) -> None:  # fmt: skip
    """Import SOURCE (.npy, .npz, .h5, .csv, .tsv; a path or URL) into DATA_ID of STORE (created if needed)."""

    def action() -> None:
        args = {"output_dir": store, "storage_options": _options(kw["option"], kw["storage_options"], "-o")}
        with _undone_if_failed(args, data_id):
            _import(args, data_id)

    def _import(args: dict[str, Any], data_id: str) -> None:
        sg = StoreGate("zarr", {**args, "mode": "a"}, data_id=data_id)
        written = sg.import_file(
            source,
            list(var_names) or None,
            _phase(phase),
            keys=list(keys) or None,
            sha256=sha256,
            format=format_,
            storage_options=_options((), source_options, "--source-options"),
            progress=sys.stderr.isatty() if progress is None else progress,
        )
        rows = sum(r["rows"] for records in written.values() for r in records)
        click.echo(f"imported {source} into {sorted(written)} ({rows} rows in all)")

    _run(action)


@cli.command(epilog=_EPILOG)
@click.argument("store")
@click.argument("data_id")
@click.argument("destination")
@click.option("--var", "var_names", multiple=True, help="A variable to export (repeatable; default: every one).")
@click.option("--phase", default="all", show_default=True, type=click.Choice([*PHASES, "all"]))
@click.option("--dst-options", metavar="JSON", help="fsspec storage_options of DESTINATION as a JSON object.")
@click.option("--progress/--no-progress", default=None, help="A progress bar (default: on a terminal).")
@_store_options
def export(store: str, data_id: str, destination: str, var_names: tuple[str, ...], phase: str,
           dst_options: str | None, progress: bool | None, **kw: Any) -> None:  # fmt: skip
    """Export variables of DATA_ID in STORE to DESTINATION (.npz or .h5; a path or URL)."""

    def action() -> None:
        sg = _open(store, kw["option"], kw["storage_options"], data_id)
        if data_id not in sg.get_data_ids():
            raise _no_data_id(sg, data_id)
        keys = sg.export_file(
            destination,
            list(var_names) or None,
            phase,
            storage_options=_options((), dst_options, "--dst-options"),
            progress=sys.stderr.isatty() if progress is None else progress,
        )
        click.echo(f"exported {len(keys)} arrays to {destination}: {keys}")

    _run(action)


def main(argv: Sequence[str] | None = None) -> None:
    """Run the command line (the ``storegate`` console script)."""
    cli.main(args=list(argv) if argv is not None else None, prog_name="storegate")
