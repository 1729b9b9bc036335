"""Worked and wrong answers for notebooks/09_dual_write.ipynb (exercise -> cell code)."""

ANSWERS = {
    "relay": '''\
def relay_once(db, ch):
    rows = db.execute("SELECT seq, event_id, body FROM outbox WHERE sent = 0 ORDER BY seq")
    for seq, event_id, body in rows.fetchall():
        try:
            ch.basic_publish("", RELAY_QUEUE, body.encode(),
                             pika.BasicProperties(delivery_mode=2, message_id=event_id))
        except pika.exceptions.NackError:
            continue  # refused: the row stays unsent, the next pass tries again
        db.execute("UPDATE outbox SET sent = 1 WHERE seq = ?", (seq,))  # only once confirmed
        db.commit()
''',
}

WRONG = {
    "relay": [
        {"mistake": 'marks rows sent but never commits', "says": 'not committed',
         "code": '''\
def relay_once(db, ch):
    rows = db.execute("SELECT seq, event_id, body FROM outbox WHERE sent = 0 ORDER BY seq")
    for seq, event_id, body in rows.fetchall():
        try:
            ch.basic_publish("", RELAY_QUEUE, body.encode(),
                             pika.BasicProperties(delivery_mode=2, message_id=event_id))
        except pika.exceptions.NackError:
            continue
        db.execute("UPDATE outbox SET sent = 1 WHERE seq = ?", (seq,))
'''},
        {"mistake": 'marks every row sent first, then publishes and shrugs at nacks', "says": 'lost for good',
         "code": '''\
def relay_once(db, ch):
    rows = db.execute("SELECT seq, event_id, body FROM outbox WHERE sent = 0 ORDER BY seq")
    rows = rows.fetchall()
    db.execute("UPDATE outbox SET sent = 1 WHERE sent = 0")
    db.commit()
    for seq, event_id, body in rows:
        try:
            ch.basic_publish("", RELAY_QUEUE, body.encode(),
                             pika.BasicProperties(delivery_mode=2, message_id=event_id))
        except pika.exceptions.NackError:
            pass
'''},
        {"mistake": 'marks a refused row sent as well (the except falls through)', "says": 'lost for good',
         "code": '''\
def relay_once(db, ch):
    rows = db.execute("SELECT seq, event_id, body FROM outbox WHERE sent = 0 ORDER BY seq")
    for seq, event_id, body in rows.fetchall():
        try:
            ch.basic_publish("", RELAY_QUEUE, body.encode(),
                             pika.BasicProperties(delivery_mode=2, message_id=event_id))
        except pika.exceptions.NackError:
            pass
        db.execute("UPDATE outbox SET sent = 1 WHERE seq = ?", (seq,))
        db.commit()
'''},
        {"mistake": 'lets the NackError out', "says": 'let a NackError out',
         "code": '''\
def relay_once(db, ch):
    rows = db.execute("SELECT seq, event_id, body FROM outbox WHERE sent = 0 ORDER BY seq")
    for seq, event_id, body in rows.fetchall():
        try:
            ch.basic_publish("", RELAY_QUEUE, body.encode(),
                             pika.BasicProperties(delivery_mode=2, message_id=event_id))
        except pika.exceptions.NackError:
            raise
        db.execute("UPDATE outbox SET sent = 1 WHERE seq = ?", (seq,))
        db.commit()
'''},
        {"mistake": 'no message_id: the consumer cannot recognise a copy', "says": 'set it to the event id',
         "code": '''\
def relay_once(db, ch):
    rows = db.execute("SELECT seq, event_id, body FROM outbox WHERE sent = 0 ORDER BY seq")
    for seq, event_id, body in rows.fetchall():
        try:
            ch.basic_publish("", RELAY_QUEUE, body.encode(),
                             pika.BasicProperties(delivery_mode=2))
        except pika.exceptions.NackError:
            continue
        db.execute("UPDATE outbox SET sent = 1 WHERE seq = ?", (seq,))
        db.commit()
'''},
        {"mistake": 'publishes transient messages', "says": 'delivery_mode=2',
         "code": '''\
def relay_once(db, ch):
    rows = db.execute("SELECT seq, event_id, body FROM outbox WHERE sent = 0 ORDER BY seq")
    for seq, event_id, body in rows.fetchall():
        try:
            ch.basic_publish("", RELAY_QUEUE, body.encode(),
                             pika.BasicProperties(message_id=event_id))
        except pika.exceptions.NackError:
            continue
        db.execute("UPDATE outbox SET sent = 1 WHERE seq = ?", (seq,))
        db.commit()
'''},
        {"mistake": 'publishes every row on every pass, sent or not', "says": 'published again',
         "code": '''\
def relay_once(db, ch):
    rows = db.execute("SELECT seq, event_id, body FROM outbox ORDER BY seq")
    for seq, event_id, body in rows.fetchall():
        try:
            ch.basic_publish("", RELAY_QUEUE, body.encode(),
                             pika.BasicProperties(delivery_mode=2, message_id=event_id))
        except pika.exceptions.NackError:
            continue
        db.execute("UPDATE outbox SET sent = 1 WHERE seq = ?", (seq,))
        db.commit()
'''},
    ],
}
