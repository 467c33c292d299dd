"""The dashboard's JSON endpoints and actions, called in-process (no browser),
on both backends: figures that match Redis, decoded events and dead letters,
and every way an action is refused without anything changing."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest

import backbone
from backbone.inspection import inspect_streams
from conftest import eventually
from contracts.shipment_tracking import ShipmentTracking
from helpers import moment
from personal_helpers import CUSTOMERS, REGISTERED
from test_dlq_cli import URI, dead_letter
from ui_helpers import TOKEN, need

PACKING = backbone.bind(ShipmentTracking).operation("packing")
HOST = "127.0.0.1:8765"
ORIGIN = f"http://{HOST}"


class Client:
    """An HTTP client of one dashboard, in-process."""

    def __init__(self, dashboard: Any) -> None:
        httpx = need("httpx", "pip install httpx (the dev extra has it)")
        self.dashboard = dashboard
        self.http = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=dashboard.app), base_url=ORIGIN
        )

    async def snapshot(self) -> dict[str, Any]:
        await self.dashboard.monitor.sample()
        response = await self.http.get("/api/snapshot")
        assert response.status_code == 200, response.text
        document: dict[str, Any] = response.json()
        return document

    async def get(self, path: str, **params: str) -> tuple[int, dict[str, Any]]:
        response = await self.http.get(path, params=params)
        return response.status_code, response.json()

    async def act(
        self,
        action: str,
        body: Any,
        *,
        token: str | None = TOKEN,
        headers: dict[str, str] | None = None,
        raw: bytes | None = None,
    ) -> tuple[int, dict[str, Any]]:
        sent = {"content-type": "application/json", "origin": ORIGIN}
        if token is not None:
            sent["x-backbone-token"] = token
        sent.update(headers or {})
        response = await self.http.post(
            f"/api/deadletters/{action}",
            content=raw if raw is not None else json.dumps(body).encode(),
            headers=sent,
        )
        return response.status_code, response.json()


def make_dashboard(bus: backbone.Backbone, *, actions: bool) -> Any:
    need("starlette", "pip install 'backbone[ui]'")
    from backbone.ui.app import Dashboard
    from backbone.ui.auth import Guard
    from backbone.ui.monitor import Monitor

    guard = Guard(
        host="127.0.0.1", port=8765, actions=actions, token=TOKEN if actions else None
    )
    return Dashboard(bus, Monitor(bus, interval=0.05, rescan=0.0), guard)


@pytest.fixture
async def client(bus: backbone.Backbone) -> AsyncIterator[Client]:
    dashboard = make_dashboard(bus, actions=True)
    connection = Client(dashboard)
    async with connection.http:
        yield connection


@pytest.fixture
async def read_only(bus: backbone.Backbone) -> AsyncIterator[Client]:
    connection = Client(make_dashboard(bus, actions=False))
    async with connection.http:
        yield connection


async def publish(bus: backbone.Backbone, count: int) -> list[str]:
    producer = bus.producer(URI)
    return [
        (await producer.publish(PACKING, (f"u{n}@example.com", n, moment()))).id
        for n in range(count)
    ]


# --- figures --------------------------------------------------------------------------


async def test_snapshot_figures_are_those_redis_holds(
    bus: backbone.Backbone, client: Client
) -> None:
    keys = bus.keys(URI)
    await bus.redis.xgroup_create(keys.stream, "billing", id="0", mkstream=True)
    await bus.redis.xgroup_create(keys.stream, "audit", id="0")
    await publish(bus, 5)
    # billing: two delivered and not acknowledged (pending), three not yet read.
    await bus.redis.xreadgroup("billing", "billing-1", {keys.stream: ">"}, count=2)
    await dead_letter(bus, "billing")
    document = await client.snapshot()

    assert document["redis"]["up"] is True
    assert document["redis"]["error"] is None
    assert document["environment"] == bus.environment
    assert document["actions"] is True
    (stream,) = document["streams"]
    (info,) = await inspect_streams(bus)
    assert stream["uri"] == URI
    assert stream["length"] == info.length == 6
    assert stream["dead_letters"] == 1
    assert stream["last_id"] == info.last_id
    groups = {group["name"]: group for group in stream["groups"]}
    assert sorted(groups) == ["audit", "billing"]
    billing, audit = groups["billing"], groups["audit"]
    assert (billing["pending"], billing["lag"]) == (2, 4)
    assert (audit["pending"], audit["lag"]) == (0, 6)
    assert billing["consumers"][0]["name"] == "billing-1"
    assert billing["consumers"][0]["pending"] == 2
    first = (await bus.redis.xrange(keys.stream, count=1))[0][0].decode()
    assert billing["oldest_pending_id"] == first
    assert billing["oldest_pending_age_ms"] >= 0
    assert audit["oldest_pending_id"] is None


async def test_rates_and_history_come_from_successive_samples(
    bus: backbone.Backbone, client: Client
) -> None:
    await publish(bus, 3)
    first = await client.snapshot()
    await publish(bus, 4)
    second = await client.snapshot()
    assert second["seq"] == first["seq"] + 1
    point = second["point"]
    assert point["seq"] == second["seq"]
    assert point["streams"][URI]["length"] == 7
    assert point["streams"][URI]["rate"] > 0
    assert second["streams"][0]["rate"] > 0
    status, history = await client.get("/api/history", after=str(first["seq"] - 1))
    assert status == 200
    assert [p["seq"] for p in history["points"]] == [first["seq"], second["seq"]]
    for garbage in ("1; DROP", "--5", "²", "9" * 40):
        status, refused = await client.get("/api/history", after=garbage)
        assert status == 400
        assert "not a sample number" in refused["error"]


async def test_projection_and_archive_checkpoints_with_their_lag(
    bus: backbone.Backbone, client: Client
) -> None:
    ids = await publish(bus, 5)
    keys = bus.keys(URI)
    await bus.redis.hset(keys.projection("balances"), mapping={"id": ids[1], "n": 2})
    await bus.redis.hset(keys.projection("balances", "by-account"), "a", 1)
    await bus.redis.hset(keys.projection("odd"), mapping={"id": "not-an-id"})
    await bus.redis.xgroup_create(keys.stream, "archive", id=ids[0])
    document = await client.snapshot()
    projections = {p["name"]: p for p in document["projections"]}
    assert sorted(projections) == ["balances", "odd"]  # read-model keys are not
    balances = projections["balances"]
    assert (balances["checkpoint"], balances["lag"], balances["applied"]) == (
        ids[1],
        3,
        2,
    )
    assert "not an entry id" in projections["odd"]["error"]
    (archive,) = document["archives"]
    assert (archive["uri"], archive["group"], archive["lag"]) == (URI, "archive", 4)
    assert archive["behind"] == 4


# --- tail and dead letters ------------------------------------------------------------


async def test_tail_decodes_events_after_a_cursor(
    bus: backbone.Backbone, client: Client
) -> None:
    ids = await publish(bus, 3)
    status, recent = await client.get("/api/tail", uri=URI)
    assert status == 200
    assert [event["id"] for event in recent["events"]] == ids
    assert recent["events"][0]["payload"]["email"] == "u0@example.com"
    assert recent["cursor"] == ids[-1]
    more = await publish(bus, 2)
    status, after = await client.get("/api/tail", uri=URI, after=recent["cursor"])
    assert [event["id"] for event in after["events"]] == more
    assert after["events"][1]["operation"] == "packing"


async def test_tail_refuses_what_is_not_an_id_a_uri_or_a_stream(
    bus: backbone.Backbone, client: Client
) -> None:
    for params, status_wanted, text in [
        ({"uri": URI, "after": "0-0 garbage"}, 400, "is not an entry id"),
        ({"uri": URI, "after": "99999999999999999999999-0"}, 400, "not an entry id"),
        ({"uri": "no spaces allowed"}, 400, "is not valid"),
        ({}, 400, "uri: name the stream"),
        ({"uri": "u" * 10_000}, 400, "too long"),
    ]:
        status, body = await client.get("/api/tail", **params)
        assert status == status_wanted, (params, body)
        assert text in body["error"], (params, body)
    await bus.redis.set(bus.keys("plain").stream, "a string")
    status, body = await client.get("/api/tail", uri="plain")
    assert status == 409
    assert "not a stream" in body["error"]
    status, body = await client.get("/api/tail", uri="never-written")
    assert status == 200
    assert (body["exists"], body["events"]) == (False, [])


async def test_a_stream_deleted_while_watched_drops_out(
    bus: backbone.Backbone, client: Client
) -> None:
    await publish(bus, 2)
    assert [s["uri"] for s in (await client.snapshot())["streams"]] == [URI]
    status, seen = await client.get("/api/tail", uri=URI)
    await bus.redis.delete(bus.keys(URI).stream)
    assert (await client.snapshot())["streams"] == []
    status, body = await client.get("/api/tail", uri=URI, after=seen["cursor"])
    assert status == 200
    assert (body["exists"], body["events"]) == (False, [])


async def test_huge_values_are_cut_for_the_page(
    bus: backbone.Backbone, client: Client
) -> None:
    await bus.producer(URI).publish(PACKING, ("x" * 100_000, 1, moment()))
    status, body = await client.get("/api/tail", uri=URI)
    assert status == 200
    email = body["events"][0]["payload"]["email"]
    assert email.startswith("xxx")
    assert email.endswith("(98000 more characters)")
    assert len(email) < 2100


async def test_dead_letters_show_decoded_payloads_personal_values_sealed(
    bus: backbone.Backbone, client: Client
) -> None:
    await dead_letter(bus, "billing", error="card declined")
    producer = bus.producer(URI, CUSTOMERS.spec)
    secret = "ada@example.com"
    event = await producer.publish(REGISTERED, ("c-1", secret, "UK"))
    keys = bus.keys(URI)
    await bus.redis.copy(
        keys.payload(event.id), keys.dead_letter_payload("crm", event.id)
    )
    await bus.redis.xadd(
        keys.dead_letters,
        {"id": event.id, "g": "crm", "r": "invalid-payload", "m:o": "registered"},
    )
    status, body = await client.get("/api/deadletters", uri=URI)
    assert status == 200
    assert body["total"] == 2
    first, second = body["letters"]
    assert (first["group"], first["reason"]) == ("billing", "handler-error")
    assert first["error_message"] == "card declined"
    assert first["payload"]["email"] == "a@example.com"
    assert second["payload"]["email"] == "<personal>"
    assert secret not in json.dumps(body)
    status, tail = await client.get("/api/tail", uri=URI)
    assert secret not in json.dumps(tail)


# --- actions --------------------------------------------------------------------------


async def test_a_redrive_reaches_redis_through_dead_letters(
    bus: backbone.Backbone, client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    event, dlq_id = await dead_letter(bus, "billing")
    with caplog.at_level(logging.WARNING, logger="backbone.ui"):
        status, body = await client.act("redrive", {"uri": URI, "ids": [dlq_id]})
        await client.act("redrive", {"uri": URI, "ids": [dlq_id]}, token="x" * 20)
    logged = [r.getMessage() for r in caplog.records if r.name == "backbone.ui"]
    assert logged == [
        f"redrive by 127.0.0.1:123: stream {URI}, dead letters {dlq_id}: 1 of 1 done",
        "refused redrive from 127.0.0.1:123: the action token is wrong",
    ]
    assert status == 200, body
    assert (body["done"], body["wanted"]) == (1, 1)
    keys = bus.keys(URI)
    assert await bus.redis.xlen(keys.dead_letters) == 0
    [(_new_id, fields)] = await bus.redis.xrange(keys.stream, min=body["new_ids"][0])
    assert fields[b"rg"] == b"billing"
    assert fields[b"ri"] == event.id.encode()


async def test_a_purge_deletes_the_dead_letter_and_its_copy(
    bus: backbone.Backbone, client: Client
) -> None:
    event, dlq_id = await dead_letter(bus, "billing")
    status, body = await client.act("purge", {"uri": URI, "ids": [dlq_id]})
    assert status == 200
    assert body["done"] == 1
    keys = bus.keys(URI)
    assert await bus.redis.xlen(keys.dead_letters) == 0
    assert not await bus.redis.exists(keys.dead_letter_payload("billing", event.id))


async def test_actions_refused_change_nothing(
    bus: backbone.Backbone, client: Client, read_only: Client
) -> None:
    _, dlq_id = await dead_letter(bus, "billing")
    good = {"uri": URI, "ids": [dlq_id]}
    refused: list[tuple[tuple[int, dict[str, Any]], int, str]] = [
        (await client.act("purge", good, token=None), 401, "token is missing"),
        (await client.act("purge", good, token="wrong" * 5), 401, "token is wrong"),
        (await client.act("purge", good, token=TOKEN[:-1]), 401, "token is wrong"),
        (
            await client.act("purge", good, headers={"origin": "http://evil.example"}),
            403,
            "another site",
        ),
        (
            await client.act("purge", good, headers={"sec-fetch-site": "cross-site"}),
            403,
            "another site",
        ),
        (
            await client.act("purge", good, headers={"host": "evil.example:8765"}),
            403,
            "its own address only",
        ),
        (
            await client.act("purge", good, headers={"content-type": "text/plain"}),
            415,
            "application/json",
        ),
        (await read_only.act("purge", good), 403, "read-only"),
        (await client.act("purge", [dlq_id]), 400, "JSON object"),
        (await client.act("purge", {**good, "group": "x"}), 400, "JSON object"),
        (await client.act("purge", {"uri": URI, "ids": []}), 400, "ids: a list"),
        (await client.act("purge", {"uri": URI, "ids": dlq_id}), 400, "ids: a list"),
        (
            await client.act("purge", {"uri": URI, "ids": [dlq_id, "1-x"]}),
            400,
            "is not an entry id",
        ),
        (
            await client.act("purge", {"uri": URI, "ids": [dlq_id, 7]}),
            400,
            "is not an entry id",
        ),
        (
            await client.act("purge", {"uri": "bad uri!", "ids": [dlq_id]}),
            400,
            "is not valid",
        ),
        (
            await client.act("purge", {"uri": URI, "ids": [dlq_id, "1-1"]}),
            404,
            "no dead letter 1-1",
        ),
        (await client.act("purge", None, raw=b"{not json"), 400, "not JSON"),
        (await client.act("purge", None, raw=b"\xff\xfe"), 400, "not JSON"),
        (
            await client.act("purge", None, raw=b"[" * 30_000 + b"]" * 30_000),
            400,
            "not JSON",
        ),
        (
            await client.act("purge", None, raw=b'{"ids": ["' + b"1" * 70_000 + b'"]}'),
            413,
            "larger than",
        ),
        (await client.act("redrive", good, token=None), 401, "token is missing"),
    ]
    for (status, body), wanted, text in refused:
        assert status == wanted, (wanted, text, body)
        assert text in body["error"], (text, body)
    keys = bus.keys(URI)
    assert await bus.redis.xlen(keys.dead_letters) == 1
    assert await bus.redis.xlen(keys.stream) == 1  # nothing re-driven


async def test_reads_answer_only_their_own_host(client: Client) -> None:
    response = await client.http.get(
        "/api/snapshot", headers={"host": "attacker.example:8765"}
    )
    assert response.status_code == 403
    assert response.headers["x-frame-options"] == "DENY"
    response = await client.http.get("/")
    assert response.status_code == 200
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    assert b'<script src="/static/app.js"' in response.content
    assert (await client.http.get("/static/../app.py")).status_code == 404
    assert (await client.http.get("/static/nothing.js")).status_code == 404
    assert (await client.http.post("/api/snapshot")).status_code == 405


@pytest.mark.real_only
async def test_snapshot_says_redis_is_away_and_recovers(
    proxy: Any, real_bus: backbone.Backbone, environment: str
) -> None:
    await publish(real_bus, 2)
    async with backbone.Backbone(
        proxy.url, environment=environment, connect_timeout=1.0, command_timeout=2.0
    ) as through_proxy:
        client = Client(make_dashboard(through_proxy, actions=True))
        async with client.http, client.dashboard.running():
            assert (await client.snapshot())["streams"][0]["length"] == 2
            proxy.refuse(True)
            away = await client.snapshot()
            assert away["redis"]["up"] is False
            assert away["redis"]["error"].startswith("Redis unreachable")
            assert away["redis"]["down_since"] is not None
            assert away["streams"][0]["length"] == 2  # the last figures stay
            status, body = await client.get("/api/tail", uri=URI)
            assert status == 503
            assert "Redis unreachable" in body["error"]
            _, dlq_id = await dead_letter(real_bus, "billing")
            status, body = await client.act("purge", {"uri": URI, "ids": [dlq_id]})
            assert status == 503, body
            proxy.refuse(False)
            await publish(real_bus, 1)

            async def recovered() -> bool:
                document = await client.snapshot()
                return bool(document["redis"]["up"]) and (
                    document["streams"][0]["length"] == 4
                )

            await eventually(recovered, message="the snapshot to recover")
