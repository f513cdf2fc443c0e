"""A small client for workflowd (protocol version 1): standard library only, Python 3.9+.

    from workflowd_client import Client, NotFound

    with Client() as c:                       # $WORKFLOWD_SOCKET or .workflowd/workflowd.sock
        reply = c.submit({"id": "order-1", "customer_name": "Ann", "email": "ann@example.com",
                          "items": [{"product_id": "P1", "name": "Pen", "quantity": 1,
                                     "price": Decimal("2.50")}],
                          "total": Decimal("2.50")})
        run = c.await_run("order-1", timeout_ms=60000)
        for event in c.subscribe(from_="earliest"):   # reconnects and resumes by itself
            print(event["seq"], event["foreign_id"], event["status"])

``DEFAULT_SOCKET`` is the socket used when neither a path nor ``$WORKFLOWD_SOCKET`` is given.

Numbers are exact: ``loads`` parses numbers with a fraction or exponent as ``decimal.Decimal``,
and ``dumps`` sends ``Decimal`` values as written (``Decimal("1359.97")`` goes out as
``1359.97``); every message goes through them.

Every request carries an integer ``id`` and replies are matched by it, so requests may be
pipelined: ``send()`` several, then ``result()`` them in any order (``await`` replies come out of
order; the client keeps the others until asked). A ``Client`` is not thread-safe: use one per
thread. A ``Subscription`` (``Client.subscribe``) gets its own connection, so it never blocks
requests.

External steps (statuses the server runs with ``--external-steps``) are done by a ``Worker``, on
a connection of its own::

    from workflowd_client import Worker

    def pay(task):                      # run_id, foreign_id, object, idempotency_key, attempt, ...
        order = dict(task["object"], payment_id="pay_" + task["idempotency_key"][-12:])
        return "PaymentProcessed", order, None      # (next status, new object or None, reason)

    with Worker(status="OrderValidated", max_in_flight=8) as worker:
        worker.run(pay)                 # an exception in pay() fails the task: it is retried later

A worker reconnects by itself without losing an answer (see ``Worker``); ``Client.complete``,
``fail``, ``extend`` answer tasks from any connection, and ``Client.callback`` moves a run waiting
in an external status without a task.

Errors from the server raise a ``ServerError`` subclass named after the code: ``BadJSON``,
``BadRequest``, ``UnknownOp``, ``NotFound``, ``InvalidState``, ``Timeout``, ``Unreachable``,
``Conflict``, ``Limit``, ``LineTooLong``, ``Unavailable``, ``Draining``, ``InternalError``
(``INTERNAL``), ``Forbidden``; each carries ``code``, ``message``, ``retryable`` and ``run`` (the
run as it is, for ``Timeout``, ``Unreachable`` and ``Conflict``; else None). Connection problems
raise ``ConnectionFailed``; a line that is not protocol raises ``ProtocolError``. All of them are
``WorkflowdError``s.
"""

import collections
import decimal
import itertools
import json
import math
import os
import select
import socket
import time

__all__ = [
    "DEFAULT_SOCKET", "Client", "Subscription", "Worker", "WorkflowdError", "ConnectionFailed", "ProtocolError",
    "ServerError", "BadJSON", "BadRequest", "UnknownOp", "NotFound", "InvalidState", "Timeout",
    "Unreachable", "Conflict", "Limit", "LineTooLong", "Unavailable", "Draining", "InternalError", "Forbidden",
    "dumps", "loads",
]

DEFAULT_SOCKET = ".workflowd/workflowd.sock"


def default_socket_path():
    """``$WORKFLOWD_SOCKET``, or ``.workflowd/workflowd.sock``."""
    return os.environ.get("WORKFLOWD_SOCKET") or DEFAULT_SOCKET


# --- errors ---------------------------------------------------------------------------------------


class WorkflowdError(Exception):
    """Base of every error this module raises."""


class ConnectionFailed(WorkflowdError):
    """The socket could not be reached, or the connection ended before a reply."""


class ProtocolError(WorkflowdError):
    """The server sent something that is not a protocol line."""


class ServerError(WorkflowdError):
    """A reply with ``ok: false``: ``code``, ``message``, ``retryable``, ``run`` (or None), ``reply``."""

    code = None

    def __init__(self, code, message, retryable, run=None, reply=None):
        super().__init__("%s: %s" % (code, message))
        self.code = code
        self.message = message
        self.retryable = retryable
        self.run = run
        self.reply = reply


class BadJSON(ServerError):
    code = "BAD_JSON"


class BadRequest(ServerError):
    code = "BAD_REQUEST"


class UnknownOp(ServerError):
    code = "UNKNOWN_OP"


class NotFound(ServerError):
    code = "NOT_FOUND"


class InvalidState(ServerError):
    code = "INVALID_STATE"


class Timeout(ServerError):
    """``await`` ran out of time; ``run`` is the run as it is."""

    code = "TIMEOUT"


class Unreachable(ServerError):
    """``await``: the run finished without reaching the status; ``run`` is the run."""

    code = "UNREACHABLE"


class Conflict(ServerError):
    """``complete`` / ``fail`` / ``extend`` / ``callback`` on a run that is no longer where the task
    or callback expected it (another worker answered, an operator paused or cancelled it, a
    timeout fired, the task was offered again); ``run`` is the run as it is now."""

    code = "CONFLICT"


class Limit(ServerError):
    code = "LIMIT"


class LineTooLong(ServerError):
    code = "LINE_TOO_LONG"


class Unavailable(ServerError):
    code = "UNAVAILABLE"


