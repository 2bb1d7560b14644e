"""``python -m storegate``: the ``storegate`` command (see :mod:`storegate.cli`)."""

from __future__ import annotations

from storegate.cli import main

if __name__ == "__main__":
    main()
