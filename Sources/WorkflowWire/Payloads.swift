/// A run as the protocol shows it. Filled by the server from the engine's `Run`.
public struct RunPayload: Sendable, Equatable {
    public var workflow: String
    public var foreignID: String
    public var runID: String
    /// Run-state code (1...7); written as its name.
    public var runState: Int
    public var statusCode: Int
    /// nil when the workflow has no status with this code (written as the code's text).
    public var statusName: String?
    public var version: Int64
    /// The workflow's object as JSON bytes; empty means null.
    public var object: [UInt8]
    public var reason: String?
    public var createdAt: Int64
    public var updatedAt: Int64

    public init(
        workflow: String, foreignID: String, runID: String, runState: Int, statusCode: Int, statusName: String?,
        version: Int64, object: [UInt8], reason: String?, createdAt: Int64, updatedAt: Int64
    ) {
        self.workflow = workflow
        self.foreignID = foreignID
        self.runID = runID
        self.runState = runState
        self.statusCode = statusCode
        self.statusName = statusName
        self.version = version
        self.object = object
        self.reason = reason
        self.createdAt = createdAt
        self.updatedAt = updatedAt
    }

    /// `{"workflow","foreign_id","run_id","run_state","status","status_code","version","object",
    /// "reason","created_at","updated_at"}`
    public func write(to w: inout JSONWriter) {
        w.beginObject()
        w.key("workflow"); w.string(workflow)
        w.key("foreign_id"); w.string(foreignID)
        w.key("run_id"); w.string(runID)
        w.key("run_state"); w.string(RunStateName.name(code: runState) ?? String(runState))
        w.key("status"); w.string(statusName ?? String(statusCode))
        w.key("status_code"); w.int(statusCode)
        w.key("version"); w.int(version)
        w.key("object"); writeObject(object, to: &w)
        w.key("reason"); w.string(reason)
        w.key("created_at"); writeTime(createdAt, to: &w)
        w.key("updated_at"); writeTime(updatedAt, to: &w)
        w.endObject()
    }

    public var json: [UInt8] {
        var w = JSONWriter(capacity: 256 + object.count)
        write(to: &w)
        return w.bytes
    }
}

/// An event as the protocol shows it.
public struct EventPayload: Sendable, Equatable {
    public var seq: Int64
    public var workflow: String
    public var foreignID: String
    public var runID: String
    public var statusCode: Int
    public var statusName: String?
    public var runState: Int
    public var version: Int64
    public var at: Int64
    public var reason: String?

    public init(
        seq: Int64, workflow: String, foreignID: String, runID: String, statusCode: Int, statusName: String?,
        runState: Int, version: Int64, at: Int64, reason: String?
    ) {
        self.seq = seq
        self.workflow = workflow
        self.foreignID = foreignID
        self.runID = runID
        self.statusCode = statusCode
        self.statusName = statusName
        self.runState = runState
        self.version = version
        self.at = at
        self.reason = reason
    }

    /// `{"seq","workflow","foreign_id","run_id","status","status_code","run_state","version","at","reason"}`
    public func write(to w: inout JSONWriter) {
        w.beginObject()
        w.key("seq"); w.int(seq)
        w.key("workflow"); w.string(workflow)
        w.key("foreign_id"); w.string(foreignID)
        w.key("run_id"); w.string(runID)
        w.key("status"); w.string(statusName ?? String(statusCode))
        w.key("status_code"); w.int(statusCode)
        w.key("run_state"); w.string(RunStateName.name(code: runState) ?? String(runState))
        w.key("version"); w.int(version)
        w.key("at"); writeTime(at, to: &w)
        w.key("reason"); w.string(reason)
        w.endObject()
    }

    /// The event's JSON, encoded once and shared by every frame that carries it.
    public var json: [UInt8] {
        var w = JSONWriter(capacity: 256)
        write(to: &w)
        return w.bytes
    }
}

/// A task as a worker sees it: `{"task","workflow","run_id","foreign_id","status","status_code",
/// "version","attempt","object","idempotency_key","deadline"}`.
public struct TaskPayload: Sendable, Equatable {
    public var task: String
    public var workflow: String
    public var runID: String
    public var foreignID: String
    public var statusCode: Int
    public var statusName: String?
    public var version: Int64
    public var attempt: Int
    public var object: [UInt8]
    public var idempotencyKey: String
    public var deadline: Int64

    public init(
        task: String, workflow: String, runID: String, foreignID: String, statusCode: Int, statusName: String?,
        version: Int64, attempt: Int, object: [UInt8], idempotencyKey: String, deadline: Int64
    ) {
        self.task = task
        self.workflow = workflow
        self.runID = runID
        self.foreignID = foreignID
        self.statusCode = statusCode
        self.statusName = statusName
        self.version = version
        self.attempt = attempt
        self.object = object
        self.idempotencyKey = idempotencyKey
        self.deadline = deadline
    }

