"""`python -m harness dlq ...`: the command line over the dead-letter tools."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

import pika.exceptions

from harness.deadletters.letters import DeadLetter, Unreadable, drop, purge, read, safe, show
from harness.deadletters.replay import replay
from lab_services.settings import DEFAULT_AMQP_URL


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
