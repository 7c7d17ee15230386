"""Signed webhooks: delivered in order, signed, retried on timeouts and 5xx, refused 4xx not retried,
receivers independent of each other, bounded queues. Receivers are real aiohttp servers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from server.config import ConfigError, load
from server.host.webhooks import (
    Webhooks,
    backoff_delay,
    classify,
    parse_retry_after,
    redact,
    sign,
    verify,
)
from server.metrics import REGISTRY
from tests.support.waiting import eventually

SECRET = "whsec-test-0123456789abcdef"
HEADERS = ("Content-Type", "Medstage-Event", "Medstage-Delivery", "Medstage-Signature")


def sample(name: str, reason: str | None = None) -> float:
    labels = {"reason": reason} if reason else {}
    return REGISTRY.get_sample_value(f"medstage_webhooks_{name}_total", labels) or 0.0


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    at: float

    @property
    def event(self) -> dict[str, Any]:
        return json.loads(self.body)  # type: ignore[no-any-return]


Behaviour = Callable[[int], Awaitable[web.StreamResponse]]


def answers(*statuses: int, retry_after: str | None = None) -> Behaviour:
    """Answer the n-th request with statuses[n] (the last one repeats)."""

    async def respond(n: int) -> web.StreamResponse:
        status = statuses[min(n, len(statuses) - 1)]
        headers = {"Retry-After": retry_after} if retry_after and status >= 400 else {}
        return web.Response(status=status, text="nope" if status >= 400 else "ok", headers=headers)

    return respond


@dataclass
class Receiver:
    behaviour: Behaviour
    requests: list[Received] = field(default_factory=list)
    url: str = ""
    release: asyncio.Event = field(default_factory=asyncio.Event)  # ends hanging handlers
    _arrived: asyncio.Condition = field(default_factory=asyncio.Condition)
    _runner: web.AppRunner | None = None

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}/hook"
        return self.url

    async def stop(self) -> None:
        self.release.set()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        n = len(self.requests)
        async with self._arrived:
            self.requests.append(Received(dict(request.headers), await request.read(), time.monotonic()))
            self._arrived.notify_all()
        return await self.behaviour(n)

    async def wait_for(self, count: int, timeout: float = 5.0) -> list[Received]:
        async with asyncio.timeout(timeout), self._arrived:
            await self._arrived.wait_for(lambda: len(self.requests) >= count)
        return self.requests

    def hang_then(self, *statuses: int) -> Behaviour:
        """The first request gets no answer until the test ends; the next ones get ``statuses``."""
        later = answers(*statuses)

        async def respond(n: int) -> web.StreamResponse:
            if n == 0:
                await self.release.wait()
            return await later(max(0, n - 1))

        return respond


MakeReceiver = Callable[[Behaviour], Awaitable[Receiver]]
MakeHooks = Callable[..., Awaitable[Webhooks]]


@pytest.fixture
async def receivers() -> AsyncIterator[MakeReceiver]:
    started: list[Receiver] = []

    async def make(behaviour: Behaviour) -> Receiver:
        receiver = Receiver(behaviour)
        await receiver.start()
        started.append(receiver)
        return receiver

    yield make
    for receiver in started:
        await receiver.stop()


@pytest.fixture
async def hooks() -> AsyncIterator[MakeHooks]:
    """Started Webhooks with a small backoff; closed at the end of the test."""
    made: list[Webhooks] = []

    async def make(urls: list[str], **kwargs: Any) -> Webhooks:
        options: dict[str, Any] = {"node_id": "n-test", "backoff_base_s": 0.05, "timeout_s": 2.0}
        webhooks = Webhooks(urls, SECRET, **{**options, **kwargs})
        await webhooks.start()
        made.append(webhooks)
        return webhooks

    yield make
    for webhooks in made:
        await webhooks.close()


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/hook"


# --- delivery ------------------------------------------------------------------------------------


async def test_events_arrive_in_emit_order_signed_with_every_header(
    receivers: MakeReceiver, hooks: MakeHooks
) -> None:
    receiver = await receivers(answers(204))
    webhooks = await hooks([receiver.url], clock=lambda: 1_800_000_000.25)
    types = ["stage.started", "participant.joined", "participant.left", "stage.ended", "recording.ready"]
    for n, type_ in enumerate(types):
        webhooks.emit(type_, {"stage_id": "cardio", "n": n})

    got = await receiver.wait_for(len(types))

    assert [r.event["data"]["n"] for r in got] == list(range(len(types)))
    ids = set()
    for request, type_ in zip(got, types, strict=True):
        assert all(h in request.headers for h in HEADERS)
        assert request.headers["Content-Type"] == "application/json"
        assert request.headers["Medstage-Event"] == type_
        event = request.event
        assert event == {
            "id": request.headers["Medstage-Delivery"],
            "type": type_,
            "created_at": 1_800_000_000.25,
            "node": "n-test",
            "data": {"stage_id": "cardio", "n": event["data"]["n"]},
        }
        ids.add(event["id"])
        header = request.headers["Medstage-Signature"]
        assert header.startswith("t=1800000000,v1=")
        assert verify(SECRET, header, request.body, now=1_800_000_100)
        assert not verify(SECRET, header, request.body.replace(b"cardio", b"cardia"), now=1_800_000_100)
        assert not verify(SECRET, header, request.body, now=1_800_000_000 + 301), "a replay"
        assert not verify("another secret", header, request.body, now=1_800_000_100)
    assert len(ids) == len(types), "every event has its own id"


async def test_a_500_is_retried_with_backoff_and_delivered_once(
    receivers: MakeReceiver, hooks: MakeHooks, caplog: pytest.LogCaptureFixture
) -> None:
    receiver = await receivers(answers(500, 500, 200))
    before = (sample("delivered"), sample("failed_attempts", "status"))
    webhooks = await hooks([receiver.url], backoff_base_s=0.1)
    caplog.set_level(logging.WARNING, logger="server.host.webhooks")

    webhooks.emit("stage.started", {"stage_id": "s1"})
    first, second, third = await receiver.wait_for(3)
    webhooks.emit("stage.ended", {"stage_id": "s1"})
    got = await receiver.wait_for(4)

    assert {r.headers["Medstage-Delivery"] for r in got[:3]} == {first.event["id"]}
    assert got[3].event["type"] == "stage.ended", "delivered once, then the next event"
    # Equal jitter: at least half of 0.1 s, then half of 0.2 s.
    assert second.at - first.at >= 0.05 and third.at - second.at >= 0.1
    await webhooks.close(drain_s=2.0)  # the last answer reached the sender
    assert sample("delivered") - before[0] == 2
    assert sample("failed_attempts", "status") - before[1] == 2
    failures = [r for r in caplog.records if r.getMessage() == "webhook attempt failed"]
    assert [tuple(vars(r)[k] for k in ("receiver", "attempt", "reason")) for r in failures] == [
        (receiver.url, 1, "HTTP 500: nope"),
        (receiver.url, 2, "HTTP 500: nope"),
    ]


async def test_a_429_waits_for_retry_after_capped(receivers: MakeReceiver, hooks: MakeHooks) -> None:
    receiver = await receivers(answers(429, 200, retry_after="3600"))
    webhooks = await hooks([receiver.url], backoff_base_s=0.01, backoff_max_s=0.3)

    webhooks.emit("stage.started", {"stage_id": "s1"})
    first, second = await receiver.wait_for(2)

    assert 0.3 <= second.at - first.at < 1.0, "Retry-After honoured, capped at backoff_max_s"


async def test_a_receiver_that_times_out_is_retried(receivers: MakeReceiver, hooks: MakeHooks) -> None:
    receiver = await receivers(answers(200))
    receiver.behaviour = receiver.hang_then(200)
    before = sample("failed_attempts", "timeout"), sample("delivered")
    webhooks = await hooks([receiver.url], timeout_s=0.3)

    webhooks.emit("participant.joined", {"stage_id": "s1", "participant_id": "p-1"})
    first, second = await receiver.wait_for(2)

    assert second.at - first.at >= 0.3
    assert first.headers["Medstage-Delivery"] == second.headers["Medstage-Delivery"]
    await webhooks.close(drain_s=2.0)
    assert sample("failed_attempts", "timeout") - before[0] == 1
    assert sample("delivered") - before[1] == 1


async def test_a_receiver_that_answers_400_is_not_retried(receivers: MakeReceiver, hooks: MakeHooks) -> None:
    receiver = await receivers(answers(400, 200))
    before = sample("dropped", "rejected")
    webhooks = await hooks([receiver.url], backoff_base_s=0.01)

    webhooks.emit("participant.joined", {"stage_id": "s1"})
    webhooks.emit("participant.left", {"stage_id": "s1"})
    got = await receiver.wait_for(2)

    assert [r.event["type"] for r in got] == ["participant.joined", "participant.left"]
    assert sample("dropped", "rejected") - before == 1


async def test_an_event_is_given_up_after_max_attempts(receivers: MakeReceiver, hooks: MakeHooks) -> None:
    receiver = await receivers(answers(503, 503, 503, 200))
    before = sample("dropped", "gave_up")
    webhooks = await hooks([receiver.url], max_attempts=3, backoff_base_s=0.01)

    webhooks.emit("stage.started", {"stage_id": "s1"})
    webhooks.emit("stage.ended", {"stage_id": "s1"})
    got = await receiver.wait_for(4)

    assert [r.event["type"] for r in got] == ["stage.started"] * 3 + ["stage.ended"]
    assert sample("dropped", "gave_up") - before == 1


async def test_dead_and_hanging_receivers_do_not_delay_a_healthy_one(
    receivers: MakeReceiver, hooks: MakeHooks
) -> None:
    hanging = await receivers(answers(200))
    hanging.behaviour = hanging.hang_then(200)
    healthy = await receivers(answers(200))
    before, delivered = sample("dropped", "closed"), sample("delivered")
    webhooks = await hooks([closed_port_url(), hanging.url, healthy.url], backoff_base_s=1.0, timeout_s=5.0)

    started = time.monotonic()
    for n in range(20):
        webhooks.emit("participant.joined", {"stage_id": "s1", "n": n})
    assert time.monotonic() - started < 0.05, "emit never waits for a receiver"
    got = await healthy.wait_for(20, timeout=1.0)

    assert [r.event["data"]["n"] for r in got] == list(range(20))
    await eventually(lambda: sample("delivered") - delivered == 20, timeout=1.0)
    started = time.monotonic()
    await webhooks.close()
    assert time.monotonic() - started < 0.5
    assert sample("dropped", "closed") - before == 40, "20 for the dead receiver, 20 for the hanging one"


async def test_a_full_queue_drops_the_oldest_and_counts(
    receivers: MakeReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    receiver = await receivers(answers(200))
    webhooks = Webhooks([receiver.url], SECRET, queue_limit=3)
    before = sample("dropped", "queue_full")
    caplog.set_level(logging.WARNING, logger="server.host.webhooks")

    for n in range(5):  # not started: everything waits in the queue
        webhooks.emit("participant.joined", {"stage_id": "s1", "n": n})
    assert sample("dropped", "queue_full") - before == 2
    assert webhooks.backlog() == 3
    assert any(r.getMessage() == "webhook queue full, oldest event dropped" for r in caplog.records)
    await webhooks.start()
    try:
        got = await receiver.wait_for(3)
        assert [r.event["data"]["n"] for r in got] == [2, 3, 4]
    finally:
        await webhooks.close()


async def test_close_returns_promptly_with_pending_retries(receivers: MakeReceiver) -> None:
    receiver = await receivers(answers(500))
    webhooks = Webhooks([receiver.url], SECRET, backoff_base_s=30.0)
    await webhooks.start()
    webhooks.emit("stage.started", {"stage_id": "s1"})
    webhooks.emit("stage.ended", {"stage_id": "s1"})
    await receiver.wait_for(1)

    started = time.monotonic()
    await webhooks.close(drain_s=0.2)
    assert time.monotonic() - started < 0.5
    assert webhooks.backlog() == 0
    webhooks.emit("stage.started", {"stage_id": "s2"})  # after close: ignored, no error
    assert webhooks.backlog() == 0


async def test_close_with_drain_delivers_what_is_queued(receivers: MakeReceiver) -> None:
    receiver = await receivers(answers(200))
    webhooks = Webhooks([receiver.url], SECRET)
    await webhooks.start()
    for n in range(3):
        webhooks.emit("participant.left", {"stage_id": "s1", "n": n})
    await webhooks.close(drain_s=2.0)
    assert [r.event["data"]["n"] for r in receiver.requests] == [0, 1, 2]


async def test_emit_never_raises_on_bad_input() -> None:
    webhooks = Webhooks(["http://127.0.0.1:9/hook"], SECRET)
    before = sample("dropped", "invalid")
    webhooks.emit("stage.exploded", {"stage_id": "s1"})
    webhooks.emit("stage.started", {"stage_id": "s1", "when": object()})
    assert sample("dropped", "invalid") - before == 2
    assert webhooks.backlog() == 0
    Webhooks([], "").emit("stage.started", {"stage_id": "s1"})  # no receivers: nothing to do
    await webhooks.close()


# --- the rules, as plain functions ---------------------------------------------------------------


def test_sign_is_the_stripe_scheme() -> None:
    import hashlib
    import hmac

    body = b'{"id":"evt-1"}'
    expected = hmac.new(SECRET.encode(), b"1700000000." + body, hashlib.sha256).hexdigest()
    assert sign(SECRET, body, 1_700_000_000) == f"t=1700000000,v1={expected}"


@pytest.mark.parametrize(
    "header",
    ["", "v1=abc", "t=1700000000", "t=abc,v1=00", "t=1700000000,v1=00", "t=²,v1=00", "t=1700000000,v1=é"],
)
def test_verify_refuses_malformed_headers(header: str) -> None:
    assert not verify(SECRET, header, b"{}", now=1_700_000_000)


def test_verify_accepts_any_of_several_signatures_within_tolerance() -> None:
    body = b"{}"
    header = sign(SECRET, body, 1_700_000_000) + ",v1=" + "0" * 64
    assert verify(SECRET, header, body, now=1_700_000_000 - 299)
    assert not verify(SECRET, header, body, now=1_700_000_000 - 301), "from the future, too far"
    assert verify(SECRET, header, body, now=1_700_000_000 + 3600, tolerance_s=3600)


def test_backoff_doubles_to_the_cap_with_jitter() -> None:
    assert [backoff_delay(a, 1.0, 60.0, 0.999999) for a in (1, 2, 3, 7, 8, 100)] == pytest.approx(
        [1, 2, 4, 60, 60, 60], rel=1e-5
    )
    assert backoff_delay(3, 1.0, 60.0, 0.0) == 2.0, "jitter takes off at most half"


def test_statuses_are_classified() -> None:
    assert [classify(s) for s in (200, 204, 299)] == ["delivered"] * 3
    assert [classify(s) for s in (408, 429, 500, 502, 503)] == ["retry"] * 5
    assert [classify(s) for s in (301, 400, 401, 404, 410)] == ["rejected"] * 5


def test_retry_after_in_seconds_or_as_a_date() -> None:
    assert parse_retry_after("120", now=0) == 120
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470) == 10
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412490) == 0
    assert parse_retry_after("soon", now=0) is None
    assert parse_retry_after("²", now=0) is None
    assert parse_retry_after(None, now=0) is None


def test_logged_receiver_urls_hide_credentials_and_query() -> None:
    assert redact("https://user:pw@hooks.example.org:8443/in?token=s3cret") == (
        "https://hooks.example.org:8443/in"
    )


def test_a_webhooks_object_needs_a_secret_for_its_receivers() -> None:
    with pytest.raises(ValueError, match="secret"):
        Webhooks(["http://127.0.0.1/hook"], "")


# --- configuration -------------------------------------------------------------------------------


def test_webhook_options_from_env_and_file(tmp_path: Path) -> None:
    config = load(
        env={
            "MEDSTAGE_WEBHOOK_URLS": "https://a.example.org/hook, http://10.0.0.7:9000/in",
            "MEDSTAGE_WEBHOOK_SECRET": SECRET,
            "MEDSTAGE_WEBHOOK_TIMEOUT_S": "2.5",
        }
    )
    assert config.webhook_urls == ["https://a.example.org/hook", "http://10.0.0.7:9000/in"]
    assert (config.webhook_timeout_s, config.webhook_max_attempts) == (2.5, 8)
    webhooks = Webhooks.from_config(config, "n-1")
    assert (webhooks.timeout_s, webhooks.max_attempts, webhooks.node_id) == (2.5, 8, "n-1")
    path = tmp_path / "medstage.toml"
    path.write_text(f'webhook_urls = ["https://b.example.org/x"]\nwebhook_secret = "{SECRET}"\n')
    assert load(str(path), env={}).webhook_urls == ["https://b.example.org/x"]
    assert load(env={}).webhook_urls == []


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"MEDSTAGE_WEBHOOK_URLS": "https://a.example.org/hook"}, "webhook_secret"),
        ({"MEDSTAGE_WEBHOOK_URLS": "https://a.example.org/hook", "MEDSTAGE_WEBHOOK_SECRET": "short"}, "16"),
        ({"MEDSTAGE_WEBHOOK_URLS": "ftp://a.example.org/", "MEDSTAGE_WEBHOOK_SECRET": SECRET}, "http"),
        ({"MEDSTAGE_WEBHOOK_URLS": "a.example.org/hook", "MEDSTAGE_WEBHOOK_SECRET": SECRET}, "http"),
        ({"MEDSTAGE_WEBHOOK_TIMEOUT_S": "0"}, "webhook_timeout_s"),
        ({"MEDSTAGE_WEBHOOK_MAX_ATTEMPTS": "0"}, "webhook_max_attempts"),
    ],
)
def test_bad_webhook_options_are_named(env: dict[str, str], fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        load(env=env)
