"""Per-service settings read from the environment, with the documented defaults."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

# sqlite: one transaction holds reservation, processed record and outcome; a redelivery
#         re-publishes the stored outcome.
# skip:   a durable processed-id record, but a redelivery is acked and dropped (the outcome
#         is not stored): shows how a crash between commit and publish loses a notification.
# memory: the original lab's in-process set, forgotten on restart.
# off:    no duplicate check at all.
IDEMPOTENCY_MODES = ("sqlite", "skip", "memory", "off")


def _env(name: str, default: str) -> str:
    return os.environ.get(name, default)


@dataclass
class ServiceConfig:
    """HTTP port and store location of one service (PORT, STORE_PATH, DATA_DIR)."""

    name: str
    default_port: int
    port: int = 0
    store_path: str = ""

    def __post_init__(self) -> None:
        self.port = self.port or int(_env("PORT", str(self.default_port)))
        data_dir = _env("DATA_DIR", "lab-data")
        self.store_path = self.store_path or _env("STORE_PATH", f"{data_dir}/{self.name}.sqlite")


@dataclass
class InventoryConfig(ServiceConfig):
    """Inventory settings: also IDEMPOTENCY, WORK_MS and LAB_FAIL_USER."""

    name: str = "inventory"
    default_port: int = 5002
    idempotency: str = field(default_factory=lambda: _env("IDEMPOTENCY", "sqlite").lower())
    # Simulated work per order (the kitchen's time), to make a service rate visible.
    work_ms: float = field(default_factory=lambda: float(_env("WORK_MS", "0")))
    # Orders from this user make the handler fail every time: the lab's poison message.
    fail_user: str = field(default_factory=lambda: _env("LAB_FAIL_USER", ""))

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.idempotency not in IDEMPOTENCY_MODES:
            raise ValueError(f"IDEMPOTENCY must be one of {IDEMPOTENCY_MODES}, "
                             f"not {self.idempotency!r}")
