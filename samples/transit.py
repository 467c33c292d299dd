"""Answer each step with the next: ``python -m samples.transit`` (group "transit")."""

from __future__ import annotations

from .handlers import Transit
from .service import run
from .shipment import shipment_tracking_producer

if __name__ == "__main__":
    run(
        __doc__ or "",
        "transit",
        lambda bus, args: Transit(shipment_tracking_producer(bus, args.uri)),
    )
