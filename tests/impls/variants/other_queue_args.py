"""Broken: declares order_placed without the contract's arguments before anyone else, so
the broker closes the channel of whoever declares it properly (PRECONDITION_FAILED)."""
import os

import pika
from _base import framework, solution

conn = pika.BlockingConnection(pika.URLParameters(os.environ["AMQP_URL"]))
conn.channel().queue_declare("order_placed", durable=True)  # no x-dead-letter-exchange
conn.close()
framework.run(solution.handle_order)
