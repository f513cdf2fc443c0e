#!/usr/bin/env python3
"""A payment service for workflowd: the worker of OrderValidated, whose step is the payment.

    python3 clients/python/examples/payment_service.py --socket PATH [--decline-rate 0.1]
        [--latency-ms 50] [--max-in-flight 8] [--seed N] [--lease-ms N]

The server must run with OrderValidated external (WORKFLOWD_EXTERNAL_STEPS=OrderValidated,...).
Each task is one order to charge. A share of the orders (--decline-rate), chosen by a hash of
(seed, order id) so the same orders are declined every time, ends in PaymentFailed with the
reason "payment declined"; the others go to PaymentProcessed with the order plus a `payment_id`
("pay_" and 16 hex digits of a hash of the task's idempotency key: a retried or re-offered
payment gets the same id, as a real provider's idempotency would give) and `updated_at`.
--latency-ms is the time a charge takes. Tasks are handled one at a time; --max-in-flight lets
that many wait here, ready, so none waits for a round trip.

Prints one line per task handled. Reconnects by itself when workflowd restarts. SIGTERM or
SIGINT: finishes the task in hand, unworks (the rest is offered again at once), exits 0.
The socket defaults to $WORKFLOWD_SOCKET or .workflowd/workflowd.sock.
"""

import argparse
import datetime
import hashlib
import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from workflowd_client import ConnectionFailed, ServerError, Worker, WorkflowdError  # noqa: E402


def unit(seed, purpose, key):
    """A number in [0, 1) that depends only on (seed, purpose, key)."""
    digest = hashlib.sha256(("%s\0%s\0%s" % (seed, purpose, key)).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / float(1 << 64)


def identifier(prefix, idempotency_key):
    return prefix + "_" + hashlib.sha256(idempotency_key.encode("utf-8")).hexdigest()[:16]


def now_rfc3339():
    """The current time as RFC 3339 UTC with milliseconds: 2026-11-25T06:00:00.123Z."""
    now = datetime.datetime.now(datetime.timezone.utc)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + "%03dZ" % (now.microsecond // 1000)


def charge(task, decline_rate, latency_ms, seed):
    """The payment step: (next status, object or None, reason or None)."""
    order = task["object"]
    time.sleep(latency_ms / 1000.0)
    if unit(seed, "payment", order["id"]) < decline_rate:
        return "PaymentFailed", None, "payment declined"
    paid = dict(order, payment_id=identifier("pay", task["idempotency_key"]), updated_at=now_rfc3339())
    return "PaymentProcessed", paid, None


def report(out, field):
    """``on_result`` for ``Worker.run``: one line per task on ``out``, naming the new ``field``."""
    def on_result(task, result, outcome):
        head = "%s %s attempt %s" % (task["foreign_id"], task["status"], task["attempt"])
        if isinstance(outcome, ServerError):
            line = "%s -> %s" % (head, outcome)
        elif isinstance(result, BaseException):
            line = "%s -> failed (%s) %s" % (head, result, "paused" if outcome and outcome.get("paused") else "retry")
        elif outcome is None:
            line = "%s -> %s (kept for the task's next offer)" % (head, result[0])
        else:
            extra = (result[1] or {}).get(field) or result[2] or ""
            line = "%s -> %s %s" % (head, result[0], extra)
        print(line.rstrip(), file=out, flush=True)
    return on_result


def main(argv=None):
    p = argparse.ArgumentParser(description="workflowd payment service: the worker of OrderValidated")
    p.add_argument("--socket", help="workflowd's socket (default $WORKFLOWD_SOCKET or .workflowd/workflowd.sock)")
    p.add_argument("--decline-rate", type=float, default=0.1, help="share of orders declined (default 0.1)")
    p.add_argument("--latency-ms", type=int, default=50, help="time one charge takes (default 50)")
    p.add_argument("--max-in-flight", type=int, default=8, help="tasks held at once (default 8)")
    p.add_argument("--seed", default="0", help="picks which orders are declined (default 0)")
    p.add_argument("--lease-ms", type=int, default=None, help="how long each task is ours (server default 30000)")
    args = p.parse_args(argv)
    if not 0 <= args.decline_rate <= 1:
        p.error("--decline-rate must be from 0 to 1")

    try:
        worker = Worker(args.socket, status="OrderValidated", max_in_flight=args.max_in_flight,
                        lease_ms=args.lease_ms, reconnect_timeout=None)
    except WorkflowdError as e:
        print("payment_service: %s" % e, file=sys.stderr)
        return 1
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: worker.stop())
    print("payment_service: working on OrderValidated at %s" % worker.path, file=sys.stderr, flush=True)
    try:
        worker.run(lambda task: charge(task, args.decline_rate, args.latency_ms, args.seed), report(sys.stdout, "payment_id"))
    except ConnectionFailed as e:
        print("payment_service: %s" % e, file=sys.stderr)
        return 1
    print("payment_service: stopped", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
