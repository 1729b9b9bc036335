"""Worked and wrong answers for notebooks/03_idempotency.ipynb (exercise name -> cell code)."""

ANSWERS = {
    "safe": '''\
my_safe_modes = ["sqlite"]
''',
    "handler": '''\
def handle(order, db):
    with db:  # one transaction: the processed id and the reservation commit together
        seen = db.execute("SELECT 1 FROM processed WHERE order_id = ?",
                          (order["order_id"],)).fetchone()
        if seen:
            return  # a redelivery: the first attempt committed, do nothing again
        db.execute("INSERT INTO processed (order_id) VALUES (?)", (order["order_id"],))
        crashbench.reserve(db, order)
''',
}

WRONG = {
    # A durable set of processed ids looks safe, but loses the outcome after commit.
    "safe": '''\
my_safe_modes = ["skip", "sqlite"]
''',
    # The original lab's design: the record of what was done dies with the process.
    "handler": '''\
processed = set()


def handle(order, db):
    if order["order_id"] in processed:
        return
    crashbench.reserve(db, order)
    db.commit()
    processed.add(order["order_id"])
''',
}
