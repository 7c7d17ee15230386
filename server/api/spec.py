"""OpenAPI 3.1 entries made from the msgspec structs the routes decode and encode: one style for every
route module of server/api.

A module declares its operations on a ``Paths`` (``paths.add(...)``), naming request and response
bodies by their struct (``ok(StageList, ...)``, ``body(StageCreate)``); the same structs decode what
comes in (``bodies.read_json``) and encode what goes out, so the document cannot drift from the
handlers. The node's document (server/api/openapi.py) takes the structs' JSON Schemas from
``msgspec.json.schema_components`` as its ``components/schemas``, one per struct, named after its
class. A refusal is a problem document (``common.Problem``) whose description lists every ``code``
the handler can give for that status.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import msgspec

Schema = dict[str, Any]

REF_TEMPLATE = "#/components/schemas/{name}"
UNAUTHORIZED: Schema = {"$ref": "#/components/responses/Unauthorized"}
_PROBLEM = "application/problem+json"


class _Kind:
    """A type where a schema goes, until ``Paths.add`` turns it into one (and notes the type)."""

    def __init__(self, kind: Any) -> None:
        self.kind = kind


def ok(kind: Any, description: str) -> Schema:
    """A success whose JSON body is ``kind``: a struct, a type made of structs, or a schema (a dict:
    ``one_of(...)``, or a literal one)."""
    schema = kind if isinstance(kind, dict) else _Kind(kind)
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def one_of(*kinds: Any) -> Schema:
    """Exactly one of ``kinds`` (structs that msgspec cannot put in a union: they have no tag)."""
    return {"oneOf": [_Kind(kind) for kind in kinds]}


def body(kind: Any, required: bool = False) -> Schema:
    """The request body, decoded as ``kind`` (absent or empty: ``{}``, unless ``required``)."""
    return {"required": required, "content": {"application/json": {"schema": _Kind(kind)}}}


def refused(description: str, *codes: str, retry_after: str | None = None) -> Schema:
    """A refusal: a problem document whose ``code`` is one of ``codes``; ``retry_after`` describes
    the Retry-After header when the answer carries one."""
    listed = ", ".join(f"`{c}`" for c in codes)
    response: Schema = {
        "description": f"{description} (code: {listed})",
        "content": {_PROBLEM: {"schema": {"$ref": REF_TEMPLATE.format(name="Problem")}}},
    }
    if retry_after is not None:
        response["headers"] = {"Retry-After": {"schema": {"type": "integer"}, "description": retry_after}}
    return response


def path_param(name: str, description: str, **schema: Any) -> Schema:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": {"type": "string", "minLength": 1, **schema},
    }


class Paths:
    """The OpenAPI ``paths`` of one module's routes, and the types their schemas refer to."""

    def __init__(self, tag: str) -> None:
        self.tag = tag
        self.paths: dict[str, dict[str, Schema]] = {}
        self.types: list[Any] = []

    def add(
        self,
        method: str,
        path: str,
        operation_id: str,
        summary: str,
        responses: dict[str, Schema],
        *,
        params: Iterable[Schema] = (),
        request: Schema | None = None,
        description: str | None = None,
        public: bool = False,
    ) -> None:
        """One operation; ``public``: no token needed (no 401 then)."""
        operation: Schema = {"operationId": operation_id, "summary": summary, "tags": [self.tag]}
        if description is not None:
            operation["description"] = description
        if public:
            operation["security"] = []
        parameters = list(params)
        if parameters:
            operation["parameters"] = parameters
        if request is not None:
            operation["requestBody"] = request
        operation["responses"] = responses
        self.paths.setdefault(path, {})[method] = self._resolved(operation)

    def _resolved(self, node: Any) -> Any:
        if isinstance(node, _Kind):
            if node.kind not in self.types:
                self.types.append(node.kind)
            (schema,), _ = msgspec.json.schema_components([node.kind], ref_template=REF_TEMPLATE)
            return schema
        if isinstance(node, dict):
            return {k: self._resolved(v) for k, v in node.items()}
        if isinstance(node, list):
            return [self._resolved(v) for v in node]
        return node


def components(types: Iterable[Any]) -> dict[str, Schema]:
    """The schemas of ``types`` and of every struct inside them, by class name."""
    _, schemas = msgspec.json.schema_components(list(dict.fromkeys(types)), ref_template=REF_TEMPLATE)
    # Two structs of one name get dotted module paths as names: refuse that rather than serve it.
    clashes = sorted(name for name in schemas if "." in name)
    if clashes:
        raise ValueError(f"two structs share a component name: {clashes}")
    return schemas


# --- what several modules' operations share --------------------------------------------------------

ID_PATTERN = "^[A-Za-z0-9_-]+$"
STAGE_ID = path_param("stage_id", "The stage", maxLength=64, pattern=ID_PATTERN)
# Every token-bearing /api call: a revoked identity is refused (server/app.py's middleware).
FORBIDDEN_STAGE = refused(
    "The token is for another stage or club, or its identity is revoked",
    "token_wrong_stage",
    "identity_revoked",
)
FORBIDDEN_GRANT = refused(
    "The token is for another stage or club, lacks the grant, or its identity is revoked",
    "token_wrong_stage",
    "missing_grant",
    "identity_revoked",
)
FORBIDDEN_ADMIN = refused(
    "This call needs a platform token (`admin: true`) whose identity is not revoked",
    "admin_required",
    "identity_revoked",
)
