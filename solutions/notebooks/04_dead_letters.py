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
conn = pika.BlockingConnection(pika.URLParameters(REPLAY_URL))
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
    "lifetime": [
        {"mistake": "only the longest tier", "says": "only the longest tier",
         "code": '''\
my_lifetime = {"min_time_s": max(topo.RETRY_DELAYS_MS) / 1000,
               "attempts": len(topo.RETRY_DELAYS_MS) + 1}
'''},
        {"mistake": "a round guess near the measured journey", "says": "not the sum of the delays",
         "code": '''\
my_lifetime = {"min_time_s": 3.0, "attempts": len(topo.RETRY_DELAYS_MS) + 1}
'''},
        {"mistake": "the measured journey, handling included, as the least time",
         "says": "not the sum of the delays",
         "code": '''\
my_lifetime = {"min_time_s": sum(topo.RETRY_DELAYS_MS) / 1000 + 0.5,
               "attempts": len(topo.RETRY_DELAYS_MS) + 1}
'''},
        {"mistake": "counts the retry tiers, forgets the first try", "says": "first try",
         "code": '''\
my_lifetime = {"min_time_s": sum(topo.RETRY_DELAYS_MS) / 1000,
               "attempts": len(topo.RETRY_DELAYS_MS)}
'''},
    ],
    "replay": [
        {"mistake": 'no confirm_delivery(): publishes and acks without waiting for the broker',
         "says": 'without confirm_delivery()',
         "code": '''\
def text(value):
    return value.decode() if isinstance(value, bytes) else str(value)


replayed = []
conn = pika.BlockingConnection(pika.URLParameters(REPLAY_URL))
ch = conn.channel()
waiting = ch.queue_declare(topo.DLQ, passive=True).method.message_count
for _ in range(waiting):
    method, props, body = ch.basic_get(topo.DLQ)
    if method is None:
        break
    headers = dict(props.headers or {})
    if text(headers.get("x-original-queue")) != topo.QUEUE_ORDER_PLACED or is_validation_error(headers):
        continue
    ch.basic_publish(text(headers["x-original-exchange"]), text(headers["x-original-routing-key"]),
                     body, pika.BasicProperties(delivery_mode=2, correlation_id=props.correlation_id,
                                                message_id=props.message_id))
    ch.basic_ack(method.delivery_tag)
    replayed.append(props.correlation_id)
conn.close()
'''},
        {"mistake": 'acks the DLQ message before republishing it',
         "says": 'before republishing it',
         "code": '''\
def text(value):
    return value.decode() if isinstance(value, bytes) else str(value)


replayed = []
conn = pika.BlockingConnection(pika.URLParameters(REPLAY_URL))
ch = conn.channel()
ch.confirm_delivery()
waiting = ch.queue_declare(topo.DLQ, passive=True).method.message_count
for _ in range(waiting):
    method, props, body = ch.basic_get(topo.DLQ)
    if method is None:
        break
    headers = dict(props.headers or {})
    if text(headers.get("x-original-queue")) != topo.QUEUE_ORDER_PLACED or is_validation_error(headers):
        continue
    ch.basic_ack(method.delivery_tag)
    ch.basic_publish(text(headers["x-original-exchange"]), text(headers["x-original-routing-key"]),
                     body, pika.BasicProperties(delivery_mode=2, correlation_id=props.correlation_id,
                                                message_id=props.message_id))
    replayed.append(props.correlation_id)
conn.close()
'''},
        {"mistake": 'republishes without delivery_mode=2 (transient)',
         "says": 'without delivery_mode=2',
         "code": '''\
def text(value):
    return value.decode() if isinstance(value, bytes) else str(value)


replayed = []
conn = pika.BlockingConnection(pika.URLParameters(REPLAY_URL))
ch = conn.channel()
ch.confirm_delivery()
waiting = ch.queue_declare(topo.DLQ, passive=True).method.message_count
for _ in range(waiting):
    method, props, body = ch.basic_get(topo.DLQ)
    if method is None:
        break
    headers = dict(props.headers or {})
    if text(headers.get("x-original-queue")) != topo.QUEUE_ORDER_PLACED or is_validation_error(headers):
        continue
    ch.basic_publish(text(headers["x-original-exchange"]), text(headers["x-original-routing-key"]),
                     body, pika.BasicProperties(correlation_id=props.correlation_id,
                                                message_id=props.message_id))
    ch.basic_ack(method.delivery_tag)
    replayed.append(props.correlation_id)
conn.close()
'''},
        {"mistake": 'never acks: the orders are served, and stay in the DLQ as well',
         "says": 'did you basic_ack them',
         "code": '''\
def text(value):
    return value.decode() if isinstance(value, bytes) else str(value)


replayed = []
conn = pika.BlockingConnection(pika.URLParameters(REPLAY_URL))
ch = conn.channel()
ch.confirm_delivery()
waiting = ch.queue_declare(topo.DLQ, passive=True).method.message_count
for _ in range(waiting):
    method, props, body = ch.basic_get(topo.DLQ)
    if method is None:
        break
    headers = dict(props.headers or {})
    if text(headers.get("x-original-queue")) != topo.QUEUE_ORDER_PLACED or is_validation_error(headers):
        continue
    ch.basic_publish(text(headers["x-original-exchange"]), text(headers["x-original-routing-key"]),
                     body, pika.BasicProperties(delivery_mode=2, correlation_id=props.correlation_id,
                                                message_id=props.message_id))
    replayed.append(props.correlation_id)
conn.close()
'''},
        {"mistake": 'acks the malformed message too, though it was not replayed',
         "says": 'that you did not republish',
         "code": '''\
def text(value):
    return value.decode() if isinstance(value, bytes) else str(value)


replayed = []
conn = pika.BlockingConnection(pika.URLParameters(REPLAY_URL))
ch = conn.channel()
ch.confirm_delivery()
waiting = ch.queue_declare(topo.DLQ, passive=True).method.message_count
for _ in range(waiting):
    method, props, body = ch.basic_get(topo.DLQ)
    if method is None:
        break
    headers = dict(props.headers or {})
    if text(headers.get("x-original-queue")) != topo.QUEUE_ORDER_PLACED or is_validation_error(headers):
        ch.basic_ack(method.delivery_tag)
        continue
    ch.basic_publish(text(headers["x-original-exchange"]), text(headers["x-original-routing-key"]),
                     body, pika.BasicProperties(delivery_mode=2, correlation_id=props.correlation_id,
                                                message_id=props.message_id))
    ch.basic_ack(method.delivery_tag)
    replayed.append(props.correlation_id)
conn.close()
'''},
        {"mistake": 'replays through lab.amqp_url, around the recorder',
         "says": 'nothing went through REPLAY_URL',
         "code": '''\
def text(value):
    return value.decode() if isinstance(value, bytes) else str(value)


replayed = []
conn = pika.BlockingConnection(pika.URLParameters(lab.amqp_url))
ch = conn.channel()
ch.confirm_delivery()
waiting = ch.queue_declare(topo.DLQ, passive=True).method.message_count
for _ in range(waiting):
    method, props, body = ch.basic_get(topo.DLQ)
    if method is None:
        break
    headers = dict(props.headers or {})
    if text(headers.get("x-original-queue")) != topo.QUEUE_ORDER_PLACED or is_validation_error(headers):
        continue
    ch.basic_publish(text(headers["x-original-exchange"]), text(headers["x-original-routing-key"]),
                     body, pika.BasicProperties(delivery_mode=2, correlation_id=props.correlation_id,
                                                message_id=props.message_id))
    ch.basic_ack(method.delivery_tag)
    replayed.append(props.correlation_id)
conn.close()
'''},
    ],
}