    public func write(to w: inout JSONWriter) {
        w.beginObject()
        w.key("task"); w.string(task)
        w.key("workflow"); w.string(workflow)
        w.key("run_id"); w.string(runID)
        w.key("foreign_id"); w.string(foreignID)
        w.key("status"); w.string(statusName ?? String(statusCode))
        w.key("status_code"); w.int(statusCode)
        w.key("version"); w.int(version)
        w.key("attempt"); w.int(attempt)
        w.key("object"); writeObject(object, to: &w)
        w.key("idempotency_key"); w.string(idempotencyKey)
        w.key("deadline"); writeTime(deadline, to: &w)
        w.endObject()
    }

    /// The pushed frame `{"worker":W,"task":{...}}\n`.
    public func frame(worker: Int64) -> [UInt8] {
        var w = JSONWriter(capacity: 320 + object.count)
        w.beginObject()
        w.key("worker"); w.int(worker)
        w.key("task"); write(to: &w)
        w.endObject()
        w.bytes.append(0x0A)
        return w.bytes
    }
}

/// `hello`'s reply.
public struct HelloInfo: Sendable, Equatable {
    public struct Status: Sendable, Equatable {
        public var name: String
        public var code: Int
        public var terminal: Bool
        /// Its step is done by a worker or a callback (`work`, `callback`).
        public var external: Bool
        public init(name: String, code: Int, terminal: Bool, external: Bool = false) {
            self.name = name
            self.code = code
            self.terminal = terminal
            self.external = external
        }
    }
    public struct Workflow: Sendable, Equatable {
        public var name: String
        public var statuses: [Status]
        public init(name: String, statuses: [Status]) {
            self.name = name
            self.statuses = statuses
        }
    }

    public static let protocolVersion = 1
    public var server: String
    public var version: String
    public var maxLine: Int
    public var workflows: [Workflow]

    public init(server: String, version: String, maxLine: Int, workflows: [Workflow]) {
        self.server = server
        self.version = version
        self.maxLine = maxLine
        self.workflows = workflows
    }

    /// Members `server, version, proto, max_line, workflows`.
    public func writeMembers(to w: inout JSONWriter) {
        w.key("server"); w.string(server)
        w.key("version"); w.string(version)
        w.key("proto"); w.int(Self.protocolVersion)
        w.key("max_line"); w.int(maxLine)
        w.key("workflows")
        w.beginArray()
        for wf in workflows {
            w.beginObject()
            w.key("name"); w.string(wf.name)
            w.key("statuses")
            w.beginArray()
            for s in wf.statuses {
                w.beginObject()
                w.key("name"); w.string(s.name)
                w.key("code"); w.int(s.code)
                w.key("terminal"); w.bool(s.terminal)
                w.key("external"); w.bool(s.external)
                w.endObject()
            }
            w.endArray()
            w.endObject()
        }
        w.endArray()
    }
}

/// `stats`'s reply.
public struct StatsInfo: Sendable, Equatable {
    public struct Count: Sendable, Equatable {
        public var name: String
        public var count: Int
        public init(name: String, count: Int) {
            self.name = name
            self.count = count
        }
    }
    public struct Consumer: Sendable, Equatable {
        public var name: String
        public var cursor: Int64
        public var lag: Int64
        public init(name: String, cursor: Int64, lag: Int64) {
            self.name = name
            self.cursor = cursor
            self.lag = lag
        }
    }

    /// workflow → counts by status name, in code order.
    public var byStatus: [(workflow: String, counts: [Count])]
    /// workflow → counts by run-state name, in code order.
    public var byRunState: [(workflow: String, counts: [Count])]
    public var outboxPending: Int
    /// Age of the oldest outbox row in milliseconds; nil when the outbox is empty.
    public var outboxOldestAgeMilliseconds: Int64?
    public var head: Int64
    public var consumers: [Consumer]
    public var connections: Int
    public var subscriptions: Int
    public var uptimeMilliseconds: Int64
    /// Per external status: runs waiting, tasks held, workers connected (to this instance).
    public var external: [External]

    public struct External: Sendable, Equatable {
        public var workflow: String
        public var status: String
        public var waiting: Int
        public var held: Int
        public var scheduled: Int
        public var oldestWaitingMilliseconds: Int64?
        public var workers: Int
        public init(
            workflow: String, status: String, waiting: Int, held: Int, scheduled: Int, oldestWaitingMilliseconds: Int64?,
            workers: Int
        ) {
            self.workflow = workflow
            self.status = status
            self.waiting = waiting
            self.held = held
            self.scheduled = scheduled
            self.oldestWaitingMilliseconds = oldestWaitingMilliseconds
            self.workers = workers
        }
    }

