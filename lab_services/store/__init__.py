"""The services' stores: the inventory's (one protocol, SQLite or PostgreSQL) and the others'.

`protocol.py` says what the inventory needs of a store; `sqlite.py` (SQLite connections and
the inventory's SQLite store) and `postgres.py` implement it. `orders.py` and
`notifications.py` are the other two services' SQLite stores; `catalogue.py` the items sold.
"""

from __future__ import annotations

from lab_services.store.catalogue import DEFAULT_CATALOGUE, catalogue
from lab_services.store.notifications import NotificationStore
from lab_services.store.orders import IdempotencyConflict, OrderStore
from lab_services.store.protocol import InventoryStore, Outcome
from lab_services.store.sqlite import DeliveryCounts, SqliteInventoryStore, SqliteStore


def open_inventory_store(path: str, *, url: str = "", synchronous: str = "FULL"
                         ) -> InventoryStore:
    """The inventory's store: PostgreSQL at `url` if one is given, else SQLite at `path`."""
    if url:
        from lab_services.store.postgres import PostgresInventoryStore  # psycopg only if used
        return PostgresInventoryStore(url)
    return SqliteInventoryStore(path, synchronous=synchronous)


__all__ = ["DEFAULT_CATALOGUE", "DeliveryCounts", "IdempotencyConflict", "InventoryStore",
           "NotificationStore", "OrderStore", "Outcome", "SqliteInventoryStore", "SqliteStore",
           "catalogue", "open_inventory_store"]
