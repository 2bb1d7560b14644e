"""Run every benchmark under benchmarks/ and rewrite benchmarks/RESULTS.md.

Each benchmark is a module ``bench_*.py`` with a ``main() -> str`` that runs its
measurements (comparison baselines in the same run) and returns a Markdown section.
Run one alone with ``python benchmarks/run_all.py bench_core``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib
import os
import platform
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def machine_notes() -> str:
    """Machine and package versions, so figures can be compared across runs."""
    import numpy
    import zarr

    versions = [
        f"python {platform.python_version()}",
        f"numpy {numpy.__version__}",
        f"zarr {zarr.__version__}",
    ]
    for name in ("numcodecs", "fsspec", "s3fs", "torch", "h5py", "moto"):
        with contextlib.suppress(ImportError):
            versions.append(f"{name} {importlib.import_module(name).__version__}")
    return (
        f"- date: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M UTC}\n"
        f"- machine: {platform.machine()}, {os.cpu_count()} cores, {platform.system()} {platform.release()}\n"
        f"- versions: {', '.join(versions)}\n"
    )


def main(names: list[str]) -> None:
    sys.path.insert(0, str(HERE))
    modules = names or sorted(p.stem for p in HERE.glob("bench_*.py"))
    sections, failed = [], []
    for name in modules:
        start = time.perf_counter()
        print(f"== {name}", flush=True)
        module = importlib.import_module(name)
        section = module.main()
        # A benchmark may finish its report despite failed runs (bench_peers: a peer that hangs),
        # then list them in FAILURES: the run still ends with a non-zero exit.
        failed += [f"{name}: {f}" for f in getattr(module, "FAILURES", [])]
        print(section, flush=True)
        sections.append(f"{section}\n\n_{name} took {time.perf_counter() - start:.0f} s._\n")
    if not names:  # a partial run prints but does not overwrite the full results
        write_results(sections)
    if failed:
        sys.exit("failed runs:\n" + "\n".join(failed))


def write_results(sections: list[str]) -> None:
    """Rewrite RESULTS.md with the sections of a full run."""
    text = (
        "# Benchmark results\n\n"
        "Produced by `make bench` (`python benchmarks/run_all.py`). Every figure is a ratio "
        "against a baseline measured in the same run, so the machine's speed cancels out.\n\n"
        f"{machine_notes()}\n" + "\n".join(sections)
    )
    (HERE / "RESULTS.md").write_text(text)
    print(f"wrote {HERE / 'RESULTS.md'}")


if __name__ == "__main__":
    main(sys.argv[1:])
