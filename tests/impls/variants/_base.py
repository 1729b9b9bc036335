"""What the inventory variants share: the exercise's framework and the reference handler.

Each variant changes one thing of the reference inventory (solutions/inventory), the way a
student's code gets it wrong (or differently right), and runs it.
"""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path[:0] = [str(ROOT / "solutions" / "inventory"), str(ROOT / "exercises" / "inventory")]

import framework  # noqa: E402
import inventory as solution  # noqa: E402
from pika.adapters.blocking_connection import BlockingChannel  # noqa: E402

__all__ = ["BlockingChannel", "framework", "solution"]
