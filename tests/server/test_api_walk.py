"""Every route of ``/api/openapi.json`` walked with hostile input (issue 11, item 4): path parameters
with NUL bytes, dot segments, invalid UTF-8, lone surrogates and 5,000 characters; bodies nested
10,000 deep, not JSON, or of the wrong types. Whatever comes in, a node never answers 5xx, and every
refusal is a problem document with a code.

Real nodes, on the three deployments of the server suite, with a platform token (and the existing
stage, session, club, member and invite in the parameters not under attack, so each hostile value
reaches as far into its route as it can)."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from yarl import URL

from server.app import create_app
from server.config import Config
from tests.conftest import RunningNode
from tests.support.tokens import admin_token, bearer

METHODS = ("get", "put", "post", "delete", "patch")

# Path segments as sent on the wire (already percent-encoded).
HOSTILE_SEGMENTS = [
    "%00",
    "a%00b",
    "x" * 5000,
    "y" * 7800,  # as long as a request line may be (aiohttp reads 8,190 bytes)
    "..",
    ".",
    "%2e%2e",
    "%2e%2e%2f",
    "..%2f..%2f..%2fetc%2fpasswd",
    "%ED%A0%80",  # a lone surrogate, UTF-8 encoded (which UTF-8 forbids)
    "a%ED%B0%80b",
    "%FF",
    "%C0%AF",  # an overlong "/"
    "%",
    "%zz",
    "%25",
    "%20",
    "%0d%0aX-Injected:%201",
    "%E2%80%AE",  # right-to-left override
    "%F0%9F%98%80" * 400,
]
# The file name of a recording may hold slashes.
HOSTILE_NAMES = [
    *HOSTILE_SEGMENTS,
    "tracks/%00",
    "tracks/a%00.webm",
    "../manifest.json",
    "tracks/../../other/manifest.json",
    "tracks%2f..%2f..%2f..%2fsecret",
    "/".join(["d"] * 2000),
    "tracks/" + "z" * 5000 + ".webm",
]
HOSTILE_TOKENS = ["%00", "x" * 5000, "%ED%A0%80", "%FF", "a.b.c", "e30.e30.", "Bearer%20x"]
WRONG_VALUES: list[Any] = [
    None,
    True,
    0,
    -1,
    1.5,
    2**70,
    "",
    "\u0000",
    "x" * 5000,
    "%00",
    [],
    {},
    [[["x"]]],
    {"$ref": "#/"},
]


@pytest.fixture(scope="module")
def recordings(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("walk-recordings")


@pytest.fixture(scope="module")
def node_env(recordings: Path) -> dict[str, str]:
    return {"MEDSTAGE_RECORDINGS_DIR": str(recordings)}


@pytest.fixture
def node(module_node: RunningNode) -> RunningNode:
    return module_node


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def valid(node: RunningNode, http: aiohttp.ClientSession, recordings: Path) -> dict[str, str]:
    """A value for every path parameter that names something that exists."""
    stage = "walk-" + uuid.uuid4().hex[:8]
    club = "walk-" + uuid.uuid4().hex[:8]
    async with http.post(node.url + "/api/stages", json={"id": stage}, headers=bearer()) as r:
        assert r.status == 201, await r.text()
    async with http.post(node.url + "/api/clubs", json={"id": club, "name": "Walk"}, headers=bearer()) as r:
        assert r.status == 201, await r.text()
    async with http.put(f"{node.url}/api/clubs/{club}/members/alice", json={}, headers=bearer()) as r:
        assert r.status == 201, await r.text()
    async with http.post(f"{node.url}/api/clubs/{club}/invites", json={}, headers=bearer()) as r:
        assert r.status == 201, await r.text()
        code = (await r.json())["code"]
    # A finished session as the recorder leaves it (the routes only read files).
    session = recordings / stage / "s-walk"
    (session / "tracks").mkdir(parents=True)
    (session / "manifest.json").write_text(json.dumps({"session_id": "s-walk", "status": "stopped"}))
    (session / "tracks" / "a.webm").write_bytes(b"\x1a\x45\xdf\xa3")
    return {
        "stage_id": stage,
        "session_id": "s-walk",
        "participant_id": "p-walk",
        "name": "tracks/a.webm",
        "club_id": club,
        "identity": "alice",
        "nominee": "bob",
        "erasure_id": "er-0000000000000000",
        "code": code,
    }


@pytest.fixture
async def document(node: RunningNode, http: aiohttp.ClientSession) -> dict[str, Any]:
    async with http.get(node.url + "/api/openapi.json") as r:
        assert r.status == 200
        doc: dict[str, Any] = await r.json()
        return doc


def operations(doc: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            if method in METHODS:
                yield path, method.upper(), operation


def fill(template: str, values: dict[str, str]) -> str:
    return re.sub(r"{(\w+)}", lambda m: values[m.group(1)], template)


class Walk:
    def __init__(self, node: RunningNode, http: aiohttp.ClientSession) -> None:
        self.node = node
        self.http = http
        self.failures: list[str] = []
        self.requests = 0

    async def send(
        self,
        method: str,
        path: str,
        *,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        """One request; what is wrong with its answer is kept, to report every failure at once."""
        url = URL(self.node.url + path, encoded=True)
        sent = {**(headers if headers is not None else bearer())}
        if body is not None:
            sent["Content-Type"] = "application/json"
        self.requests += 1
        shown = f"{method} {path[:120]}{'...' if len(path) > 120 else ''} body={(body or b'')[:60]!r}"
        async with self.http.request(method, url, data=body, headers=sent) as r:
            text = await r.read()
            if r.status >= 500:
                self.failures.append(f"{shown}: {r.status} {text[:200]!r}")
                return
            if r.status < 400:
                return
            if r.content_type != "application/problem+json":
                self.failures.append(f"{shown}: {r.status} {r.content_type}, not a problem: {text[:200]!r}")
                return
            problem = json.loads(text)
            if problem.get("status") != r.status or not isinstance(problem.get("code"), str):
                self.failures.append(f"{shown}: {r.status}, malformed problem {problem}")


@pytest.fixture
def walk(node: RunningNode, http: aiohttp.ClientSession) -> Walk:
    return Walk(node, http)


async def test_every_route_answers_hostile_path_parameters_without_a_5xx(
    walk: Walk, document: dict[str, Any], valid: dict[str, str]
) -> None:
    walked = 0
    for template, method, _ in operations(document):
        names = re.findall(r"{(\w+)}", template)
        for name in names:
            for hostile in HOSTILE_NAMES if name == "name" else HOSTILE_SEGMENTS:
                await walk.send(method, fill(template, {**valid, name: hostile}))
        walked += 1
    assert walked == len(list(operations(document)))
    assert walk.failures == [], "\n".join(walk.failures[:40])


async def test_every_route_answers_a_hostile_token_in_the_query_without_a_5xx(
    walk: Walk, document: dict[str, Any], valid: dict[str, str]
) -> None:
    for template, method, _ in operations(document):
        for hostile in HOSTILE_TOKENS:
            await walk.send(method, f"{fill(template, valid)}?access_token={hostile}", headers={})
    assert walk.failures == [], "\n".join(walk.failures[:40])


def bodies(schema: dict[str, Any], doc: dict[str, Any]) -> Iterator[bytes]:
    """Bodies that are not what ``schema`` asks for (and a few that are nearly)."""
    yield b"[" * 10_000 + b"]" * 10_000
    yield b'{"id": ' + b"{" * 10_000
    yield b'{"a": ' + b'{"a": ' * 10_000 + b"1" + b"}" * 10_001
    yield b"{"
    yield b"not json"
    yield b'{"a": "\xff\xfe"}'
    yield b'{"a": "\\ud800"}'
    yield b'{"a": NaN}'
    yield b"\x00"
    yield b" "
    yield b'{"a": "' + b"x" * 70_000 + b'"}'  # over max_frame_bytes: 413
    for value in ([], 42, "text", None, True):
        yield json.dumps(value).encode()
    ref = schema.get("$ref")
    if isinstance(ref, str):
        schema = doc["components"]["schemas"][ref.rsplit("/", 1)[1]]
    for prop in schema.get("properties", {}):
        for value in WRONG_VALUES:
            yield json.dumps({prop: value}).encode()
        yield ('{"' + prop + '": "\\u0000\\ud800"}').encode()


async def test_every_route_with_a_body_answers_hostile_bodies_without_a_5xx(
    walk: Walk, document: dict[str, Any], valid: dict[str, str]
) -> None:
    walked = 0
    for template, method, operation in operations(document):
        if "requestBody" not in operation:
            continue
        schema = operation["requestBody"]["content"]["application/json"]["schema"]
        for body in bodies(schema, document):
            await walk.send(method, fill(template, valid), body=body)
        walked += 1
    assert walked >= 5, "POST /api/stages, /api/dev/token, /api/clubs, PUT member, POST invites"
    assert walk.failures == [], "\n".join(walk.failures[:40])


async def test_a_session_whose_manifest_is_no_manifest_is_left_out_of_the_list(
    node: RunningNode, http: aiohttp.ClientSession, valid: dict[str, str], recordings: Path
) -> None:
    """The list reads each session's manifest.json as the recorder writes it (``RecordingSession``):
    one that is not (not an object, a field of the wrong type, not UTF-8) is left out, never a 500."""
    stage = valid["stage_id"]
    good = {"session_id": "s-good", "status": "complete", "started_at": 1.5, "stopped_at": 9.0}
    manifests = {
        "s-good": json.dumps({**good, "version": 1, "tracks": [{}, {}]}).encode(),
        "s-list": b"[]",
        "s-null": b"null",
        "s-types": json.dumps({**good, "session_id": "s-types", "started_at": "soon"}).encode(),
        "s-bytes": b'{"session_id": "\xff\xfe", "status": "complete", "started_at": 1}',  # not UTF-8
    }
    for session, content in manifests.items():
        (recordings / stage / session).mkdir()
        (recordings / stage / session / "manifest.json").write_bytes(content)
    async with http.get(f"{node.url}/api/stages/{stage}/recordings", headers=bearer()) as r:
        assert r.status == 200, await r.text()
        listed = await r.json()
    assert listed == {"stage_id": stage, "sessions": [{**good, "tracks": 2}]}


async def test_a_request_line_beyond_aiohttps_limit_is_a_4xx(node: RunningNode) -> None:
    """Longer than the HTTP parser reads: refused before the app sees it (so no problem document)."""
    async with aiohttp.ClientSession() as http:
        url = URL(f"{node.url}/api/stages/{'x' * 20_000}", encoded=True)
        async with http.get(url, headers={"Authorization": f"Bearer {admin_token()}"}) as r:
            assert 400 <= r.status < 500, r.status


async def test_an_unexpected_failure_under_api_is_a_logged_500_problem(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The last resort of the app's middleware, for a bug the walk above has not met: the real app,
    with one more route that fails."""

    async def broken(request: web.Request) -> web.Response:
        raise RuntimeError("a bug")

    app = create_app(Config(recordings_dir=str(tmp_path), ice_addresses=["127.0.0.1"]))
    app.router.add_get("/api/broken", broken)
    async with TestServer(app, host="127.0.0.1") as server, TestClient(server) as client:
        async with client.get("/api/broken") as r:
            assert r.status == 500 and r.content_type == "application/problem+json"
            problem = await r.json(content_type=None)
            assert (problem["status"], problem["code"]) == (500, "internal"), problem
            assert "a bug" not in json.dumps(problem), "no internals for the client"
    failed = [rec for rec in caplog.records if rec.getMessage() == "request failed"]
    assert failed and failed[0].exc_info and getattr(failed[0], "path", None) == "/api/broken"