class Draining(ServerError):
    code = "DRAINING"


class InternalError(ServerError):
    code = "INTERNAL"


class Forbidden(ServerError):
    """The server's allow-list does not include this user; the connection is closed."""

    code = "FORBIDDEN"


_ERRORS = {cls.code: cls for cls in (
    BadJSON, BadRequest, UnknownOp, NotFound, InvalidState, Timeout, Unreachable, Conflict, Limit, LineTooLong,
    Unavailable, Draining, InternalError, Forbidden)}


def _server_error(reply):
    error = reply.get("error") or {}
    code = error.get("code", "INTERNAL")
    cls = _ERRORS.get(code, ServerError)
    return cls(code, error.get("message", ""), bool(error.get("retryable", False)), error.get("run"), reply)


# --- JSON with exact numbers -----------------------------------------------------------------------


def loads(text):
    """Parses one JSON text; fractions and exponents become ``Decimal``."""
    return json.loads(text, parse_float=decimal.Decimal)


def dumps(value):
    """Compact JSON for ``value``; ``Decimal`` goes out exactly as written, never via float."""
    out = []
    _write(value, out)
    return "".join(out)


def _write(v, out):
    if v is None:
        out.append("null")
    elif v is True:
        out.append("true")
    elif v is False:
        out.append("false")
    elif isinstance(v, str):
        out.append(json.dumps(v, ensure_ascii=False))
    elif isinstance(v, int):
        out.append(str(int(v)))
    elif isinstance(v, decimal.Decimal):
        if not v.is_finite():
            raise ValueError("not a JSON number: %r" % (v,))
        out.append(str(v))
    elif isinstance(v, float):
        if not math.isfinite(v):
            raise ValueError("not a JSON number: %r" % (v,))
        out.append(repr(v))
    elif isinstance(v, dict):
        out.append("{")
        first = True
        for k, item in v.items():
            if not isinstance(k, str):
                raise TypeError("JSON object keys must be strings, not %r" % (k,))
            if not first:
                out.append(",")
            first = False
            out.append(json.dumps(k, ensure_ascii=False))
            out.append(":")
            _write(item, out)
        out.append("}")
    elif isinstance(v, (list, tuple)):
        out.append("[")
        for i, item in enumerate(v):
            if i:
                out.append(",")
            _write(item, out)
        out.append("]")
    else:
        raise TypeError("cannot send %r as JSON" % (v,))


# --- one connection ---------------------------------------------------------------------------------


class _Connection:
    """A socket with line framing, request ids and a stash of replies and frames read early."""

    def __init__(self, path, timeout):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(path)
        except socket.timeout:
            self.sock.close()
            raise
        except OSError as e:
            self.sock.close()
            raise ConnectionFailed("cannot connect to %s: %s" % (path, e.strerror or e)) from e
        self._buffer = bytearray()
        self._ids = itertools.count(1)
        self.replies = {}        # id -> reply read before it was asked for
        self.frames = []         # pushed frames read while waiting for a reply
        self.pending = set()     # ids sent and not yet answered
        self.closed = False

    def close(self):
        if not self.closed:
            self.closed = True
            self.sock.close()

    def send(self, message):
        """Sends one request (a dict without ``id``); returns the id it was given."""
        return self.send_many([message])[0]

    def send_many(self, messages):
        """Sends requests in one write; returns their ids."""
        ids = [next(self._ids) for _ in messages]
        data = "".join(dumps(dict(m, id=i)) + "\n" for m, i in zip(messages, ids)).encode("utf-8")
        self.send_raw(data)
        self.pending.update(ids)
        return ids

    def send_raw(self, data):
        try:
            self.sock.sendall(data)
        except socket.timeout:
            raise
        except OSError as e:
            raise ConnectionFailed("connection to %s lost: %s" % (self.path, e.strerror or e)) from e

    def read_message(self):
        """The next line from the server, parsed. Raises ConnectionFailed at end of stream."""
        while True:
            message = self.buffered_message()
            if message is not None:
                return message
            self.fill()

    def buffered_message(self):
        """The next whole line already received, parsed; None when there is none yet."""
        while True:
            nl = self._buffer.find(b"\n")
            if nl < 0:
                return None
            line = bytes(self._buffer[:nl]).strip()
            del self._buffer[:nl + 1]
            if not line:
                continue
            try:
                message = loads(line.decode("utf-8"))
            except ValueError as e:
                raise ProtocolError("not a JSON line from the server: %r" % line[:200]) from e
            if not isinstance(message, dict):
                raise ProtocolError("not a JSON object from the server: %r" % line[:200])
            return message

    def fill(self):
        """Reads once from the socket into the buffer (blocking up to the socket's timeout).
        Raises ConnectionFailed at end of stream."""
        try:
            chunk = self.sock.recv(65536)
        except socket.timeout:
            raise
        except (OSError, ValueError) as e:
            raise ConnectionFailed("connection to %s lost: %s" % (self.path, getattr(e, "strerror", None) or e)) from e
        if not chunk:
            raise ConnectionFailed("the server closed the connection")
        self._buffer += chunk

    def result(self, req_id):
        """The reply to ``req_id`` (a dict with ``ok: true``), or raises its ServerError."""
        if req_id not in self.pending and req_id not in self.replies:
            raise ValueError("no request with id %r is waiting for a reply" % (req_id,))
        while req_id not in self.replies:
            message = self.read_message()
            if _is_frame(message):
                self.frames.append(message)
                continue
            rid = message.get("id")
            if rid is None:
                # A line without id answers no request of ours (e.g. LIMIT before closing): it
                # is the connection's fate, so it is this request's too.
                if message.get("ok") is False:
                    raise _server_error(message)
                raise ProtocolError("a reply without id: %r" % (message,))
            self.pending.discard(rid)
            self.replies[rid] = message
        reply = self.replies.pop(req_id)
        if reply.get("ok") is not True:
            raise _server_error(reply)
        return reply

    def request(self, message):
        return self.result(self.send(message))


