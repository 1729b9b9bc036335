"""The thin command line over the harness: run scenarios, benchmark, bring a lab up."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from typing import Any

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def _open(args: argparse.Namespace):
    from harness.broker import open_broker
    return open_broker(args.broker)  # auto | local | docker | url | an amqp:// URL


def cmd_run(args: argparse.Namespace) -> int:
    """Run one scenario, or all of them, and print the summary."""
    from harness import scenarios
    if args.scenario == "all":
        with _open(args) as broker:
            results, report = scenarios.run_all(broker, orders=args.orders, out=args.out)
        for r in results:
            print(r.text())
        bad = [r.name for r in results if not r.valid]
        print(f"\nreport: {report}")
        print("every verdict valid" if not bad else f"INVALID: {', '.join(bad)}")
        return 1 if bad else 0
    fn = scenarios.SCENARIOS[args.scenario]
    kwargs: dict[str, Any] = {"out": args.out}
    if args.orders is not None:
        kwargs["orders"] = args.orders
    with _open(args) as broker:
        result = fn(broker, **kwargs)
    print(result.text())
    return 0 if result.valid else 1


def cmd_bench(args: argparse.Namespace) -> int:
    """Measure the pipeline's speed against raw pika on the same broker."""
    from harness import bench
    with _open(args) as broker:
        report = bench.run_bench(broker, backlog=args.backlog, out=args.out)
    print(bench.describe(report))
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    """Start a broker and the three services, print where they are, wait for Ctrl-C."""
    from harness.lab import Lab
    with _open(args) as broker, Lab(broker, own_vhost=False) as lab:
        print(f"broker    {broker.provider}: {broker.amqp_url}")
        if broker.management_url:
            user, pw = broker.management_auth
            print(f"management UI: {broker.management_url}  (user {user}, password {pw})")
        for name, svc in lab.services.items():
            print(f"{name:<13} {svc.url}  (log {svc.log_path})")
        print("Ctrl-C stops everything.")
        try:
            while all(s.running for s in lab.services.values()):
                time.sleep(1)
        except KeyboardInterrupt:
            pass
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `python -m harness`."""
    from harness.scenarios import SCENARIOS
    parser = argparse.ArgumentParser(prog="python -m harness", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--broker", default="auto",
                       help="auto | local | docker | an amqp:// URL (default: auto)")
        p.add_argument("--out", default="runs", help="folder for run folders (default: runs)")

    run = sub.add_parser("run", help="run a scenario and write its run folder")
    run.add_argument("scenario", choices=[*SCENARIOS, "all"])
    run.add_argument("--orders", type=int, default=None, help="orders to place")
    common(run)
    run.set_defaults(func=cmd_run)

    bench = sub.add_parser("bench", help="measure drain rate, latency and HTTP rate")
    bench.add_argument("--backlog", type=int, default=5000, help="orders in the drain backlog")
    common(bench)
    bench.set_defaults(func=cmd_bench)

    up = sub.add_parser("up", help="start a broker and the services for exploring by hand")
    common(up)
    up.set_defaults(func=cmd_up)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m harness`."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format=LOG_FORMAT, stream=sys.stderr)
    logging.getLogger("harness.observe").setLevel(logging.INFO if args.verbose
                                                  else logging.WARNING)
    from harness.broker import BrokerUnavailable
    try:
        return args.func(args)
    except BrokerUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
