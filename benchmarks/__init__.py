"""Benchmarks of backbone against hand-written redis-py code, FastStream and the
server's own ceiling: producer and consumer throughput, end-to-end latency at a
fixed rate, and Redis memory per event.

Run ``python -m benchmarks`` from the repository root (``--help`` for options).
Every figure of one run comes from one redis-server, started by the harness unless
``--redis-url`` names another.
"""
