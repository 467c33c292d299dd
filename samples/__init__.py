"""Runnable programs around the shipment-tracking contract.

- ``python -m backbone.samples.producer``  places orders
- ``python -m backbone.samples.consumer``  prints every step (group "consumer")
- ``python -m backbone.samples.transit``   answers each step with the next (group
  "transit")
- ``python -m backbone.samples.reporter``  keeps each order's current state (group
  "reporter")

``backbone demo`` runs all four in one process. This is the repository's
``samples/`` folder, installed as ``backbone.samples`` (in the repository,
``python -m samples.producer`` and so on run the same modules).
"""
