"""The HTTP API of the three services as OpenAPI 3.0 documents, one per service.

Each service serves its own document at `GET /openapi.json`. The limits in the schemas are
the validators' own constants (`events.MAX_ITEMS`, ...), so the document cannot drift from
what the code enforces; tests/test_openapi.py checks that the routes and the documents
agree, and tests/test_fuzz.py fuzzes every operation against running services.

    python -m lab_services.openapi order     # print the order service's document
"""

from __future__ import annotations

import copy
import json
import sys
from typing import Any

from lab_services import events
from lab_services.contract import DEFAULT_PORTS, SERVICES

OPENAPI_VERSION = "3.0.3"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error(description: str) -> dict[str, Any]:
    return _json(_ref("Error"), description)


ID = {"type": "string", "minLength": 1, "maxLength": events.MAX_ID_LENGTH}
TIMESTAMP = {"type": "string", "description": "ISO 8601, UTC"}

SCHEMAS: dict[str, dict[str, Any]] = {
    "Error": {
        "type": "object", "required": ["error"],
        "properties": {
            "error": {"type": "string", "description": "'<field>: <what is wrong>'"},
            "field": {"type": "string", "description": "the offending field, if one"},
            "retry": {"type": "boolean", "description": "true: try again later, same key"},
            "cause": {"type": "string", "enum": ["store"],
                      "description": "store: the service's store cannot commit now "
                                     "(a 503 with Retry-After)"},
        },
    },
    "Item": {
        "type": "object", "required": ["item_id", "quantity"],
        "properties": {
            "item_id": ID,
            "quantity": {"type": "integer", "minimum": 1, "maximum": events.MAX_QUANTITY},
            "price": {"type": "number", "minimum": 0, "maximum": events.MAX_PRICE, "default": 0},
        },
    },
    "OrderRequest": {
        "type": "object", "required": ["user_id", "items"],
        "properties": {
            "user_id": ID,
            "items": {"type": "array", "minItems": 1, "maxItems": events.MAX_ITEMS,
                      "items": _ref("Item")},
        },
    },
    "Order": {
        "type": "object",
        "required": ["order_id", "user_id", "items", "total_amount", "status", "created_at",
                     "event_id"],
        "properties": {
            "order_id": {"type": "string", "example": "ORD-20261127-0a1b2c3d"},
            "user_id": {"type": "string"},
            "items": {"type": "array", "items": _ref("Item")},
            "total_amount": {"type": "number"},
            "status": {"type": "string", "enum": ["PENDING", "RESERVED", "FAILED"]},
            "reason": {"type": "string", "nullable": True, "description": "why FAILED"},
            "created_at": TIMESTAMP,
            "updated_at": {**TIMESTAMP, "nullable": True},
            "event_id": {"type": "string", "description": "the OrderPlaced event's id"},
        },
    },
    "Health": {
        "type": "object", "required": ["service", "pid", "status", "broker"],
        "properties": {
            "service": {"type": "string"},
            "pid": {"type": "integer"},
            "status": {"type": "string", "enum": ["ok", "degraded"]},
            "broker": {"type": "string", "enum": ["connected", "disconnected"]},
            "reconnects": {"type": "integer"},
            "store": {"type": "string", "enum": ["ok", "failing"],
                      "description": "whether the service's store commits (not ok: 503)"},
            "store_error": {"type": "string", "description": "why the last commit failed"},
        },
    },
    "StockItem": {
        "type": "object", "required": ["name", "stock", "price", "initial"],
        "properties": {"name": {"type": "string"}, "stock": {"type": "integer"},
                       "price": {"type": "number"}, "initial": {"type": "integer"}},
    },
    "Reservations": {
        "type": "object", "required": ["reservations", "outcomes"],
        "properties": {
            "reservations": {"type": "array", "items": {
                "type": "object", "required": ["order_id", "item_id", "quantity"],
                "properties": {"order_id": {"type": "string"}, "item_id": {"type": "string"},
                               "quantity": {"type": "integer"},
                               "event_id": {"type": "string", "nullable": True}}}},
            "outcomes": {"type": "array", "items": {
                "type": "object", "required": ["order_id", "reserved"],
                "properties": {"order_id": {"type": "string"}, "reserved": {"type": "boolean"},
                               "reason": {"type": "string", "nullable": True},
                               "times_processed": {"type": "integer"}}}},
        },
    },
    "Notification": {
        "type": "object", "required": ["order_id", "event_type", "status", "message"],
        "properties": {
            "order_id": {"type": "string"},
            "event_type": {"type": "string",
                           "enum": [events.INVENTORY_RESERVED, events.INVENTORY_FAILED]},
            "status": {"type": "string", "enum": ["RESERVED", "FAILED"]},
            "reason": {"type": "string", "nullable": True},
            "message": {"type": "string"},
            "event_id": {"type": "string"},
        },
    },
}

