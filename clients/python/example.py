#!/usr/bin/env python3
"""Submits the seed's five sample orders and watches them until each reaches a terminal status.

    WORKFLOWD_SOCKET=.workflowd/workflowd.sock python3 clients/python/example.py

The subscription starts before the first submit (from "now"), so no event of these runs can be
missed; it is filtered here by the run ids that submit returned. order-1004 has no customer name
and ends in OrderRejected; the others normally complete (the simulated payment gateway declines
some orders and the fulfilment service fails some, as configured on the server).
"""

import sys
from decimal import Decimal

from workflowd_client import Client, WorkflowdError


def item(product_id, name, quantity, price):
    return {"product_id": product_id, "name": name, "quantity": quantity, "price": Decimal(price)}


SAMPLE_ORDERS = [
    {"id": "order-1001", "customer_name": "Alice Johnson", "email": "alice@example.com",
     "items": [item("LAPTOP-001", "Laptop", 1, "1299.99"), item("MOUSE-001", "Wireless Mouse", 2, "29.99")],
     "total": Decimal("1359.97")},
    {"id": "order-1002", "customer_name": "Bob Smith", "email": "bob@example.com",
     "items": [item("BOOK-042", "Go Programming", 1, "49.99")],
     "total": Decimal("49.99")},
    {"id": "order-1003", "customer_name": "Carol White", "email": "carol@example.com",
     "items": [item("HEADSET-007", "Headphones", 1, "199.99"), item("CABLE-003", "USB-C Cable", 3, "12.50")],
     "total": Decimal("237.49")},
    {"id": "order-1004", "customer_name": "", "email": "dave@example.com",
     "items": [item("PHONE-010", "Smartphone", 1, "799.00")],
     "total": Decimal("799.00")},
    {"id": "order-1005", "customer_name": "Eve Davis", "email": "eve@example.com",
     "items": [item("DESK-100", "Standing Desk", 1, "549.00"), item("LAMP-020", "Desk Lamp", 2, "34.95")],
     "total": Decimal("618.90")},
]


def main(path=None, timeout=120.0, out=sys.stdout):
    """Runs the example; returns {foreign_id: terminal status}."""
    with Client(path) as client:
        hello = client.hello()
        workflow = next(w for w in hello["workflows"] if w["name"] == "order-processor")
        terminal = {s["name"] for s in workflow["statuses"] if s["terminal"]}

        with client.subscribe(from_="now", workflow="order-processor", timeout=timeout) as events:
            runs = {}
            for order in SAMPLE_ORDERS:
                reply = client.submit(order)
                runs[reply["run_id"]] = order["id"]
                print("submitted %-10s run %s%s" % (order["id"], reply["run_id"],
                                                     "" if reply["created"] else " (already running)"), file=out)
            final = {}
            for event in events:
                if event["run_id"] not in runs:
                    continue
                print("  seq %-5s %-10s %-17s %-9s %s" % (event["seq"], event["foreign_id"], event["status"],
                                                         event["run_state"], event["reason"] or ""), file=out)
                if event["status"] in terminal:
                    final[event["foreign_id"]] = event["status"]
                    if len(final) == len(runs):
                        break
            for foreign_id, status in sorted(final.items()):
                print("%-10s %s" % (foreign_id, status), file=out)
            return final


if __name__ == "__main__":
    try:
        main()
    except WorkflowdError as e:
        print("example: %s" % e, file=sys.stderr)
        sys.exit(1)
