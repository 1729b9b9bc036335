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
    # Marks every row sent first, then publishes and shrugs at nacks: refused events are lost.
    "relay": '''\
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
''',
}
