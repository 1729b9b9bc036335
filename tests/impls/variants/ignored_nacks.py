"""Broken: a nacked or returned outcome is caught and ignored, and the order acked anyway."""
import pika.exceptions
from _base import BlockingChannel, framework, solution

publish = BlockingChannel.basic_publish


def ignoring(self, *args, **kwargs):
    try:
        return publish(self, *args, **kwargs)
    except (pika.exceptions.NackError, pika.exceptions.UnroutableError):
        pass  # "it was probably fine"


BlockingChannel.basic_publish = ignoring
framework.run(solution.handle_order)