def _idempotency_key() -> dict[str, Any]:
    # Imported here: the order service imports this module to serve its document.
    from lab_services.order_requests import MAX_IDEMPOTENCY_KEY
    return {
        "name": "Idempotency-Key", "in": "header", "required": False,
        "description": "Same key and body: the same order again, never a second event. "
                       "Same key, other body: 422.",
        "schema": {"type": "string", "minLength": 1, "maxLength": MAX_IDEMPOTENCY_KEY,
                   "pattern": "^[\\x20-\\x7e]+$"},
    }


def _common_paths() -> dict[str, Any]:
    return {
        "/health": {"get": {
            "operationId": "health", "summary": "Liveness, broker connection, store commits",
            "responses": {"200": _json(_ref("Health"), "connected to the broker"),
                          "503": _json(_ref("Health"),
                                       "degraded: not connected, or the store cannot "
                                       "commit")}}},
        "/openapi.json": {"get": {
            "operationId": "openapi", "summary": "This document",
            "responses": {"200": _json({"type": "object"}, "the OpenAPI document")}}},
    }


def _order_paths() -> dict[str, Any]:
    order = _ref("Order")
    return {
        "/order": {"post": {
            "operationId": "placeOrder", "summary": "Place an order",
            "parameters": [_idempotency_key()],
            "requestBody": {"required": True, "content": {
                "application/json": {"schema": _ref("OrderRequest")}}},
            "responses": {
                "201": _json(order, "stored, and its OrderPlaced event confirmed by the broker"),
                "202": _json(order, "stored with its event in the outbox; published later"),
                "400": _error("bad JSON or a bad field (named in `field`)"),
                "413": _error("body too large"),
                "409": _error("a request with the same Idempotency-Key is still in progress "
                              "(retry: true)"),
                "415": _error("not application/json"),
                "422": _error("Idempotency-Key reused with a different body"),
                "503": _error("not accepted: the broker or the store cannot take it now "
                              "(retry: true; a store failure also sends Retry-After)"),
            }}},
        "/order/{order_id}": {"get": {
            "operationId": "getOrder", "summary": "One order and its status",
            "parameters": [{"name": "order_id", "in": "path", "required": True,
                            "schema": {"type": "string"}}],
            "responses": {"200": _json(order, "the order"),
                          "404": _error("no such order")}}},
        "/orders": {"get": {
            "operationId": "listOrders", "summary": "Every order, oldest first",
            "responses": {"200": _json({"type": "array", "items": order}, "the orders")}}},
    }


def _inventory_paths() -> dict[str, Any]:
    return {
        "/inventory": {"get": {
            "operationId": "inventory", "summary": "Stock per item",
            "responses": {"200": _json({"type": "object",
                                        "additionalProperties": _ref("StockItem")},
                                       "item id -> stock")}}},
        "/reservations": {"get": {
            "operationId": "reservations", "summary": "The reservation ledger and outcomes",
            "responses": {"200": _json(_ref("Reservations"), "ledger, oldest first")}}},
    }


def _notification_paths() -> dict[str, Any]:
    return {
        "/notifications": {"get": {
            "operationId": "notifications", "summary": "One notification per order",
            "responses": {"200": _json({"type": "array", "items": _ref("Notification")},
                                       "oldest first")}}},
    }


_PATHS = {"order": _order_paths, "inventory": _inventory_paths,
          "notification": _notification_paths}


def document(service: str, server_url: str | None = None) -> dict[str, Any]:
    """The OpenAPI 3 document of one service ("order", "inventory" or "notification")."""
    if service not in _PATHS:
        raise ValueError(f"service must be one of {SERVICES}, not {service!r}")
    paths = {**_PATHS[service](), **_common_paths()}
    for item in paths.values():
        for op in item.values():
            op["tags"] = [service]
    return {
        "openapi": OPENAPI_VERSION,
        "info": {"title": f"rabbit-lab {service} service", "version": "1.0.0",
                 "description": "Errors are JSON: {\"error\": \"<field>: <problem>\", "
                                "\"field\": \"<field>\"}."},
        "servers": [{"url": server_url or f"http://127.0.0.1:{DEFAULT_PORTS[service]}"}],
        "tags": [{"name": service}],
        "paths": paths,
        "components": {"schemas": copy.deepcopy(SCHEMAS)},
    }


def main(argv: list[str] | None = None) -> int:
    """Print a service's document as JSON (python -m lab_services.openapi SERVICE)."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or args[0] not in SERVICES:
        print(f"usage: python -m lab_services.openapi {{{','.join(SERVICES)}}}",
              file=sys.stderr)
        return 2
    print(json.dumps(document(args[0]), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
