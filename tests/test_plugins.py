"""A local node's trimmed plugins folder: the dependency closure read from `.app` files, and a
real node that boots from it with the management plugin answering."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from harness.brokers import plugins


def _app(folder: Path, name: str, needs: list[str], version: str = "1.0") -> None:
    ebin = folder / f"{name}-{version}" / "ebin"
    ebin.mkdir(parents=True)
    (ebin / f"{name}.app").write_text(
        f"{{application, {name}, [{{vsn, \"{version}\"}},\n"
        f"  {{applications, [kernel, stdlib, {', '.join(needs)}]}}]}}.\n".replace(", ]", "]"))


def _release(tmp_path: Path) -> Path:
    """A release tree: sbin/rabbitmq-server and plugins/ with a small dependency graph."""
    home = tmp_path / "rabbitmq_server-9.9"
    (home / "sbin").mkdir(parents=True)
    script = home / "sbin" / "rabbitmq-server"
    script.write_text("#!/bin/sh\n")
    folder = home / "plugins"
    _app(folder, "rabbit", ["rabbit_common", "ra"])
    _app(folder, "rabbit_common", ["jsx"])
    _app(folder, "rabbitmq_prelaunch", ["rabbit_common"])
    _app(folder, "ra", ["aten"])
    _app(folder, "aten", [])
    _app(folder, "jsx", [])
    _app(folder, "rabbitmq_management", ["rabbitmq_web_dispatch"])
    _app(folder, "rabbitmq_web_dispatch", ["cowboy"])
    _app(folder, "cowboy", ["ssl"])  # an OTP application: not in the folder
    _app(folder, "rabbitmq_mqtt", ["ranch"])  # not enabled: left out
    _app(folder, "ranch", [])
    (folder / "README").write_text("not an application\n")
    return script


def test_the_trimmed_folder_links_exactly_what_the_core_and_management_need(tmp_path):
    script = _release(tmp_path)
    into = plugins.trimmed_plugins_dir(script, tmp_path / "node" / "plugins")
    assert into is not None
    linked = sorted(p.name for p in into.iterdir())
    assert linked == sorted(f"{n}-1.0" for n in (
        "rabbit", "rabbit_common", "rabbitmq_prelaunch", "ra", "aten", "jsx",
        "rabbitmq_management", "rabbitmq_web_dispatch", "cowboy"))
    assert all((into / n).is_symlink() for n in linked)
    assert (into / "ra-1.0" / "ebin" / "ra.app").is_file()  # the link leads to the release


def test_a_release_with_packed_plugins_or_without_the_core_keeps_its_folder(tmp_path):
    script = _release(tmp_path)
    packed = script.parent.parent / "plugins" / "rabbitmq_stomp-1.0.ez"
    packed.write_bytes(b"PK")
    assert plugins.trimmed_plugins_dir(script, tmp_path / "a") is None
    packed.unlink()
    for app in (script.parent.parent / "plugins" / "rabbit-1.0" / "ebin").iterdir():
        app.unlink()
    assert plugins.trimmed_plugins_dir(script, tmp_path / "b") is None
    assert plugins.trimmed_plugins_dir(tmp_path / "nowhere" / "sbin" / "x", tmp_path / "c") \
        is None


def test_an_unreadable_application_keeps_the_releases_folder(tmp_path):
    script = _release(tmp_path)
    broken = script.parent.parent / "plugins" / "jsx-1.0" / "ebin" / "jsx.app"
    broken.unlink()
    broken.symlink_to(tmp_path / "gone.app")  # a dangling link: reading it fails
    assert plugins.trimmed_plugins_dir(script, tmp_path / "d") is None


@pytest.mark.broker
def test_a_local_node_boots_from_the_trimmed_folder_with_management_running(broker):
    if getattr(broker, "plugins_dir", None) is None:
        pytest.skip("this broker is not a local node with a trimmed plugins folder")
    source = plugins.plugins_dir_of(broker.server_script)
    assert source is not None
    linked = {p.name for p in broker.plugins_dir.iterdir()}
    assert len(linked) < len([p for p in source.iterdir() if p.is_dir()])
    running = set(re.findall(r"[a-z][a-z0-9_]*", broker.rabbitmqctl(
        "eval", "[A || {A, _, _} <- application:which_applications()].").stdout))
    assert {"rabbit", "rabbitmq_management", "rabbitmq_management_agent"} <= running
    folder = broker.rabbitmqctl("eval", 'os:getenv("RABBITMQ_PLUGINS_DIR").').stdout
    assert folder.strip().strip('"') == str(broker.plugins_dir)
    # Every application the node runs from the plugins folder came through the trimmed one.
    from_folder = {p.name.rsplit("-", 1)[0] for p in source.iterdir() if p.is_dir()}
    assert running & from_folder <= {n.rsplit("-", 1)[0] for n in linked}
