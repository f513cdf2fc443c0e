import Foundation
import Testing
import WorkflowTestSupport
import WorkflowWire

#if canImport(Glibc)
import Glibc
#endif

/// External steps end to end: real `workflowd` processes on a real MariaDB, workers on the real
/// socket — the test itself (to see every line) and `workflowctl work` processes.
@Suite("External steps", .serialized, .timeLimit(.minutes(5)))
struct ExternalStepsTests {
    /// Payment and fulfilment are external; retries are quick so the back-off can be watched.
    static let env = [
        "WORKFLOWD_EXTERNAL_STEPS": "OrderValidated,PaymentProcessed", "WORKFLOWD_RETRY_BASE_DELAY": "300ms",
        "WORKFLOWD_RETRY_MAX_ATTEMPTS": "3",
    ]
    static let taskFields: Set = [
        "task", "workflow", "run_id", "foreign_id", "status", "status_code", "version", "attempt", "object",
        "idempotency_key", "deadline",
    ]

    /// A connection that is a worker: replies and task frames arrive interleaved; `call` returns
    /// the reply (frames that come first are kept), `nextTask` the next frame.
    final class WorkerConnection {
        let line: LineClient
        private var frames: [JSON] = []
        init(_ server: ServerProcess) throws { line = try server.client() }

        func call(_ request: String, timeout: Double = 30) throws -> JSON {
            try line.send(request)
            let deadline = Date().addingTimeInterval(timeout)
            while true {
                guard let text = try line.readLine(timeout: max(0.01, deadline.timeIntervalSinceNow)) else {
                    throw TestError("connection closed")
                }
                let j = try JSONParser.parse(text)
                if j["worker"] != nil && j["ok"] == nil { frames.append(j) } else { return j }
            }
        }

        /// The next task frame `{"worker": W, "task": {...}}`.
        func nextTask(timeout: Double = 30) throws -> JSON {
            if !frames.isEmpty { return frames.removeFirst() }
            guard let text = try line.readLine(timeout: timeout) else { throw TestError("connection closed") }
            let j = try JSONParser.parse(text)
            guard j["worker"] != nil, j["ok"] == nil else { throw TestError("expected a task frame, got \(text)") }
            return j
        }

        var queued: Int { frames.count }

        /// Ends the connection as a vanished process would (both directions; the descriptor is
        /// closed when the object goes).
        func hangUp() { shutdown(line.fd, Int32(SHUT_RDWR)) }
    }

    static func task(_ frame: JSON) -> (id: String, runID: String, json: JSON) {
        let t = frame["task"] ?? .null
        return (t["task"]?.stringValue ?? "", t["run_id"]?.stringValue ?? "", t)
    }

    static func stats(_ server: ServerProcess) throws -> [String: JSON] {
        var out: [String: JSON] = [:]
        for e in try server.client().call(#"{"op":"stats"}"#)["external"]?.arrayValue ?? [] {
            out[e["status"]?.stringValue ?? ""] = e
        }
        return out
    }

