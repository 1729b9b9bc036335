"""A deliberately fragile inventory, to prove that two checks can fail.

It is the reference solution, except that the process exits on a malformed message (so it
"stops consuming after a malformed message") and on losing the broker (so it does not
"reconnect by itself").
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "exercises" / "inventory"))

import framework  # noqa: E402

# The solution's module, loaded by path: "inventory" would find this very file.
_spec = importlib.util.spec_from_file_location(
    "inventory_solution", ROOT / "solutions" / "inventory" / "inventory.py")
_solution = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_solution)
handle_order = _solution.handle_order


def fragile(db, body):
    """The solution's handler, but a malformed message ends the process."""
    try:
        return handle_order(db, body)
    except framework.InvalidMessage as exc:
        print(f"cannot parse a message ({exc.reason}): giving up", flush=True)
        os._exit(1)


def once(self) -> None:
    """Consume until the broker goes away, then exit instead of reconnecting."""
    import pika
    conn = pika.BlockingConnection(pika.URLParameters(self.amqp_url))
    ch = conn.channel()
    framework.declare(ch)
    ch.confirm_delivery()
    ch.basic_consume("order_placed", self.on_message)
    self.consuming.set()  # the framework's /health answers 200 only while this is set
    try:
        ch.start_consuming()
    finally:
        print("lost the broker: exiting", flush=True)
        os._exit(1)


if __name__ == "__main__":
    framework.Consumer.run_forever = once
    framework.run(fragile)
