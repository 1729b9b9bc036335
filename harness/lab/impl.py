"""An implementation's spec file: how to start its order, inventory and notification services.

The harness talks to an implementation only over HTTP, AMQP and process control, so any
program that speaks the contract (docs/contract.md) can be run, broken and graded. A spec
(`impl.toml`) says how to start each service:

    name = "my-shop"
    honours_vhost = true          # false: it gets a broker of its own, default vhost "/"
    [broker]                      # the user a vhost-blind implementation connects as
    user = "guest"
    password = "guest"
    host = "rabbitmq"             # optional: the host name it reaches the broker by
    port = 5672                   # optional: the only AMQP port it connects to
    definitions = "definitions.json"  # optional: loaded into the broker before it starts

An implementation with a fixed HTTP port, a broker `port` or a broker `host` runs in a
network namespace of its own where those addresses are its own (harness.brokers.netns).

    [order]
    command = ["{python}", "order.py"]    # a list, or a string split like a shell would
    cwd = "."                             # relative to the spec file
    port = "{port}"                       # "{port}" = the harness picks; or a number: 5001
    health = "/health"
    env = { AMQP_URL = "{amqp_url}", PORT = "{port}", DB = "{data_dir}/order.db" }

    [inventory]
    use = "lab"                   # take the lab's own service (also: leave the table out)

Placeholders the harness fills in `command`, `cwd` and `env`: see PLACEHOLDERS.
"""

from __future__ import annotations

import re
import shlex
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lab_services.contract import SERVICES

PLACEHOLDERS = {
    "amqp_url": "the broker URL, with the implementation's vhost",
    "amqp_host": "the broker's host",
    "amqp_port": "the broker's AMQP port",
    "amqp_user": "the broker user",
    "amqp_password": "that user's password",
    "vhost": "the vhost to use (\"/\" when the implementation does not honour vhosts)",
    "port": "the HTTP port this service must listen on",
    "data_dir": "a folder of this service's own, kept across its restarts",
    "python": "the Python interpreter running the harness",
}

_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_SERVICE_KEYS = {"use", "command", "cwd", "env", "port", "health"}
_TOP_KEYS = {"name", "honours_vhost", "broker", *SERVICES}
_BROKER_KEYS = {"user", "password", "host", "port", "definitions"}
_HOSTNAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?")
_MAX_PORT = 65535


class ImplError(ValueError):
    """A spec file that cannot be used; the message names the file and the key."""


@dataclass(frozen=True)
class ServiceSpec:
    """How to start one service of an implementation."""

    name: str
    command: tuple[str, ...]
    cwd: Path | None = None  # None: the harness's own working directory
    env: dict[str, str] = field(default_factory=dict)
    port: int | None = None  # None: the harness picks a free port per process
    health_path: str = "/health"
    lab: bool = False  # the lab's own service: its white-box knobs (LabConfig) apply


@dataclass(frozen=True)
class Impl:
    """An implementation: one ServiceSpec per service, and how it uses the broker."""

    name: str
    services: dict[str, ServiceSpec]
    honours_vhost: bool = True
    user: str = "guest"
    password: str = "guest"
    path: Path | None = None
    broker_host: str | None = None  # the host name it reaches the broker by (None: any)
    broker_port: int | None = None  # the only AMQP port it connects to (None: any)
    definitions: Path | None = None  # a definitions.json loaded before the services start

    @property
    def fixed_addresses(self) -> bool:
        """True if it needs addresses of its own: fixed HTTP ports, broker port or host."""
        return (self.broker_host is not None or self.broker_port is not None
                or any(s.port is not None for s in self.services.values()))

    @property
    def is_lab(self) -> bool:
        """True when every service is the lab's own (white-box scenarios can run)."""
        return all(s.lab for s in self.services.values())

    def describe(self) -> str:
        """One line: the name, and which services are the lab's own."""
        own = [n for n, s in self.services.items() if not s.lab]
        return self.name + (f" (own: {', '.join(own)}; lab: the rest)" if own and len(own) < 3
                            else "")


