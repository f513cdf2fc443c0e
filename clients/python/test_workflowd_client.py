"""Tests of workflowd_client against a real workflowd and MariaDB (stdlib unittest only).

    WORKFLOWD_TEST_DSN='root@unix(/path/mysqld.sock)/' python3 -m unittest discover -s clients/python -v

WORKFLOWD_BIN: the workflowd binary (default .build/debug/workflowd in the repository).
WORKFLOWD_TEST_DSN: a DSN ending in "/" (required); fresh databases are appended, created with
`workflowd migrate --create-database`, and dropped at the end (with the mariadb client).

Three servers run: "fast" with zero latencies (runs finish at once), "slow" with a payment
latency of ten minutes, where a valid order stays at OrderValidated (so pause, resume, cancel,
TIMEOUT and INVALID_STATE do not depend on timing), and "ext" with the payment and fulfilment
steps external (WORKFLOWD_EXTERNAL_STEPS=OrderValidated,PaymentProcessed; retries after 100 ms,
paused after 3 failures; payment timeout ten minutes), for workers, callbacks and the example
services. All are stopped with SIGTERM and must exit 0.
"""

import datetime
import hashlib
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
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
        self.env = dict(os.environ, **env)
        self.env.pop("WORKFLOWD_SOCKET", None)
        self.log = open(self.log_path, "wb")
        self._start()

    def _start(self):
        self.proc = subprocess.Popen(
            [self.bin, "serve", "--dsn", self.dsn, "--socket", self.socket, "--data-dir", self.dir,
             "--no-migrate"],
            stdout=self.log, stderr=subprocess.STDOUT, env=self.env)
        wait_for(self._answers_ping, timeout=60, what="the server to answer ping")

    def restart(self):
        """SIGTERM, then the same server again (database, socket); returns the exit status."""
        status = self.stop()
        self.log = open(self.log_path, "ab")
        self._start()
        return status

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
EXT = None
ZERO = {"WORKFLOWD_PAYMENT_LATENCY_MS": "0", "WORKFLOWD_FULFILLMENT_LATENCY_MS": "0",
        "WORKFLOWD_PAYMENT_DECLINE_RATE": "0", "WORKFLOWD_FULFILLMENT_FAILURE_RATE": "0"}
EXTERNAL = dict(ZERO, WORKFLOWD_EXTERNAL_STEPS="OrderValidated,PaymentProcessed", WORKFLOWD_RETRY_BASE_DELAY="100ms",
                WORKFLOWD_RETRY_MAX_ATTEMPTS="3", WORKFLOWD_PAYMENT_TIMEOUT_MS="600000")


def setUpModule():
    global FAST, SLOW, EXT
    FAST = Server("fast", ZERO)
    SLOW = Server("slow", dict(ZERO, WORKFLOWD_PAYMENT_LATENCY_MS="600000"))
    EXT = Server("ext", EXTERNAL)


def tearDownModule():
    problems = []
    for server in (FAST, SLOW, EXT):
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


# --- external steps ---------------------------------------------------------------------------------

EXAMPLES = os.path.join(HERE, "examples")


def pay(task):
    """A test payment step: the order with a payment id made from the idempotency key."""
    return "PaymentProcessed", dict(task["object"], payment_id="pay_" + _digest(task["idempotency_key"])), None


def ship(task):
    return "OrderFulfilled", dict(task["object"], tracking_id="trk_" + _digest(task["idempotency_key"])), None


def _digest(text):
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def parse_time(text):
    return datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ")


