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

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict, dataclass, field
from typing import Any

import pika
import pika.exceptions

from harness.amqp import _plain, dead_letter_origin
from lab_services import pika_compat, topology
from lab_services.headers import (
    H_ATTEMPTS,
    LAB_HEADERS,
    SHORT_STR_MAX,
    clean_headers,
)
from lab_services.settings import DEFAULT_AMQP_URL

# Read what the services read: a timestamp header past year 9999 decodes as an integer
# instead of making pika drop the connection (see lab_services.pika_compat).
pika_compat.install()

# Headers that record a death; a replayed message starts afresh without them.
DEAD_LETTER_HEADERS = frozenset({
    *LAB_HEADERS, "x-death", "x-first-death-exchange", "x-first-death-queue",
    "x-first-death-reason", "x-last-death-exchange", "x-last-death-queue",
    "x-last-death-reason", "x-delivery-count",
})
MAX_PARSE_BYTES = 64 * 1024  # a real order is a few hundred bytes; bigger is not parsed


def safe(value: Any, limit: int = 120) -> str:
    """Text fit for a terminal: control characters escaped, at most `limit` characters."""
    text = value if isinstance(value, str) else str(value)
    cut = len(text) > limit
    text = text[:limit]
    # Escape everything non-printable (ANSI escapes, newlines, bidi controls) as \\x.., \\u....
    text = "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)
    return text + (f"... ({len(value) if isinstance(value, str) else '?'} chars)" if cut else "")


@dataclass
class DeadLetter:
    """One message in the DLQ as read, with where it came from and why it died."""

    index: int
    reason: str | None
    exchange: str | None
    routing_key: str | None
    queue: str | None
    attempts: int | None
    order_id: str | None
    message_id: str | None
    body_bytes: int
    headers: dict[str, Any] = field(repr=False)
    body: bytes = field(repr=False)  # the first `keep` bytes only (see describe)

    @property
    def replayable(self) -> bool:
        """True if the message says where to send it back to."""
        return (self.exchange is not None and self.routing_key is not None
                and len(self.exchange.encode()) <= SHORT_STR_MAX
                and len(self.routing_key.encode()) <= SHORT_STR_MAX)

    def summary(self) -> dict[str, Any]:
        """The listing fields as JSON-able data (no headers, no body)."""
        d = asdict(self)
        d.pop("headers")
        d.pop("body")
        return d


def _attempts(value: Any) -> int | None:
    # Untrusted: only a plain integer (not a bool, not a string) counts.
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _order_id(body: bytes, props: pika.BasicProperties) -> str | None:
    if len(body) <= MAX_PARSE_BYTES:
        try:
            payload = json.loads(body)
        except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
            payload = None
        if isinstance(payload, dict) and isinstance(payload.get("order_id"), str):
            return payload["order_id"]
    cid = props.correlation_id
    return cid.decode(errors="replace") if isinstance(cid, bytes) else cid


def describe(index: int, props: pika.BasicProperties, body: bytes, *,
             keep: int = MAX_PARSE_BYTES) -> DeadLetter:
    """Read one dead letter's reason, origin, attempts and order id; keep `keep` body bytes.

    Keeping only a prefix bounds memory when a listing meets a DLQ full of huge bodies.
    """
    headers = props.headers if isinstance(props.headers, dict) else {}
    origin = dead_letter_origin(headers)
    mid = props.message_id
    return DeadLetter(
        index=index, reason=origin["reason"], exchange=origin["exchange"],
        routing_key=origin["routing_key"], queue=origin["queue"],
        attempts=_attempts(headers.get(H_ATTEMPTS)), order_id=_order_id(body, props),
        message_id=mid.decode(errors="replace") if isinstance(mid, bytes) else mid,
        body_bytes=len(body), headers={str(k): _plain(v) for k, v in headers.items()},
        body=body[:keep],
    )


def _connect(amqp_url: str) -> pika.BlockingConnection:
    params = pika.URLParameters(amqp_url)
    params.connection_attempts = 1
    params.socket_timeout = 5
    return pika.BlockingConnection(params)


