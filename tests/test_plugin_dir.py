"""The node's plugins directory: only what `rabbit` and the enabled plugins need (pure logic
on a made-up installation, and the real one where it is installed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.brokers.local import DEBIAN_RELEASE_SCRIPT, ENABLED_PLUGINS
from harness.brokers.plugin_dir import minimal_plugins_dir, needed_apps


def _app(plugins: Path, name: str, deps: list[str], version: str = "1.0.0") -> None:
    ebin = plugins / f"{name}-{version}" / "ebin"
    ebin.mkdir(parents=True)
    (ebin / f"{name}.app").write_text(
        f"{{application, {name}, [{{vsn, \"{version}\"}},\n"
        f"  {{applications, [kernel, stdlib, {', '.join(deps)}]}}]}}.\n".replace(", ]", "]"))


def _install(tmp_path: Path) -> Path:
    root = tmp_path / "rabbitmq_server-3.10.8"
    (root / "sbin").mkdir(parents=True)
    (root / "sbin" / "rabbitmq-server").write_text("#!/bin/sh\n")
    plugins = root / "plugins"
    _app(plugins, "rabbit", ["rabbit_common", "ra", "mnesia"])
    _app(plugins, "rabbit_common", ["jsx"])
    _app(plugins, "ra", ["aten"])
    _app(plugins, "aten", [])
    _app(plugins, "jsx", [])
    _app(plugins, "rabbitmq_prelaunch", ["cuttlefish"])
    _app(plugins, "cuttlefish", [])
    _app(plugins, "rabbitmq_management", ["rabbit", "cowboy"])
    _app(plugins, "cowboy", ["cowlib"])
    _app(plugins, "cowlib", [])
    _app(plugins, "rabbitmq_shovel", ["amqp_client"])  # shipped, not enabled
    _app(plugins, "amqp_client", [])
    return root


def test_only_the_closure_of_rabbit_and_the_enabled_plugins_is_linked(tmp_path):
    root = _install(tmp_path)
    made = minimal_plugins_dir(str(root / "sbin" / "rabbitmq-server"), ["rabbitmq_management"],
                               tmp_path / "node" / "plugins")
    assert made is not None
    linked = sorted(p.name.split("-")[0] for p in made.iterdir())
    assert linked == ["aten", "cowboy", "cowlib", "cuttlefish", "jsx", "ra", "rabbit",
                      "rabbit_common", "rabbitmq_management", "rabbitmq_prelaunch"]
    assert all(p.is_symlink() and (p / "ebin").is_dir() for p in made.iterdir())


def test_a_layout_it_does_not_understand_keeps_the_shipped_directory(tmp_path):
    root = _install(tmp_path)
    # An enabled plugin shipped as an archive (or missing) cannot be read: no shortcut.
    assert needed_apps(root / "plugins", ["rabbitmq_stomp"]) is None
    assert minimal_plugins_dir(str(tmp_path / "elsewhere" / "sbin" / "rabbitmq-server"),
                               ["rabbitmq_management"], tmp_path / "x") is None


@pytest.mark.skipif(not Path(DEBIAN_RELEASE_SCRIPT).exists(), reason="no Debian RabbitMQ")
def test_the_installed_release_gives_rabbit_and_management_their_dependencies(tmp_path):
    made = minimal_plugins_dir(DEBIAN_RELEASE_SCRIPT, ENABLED_PLUGINS, tmp_path / "plugins")
    assert made is not None
    apps = {p.name.rsplit("-", 1)[0] for p in made.iterdir()}
    assert {"rabbit", "rabbit_common", "rabbitmq_prelaunch", "ra", "rabbitmq_management",
            "rabbitmq_management_agent", "rabbitmq_web_dispatch", "cowboy"} <= apps
    assert not any(a.startswith(("rabbitmq_shovel", "rabbitmq_mqtt", "rabbitmq_stomp"))
                   for a in apps)
