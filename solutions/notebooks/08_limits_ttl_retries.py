"""Worked and wrong answers for notebooks/08_limits_ttl_retries.ipynb (exercise -> cell code)."""

ANSWERS = {
    "overflow": '''\
conn = pika.BlockingConnection(pika.URLParameters(MY_URL))
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
    "overflow": [
        {"mistake": 'no confirms: counts computed from the depth, nothing was nacked', "says": 'without confirm_delivery()',
         "code": '''\
conn = pika.BlockingConnection(pika.URLParameters(MY_URL))
ch = conn.channel()
ch.queue_declare(FULL_QUEUE, durable=True,
                 arguments={"x-max-length": LIMIT, "x-overflow": "reject-publish"})
ch.queue_purge(FULL_QUEUE)
for i in range(SEND):
    ch.basic_publish("", FULL_QUEUE, f"order {i}".encode(),
                     pika.BasicProperties(delivery_mode=2))
depth = ch.queue_declare(FULL_QUEUE, passive=True).method.message_count
my_overflow = {"accepted": depth, "refused": SEND - depth}
conn.close()
'''},
        {"mistake": 'no confirms: every publish counted as accepted', "says": 'without confirm_delivery()',
         "code": '''\
conn = pika.BlockingConnection(pika.URLParameters(MY_URL))
ch = conn.channel()
ch.queue_declare(FULL_QUEUE, durable=True,
                 arguments={"x-max-length": LIMIT, "x-overflow": "reject-publish"})
ch.queue_purge(FULL_QUEUE)
my_overflow = {"accepted": 0, "refused": 0}
for i in range(SEND):
    try:
        ch.basic_publish("", FULL_QUEUE, f"order {i}".encode(),
                         pika.BasicProperties(delivery_mode=2))
        my_overflow["accepted"] += 1
    except pika.exceptions.NackError:
        my_overflow["refused"] += 1
conn.close()
'''},
        {"mistake": 'the default overflow (drop-head): the oldest are dropped silently', "says": 'x-overflow reject-publish',
         "code": '''\
conn = pika.BlockingConnection(pika.URLParameters(MY_URL))
ch = conn.channel()
ch.confirm_delivery()
ch.queue_declare(FULL_QUEUE, durable=True,
                 arguments={"x-max-length": LIMIT})
ch.queue_purge(FULL_QUEUE)
my_overflow = {"accepted": 0, "refused": 0}
for i in range(SEND):
    try:
        ch.basic_publish("", FULL_QUEUE, f"order {i}".encode(),
                         pika.BasicProperties(delivery_mode=2))
        my_overflow["accepted"] += 1
    except pika.exceptions.NackError:
        my_overflow["refused"] += 1
conn.close()
'''},
        {"mistake": 'publishes around the recorder (lab.amqp_url)', "says": 'nothing went through MY_URL',
         "code": '''\
conn = pika.BlockingConnection(pika.URLParameters(lab.amqp_url))
ch = conn.channel()
ch.confirm_delivery()
ch.queue_declare(FULL_QUEUE, durable=True,
                 arguments={"x-max-length": LIMIT, "x-overflow": "reject-publish"})
ch.queue_purge(FULL_QUEUE)
my_overflow = {"accepted": 0, "refused": 0}
for i in range(SEND):
    try:
        ch.basic_publish("", FULL_QUEUE, f"order {i}".encode(),
                         pika.BasicProperties(delivery_mode=2))
        my_overflow["accepted"] += 1
    except pika.exceptions.NackError:
        my_overflow["refused"] += 1
conn.close()
'''},
    ],
    "retry": [
        {"mistake": "a new Idempotency-Key for each attempt", "says": "two orders",
         "code": '''\
def place_twice(key):
    url = lab.url("order") + "/order"
    first = requests.post(url, json=PIZZA, headers={"Idempotency-Key": key}, timeout=15)
    second = requests.post(url, json=PIZZA, headers={"Idempotency-Key": key + "-retry"},
                           timeout=15)
    return first, second
'''},
        {"mistake": "retries without the Idempotency-Key: two orders", "says": "two orders",
         "code": '''\
def place_twice(key):
    url = lab.url("order") + "/order"
    return (requests.post(url, json=PIZZA, timeout=15),
            requests.post(url, json=PIZZA, timeout=15))
'''},
    ],
}
