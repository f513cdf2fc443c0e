"""Tests of workflowd_client against a real workflowd and MariaDB (stdlib unittest only).

    WORKFLOWD_TEST_DSN='root@unix(/path/mysqld.sock)/' python3 -m unittest discover -s clients/python -v

WORKFLOWD_BIN: the workflowd binary (default .build/debug/workflowd in the repository).
WORKFLOWD_TEST_DSN: a DSN ending in "/" (required); fresh databases are appended, created with
`workflowd migrate --create-database`, and dropped at the end (with the mariadb client).

Two servers run: "fast" with zero latencies (runs finish at once), and "slow" with a payment
latency of ten minutes, where a valid order stays at OrderValidated (so pause, resume, cancel,
TIMEOUT and INVALID_STATE do not depend on timing). Both are stopped with SIGTERM and must exit 0.
"""

import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest
from decimal import Decimal

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)

import workflowd_client as wc  # noqa: E402
from workflowd_client import Client  # noqa: E402

TERMINAL = {"OrderCompleted", "OrderRejected", "PaymentFailed", "FulfillmentFailed"}
COMPLETED_PATH = [
    (1, "OrderCreated", "Initiated"), (2, "OrderValidated", "Running"), (3, "PaymentProcessed", "Running"),
    (4, "OrderFulfilled", "Running"), (5, "OrderCompleted", "Completed"),
]


