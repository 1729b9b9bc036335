"""Broken: a message it cannot handle is requeued for ever instead of dead-lettered."""
from _base import framework, solution

framework.Consumer.dead_letter = lambda self, ch, method, props, body, reason: \
    ch.basic_nack(method.delivery_tag, requeue=True)
framework.run(solution.handle_order)
