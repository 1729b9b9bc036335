"""Worked and wrong answers for notebooks/00_setup_and_tour.ipynb (exercise name -> cell code)."""

ANSWERS = {
    "stock": '''\
def salads_left(stock_before, n, q):
    return stock_before - n * q
''',
    "pika": '''\
event = new_order_event()
conn = pika.BlockingConnection(pika.URLParameters(lab.amqp_url))
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
    # Forgets that every order takes q, not 1.
    "stock": '''\
def salads_left(stock_before, n, q):
    return stock_before - n
''',
    # Publishes transient (no delivery_mode=2): a broker restart would lose it.
    "pika": '''\
event = new_order_event()
conn = pika.BlockingConnection(pika.URLParameters(lab.amqp_url))
ch = conn.channel()
ch.confirm_delivery()
ch.queue_declare(MY_QUEUE, durable=True)
ch.queue_bind(MY_QUEUE, "order_events", routing_key="order.placed")
ch.basic_publish("order_events", "order.placed", json.dumps(event).encode(),
                 pika.BasicProperties(content_type="application/json",
                                      message_id=event["event_id"]))
got = ch.basic_get(MY_QUEUE)
ch.basic_ack(got[0].delivery_tag)
conn.close()
''',
    # Reads `*` as "anything".
    "binding": '''\
my_matches = {
    "inventory.*": {"inventory.reserved", "inventory.failed", "inventory.reserved.late"},
    "inventory.#": {"inventory.reserved", "inventory.failed", "inventory.reserved.late"},
}
''',
}
