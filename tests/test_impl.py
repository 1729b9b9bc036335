"""Implementation spec files: what is accepted, and errors that name the bad key."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from harness.lab import Lab
from harness.lab.impl import ImplError, fill, lab_impl, load_impl, render, resolve

ROOT = Path(__file__).resolve().parents[1]
SPECS = ["examples/naive/impl.toml", "exercises/inventory/impl.toml",
         "tests/impls/original_lab/impl.toml", "tests/impls/fixed_ports/impl.toml",
         "solutions/inventory/impl.toml", "tests/impls/fixed_port_notification/impl.toml"]


def spec(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "impl.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("path", SPECS)
def test_every_shipped_spec_loads(path):
    impl = load_impl(ROOT / path)
    assert not impl.is_lab and set(impl.services) == {"order", "inventory", "notification"}
    for s in impl.services.values():
        assert s.lab or (s.cwd is not None and s.cwd.is_dir())


def test_the_lab_is_the_default_implementation():
    impl = resolve(None)
    assert impl == resolve("lab") == lab_impl() and impl.is_lab and impl.honours_vhost
    assert impl.services["inventory"].command == (sys.executable, "-m", "lab_services.inventory")


def test_a_partial_spec_takes_the_labs_other_services(tmp_path):
    (tmp_path / "svc").mkdir()
    impl = load_impl(spec(tmp_path, """
name = "mine"
[inventory]
command = "sh run.sh --fast"
cwd = "svc"
port = 5002
health = "/healthz"
env = { A = "{amqp_host}:{amqp_port}", N = 3 }
[order]
use = "lab"
"""))
    inv = impl.services["inventory"]
    assert inv.command == ("sh", "run.sh", "--fast") and inv.port == 5002
    assert inv.cwd == (tmp_path / "svc").resolve() and inv.health_path == "/healthz"
    assert inv.env == {"A": "{amqp_host}:{amqp_port}", "N": "3"}
    assert impl.services["order"].lab and impl.services["notification"].lab
    argv, cwd, env = render(inv, {"amqp_host": "h", "amqp_port": "1"})
    assert env["A"] == "h:1" and argv[0] == "sh"


@pytest.mark.parametrize(("text", "names"), [
    ("nme = 'x'\n[order]\ncommand = 'a'", "'nme'"),
    ("honours_vhost = 'yes'\n[order]\ncommand = 'a'", "'honours_vhost'"),
    ("[order]\ncommand = []", "'order.command'"),
    ("[order]\ncommand = 'a'\nport = 70000", "'order.port'"),
    ("[order]\ncommand = 'a'\nport = '{prot}'", "'order.port'"),
    ("[order]\ncommand = 'a'\nenv = { X = '{amqp_uri}' }", "'order.env.X'"),
    ("[order]\ncommand = 'a'\nenv = { X = '{0.__class__}' }", "'order.env.X'"),
    ("[order]\ncommand = 'a'\nenv = { 'BAD-NAME' = 'x' }", "'order.env.BAD-NAME'"),
    ("[order]\ncommand = 'a'\ncwd = 'nowhere'", "'order.cwd'"),
    ("[order]\ncommand = 'a'\nhealth = 'health'", "'order.health'"),
    ("[order]\ncommand = 'a'\ncomand = 'b'", "'order.comand'"),
    ("[order]\nuse = 'mine'", "'order.use'"),
    ("[order]\nuse = 'lab'\ncommand = 'a'", "'order.use"),
    ("[broker]\nuser = ''\n[order]\ncommand = 'a'", "'broker.user'"),
    ("[order]\nuse = 'lab'", "every service is the lab's own"),
    ("[order\ncommand = 'a'", "not valid TOML"),
])
def test_a_bad_spec_is_refused_naming_the_key(tmp_path, text, names):
    with pytest.raises(ImplError) as err:
        load_impl(spec(tmp_path, text))
    assert names in str(err.value) and str(tmp_path) in str(err.value)


def test_a_missing_spec_says_so(tmp_path):
    with pytest.raises(ImplError, match="no such spec file"):
        load_impl(tmp_path / "nope.toml")


def test_placeholders_are_names_not_format_strings():
    assert fill("{port}/{port}", {"port": "1"}) == "1/1"
    assert fill("{nope}", {"port": "1"}) == "{nope}"


def test_a_fixed_port_service_cannot_have_replicas(tmp_path):
    impl = load_impl(ROOT / "tests/impls/fixed_port_notification/impl.toml")
    url = "amqp://u:p@127.0.0.1:1/%2F"
    broker = type("B", (), {"amqp_url": url, "amqp_urls": [url], "management_url": None})()
    with pytest.raises(ValueError, match="fixed port 5003"):
        Lab(broker, impl=impl, replicas={"notification": 2}, workdir=tmp_path)
    lab = Lab(broker, impl=impl, replicas={"inventory": 3}, workdir=tmp_path)
    inv = lab.processes["inventory"]
    assert len(inv) == 3 and len({p.port for p in inv}) == 3
    assert {p.env["STORE_PATH"] for p in inv} == {str(tmp_path.resolve() / "inventory" /
                                                      "inventory.sqlite")}
    note = lab.services["notification"]
    assert note.port == 5003 and note.env["RABBIT_USER"] == "u" and note.argv == ["sh", "run.sh"]


def test_broker_addresses_of_its_own_are_read_and_checked(tmp_path):
    (tmp_path / "defs.json").write_text("{}")
    impl = load_impl(spec(tmp_path, """
[broker]
host = "rabbitmq"
port = 5672
definitions = "defs.json"
[order]
command = "a"
"""))
    assert impl.broker_host == "rabbitmq" and impl.broker_port == 5672
    assert impl.definitions == (tmp_path / "defs.json").resolve() and impl.fixed_addresses
    for bad, key in (("host = 'no spaces'", "'broker.host'"), ("port = 0", "'broker.port'"),
                     ("definitions = 'nope.json'", "'broker.definitions'")):
        with pytest.raises(ImplError, match=key):
            load_impl(spec(tmp_path, f"[broker]\n{bad}\n[order]\ncommand = 'a'"))


def test_without_a_namespace_a_fixed_broker_port_is_refused_clearly(tmp_path):
    from harness.lab import LabConfig, ServiceFailed
    impl = load_impl(ROOT / "tests/impls/fixed_ports/impl.toml")
    url = "amqp://guest:guest@127.0.0.1:25672/%2F"
    broker = type("B", (), {"amqp_url": url, "amqp_urls": [url], "management_url": None})()
    lab = Lab(broker, LabConfig(own_network=False), impl=impl, workdir=tmp_path)
    with pytest.raises(ServiceFailed) as err:
        lab.start()
    assert "connects to port 5672 only" in str(err.value) and err.value.at_start
    assert not any(p.running for p in lab.processes["order"])
