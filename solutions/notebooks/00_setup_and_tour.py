"""Worked and wrong answers for notebooks/00_setup_and_tour.ipynb (exercise name -> cell code)."""

ANSWERS = {
    "stock": '''\
def salads_left(stock_before, n, q):
    return stock_before - n * q
''',
    "pika": '''\
event = new_order_event()
conn = pika.BlockingConnection(pika.URLParameters(MY_URL))
ch = conn.channel()
ch.confirm_delivery()  # basic_publish now waits for the broker's ack (raises if nacked)
ch.queue_declare(MY_QUEUE, durable=True)
ch.queue_bind(MY_QUEUE, "order_events", routing_key="order.placed")
ch.basic_publish(
    "order_events", "order.placed", json.dumps(event).encode(),
    pika.BasicProperties(delivery_mode=2, content_type="application/json",
                         message_id=event["event_id"], correlation_id=event["order_id"],
                         type=event["event_type"]),
    mandatory=True)
got = ch.basic_get(MY_QUEUE)
method, properties, body = got
print(method.routing_key, "redelivered:", method.redelivered)
print(properties)
ch.basic_ack(method.delivery_tag)
conn.close()
''',
    "binding": '''\
my_matches = {
    "inventory.*": {"inventory.reserved", "inventory.failed"},
    "inventory.#": {"inventory", "inventory.reserved", "inventory.failed",
                    "inventory.reserved.late"},
}
''',
}

WRONG = {
    "stock": [
        {"mistake": "every order takes 1, not q", "says": "the inventory holds",
         "code": '''\
def salads_left(stock_before, n, q):
    return stock_before - n
'''},
        {"mistake": "one order's worth only", "says": "the inventory holds",
         "code": '''\
def salads_left(stock_before, n, q):
    return stock_before - q
'''},
    ],
    "pika": [
        {"mistake": 'no confirm_delivery(): publishes without knowing the broker has it',
         "says": 'without confirm_delivery()',
         "code": '''\
event = new_order_event()
conn = pika.BlockingConnection(pika.URLParameters(MY_URL))
ch = conn.channel()
ch.queue_declare(MY_QUEUE, durable=True)
ch.queue_bind(MY_QUEUE, "order_events", routing_key="order.placed")
ch.basic_publish("order_events", "order.placed", json.dumps(event).encode(),
                 pika.BasicProperties(delivery_mode=2, content_type="application/json",
                                      message_id=event["event_id"]))
got = ch.basic_get(MY_QUEUE)
if got[0] is not None:
    ch.basic_ack(got[0].delivery_tag)
conn.close()
'''},
        {"mistake": 'a queue that is not durable (the message is persistent, the queue is not)',
         "says": 'without durable=True',
         "code": '''\
event = new_order_event()
conn = pika.BlockingConnection(pika.URLParameters(MY_URL))
ch = conn.channel()
ch.confirm_delivery()
ch.queue_declare(MY_QUEUE)
ch.queue_bind(MY_QUEUE, "order_events", routing_key="order.placed")
ch.basic_publish("order_events", "order.placed", json.dumps(event).encode(),
                 pika.BasicProperties(delivery_mode=2, content_type="application/json",
                                      message_id=event["event_id"]))
got = ch.basic_get(MY_QUEUE)
if got[0] is not None:
    ch.basic_ack(got[0].delivery_tag)
conn.close()
'''},
        {"mistake": 'publishes transient (no delivery_mode=2)',
         "says": 'delivery_mode is None',
         "code": '''\
event = new_order_event()
conn = pika.BlockingConnection(pika.URLParameters(MY_URL))
ch = conn.channel()
ch.confirm_delivery()
ch.queue_declare(MY_QUEUE, durable=True)
ch.queue_bind(MY_QUEUE, "order_events", routing_key="order.placed")
ch.basic_publish("order_events", "order.placed", json.dumps(event).encode(),
                 pika.BasicProperties(content_type="application/json",
                                      message_id=event["event_id"]))
got = ch.basic_get(MY_QUEUE)
if got[0] is not None:
    ch.basic_ack(got[0].delivery_tag)
conn.close()
'''},
        {"mistake": 'binds with a key that matches nothing: basic_get returns (None, None, None)',
         "says": 'basic_get found nothing',
         "code": '''\
event = new_order_event()
conn = pika.BlockingConnection(pika.URLParameters(MY_URL))
ch = conn.channel()
ch.confirm_delivery()
ch.queue_declare(MY_QUEUE, durable=True)
ch.queue_bind(MY_QUEUE, "order_events", routing_key="orders.placed")
ch.basic_publish("order_events", "order.placed", json.dumps(event).encode(),
                 pika.BasicProperties(delivery_mode=2, content_type="application/json",
                                      message_id=event["event_id"]))
got = ch.basic_get(MY_QUEUE)
if got[0] is not None:
    ch.basic_ack(got[0].delivery_tag)
conn.close()
'''},
        {"mistake": 'reads `*` as any number of words: binds with order.*.placed',
         "says": 'basic_get found nothing',
         "code": '''\
event = new_order_event()
conn = pika.BlockingConnection(pika.URLParameters(MY_URL))
ch = conn.channel()
ch.confirm_delivery()
ch.queue_declare(MY_QUEUE, durable=True)
ch.queue_bind(MY_QUEUE, "order_events", routing_key="order.*.placed")
ch.basic_publish("order_events", "order.placed", json.dumps(event).encode(),
                 pika.BasicProperties(delivery_mode=2, content_type="application/json",
                                      message_id=event["event_id"]))
got = ch.basic_get(MY_QUEUE)
if got[0] is not None:
    ch.basic_ack(got[0].delivery_tag)
conn.close()
'''},
        {"mistake": 'takes the message but never acks it',
         "says": 'did you basic_ack',
         "code": '''\
event = new_order_event()
conn = pika.BlockingConnection(pika.URLParameters(MY_URL))
ch = conn.channel()
ch.confirm_delivery()
ch.queue_declare(MY_QUEUE, durable=True)
ch.queue_bind(MY_QUEUE, "order_events", routing_key="order.placed")
ch.basic_publish("order_events", "order.placed", json.dumps(event).encode(),
                 pika.BasicProperties(delivery_mode=2, content_type="application/json",
                                      message_id=event["event_id"]))
got = ch.basic_get(MY_QUEUE)
conn.close()
'''},
    ],
    "binding": [
        {"mistake": "reads `*` as any number of words", "says": "`*` is exactly one word",
         "code": '''\
my_matches = {
    "inventory.*": {"inventory.reserved", "inventory.failed", "inventory.reserved.late"},
    "inventory.#": {"inventory", "inventory.reserved", "inventory.failed",
                    "inventory.reserved.late"},
}
'''},
        {"mistake": "reads `#` as one or more words (not zero)", "says": "`#` is zero or more",
         "code": '''\
my_matches = {
    "inventory.*": {"inventory.reserved", "inventory.failed"},
    "inventory.#": {"inventory.reserved", "inventory.failed", "inventory.reserved.late"},
}
'''},
        {"mistake": "reads a pattern as a prefix of characters", "says": "`*` is exactly one word",
         "code": '''\
my_matches = {
    "inventory.*": {"inventory.reserved", "inventory.failed", "inventory.reserved.late",
                    "inventory_reserved"},
    "inventory.#": {"inventory", "inventory.reserved", "inventory.failed",
                    "inventory.reserved.late"},
}
'''},
    ],
}