def _is_frame(message):
    """A pushed frame (an event of a subscription, a task of a worker), not a reply."""
    return "ok" not in message and ("sub" in message or "worker" in message)


def _task_id(task):
    """The task id of a task dict (as a worker receives it), or the id itself."""
    if isinstance(task, dict):
        return task["task"]
    if not isinstance(task, str):
        raise TypeError("a task is a task dict or its id, not %r" % (task,))
    return task


def _arguments(kwargs):
    """Keyword arguments as request fields: None left out, ``from_`` -> ``from``."""
    out = {}
    for k, v in kwargs.items():
        if v is None:
            continue
        out[k[:-1] if k.endswith("_") else k] = v
    return out


def _ref(foreign_id, run_id, workflow):
    if (foreign_id is None) == (run_id is None):
        raise ValueError("give foreign_id or run_id (exactly one)")
    return _arguments({"foreign_id": foreign_id, "run_id": run_id, "workflow": workflow})


# --- client ----------------------------------------------------------------------------------------


class Client:
    """A connection to workflowd for requests and replies.

    ``path``: the socket (default ``$WORKFLOWD_SOCKET`` or ``.workflowd/workflowd.sock``).
    ``timeout``: seconds a socket read or write may block (None: no limit); exceeding it raises
    ``socket.timeout``. ``await_run`` adds its own ``timeout_ms`` to this.
    """

    def __init__(self, path=None, timeout=60.0):
        self.path = path or default_socket_path()
        self.timeout = timeout
        self._conn = _Connection(self.path, timeout)

    def close(self):
        self._conn.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # Pipelining --------------------------------------------------------------------------------

    def send(self, op, **args):
        """Sends a request without waiting; returns its id for ``result()``."""
        return self._conn.send(dict(_arguments(args), op=op))

    def result(self, req_id):
        """Waits for the reply to ``req_id`` and returns it (raises its ServerError if ok:false)."""
        return self._conn.result(req_id)

    def request(self, op, **args):
        """Sends one request and returns its reply dict (``ok``, ``id`` and the results)."""
        return self.result(self.send(op, **args))

    def send_many(self, requests):
        """Sends every ``(op, {args})`` in one write without waiting; returns their ids."""
        return self._conn.send_many([dict(_arguments(args or {}), op=op) for op, args in requests])

    def pipeline(self, requests):
        """Sends every ``(op, {args})`` in one write, then collects the replies in request order.

        Returns a list holding each reply dict, or the ServerError it raised.
        """
        ids = self.send_many(requests)
        out = []
        for req_id in ids:
            try:
                out.append(self.result(req_id))
            except ServerError as e:
                out.append(e)
        return out

    def send_raw(self, line):
        """Sends ``line`` as is (bytes or str; a newline is added if missing) and returns the
        next reply line, parsed. For tests and debugging; only with nothing else pending."""
        if self._conn.pending:
            raise RuntimeError("send_raw with requests pending")
        if isinstance(line, str):
            line = line.encode("utf-8")
        if not line.endswith(b"\n"):
            line += b"\n"
        self._conn.send_raw(line)
        while True:
            message = self._conn.read_message()
            if _is_frame(message):
                self._conn.frames.append(message)
                continue
            return message

    # Operations --------------------------------------------------------------------------------

    def hello(self):
        """``server, version, proto, max_line, workflows``."""
        return self.request("hello")

    def ping(self):
        self.request("ping")
        return True

    def submit(self, order):
        """Starts order-processor for ``order`` (a dict with id, customer_name, email, items,
        total). Returns ``{run_id, foreign_id, status, created}``."""
        return _strip(self.request("submit", order=order))

    def trigger(self, workflow, foreign_id, obj):
        return _strip(self.request("trigger", workflow=workflow, foreign_id=foreign_id, object=obj))

    def get(self, foreign_id=None, run_id=None, workflow=None):
        """The run: by ``run_id``, or the latest run of ``foreign_id``."""
        return self.request("get", **_ref(foreign_id, run_id, workflow))["run"]

    def list(self, workflow=None, status=None, run_state=None, foreign_id=None, created_after=None,
             created_before=None, order=None, limit=None, cursor=None):
        """One page: ``{"runs": [...], "next_cursor": str or None}``."""
        return _strip(self.request(
            "list", workflow=workflow, status=status, run_state=run_state, foreign_id=foreign_id,
            created_after=created_after, created_before=created_before, order=order, limit=limit,
            cursor=cursor))

    def list_all(self, **filters):
        """Every run matching ``filters`` (as for ``list``), page after page."""
        cursor = None
        while True:
            page = self.list(cursor=cursor, **filters)
            for run in page["runs"]:
                yield run
            cursor = page.get("next_cursor")
            if cursor is None:
                return

    def history(self, foreign_id=None, run_id=None, workflow=None):
        """The run's events in seq order."""
        return self.request("history", **_ref(foreign_id, run_id, workflow))["events"]

    def await_run(self, foreign_id=None, run_id=None, workflow=None, status=None, timeout_ms=None):
        """Waits until the run is at, or has passed through, one of ``status`` (default: any
        terminal status); returns the run. Raises ``Timeout`` or ``Unreachable`` (with ``.run``)."""
        args = _ref(foreign_id, run_id, workflow)
        args.update(_arguments({"status": status, "timeout_ms": timeout_ms}))
        req_id = self.send("await", **args)
        old = self._conn.sock.gettimeout()
        if old is not None:
            wait = (timeout_ms if timeout_ms is not None else 30000) / 1000.0
            self._conn.sock.settimeout(old + wait)
        try:
            return self.result(req_id)["run"]
        finally:
            self._conn.sock.settimeout(old)

    def pause(self, foreign_id=None, run_id=None, workflow=None, reason=None):
        return self._control("pause", foreign_id, run_id, workflow, reason)

    def resume(self, foreign_id=None, run_id=None, workflow=None, reason=None):
        return self._control("resume", foreign_id, run_id, workflow, reason)

    def cancel(self, foreign_id=None, run_id=None, workflow=None, reason=None):
        return self._control("cancel", foreign_id, run_id, workflow, reason)

    def delete_data(self, foreign_id=None, run_id=None, workflow=None, reason=None):
        """Erases the personal data of a Completed or Cancelled run."""
        return self._control("delete_data", foreign_id, run_id, workflow, reason)

    def _control(self, op, foreign_id, run_id, workflow, reason):
        args = _ref(foreign_id, run_id, workflow)
        if reason is not None:
            args["reason"] = reason
        return self.request(op, **args)["run"]

    def stats(self):
        return _strip(self.request("stats"))

    def graph(self, workflow=None):
        """The workflow as a Mermaid ``stateDiagram-v2``."""
        return self.request("graph", workflow=workflow)["mermaid"]

    def health(self):
        """``{"healthy": bool, "checks": {...}}``."""
        return _strip(self.request("health"))

    # External steps -----------------------------------------------------------------------------

    def complete(self, task, status, object=None, reason=None):
        """Answers a task (a task dict or its id) with the step's result: the run moves to
        ``status``; ``object`` (optional) replaces the run's object. Returns the run. Raises
        ``Conflict`` when the run has moved on; a repeat of a complete that committed returns the
        run again."""
        return self.request("complete", task=_task_id(task), status=status, object=object, reason=reason)["run"]

    def fail(self, task, error):
        """The task's step failed this time: ``{"retry_at": time}`` (offered again then), or
        ``{"paused": True, "run": run}`` once the retry limit is reached."""
        return _strip(self.request("fail", task=_task_id(task), error=error))

    def extend(self, task, lease_ms=None):
        """Moves a held task's deadline ``lease_ms`` from now (default: its worker's lease);
        returns the new deadline. ``Conflict`` when the task is no longer held under that id."""
        return self.request("extend", task=_task_id(task), lease_ms=lease_ms)["deadline"]

    def callback(self, status, next, foreign_id=None, run_id=None, workflow=None, object=None, reason=None):
        """Moves a run that waits in the external ``status`` to ``next`` (say, from a payment
        provider's webhook), without a task. Returns the run; ``Conflict`` when the run is not
        waiting in ``status``."""
        args = _ref(foreign_id, run_id, workflow)
        args.update(_arguments({"status": status, "next": next, "object": object, "reason": reason}))
        return self.request("callback", **args)["run"]

    def worker(self, status, workflow=None, max_in_flight=1, lease_ms=None, **options):
        """A ``Worker`` for ``status`` on a connection of its own (``options`` as for ``Worker``)."""
        return Worker(self.path, status=status, workflow=workflow, max_in_flight=max_in_flight, lease_ms=lease_ms,
                      **options)

    def subscribe(self, from_="now", workflow=None, foreign_id=None, run_id=None, status=None,
                  run_state=None, reconnect=True, reconnect_timeout=30.0, timeout=None):
        """An iterator over matching events, on a connection of its own; see ``Subscription``."""
        return Subscription(self.path, from_=from_, workflow=workflow, foreign_id=foreign_id, run_id=run_id,
                            status=status, run_state=run_state, reconnect=reconnect,
                            reconnect_timeout=reconnect_timeout, timeout=timeout)


