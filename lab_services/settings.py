"""Every setting the services take from the environment, read here once, as typed values.

Other modules receive these dataclasses; none of them reads `os.environ`. A bad value is
refused at start-up with a message naming the variable, never half-used: an environment
is input too, and a service that starts with a nonsense prefetch fails later and worse.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

import pika

from lab_services.contract import DEFAULT_PORTS, QUEUE_TYPES  # noqa: F401  (re-exported)

DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"

# sqlite: one transaction holds reservation, processed record and outcome; a redelivery
#         re-publishes the stored outcome.
# skip:   a durable processed-id record, but a redelivery is acked and dropped (the outcome
#         is not stored): shows how a crash between commit and publish loses a notification.
# memory: the original lab's in-process set, forgotten on restart.
# off:    no duplicate check at all.
IDEMPOTENCY_MODES = ("sqlite", "skip", "memory", "off")
# outbox: order and event commit together; a relay publishes. direct: publish, then store.
ORDER_PUBLISH_MODES = ("outbox", "direct")
# FULL: a committed reservation survives a power cut (the broker fsyncs before it confirms,
# so the store should not be weaker). NORMAL: survives a process crash only.
SQLITE_SYNCHRONOUS = ("FULL", "NORMAL")


class SettingsError(ValueError):
    """An environment variable holds a value the services cannot use."""


class _Env:
    """Typed, validated reads from one environment mapping."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env

    def text(self, name: str, default: str, *, max_len: int = 4096) -> str:
        value = self.env.get(name, default)
        if len(value) > max_len:
            raise SettingsError(f"{name}: longer than {max_len} characters")
        return value

    def choice(self, name: str, default: str, choices: tuple[str, ...], *,
               upper: bool = False) -> str:
        raw = self.env.get(name, default).strip()
        value = raw.upper() if upper else raw.lower()
        if value not in choices:
            raise SettingsError(f"{name}: must be one of {', '.join(choices)}, not {raw[:40]!r}")
        return value

    def integer(self, name: str, default: int, lo: int, hi: int) -> int:
        raw = self.env.get(name)
        if raw is None or raw.strip() == "":
            return default
        try:
            value = int(raw.strip())
        except ValueError:
            raise SettingsError(f"{name}: must be an integer, not {raw[:40]!r}") from None
        if not lo <= value <= hi:
            raise SettingsError(f"{name}: must be between {lo} and {hi}, not {value}")
        return value

    def number(self, name: str, default: float, lo: float, hi: float) -> float:
        raw = self.env.get(name)
        if raw is None or raw.strip() == "":
            return default
        try:
            value = float(raw.strip())
        except ValueError:
            raise SettingsError(f"{name}: must be a number, not {raw[:40]!r}") from None
        if not lo <= value <= hi:  # also refuses nan
            raise SettingsError(f"{name}: must be between {lo} and {hi}, not {raw[:40]!r}")
        return value


@dataclass(frozen=True)
class BusSettings:
    """How a service talks to RabbitMQ."""

    # One URL, or several (a cluster): the bus tries them in turn on every reconnect.
    amqp_urls: tuple[str, ...] = (DEFAULT_AMQP_URL,)
    prefetch: int = 200
    queue_type: str = "classic"
    heartbeat: int = 30
    reconnect_max_delay: float = 5.0
    # A message delivered this many times without being settled is dead-lettered.
    delivery_limit: int = 5
    confirm_timeout: float = 5.0

    @property
    def amqp_url(self) -> str:
        """The first broker address."""
        return self.amqp_urls[0]


@dataclass(frozen=True)
class ServiceSettings:
    """One service's HTTP side and store."""

    name: str
    port: int
    store_path: str
    host: str = "127.0.0.1"
    http_threads: int = 8
    # Open HTTP connections the service holds at once; idle ones cost a socket, not a
    # thread (waitress reads requests on its event loop). waitress's default, 100, let 100
    # idle clients lock everyone else out for two minutes.
    http_connection_limit: int = 1000
    # Seconds an idle connection (no bytes either way, no request running) stays open.
    http_idle_timeout: int = 30
    max_body_bytes: int = 64 * 1024
    sqlite_synchronous: str = "FULL"
    # STORE_URL=postgresql://...: the inventory's stock in PostgreSQL (several hosts).
    store_url: str = ""


@dataclass(frozen=True)
class InventorySettings:
    """The inventory's knobs: idempotency design, simulated work, the poison user."""

    idempotency: str = "sqlite"
    # Simulated work per order (the kitchen's time), to make a service rate visible.
    work_ms: float = 0.0
    # Orders from this user make the handler fail every time: the lab's poison message.
    fail_user: str = ""
    # INITIAL_STOCK: '500' for every item, or 'item_1=5,item_2=0'; None keeps the catalogue.
    initial_stock: dict[str, int] | int | None = None
    # LAB_CRASH_AT: 'after_commit:ORD-1,ORD-2' exits at that point (white-box scenarios).
    crash_at: str = ""


@dataclass(frozen=True)
class OrderSettings:
    """The order service's publishing design."""

    publish: str = "outbox"
    # How long POST /order waits for the confirm before answering 202 (outbox) or 503.
    confirm_timeout: float = 5.0
    relay_interval: float = 0.5


