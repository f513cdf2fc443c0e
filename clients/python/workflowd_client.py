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

Numbers are exact: numbers with a fraction or exponent arrive as ``decimal.Decimal`` and
``Decimal`` values are sent as written (``Decimal("1359.97")`` goes out as ``1359.97``).

Every request carries an integer ``id`` and replies are matched by it, so requests may be
pipelined: ``send()`` several, then ``result()`` them in any order (``await`` replies come out of
order; the client keeps the others until asked). A ``Client`` is not thread-safe: use one per
thread. A subscription gets its own connection, so it never blocks requests.

Errors from the server raise a ``ServerError`` subclass named after the code (``NotFound``,
``BadRequest``, ``InvalidState``, ``Timeout``, ``Unreachable``, ...) carrying ``code``,
``message``, ``retryable`` and, for ``Timeout``/``Unreachable``, ``run``. Connection problems raise
``ConnectionFailed``.
"""

import decimal
import itertools
import json
import math
import os
import socket
import time

__all__ = [
    "DEFAULT_SOCKET", "Client", "Subscription", "WorkflowdError", "ConnectionFailed", "ProtocolError",
    "ServerError", "BadJSON", "BadRequest", "UnknownOp", "NotFound", "InvalidState", "Timeout",
    "Unreachable", "Limit", "LineTooLong", "Unavailable", "Draining", "InternalError", "Forbidden", "dumps", "loads",
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
    BadJSON, BadRequest, UnknownOp, NotFound, InvalidState, Timeout, Unreachable, Limit, LineTooLong,
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
            nl = self._buffer.find(b"\n")
            if nl >= 0:
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
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                raise
            except OSError as e:
                raise ConnectionFailed("connection to %s lost: %s" % (self.path, e.strerror or e)) from e
            if not chunk:
                raise ConnectionFailed("the server closed the connection")
            self._buffer += chunk

    def result(self, req_id):
        """The reply to ``req_id`` (a dict with ``ok: true``), or raises its ServerError."""
        if req_id not in self.pending and req_id not in self.replies:
            raise ValueError("no request with id %r is waiting for a reply" % (req_id,))
        while req_id not in self.replies:
            message = self.read_message()
            if "sub" in message and "ok" not in message:
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
            if "sub" in message and "ok" not in message:
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
