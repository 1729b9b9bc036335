"""Broken: consumes with auto-ack, so every message is acked on delivery, before its work:
a kill -9 loses whatever it had received."""
from _base import BlockingChannel, framework, solution

consume = BlockingChannel.basic_consume
BlockingChannel.basic_consume = lambda self, queue, cb, **kw: consume(
    self, queue, cb, auto_ack=True, **kw)
BlockingChannel.basic_ack = lambda self, *a, **kw: None  # (already acked)
framework.run(solution.handle_order)
