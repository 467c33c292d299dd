"""Runnable programs around the shipment-tracking contract.

- ``python -m samples.producer``  places orders
- ``python -m samples.consumer``  prints every step (group "consumer")
- ``python -m samples.transit``   answers each step with the next (group "transit")
- ``python -m samples.reporter``  keeps each order's current state (group "reporter")

``backbone demo`` runs all four in one process.
"""