def _strip(reply):
    return {k: v for k, v in reply.items() if k not in ("id", "ok")}


# --- subscriptions -----------------------------------------------------------------------------------


class Subscription:
    """Iterates over events in ``seq`` order, none skipped and none twice, across reconnects.

    ``from_``: ``"now"`` (events after the head at the first subscribe), ``"earliest"``, or a seq.
    When the connection drops (the server restarts, the socket is closed), it connects again and
    subscribes with ``from`` = the last seq it delivered (or the original start when it delivered
    nothing yet), retrying with backoff for up to ``reconnect_timeout`` seconds, then raises
    ``ConnectionFailed``. With ``reconnect=False`` the first drop raises. ``timeout``: seconds to
    wait for the next event before ``socket.timeout`` is raised (None: forever); iterating again
    after that continues where it was.

    ``last_seq`` is the seq of the last event delivered; ``reconnects`` counts reconnects.
    """

    def __init__(self, path=None, from_="now", workflow=None, foreign_id=None, run_id=None, status=None,
                 run_state=None, reconnect=True, reconnect_timeout=30.0, timeout=None):
        if not (from_ in ("now", "earliest") or (isinstance(from_, int) and not isinstance(from_, bool))):
            raise ValueError('from_ must be "now", "earliest" or a seq')
        self.path = path or default_socket_path()
        self.filters = _arguments({"workflow": workflow, "foreign_id": foreign_id, "run_id": run_id,
                                   "status": status, "run_state": run_state})
        self.reconnect = reconnect
        self.reconnect_timeout = reconnect_timeout
        self.timeout = timeout
        self._from = from_
        self.last_seq = from_ if isinstance(from_, int) else None
        self.reconnects = 0
        self.sub = None
        self.head = None
        self._conn = None
        self._closed = False
        self._connect()

    # The connection is reachable for tests that cut it.
    @property
    def connection_socket(self):
        return self._conn.sock if self._conn else None

    def _connect(self):
        start = self.last_seq if self.last_seq is not None else self._from
        conn = _Connection(self.path, self.timeout)
        try:
            reply = conn.request(dict(self.filters, op="subscribe", **{"from": start}))
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        self.sub = reply["sub"]
        self.head = reply["head"]
        if self.last_seq is None and start == "now":
            # "now" means after the head; a reconnect must start there, not at its own "now".
            self.last_seq = self.head

    def _reconnect(self):
        self._drop()
        deadline = time.monotonic() + self.reconnect_timeout
        delay = 0.02
        while True:
            try:
                self._connect()
                self.reconnects += 1
                return
            except (ConnectionFailed, Draining, Unavailable, Limit) as e:
                if time.monotonic() + delay > deadline:
                    raise ConnectionFailed("could not resubscribe within %.1fs: %s" % (self.reconnect_timeout, e)) from e
                time.sleep(delay)
                delay = min(delay * 2, 1.0)

    def _drop(self):
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __iter__(self):
        return self

    def __next__(self):
        while True:
            if self._closed:
                raise StopIteration
            if self._conn is None:
                self._reconnect()
            conn = self._conn
            try:
                if conn.frames:
                    message = conn.frames.pop(0)
                else:
                    message = conn.read_message()
            except ConnectionFailed:
                if self._closed:
                    raise StopIteration
                if not self.reconnect:
                    raise
                self._drop()
                continue
            if "event" in message and message.get("sub") == self.sub:
                event = message["event"]
                seq = event["seq"]
                if self.last_seq is not None and seq <= self.last_seq:
                    continue  # already delivered before a reconnect
                self.last_seq = seq
                return event
            if message.get("ok") is False:
                err = _server_error(message)
                if self.reconnect and err.retryable:
                    self._drop()
                    continue
                raise err

    def close(self):
        """Ends the subscription and closes its connection."""
        self._closed = True
        self._drop()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# --- workers -----------------------------------------------------------------------------------------

