"""Broken: never publishes InventoryFailed: an order short of stock is never notified."""
from _base import BlockingChannel, framework, solution

publish = BlockingChannel.basic_publish
BlockingChannel.basic_publish = lambda self, exchange, key, *a, **kw: (
    None if key == "inventory.failed" else publish(self, exchange, key, *a, **kw))
framework.run(solution.handle_order)
