"""The thin command line over the harness: run scenarios, benchmark, bring a lab up."""

from __future__ import annotations

import argparse
import inspect
import logging
import sys
import time
from pathlib import Path
from typing import Any

from lab_services.contract import SERVICES

# Where the naive reference implementation lives (the bench compares the lab with it).
NAIVE_SPEC = Path(__file__).resolve().parents[1] / "examples" / "naive" / "impl.toml"

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def _open(args: argparse.Namespace):
    from harness.brokers import open_broker
    return open_broker(args.broker)  # auto | local | local-cluster | local:N | docker | URL


ONE_NODE_HELP = ("run every scenario on the one broker (default: on a local node, each scenario "
                 "that restarts the broker runs alongside on a local node of its own)")


def _own_node(args: argparse.Namespace) -> bool | None:
    """False with --one-node; otherwise None, the default of run_all and grade."""
    return False if args.one_node else None


def _non_negative(value: str) -> int:
    """argparse type: an integer >= 0."""
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {value!r}") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {n}")
    return n


def _positive(value: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {value!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {n}")
    return n


def _broker_kind(value: str) -> str:
    """argparse type for --broker: refuse an unknown provider before anything starts."""
    from harness.brokers import parse_kind
    try:
        parse_kind(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return value


def replicas_arg(text: str) -> dict[str, int]:
    """Parse --replicas: 'inventory=3' or 'inventory=3,notification=2'."""
    out: dict[str, int] = {}
    for part in text.split(","):
        name, sep, count = part.partition("=")
        if not sep or name.strip() not in SERVICES \
                or not count.strip().isdigit() or not 1 <= int(count) <= 16:
            raise argparse.ArgumentTypeError(
                f"expected SERVICE=N (order, inventory or notification; N from 1 to 16), "
                f"not {part!r}")
        out[name.strip()] = int(count)
    return out


def cmd_run(args: argparse.Namespace) -> int:
    """Run one scenario, or all of them, and print the summary."""
    from harness import scenarios
    if args.scenario == "all":
        with _open(args) as broker:
            results, report = scenarios.run_all(broker, orders=args.orders, out=args.out,
                                                size=args.size,
                                                own_node_for_restarts=_own_node(args))
        for r in results:
            print(r.text())
        bad = [r.name for r in results if not r.valid]
        print(f"\nreport: {report}")
        print("every verdict valid" if not bad else f"INVALID: {', '.join(bad)}")
        return 1 if bad else 0
    sc = scenarios.registry.get(args.scenario)
    fn = sc.function
    kwargs: dict[str, Any] = {"out": args.out, **sc.full_kwargs}
    for name in ("orders", "seed", "rate"):
        if getattr(args, name) is not None:
            if name not in inspect.signature(fn).parameters:
                print(f"error: {args.scenario} takes no --{name}", file=sys.stderr)
                return 2
            kwargs[name] = getattr(args, name)
    if args.replicas:
        if "replicas" not in inspect.signature(fn).parameters:
            print(f"error: {args.scenario} takes no --replicas", file=sys.stderr)
            return 2
        kwargs["replicas"] = args.replicas
    if args.impl:
        kwargs["impl"] = _impl(args.impl)
        if not sc.black_box:
            scenarios.registry.require_lab(kwargs["impl"], sc.name)
    with _open(args) as broker:
        result = sc.function(broker, **kwargs)
    print(result.text())
    return 0 if result.valid else 1


def _impl(path: str):
    from harness.lab.impl import resolve
    return resolve(path)  # "lab" is the lab's own services


def cmd_grade(args: argparse.Namespace) -> int:
    """Grade an implementation with every black-box scenario; exit 1 if any check fails."""
    import json

    from harness.grading.grade import grade
    impl = _impl(args.impl)
    only = [n.strip() for n in args.only.split(",")] if args.only else None
    from harness.grading.scores import load_rubric
    load_rubric(args.rubric)  # a bad rubric fails now, not after the grade
    # A local node is opened by grade itself, so that the nodes of the scenarios that
    # restart the broker boot alongside it.
    if impl.honours_vhost and args.broker not in ("auto", "local"):
        with _open(args) as broker:
            card = grade(impl, broker, orders=args.orders, small=args.small, out=args.out,
                         only=only, progress=not args.json,
                         own_node_for_restarts=_own_node(args))
    else:  # opened by grade: a vhost-blind one gets a broker of its own
        card = grade(impl, None, orders=args.orders, small=args.small, out=args.out,
                     only=only, broker_kind=args.broker, progress=not args.json,
                     own_node_for_restarts=_own_node(args))
    if args.json:
        print(json.dumps(card.to_dict(), indent=2))
    else:
        print(card.text())
    _write_formats(args, card.to_dict(), only)
    return 0 if card.passed else 1


def _write_formats(args: argparse.Namespace, card: dict[str, Any], only: list[str] | None) -> None:
    """Score the card with --rubric and write each --format (gradescope, junit, summary)."""
    from harness.grading import formats, scores
    from harness.scenarios import registry
    scored = scores.score_card(card, scores.load_rubric(args.rubric),
                               only or [s.name for s in registry.black_box()])
    print(f"  {formats.headline(scored)}", file=sys.stderr if args.json else sys.stdout)
    formats.add_score_to_card(card["run_dir"], scored)
    for fmt in dict.fromkeys(args.format or []):
        if fmt != "card":
            path = formats.write(fmt, scored, args.results or card["run_dir"],
                                 rubric=scores.load_rubric(args.rubric),
                                 card_link=str(Path(card["run_dir"]) / "report.html"))
            print(f"  {fmt}: {path}", file=sys.stderr if args.json else sys.stdout)


def cmd_grade_class(args: argparse.Namespace) -> int:
    """Grade a class in parallel; write gradebook.csv and class.html."""
    from harness.grading import classroom, scores
    rubric = scores.load_rubric(args.rubric)
    only = [n.strip() for n in args.only.split(",")] if args.only else None
    try:
        subs = classroom.find_submissions(args.submissions)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    run = classroom.impl_run(broker=args.broker, small=args.small, only=only,
                             orders=args.orders, rubric=rubric, rubric_path=args.rubric)
    outcomes = classroom.grade_class(subs, run, args.out, jobs=args.jobs, timeout=args.timeout,
                                     again=args.again, rubric=rubric)
    return _class_summary(outcomes, Path(args.out))


def _class_summary(outcomes: list[dict[str, Any]], out: Path) -> int:
    for o in outcomes:
        s = o["scored"]
        print(f"  {o['student']:<24} {s['score']:>7g} / {s['max_score']:<7g} "
              f"{o['seconds']:>6} s  {o['peak_rss_mb']:>7} MB"
              f"{'  ' + o['stopped'][:80] if o['stopped'] else ''}")
    print(f"gradebook: {out / 'gradebook.csv'}\nclass page: {out / 'class.html'}")
    return 0


def cmd_course_grade(args: argparse.Namespace) -> int:
    """Execute students' notebooks, each on a broker of its own; score every check."""
    from harness.grading import classroom, notebooks, scores
    rubric = scores.load_rubric(args.rubric)
    try:
        subs = notebooks.find_notebooks(args.notebooks)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    run = notebooks.notebook_run(broker=args.broker, rubric=rubric, cell_timeout=args.cell_timeout)
    outcomes = classroom.grade_class(subs, run, args.out, jobs=args.jobs, timeout=args.timeout,
                                     again=args.again, rubric=rubric)
    return _class_summary(outcomes, Path(args.out))


def cmd_bench(args: argparse.Namespace) -> int:
    """Measure the lab's drain against the plain-pika floor on the same broker."""
    from harness.bench import run as bench
    with _open(args) as broker:
        report = bench.run_bench(broker, backlog=args.backlog, runs=args.runs,
                                 synchronous=(bench.SYNCHRONOUS if args.synchronous == "both"
                                              else args.synchronous),
                                 profile=args.profile, intake_rounds=args.intake_rounds,
                                 latency_orders=args.latency_orders,
                                 naive=None if args.no_naive else args.naive,
                                 intake_seconds=args.intake_seconds,
                                 e2e_orders=args.e2e_orders, naive_backlog=args.naive_backlog,
                                 out=args.out)
    print(bench.describe(report))
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    """Start a broker and the three services, print where they are, wait for Ctrl-C."""
    from harness.brokers import open_broker
    from harness.course import public_url
    from harness.lab import DEFAULT_PORTS, Lab
    impl = _impl(args.impl) if args.impl else None
    wanted = {} if args.random_ports else {"amqp_port": 5672, "management_port": 15672}
    with open_broker(args.broker, **wanted) as broker, \
            Lab(broker, impl=impl, own_vhost=False, replicas=args.replicas,
                ports=None if args.random_ports else DEFAULT_PORTS) as lab:
        print(f"broker    {broker.provider}: {', '.join(broker.amqp_urls)}")
        for what, want in wanted.items():  # say so when a documented port was taken
            got = getattr(broker, what, want)
            if got != want:
                print(f"  port {want} is taken on this machine: {what} is {got} instead")
        if broker.management_url:
            user, pw = broker.management_auth
            print(f"management UI: {public_url(broker.management_url)}  "
                  f"(user {user}, password {pw})")
        for name, svc in lab.services.items():
            moved = "" if args.random_ports or svc.port == DEFAULT_PORTS.get(name) else \
                f"  ({DEFAULT_PORTS.get(name)} is taken)"
            print(f"{name:<13} {svc.url}  (log {svc.log_path}){moved}")
        print("Ctrl-C stops everything.")
        try:
            while all(s.running for s in lab.services.values()):
                time.sleep(1)
        except KeyboardInterrupt:
            pass
    return 0


def cmd_contract(args: argparse.Namespace) -> int:
    """Check (or --write) the generated sections of docs/contract.md."""
    from harness.grading import contract
    if args.write:
        contract.write()
        print(f"wrote {contract.CONTRACT}")
        return 0
    if contract.stale():
        print(f"{contract.CONTRACT} is stale: run python -m harness contract --write")
        return 1
    print(f"{contract.CONTRACT} matches the code")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `python -m harness`."""
    from harness.scenarios import registry
    parser = argparse.ArgumentParser(prog="python -m harness", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--broker", default="auto", type=_broker_kind,
                       help="auto | local | local-cluster | local:N | docker | an amqp:// URL "
                            "(default: auto)")
        p.add_argument("--out", default="runs", help="folder for run folders (default: runs)")

    run = sub.add_parser("run", help="run a scenario and write its run folder")
    run.add_argument("scenario", choices=[*registry.scenarios(), "all"])
    run.add_argument("--orders", type=int, default=None, help="orders to place")
    run.add_argument("--seed", type=int, default=None,
                     help="seed of the order mix (and of chaos's fault schedule)")
    run.add_argument("--rate", type=float, default=None, help="orders per second")
    run.add_argument("--replicas", type=replicas_arg, default=None,
                     help="processes per service, e.g. inventory=3 (scenarios that take it)")
    run.add_argument("--impl", default=None,
                     help="an implementation's impl.toml (black-box scenarios only)")
    run.add_argument("--size", choices=registry.SIZES, default="quick",
                     help="with `all`: quick (default, each scenario small: a first run) or "
                          "full (class size)")
    run.add_argument("--one-node", action="store_true", help=ONE_NODE_HELP)
    common(run)
    run.set_defaults(func=cmd_run)

    grade = sub.add_parser("grade", help="grade an implementation: every black-box scenario, "
                           "a report card (report.md, report.html), exit 1 if a check fails")
    grade.add_argument("--impl", required=True,
                       help="the implementation's impl.toml, or \"lab\" for the lab's own")
    grade.add_argument("--orders", type=int, default=None,
                       help="orders per scenario (default: each scenario's own size)")
    grade.add_argument("--small", action="store_true", help="CI-sized runs (a few orders each)")
    grade.add_argument("--only", default=None, help="comma-separated scenario names")
    grade.add_argument("--json", action="store_true", help="print the card as JSON")
    grade.add_argument("--format", action="append", choices=("card", "gradescope", "junit",
                       "summary"), help="also write results.json (gradescope), junit.xml or "
                       "summary.md (Markdown with points); repeatable")
    grade.add_argument("--results", default=None,
                       help="folder for the --format files (default: the card's run folder)")
    grade.add_argument("--rubric", default=None, help="rubric.toml: points per scenario")
    grade.add_argument("--one-node", action="store_true", help=ONE_NODE_HELP)
    common(grade)
    grade.set_defaults(func=cmd_grade)

    klass = sub.add_parser("grade-class", help="grade a class in parallel: gradebook.csv and "
                           "class.html (what the class got wrong)")
    klass.add_argument("submissions", help="a folder of student folders (each with impl.toml) "
                       "or a CSV of name,path")
    klass.add_argument("--jobs", type=int, default=2, help="grades at a time (default 2)")
    klass.add_argument("--timeout", type=float, default=900.0,
                       help="seconds one student's grade may take (default 900)")
    klass.add_argument("--again", action="store_true", help="regrade students already graded")
    klass.add_argument("--small", action="store_true", help="CI-sized runs")
    klass.add_argument("--only", default=None, help="comma-separated scenario names")
    klass.add_argument("--orders", type=int, default=None, help="orders per scenario")
    klass.add_argument("--rubric", default=None, help="rubric.toml: points per scenario")
    klass.add_argument("--broker", default="local", type=_broker_kind,
                       help="the broker kind each grade opens for itself (default local)")
    klass.add_argument("--out", default="class", help="output folder (default: class)")
    klass.set_defaults(func=cmd_grade_class)

    course = sub.add_parser("course", help="the course notebooks")
    course_sub = course.add_subparsers(dest="course_command", required=True)
    nbgrade = course_sub.add_parser("grade", help="execute students' notebooks and score "
                                    "every check: results.json, gradebook.csv, class.html")
    nbgrade.add_argument("notebooks", nargs="+", help="student notebooks (.ipynb), a folder of "
                         "student folders, or a CSV of name,path")
    nbgrade.add_argument("--jobs", type=int, default=2, help="notebooks at a time (default 2)")
    nbgrade.add_argument("--timeout", type=float, default=1800.0,
                         help="seconds one notebook may take (default 1800)")
    nbgrade.add_argument("--cell-timeout", type=float, default=300.0,
                         help="seconds one cell may take (default 300)")
    nbgrade.add_argument("--again", action="store_true", help="regrade notebooks already graded")
    nbgrade.add_argument("--rubric", default=None, help="rubric.toml: points per check")
    nbgrade.add_argument("--broker", default="local", type=_broker_kind,
                         help="LAB_BROKER for each notebook (default local: a node of its own)")
    nbgrade.add_argument("--out", default="course-grades", help="output folder")
    nbgrade.set_defaults(func=cmd_course_grade)

    bench = sub.add_parser("bench", help="drain vs the plain-pika floor, latency, HTTP rate, RSS")
    bench.add_argument("--backlog", type=int, default=20_000,
                       help="orders in the drain backlog (default 20000)")
    bench.add_argument("--runs", type=_positive, default=3,
                       help="floor and lab drain this many times at each setting, the side "
                            "going first alternating; medians (default 3)")
    bench.add_argument("--synchronous", choices=("both", "FULL", "NORMAL"), default="both",
                       help="SQLite synchronous for both the floor and the lab: the drain at "
                            "FULL (the lab's default) and at NORMAL, or at one of them "
                            "(default both; the intake uses FULL, or the one chosen)")
    bench.add_argument("--profile", action="store_true",
                       help="py-spy the lab inventory while it drains, and the lab order "
                            "service under wrk load (raw stacks in the run folder)")
    bench.add_argument("--latency-orders", type=_non_negative, default=1000,
                       help="orders for the per-hop latency at 100/s (0 skips; default 1000)")
    bench.add_argument("--naive", default=str(NAIVE_SPEC),
                       help="the implementation to compare with (default examples/naive)")
    bench.add_argument("--no-naive", action="store_true",
                       help="skip the comparison with the naive implementation")
    bench.add_argument("--intake-seconds", type=_non_negative, default=5,
                       help="seconds of wrk per run (1, 4 and 16 connections; 0 skips; "
                            "default 5)")
    bench.add_argument("--intake-rounds", type=_positive, default=3,
                       help="wrk runs per side and shape, taken in turn; medians (default 3)")
    bench.add_argument("--e2e-orders", type=_non_negative, default=500,
                       help="orders placed at 50/s per side for end-to-end latency (0 skips; "
                            "default 500)")
    bench.add_argument("--naive-backlog", type=_non_negative, default=500,
                       help="backlog both sides drain side by side (0 skips; default 500)")
    common(bench)
    bench.set_defaults(func=cmd_bench)

    contract = sub.add_parser("contract", help="check docs/contract.md against the code")
    contract.add_argument("--write", action="store_true", help="regenerate its sections")
    contract.set_defaults(func=cmd_contract)

    up = sub.add_parser("up", help="start a broker and the services for exploring by hand")
    up.add_argument("--impl", default=None, help="an implementation's impl.toml (default: "
                    "the lab's own services)")
    up.add_argument("--replicas", type=replicas_arg, default=None,
                    help="processes per service, e.g. inventory=3")
    up.add_argument("--random-ports", action="store_true",
                    help="free random ports instead of 5672/15672 and 5001-5003")
    common(up)
    up.set_defaults(func=cmd_up)

    from harness import deadletters as dlq
    dlq.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m harness`."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format=LOG_FORMAT, stream=sys.stderr)
    logging.getLogger("harness.observe").setLevel(logging.INFO if args.verbose
                                                  else logging.WARNING)
    from harness.brokers import BrokerNotFound
    from harness.grading.scores import RubricError
    from harness.lab import ServiceFailed
    from harness.lab.impl import ImplError
    from harness.scenarios.registry import WhiteBoxOnly
    try:
        return args.func(args)
    except (BrokerNotFound, ImplError, WhiteBoxOnly, ServiceFailed, RubricError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