class ExternalStepTests(unittest.TestCase):
    """Workers, answers and callbacks on the "ext" server. Every test cancels the runs it left
    unfinished, so the next test's workers see only their own tasks."""

    def setUp(self):
        self.c = Client(EXT.socket, timeout=30)
        self.oids = []
        self.workers = []
        self.threads = []

    def tearDown(self):
        for w, th in self.threads:
            w.stop()
            th.join(10)
            self.assertFalse(th.is_alive(), "a worker thread did not stop")
        for w in self.workers:
            w.close()
        for oid in self.oids:
            try:
                if self.c.get(oid)["run_state"] in ("Initiated", "Running", "Paused"):
                    self.c.cancel(oid, reason="test cleanup")
            except wc.ServerError:
                pass
        self.c.close()

    # helpers

    def submit(self, prefix, **kw):
        oid = unique(prefix)
        self.oids.append(oid)
        self.c.submit(order(oid, **kw))
        return oid

    def waiting(self, prefix, status="OrderValidated"):
        oid = self.submit(prefix)
        run = self.c.await_run(oid, status=[status], timeout_ms=20000)
        self.assertEqual((run["status"], run["run_state"]), (status, "Running"))
        return oid, run

    def worker(self, status="OrderValidated", timeout=20, **kw):
        w = wc.Worker(EXT.socket, status=status, timeout=timeout, **kw)
        self.workers.append(w)
        return w

    def start(self, w, handler, results=None):
        """Runs ``w.run(handler)`` in a thread (stopped in tearDown); outcomes go to ``results``."""
        on_result = None if results is None else (lambda task, result, outcome: results.append((task, result, outcome)))
        th = threading.Thread(target=w.run, args=(handler, on_result), daemon=True)
        th.start()
        self.threads.append((w, th))
        return th

    def external_stats(self, status):
        return next(e for e in self.c.stats()["external"] if e["status"] == status)

    # tests

    def test_hello_marks_external_statuses(self):
        wf = next(w for w in self.c.hello()["workflows"] if w["name"] == "order-processor")
        self.assertEqual({s["name"] for s in wf["statuses"] if s["external"]}, {"OrderValidated", "PaymentProcessed"})
        with self.assertRaises(wc.BadRequest) as cm:
            wc.Worker(EXT.socket, status="OrderCreated")
        self.assertTrue(cm.exception.message.startswith("status:"), cm.exception.message)
        with self.assertRaises(ValueError):
            wc.Worker(EXT.socket)
        with self.c.worker("PaymentProcessed", max_in_flight=2, lease_ms=5000) as w:
            self.assertIsInstance(w, wc.Worker)
            self.assertEqual((w.path, w.status, w.worker), (EXT.socket, "PaymentProcessed", 1))

    def test_workers_take_every_order_to_a_terminal_status(self):
        ok = [self.submit("py-w") for _ in range(5)]
        declined = [self.submit("py-wdecl") for _ in range(2)]
        rejected = self.submit("py-wrej", name="")

        def payment(task):
            if "wdecl" in task["foreign_id"]:
                return "PaymentFailed", None, "payment declined"
            return pay(task)

        paid, shipped = [], []
        self.start(self.worker("OrderValidated", timeout=None, max_in_flight=3), payment, paid)
        self.start(self.worker("PaymentProcessed", timeout=None, max_in_flight=2), ship, shipped)
        for oid in ok:
            run = self.c.await_run(oid, timeout_ms=20000)
            self.assertEqual((run["status"], run["run_state"]), ("OrderCompleted", "Completed"))
            events = self.c.history(oid)
            self.assertEqual([(e["version"], e["status"], e["run_state"]) for e in events], COMPLETED_PATH)
            obj = run["object"]
            self.assertEqual(obj["payment_id"], "pay_" + _digest(run["run_id"] + ":2"))
            self.assertEqual(obj["tracking_id"], "trk_" + _digest(run["run_id"] + ":3"))
            self.assertEqual(obj["total"], Decimal("1359.97"))
            self.assertEqual(str(obj["items"][1]["price"]), "29.99")
        for oid in declined:
            run = self.c.await_run(oid, timeout_ms=20000)
            self.assertEqual((run["status"], run["reason"]), ("PaymentFailed", "payment declined"))
            self.assertIsNone(run["object"]["payment_id"])
        self.assertEqual(self.c.await_run(rejected, timeout_ms=20000)["status"], "OrderRejected")
        # One answer per task, each applied: the outcome is the run at the status handed in.
        self.assertEqual(sorted(t["foreign_id"] for t, _, _ in paid), sorted(ok + declined))
        self.assertEqual(sorted(t["foreign_id"] for t, _, _ in shipped), sorted(ok))
        for task, result, outcome in paid + shipped:
            self.assertEqual(outcome["status"], result[0])
            self.assertEqual(outcome["run_id"], task["run_id"])
            self.assertEqual(task["attempt"], 1)
            self.assertEqual(task["idempotency_key"], "%s:%d" % (task["run_id"], task["version"]))
            self.assertIsInstance(task["object"]["total"], Decimal)

    def test_fail_retries_then_pauses_at_the_limit(self):
        oid, run = self.waiting("py-fail")
        w = self.worker()
        t1 = next(w)
        self.assertEqual((t1["foreign_id"], t1["attempt"]), (oid, 1))
        r1 = w.fail(t1, "gateway down")
        self.assertEqual(set(r1), {"retry_at"})
        now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
        self.assertLess(abs((parse_time(r1["retry_at"]) - now).total_seconds()), 5)  # a 100 ms back-off
        t2 = next(w)  # offered again after the back-off (100 ms), attempt 2, same step
        self.assertEqual((t2["attempt"], t2["idempotency_key"], t2["version"]), (2, t1["idempotency_key"], t1["version"]))
        self.assertNotEqual(t2["task"], t1["task"])
        self.assertIn("retry_at", w.fail(t2, "gateway down"))
        t3 = next(w)
        self.assertEqual(t3["attempt"], 3)
        r3 = w.fail(t3, "gateway down for good")
        self.assertIs(r3["paused"], True)
        self.assertEqual((r3["run"]["run_state"], r3["run"]["reason"]), ("Paused", "gateway down for good"))
        self.assertEqual(self.c.get(oid)["run_state"], "Paused")
        # Resumed, the step is offered again and a complete finishes it.
        self.c.resume(oid)
        t4 = next(w)
        self.assertEqual((t4["foreign_id"], t4["status"]), (oid, "OrderValidated"))
        self.assertEqual(w.complete(t4, *pay(t4)[:2])["status"], "PaymentProcessed")

    def test_run_fails_a_task_when_the_handler_raises(self):
        oid, _ = self.waiting("py-raise")
        calls = []

        def handler(task):
            calls.append(task["attempt"])
            if task["attempt"] == 1:
                raise RuntimeError("card reader on fire")
            if task["attempt"] == 2:
                return ("OrderCompleted", None, None)  # not a next status of the payment: refused, failed
            return pay(task)

        results = []
        self.start(self.worker(timeout=None), handler, results)
        run = self.c.await_run(oid, status=["PaymentProcessed"], timeout_ms=20000)
        self.assertEqual(run["status"], "PaymentProcessed")
        self.assertEqual(calls, [1, 2, 3])
        wait_for(lambda: len(results) == 3, what="three results")
        (_, r1, o1), (_, r2, o2), (_, r3, o3) = results
        self.assertIsInstance(r1, RuntimeError)
        self.assertIn("retry_at", o1)
        self.assertIsInstance(r2, wc.BadRequest)
        self.assertIn("retry_at", o2)
        self.assertEqual(o3["status"], "PaymentProcessed")

    def test_extend_keeps_the_task(self):
        oid, _ = self.waiting("py-extend")
        w = self.worker(lease_ms=1000)
        t = next(w)
        deadline = w.extend(t, lease_ms=60000)
        self.assertGreater(parse_time(deadline), parse_time(t["deadline"]) + datetime.timedelta(seconds=50))
        # Past the original one-second lease, nobody else is offered it.
        other = self.worker(timeout=1.5)
        with self.assertRaises(socket.timeout):
            next(other)
        self.assertGreater(parse_time(w.extend(t)), parse_time(t["deadline"]))  # default: the worker's lease
        self.assertEqual(w.complete(t, *pay(t)[:2])["status"], "PaymentProcessed")
        with self.assertRaises(wc.Conflict):
            w.extend(t)
        with self.assertRaises(wc.Conflict):
            self.c.extend(t["task"], lease_ms=5000)

    def test_a_new_offer_of_a_task_in_hand_is_not_handed_out_again(self):
        oid, _ = self.waiting("py-reoffer")
        w = self.worker(lease_ms=1000, max_in_flight=2, timeout=0.2)
        t = next(w)
        key = t["idempotency_key"]

        def reoffered():  # the lease ran out and the only worker got the task again
            try:
                extra = next(w)
            except socket.timeout:
                extra = None
            self.assertIsNone(extra, "the step in hand was handed out again")
            current = w._current.get(key)
            return current is not None and current["task"] != t["task"]

        wait_for(reoffered, timeout=20, what="the task to be offered again")
        run = w.complete(t, *pay(t)[:2])  # answered through the newest offer
        self.assertEqual(run["status"], "PaymentProcessed")
        self.assertEqual([e["status"] for e in self.c.history(oid)], ["OrderCreated", "OrderValidated", "PaymentProcessed"])

    def test_callback(self):
        oid, run = self.waiting("py-cb")
        paid = dict(run["object"], payment_id="pay_webhook")
        moved = self.c.callback("OrderValidated", "PaymentProcessed", foreign_id=oid, object=paid)
        self.assertEqual((moved["status"], moved["object"]["payment_id"]), ("PaymentProcessed", "pay_webhook"))
        self.assertEqual(moved["object"]["total"], Decimal("1359.97"))
        with self.assertRaises(wc.Conflict) as cm:  # the webhook, delivered twice
            self.c.callback("OrderValidated", "PaymentProcessed", foreign_id=oid, object=paid)
        e = cm.exception
        self.assertEqual((e.code, e.retryable, e.run["status"]), ("CONFLICT", False, "PaymentProcessed"))
        with self.assertRaises(wc.BadRequest) as cm:
            self.c.callback("PaymentProcessed", "OrderCompleted", foreign_id=oid)
        self.assertTrue(cm.exception.message.startswith("next:"), cm.exception.message)
        with self.assertRaises(wc.BadRequest) as cm:
            self.c.callback("PaymentProcessed", "OrderFulfilled", foreign_id=oid, object=dict(paid, id="someone-else"))
        self.assertTrue(cm.exception.message.startswith("object:"), cm.exception.message)
        with self.assertRaises(wc.NotFound):
            self.c.callback("OrderValidated", "PaymentProcessed", foreign_id="no-such-" + oid)
        with self.assertRaises(ValueError):
            self.c.callback("OrderValidated", "PaymentProcessed")
        done = self.c.callback(3, 4, run_id=run["run_id"], reason="shipped by hand")
        self.assertEqual((done["status"], done["object"]["payment_id"]), ("OrderFulfilled", "pay_webhook"))
        self.assertEqual(self.c.await_run(oid, timeout_ms=20000)["status"], "OrderCompleted")
        self.assertEqual([e["status"] for e in self.c.history(oid)],
                         ["OrderCreated", "OrderValidated", "PaymentProcessed", "OrderFulfilled", "OrderCompleted"])

    def test_unwork_offers_held_tasks_again(self):
        a, _ = self.waiting("py-unwork")
        b, _ = self.waiting("py-unwork")
        w1 = self.worker(max_in_flight=2)
        held = {t["foreign_id"]: t for t in (next(w1), next(w1))}
        self.assertEqual(set(held), {a, b})
        st = self.external_stats("OrderValidated")
        self.assertGreaterEqual((st["held"], st["workers"]), (2, 1))
        w1.close()  # unwork, then close
        self.assertIsNone(w1.connection_socket)
        with self.assertRaises(StopIteration):
            next(w1)
        w2 = self.worker(max_in_flight=2)
        again = {t["foreign_id"]: t for t in (next(w2), next(w2))}
        self.assertEqual(set(again), {a, b})
        for oid in (a, b):
            self.assertEqual(again[oid]["idempotency_key"], held[oid]["idempotency_key"])
            self.assertNotEqual(again[oid]["task"], held[oid]["task"])
            self.assertEqual(w2.complete(again[oid]["task"], "PaymentProcessed")["status"], "PaymentProcessed")
        with self.assertRaises(wc.Conflict):
            self.c.complete(held[a], "PaymentProcessed")
        # unwork on a connection of its own: the worker id is the connection's.
        wid = self.c.request("work", status="PaymentProcessed")["worker"]
        reply = self.c.request("unwork", worker=wid)
        self.assertEqual((reply["ok"], set(reply)), (True, {"id", "ok"}))
        with self.assertRaises(wc.NotFound):
            self.c.request("unwork", worker=wid)

    def test_conflict_and_answer_errors(self):
        oid, _ = self.waiting("py-conflict")
        w = self.worker()
        t = next(w)
        with self.assertRaises(wc.BadRequest) as cm:
            w.complete(t, "OrderCompleted")
        self.assertTrue(cm.exception.message.startswith("status:"), cm.exception.message)
        with self.assertRaises(wc.BadRequest) as cm:
            w.complete(t, "PaymentProcessed", dict(t["object"], id="someone-else"))
        self.assertTrue(cm.exception.message.startswith("object:"), cm.exception.message)
        with self.assertRaises(wc.NotFound):
            self.c.complete("no-such-task", "PaymentProcessed")
        self.c.cancel(oid, reason="customer changed their mind")
        with self.assertRaises(wc.Conflict) as cm:
            w.complete(t, *pay(t)[:2])
        e = cm.exception
        self.assertIsInstance(e, wc.ServerError)
        self.assertEqual((e.code, e.retryable), ("CONFLICT", False))
        self.assertEqual((e.run["run_state"], e.run["reason"]), ("Cancelled", "customer changed their mind"))
        with self.assertRaises(wc.Conflict):
            self.c.fail(t, "too late")

    def test_a_repeated_complete_is_answered_ok(self):
        oid, _ = self.waiting("py-twice")
        w = self.worker()
        t = next(w)
        status, obj, _ = pay(t)
        first = self.c.complete(t, status, obj)
        again = self.c.complete(t["task"], status, obj)
        self.assertEqual(first, again)
        with self.assertRaises(wc.Conflict):  # a different answer to a step already answered
            self.c.complete(t, "PaymentFailed", reason="declined after all")
        self.assertEqual(len(self.c.history(oid)), 3)

    def test_reconnect_when_the_socket_dies_mid_task(self):
        oid, _ = self.waiting("py-cut")
        w = self.worker(timeout=None)
        calls = []

        def handler(task):
            calls.append(task["task"])
            w.connection_socket.close()  # the connection dies while the step is being done
            return pay(task)

        results = []
        self.start(w, handler, results)
        run = self.c.await_run(oid, status=["PaymentProcessed"], timeout_ms=20000)
        self.assertEqual(len(calls), 1)
        self.assertEqual(run["object"]["payment_id"], "pay_" + _digest(run["run_id"] + ":2"))
        wait_for(lambda: results, what="the result")
        self.assertEqual(results[0][2]["status"], "PaymentProcessed")
        self.assertEqual(w.reconnects, 1)
        self.start(self.worker("PaymentProcessed", timeout=None), ship)
        self.assertEqual(self.c.await_run(oid, timeout_ms=20000)["status"], "OrderCompleted")
        self.assertEqual([(e["version"], e["status"], e["run_state"]) for e in self.c.history(oid)], COMPLETED_PATH)
        self.assertEqual(len(calls), 1)

    def test_reconnect_when_the_reply_is_lost(self):
        oid, _ = self.waiting("py-lost")
        w = self.worker()
        t = next(w)
        conn = w._conn
        sent = conn.send_raw

        def send_then_die(data):  # the complete reaches the server; its reply never comes back
            sent(data)
            wait_for(lambda: self.c.get(oid)["status"] == "PaymentProcessed", what="the complete to commit")
            conn.sock.close()

        conn.send_raw = send_then_die
        run = w.complete(t, *pay(t)[:2])  # re-sent on a new connection: answered ok again
        self.assertEqual((run["status"], w.reconnects), ("PaymentProcessed", 1))
        self.assertEqual([e["status"] for e in self.c.history(oid)], ["OrderCreated", "OrderValidated", "PaymentProcessed"])

    def test_reconnect_keeps_a_result_for_the_new_offer(self):
        # The worker's connection dies mid-task; the lease runs out and the task is offered to
        # someone else, who gives it back. The re-sent complete gets CONFLICT (the task was
        # offered again), so the result is kept and answers the next offer, without a second
        # call of the handler.
        oid, _ = self.waiting("py-keep")
        w = self.worker(lease_ms=1000, timeout=None)
        calls = []
        given_back = threading.Event()

        def handler(task):
            calls.append(task["task"])
            if len(calls) == 1:
                w.connection_socket.close()
                given_back.wait(20)
            return pay(task)

        results = []
        self.start(w, handler, results)
        other = Client(EXT.socket, timeout=30)
        try:
            wid = other.request("work", status="OrderValidated")["worker"]
            other._conn.sock.settimeout(20)
            while not other._conn.frames:
                other._conn.frames.append(other._conn.read_message())
            taken = other._conn.frames.pop(0)["task"]
            self.assertEqual(taken["foreign_id"], oid)
            other.request("unwork", worker=wid)
        finally:
            other.close()
            given_back.set()
        run = self.c.await_run(oid, status=["PaymentProcessed"], timeout_ms=20000)
        self.assertEqual(run["object"]["payment_id"], "pay_" + _digest(run["run_id"] + ":2"))
        wait_for(lambda: len(results) == 2, what="two outcomes")
        self.assertEqual(len(calls), 1, "the handler ran once")
        self.assertEqual(w.replayed, 1)
        self.assertIsNone(results[0][2])  # kept
        self.assertEqual(results[1][2]["status"], "PaymentProcessed")  # the kept result, given to the new offer
        self.assertEqual(results[1][0]["idempotency_key"], taken["idempotency_key"])
        self.assertNotEqual(results[1][0]["task"], calls[0])
        self.assertEqual([e["status"] for e in self.c.history(oid)], ["OrderCreated", "OrderValidated", "PaymentProcessed"])

    def test_reconnect_across_a_server_restart(self):
        oid, _ = self.waiting("py-restart")
        w = self.worker(timeout=None)
        restarted = threading.Event()
        calls = []

        def handler(task):  # the server restarts while the step is being done
            calls.append(task["task"])
            restarted.wait(60)
            return pay(task)

        results = []
        self.start(w, handler, results)
        wait_for(lambda: calls, what="the task")
        try:
            self.assertEqual(EXT.restart(), 0, EXT.log_text())
        finally:
            restarted.set()
        self.c.close()
        self.c = Client(EXT.socket, timeout=30)
        run = self.c.await_run(oid, status=["PaymentProcessed"], timeout_ms=20000)
        self.assertEqual(run["object"]["payment_id"], "pay_" + _digest(run["run_id"] + ":2"))
        wait_for(lambda: results, what="the result")
        self.assertEqual(results[0][2]["status"], "PaymentProcessed")
        self.assertEqual((len(calls), w.reconnects), (1, 1))
        self.assertEqual([e["status"] for e in self.c.history(oid)], ["OrderCreated", "OrderValidated", "PaymentProcessed"])

    def test_stop_ends_run_after_the_task_in_hand(self):
        oid, _ = self.waiting("py-stop")
        w = self.worker(timeout=None)
        started = threading.Event()

        def slow(task):
            started.set()
            time.sleep(0.5)
            return pay(task)

        th = self.start(w, slow)
        self.assertTrue(started.wait(20))
        w.stop()
        th.join(10)
        self.assertFalse(th.is_alive())
        self.assertEqual(self.c.get(oid)["status"], "PaymentProcessed")  # answered before it stopped
        self.assertIsNone(w.connection_socket)