@dataclass(frozen=True)
class Settings:
    """Everything one service process needs."""

    service: ServiceSettings
    bus: BusSettings
    inventory: InventorySettings
    order: OrderSettings
    log_level: str = "INFO"


MAX_STOCK = 10 ** 9


def _initial_stock(env: _Env) -> dict[str, int] | int | None:
    spec = env.text("INITIAL_STOCK", "", max_len=4096).strip()
    if not spec:
        return None

    def count(text: str) -> int:
        text = text.strip()
        if not text.isdigit() or int(text) > MAX_STOCK:
            raise SettingsError(f"INITIAL_STOCK: stock must be an integer from 0 to "
                                f"{MAX_STOCK}, not {text[:20]!r}")
        return int(text)

    if "=" not in spec:
        return count(spec)
    stock: dict[str, int] = {}
    for part in spec.split(","):
        item_id, sep, value = part.partition("=")
        item_id = item_id.strip()
        if not sep or not item_id or len(item_id) > 64:
            raise SettingsError(f"INITIAL_STOCK: expected item=count, not {part[:40]!r}")
        stock[item_id] = count(value)
    return stock


def _store_url(env: _Env) -> str:
    url = env.text("STORE_URL", "", max_len=2048).strip()
    if url and not url.startswith(("postgresql://", "postgres://")):
        raise SettingsError("STORE_URL: must be a postgresql:// URL (or unset for SQLite)")
    return url


def _crash_at(env: _Env) -> str:
    from lab_services.crashpoints import POINTS

    spec = env.text("LAB_CRASH_AT", "", max_len=4096).strip()
    if spec and spec.partition(":")[0] not in POINTS:
        raise SettingsError(f"LAB_CRASH_AT: point must be one of {', '.join(POINTS)}")
    return spec


def _amqp_urls(env: _Env) -> tuple[str, ...]:
    listed = env.text("AMQP_URLS", "", max_len=8192)
    urls = [u.strip() for u in listed.split(",") if u.strip()]
    if not urls:
        urls = [env.text("AMQP_URL", DEFAULT_AMQP_URL).strip()]
    for url in urls:
        if not url.startswith(("amqp://", "amqps://")):
            raise SettingsError(f"AMQP_URL(S): must start with amqp:// or amqps://, "
                                f"not {url[:40]!r}")
        try:  # pika's own parser: a bad port or query option fails here, not on each retry
            params = pika.URLParameters(url)
        except Exception as exc:
            raise SettingsError(f"AMQP_URL(S): {url[:40]!r} is not usable: "
                                f"{str(exc)[:120]}") from None
        if not 0 < params.port < 65536:
            raise SettingsError(f"AMQP_URL(S): port must be 1-65535 in {url[:40]!r}")
    return tuple(urls)


def load(service: str, environ: Mapping[str, str] | None = None) -> Settings:
    """Read and validate one service's settings from the environment."""
    env = _Env(os.environ if environ is None else environ)
    data_dir = env.text("DATA_DIR", "lab-data")
    confirm_timeout = env.number("CONFIRM_TIMEOUT", 5.0, 0.05, 120)
    return Settings(
        service=ServiceSettings(
            name=service,
            port=env.integer("PORT", DEFAULT_PORTS.get(service, 5000), 0, 65535),
            store_path=env.text("STORE_PATH", f"{data_dir}/{service}.sqlite"),
            host=env.text("HOST", "127.0.0.1", max_len=255),
            http_threads=env.integer("HTTP_THREADS", 8, 1, 256),
            http_connection_limit=env.integer("HTTP_CONNECTION_LIMIT", 1000, 10, 50_000),
            http_idle_timeout=env.integer("HTTP_IDLE_TIMEOUT", 30, 1, 3600),
            max_body_bytes=env.integer("MAX_BODY_BYTES", 64 * 1024, 1024, 16 * 1024 * 1024),
            sqlite_synchronous=env.choice("SQLITE_SYNCHRONOUS", "FULL", SQLITE_SYNCHRONOUS,
                                          upper=True),
            store_url=_store_url(env),
        ),
        bus=BusSettings(
            amqp_urls=_amqp_urls(env),
            prefetch=env.integer("PREFETCH", 200, 1, 65535),
            queue_type=env.choice("LAB_QUEUE_TYPE", "classic", QUEUE_TYPES),
            heartbeat=env.integer("AMQP_HEARTBEAT", 30, 0, 3600),
            reconnect_max_delay=env.number("RECONNECT_MAX_DELAY", 5.0, 0.05, 300),
            delivery_limit=env.integer("DELIVERY_LIMIT", 5, 1, 1000),
            confirm_timeout=confirm_timeout,
        ),
        inventory=InventorySettings(
            idempotency=env.choice("IDEMPOTENCY", "sqlite", IDEMPOTENCY_MODES),
            work_ms=env.number("WORK_MS", 0.0, 0.0, 60_000),
            fail_user=env.text("LAB_FAIL_USER", "", max_len=256),
            initial_stock=_initial_stock(env),
            crash_at=_crash_at(env),
        ),
        order=OrderSettings(
            publish=env.choice("ORDER_PUBLISH", "outbox", ORDER_PUBLISH_MODES),
            confirm_timeout=confirm_timeout,
            relay_interval=env.number("OUTBOX_RELAY_INTERVAL", 0.5, 0.01, 60),
        ),
        log_level=env.choice("LOG_LEVEL", "INFO",
                             ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"), upper=True),
    )
