"""Keep each order's state: ``python -m samples.reporter`` (group "reporter")."""

from __future__ import annotations

from .handlers import Reporter
from .service import run

if __name__ == "__main__":
    run(__doc__ or "", "reporter", lambda bus, args: Reporter())
