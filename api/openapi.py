"""The OpenAPI 3.1 document, generated from the operation table and the pydantic models the server
validates with. OpenAPI 3.1 schemas are JSON Schema 2020-12, which is what pydantic emits, so the
component schemas are pydantic's own output, unchanged."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from api.operation import Operation
from hookfleet import __version__
from schemas.api import ErrorBody

_REF = "#/components/schemas/{model}"
_ANY_ID = {"type": "string", "minLength": 1}

_ERROR_TEXT = {
    400: "The body is not valid JSON.",
    401: "Missing or unknown API key, or a portal session or link that ended (`error.code` says which).",
    403: "Refused to a portal session: a read-only one changes nothing (`read_only_session`); none manages API"
    " keys or portal sessions (`portal_session_not_allowed`).",
    404: "No such resource in this account.",
    413: "The body is too large.",
    415: "The body is not sent as application/json.",
    409: "Conflicts with the resource's state: the account's last active API key cannot be revoked (create"
    " another first); a disabled webhook cannot be replayed (`webhook_disabled`: enable it first); a webhook"
    " without asymmetric signing has no signing key to rotate (`asymmetric_signing_off`: switch it on first).",
    410: "Past the delivery log's retention (`past_retention`): that day of the log was dropped.",
    422: "A field is invalid; `error.field` names it.",
    429: "A quota of the account is exceeded (`quota_exceeded`); `Retry-After` says when to try again.",
    503: "The database or the message broker is not reachable, or a stored secret cannot be decrypted"
    " (`secret_undecryptable`: the server's key is misconfigured); retry later.",
}


def _without_null(schema: dict[str, Any]) -> dict[str, Any]:
    """A query parameter is absent rather than null: drop the `null` branch and the null default."""
    schema = {k: v for k, v in schema.items() if not (k == "default" and v is None)}
    options = schema.get("anyOf")
    if isinstance(options, list):
        kept = [o for o in options if o != {"type": "null"}]
        schema.pop("anyOf")
        if len(kept) == 1:
            schema = {**kept[0], **schema}
        else:
            schema["anyOf"] = kept
    return schema


def _json_content(ref: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": ref}}


def document(operations: Iterable[Operation]) -> dict[str, Any]:
    ops = list(operations)
    wanted: list[tuple[type[BaseModel], JsonSchemaMode]] = [(ErrorBody, "serialization")]
    for op in ops:
        if op.request is not None:
            wanted.append((op.request, "validation"))
        if op.query is not None:
            wanted.append((op.query, "validation"))
        if op.response is not None:
            wanted.append((op.response, "serialization"))
        wanted.extend((model, "serialization") for _, model, _ in op.also)
    refs, definitions = models_json_schema(list(dict.fromkeys(wanted)), ref_template=_REF)
    components: dict[str, Any] = definitions.get("$defs", {})
    error_ref = refs[(ErrorBody, "serialization")]

    paths: dict[str, dict[str, Any]] = {}
    for op in ops:
        spec: dict[str, Any] = {"operationId": op.operation_id, "summary": op.summary, "tags": [op.tag]}
        if op.description:
            spec["description"] = op.description
        parameters: list[dict[str, Any]] = [
            {"name": name, "in": "path", "required": True, "schema": op.path_schemas.get(name, _ANY_ID)}
            for name in op.path_params
        ]
        if op.query is not None:
            query_schema = components[refs[(op.query, "validation")]["$ref"].rsplit("/", 1)[-1]]
            required = set(query_schema.get("required", []))
            for name, prop in query_schema["properties"].items():
                param: dict[str, Any] = {"name": name, "in": "query", "required": name in required}
                if "description" in prop:
                    param["description"] = prop["description"]
                param["schema"] = _without_null({k: v for k, v in prop.items() if k != "description"})
                parameters.append(param)
        if parameters:
            spec["parameters"] = parameters
        if op.request is not None:
            spec["requestBody"] = {
                "required": op.body_required,
                "content": _json_content(refs[(op.request, "validation")]),
            }
        success: dict[str, Any] = {"description": op.summary}
        if op.response is not None:
            success["content"] = _json_content(refs[(op.response, "serialization")])
        elif op.status != 204:
            success["content"] = _json_content({"type": "object"})
        if op.response_headers:
            success["headers"] = {
                name: {"description": text, "schema": {"type": "string"}} for name, text in op.response_headers.items()
            }
        responses: dict[str, Any] = {str(op.status): success}
        for status, model, when in op.also:
            responses[str(status)] = {"description": when, "content": _json_content(refs[(model, "serialization")])}
        for status in op.error_statuses:
            error: dict[str, Any] = {"description": _ERROR_TEXT[status], "content": _json_content(error_ref)}
            if status == 401:
                error["headers"] = {"WWW-Authenticate": {"schema": {"type": "string"}, "required": True}}
            if status == 429:
                error["headers"] = {"Retry-After": {"schema": {"type": "string"}, "required": True}}
            responses[str(status)] = error
        spec["responses"] = responses
        if op.public:
            spec["security"] = []
        paths.setdefault(op.path, {})[op.method.lower()] = spec

    security_scheme: dict[str, str] = {
        "type": "http",
        "scheme": "bearer",
        "description": "An API key from `hookfleet accounts create`, or a portal session (exchangePortalToken).",
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "hookfleet webhooks API",
            "version": __version__,
            "description": "Manage webhooks: create, test, read delivery logs, rotate secrets, redeliver.",
        },
        "paths": paths,
        "components": {"schemas": components, "securitySchemes": {"apiKey": security_scheme}},
        "security": [{"apiKey": []}],
    }
