"""Run the AQuA simulator until SIGTERM or SIGINT; the first stdout line is its base URL."""

from __future__ import annotations

import argparse
import random
import signal
import sys
import threading
from dataclasses import dataclass
from typing import Any

from . import faults, sample
from .endpoints import JOB_LIMIT_ANSWERS
from .faults import parse_fault_spec
from .server import FILE_PURGE_SECONDS, IDEMPOTENCY_SECONDS, MAX_FILE_BYTES, AquaSimulator
from .tenant import DEFAULT_TIME_ZONE

#: The CLI's default index delay, in seconds. Zuora documents no figure for how late its export
#: index is; its "at least 2 hours" advice is for long transactions (``late_by`` writes). A minute
#: is long enough that a client exporting up to "now" visibly misses the latest writes, and far
#: below any sane lag (the provider's default is 2 hours, Zuora's rule). In-process simulators
#: default to 0 so that tests stay deterministic.
CLI_INDEX_DELAY = 60.0
#: Credentials for a simulator started without any (36 characters, as Zuora's client ids).
DEFAULT_CLIENT_ID = "5a1b0000-0000-4000-8000-a9a000000000"
DEFAULT_CLIENT_SECRET = "simulator-secret"


def _fault(spec: str) -> dict[str, Any]:
    try:
        return parse_fault_spec(spec)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


@dataclass(frozen=True)
class LateCommit:
    """A ``--late-commit``: a row for ``table`` stamped ``late_by`` seconds ago, visible after ``visible_in``."""

    table: str
    late_by: float
    visible_in: float | None


def _late_commit(spec: str) -> LateCommit:
    parts = spec.split(":")
    try:
        if len(parts) not in (2, 3) or not parts[0].isidentifier():
            raise ValueError
        numbers = [float(part) for part in parts[1:]]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{spec!r} is not TABLE:LATE_BY[:VISIBLE_IN], e.g. Account:7200:600") from None
    if min(numbers) < 0:
        raise argparse.ArgumentTypeError(f"{spec!r}: seconds must not be negative")
    return LateCommit(parts[0], numbers[0], numbers[1] if len(numbers) == 2 else None)


