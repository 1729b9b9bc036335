"""Broken: no duplicate check, relying on the primary key: a repeat raises IntegrityError
and is dead-lettered, so a valid order ends in the DLQ."""
from _base import framework, solution


class NoLookup:
    """The reference handler's connection, minus its processed-order lookup."""

    def __init__(self, db):
        self.db = db

    def execute(self, sql, *args):
        if sql.startswith("SELECT outcome FROM processed"):
            return self.db.execute("SELECT NULL WHERE 0")  # never seen before
        return self.db.execute(sql, *args)


framework.run(lambda db, body: solution.handle_order(NoLookup(db), body))
