"""The OpenAPI document a node serves (server/openapi.py, with whatever paths the app merges in): valid
OpenAPI 3.1, matching the app's routes one to one, served without a token, and describing what a real
node answers (statuses, content types and bodies checked against the document's own schemas)."""

from __future__ import annotations

import json
import re
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any, get_args

import aiohttp
import jsonschema  # type: ignore[import-untyped]
import jwt
import msgspec
import pytest
from openapi_spec_validator import validate

from server import auth
from server.api import clubs, common, health, openapi, people, recordings, spec, stages, tokens
from server.app import create_app
from server.config import Config
from tests.conftest import RunningNode, start_node
from tests.support.tokens import bearer, token

METHODS = {"get", "put", "post", "delete", "patch", "options", "head", "trace"}


def operations(doc: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            if method in METHODS:
                yield path, method.upper(), operation


def app_routes() -> set[tuple[str, str]]:
    """(path template, method) of every route of the app; HEAD comes with every GET."""
    app = create_app(Config(recordings_dir="/nonexistent"))
    return {
        (route.resource.canonical, route.method)
        for route in app.router.routes()
        if route.resource is not None and route.method != "HEAD"
    }


@pytest.fixture(scope="module")
def api_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningNode]:
    directory = tmp_path_factory.mktemp("openapi")
    running = start_node(directory, {"MEDSTAGE_PEOPLE_DIR": str(directory / "people")})
    try:
        yield running
    finally:
        assert running.stop() == 0, running.log()[-4000:]


@pytest.fixture(scope="module")
def served(api_node: RunningNode) -> dict[str, Any]:
    """The document as the node serves it, without a token."""
    with urllib.request.urlopen(api_node.url + "/api/openapi.json", timeout=5) as response:
        assert response.status == 200 and response.headers["Content-Type"].startswith("application/json")
        return json.loads(response.read())  # type: ignore[no-any-return]


def test_the_document_is_valid_openapi_3_1_with_bearer_jwt_security(served: dict[str, Any]) -> None:
    doc = served
    validate(doc)  # raises on any violation of the OpenAPI 3.1 schema
    assert doc["openapi"].startswith("3.1.")
    assert doc["info"]["title"] and doc["info"]["version"]
    assert doc["components"]["securitySchemes"]["bearer"] == {
        **doc["components"]["securitySchemes"]["bearer"],
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
    }
    assert {"bearer": []} in doc["security"]
    problem = doc["components"]["schemas"]["Problem"]
    assert "code" in problem["required"] and problem["properties"]["code"]["type"] == "string"


def test_every_documented_operation_is_a_route_and_every_api_route_is_documented(
    served: dict[str, Any],
) -> None:
    documented = {(path, method) for path, method, _ in operations(served)}
    routes = app_routes()
    assert documented - routes == set(), "documented, but no such route"
    api_routes = {(path, method) for path, method in routes if path.startswith("/api/")}
    assert api_routes - documented == set(), "routes missing from server/openapi.py"
    for path in ("/healthz", "/readyz", "/metrics"):
        assert (path, "GET") in documented


def test_every_path_parameter_is_declared_and_every_operation_has_responses(served: dict[str, Any]) -> None:
    ids = set()
    for path, method, operation in operations(served):
        declared = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
        assert declared == set(re.findall(r"{(\w+)}", path)), (method, path)
        assert operation["responses"], (method, path)
        ids.add(operation["operationId"])
        secured = operation.get("security") != []
        assert ("401" in operation["responses"]) == secured, f"{method} {path}: 401 iff a token is needed"
    assert len(ids) == len(list(operations(served))), "operationIds are unique"


def test_extra_paths_are_merged_into_a_fresh_copy() -> None:
    extra = {"/api/clubs/{club_id}/stages": {"get": {"responses": {"200": {"description": "ok"}}}}}
    doc = openapi.document(extra)
    assert "/api/clubs/{club_id}/stages" in doc["paths"] and "/api/stages" in doc["paths"]
    doc["paths"].clear()
    assert "/api/clubs/{club_id}/stages" not in openapi.document()["paths"]
    assert openapi.document()["paths"], "the built document is never changed by a caller"


