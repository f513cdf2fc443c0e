#!/usr/bin/env python3
"""A shipping service for workflowd: the worker of PaymentProcessed, whose step is fulfilment.

    python3 clients/python/examples/shipping_service.py --socket PATH [--failure-rate 0.05]
        [--latency-ms 50] [--max-in-flight 8] [--seed N] [--lease-ms N]

The server must run with PaymentProcessed external (WORKFLOWD_EXTERNAL_STEPS=...,PaymentProcessed).
Each task is one paid order to ship. A share of the orders (--failure-rate), chosen by a hash of
(seed, order id), ends in FulfillmentFailed with the reason "fulfillment failed"; the others go
to OrderFulfilled with the order plus a `tracking_id` ("trk_" and 16 hex digits of a hash of the
task's idempotency key) and `updated_at`. --latency-ms is the time a shipment takes.

Prints one line per task handled. Reconnects by itself when workflowd restarts. SIGTERM or
SIGINT: finishes the task in hand, unworks (the rest is offered again at once), exits 0.
The socket defaults to $WORKFLOWD_SOCKET or .workflowd/workflowd.sock.
"""

import argparse
import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from payment_service import identifier, now_rfc3339, report, unit  # noqa: E402
from workflowd_client import ConnectionFailed, Worker, WorkflowdError  # noqa: E402


def ship(task, failure_rate, latency_ms, seed):
    """The fulfilment step: (next status, object or None, reason or None)."""
    order = task["object"]
    time.sleep(latency_ms / 1000.0)
    if unit(seed, "fulfillment", order["id"]) < failure_rate:
        return "FulfillmentFailed", None, "fulfillment failed"
    shipped = dict(order, tracking_id=identifier("trk", task["idempotency_key"]), updated_at=now_rfc3339())
    return "OrderFulfilled", shipped, None


def main(argv=None):
    p = argparse.ArgumentParser(description="workflowd shipping service: the worker of PaymentProcessed")
    p.add_argument("--socket", help="workflowd's socket (default $WORKFLOWD_SOCKET or .workflowd/workflowd.sock)")
    p.add_argument("--failure-rate", type=float, default=0.05, help="share of orders that fail (default 0.05)")
    p.add_argument("--latency-ms", type=int, default=50, help="time one shipment takes (default 50)")
    p.add_argument("--max-in-flight", type=int, default=8, help="tasks held at once (default 8)")
    p.add_argument("--seed", default="0", help="picks which orders fail (default 0)")
    p.add_argument("--lease-ms", type=int, default=None, help="how long each task is ours (server default 30000)")
    args = p.parse_args(argv)
    if not 0 <= args.failure_rate <= 1:
        p.error("--failure-rate must be from 0 to 1")

    try:
        worker = Worker(args.socket, status="PaymentProcessed", max_in_flight=args.max_in_flight,
                        lease_ms=args.lease_ms, reconnect_timeout=None)
    except WorkflowdError as e:
        print("shipping_service: %s" % e, file=sys.stderr)
        return 1
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: worker.stop())
    print("shipping_service: working on PaymentProcessed at %s" % worker.path, file=sys.stderr, flush=True)
    try:
        worker.run(lambda task: ship(task, args.failure_rate, args.latency_ms, args.seed), report(sys.stdout, "tracking_id"))
    except ConnectionFailed as e:
        print("shipping_service: %s" % e, file=sys.stderr)
        return 1
    print("shipping_service: stopped", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
