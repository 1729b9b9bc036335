"""The services' stores: the inventory's (SQLite or PostgreSQL), the order and notification ones.

`sqlite.py` holds the SQLite connection handling and the inventory's SQLite store,
`postgres.py` the inventory's PostgreSQL store, `orders.py` and `notifications.py` the other
two services' stores.
"""

from lab_services.store.notifications import NotificationStore
from lab_services.store.orders import IdempotencyConflict, OrderStore
from lab_services.store.sqlite import (
    DEFAULT_CATALOGUE,
    DeliveryCounts,
    InventoryStore,
    Outcome,
    SqliteStore,
    catalogue,
)

__all__ = ["DEFAULT_CATALOGUE", "DeliveryCounts", "IdempotencyConflict", "InventoryStore",
           "NotificationStore", "OrderStore", "Outcome", "SqliteStore", "catalogue"]