    /// Waits until `stats.external` for `status` shows these counts.
    static func waitForTasks(
        _ server: ServerProcess, _ status: String, waiting: Int? = nil, held: Int? = nil, timeout: Double = 20,
        sourceLocation: SourceLocation = #_sourceLocation
    ) async throws {
        let deadline = Date().addingTimeInterval(timeout)
        var last: JSON = .null
        while Date() < deadline {
            last = try stats(server)[status] ?? .null
            if (waiting.map { last["waiting"]?.int64Value == Int64($0) } ?? true)
                && (held.map { last["held"]?.int64Value == Int64($0) } ?? true)
            {
                return
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        Issue.record("\(status): expected waiting \(waiting.map(String.init) ?? "any"), held \(held.map(String.init) ?? "any"); stats say \(last)", sourceLocation: sourceLocation)
        throw TestError("tasks of \(status) did not settle")
    }

    static func paid(_ task: JSON) -> String {
        guard case .object(var members) = task["object"] ?? .null else { return "null" }
        members.removeAll { $0.key == "payment_id" }
        members.append(.init("payment_id", .string("pay_test")))
        return JSON.object(members).description
    }

    // MARK: - The contract, op by op

    @Test func everyOpAndErrorOfTheContract() async throws {
        try await withServer(env: Self.env) { server, db in
            let c = try server.client()
            // hello marks the external statuses.
            let hello = try c.call(#"{"op":"hello"}"#)
            let statuses = hello["workflows"]?.arrayValue?.first?["statuses"]?.arrayValue ?? []
            #expect(
                statuses.compactMap { $0["external"] == .bool(true) ? $0["name"]?.stringValue : nil } == [
                    "OrderValidated", "PaymentProcessed",
                ])
            #expect(statuses.count == 8 && statuses.allSatisfy { $0["external"]?.boolValue != nil })

            // work: arguments checked, each error naming its field.
            for (line, code, prefix) in [
                (#"{"op":"work"}"#, "BAD_REQUEST", "status: "),
                (#"{"op":"work","status":"OrderCreated"}"#, "BAD_REQUEST", "status: OrderCreated is not an external status"),
                (#"{"op":"work","status":"Nope"}"#, "BAD_REQUEST", "status: "),
                (#"{"op":"work","status":99}"#, "BAD_REQUEST", "status: "),
                (#"{"op":"work","status":["OrderValidated"]}"#, "BAD_REQUEST", "status: "),
                (#"{"op":"work","status":"OrderValidated","workflow":"nope"}"#, "NOT_FOUND", nil),
                (#"{"op":"work","status":"OrderValidated","max_in_flight":0}"#, "BAD_REQUEST", "max_in_flight: "),
                (#"{"op":"work","status":"OrderValidated","max_in_flight":1001}"#, "BAD_REQUEST", "max_in_flight: "),
                (#"{"op":"work","status":"OrderValidated","max_in_flight":"2"}"#, "BAD_REQUEST", "max_in_flight: "),
                (#"{"op":"work","status":"OrderValidated","lease_ms":999}"#, "BAD_REQUEST", "lease_ms: "),
                (#"{"op":"work","status":"OrderValidated","lease_ms":3600001}"#, "BAD_REQUEST", "lease_ms: "),
                (#"{"op":"unwork","worker":7}"#, "NOT_FOUND", nil),
                (#"{"op":"unwork"}"#, "BAD_REQUEST", "worker: "),
            ] {
                expectError(parsed(try c.callLine(line)), code: code, retryable: false, messagePrefix: prefix)
            }

            let payer = try WorkerConnection(server)
            #expect(try payer.call(#"{"op":"work","id":"w","status":"OrderValidated","lease_ms":60000}"#).description == #"{"id":"w","ok":true,"worker":1}"#)
            let shipper = try WorkerConnection(server)
            #expect(try shipper.call(#"{"op":"work","status":3}"#)["worker"] == .number("1"), "ids are per connection")

            let runID = try submitOrder(c, "ext-1")
            let frame = try payer.nextTask()
            #expect(frame.keys == ["worker", "task"] && frame["worker"] == .number("1"))
            let (taskID, taskRun, t) = Self.task(frame)
            #expect(t.keySet == Self.taskFields, "\(t)")
            #expect(taskRun == runID && t["foreign_id"] == .string("ext-1") && t["workflow"] == .string("order-processor"))
            #expect(t["status"] == .string("OrderValidated") && t["status_code"] == .number("2"))
            #expect(t["version"] == .number("2") && t["attempt"] == .number("1"))
            #expect(t["idempotency_key"] == .string("\(runID):2"))
            #expect(isContractTime(t["deadline"]))
            #expect(t["object"]?["total"] == .number("1359.97"), "money exact in the task")

            // complete: arguments and answers checked before anything is stored.
            for (line, code, prefix) in [
                (#"{"op":"complete","status":"PaymentProcessed"}"#, "BAD_REQUEST", "task: "),
                (#"{"op":"complete","task":"\#(taskID)"}"#, "BAD_REQUEST", "status: "),
                (#"{"op":"complete","task":"\#(taskID)","status":"OrderCompleted"}"#, "BAD_REQUEST", "status: the step of OrderValidated may not go to OrderCompleted"),
                (#"{"op":"complete","task":"\#(taskID)","status":"Shipped"}"#, "BAD_REQUEST", "status: "),
                (#"{"op":"complete","task":"\#(taskID)","status":"PaymentProcessed","object":"paid"}"#, "BAD_REQUEST", "object: "),
                (#"{"op":"complete","task":"\#(taskID)","status":"PaymentProcessed","object":{"id":"ext-1","items":"none","total":1}}"#, "BAD_REQUEST", "object: "),
                (#"{"op":"complete","task":"\#(taskID)","status":"PaymentProcessed","object":{"id":"other","items":[],"total":1}}"#, "BAD_REQUEST", "object: "),
                (#"{"op":"complete","task":"\#(taskID)","status":"PaymentProcessed","reason":"\#(String(repeating: "x", count: 9000))"}"#, "BAD_REQUEST", "reason: "),
                (#"{"op":"complete","task":"nope","status":"PaymentProcessed"}"#, "NOT_FOUND", nil),
                (#"{"op":"complete","task":"\#(runID)/2/9","status":"PaymentProcessed"}"#, "NOT_FOUND", nil),
                (#"{"op":"extend","task":"nope"}"#, "NOT_FOUND", nil),
                (#"{"op":"extend","task":"\#(taskID)","lease_ms":10}"#, "BAD_REQUEST", "lease_ms: "),
                (#"{"op":"fail","task":"\#(taskID)"}"#, "BAD_REQUEST", "error: "),
                (#"{"op":"fail","task":"\#(taskID)","error":""}"#, "BAD_REQUEST", "error: "),
            ] {
                expectError(parsed(try c.callLine(line)), code: code, retryable: false, messagePrefix: prefix)
            }
            #expect(try await db.int("SELECT version FROM workflow_records WHERE foreign_id = 'ext-1'") == 2, "nothing stored")

            // extend, then complete with the payment's result: exactly once, repeatable.
            let extended = try c.call(#"{"op":"extend","task":"\#(taskID)","lease_ms":120000}"#)
            #expect(extended.keys == ["ok", "deadline"] && isContractTime(extended["deadline"]))
            let done = try c.call(#"{"op":"complete","id":7,"task":"\#(taskID)","status":"PaymentProcessed","object":\#(Self.paid(t))}"#)
            #expect(done.keys == ["id", "ok", "run"], "\(done)")
            expectRun(done["run"])
            #expect(done["run"]?["status"] == .string("PaymentProcessed") && done["run"]?["version"] == .number("3"))
            #expect(done["run"]?["object"]?["payment_id"] == .string("pay_test"))
            #expect(done["run"]?["object"]?["total"] == .number("1359.97"))
            let again = try c.call(#"{"op":"complete","task":"\#(taskID)","status":"PaymentProcessed","object":\#(Self.paid(t))}"#)
            #expect(again["ok"] == .bool(true) && again["run"]?["run_id"] == .string(runID), "a repeat is ok: \(again)")
            let other = expectError(
                parsed(try c.callLine(#"{"op":"complete","task":"\#(taskID)","status":"PaymentFailed"}"#)), code: "CONFLICT",
                retryable: false, withRun: true)
            #expect(other?["status"] == .string("PaymentProcessed"))
            expectError(
                parsed(try c.callLine(#"{"op":"extend","task":"\#(taskID)"}"#)), code: "CONFLICT", retryable: false, withRun: true)

            // The next step's task goes to the fulfilment worker; a callback answers it instead.
            let shipFrame = try shipper.nextTask()
            let (shipTask, _, st) = Self.task(shipFrame)
            #expect(st["status"] == .string("PaymentProcessed") && st["version"] == .number("3"))
            #expect(st["object"]?["payment_id"] == .string("pay_test"))
            try await Self.waitForTasks(server, "PaymentProcessed", waiting: 0, held: 1)
            for (line, code, prefix, withRun) in [
                (#"{"op":"callback","foreign_id":"ext-1","status":"OrderValidated","next":"PaymentProcessed"}"#, "CONFLICT", nil, true),
                (#"{"op":"callback","foreign_id":"ext-1","status":"OrderCreated","next":"OrderValidated"}"#, "BAD_REQUEST", "status: ", false),
                (#"{"op":"callback","foreign_id":"ext-1","status":"PaymentProcessed","next":"OrderCompleted"}"#, "BAD_REQUEST", "next: ", false),
                (#"{"op":"callback","foreign_id":"ext-1","status":"PaymentProcessed"}"#, "BAD_REQUEST", "next: ", false),
                (#"{"op":"callback","status":"PaymentProcessed","next":"OrderFulfilled"}"#, "BAD_REQUEST", "run_id: ", false),
                (#"{"op":"callback","foreign_id":"nope","status":"PaymentProcessed","next":"OrderFulfilled"}"#, "NOT_FOUND", nil, false),
            ] {
                expectError(parsed(try c.callLine(line)), code: code, retryable: false, withRun: withRun, messagePrefix: prefix)
            }
            let cb = try c.call(#"{"op":"callback","foreign_id":"ext-1","status":"PaymentProcessed","next":"OrderFulfilled","reason":"shipped by hand"}"#)
            #expect(cb["run"]?["status"] == .string("OrderFulfilled") && cb["run"]?["reason"] == .string("shipped by hand"), "\(cb)")
            expectError(
                parsed(try shipper.line.callLine(#"{"op":"complete","task":"\#(shipTask)","status":"OrderFulfilled"}"#)),
                code: "CONFLICT", retryable: false, withRun: true)
            #expect(try awaitFinished(c, "ext-1")["status"] == .string("OrderCompleted"))
            try await db.expectEveryTransitionOnceAndLogGapFree()

            // stats and health describe the external statuses.
            let s = try c.call(#"{"op":"stats"}"#)["external"]?.arrayValue ?? []
            #expect(s.map { $0["status"]?.stringValue ?? "" } == ["OrderValidated", "PaymentProcessed"])
            #expect(s.allSatisfy { $0.keySet == ["workflow", "status", "waiting", "held", "scheduled", "oldest_waiting_ms", "workers"] })
            #expect(s.map { $0["workers"] } == [.number("1"), .number("1")])
            let health = try c.call(#"{"op":"health"}"#)
            #expect(health["checks"]?["external"]?["ok"] == .bool(true), "\(health)")
        }
    }

    @Test func failBacksOffThenPausesWithTheErrorAsItsReason() async throws {
        try await withServer(env: Self.env) { server, _ in
            let c = try server.client()
            let w = try WorkerConnection(server)
            _ = try w.call(#"{"op":"work","status":"OrderValidated"}"#)
            let runID = try submitOrder(c, "ext-fail")
            var previous: Date?
            var gaps: [Double] = []
            for attempt in 1...3 {
                let (id, run, t) = Self.task(try w.nextTask())
                if let previous { gaps.append(Date().timeIntervalSince(previous)) }
                #expect(run == runID && t["attempt"] == .number(String(attempt)) && t["version"] == .number("2"))
                #expect(t["idempotency_key"] == .string("\(runID):2"), "one key for every offer of the step")
                let r = try w.call(#"{"op":"fail","task":"\#(id)","error":"card network down (\#(attempt))"}"#)
                if attempt < 3 {
                    #expect(r.keys == ["ok", "retry_at"] && isContractTime(r["retry_at"]), "\(r)")
                    // A repeated fail counts once.
                    #expect(try w.call(#"{"op":"fail","task":"\#(id)","error":"again"}"#)["retry_at"] == r["retry_at"])
                } else {
                    #expect(r["paused"] == .bool(true), "\(r)")
                    #expect(r["run"]?["run_state"] == .string("Paused") && r["run"]?["reason"] == .string("card network down (3)"))
                }
                previous = Date()
            }
            // 300 ms, then 600 ms (±20 % jitter): the second wait is the longer one.
            #expect(gaps.count == 2 && gaps[0] >= 0.2 && gaps[1] >= 0.45 && gaps[1] > gaps[0], "\(gaps)")
            let run = try c.call(#"{"op":"get","foreign_id":"ext-fail"}"#)["run"]
            #expect(run?["run_state"] == .string("Paused") && run?["reason"] == .string("card network down (3)"))
            // Resumed, the step is a new one: attempt 1 again, a new key.
            _ = try c.call(#"{"op":"resume","foreign_id":"ext-fail"}"#)
            let (_, _, t) = Self.task(try w.nextTask())
            #expect(t["attempt"] == .number("1") && t["version"] == .number("4") && t["idempotency_key"] == .string("\(runID):4"))
        }
    }

    @Test func maxInFlightBoundsAWorkerAndUnworkGivesItsTasksToAnother() async throws {
        try await withServer(env: Self.env) { server, _ in
            let c = try server.client()
            let a = try WorkerConnection(server)
            _ = try a.call(#"{"op":"work","status":"OrderValidated","max_in_flight":3}"#)
            for i in 0..<8 { try submitOrder(c, "ext-mif-\(i)") }
            // The server has decided: 3 held by the only worker, 5 waiting.
            try await Self.waitForTasks(server, "OrderValidated", waiting: 5, held: 3)
            var held: [String] = []
            for _ in 0..<3 { held.append(Self.task(try a.nextTask()).id) }
            #expect(a.queued == 0)
            // One answer makes room for exactly one more.
            _ = try a.call(#"{"op":"complete","task":"\#(held.removeFirst())","status":"PaymentFailed","reason":"declined"}"#)
            try await Self.waitForTasks(server, "OrderValidated", waiting: 4, held: 3)
            held.append(Self.task(try a.nextTask()).id)
            // unwork: its tasks go to the other worker at once, and none of its frames follow.
            let b = try WorkerConnection(server)
            _ = try b.call(#"{"op":"work","status":"OrderValidated","max_in_flight":10}"#)
            try await Self.waitForTasks(server, "OrderValidated", waiting: 0, held: 7)
            #expect(try a.call(#"{"op":"unwork","worker":1}"#).description == #"{"ok":true}"#)
            try await Self.waitForTasks(server, "OrderValidated", waiting: 0, held: 7)
            var bGot: Set<String> = []
            while bGot.count < 7 { bGot.insert(Self.task(try b.nextTask()).runID) }
            #expect(try a.line.callLine(#"{"op":"ping","id":"after"}"#) == #"{"id":"after","ok":true}"#, "no frame after unwork")
            let stats = try Self.stats(server)["OrderValidated"]
            #expect(stats?["workers"] == .number("1") && stats?["held"] == .number("7"))
            // A's old answers: the tasks were offered again, so CONFLICT.
            expectError(
                parsed(try c.callLine(#"{"op":"complete","task":"\#(held[0])","status":"PaymentProcessed"}"#)), code: "CONFLICT",
                retryable: false, withRun: true)
        }
    }

    @Test func aWorkerThatNeverAnswersLosesItsTaskAtTheDeadline() async throws {
        try await withServer(env: Self.env) { server, _ in
            let c = try server.client()
            let silent = try WorkerConnection(server)
            _ = try silent.call(#"{"op":"work","status":"OrderValidated","lease_ms":1000}"#)
            try submitOrder(c, "ext-late")
            let (lateID, run, first) = Self.task(try silent.nextTask())
            let started = Date()
            let other = try WorkerConnection(server)
            _ = try other.call(#"{"op":"work","status":"OrderValidated","lease_ms":60000}"#)
            let (id, sameRun, second) = Self.task(try other.nextTask(timeout: 10))
            #expect(Date().timeIntervalSince(started) >= 0.9, "not before the deadline")
            #expect(sameRun == run && id != lateID && second["idempotency_key"] == first["idempotency_key"])
            expectError(
                parsed(try silent.line.callLine(#"{"op":"complete","task":"\#(lateID)","status":"PaymentProcessed"}"#)),
                code: "CONFLICT", retryable: false, withRun: true)
            #expect(try other.call(#"{"op":"complete","task":"\#(id)","status":"PaymentProcessed"}"#)["ok"] == .bool(true))
            let metrics = try c.call(#"{"op":"metrics"}"#)["metrics"]?.stringValue ?? ""
            #expect(metrics.contains("workflowd_tasks_expired_total 1"), "\(metrics.prefix(200))")
        }
    }

    /// A worker that goes away without `unwork` (its process exits, its socket closes) loses its
    /// tasks at once, not at their deadline; so does one that half-closed first and closes later.
    @Test func aWorkerWhoseConnectionClosesLosesItsTasksAtOnce() async throws {
        try await withServer(env: Self.env) { server, _ in
            let c = try server.client()
            let gone = try WorkerConnection(server)
            _ = try gone.call(#"{"op":"work","status":"OrderValidated","lease_ms":600000}"#)
            try submitOrder(c, "ext-gone-1")
            let (_, run1, _) = Self.task(try gone.nextTask())
            let other = try WorkerConnection(server)
            _ = try other.call(#"{"op":"work","status":"OrderValidated","max_in_flight":2,"lease_ms":600000}"#)
            let started = Date()
            gone.hangUp()
            #expect(Self.task(try other.nextTask(timeout: 10)).runID == run1)
            #expect(Date().timeIntervalSince(started) < 5, "offered again long before the 10-minute deadline")
            // Half-closed (it still reads), then closed for good a moment later.
            let half = try WorkerConnection(server)
            _ = try half.call(#"{"op":"work","status":"OrderValidated","lease_ms":600000}"#)
            try submitOrder(c, "ext-gone-2")
            let (_, run2, _) = Self.task(try half.nextTask())
            half.line.shutdownWrite()
            #expect(try Self.stats(server)["OrderValidated"]?["workers"] == .number("2"), "a half-close keeps the worker")
            half.hangUp()
            #expect(Self.task(try other.nextTask(timeout: 10)).runID == run2)
            try await Self.waitForTasks(server, "OrderValidated", waiting: 0, held: 2)
            #expect(try Self.stats(server)["OrderValidated"]?["workers"] == .number("1"))
        }
    }

    @Test func aSlowWorkerDoesNotGrowTheServer() async throws {
        try await withServer(env: Self.env) { server, _ in
            let c = try server.client()
            let slow = try WorkerConnection(server)
            slow.line.setReceiveBuffer(4096)
            _ = try slow.call(#"{"op":"work","status":"OrderValidated","max_in_flight":1000}"#)
            // Orders of ~100 KB (a long name survives validation): a few fill the worker's
            // socket; the server stops claiming.
            let name = String(repeating: "n", count: 100_000)
            for i in 0..<60 { _ = try c.call(#"{"op":"submit","order":\#(orderJSON("ext-big-\(i)", name: name))}"#) }
            // Nobody reads: once the connection is above its high-water mark no more are claimed.
            try await Task.sleep(for: .milliseconds(1500))
            let held = Int(try Self.stats(server)["OrderValidated"]?["held"]?.int64Value ?? -1)
            #expect(held > 0 && held < 60, "held \(held) of 60 while the worker does not read")
            // Reading again: the rest follow, every one.
            var seen = Set<String>()
            while seen.count < 60 { seen.insert(Self.task(try slow.nextTask()).runID) }
            #expect(seen.count == 60)
        }
    }

    /// `health` turns `external` unhealthy when runs wait longer than the alert with no worker,
    /// and healthy again once a worker takes them.
    @Test func healthReportsAnExternalStatusThatNobodyWorksOn() async throws {
        try await withServer(env: Self.env, arguments: ["--task-wait-alert", "300ms"]) { server, _ in
            let c = try server.client()
            #expect(try c.call(#"{"op":"health"}"#)["checks"]?["external"]?["ok"] == .bool(true), "nothing waits yet")
            try submitOrder(c, "ext-health")
            try await Self.waitForTasks(server, "OrderValidated", waiting: 1, held: 0)
            var check: JSON = .null
            let deadline = Date().addingTimeInterval(20)
            while Date() < deadline {
                check = try c.call(#"{"op":"health"}"#)["checks"]?["external"] ?? .null
                if check["ok"] == .bool(false) { break }
                try await Task.sleep(for: .milliseconds(50))
            }
            #expect(check["ok"] == .bool(false), "\(check)")
            #expect(check["detail"]?.stringValue?.hasPrefix("OrderValidated: 1 run(s) waiting") == true, "\(check)")
            #expect(try c.call(#"{"op":"health"}"#)["healthy"] == .bool(false))
            let w = try WorkerConnection(server)
            _ = try w.call(#"{"op":"work","status":"OrderValidated"}"#)
            _ = try w.nextTask()
            try await Self.waitForTasks(server, "OrderValidated", waiting: 0, held: 1)
            #expect(try c.call(#"{"op":"health"}"#)["checks"]?["external"]?["ok"] == .bool(true))
        }
    }

    // MARK: - Worker processes

    /// `workflowctl work STATUS -- COMMAND` as a process of its own (its stderr names each task).
    final class WorkerProcess {
        let process = Process()
        let log: String
        init(socket: String, status: String, maxInFlight: Int = 4, lease: Int = 30_000, command: [String]) throws {
            log = NSTemporaryDirectory() + "worker-\(UInt32.random(in: 0...UInt32.max)).log"
            FileManager.default.createFile(atPath: log, contents: nil)
            let bin = URL(fileURLWithPath: ServerProcess.binary).deletingLastPathComponent().appendingPathComponent("workflowctl")
            process.executableURL = bin
            process.arguments =
                ["work", status, "--socket", socket, "--max-in-flight", String(maxInFlight), "--lease-ms", String(lease), "--"]
                + command
            let handle = FileHandle(forWritingAtPath: log)!
            process.standardOutput = handle
            process.standardError = handle
            try process.run()
        }
        var output: String { (try? String(contentsOfFile: log, encoding: .utf8)) ?? "" }
        /// Tasks it answered (one stderr line each: "<order>: <status>").
        var answered: Int { output.split(separator: "\n").filter { $0.hasPrefix("ext-") }.count }
        func kill() {
            Glibc.kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
        /// SIGTERM, and SIGKILL if it has not gone within 10 s.
        func stop() {
            if process.isRunning { process.terminate() }
            let deadline = Date().addingTimeInterval(10)
            while process.isRunning && Date() < deadline { usleep(20_000) }
            if process.isRunning { kill() }
            process.waitUntilExit()
        }
    }

    static let pay = ["sh", "-c", #"read t; echo '{"status":"PaymentProcessed"}'"#]
    static let ship = ["sh", "-c", "read t; echo OrderFulfilled"]

    @Test func twoWorkerProcessesShareTheWorkAndEveryStepIsDoneOnce() async throws {
        try await withServer(env: Self.env) { server, db in
            let payers = try (0..<2).map { _ in try WorkerProcess(socket: server.socketPath, status: "OrderValidated", command: Self.pay) }
            let shipper = try WorkerProcess(socket: server.socketPath, status: "PaymentProcessed", command: Self.ship)
            defer { (payers + [shipper]).forEach { $0.stop() } }
            let c = try server.client()
            let n = 40
            for i in 0..<n { try submitOrder(c, "ext-share-\(i)") }
            try await db.waitFor("SELECT COUNT(*) FROM workflow_records WHERE status = 5", equals: n, timeout: 120)
            try await db.expectEveryTransitionOnceAndLogGapFree()
            #expect(payers.allSatisfy { $0.answered > 0 }, "both payment workers did some: \(payers.map(\.answered))")
            #expect(payers.map(\.answered).reduce(0, +) == n && shipper.answered == n)
            // One answered task per step, each answered by its current claim.
            #expect(try await db.int("SELECT COUNT(*) FROM workflow_tasks") == 2 * n)
            #expect(try await db.int("SELECT COUNT(*) FROM workflow_tasks WHERE done_claim = claim AND available_at IS NULL") == 2 * n)
        }
    }

    @Test func aWorkerKilledWhileHoldingTasksLosesThemToAnother() async throws {
        try await withServer(env: Self.env) { server, db in
            let c = try server.client()
            let n = 12
            // The first payment worker takes 6 and never finishes (its command sleeps).
            let doomed = try WorkerProcess(
                socket: server.socketPath, status: "OrderValidated", maxInFlight: 6, command: ["sleep", "600"])
            for i in 0..<n { try submitOrder(c, "ext-kill-\(i)") }
            try await Self.waitForTasks(server, "OrderValidated", waiting: n - 6, held: 6)
            doomed.kill()
            let rescuer = try WorkerProcess(socket: server.socketPath, status: "OrderValidated", command: Self.pay)
            let shipper = try WorkerProcess(socket: server.socketPath, status: "PaymentProcessed", command: Self.ship)
            defer { [rescuer, shipper].forEach { $0.stop() } }
            try await db.waitFor("SELECT COUNT(*) FROM workflow_records WHERE status = 5", equals: n, timeout: 120)
            try await db.expectEveryTransitionOnceAndLogGapFree()
            #expect(rescuer.answered == n, "every order's payment by the rescuer: \(rescuer.output)")
        }
    }

    @Test func tasksHeldWhenWorkflowdRestartsAreOfferedAgain() async throws {
        let db = try await IntegrationDatabase.create()
        defer { Task { await db.drop() } }
        var env = crashReportEnvironment.merging(Self.env) { $1 }
        env["WORKFLOWD_LEASE_TTL_MS"] = "2000"
        // SIGTERM: the stopping server frees what its workers hold, so the next one offers it at once.
        var server = try await ServerProcess.start(database: db, env: env)
        var c = try server.client()
        for i in 0..<3 { try submitOrder(c, "ext-restart-\(i)") }
        var w = try WorkerConnection(server)
        _ = try w.call(#"{"op":"work","status":"OrderValidated","max_in_flight":3,"lease_ms":600000}"#)
        var held = Set<String>()
        while held.count < 3 { held.insert(Self.task(try w.nextTask()).runID) }
        #expect(try await server.terminate() == 0)
        #expect(try await db.int("SELECT COUNT(*) FROM workflow_tasks WHERE holder IS NULL AND available_at IS NOT NULL") == 3)
        server = try await ServerProcess.start(database: db, env: env)
        w = try WorkerConnection(server)
        _ = try w.call(#"{"op":"work","status":"OrderValidated","max_in_flight":3,"lease_ms":1000}"#)
        var again = Set<String>()
        while again.count < 3 { again.insert(Self.task(try w.nextTask(timeout: 10)).runID) }
        #expect(again == held)
        // SIGKILL: nothing is freed; the tasks come back when their (1 s) deadline passes.
        server.kill()
        server = try await ServerProcess.start(database: db, env: env)
        let started = Date()
        w = try WorkerConnection(server)
        _ = try w.call(#"{"op":"work","status":"OrderValidated","max_in_flight":3,"lease_ms":60000}"#)
        var third: [(String, String)] = []
        while third.count < 3 {
            let (id, run, _) = Self.task(try w.nextTask(timeout: 20))
            third.append((id, run))
        }
        #expect(Set(third.map(\.1)) == held)
        c = try server.client()
        for (id, _) in third { _ = try w.call(#"{"op":"complete","task":"\#(id)","status":"PaymentFailed","reason":"test"}"#) }
        for i in 0..<3 { #expect(try awaitFinished(c, "ext-restart-\(i)")["status"] == .string("PaymentFailed")) }
        try await db.waitFor("SELECT COUNT(*) FROM workflow_outbox", equals: 0)
        print("RESTART: tasks of a killed server offered again \(Int(Date().timeIntervalSince(started) * 1000)) ms after the restart")
        try await db.expectEveryTransitionOnceAndLogGapFree()
        #expect(try await server.terminate() == 0)
    }

    @Test func twoInstancesWithWorkersOnEachDoEveryTransitionOnce() async throws {
        let db = try await IntegrationDatabase.create()
        defer { Task { await db.drop() } }
        let env = crashReportEnvironment.merging(Self.env) { $1 }.merging(["WORKFLOWD_LEASE_TTL_MS": "3000"]) { $1 }
        let a = try await ServerProcess.start(database: db, env: env)
        let b = try await ServerProcess.start(database: db, env: env)
        var workers: [WorkerProcess] = []
        for server in [a, b] {
            workers.append(try WorkerProcess(socket: server.socketPath, status: "OrderValidated", command: Self.pay))
            workers.append(try WorkerProcess(socket: server.socketPath, status: "PaymentProcessed", command: Self.ship))
        }
        defer { workers.forEach { $0.stop() } }
        let n = 60
        for (k, server) in [a, b].enumerated() {
            let c = try server.client()
            for i in 0..<(n / 2) { try submitOrder(c, "ext-two-\(k)-\(i)") }
        }
        try await db.waitFor("SELECT COUNT(*) FROM workflow_records WHERE status = 5", equals: n, timeout: 120)
        try await db.waitFor("SELECT COUNT(*) FROM workflow_outbox", equals: 0)
        try await db.expectEveryTransitionOnceAndLogGapFree()
        #expect(workers.map(\.answered).reduce(0, +) == 2 * n, "each step answered once: \(workers.map(\.answered))")
        #expect(try await db.int("SELECT COUNT(*) FROM workflow_tasks WHERE done_claim = claim") == 2 * n)
        #expect(try await a.terminate() == 0)
        #expect(try await b.terminate() == 0)
    }
}
