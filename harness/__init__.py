"""rabbit-lab's harness: start a broker, run the services, drive load, inject faults,
observe, check and plot. Notebooks import it; `python -m harness` is its thin CLI."""

import logging

# The harness opens connections to brokers it has just stopped on purpose; pika logs each
# refused attempt as an ERROR with a traceback, which would bury a notebook's output.
logging.getLogger("pika").setLevel(logging.CRITICAL)
