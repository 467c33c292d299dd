"""``python -m backbone``: the same as the ``backbone`` command."""

from __future__ import annotations

from .cli import main

if __name__ == "__main__":
    main()