class ExampleServiceTests(unittest.TestCase):
    """The example services as processes on the "ext" server."""

    def setUp(self):
        self.c = Client(EXT.socket, timeout=30)
        self.procs = []
        self.oids = []

    def tearDown(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()
            for f in (p.stdout, p.stderr):
                if f:
                    f.close()
        for oid in self.oids:
            try:
                if self.c.get(oid)["run_state"] in ("Initiated", "Running", "Paused"):
                    self.c.cancel(oid, reason="test cleanup")
            except wc.ServerError:
                pass
        self.c.close()

    def service(self, name, *args, env=None):
        p = subprocess.Popen([sys.executable, os.path.join(EXAMPLES, name), "--socket", EXT.socket] + list(args),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        self.procs.append(p)
        line = p.stderr.readline().decode()
        if "working on" not in line:
            p.kill()
            self.fail("%s did not start: %s" % (name, line + p.communicate(timeout=20)[1].decode()))
        return p

    def stop(self, p):
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=20)
        self.assertEqual(p.returncode, 0, err.decode())
        return out.decode()

    def test_payment_and_shipping_services_finish_ten_orders(self):
        sys.path.insert(0, EXAMPLES)
        import payment_service
        seed, decline, failure = "7", Decimal("0.3"), Decimal("0.3")
        pay_p = self.service("payment_service.py", "--decline-rate", str(decline), "--latency-ms", "5", "--seed", seed)
        ship_p = self.service("shipping_service.py", "--failure-rate", str(failure), "--latency-ms", "5",
                              "--max-in-flight", "3", "--seed", seed)
        prefix = unique("py-svc")
        ids = ["%s-%d" % (prefix, i) for i in range(10)]
        self.oids += ids
        items = [{"product_id": "P-1", "name": "Pen", "quantity": 3, "price": Decimal("0.10")},
                 {"product_id": "B-2", "name": "Book", "quantity": 1, "price": Decimal("1299.99")}]
        for oid in ids:
            self.c.submit(order(oid, items=items))
        expected = {}
        for oid in ids:
            if payment_service.unit(seed, "payment", oid) < float(decline):
                expected[oid] = "PaymentFailed"
            elif payment_service.unit(seed, "fulfillment", oid) < float(failure):
                expected[oid] = "FulfillmentFailed"
            else:
                expected[oid] = "OrderCompleted"
        final = {oid: self.c.await_run(oid, timeout_ms=30000) for oid in ids}
        self.assertEqual({oid: r["status"] for oid, r in final.items()}, expected)
        for oid, run in final.items():
            obj = run["object"]
            self.assertEqual(obj["total"], Decimal("1300.29"))
            self.assertEqual(str(obj["items"][0]["price"]), "0.1")
            if expected[oid] == "PaymentFailed":
                self.assertEqual(run["reason"], "payment declined")
                continue
            self.assertEqual(obj["payment_id"], "pay_" + _digest(run["run_id"] + ":2"))
            self.assertRegex(obj["updated_at"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
            if expected[oid] == "FulfillmentFailed":
                self.assertEqual(run["reason"], "fulfillment failed")
            else:
                self.assertEqual(obj["tracking_id"], "trk_" + _digest(run["run_id"] + ":3"))
        pay_out = self.stop(pay_p)
        ship_out = self.stop(ship_p)
        pay_lines = [l for l in pay_out.splitlines() if l.startswith(prefix)]
        ship_lines = [l for l in ship_out.splitlines() if l.startswith(prefix)]
        self.assertEqual(len(pay_lines), 10, pay_out)
        self.assertEqual(len(ship_lines), sum(1 for s in expected.values() if s != "PaymentFailed"), ship_out)
        self.assertTrue(any("-> PaymentProcessed pay_" in l for l in pay_lines), pay_out)

    def test_sigterm_exits_0_idle_and_after_the_task_in_hand(self):
        idle = self.service("shipping_service.py")
        self.assertEqual(self.stop(idle), "")
        busy = self.service("payment_service.py", "--latency-ms", "1500", "--decline-rate", "0")
        oid = unique("py-svc-term")
        self.oids.append(oid)
        self.c.submit(order(oid))
        wait_for(lambda: next(e for e in self.c.stats()["external"] if e["status"] == "OrderValidated")["held"] >= 1,
                 what="the service to hold the task")
        out = self.stop(busy)  # while charging: it finishes, answers, then exits
        self.assertIn(oid + " OrderValidated attempt 1 -> PaymentProcessed pay_", out)
        self.assertEqual(self.c.get(oid)["status"], "PaymentProcessed")

    def test_readme_worker_example(self):
        with open(os.path.join(EXAMPLES, "README.md")) as f:
            code = re.search(r"```python\n(.*?)```", f.read(), re.S).group(1)
        self.assertLessEqual(len(code.strip().splitlines()), 10)
        env = dict(os.environ, WORKFLOWD_SOCKET=EXT.socket, PYTHONPATH=HERE)
        p = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.procs.append(p)
        oid = unique("py-readme")
        self.oids.append(oid)
        self.c.submit(order(oid))
        run = self.c.await_run(oid, status=["PaymentProcessed"], timeout_ms=20000)
        self.assertEqual(run["object"]["payment_id"], "pay_" + _digest(run["run_id"] + ":2"))
        p.send_signal(signal.SIGINT)  # KeyboardInterrupt: run() unworks and closes on the way out
        p.communicate(timeout=20)


if __name__ == "__main__":
    unittest.main()
