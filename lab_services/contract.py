"""The contract's facts in one place: the services, their default HTTP ports, the queue
types. Read by the services (settings, OpenAPI), the harness (labs, chaos schedules,
the contract page, compose definitions) and the tests. Which service consumes which queue
is in `lab_services.topology` (`QUEUE_OWNERS`, `owner_of`), beside the queues themselves.
"""

from __future__ import annotations

# Every service of the lab, in the order they start (consumers before the order service).
SERVICES: tuple[str, ...] = ("order", "inventory", "notification")
# The HTTP port each service listens on when nothing else is asked for.
DEFAULT_PORTS: dict[str, int] = {"order": 5001, "inventory": 5002, "notification": 5003}
# The queue types the lab's topology can be declared with.
QUEUE_TYPES: tuple[str, ...] = ("classic", "quorum")
# The event types each service publishes (the envelopes are in lab_services.events).
PUBLISHES: dict[str, tuple[str, ...]] = {"order": ("OrderPlaced",),
                                         "inventory": ("InventoryReserved", "InventoryFailed"),
                                         "notification": ()}