def lab_service(name: str) -> ServiceSpec:
    """The lab's own service `name`, run as `python -m lab_services.NAME`."""
    return ServiceSpec(
        name=name, command=(sys.executable, "-m", f"lab_services.{name}"),
        env={"AMQP_URL": "{amqp_url}", "PORT": "{port}",
             "STORE_PATH": "{data_dir}/" + f"{name}.sqlite", "HOST": "127.0.0.1"},
        lab=True)


def lab_impl() -> Impl:
    """The lab's own three services: the default implementation."""
    return Impl("lab", {n: lab_service(n) for n in SERVICES})


def resolve(impl: Impl | str | Path | None) -> Impl:
    """An Impl from an Impl, a spec path, "lab", or None (the lab's own)."""
    if impl is None or impl == "lab":
        return lab_impl()
    if isinstance(impl, Impl):
        return impl
    return load_impl(impl)


def load_impl(path: str | Path) -> Impl:
    """Read and validate an impl.toml; raise ImplError naming the bad key."""
    path = Path(path)
    if path.is_dir():
        path = path / "impl.toml"
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ImplError(f"{path}: no such spec file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ImplError(f"{path}: cannot read it ({exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ImplError(f"{path}: not valid TOML ({exc})") from None
    return parse_impl(raw, path)


def parse_impl(raw: dict[str, Any], path: Path) -> Impl:
    """Validate a parsed spec (relative paths are taken from `path`'s folder)."""
    where = str(path)
    unknown = sorted(set(raw) - _TOP_KEYS)
    if unknown:
        raise ImplError(f"{where}: unknown key {unknown[0]!r} "
                        f"(expected some of {sorted(_TOP_KEYS)})")
    name = raw.get("name", path.parent.name or "impl")
    if not isinstance(name, str) or not name.strip():
        raise ImplError(f"{where}: 'name' must be a non-empty string")
    honours = raw.get("honours_vhost", True)
    if not isinstance(honours, bool):
        raise ImplError(f"{where}: 'honours_vhost' must be true or false, not {honours!r}")
    broker = raw.get("broker", {})
    if not isinstance(broker, dict):
        raise ImplError(f"{where}: [broker] must be a table")
    bad = sorted(set(broker) - _BROKER_KEYS)
    if bad:
        raise ImplError(f"{where}: unknown key 'broker.{bad[0]}' (expected some of "
                        f"{sorted(_BROKER_KEYS)})")
    user, password = broker.get("user", "guest"), broker.get("password", "guest")
    for key, value in (("user", user), ("password", password)):
        if not isinstance(value, str) or not value or len(value) > 255:
            raise ImplError(f"{where}: 'broker.{key}' must be a string of 1-255 characters")
    host = broker.get("host")
    if host is not None and (not isinstance(host, str) or not _HOSTNAME.fullmatch(host)):
        raise ImplError(f"{where}: 'broker.host' must be a host name, not {host!r}")
    amqp_port = _port(broker["port"], "broker", where) if "port" in broker else None
    definitions = broker.get("definitions")
    if definitions is not None:
        if not isinstance(definitions, str):
            raise ImplError(f"{where}: 'broker.definitions' must be a path")
        definitions = (path.parent / definitions).resolve()
        if not definitions.is_file():
            raise ImplError(f"{where}: 'broker.definitions': no such file ({definitions})")
    services = {s: _service(s, raw.get(s), path.parent.resolve(), where) for s in SERVICES}
    if all(s.lab for s in services.values()):
        raise ImplError(f"{where}: every service is the lab's own; name at least one of "
                        f"{', '.join(SERVICES)} with a command")
    return Impl(name.strip(), services, honours, user, password, path.resolve(), host,
                amqp_port, definitions)


def _service(name: str, raw: Any, base: Path, where: str) -> ServiceSpec:
    if raw is None:
        return lab_service(name)
    if not isinstance(raw, dict):
        raise ImplError(f"{where}: [{name}] must be a table")
    unknown = sorted(set(raw) - _SERVICE_KEYS)
    if unknown:
        raise ImplError(f"{where}: unknown key '{name}.{unknown[0]}' "
                        f"(expected some of {sorted(_SERVICE_KEYS)})")
    use = raw.get("use")
    if use is not None:
        if use != "lab":
            raise ImplError(f"{where}: '{name}.use' can only be \"lab\", not {use!r}")
        if set(raw) != {"use"}:
            raise ImplError(f"{where}: '{name}.use = \"lab\"' takes no other keys")
        return lab_service(name)
    command = raw.get("command")
    if isinstance(command, str):
        try:
            command = shlex.split(command)
        except ValueError as exc:
            raise ImplError(f"{where}: '{name}.command' cannot be split ({exc})") from None
    if (not isinstance(command, list) or not command
            or not all(isinstance(c, str) and c for c in command)):
        raise ImplError(f"{where}: '{name}.command' must be a non-empty list of strings "
                        "or a string")
    for part in command:
        _check_placeholders(part, f"{name}.command", where)
    cwd_raw = raw.get("cwd", ".")
    if not isinstance(cwd_raw, str):
        raise ImplError(f"{where}: '{name}.cwd' must be a string")
    _check_placeholders(cwd_raw, f"{name}.cwd", where)
    cwd = base / cwd_raw if "{" not in cwd_raw else Path(cwd_raw)
    if "{" not in cwd_raw and not cwd.is_dir():
        raise ImplError(f"{where}: '{name}.cwd' = {cwd_raw!r}: no such folder ({cwd})")
    env = raw.get("env", {})
    if not isinstance(env, dict):
        raise ImplError(f"{where}: '{name}.env' must be a table of strings")
    clean_env = {}
    for key, value in env.items():
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise ImplError(f"{where}: '{name}.env.{key}' is not a valid variable name")
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise ImplError(f"{where}: '{name}.env.{key}' must be a string or a number")
        clean_env[key] = str(value)
        _check_placeholders(clean_env[key], f"{name}.env.{key}", where)
    port = _port(raw.get("port", "{port}"), name, where)
    health = raw.get("health", "/health")
    if not isinstance(health, str) or not health.startswith("/") or any(
            c.isspace() for c in health):
        raise ImplError(f"{where}: '{name}.health' must be a path starting with '/'")
    return ServiceSpec(name, tuple(command), cwd, clean_env, port, health)


def _port(value: Any, name: str, where: str) -> int | None:
    if value == "{port}":
        return None
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= _MAX_PORT:
        raise ImplError(f"{where}: '{name}.port' must be \"{{port}}\" or a number "
                        f"1-{_MAX_PORT}, not {value!r}")
    return value


def _check_placeholders(text: str, key: str, where: str) -> None:
    for found in _PLACEHOLDER.findall(text):
        if found not in PLACEHOLDERS:
            raise ImplError(f"{where}: '{key}' uses an unknown placeholder {{{found}}} "
                            f"(known: {', '.join('{' + p + '}' for p in PLACEHOLDERS)})")


def fill(text: str, values: dict[str, str]) -> str:
    """Replace every {placeholder} in text (no format-string evaluation: plain names only)."""
    return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), text)


def render(spec: ServiceSpec, values: dict[str, str]) -> tuple[list[str], Path | None,
                                                              dict[str, str]]:
    """The argv, working directory and environment of one process of a service."""
    argv = [fill(part, values) for part in spec.command]
    cwd = Path(fill(str(spec.cwd), values)) if spec.cwd is not None else None
    env = {k: fill(v, values) for k, v in spec.env.items()}
    return argv, cwd, env
