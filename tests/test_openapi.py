"""The OpenAPI documents agree with the services' routes, and with the validators' limits."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from openapi_spec_validator import validate

from lab_services import events, openapi
from lab_services.inventory import InventoryService, create_inventory_app
from lab_services.notification import NotificationService, create_notification_app
from lab_services.order import OrderService, create_order_app
from lab_services.order_requests import MAX_IDEMPOTENCY_KEY
from lab_services.settings import load

MAKERS = {"order": (OrderService, create_order_app),
          "inventory": (InventoryService, create_inventory_app),
          "notification": (NotificationService, create_notification_app)}


def build_app(service: str, tmp_path: Path):
    """The service's Flask app as it serves, built without starting its bus."""
    settings = load(service, {"STORE_PATH": str(tmp_path / f"{service}.sqlite")})
    make_service, make_app = MAKERS[service]
    return make_app(make_service(settings))


def routes(app) -> set[tuple[str, str]]:
    """(path, method) for every route, in OpenAPI's path syntax."""
    out = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
        out |= {(path, m.lower()) for m in rule.methods - {"HEAD", "OPTIONS"}}
    return out


def operations(doc: dict) -> set[tuple[str, str]]:
    return {(path, method) for path, item in doc["paths"].items() for method in item}


@pytest.mark.parametrize("service", openapi.SERVICES)
def test_each_document_is_valid_openapi_3(service):
    doc = openapi.document(service, "http://127.0.0.1:1234")
    validate(doc)
    assert doc["servers"] == [{"url": "http://127.0.0.1:1234"}]
    assert all(op["tags"] == [service] for item in doc["paths"].values()
               for op in item.values())


@pytest.mark.parametrize("service", openapi.SERVICES)
def test_routes_and_document_agree(service, tmp_path):
    app = build_app(service, tmp_path)
    served, documented = routes(app), operations(openapi.document(service))
    assert served - documented == set(), "routes missing from the document"
    assert documented - served == set(), "documented operations with no route"


@pytest.mark.parametrize("service", openapi.SERVICES)
def test_served_document_is_the_document(service, tmp_path):
    app = build_app(service, tmp_path)
    r = app.test_client().get("/openapi.json")
    assert r.status_code == 200
    assert operations(r.get_json()) == operations(openapi.document(service))


def test_limits_are_the_validators_own_constants():
    doc = openapi.document("order")
    schemas = doc["components"]["schemas"]
    item, order = schemas["Item"]["properties"], schemas["OrderRequest"]["properties"]
    assert order["items"]["maxItems"] == events.MAX_ITEMS
    assert item["quantity"]["maximum"] == events.MAX_QUANTITY
    assert item["price"]["maximum"] == events.MAX_PRICE
    assert item["item_id"]["maxLength"] == order["user_id"]["maxLength"] == events.MAX_ID_LENGTH
    key = doc["paths"]["/order"]["post"]["parameters"][0]
    assert key["name"] == "Idempotency-Key" and key["schema"]["maxLength"] == MAX_IDEMPOTENCY_KEY


def test_the_validator_enforces_the_documented_limits():
    # At each documented limit the validator says yes; one past it, no.
    def line(**kw):
        return [{"item_id": "i", "quantity": 1, "price": 1.0, **kw}]
    events.validate_items(line() * events.MAX_ITEMS)
    events.validate_items(line(quantity=events.MAX_QUANTITY, price=events.MAX_PRICE))
    events.validate_items(line(item_id="i" * events.MAX_ID_LENGTH))
    for bad in (line() * (events.MAX_ITEMS + 1), line(quantity=events.MAX_QUANTITY + 1),
                line(item_id="i" * (events.MAX_ID_LENGTH + 1)),
                line(price=events.MAX_PRICE * 1.01)):
        with pytest.raises(events.InvalidEvent):
            events.validate_items(bad)


def test_cli_prints_a_document(capsys):
    assert openapi.main(["inventory"]) == 0
    assert '"/reservations"' in capsys.readouterr().out
    assert openapi.main(["nope"]) == 2
