"""Worked and wrong answers for notebooks/08_limits_ttl_retries.ipynb (exercise -> cell code)."""

ANSWERS = {
    "overflow": '''\
conn = pika.BlockingConnection(pika.URLParameters(lab.amqp_url))
ch = conn.channel()
ch.confirm_delivery()
ch.queue_declare(FULL_QUEUE, durable=True,
                 arguments={"x-max-length": LIMIT, "x-overflow": "reject-publish"})
ch.queue_purge(FULL_QUEUE)  # start empty, however often the cell runs
my_overflow = {"accepted": 0, "refused": 0}
for i in range(SEND):
    try:
        ch.basic_publish("", FULL_QUEUE, f"order {i}".encode(),
                         pika.BasicProperties(delivery_mode=2))
        my_overflow["accepted"] += 1
    except pika.exceptions.NackError:  # the broker refused it: the queue is full
        my_overflow["refused"] += 1
conn.close()
my_overflow
''',
    "retry": '''\
def place_twice(key):
    url = lab.url("order") + "/order"
    headers = {"Idempotency-Key": key}
    first = requests.post(url, json=PIZZA, headers=headers, timeout=15)
    second = requests.post(url, json=PIZZA, headers=headers, timeout=15)  # the "lost" answer
    return first, second
''',
}

WRONG = {
    # Counts every publish as accepted: a queue declared without confirms never says no.
    "overflow": '''\
conn = pika.BlockingConnection(pika.URLParameters(lab.amqp_url))
ch = conn.channel()
ch.queue_declare(FULL_QUEUE, durable=True,
                 arguments={"x-max-length": LIMIT, "x-overflow": "reject-publish"})
ch.queue_purge(FULL_QUEUE)
for i in range(SEND):
    ch.basic_publish("", FULL_QUEUE, f"order {i}".encode(),
                     pika.BasicProperties(delivery_mode=2))
conn.close()
my_overflow = {"accepted": SEND, "refused": 0}
''',
    # Retries without the key: two orders.
    "retry": '''\
def place_twice(key):
    url = lab.url("order") + "/order"
    return (requests.post(url, json=PIZZA, timeout=15),
            requests.post(url, json=PIZZA, timeout=15))
''',
}