class Unreadable(RuntimeError):
    """Message `index` could not be decoded by pika; `dead` holds those read before it."""

    def __init__(self, index: int, cause: Exception, dead: list[DeadLetter]) -> None:
        super().__init__(f"message #{index} cannot be decoded ({safe(cause, 200)}); "
                         f"`dlq drop {index}` removes it")
        self.index = index
        self.dead = dead


def _get(ch: Any, queue: str, index: int, dead: list[DeadLetter], auto_ack: bool = False):
    try:
        return ch.basic_get(queue, auto_ack=auto_ack)
    except pika.exceptions.StreamLostError as exc:
        # pika drops the whole connection when it cannot decode a frame (e.g. a timestamp
        # header past year 9999); the message stays first in line for every reader.
        raise Unreadable(index, exc, dead) from exc


def read(amqp_url: str, *, queue: str = topology.DLQ, limit: int = 1000,
         keep: int = MAX_PARSE_BYTES) -> list[DeadLetter]:
    """The first `limit` dead letters, left in the queue (read unacked, then given back).

    Raises Unreadable (with the messages read before it) at one pika cannot decode.
    """
    out: list[DeadLetter] = []
    conn = _connect(amqp_url)
    try:
        ch = conn.channel()
        for index in range(1, limit + 1):
            method, props, body = _get(ch, queue, index, out)
            if method is None:
                break
            out.append(describe(index, props, body, keep=keep))
    finally:
        # Closing without an ack gives every message back to the queue, in its place.
        if conn.is_open:
            conn.close()
    return out


def show(amqp_url: str, index: int, *, queue: str = topology.DLQ,
         keep: int = MAX_PARSE_BYTES) -> DeadLetter | None:
    """Dead letter number `index` (1-based, as `list` numbers them), or None."""
    if index < 1:
        return None
    found = read(amqp_url, queue=queue, limit=index, keep=keep)
    return found[index - 1] if len(found) >= index else None


def drop(amqp_url: str, index: int, *, queue: str = topology.DLQ) -> DeadLetter | None:
    """Remove dead letter number `index`, readable or not; return it if it could be read.

    The messages before it are held unacked on one channel (then given back), so a second
    channel's auto-acked get takes exactly message `index`.
    """
    if index < 1:
        raise ValueError("index counts from 1")
    conn = _connect(amqp_url)
    try:
        hold = conn.channel()
        before: list[DeadLetter] = []
        for i in range(1, index):
            method, props, body = _get(hold, queue, i, before)
            if method is None:
                return None
        take = conn.channel()
        try:
            method, props, body = take.basic_get(queue, auto_ack=True)
        except pika.exceptions.StreamLostError:
            return None  # it could not be decoded, but the broker has let it go
        return describe(index, props, body) if method is not None else None
    finally:
        if conn.is_open:
            conn.close()


def purge(amqp_url: str, *, queue: str = topology.DLQ) -> int:
    """Empty the DLQ; return how many messages were dropped."""
    conn = _connect(amqp_url)
    try:
        return conn.channel().queue_purge(queue).method.message_count
    finally:
        if conn.is_open:
            conn.close()


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
    conn = _connect(amqp_url)
    held: list[int] = []  # delivery tags to give back (nack + requeue) at the end
    try:
        get_ch = conn.channel()
        pub_ch = conn.channel()
        pub_ch.confirm_delivery()
        present = get_ch.queue_declare(queue, passive=True).method.message_count
        for index in range(1, present + 1):
            try:
                method, props, body = _get(get_ch, queue, index, [])
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


# ---- command line --------------------------------------------------------------------------

def _print_list(dead: list[DeadLetter]) -> None:
    if not dead:
        print("dlq is empty")
        return
    print(f"{'#':>4}  {'attempts':>8}  {'origin':<32}  {'order':<24}  reason")
    for d in dead:
        origin = f"{d.exchange if d.exchange is not None else '?'}/{d.routing_key or '?'}"
        attempts = "-" if d.attempts is None else str(d.attempts)
        print(f"{d.index:>4}  {attempts:>8}  {safe(origin, 32):<32}  "
              f"{safe(d.order_id or '-', 24):<24}  {safe(d.reason or '-', 100)}")


