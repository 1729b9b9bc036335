"""The notification service's SQLite store: one notification per order."""

from __future__ import annotations

import json
from typing import Any

from lab_services.store.sqlite import SqliteStore


class NotificationStore(SqliteStore):
    """One notification per order, oldest first; repeats are counted, not stored twice."""

    schema = """
    CREATE TABLE IF NOT EXISTS notifications (
        seq INTEGER PRIMARY KEY AUTOINCREMENT, order_id TEXT NOT NULL UNIQUE,
        body TEXT NOT NULL, duplicates_ignored INTEGER NOT NULL DEFAULT 0);
    """

    def add(self, notification: dict[str, Any]) -> bool:
        """Record a notification; return False (and count it) if the order had one already."""
        with self.transaction() as db:
            seen = db.execute("SELECT 1 FROM notifications WHERE order_id = ?",
                              (notification["order_id"],)).fetchone()
            if seen:
                db.execute("UPDATE notifications SET duplicates_ignored = duplicates_ignored + 1"
                           " WHERE order_id = ?", (notification["order_id"],))
                return False
            db.execute("INSERT INTO notifications(order_id, body) VALUES (?, ?)",
                       (notification["order_id"], json.dumps(notification)))
            return True

    def all(self) -> list[dict[str, Any]]:
        """Every notification, oldest first."""
        rows = self.db().execute("SELECT body FROM notifications ORDER BY seq").fetchall()
        return [json.loads(r["body"]) for r in rows]

    def count(self) -> int:
        """How many orders were notified."""
        return self.db().execute("SELECT COUNT(*) FROM notifications").fetchone()[0]

    def duplicates_ignored(self) -> int:
        """How many repeated events were recognised and not notified again."""
        return self.db().execute(
            "SELECT COALESCE(SUM(duplicates_ignored), 0) FROM notifications").fetchone()[0]