def build_parser() -> argparse.ArgumentParser:
    """The command line parser."""
    parser = argparse.ArgumentParser(
        prog="python -m airflow_provider_zuora_aqua.simulator",
        description="Serve a local Zuora AQuA simulator. Prints its base URL as the first line of stdout.",
        epilog=faults.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port to bind; 0 picks a free one (default 0)")
    parser.add_argument("--job-seconds", type=float, default=5.0, help="submit-to-completed time (default 5)")
    parser.add_argument(
        "--queue-seconds", type=float, default=None, help="time spent 'submitted' (default min(0.5, job-seconds/10))"
    )
    parser.add_argument(
        "--client-id", default=DEFAULT_CLIENT_ID, help=f"the OAuth client id to accept (default {DEFAULT_CLIENT_ID})"
    )
    parser.add_argument(
        "--client-secret",
        default=DEFAULT_CLIENT_SECRET,
        help=f"the OAuth client secret to accept (default {DEFAULT_CLIENT_SECRET})",
    )
    parser.add_argument("--token-seconds", type=float, default=3599, help="token lifetime (default 3599)")
    parser.add_argument(
        "--errors-as-200", action="store_true", help="answer job-id refusals (90002, 90003) with HTTP 200"
    )
    parser.add_argument(
        "--concurrent-job-limit", type=int, default=None, help="refuse submissions past N running jobs (90028)"
    )
    parser.add_argument(
        "--job-limit-answer",
        choices=JOB_LIMIT_ANSWERS,
        default="body",
        help="refuse past the limit with an HTTP 200 error body (default) or a 429",
    )
    parser.add_argument(
        "--fault",
        type=_fault,
        action="extend",
        nargs="+",
        default=[],
        metavar="SPEC",
        help="inject faults; repeatable, and several SPECs may follow one --fault",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed for rate-based faults and the sample data (default 0)"
    )
    files = parser.add_argument_group("result files")
    files.add_argument(
        "--file-rows", type=int, default=None, help="records in every batch's file (default 1-1000, from the query)"
    )
    files.add_argument(
        "--segment-rows",
        type=int,
        default=None,
        help="split a stateful full load with more records into segments of at most N (default: never)",
    )
    files.add_argument(
        "--max-file-bytes",
        type=int,
        default=MAX_FILE_BYTES,
        help=f"larger files answer 403 max-object-size (default {MAX_FILE_BYTES}, 2047 MB)",
    )
    files.add_argument(
        "--file-purge-seconds",
        type=float,
        default=FILE_PURGE_SECONDS,
        help=f"files answer 404 this long after their batch completed (default {FILE_PURGE_SECONDS:g}, 72 h)",
    )
    files.add_argument(
        "--file-transport-gzip",
        action="store_true",
        help="gzip downloads over 1000 bytes for clients sending Accept-Encoding: gzip (no Range then)",
    )
    tenant = parser.add_argument_group("tenant data (rows are written through the /_simulator/tables routes)")
    tenant.add_argument(
        "--time-zone",
        default=DEFAULT_TIME_ZONE,
        help=f"the tenant's time zone: ZOQL date-times without an offset are read in it (default {DEFAULT_TIME_ZONE})",
    )
    tenant.add_argument(
        "--no-sample-data",
        dest="sample_data",
        action="store_false",
        help=f"start with no tables (default: {sample.ACCOUNTS} Account and {sample.SUBSCRIPTIONS} Subscription rows "
        "updated over the last 28 days, a few of them late commits)",
    )
    tenant.add_argument(
        "--late-commit",
        type=_late_commit,
        action="append",
        default=[],
        metavar="TABLE:LATE_BY[:VISIBLE_IN]",
        help="at start, write a row to TABLE stamped LATE_BY seconds ago that queries see only VISIBLE_IN "
        "seconds later (default: the index delay), e.g. Account:7200:600; repeatable",
    )
    tenant.add_argument(
        "--index-delay",
        type=float,
        default=CLI_INDEX_DELAY,
        help=f"default seconds before a write is visible to queries (default {CLI_INDEX_DELAY:g}: Zuora's export "
        "index is eventually consistent)",
    )
    tenant.add_argument(
        "--clock-skew",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="run the tenant's clock this far ahead of the real one (negative: behind; e.g. -900), "
        "for stamps, job times and the Date header (default 0)",
    )
    tenant.add_argument(
        "--deny-object",
        action="append",
        default=[],
        metavar="OBJECT",
        help="the API user may not read OBJECT: queries touching it are dropped from their job, as Zuora "
        "ignores them (error 90018); repeatable",
    )
    tenant.add_argument(
        "--max-query-rows",
        type=int,
        default=None,
        help="a batch with more records ends 'aborted' as if it ran past Zuora's 3 hours (default: no limit)",
    )
    parser.add_argument(
        "--idempotency-seconds",
        type=float,
        default=IDEMPOTENCY_SECONDS,
        help=f"how long a submit's Idempotency-Key answer is kept (default {IDEMPOTENCY_SECONDS:g}, 24 h)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Serve until SIGTERM/SIGINT; return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        simulator = AquaSimulator(
            client_id=args.client_id,
            client_secret=args.client_secret,
            job_seconds=args.job_seconds,
            token_seconds=args.token_seconds,
            host=args.host,
            port=args.port,
            errors_as_200=args.errors_as_200,
            seed=args.seed,
            concurrent_job_limit=args.concurrent_job_limit,
            job_limit_answer=args.job_limit_answer,
            queue_seconds=args.queue_seconds,
            file_rows=args.file_rows,
            segment_rows=args.segment_rows,
            max_file_bytes=args.max_file_bytes,
            file_purge_seconds=args.file_purge_seconds,
            file_transport_gzip=args.file_transport_gzip,
            idempotency_seconds=args.idempotency_seconds,
            time_zone=args.time_zone,
            index_delay=args.index_delay,
            max_query_rows=args.max_query_rows,
            clock_skew=args.clock_skew,
            sample_data=args.sample_data,
        )
        simulator.tenant.deny(*args.deny_object)
        # Its own stream: the sample data's would repeat the sample's first Ids.
        rng = random.Random(f"late-commit-{args.seed}")
        for late in args.late_commit:
            row = sample.sample_row(late.table, rng, simulator.tenant.clock.now())
            simulator.tenant.insert(late.table, row, index_delay=late.visible_in, late_by=late.late_by)
    except ValueError as exc:
        parser.error(str(exc))
    for settings in args.fault:
        simulator.add_fault(**settings)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    try:
        simulator.start()
    except OSError as exc:
        parser.exit(1, f"error: cannot listen on {args.host}:{args.port}: {exc}\n")
    print(simulator.base_url, flush=True)
    # A timed wait keeps the main thread responsive to signals on every platform.
    while not stop.wait(0.5):
        pass
    simulator.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