_RUNNABLE = ("Initiated", "Running")


def _step_open(version, status, run):
    """Whether ``run`` still waits for the step of (``version``, ``status``): then a CONFLICT only
    means that this offer of the task is no longer the current one."""
    return (version is not None and isinstance(run, dict) and run.get("version") == version
            and run.get("status") == status and run.get("run_state") in _RUNNABLE)


def _step_result(result):
    """A handler's return value as (status, object, reason)."""
    if isinstance(result, str):
        return result, None, None
    if isinstance(result, (tuple, list)) and 1 <= len(result) <= 3 and isinstance(result[0], (str, int)):
        return tuple(result) + (None,) * (3 - len(result))
    raise TypeError("a handler returns (status, object or None, reason or None), not %r" % (result,))


def _error_text(e):
    text = str(e)
    return "%s: %s" % (type(e).__name__, text) if text else type(e).__name__


class _Answer:
    """An answer (``complete`` or ``fail``) not yet acknowledged: the request without its
    ``task``, the task id it was given for, and the step it answers (version, status)."""

    __slots__ = ("request", "task_id", "version", "status")

    def __init__(self, request, task):
        self.request = request
        if isinstance(task, dict):
            self.task_id, self.version, self.status = task["task"], task.get("version"), task.get("status")
        else:
            self.task_id, self.version, self.status = task, None, None


