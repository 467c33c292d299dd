"""``backbone ui``: a live dashboard of an environment, served on a local port.

The package is optional: its app needs the ``backbone[ui]`` extra (Starlette
and uvicorn), and nothing in ``backbone`` imports it, so ``import backbone``
never needs them. One concept per module:

- ``snapshot``: the state the page shows, read through ``backbone.inspection``,
  ``backbone.store.checkpoint`` and ``DeadLetters`` (never a write);
- ``history``: the last minutes of samples, rates and the chart's series;
- ``monitor``: one background poller per app, and what it knows of an outage;
- ``views``: events and dead letters decoded for display as ``backbone tail``
  and ``backbone dlq show`` decode them;
- ``actions``: re-drive and purge of dead letters, the only writes;
- ``auth``: the action token and the same-origin check;
- ``app``: the Starlette app: the page, JSON endpoints, actions;
- ``server``: the listening socket and uvicorn, stopped quietly by signals;
- ``static/``: the page itself, plain JavaScript (``app.js`` the tables,
  ``chart.js`` the SVG charts, ``panel.js`` the chosen stream), no build step.
"""
