"""Dead letters you can work with: list, show, replay and purge the lab's `dlq`.

    python -m harness dlq list                    # index, reason, origin, attempts, order
    python -m harness dlq show 3                  # one message's headers and body (bounded)
    python -m harness dlq replay --reason "simulated" --limit 10
    python -m harness dlq drop 2                  # remove one, even one pika cannot decode
    python -m harness dlq purge

`replay` republishes each chosen message to the exchange and routing key it was
dead-lettered from, with publisher confirms and `mandatory`, without the lab's dead-letter
headers (so it starts again at attempt 1), and removes it from `dlq` only once the broker
has confirmed the copy. A crash in between leaves both: the copy and the dead letter. That
is at-least-once again, and safe only because the consumers are idempotent (replaying a
message twice must change nothing; tests/test_dlq.py proves it).

Messages in a DLQ are by nature the ones something choked on: every field read here is
bounded and escaped before it reaches a terminal, and a body is parsed only if small.
"""

from harness.deadletters.command import add_parser, cmd_dlq
from harness.deadletters.letters import (
    DEAD_LETTER_HEADERS,
    MAX_PARSE_BYTES,
    DeadLetter,
    Unreadable,
    describe,
    drop,
    purge,
    read,
    safe,
    show,
)
from harness.deadletters.replay import ReplayReport, replay, replay_properties

__all__ = ["DEAD_LETTER_HEADERS", "MAX_PARSE_BYTES", "DeadLetter", "ReplayReport", "Unreadable",
           "add_parser", "cmd_dlq", "describe", "drop", "purge", "read", "replay",
           "replay_properties", "safe", "show"]