def test_the_schemas_are_made_from_the_structs_the_handlers_decode_and_encode() -> None:
    """One HTTP style (issue 11): a body's schema is its struct's, so the document cannot drift from
    the handlers; every JSON body of an operation refers to one (the document itself aside)."""
    doc = openapi.document(clubs.OPENAPI_PATHS)
    structs = [
        common.Problem,
        *(stages.StageCreate, stages.Stage, stages.RemoteStage, stages.StageList, stages.ParticipantList),
        *(recordings.RecordingList, recordings.RecordingManifest),
        *(tokens.DevTokenRequest, tokens.DevToken, tokens.Revocation, health.Health, health.Readiness),
        *(clubs.ClubCreate, clubs.ClubView, clubs.MemberPut, clubs.InviteList, clubs.ClubStages),
        *(people.NomineeCreate, people.NomineeChange, people.NomineeList),
        *(people.ProfileCorrection, people.ProfileCorrected),
    ]
    _, made = msgspec.json.schema_components(structs, ref_template=spec.REF_TEMPLATE)
    assert {name: doc["components"]["schemas"][name] for name in made} == made
    for path, method, operation in operations(doc):
        request = operation.get("requestBody", {}).get("content", {})
        answers = [r.get("content", {}) for r in operation["responses"].values()]
        for content in (request, *answers):
            for media, entry in content.items():
                # a recording's JSON files (schema {}) are served as written
                if media.endswith("json") and path != "/api/openapi.json" and entry["schema"] != {}:
                    assert "#/components/schemas/" in json.dumps(entry["schema"]), (method, path, media)


def test_two_structs_of_one_name_are_refused_rather_than_given_dotted_names() -> None:
    first = msgspec.defstruct("Body", [("a", int)])
    second = msgspec.defstruct("Body", [("b", str)], module="elsewhere")
    assert set(spec.components([first])) == {"Body"}
    with pytest.raises(ValueError, match="share a component name"):
        spec.components([first, second])


def test_the_roles_and_grants_of_the_schemas_are_the_tokens() -> None:
    assert set(get_args(common.Role)) == set(auth.ROLES)
    assert set(get_args(common.Grant)) == auth.GRANTS


# --- against a running node ------------------------------------------------------------------------


@pytest.fixture
async def http(api_node: RunningNode) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(api_node.url) as session:
        yield session


class Conformance:
    """Checks a real response against the operation the document gives for it."""

    def __init__(self, doc: dict[str, Any]) -> None:
        self.doc = doc
        self.seen: set[tuple[str, str, str]] = set()

    async def check(self, response: aiohttp.ClientResponse, template: str) -> Any:
        method = response.method.lower()
        operation = self.doc["paths"][template][method]
        status = str(response.status)
        assert status in operation["responses"], f"{method.upper()} {template}: undocumented {status}"
        documented = operation["responses"][status]
        if "$ref" in documented:
            documented = self.doc["components"]["responses"][documented["$ref"].rsplit("/", 1)[1]]
        self.seen.add((template, method, status))
        content_type = response.content_type
        assert content_type in documented.get("content", {}), (template, status, content_type)
        if not content_type.endswith("json"):
            return await response.read()
        body = await response.json(content_type=None)
        schema = {**documented["content"][content_type]["schema"], "components": self.doc["components"]}
        jsonschema.Draft202012Validator(schema).validate(body)
        if content_type == "application/problem+json":
            assert f"`{body['code']}`" in documented["description"], f"undocumented code {body['code']}"
        return body


