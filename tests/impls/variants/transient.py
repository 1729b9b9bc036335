"""Broken: publishes its outcomes as transient messages (delivery_mode 1): a broker restart
drops those still queued."""
from _base import BlockingChannel, framework, solution

publish = BlockingChannel.basic_publish


def transient(self, exchange, routing_key, body, properties=None, mandatory=False):
    if exchange == "inventory_events" and properties is not None:
        properties.delivery_mode = 1
    return publish(self, exchange, routing_key, body, properties, mandatory)


BlockingChannel.basic_publish = transient
framework.run(solution.handle_order)