    public init(
        byStatus: [(workflow: String, counts: [Count])], byRunState: [(workflow: String, counts: [Count])],
        outboxPending: Int, outboxOldestAgeMilliseconds: Int64?, head: Int64, consumers: [Consumer], connections: Int,
        subscriptions: Int, uptimeMilliseconds: Int64, external: [External] = []
    ) {
        self.byStatus = byStatus
        self.byRunState = byRunState
        self.outboxPending = outboxPending
        self.outboxOldestAgeMilliseconds = outboxOldestAgeMilliseconds
        self.head = head
        self.consumers = consumers
        self.connections = connections
        self.subscriptions = subscriptions
        self.uptimeMilliseconds = uptimeMilliseconds
        self.external = external
    }

    public static func == (a: StatsInfo, b: StatsInfo) -> Bool {
        var wa = JSONWriter(), wb = JSONWriter()
        wa.beginObject(); a.writeMembers(to: &wa); wa.endObject()
        wb.beginObject(); b.writeMembers(to: &wb); wb.endObject()
        return wa.bytes == wb.bytes
    }

    /// Members `statuses: {workflow: {status: n}}, run_states: {workflow: {state: n}},
    /// outbox: {pending, oldest_age_ms}, head, consumers: [{name, cursor, lag}], connections,
    /// subscriptions, uptime_ms, external: [{workflow, status, waiting, held, scheduled,
    /// oldest_waiting_ms, workers}]`.
    public func writeMembers(to w: inout JSONWriter) {
        func counts(_ key: String, _ groups: [(workflow: String, counts: [Count])]) {
            w.key(key)
            w.beginObject()
            for g in groups {
                w.key(g.workflow)
                w.beginObject()
                for c in g.counts {
                    w.key(c.name)
                    w.int(c.count)
                }
                w.endObject()
            }
            w.endObject()
        }
        counts("statuses", byStatus)
        counts("run_states", byRunState)
        w.key("outbox")
        w.beginObject()
        w.key("pending"); w.int(outboxPending)
        w.key("oldest_age_ms")
        if let age = outboxOldestAgeMilliseconds { w.int(age) } else { w.null() }
        w.endObject()
        w.key("head"); w.int(head)
        w.key("consumers")
        w.beginArray()
        for c in consumers {
            w.beginObject()
            w.key("name"); w.string(c.name)
            w.key("cursor"); w.int(c.cursor)
            w.key("lag"); w.int(c.lag)
            w.endObject()
        }
        w.endArray()
        w.key("connections"); w.int(connections)
        w.key("subscriptions"); w.int(subscriptions)
        w.key("uptime_ms"); w.int(uptimeMilliseconds)
        w.key("external")
        w.beginArray()
        for e in external {
            w.beginObject()
            w.key("workflow"); w.string(e.workflow)
            w.key("status"); w.string(e.status)
            w.key("waiting"); w.int(e.waiting)
            w.key("held"); w.int(e.held)
            w.key("scheduled"); w.int(e.scheduled)
            w.key("oldest_waiting_ms")
            if let ms = e.oldestWaitingMilliseconds { w.int(ms) } else { w.null() }
            w.key("workers"); w.int(e.workers)
            w.endObject()
        }
        w.endArray()
    }
}

/// `health`'s reply.
public struct HealthInfo: Sendable, Equatable {
    public struct Check: Sendable, Equatable {
        public var name: String
        public var ok: Bool
        public var detail: String
        public init(name: String, ok: Bool, detail: String) {
            self.name = name
            self.ok = ok
            self.detail = detail
        }
    }
    public var checks: [Check]
    public init(checks: [Check]) { self.checks = checks }
    public var healthy: Bool { checks.allSatisfy(\.ok) }

    /// Members `healthy, checks: {name: {ok, detail}}`.
    public func writeMembers(to w: inout JSONWriter) {
        w.key("healthy"); w.bool(healthy)
        w.key("checks")
        w.beginObject()
        for c in checks {
            w.key(c.name)
            w.beginObject()
            w.key("ok"); w.bool(c.ok)
            w.key("detail"); w.string(c.detail)
            w.endObject()
        }
        w.endObject()
    }
}

/// Writes a stored object. The engine keeps it as bytes; a reply must stay one line of valid
/// JSON, so bytes that are not compact JSON are re-encoded (or, if not JSON at all, sent as a
/// string) instead of being pasted in.
func writeObject(_ bytes: [UInt8], to w: inout JSONWriter) {
    if bytes.isEmpty {
        w.null()
        return
    }
    guard let parsed = try? JSONParser.parse(bytes) else {
        w.string(String(decoding: bytes, as: UTF8.self))
        return
    }
    if bytes.contains(0x0A) || bytes.contains(0x0D) {
        w.value(parsed)
    } else {
        w.raw(bytes)
    }
}

func writeTime(_ ms: Int64, to w: inout JSONWriter) {
    var out: [UInt8] = [UInt8(ascii: "\"")]
    RFC3339.append(milliseconds: ms, to: &out)
    out.append(UInt8(ascii: "\""))
    w.raw(out)
}