async def test_a_node_answers_as_its_document_says(
    http: aiohttp.ClientSession, served: dict[str, Any]
) -> None:
    api = Conformance(served)
    async with http.get("/api/openapi.json") as r:  # no token
        assert r.status == 200
        assert await api.check(r, "/api/openapi.json") == served

    stage = "oa-" + uuid.uuid4().hex[:8]
    stage_path = f"/api/stages/{stage}"
    async with http.post("/api/stages", json={"id": stage, "title": "Grand rounds"}) as r:
        assert r.status == 401 and r.headers["WWW-Authenticate"].startswith("Bearer")
        await api.check(r, "/api/stages")
    async with http.post("/api/stages", json={"id": stage}, headers=bearer(token(stage, "host"))) as r:
        assert r.status == 403
        await api.check(r, "/api/stages")
    async with http.post("/api/stages", json={"id": "bad id!"}, headers=bearer()) as r:
        assert r.status == 400
        await api.check(r, "/api/stages")
    async with http.post("/api/stages", json={"id": stage, "title": "Grand rounds"}, headers=bearer()) as r:
        assert r.status == 201
        await api.check(r, "/api/stages")
    async with http.post("/api/stages", json={"id": stage}, headers=bearer()) as r:
        assert r.status == 409
        await api.check(r, "/api/stages")
    async with http.get("/api/stages", headers=bearer()) as r:
        assert stage in [s["id"] for s in (await api.check(r, "/api/stages"))["stages"]]

    async with http.get(stage_path, headers=bearer(token(stage, "audience"))) as r:
        assert r.status == 200
        await api.check(r, "/api/stages/{stage_id}")
    async with http.get(stage_path, headers=bearer(token("elsewhere", "host"))) as r:
        assert r.status == 403
        await api.check(r, "/api/stages/{stage_id}")
    async with http.get("/api/stages/never-created", headers=bearer()) as r:
        assert r.status == 404
        await api.check(r, "/api/stages/{stage_id}")
    async with http.get(stage_path + "/participants", headers=bearer()) as r:
        assert (await api.check(r, "/api/stages/{stage_id}/participants"))["participants"] == []
    async with http.get("/api/stages/never-created/participants", headers=bearer()) as r:
        assert r.status == 404
        await api.check(r, "/api/stages/{stage_id}/participants")
    connection = "/api/stages/{stage_id}/participants/{participant_id}/connection"
    async with http.get(stage_path + "/participants/p-nobody/connection", headers=bearer()) as r:
        assert r.status == 404 and (await api.check(r, connection))["code"] == "participant_not_found"

    recordings = stage_path + "/recordings"
    async with http.get(recordings, headers=bearer(token(stage, "audience"))) as r:
        assert r.status == 403  # no "record" grant
        await api.check(r, "/api/stages/{stage_id}/recordings")
    async with http.get(recordings, headers=bearer()) as r:
        assert (await api.check(r, "/api/stages/{stage_id}/recordings"))["sessions"] == []
    async with http.get(recordings + "/nope", headers=bearer()) as r:
        assert r.status == 404
        await api.check(r, "/api/stages/{stage_id}/recordings/{session_id}")
    async with http.get(recordings + "/nope/files/tracks/x.webm", headers=bearer()) as r:
        assert r.status == 404
        await api.check(r, "/api/stages/{stage_id}/recordings/{session_id}/files/{name}")
    async with http.get(recordings + "/nope/report?format=csv", headers=bearer()) as r:
        assert r.status == 404
        await api.check(r, "/api/stages/{stage_id}/recordings/{session_id}/report")
    async with http.delete(recordings + "/nope", headers=bearer(token(stage, "audience"))) as r:
        assert r.status == 403
        await api.check(r, "/api/stages/{stage_id}/recordings/{session_id}")
    async with http.delete(recordings + "/nope", headers=bearer()) as r:
        assert r.status == 404
        await api.check(r, "/api/stages/{stage_id}/recordings/{session_id}")

    async with http.get("/api/recordings/nope/playback") as r:
        assert r.status == 401
        await api.check(r, "/api/recordings/{session_id}/playback")
    async with http.get("/api/recordings/nope/playback", headers=bearer()) as r:
        assert r.status == 404
        await api.check(r, "/api/recordings/{session_id}/playback")
    async with http.post("/r/nope/access", headers=bearer()) as r:
        assert r.status == 404
        await api.check(r, "/r/{session_id}/access")
    async with http.get("/r/nope/composite.mp4", headers=bearer()) as r:
        assert r.status == 404
        await api.check(r, "/r/{session_id}/composite.mp4")
    export = "/api/stages/{stage_id}/recordings/{session_id}/export"  # tests/server/test_export_api.py
    async with http.post(recordings + "/nope/export", headers=bearer(token(stage, "audience"))) as r:
        assert r.status == 403
        await api.check(r, export)
    async with http.get(recordings + "/nope/export", headers=bearer()) as r:
        assert r.status == 404
        await api.check(r, export)

    async with http.post(stage_path + "/end", headers=bearer(token(stage, "audience"))) as r:
        assert r.status == 403  # no "moderate" grant
        await api.check(r, "/api/stages/{stage_id}/end")
    async with http.post(stage_path + "/end", headers=bearer()) as r:
        assert r.status == 200 and (await api.check(r, "/api/stages/{stage_id}/end"))["state"] == "ended"

    async with http.post("/api/dev/token", json={"role": "host", "stage": stage}) as r:
        assert r.status == 200
        await api.check(r, "/api/dev/token")
    async with http.post("/api/dev/token", json={"role": "emperor"}) as r:
        assert r.status == 400
        await api.check(r, "/api/dev/token")
    async with http.post("/api/identities/someone/revoke", headers=bearer()) as r:
        assert (await api.check(r, "/api/identities/{identity}/revoke"))["revoked"] is True
    async with http.post("/api/identities/someone/revoke", headers={"Authorization": "Bearer x"}) as r:
        assert r.status == 401
        await api.check(r, "/api/identities/{identity}/revoke")

    person = "oa-person-" + uuid.uuid4().hex[:8]
    nominees = f"/api/people/{person}/nominees"
    own = bearer(token(None, None, person))  # a person-level token: no stage, no club
    async with http.post(nominees, json={"nominee": "oa-nominee"}, headers=own) as r:
        assert r.status == 201
        assert (await api.check(r, "/api/people/{identity}/nominees"))["change"] == "granted"
    async with http.post(nominees, json={"nominee": person}, headers=bearer()) as r:
        assert r.status == 400
        await api.check(r, "/api/people/{identity}/nominees")
    async with http.get(nominees, headers=bearer(token(stage, "moderator"))) as r:
        assert r.status == 403
        await api.check(r, "/api/people/{identity}/nominees")
    async with http.get(nominees, headers=bearer()) as r:
        listed = await api.check(r, "/api/people/{identity}/nominees")
        assert [n["nominee"] for n in listed["nominees"]] == ["oa-nominee"]
    withdraw = "/api/people/{identity}/nominees/{nominee}"
    async with http.delete(nominees + "/oa-nominee", headers=bearer()) as r:
        assert r.status == 200 and (await api.check(r, withdraw))["change"] == "withdrawn"
    async with http.delete(nominees + "/oa-nominee", headers=bearer()) as r:
        assert r.status == 404
        await api.check(r, withdraw)
    erase, proof = "/api/people/{identity}/erase", "/api/people/{identity}/erasures/{erasure_id}"
    async with http.post(f"/api/people/{person}/erase", headers=bearer(token(stage, "moderator"))) as r:
        assert r.status == 403
        await api.check(r, erase)
    async with http.post(f"/api/people/{person}/erase", headers=own) as r:
        assert r.status == 200
        erasure_id = (await api.check(r, erase))["erasure_id"]
    async with http.get(f"/api/people/{person}/erasures/{erasure_id}", headers=bearer()) as r:
        assert (await api.check(r, proof))["erasure_id"] == erasure_id
    async with http.get(f"/api/people/{person}/erasures/er-0000000000000000", headers=bearer()) as r:
        assert r.status == 404
        await api.check(r, proof)

    profile, export = f"/api/people/{person}/profile", f"/api/people/{person}/export"
    async with http.patch(profile, json={"name": "Dr Corrected"}, headers=own) as r:
        assert r.status == 200
        assert (await api.check(r, "/api/people/{identity}/profile"))["fields"] == ["name"]
    async with http.patch(profile, json={"shoe_size": "9"}, headers=own) as r:
        assert r.status == 400
        await api.check(r, "/api/people/{identity}/profile")
    async with http.patch(profile, json={"name": "x"}, headers=bearer(token(stage, "moderator"))) as r:
        assert r.status == 403
        await api.check(r, "/api/people/{identity}/profile")
    async with http.get(export, headers=own) as r:
        assert r.status == 200
        assert (await api.check(r, "/api/people/{identity}/export"))[-1024:] == bytes(1024)
    async with http.get(export, headers=bearer(token(stage, "moderator"))) as r:
        assert r.status == 403
        await api.check(r, "/api/people/{identity}/export")

    for path in ("/healthz", "/readyz", "/metrics"):
        async with http.get(path) as r:
            assert r.status == 200
            await api.check(r, path)
    ours = {(path, method) for path, method, _ in operations(openapi.document())}
    assert {(t, m.upper()) for t, m, _ in api.seen} >= ours, "every operation of http_api.py was tried"


async def test_a_development_token_request_is_decoded_as_its_struct(http: aiohttp.ClientSession) -> None:
    """The answer names the identity the token is for (cut to 64 characters, as the token's ``sub``),
    and claims of the wrong type are refused, not turned into something else."""
    async with http.post("/api/dev/token", json={"identity": "i" * 100}) as r:
        assert r.status == 200
        handed = await r.json()
    sub = jwt.decode(handed["token"], options={"verify_signature": False})["sub"]
    assert handed["identity"] == sub == "i" * 64
    for body in ({"identity": 5}, {"admin": "yes"}, {"grants": "publish"}, {"role": "emperor"}):
        async with http.post("/api/dev/token", json=body) as r:
            assert r.status == 400, (body, await r.text())
            assert (await r.json(content_type=None))["code"] == "invalid_body", body


def test_nothing_in_the_document_points_at_a_missing_component(served: dict[str, Any]) -> None:
    doc = served
    text = repr(doc)
    for kind, name in re.findall(r"#/components/(\w+)/(\w+)", text):
        assert name in doc["components"][kind], f"{kind}/{name}"
