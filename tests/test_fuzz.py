"""Every endpoint fuzzed against the real services on a real broker: no 5xx, and every 4xx a
JSON error. Schemathesis draws requests from the OpenAPI documents (valid ones and ones that
break the schema); a table of raw hostile bodies covers what a schema cannot describe."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from harness.lab import Lab
from lab_services import events, openapi
from lab_services.settings import ServiceSettings

pytestmark = pytest.mark.broker  # about 10 s with its lab: not slow

# Per operation and mode; FUZZ_EXAMPLES=500 for a longer hunt by hand.
_N = int(os.environ.get("FUZZ_EXAMPLES", "25"))
EXAMPLES = {GenerationMode.POSITIVE: _N, GenerationMode.NEGATIVE: _N}
# The services' default body limit is 64 KB (a JSON 413 above it, from Flask); waitress
# itself refuses bodies over 16 MB with a text/plain 413 (lab_services.web.serve).
SERVER_BODY_LIMIT = max(4 * ServiceSettings.max_body_bytes, 16 << 20)
GOOD_ITEMS = [{"item_id": "item_1", "quantity": 1, "price": 1.0}]


@pytest.fixture(scope="module")
def fuzz_lab(broker, tmp_path_factory) -> Iterator[Lab]:
    """One lab for every fuzzed request of this module."""
    lab = Lab(broker, workdir=tmp_path_factory.mktemp("fuzz-lab"))
    with lab:
        yield lab


def assert_json_error(response, what: str) -> None:
    """A 4xx must be JSON with an "error" key; anything 5xx is a failure."""
    status = response.status_code
    headers = {k.lower(): v[0] if isinstance(v, list) else v
               for k, v in response.headers.items()}
    text = response.text
    assert status < 500, f"{what}: {status} {text[:300]}"
    if 400 <= status < 500:
        assert headers.get("content-type", "").startswith("application/json"), \
            f"{what}: {status} not JSON: {text[:300]}"
        body = json.loads(text)
        assert isinstance(body, dict) and isinstance(body.get("error"), str), \
            f"{what}: {status} without an error: {text[:300]}"


def operations(service: str, url: str):
    schema = schemathesis.openapi.from_dict(openapi.document(service, url))
    return [result.ok() for result in schema.get_all_operations()]


def fuzz(operation, mode: GenerationMode, url: str) -> None:
    """Draw a bounded number of requests for one operation and check every response."""
    checks = [not_a_server_error, status_code_conformance]
    if mode is GenerationMode.POSITIVE:
        checks.append(response_schema_conformance)
    elif operation.method.upper() == "POST":
        checks.append(negative_data_rejection)  # what breaks the schema must get a 4xx
    session = requests.Session()

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=EXAMPLES[mode], deadline=None, database=None,
              phases=[Phase.explicit, Phase.generate, Phase.shrink],
              suppress_health_check=list(HealthCheck))
    def run(case) -> None:
        try:
            response = case.call(base_url=url, session=session, timeout=15)
        except (requests.exceptions.InvalidHeader, ValueError):
            return  # requests refuses to send it (a control character in a header)
        sent = len(getattr(response.request, "body", None) or b"")
        if response.status_code == 413 and sent > SERVER_BODY_LIMIT:
            return  # waitress refused it before the app (see test_requests_the_http_server_...)
        what = case.as_curl_command()[:600]
        assert_json_error(response, what)
        case.validate_response(response, checks=checks)

    run()


@pytest.mark.parametrize("service", openapi.SERVICES)
def test_fuzz_every_operation(fuzz_lab, service):
    url = fuzz_lab.url(service)
    doc = openapi.document(service, url)
    for operation in operations(service, url):
        spec = doc["paths"][operation.path][operation.method.lower()]
        # A bare string path parameter cannot be made invalid: negative data needs a body
        # or a constrained parameter.
        breakable = bool(spec.get("requestBody")) or any(
            p["in"] != "path" for p in spec.get("parameters", []))
        for mode in EXAMPLES:
            if mode is GenerationMode.POSITIVE or breakable:
                fuzz(operation, mode, url)


def nested(depth: int) -> str:
    return '{"user_id": "u", "items": ' + "[" * depth + "]" * depth + "}"


def order(**line) -> str:
    return json.dumps({"user_id": "u", "items": [{**GOOD_ITEMS[0], **line}]})


JSON = "application/json"
HOSTILE = {
    "30,000-deep nesting": (nested(30_000), JSON),
    "quantity 10**400": (order().replace('"quantity": 1', '"quantity": 1' + "0" * 400), JSON),
    "quantity 1e308": (order().replace('"quantity": 1', '"quantity": 1e308'), JSON),
    "price 1e308": (order(price=1e308), JSON),
    "quantity above the maximum": (order(quantity=events.MAX_QUANTITY + 1), JSON),
    "price NaN literal": (order().replace('"price": 1.0', '"price": NaN'), JSON),
    "price Infinity literal": (order().replace('"price": 1.0', '"price": Infinity'), JSON),
    "quantity -Infinity literal": (order().replace('"quantity": 1', '"quantity": -Infinity'),
                                   JSON),
    "60 KB emoji user_id": (json.dumps({"user_id": "\U0001f354" * 15_000,
                                        "items": GOOD_ITEMS}), JSON),
    "user_id one over the limit": (json.dumps({"user_id": "u" * (events.MAX_ID_LENGTH + 1),
                                               "items": GOOD_ITEMS}), JSON),
    "emoji item_id over the limit": (order(item_id="\U0001f35f" * (events.MAX_ID_LENGTH + 1)),
                                     JSON),
    "lone surrogate in user_id": ('{"user_id": "\\ud800", "items": []}', JSON),
    "101 lines": (json.dumps({"user_id": "u", "items": GOOD_ITEMS * 101}), JSON),
    "null body": ("null", JSON),
    "array body": ("[1, 2, 3]", JSON),
    "empty body": ("", JSON),
    "invalid UTF-8": (b'{"user_id": "\xff\xfe", "items": []}', JSON),
    "text/plain": ('{"user_id": "u", "items": []}', "text/plain"),
    "form encoded": ("user_id=u&items=1", "application/x-www-form-urlencoded"),
    "no content type": (order(), None),
    "latin-1 bytes, declared": ('{"user_id": "Zo\xeb", "items": []}'.encode("latin-1"),
                                "application/json; charset=latin-1"),
    "200 KB body": ('{"user_id": "' + "x" * 200_000 + '"}', JSON),
}


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_bodies_get_a_json_4xx_and_store_nothing(fuzz_lab, name):
    body, content_type = HOSTILE[name]
    before = len(fuzz_lab.orders())
    headers = {"Content-Type": content_type} if content_type else {}
    data = body.encode() if isinstance(body, str) else body
    r = requests.post(fuzz_lab.url("order") + "/order", data=data, headers=headers, timeout=30)
    assert 400 <= r.status_code < 500, f"{name}: {r.status_code} {r.text[:300]}"
    assert_json_error(r, name)
    assert len(fuzz_lab.orders()) == before, f"{name}: an order was stored"


@pytest.mark.parametrize("path", [
    "/order/" + "\U0001f354" * 2000, "/order/..%2F..%2Fetc%2Fpasswd", "/order/%00",
    "/order/" + "x" * 20_000, "/order/%ff%fe", "/nope", "/order", "/order/",
])
def test_hostile_paths_get_json_and_no_5xx(fuzz_lab, path):
    r = requests.get(fuzz_lab.url("order") + path, timeout=30)
    assert_json_error(r, path)


@settings(max_examples=30, deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
@given(value=st.recursive(st.none() | st.booleans() | st.floats() | st.integers()
                          | st.text(max_size=80),
                          lambda inner: st.lists(inner, max_size=4)
                          | st.dictionaries(st.text(max_size=10), inner, max_size=4),
                          max_leaves=20))
def test_any_json_value_as_an_order_gets_no_5xx(fuzz_lab, value):
    body = json.dumps({"user_id": "u", "items": [{"item_id": "item_1", "quantity": value}]})
    r = requests.post(fuzz_lab.url("order") + "/order", data=body,
                      headers={"Content-Type": JSON}, timeout=30)
    assert_json_error(r, body[:200])


KEYS = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1, max_size=128)
LINES = st.lists(st.fixed_dictionaries({
    "item_id": st.sampled_from(["item_1", "item_2", "item_3"]),
    "quantity": st.integers(1, events.MAX_QUANTITY),
    "price": st.floats(0, events.MAX_PRICE, allow_nan=False)}), min_size=1, max_size=3)


@settings(max_examples=15, deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
@given(key=KEYS, user=st.text(min_size=1, max_size=events.MAX_ID_LENGTH).filter(str.strip),
       items=LINES, other=LINES)
def test_an_idempotency_key_gives_one_order_per_body(fuzz_lab, key, user, items, other):
    # A random key may repeat across examples (hypothesis shrinks towards "0"): make it ours.
    key = f"{uuid.uuid4().hex}-{key}"[:128]
    url = fuzz_lab.url("order") + "/order"
    first = requests.post(url, json={"user_id": user, "items": items},
                          headers={"Idempotency-Key": key}, timeout=30)
    assert first.status_code in (201, 202, 400), first.text
    if first.status_code == 400:  # e.g. a user id that is only control characters
        assert_json_error(first, "first")
        return
    again = requests.post(url, json={"user_id": user, "items": items},
                          headers={"Idempotency-Key": key}, timeout=30)
    assert again.status_code in (201, 202), again.text
    assert again.json()["order_id"] == first.json()["order_id"]
    assert again.headers.get("Idempotent-Replayed") == "true"
    if other != items:
        clash = requests.post(url, json={"user_id": user, "items": other},
                              headers={"Idempotency-Key": key}, timeout=30)
        assert clash.status_code == 422 and clash.json()["field"] == "Idempotency-Key"


@pytest.mark.parametrize("key", ["", "x" * 129, "caf\u00e9", "tab\there"])
def test_a_bad_idempotency_key_is_a_json_400_and_stores_nothing(fuzz_lab, key):
    before = len(fuzz_lab.orders())
    r = requests.post(fuzz_lab.url("order") + "/order", data=order(),
                      headers={"Content-Type": JSON, "Idempotency-Key": key.encode("latin-1")},
                      timeout=30)
    assert r.status_code == 400 and r.json()["field"] == "Idempotency-Key", r.text
    assert len(fuzz_lab.orders()) == before


@pytest.mark.parametrize(("what", "body", "headers", "status"), [
    # Over 16 MB waitress itself refuses, before the app sees it.
    ("17 MB body", b'{"user_id": "' + b"x" * (17 << 20) + b'"}', {}, 413),
    # Not HTTP (a DEL in a header value): the HTTP server answers for the app.
    ("DEL in a header", order().encode(), {"Idempotency-Key": b"\x7f"}, 400),
])
def test_requests_the_http_server_refuses_store_nothing(fuzz_lab, what, body, headers, status):
    # These get waitress's own text/plain answer, not the API's JSON: documented, not fixed.
    before = len(fuzz_lab.orders())
    r = requests.post(fuzz_lab.url("order") + "/order", data=body,
                      headers={"Content-Type": JSON, **headers}, timeout=30)
    assert r.status_code == status, f"{what}: {r.status_code} {r.text[:200]}"
    assert len(fuzz_lab.orders()) == before


@pytest.mark.parametrize("service", openapi.SERVICES)
def test_undocumented_methods_get_a_json_405(fuzz_lab, service):
    doc = openapi.document(service)
    for path, item in doc["paths"].items():
        concrete = path.replace("{order_id}", "ORD-1")
        for method in {"get", "post", "put", "delete", "patch"} - set(item):
            r = requests.request(method, fuzz_lab.url(service) + concrete, timeout=10)
            assert_json_error(r, f"{method} {path}")
            assert r.status_code == 405, f"{method} {path}: {r.status_code}"


@pytest.fixture
def broken_order_api() -> Iterator[str]:
    """A deliberately broken order API on a free port: 500 on big orders, text 400s."""
    import threading

    from flask import Flask, request
    from waitress import create_server

    app = Flask("broken")

    @app.post("/order")
    def place():
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            return "bad", 400  # not JSON: the contract breaks here
        if sum(i.get("quantity", 0) for i in body.get("items", []) if isinstance(i, dict)) > 3:
            return {"error": "boom"}, 500
        return {"error": "no"}, 400

    server = create_server(app, host="127.0.0.1", port=0, threads=2)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.effective_port}"
    finally:
        server.close()


@pytest.mark.parametrize("mode", list(EXAMPLES))
def test_the_fuzz_fails_on_a_broken_api(broken_order_api, mode):
    (operation,) = [op for op in operations("order", broken_order_api) if op.path == "/order"]
    with pytest.raises(Exception) as caught:  # hypothesis re-raises the first failure found
        fuzz(operation, mode, broken_order_api)
    found = " ".join(messages(caught.value))
    assert ": 500 " in found or "not JSON" in found, found[:1000]


def messages(exc: BaseException) -> list[str]:
    """An exception's message and those of every exception grouped in it."""
    return [str(exc)] + [m for sub in getattr(exc, "exceptions", ()) for m in messages(sub)]
