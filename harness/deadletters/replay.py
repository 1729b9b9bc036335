"""Replaying dead letters: a confirmed copy to where each came from, then the original removed."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pika
import pika.exceptions

from harness.deadletters.letters import (
    DEAD_LETTER_HEADERS,
    DeadLetter,
    Unreadable,
    connect,
    describe,
    get_one,
    safe,
)
from lab_services import topology
from lab_services.headers import clean_headers


def replay_properties(props: pika.BasicProperties) -> pika.BasicProperties:
    """The properties of the replayed copy: persistent, the death headers stripped."""
    headers = props.headers if isinstance(props.headers, dict) else {}
    kept = clean_headers({k: v for k, v in headers.items() if k not in DEAD_LETTER_HEADERS})
    copy = pika.BasicProperties(
        content_type=props.content_type, content_encoding=props.content_encoding,
        delivery_mode=pika.DeliveryMode.Persistent, priority=props.priority,
        correlation_id=props.correlation_id, message_id=props.message_id,
        timestamp=props.timestamp, type=props.type, app_id=props.app_id,
        headers=kept or None)
    copy.encode()  # raises here, not halfway through a publish, if it cannot go on the wire
    return copy


@dataclass
class ReplayReport:
    """What a replay did: replayed and left messages, and why each one was left."""

    replayed: list[DeadLetter] = field(default_factory=list)
    skipped: int = 0  # not chosen (reason filter, limit)
    failed: list[tuple[DeadLetter, str]] = field(default_factory=list)
    unreadable: Unreadable | None = None  # replay stopped at a message pika cannot decode

    def text(self) -> str:
        """A human summary."""
        lines = [f"replayed {len(self.replayed)}, left {self.skipped} not chosen, "
                 f"{len(self.failed)} failed"]
        lines += [f"  #{d.index} {safe(d.order_id or '-', 40)}: not replayed: {safe(why, 200)}"
                  for d, why in self.failed]
        if self.unreadable is not None:
            lines.append(f"stopped: {self.unreadable}")
        return "\n".join(lines)


def replay(amqp_url: str, *, reason: str | None = None, limit: int | None = None,
           queue: str = topology.DLQ) -> ReplayReport:
    """Republish chosen dead letters where they came from, confirmed; then remove them.

    Chooses messages whose reason contains `reason` (all if None), at most `limit`. Looks at
    each message present at the start once; every message not replayed goes back to the queue.
    """
    report = ReplayReport()
    conn = connect(amqp_url)
    held: list[int] = []  # delivery tags to give back (nack + requeue) at the end
    try:
        get_ch = conn.channel()
        pub_ch = conn.channel()
        pub_ch.confirm_delivery()
        present = get_ch.queue_declare(queue, passive=True).method.message_count
        for index in range(1, present + 1):
            try:
                method, props, body = get_one(get_ch, queue, index, [])
            except Unreadable as exc:
                report.unreadable = exc  # the connection is gone: the held ones go back
                return report
            if method is None:
                break
            dead = describe(index, props, body)
            chosen = (reason is None or reason in (dead.reason or "")) and \
                (limit is None or len(report.replayed) + len(report.failed) < limit)
            if not chosen:
                report.skipped += 1
                held.append(method.delivery_tag)
                continue
            why_not, pub_ch = _republish(conn, pub_ch, dead, props, body)
            if why_not is None:
                # Only now is the copy safe with the broker: drop the dead letter.
                get_ch.basic_ack(method.delivery_tag)
                report.replayed.append(dead)
            else:
                report.failed.append((dead, why_not))
                held.append(method.delivery_tag)
        for tag in held:
            get_ch.basic_nack(tag, requeue=True)
    finally:
        if conn.is_open:
            conn.close()  # also gives back anything still unacked after an error
    return report


def _republish(conn: pika.BlockingConnection, ch: Any, dead: DeadLetter,
               props: pika.BasicProperties, body: bytes) -> tuple[str | None, Any]:
    """Publish one copy; return (None or why it failed, the publish channel to use next)."""
    if not dead.replayable:
        return "no original exchange and routing key (or one too long)", ch
    try:
        copy = replay_properties(props)
    except Exception as exc:  # pika's encoder raises assorted errors on foreign values
        return f"properties cannot be encoded: {exc.__class__.__name__}: {exc}", ch
    try:
        ch.basic_publish(dead.exchange, dead.routing_key, body, copy, mandatory=True)
    except pika.exceptions.UnroutableError:
        return (f"unroutable: no queue bound to {dead.exchange!r} "
                f"with key {dead.routing_key!r}"), ch
    except pika.exceptions.NackError:
        return "the broker nacked the copy", ch
    except pika.exceptions.ChannelClosedByBroker as exc:
        # E.g. the exchange no longer exists (404): this channel is gone, open another.
        ch = conn.channel()
        ch.confirm_delivery()
        return f"channel closed by the broker: {exc.reply_code} {exc.reply_text}", ch
    return None, ch
