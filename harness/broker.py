"""Kept for existing imports: the broker code lives in the `harness.brokers` package."""

from harness.brokers import *  # noqa: F403
from harness.brokers import __all__  # noqa: F401
