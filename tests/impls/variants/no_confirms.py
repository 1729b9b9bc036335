"""Broken: publishes its outcomes without publisher confirms."""
from _base import BlockingChannel, framework, solution

BlockingChannel.confirm_delivery = lambda self: None
framework.run(solution.handle_order)
