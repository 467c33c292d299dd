"""Print every shipment step: ``python -m samples.consumer`` (group "consumer")."""

from __future__ import annotations

from .handlers import Printer
from .service import run

if __name__ == "__main__":
    run(__doc__ or "", "consumer", lambda bus, args: Printer())