def wait_for(condition, timeout=30.0, what="condition"):
    """Polls `condition` until it returns a truthy value; fails after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for %s" % what)
        time.sleep(0.02)


def order(order_id, name="Ann Example", email="ann@example.com", items=None, total=None):
    items = items or [{"product_id": "LAPTOP-001", "name": "Laptop", "quantity": 1, "price": Decimal("1299.99")},
                      {"product_id": "MOUSE-001", "name": "Wireless Mouse", "quantity": 2, "price": Decimal("29.99")}]
    if total is None:
        total = sum((i["price"] * i["quantity"] for i in items), Decimal(0))
    return {"id": order_id, "customer_name": name, "email": email, "items": items, "total": total}


class Server:
    """One workflowd process with its own database and socket."""

    def __init__(self, name, env):
        self.bin = os.environ.get("WORKFLOWD_BIN") or os.path.join(REPO, ".build", "debug", "workflowd")
        base = os.environ.get("WORKFLOWD_TEST_DSN")
        if not base:
            raise unittest.SkipTest("WORKFLOWD_TEST_DSN is not set")
        if not os.access(self.bin, os.X_OK):
            raise RuntimeError("no workflowd binary at %s (set WORKFLOWD_BIN)" % self.bin)
        self.dbname = "wf_pytest_%d_%s_%06d" % (os.getpid(), name, random.randrange(10 ** 6))
        path, _, query = base.partition("?")
        self.dsn = path.rstrip("/") + "/" + self.dbname + ("?" + query if query else "")
        m = re.search(r"unix\(([^)]*)\)", base)
        self.mysqld_socket = m.group(1) if m else None
        self.dir = tempfile.mkdtemp(prefix="wfpy")
        self.socket = os.path.join(self.dir, "wf.sock")
        self.log_path = os.path.join(self.dir, "server.log")
        migrate = subprocess.run([self.bin, "migrate", "--create-database", "--dsn", self.dsn],
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120)
        if migrate.returncode != 0:
            raise RuntimeError("migrate failed: %s" % migrate.stdout.decode(errors="replace"))
        full_env = dict(os.environ, **env)
        full_env.pop("WORKFLOWD_SOCKET", None)
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [self.bin, "serve", "--dsn", self.dsn, "--socket", self.socket, "--data-dir", self.dir,
             "--no-migrate"],
            stdout=self.log, stderr=subprocess.STDOUT, env=full_env)
        wait_for(self._answers_ping, timeout=60, what="the server to answer ping")

    def _answers_ping(self):
        if self.proc.poll() is not None:
            raise RuntimeError("workflowd exited with %s:\n%s" % (self.proc.returncode, self.log_text()))
        try:
            with Client(self.socket, timeout=5) as c:
                return c.ping()
        except (wc.ConnectionFailed, wc.Draining, socket.timeout):
            return False

    def log_text(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")[-3000:]

    def stop(self):
        """SIGTERM; returns the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return "killed after 60s"
        finally:
            self.log.close()

    def cleanup(self):
        if self.mysqld_socket and shutil.which("mariadb"):
            subprocess.run(["mariadb", "--no-defaults", "-S", self.mysqld_socket, "-uroot", "-e",
                            "DROP DATABASE IF EXISTS `%s`" % self.dbname],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
        shutil.rmtree(self.dir, ignore_errors=True)


FAST = None
SLOW = None
ZERO = {"WORKFLOWD_PAYMENT_LATENCY_MS": "0", "WORKFLOWD_FULFILLMENT_LATENCY_MS": "0",
        "WORKFLOWD_PAYMENT_DECLINE_RATE": "0", "WORKFLOWD_FULFILLMENT_FAILURE_RATE": "0"}


def setUpModule():
    global FAST, SLOW
    FAST = Server("fast", ZERO)
    SLOW = Server("slow", dict(ZERO, WORKFLOWD_PAYMENT_LATENCY_MS="600000"))


def tearDownModule():
    problems = []
    for server in (FAST, SLOW):
        if server is None:
            continue
        status = server.stop()
        if status != 0:
            problems.append("%s exited with %s on SIGTERM:\n%s" % (server.dbname, status, server.log_text()))
        server.cleanup()
    if problems:
        raise AssertionError("\n".join(problems))


_unique = iter(range(1, 10 ** 9))


def unique(prefix):
    return "%s-%d-%d" % (prefix, os.getpid(), next(_unique))


class FastServerTests(unittest.TestCase):
    def setUp(self):
        self.c = Client(FAST.socket, timeout=30)

    def tearDown(self):
        self.c.close()

    def test_hello_and_ping(self):
        hello = self.c.hello()
        self.assertEqual(hello["proto"], 1)
        self.assertEqual(hello["server"], "workflowd")
        wf = [w for w in hello["workflows"] if w["name"] == "order-processor"]
        self.assertEqual(len(wf), 1)
        self.assertEqual({s["name"] for s in wf[0]["statuses"] if s["terminal"]}, TERMINAL)
        self.assertIs(self.c.ping(), True)
        i = self.c.send("ping")
        self.assertEqual(self.c.result(i), {"id": i, "ok": True})

    def test_submit_await_get_history(self):
        oid = unique("py-order")
        reply = self.c.submit(order(oid))
        self.assertEqual(reply["foreign_id"], oid)
        self.assertEqual(reply["status"], "OrderCreated")
        self.assertIs(reply["created"], True)
        run = self.c.await_run(oid, timeout_ms=30000)
        self.assertEqual(run["status"], "OrderCompleted")
        self.assertEqual(run["run_state"], "Completed")
        self.assertEqual(run["run_id"], reply["run_id"])
        # exact money, both ways
        self.assertEqual(run["object"]["total"], Decimal("1359.97"))
        self.assertIsInstance(run["object"]["total"], Decimal)
        self.assertEqual(str(run["object"]["items"][1]["price"]), "29.99")
        self.assertIsNotNone(run["object"]["payment_id"])
        self.assertEqual(self.c.get(oid), self.c.get(run_id=reply["run_id"]))
        events = self.c.history(oid)
        self.assertEqual([(e["version"], e["status"], e["run_state"]) for e in events], COMPLETED_PATH)
        self.assertEqual(events, self.c.history(run_id=reply["run_id"]))
        self.assertEqual(sorted(e["seq"] for e in events), [e["seq"] for e in events])

    def test_await_status_and_unreachable(self):
        oid = unique("py-rej")
        self.c.submit(order(oid, name=""))
        run = self.c.await_run(oid)
        self.assertEqual(run["status"], "OrderRejected")
        self.assertEqual(self.c.await_run(oid, status=["OrderCreated"])["status"], "OrderRejected")
        self.assertEqual(self.c.await_run(oid, status=1, timeout_ms=0)["foreign_id"], oid)
        with self.assertRaises(wc.Unreachable) as cm:
            self.c.await_run(oid, status=["OrderCompleted", "PaymentProcessed"])
        e = cm.exception
        self.assertEqual((e.code, e.retryable), ("UNREACHABLE", False))
        self.assertEqual(e.run["status"], "OrderRejected")
        self.assertIsInstance(e, wc.ServerError)
        self.assertIsInstance(e, wc.WorkflowdError)

    def test_trigger(self):
        fid = unique("py-trig")
        reply = self.c.trigger("order-processor", fid, order(fid))
        self.assertEqual((reply["foreign_id"], reply["created"]), (fid, True))
        self.assertEqual(self.c.await_run(fid)["status"], "OrderCompleted")
        with self.assertRaises(wc.NotFound):
            self.c.trigger("no-such-workflow", fid, {})

    def test_list_pages_and_list_all(self):
        ids = [unique("py-list") for _ in range(5)]
        for i in ids:
            self.c.submit(order(i))
        for i in ids:
            self.c.await_run(i)
        seen = []
        page = self.c.list(foreign_id=ids, limit=2, order="desc")
        self.assertEqual(len(page["runs"]), 2)
        while True:
            seen += [r["foreign_id"] for r in page["runs"]]
            if page["next_cursor"] is None:
                break
            page = self.c.list(foreign_id=ids, limit=2, order="desc", cursor=page["next_cursor"])
        self.assertEqual(sorted(seen), sorted(ids))
        self.assertEqual(seen, list(reversed([r["foreign_id"] for r in self.c.list_all(foreign_id=ids, limit=2)])))
        done = self.c.list(foreign_id=ids, status=["OrderCompleted"], run_state="Completed", limit=1000)
        self.assertEqual(len(done["runs"]), 5)
        self.assertEqual(self.c.list(foreign_id=ids, status=["OrderRejected"])["runs"], [])

    def test_stats_graph_health(self):
        stats = self.c.stats()
        for key in ("statuses", "run_states", "outbox", "head", "consumers", "connections", "subscriptions",
                    "uptime_ms"):
            self.assertIn(key, stats)
        self.assertGreaterEqual(stats["connections"], 1)
        graph = self.c.graph()
        self.assertTrue(graph.startswith("stateDiagram-v2"), graph)
        self.assertIn("OrderCreated --> OrderValidated", graph)
        self.assertEqual(self.c.graph("order-processor"), graph)
        with self.assertRaises(wc.NotFound):
            self.c.graph("nope")
        health = self.c.health()
        self.assertIs(health["healthy"], True, health)
        self.assertIn("database", health["checks"])

    def test_error_codes(self):
        with self.assertRaises(wc.NotFound) as cm:
            self.c.get("no-such-order")
        self.assertEqual((cm.exception.code, cm.exception.retryable), ("NOT_FOUND", False))
        self.assertIn("no-such-order", cm.exception.message)
        with self.assertRaises(wc.BadRequest) as cm:
            self.c.list(limit=0)
        self.assertTrue(cm.exception.message.startswith("limit:"), cm.exception.message)
        with self.assertRaises(wc.BadRequest) as cm:
            self.c.request("get", run_id="x", foreign_id="y")
        self.assertTrue(cm.exception.message.startswith("run_id:"), cm.exception.message)
        with self.assertRaises(wc.UnknownOp) as cm:
            self.c.request("frobnicate")
        self.assertEqual(cm.exception.code, "UNKNOWN_OP")
        with self.assertRaises(wc.NotFound):
            self.c.request("unsubscribe", sub=999)
        oid = unique("py-err")
        self.c.submit(order(oid))
        self.c.await_run(oid)
        with self.assertRaises(wc.BadRequest):
            self.c.await_run(oid, status=["NoSuchStatus"])
        with self.assertRaises(wc.InvalidState) as cm:
            self.c.resume(oid)
        self.assertEqual(cm.exception.code, "INVALID_STATE")
        with self.assertRaises(wc.InvalidState):
            self.c.pause(oid)
        # BAD_JSON has no id to echo; the connection stays usable.
        bad = self.c.send_raw(b'{"op": "ping", oops}')
        self.assertEqual((bad["ok"], bad["error"]["code"]), (False, "BAD_JSON"))
        self.assertNotIn("id", bad)
        self.assertIs(self.c.ping(), True)
        with self.assertRaises(ValueError):
            self.c.get()  # neither foreign_id nor run_id: refused before sending

    def test_connect_error(self):
        with self.assertRaises(wc.ConnectionFailed):
            Client(os.path.join(FAST.dir, "nothing-here.sock"))

    def test_subscription_from_seq_and_filters(self):
        oid = unique("py-sub")
        self.c.submit(order(oid))
        self.c.await_run(oid)
        events = self.c.history(oid)
        with self.c.subscribe(from_="earliest", foreign_id=oid, timeout=20) as sub:
            got = [next(sub) for _ in range(5)]
        self.assertEqual(got, events)
        with self.c.subscribe(from_=events[2]["seq"], foreign_id=oid, timeout=20) as sub:
            got = [next(sub) for _ in range(2)]
        self.assertEqual(got, events[3:])
        with self.c.subscribe(from_="earliest", foreign_id=oid, status=["OrderCompleted"], timeout=20) as sub:
            self.assertEqual(next(sub), events[4])
        with self.c.subscribe(from_="earliest", run_id=events[0]["run_id"], run_state=["Initiated"], timeout=20) as sub:
            self.assertEqual(next(sub), events[0])
        with self.assertRaises(wc.BadRequest):
            self.c.subscribe(status=["Nope"])
        with self.assertRaises(ValueError):
            self.c.subscribe(from_="yesterday")
        # A quiet subscription times out, and can be iterated again afterwards.
        with self.c.subscribe(foreign_id=oid, timeout=0.2) as sub:
            with self.assertRaises(socket.timeout):
                next(sub)

    def test_subscription_resumes_after_reconnect_without_gap_or_duplicate(self):
        prefix = unique("py-resume")
        first = ["%s-a%d" % (prefix, i) for i in range(4)]
        middle = ["%s-m%d" % (prefix, i) for i in range(2)]
        later = ["%s-b%d" % (prefix, i) for i in range(4)]
        sub = self.c.subscribe(from_="now", workflow="order-processor", timeout=30)
        delivered = []

        def take(n):
            for _ in range(n):
                delivered.append(next(sub))

        for oid in first:
            self.c.submit(order(oid))
        take(3)
        # Cut the connection under the iterator mid-stream (more events are on their way). What
        # it had already received is still delivered; then it reconnects and resumes.
        sub.connection_socket.shutdown(socket.SHUT_RDWR)
        for oid in middle:  # events that can only arrive over a new connection
            self.c.submit(order(oid))
        while not any(e["foreign_id"] in middle for e in delivered):
            take(1)
        self.assertEqual(sub.reconnects, 1)
        # Cut again (close the descriptor), and let whole runs happen while nobody is connected.
        sub.connection_socket.close()
        for oid in later:
            self.c.submit(order(oid))
        for oid in first + middle + later:
            self.c.await_run(oid)
        ours = set(first + middle + later)

        def finished():
            done = {e["foreign_id"] for e in delivered if e["status"] in TERMINAL and e["foreign_id"] in ours}
            return done == ours

        while not finished():
            take(1)
        self.assertEqual(sub.reconnects, 2)
        sub.close()

        seqs = [e["seq"] for e in delivered]
        self.assertEqual(seqs, sorted(set(seqs)), "seq order, no duplicates")
        self.assertEqual(sub.last_seq, seqs[-1])
        for oid in first + middle + later:
            mine = [e for e in delivered if e["foreign_id"] == oid]
            self.assertEqual(mine, self.c.history(oid), "events of %s equal its history" % oid)
            self.assertEqual([(e["version"], e["status"], e["run_state"]) for e in mine], COMPLETED_PATH)

    def test_subscription_without_reconnect_raises(self):
        sub = self.c.subscribe(from_="earliest", reconnect=False, timeout=20)
        next(sub)
        sub.connection_socket.shutdown(socket.SHUT_RDWR)
        with self.assertRaises(wc.ConnectionFailed):
            for _ in sub:
                pass
        sub.close()

    def test_example_runs_the_five_sample_orders(self):
        import io
        import example
        out = io.StringIO()
        final = example.main(FAST.socket, timeout=30, out=out)
        self.assertEqual(final, {"order-1001": "OrderCompleted", "order-1002": "OrderCompleted",
                                 "order-1003": "OrderCompleted", "order-1004": "OrderRejected",
                                 "order-1005": "OrderCompleted"}, out.getvalue())
        self.assertIn("customer name", out.getvalue())


class PipeliningTests(unittest.TestCase):
    """Pipelined requests around an await on the fast server (a class of its own, after
    FastServerTests: if the server crashes here, the other tests still tell their story)."""

    def setUp(self):
        self.c = Client(FAST.socket, timeout=30)

    def tearDown(self):
        self.c.close()

    def test_pipelined_requests_and_out_of_order_await(self):
        oid = unique("py-pipe")
        # Submitted first on its own: the server runs pipelined requests concurrently, so an
        # await pipelined right after the submit may not find the run yet.
        self.c.submit(order(oid))
        # One write, so the server reads them together: ordered replies before and after an await.
        ids = self.c.send_many([("ping", {}), ("await", {"foreign_id": oid, "timeout_ms": 30000})]
                               + [("ping", {})] * 50
                               + [("get", {"foreign_id": "missing-" + oid}), ("history", {"foreign_id": oid})])
        # Collect in reverse: the client must keep every reply for its own id.
        replies = {}
        for i in reversed(ids):
            try:
                replies[i] = self.c.result(i)
            except wc.ServerError as e:
                replies[i] = e
        for i in ids:
            if isinstance(replies[i], dict):
                self.assertEqual(replies[i]["id"], i)
        self.assertEqual(replies[ids[0]], {"id": ids[0], "ok": True})
        self.assertEqual(replies[ids[1]]["run"]["status"], "OrderCompleted")
        self.assertIsInstance(replies[ids[-2]], wc.NotFound)
        self.assertTrue(all(replies[i] == {"id": i, "ok": True} for i in ids[2:52]))
        with self.assertRaises(ValueError):
            self.c.result(ids[0])  # already collected
        out = self.c.pipeline([("ping", {}), ("get", {"foreign_id": oid}), ("resume", {"foreign_id": oid}),
                               ("stats", None)])
        self.assertEqual(out[0]["ok"], True)
        self.assertEqual(out[1]["run"]["foreign_id"], oid)
        self.assertIsInstance(out[2], wc.InvalidState)
        self.assertIn("head", out[3])


class SlowServerTests(unittest.TestCase):
    """Valid orders stay at OrderValidated (payment takes ten minutes)."""

    def setUp(self):
        self.c = Client(SLOW.socket, timeout=30)

    def tearDown(self):
        self.c.close()

    def validated(self, prefix):
        oid = unique(prefix)
        self.c.submit(order(oid))
        run = self.c.await_run(oid, status=["OrderValidated"], timeout_ms=30000)
        self.assertEqual((run["status"], run["run_state"]), ("OrderValidated", "Running"))
        return oid, run

    def test_submit_twice_while_unfinished(self):
        oid, run = self.validated("py-twice")
        again = self.c.submit(order(oid))
        self.assertEqual((again["run_id"], again["created"]), (run["run_id"], False))

    def test_await_timeout(self):
        oid, run = self.validated("py-timeout")
        with self.assertRaises(wc.Timeout) as cm:
            self.c.await_run(oid, timeout_ms=150)
        e = cm.exception
        self.assertEqual((e.code, e.retryable), ("TIMEOUT", True))
        self.assertEqual(e.run["status"], "OrderValidated")
        self.assertEqual(e.run["run_id"], run["run_id"])

    def test_pause_resume_cancel_delete_data(self):
        oid, run = self.validated("py-ctl")
        paused = self.c.pause(oid, reason='customer "called"')
        self.assertEqual((paused["run_state"], paused["reason"]), ("Paused", 'customer "called"'))
        with self.assertRaises(wc.InvalidState):
            self.c.pause(oid)
        with self.assertRaises(wc.InvalidState):
            self.c.delete_data(oid)
        resumed = self.c.resume(run_id=run["run_id"])
        self.assertEqual(resumed["run_state"], "Running")
        with self.assertRaises(wc.InvalidState):
            self.c.resume(oid)
        cancelled = self.c.cancel(oid, reason="duplicate")
        self.assertEqual((cancelled["run_state"], cancelled["reason"]), ("Cancelled", "duplicate"))
        with self.assertRaises(wc.InvalidState):
            self.c.cancel(oid)
        with self.assertRaises(wc.Unreachable):
            self.c.await_run(oid, status=["OrderCompleted"])
        deleted = self.c.delete_data(oid, reason="GDPR")
        self.assertIn(deleted["run_state"], ("RequestedDataDeleted", "DataDeleted"))
        final = wait_for(lambda: (lambda r: r if r["run_state"] == "DataDeleted" else None)(self.c.get(oid)),
                         what="DataDeleted")
        self.assertNotEqual(final["object"].get("customer_name"), "Ann Example")
        self.assertNotEqual(final["object"].get("email"), "ann@example.com")
        with self.assertRaises(wc.NotFound):
            self.c.cancel("no-such-" + oid)

        history = wait_for(lambda: (lambda h: h if h and h[-1]["run_state"] == "DataDeleted" else None)(
            self.c.history(oid)), what="history to show DataDeleted")
        self.assertEqual([(e["status"], e["run_state"]) for e in history][:5], [
            ("OrderCreated", "Initiated"), ("OrderValidated", "Running"), ("OrderValidated", "Paused"),
            ("OrderValidated", "Running"), ("OrderValidated", "Cancelled")])
        self.assertEqual([e["version"] for e in history], list(range(1, len(history) + 1)))

    def test_pipelined_await_answers_after_later_requests(self):
        oid, _ = self.validated("py-pipe-slow")
        ids = self.c.send_many([("ping", {}), ("await", {"foreign_id": oid, "timeout_ms": 3000})]
                               + [("ping", {})] * 5)
        a, pings = ids[1], ids[:1] + ids[2:]
        # The pings are answered while the await is still waiting: their replies come first.
        for p in pings:
            self.assertEqual(self.c.result(p), {"id": p, "ok": True})
        self.assertNotIn(a, self.c._conn.replies, "the await was answered before the pings")
        with self.assertRaises(wc.Timeout):
            self.c.result(a)


if __name__ == "__main__":
    unittest.main()
