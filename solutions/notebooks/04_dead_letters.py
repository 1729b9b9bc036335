"""Worked and wrong answers for notebooks/04_dead_letters.ipynb (exercise name -> cell code)."""

ANSWERS = {
    "lifetime": '''\
my_lifetime = {
    "min_time_s": sum(topo.RETRY_DELAYS_MS) / 1000,  # it waits out every tier once
    "attempts": len(topo.RETRY_DELAYS_MS) + 1,  # the first try, then one per tier
}
''',
    "replay": '''\
def text(value):
    return value.decode() if isinstance(value, bytes) else str(value)


replayed = []
conn = pika.BlockingConnection(pika.URLParameters(lab.amqp_url))
ch = conn.channel()
ch.confirm_delivery()
waiting = ch.queue_declare(topo.DLQ, passive=True).method.message_count
for _ in range(waiting):  # each message once, even if it comes back to the DLQ
    method, props, body = ch.basic_get(topo.DLQ)
    if method is None:
        break
    headers = dict(props.headers or {})
    if text(headers.get("x-original-queue")) != topo.QUEUE_ORDER_PLACED or is_validation_error(headers):
        continue  # left unacked: closing the connection puts it back
    fresh = pika.BasicProperties(
        delivery_mode=2, content_type=props.content_type, message_id=props.message_id,
        correlation_id=props.correlation_id, type=props.type)
    ch.basic_publish(text(headers["x-original-exchange"]),
                     text(headers["x-original-routing-key"]), body, fresh,
                     mandatory=True)  # returns only after the broker confirmed it
    ch.basic_ack(method.delivery_tag)  # only now is it safe to forget it
    replayed.append(props.correlation_id)
conn.close()
replayed
''',
}

WRONG = {
    # Counts retry tiers but forgets the first try, and takes only the longest delay.
    "lifetime": '''\
my_lifetime = {
    "min_time_s": max(topo.RETRY_DELAYS_MS) / 1000,
    "attempts": len(topo.RETRY_DELAYS_MS),
}
''',
    # Replays, but never acks: the orders are served, and stay in the DLQ as well.
    "replay": '''\
replayed = []
conn = pika.BlockingConnection(pika.URLParameters(lab.amqp_url))
ch = conn.channel()
ch.confirm_delivery()
for _ in range(ch.queue_declare(topo.DLQ, passive=True).method.message_count):
    method, props, body = ch.basic_get(topo.DLQ)
    headers = dict(props.headers or {})
    if is_validation_error(headers):
        continue
    ch.basic_publish(str(headers["x-original-exchange"]),
                     str(headers["x-original-routing-key"]), body,
                     pika.BasicProperties(delivery_mode=2, correlation_id=props.correlation_id))
    replayed.append(props.correlation_id)
conn.close()
''',
}