def _print_show(d: DeadLetter, max_body: int) -> None:
    print(f"message #{d.index}: {d.body_bytes} bytes")
    for key, value in d.summary().items():
        if key not in ("index", "body_bytes"):
            print(f"  {key}: {safe(value if value is not None else '-', 300)}")
    print("headers:")
    for key, value in d.headers.items():
        print(f"  {safe(key, 80)}: {safe(json.dumps(value, default=str), 300)}")
    text = d.body[:max_body].decode(errors="replace")
    print(f"body (first {min(max_body, d.body_bytes)} of {d.body_bytes} bytes):")
    print(safe(text, max_body))


def cmd_dlq(args: argparse.Namespace) -> int:
    """`python -m harness dlq ...`: list, show, replay or purge the dead-letter queue."""
    url = args.amqp_url
    try:
        if args.action == "list":
            try:
                dead = read(url, limit=args.limit)
            except Unreadable as exc:
                _print_list(exc.dead)
                print(f"error: {exc}", file=sys.stderr)
                return 1
            if args.json:
                print(json.dumps([d.summary() for d in dead], indent=1))
            else:
                _print_list(dead)
        elif args.action == "show":
            try:
                d = show(url, args.index, keep=max(args.max_body, 0))
            except Unreadable as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 1
            if d is None:
                print(f"error: no message #{args.index} in dlq", file=sys.stderr)
                return 1
            _print_show(d, args.max_body)
        elif args.action == "replay":
            report = replay(url, reason=args.reason, limit=args.limit)
            print(report.text())
            return 1 if report.failed or report.unreadable else 0
        elif args.action == "drop":
            d = drop(url, args.index)
            print(f"dropped #{args.index}" + (f": {safe(d.reason or '-', 200)}" if d else
                                              " (unreadable, or not there)"))
        else:
            print(f"purged {purge(url)} messages from dlq")
    except pika.exceptions.AMQPError as exc:
        # Includes a frame pika cannot decode (e.g. a timestamp header out of range).
        print(f"error: AMQP: {exc.__class__.__name__}: {safe(exc, 300)} (is the broker up at "
              "--amqp-url? a message pika cannot decode can be removed with purge or the "
              "management UI)", file=sys.stderr)
        return 2
    return 0


def add_parser(sub: Any) -> None:
    """Add the `dlq` subcommand to the harness's argument parser."""
    where = argparse.ArgumentParser(add_help=False)
    where.add_argument("--amqp-url", default=os.environ.get("AMQP_URL", DEFAULT_AMQP_URL),
                       help="the lab's broker and vhost (default: $AMQP_URL, else the "
                            "services' default)")
    p = sub.add_parser("dlq", help="list, show, replay or purge dead letters")
    acts = p.add_subparsers(dest="action", required=True)
    ls = acts.add_parser("list", parents=[where], help="one line per dead letter")
    ls.add_argument("--limit", type=int, default=1000, help="at most this many (default 1000)")
    ls.add_argument("--json", action="store_true", help="as JSON")
    sh = acts.add_parser("show", parents=[where], help="one dead letter's headers and body")
    sh.add_argument("index", type=int, help="its number in `dlq list`")
    sh.add_argument("--max-body", type=int, default=4000, help="body bytes to print")
    rp = acts.add_parser("replay", parents=[where],
                         help="republish to the original exchange, confirmed, then remove")
    rp.add_argument("--reason", default=None, help="only reasons containing this text")
    rp.add_argument("--limit", type=int, default=None, help="replay at most this many")
    dr = acts.add_parser("drop", parents=[where], help="remove one dead letter, even "
                         "one that cannot be decoded")
    dr.add_argument("index", type=int, help="its number in `dlq list`")
    acts.add_parser("purge", parents=[where], help="drop every dead letter")
    p.set_defaults(func=cmd_dlq)