class Worker:
    """A worker of one external status, on a connection of its own: iterate over it for tasks and
    answer each with ``complete`` or ``fail`` (or let ``run(handler)`` do both).

    ``status``: the external status (name or code) whose step this worker does; ``workflow``:
    default ``order-processor``; ``max_in_flight``: how many unanswered tasks the server lets it
    hold at once (those beyond the one in hand wait here, in order); ``lease_ms``: how long each
    offer lasts before the server offers the task again unless answered or extended (server
    default 30000). ``timeout``: seconds ``next()`` waits for a task before ``socket.timeout`` is
    raised (None: forever); iterating again after that continues. ``reply_timeout``: seconds to
    wait for a reply before the connection is taken for lost.

    A task is a dict: ``task`` (its opaque id), ``workflow``, ``run_id``, ``foreign_id``, ``status``,
    ``status_code``, ``version``, ``attempt`` (1, then +1 per ``fail``), ``object`` (numbers as
    ``Decimal``), ``idempotency_key`` (the same for every offer of one step of one run: pass it to
    the outside service) and ``deadline``. Answering methods take the task dict or its id.

    Reconnecting never loses an answer. When the connection drops (the server restarts, the socket
    is closed), the worker connects again with back-off (for up to ``reconnect_timeout`` seconds;
    None: for ever), first re-sends the answers not yet acknowledged (with the newest task id it
    has for their step; a repeated ``complete`` that had committed is answered ok again), then
    sends ``work`` again. Tasks received but not yet handed out are dropped then: the server offers
    them again. If a re-sent ``complete`` gets ``CONFLICT`` because the task was offered again
    meanwhile (the run still waits for that step), the result is kept by ``idempotency_key``
    (the newest 10000) and the next offer of that step that reaches this worker is answered with
    it instead of being handed out, so the handler does not run twice (``replayed`` counts those).
    A new offer of a step whose task is still in hand (a deadline passed, or a reconnect) is not
    handed out again either: the answer goes to the newest offer. With ``reconnect=False`` the
    first drop raises ``ConnectionFailed``.

    Not thread-safe: use a worker from one thread. ``stop()`` alone may be called from another
    thread or a signal handler. ``reconnects`` counts reconnects; ``worker`` is the worker id on
    the current connection.
    """

    KEEP = 10000

    def __init__(self, path=None, status=None, workflow=None, max_in_flight=1, lease_ms=None, reconnect=True,
                 reconnect_timeout=30.0, timeout=None, reply_timeout=60.0):
        if status is None:
            raise ValueError("status is required: the external status this worker works on")
        self.path = path or default_socket_path()
        self.status = status
        self.workflow = workflow
        self.max_in_flight = max_in_flight
        self.lease_ms = lease_ms
        self.reconnect = reconnect
        self.reconnect_timeout = reconnect_timeout
        self.timeout = timeout
        self.reply_timeout = reply_timeout
        self.worker = None
        self.reconnects = 0
        self.replayed = 0
        self._work = dict(_arguments({"workflow": workflow, "status": status, "max_in_flight": max_in_flight,
                                      "lease_ms": lease_ms}), op="work")
        self._conn = None
        self._queue = collections.deque()          # tasks received, not yet handed out
        self._current = {}                         # step key -> newest offer of a step in hand
        self._ids = {}                             # task id -> step key, for tasks handed out
        self._unacked = collections.OrderedDict()  # step key -> _Answer sent (or to send), not acknowledged
        self._settled = {}                         # step key -> outcome of a re-send, for the caller waiting
        self._waiting = None                       # the step key whose answer a caller waits for
        self._kept = collections.OrderedDict()     # step key -> _Answer for the next offer of that step
        self._hook = None
        self._closed = False
        self._stopping = False
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        try:
            self._connect()
        except BaseException:
            self._close_wake()
            raise

    # The connection is reachable for tests that cut it.
    @property
    def connection_socket(self):
        return self._conn.sock if self._conn else None

    # Iteration ---------------------------------------------------------------------------------

    def __iter__(self):
        return self

    def __next__(self):
        """The next task (a dict). Raises StopIteration once stopped or closed."""
        while True:
            if self._closed:
                raise StopIteration
            if self._stopping:
                self.close()
                raise StopIteration
            if self._conn is None:
                if not self.reconnect:
                    raise ConnectionFailed("the connection to %s is lost" % self.path)
                try:
                    self._reconnect()
                except ConnectionFailed:
                    if self._stopping or self._closed:
                        continue
                    raise
                continue
            if self._queue:
                task = self._queue.popleft()
                key = self._key_of(task)
                if key in self._kept:
                    self._replay(key, task)
                    continue
                self._current[key] = task
                self._ids[task["task"]] = key
                return task
            try:
                message = self._next_message()
            except ConnectionFailed:
                self._drop()
                if self._closed or self._stopping:
                    continue
                if not self.reconnect:
                    raise
                continue
            if message is not None:
                self._unsolicited(message)

    # Answers -----------------------------------------------------------------------------------

    def complete(self, task, status, object=None, reason=None):
        """Answers ``task`` with the step's result: the run moves to ``status`` (one of the step's
        next statuses); ``object`` (optional) replaces the run's object. Returns the run, or None
        when the task was offered again during a reconnect and the result is kept for that offer
        (see the class). Raises ``Conflict`` when the run has moved on, ``BadRequest`` for a status
        the step may not go to or an object that is not the run's."""
        request = dict(_arguments({"status": status, "object": object, "reason": reason}), op="complete")
        return self._answer(task, request)

    def fail(self, task, error):
        """The step failed this time (``error``: text, kept as the run's reason if it ends paused).
        Returns ``{"retry_at": time}``, or ``{"paused": True, "run": run}`` at the retry limit, or
        None when the task was offered again during a reconnect (that offer is handed out as a new
        attempt)."""
        return self._answer(task, {"op": "fail", "error": error})

    def extend(self, task, lease_ms=None):
        """Moves the deadline of a task in hand ``lease_ms`` from now (default: the worker's lease);
        returns the new deadline, or None when this worker no longer holds the task (after a
        reconnect: answering it still works as described for the class). Raises ``Conflict`` when
        the run has moved on."""
        key = self._key(task)
        info = task if isinstance(task, dict) else self._current.get(key)
        for _ in range(4):
            if self._closed:
                raise ConnectionFailed("the worker is closed")
            if self._conn is None:
                if not self.reconnect:
                    raise ConnectionFailed("the connection to %s is lost" % self.path)
                self._reconnect()
            current = self._current.get(key)
            task_id = current["task"] if current is not None else _task_id(task)
            try:
                return self._request(dict(_arguments({"task": task_id, "lease_ms": lease_ms}), op="extend"))["deadline"]
            except ConnectionFailed:
                self._drop()
                if not self.reconnect:
                    raise
            except Conflict as e:
                newer = self._current.get(key)
                if newer is not None and newer["task"] != task_id:
                    continue  # a newer offer of the step arrived meanwhile: extend that one
                if info is not None and _step_open(info.get("version"), info.get("status"), e.run):
                    return None
                raise
        return None

    def run(self, handler, on_result=None):
        """Calls ``handler(task)`` for each task, one at a time, and answers it: a return value
        ``("Status", object_or_None, reason_or_None)`` (or just ``"Status"``) completes the task,
        an exception fails it (its text is the error), and so does a result the server refuses as
        BAD_REQUEST. ``on_result(task, result, outcome)``, when given, is called after each answer:
        ``result`` is the handler's tuple or exception, ``outcome`` the run (complete), the fail
        reply, None (kept for a new offer), or the ServerError (e.g. ``Conflict``); it is called
        for tasks answered with a kept result too. Returns after ``stop()``; closes the worker
        when it returns or raises (``ConnectionFailed`` once reconnecting gives up)."""
        self._hook = on_result
        try:
            for task in self:
                try:
                    result = handler(task)
                    status, obj, reason = _step_result(result)
                except Exception as e:
                    result = e
                    outcome = self._fail_quietly(task, _error_text(e))
                else:
                    try:
                        outcome = self.complete(task, status, obj, reason)
                    except BadRequest as e:
                        result = e
                        outcome = self._fail_quietly(task, "complete refused: %s" % e)
                    except ServerError as e:
                        outcome = e
                if on_result is not None:
                    on_result(task, result, outcome)
        finally:
            self._hook = None
            self.close()

    def _fail_quietly(self, task, error):
        try:
            return self.fail(task, error)
        except ServerError as e:
            return e

    # Ending ------------------------------------------------------------------------------------

    def stop(self):
        """Asks the worker to end: the iteration (and ``run``) ends once the task in hand is
        answered, unworking and closing the connection. Safe in a signal handler or another
        thread."""
        self._stopping = True
        try:
            self._wake_w.send(b"\0")
        except OSError:
            pass

    def close(self):
        """Sends ``unwork`` (the tasks it holds unanswered are offered again at once) and closes
        the connection. Answers not yet acknowledged are given up (the server offers their tasks
        again)."""
        if self._closed:
            return
        self._closed = True
        conn = self._conn
        if conn is not None and self.worker is not None and not conn.closed:
            try:
                conn.sock.settimeout(5.0)
                rid = conn.send({"op": "unwork", "worker": self.worker})
                while rid not in conn.replies:
                    message = conn.read_message()
                    if message.get("id") is not None:
                        conn.replies[message["id"]] = message
                    elif "ok" in message:
                        break
            except (WorkflowdError, OSError, ValueError):
                pass
        self._drop()
        self._queue.clear()
        self._close_wake()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # Internals ---------------------------------------------------------------------------------

    @staticmethod
    def _key_of(task):
        return task.get("idempotency_key") or task["task"]

    def _key(self, task):
        if isinstance(task, dict):
            return self._key_of(task)
        task_id = _task_id(task)
        return self._ids.get(task_id, task_id)

    def _connect(self):
        """A new connection: re-sends what is unacknowledged, then ``work``."""
        self._drop()
        self._queue.clear()
        self._conn = _Connection(self.path, self.reply_timeout)
        try:
            for key in list(self._unacked):
                outcome = ("again", None)
                for _ in range(4):
                    outcome = self._exchange(key)
                    if outcome[0] != "again":
                        break
                if outcome[0] == "retry":
                    raise outcome[1]  # retryable: the reconnect loop waits and tries again
                if key == self._waiting and outcome[0] != "again":
                    self._settled[key] = outcome
            self.worker = self._request(dict(self._work))["worker"]
        except BaseException:
            self._drop()
            raise

    def _reconnect(self):
        self._drop()
        give_up = None if self.reconnect_timeout is None else time.monotonic() + self.reconnect_timeout
        delay = 0.05
        while True:
            if self._closed:
                raise ConnectionFailed("the worker is closed")
            try:
                self._connect()
                self.reconnects += 1
                return
            except (ConnectionFailed, socket.timeout) as e:
                error = e
            except ServerError as e:
                if not e.retryable:
                    raise
                error = e
            if self._stopping:
                raise ConnectionFailed("stopped while reconnecting to %s: %s" % (self.path, error))
            if give_up is not None and time.monotonic() + delay > give_up:
                raise ConnectionFailed("could not reconnect to %s within %.1fs: %s"
                                       % (self.path, self.reconnect_timeout, error)) from error
            self._sleep(delay)
            delay = min(delay * 2, 2.0)

    def _drop(self):
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        self.worker = None

    def _close_wake(self):
        for s in (self._wake_r, self._wake_w):
            try:
                s.close()
            except OSError:
                pass

    def _sleep(self, seconds):
        """Sleeps, or less when ``stop()`` is called."""
        try:
            select.select([self._wake_r], [], [], seconds)
        except (OSError, ValueError):
            time.sleep(seconds)

    def _request(self, message):
        reply = self._wait(self._conn.send(message))
        if reply.get("ok") is not True:
            raise _server_error(reply)
        return reply

    def _wait(self, req_id):
        """The reply to ``req_id`` on the current connection; task frames read meanwhile are
        queued. A reply-less error line (the server ending the connection) raises
        ConnectionFailed when retryable, else its ServerError."""
        conn = self._conn
        try:
            conn.sock.settimeout(self.reply_timeout)
        except (OSError, ValueError) as e:
            raise ConnectionFailed("connection to %s lost: %s" % (self.path, e)) from e
        while req_id not in conn.replies:
            try:
                message = conn.read_message()
            except socket.timeout as e:
                raise ConnectionFailed("no reply from %s within %ss" % (self.path, self.reply_timeout)) from e
            if message.get("id") is not None:
                conn.pending.discard(message["id"])
                conn.replies[message["id"]] = message
            elif _is_frame(message):
                self._on_frame(message)
            elif message.get("ok") is False:
                error = _server_error(message)
                self._drop()
                if error.retryable:
                    raise ConnectionFailed("the server ended the connection: %s" % error) from error
                raise error
        conn.pending.discard(req_id)
        return conn.replies.pop(req_id)

    def _next_message(self):
        """The next line from the server; None when woken by ``stop()``. Waits ``timeout``."""
        conn = self._conn
        message = conn.buffered_message()
        if message is not None:
            return message
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        while True:
            if self._stopping:
                return None
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                conn.sock.settimeout(self.reply_timeout)
                ready, _, _ = select.select([conn.sock, self._wake_r], [], [], wait)
            except (OSError, ValueError) as e:
                raise ConnectionFailed("connection to %s lost: %s" % (self.path, e)) from e
            if self._wake_r in ready:
                try:
                    while self._wake_r.recv(64):
                        pass
                except OSError:
                    pass
            if conn.sock in ready:
                conn.fill()
                message = conn.buffered_message()
                if message is not None:
                    return message
            elif not ready:
                raise socket.timeout("no task within %ss" % self.timeout)

    def _unsolicited(self, message):
        """A line read while no reply was awaited."""
        if _is_frame(message):
            self._on_frame(message)
        elif message.get("ok") is False and message.get("id") is None:
            error = _server_error(message)  # the server ends the connection (DRAINING, LIMIT, ...)
            self._drop()
            if not (error.retryable and self.reconnect):
                raise error
        # else: a late reply to a request given up on; nobody waits for it

    def _on_frame(self, message):
        task = message.get("task")
        if message.get("worker") != self.worker or not isinstance(task, dict) or "task" not in task:
            return
        key = self._key_of(task)
        if key in self._current or key in self._unacked:
            # A new offer of a step in hand (its deadline passed, or a reconnect): not handed out
            # again; the answer goes to this newest offer.
            self._current[key] = task
            self._ids[task["task"]] = key
            return
        for i, queued in enumerate(self._queue):
            if self._key_of(queued) == key:
                self._queue[i] = task
                return
        self._queue.append(task)

    def _answer(self, task, request):
        """Sends an answer until it is acknowledged (across reconnects); returns the outcome."""
        if self._closed:
            raise ConnectionFailed("the worker is closed")
        key = self._key(task)
        info = task if isinstance(task, dict) else self._current.get(key, task)
        self._unacked[key] = _Answer(request, info)
        self._unacked.move_to_end(key)
        self._waiting = key
        give_up = None if self.reconnect_timeout is None else time.monotonic() + self.reconnect_timeout
        delay = 0.05
        try:
            while True:
                if key in self._settled:
                    outcome = self._settled.pop(key)
                elif self._conn is None:
                    if not self.reconnect:
                        self._forget(key)
                        raise ConnectionFailed("the connection to %s is lost" % self.path)
                    self._reconnect()
                    continue
                else:
                    try:
                        outcome = self._exchange(key)
                    except ConnectionFailed:
                        self._drop()
                        if not self.reconnect:
                            self._forget(key)
                            raise
                        continue
                kind, value = outcome
                if kind == "again":
                    continue
                if kind == "retry":
                    if isinstance(value, Draining):
                        self._drop()
                    if give_up is not None and time.monotonic() + delay > give_up:
                        self._forget(key)
                        raise value
                    self._sleep(delay)
                    delay = min(delay * 2, 2.0)
                    continue
                if kind == "error":
                    raise value
                return value
        finally:
            self._waiting = None
            self._settled.pop(key, None)

    def _exchange(self, key):
        """Sends the unacknowledged answer of ``key`` once, on the current connection."""
        answer = self._unacked[key]
        current = self._current.get(key)
        task_id = current["task"] if current is not None else answer.task_id
        try:
            reply = self._wait(self._conn.send(dict(answer.request, task=task_id)))
        except ServerError as e:
            return self._settle(key, task_id, None, e)
        return self._settle(key, task_id, reply, None if reply.get("ok") is True else _server_error(reply))

    def _settle(self, key, task_id, reply, error):
        """What a reply means for an answer: ("done", value), ("kept", None), ("again", None),
        ("retry", error) or ("error", error)."""
        answer = self._unacked[key]
        op = answer.request["op"]
        if error is None:
            self._forget(key)
            return ("done", reply.get("run") if op == "complete" else _strip(reply))
        if isinstance(error, Conflict) and _step_open(answer.version, answer.status, error.run):
            # The run still waits for this step: this offer was superseded by a newer one.
            current = self._current.get(key)
            if current is not None and current["task"] != task_id:
                return ("again", None)  # and that one is ours: answer it
            self._forget(key)
            if op == "complete":
                self._kept[key] = answer
                while len(self._kept) > self.KEEP:
                    self._kept.popitem(last=False)
            return ("kept", None)
        if error.retryable:
            return ("retry", error)
        self._forget(key)
        return ("error", error)

    def _forget(self, key):
        self._unacked.pop(key, None)
        self._current.pop(key, None)
        for task_id in [t for t, k in self._ids.items() if k == key]:
            del self._ids[task_id]

    def _replay(self, key, task):
        """Answers a new offer of a step with the result kept for it."""
        answer = self._kept.pop(key)
        self._current[key] = task
        self._ids[task["task"]] = key
        request = answer.request
        result = (request.get("status"), request.get("object"), request.get("reason"))
        self.replayed += 1
        try:
            outcome = self._answer(task, dict(request))
        except ServerError as e:
            outcome = e
        if self._hook is not None:
            self._hook(task, result, outcome)
