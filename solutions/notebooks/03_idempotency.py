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
    "safe": [
        {"mistake": "a durable set of processed ids is enough",
         "says": "skip at after_commit: LOST",
         "code": '''\
my_safe_modes = ["skip", "sqlite"]
'''},
        {"mistake": "the in-memory set survives a crash",
         "says": "memory at after_commit: RESERVED TWICE",
         "code": '''\
my_safe_modes = ["memory", "sqlite"]
'''},
    ],
    "handler": [
        {"mistake": "two transactions: the reservation first, then the processed id",
         "says": "separate transactions",
         "code": '''\
def handle(order, db):
    if db.execute("SELECT 1 FROM processed WHERE order_id = ?",
                  (order["order_id"],)).fetchone():
        return
    crashbench.reserve(db, order)
    db.commit()
    db.execute("INSERT INTO processed (order_id) VALUES (?)", (order["order_id"],))
    db.commit()
'''},
        {"mistake": "two transactions: the processed id first, then the reservation",
         "says": "separate transactions",
         "code": '''\
def handle(order, db):
    if db.execute("SELECT 1 FROM processed WHERE order_id = ?",
                  (order["order_id"],)).fetchone():
        return
    db.execute("INSERT INTO processed (order_id) VALUES (?)", (order["order_id"],))
    db.commit()
    crashbench.reserve(db, order)
    db.commit()
'''},
        {"mistake": "the record of what was done is a set in memory (the original lab)",
         "says": "no trace of the first attempt",
         "code": '''\
processed = set()


def handle(order, db):
    if order["order_id"] in processed:
        return
    crashbench.reserve(db, order)
    db.commit()
    processed.add(order["order_id"])
'''},
        {"mistake": "checks the processed table but never records the order in it",
         "says": "no trace of the first attempt",
         "code": '''\
def handle(order, db):
    with db:
        if db.execute("SELECT 1 FROM processed WHERE order_id = ?",
                      (order["order_id"],)).fetchone():
            return
        crashbench.reserve(db, order)
'''},
        {"mistake": "never commits",
         "says": "never commits",
         "code": '''\
def handle(order, db):
    if db.execute("SELECT 1 FROM processed WHERE order_id = ?",
                  (order["order_id"],)).fetchone():
        return
    db.execute("INSERT INTO processed (order_id) VALUES (?)", (order["order_id"],))
    crashbench.reserve(db, order)
'''},
    ],
}
