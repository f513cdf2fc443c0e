import Foundation
import WorkflowWire

#if canImport(Glibc)
import Glibc
#endif

// MARK: - Statistics

struct Percentiles: Sendable {
    var count: Int
    var p50: Double
    var p90: Double
    var p99: Double
    var max: Double

    init(_ samples: [Double]) {
        let s = samples.sorted()
        count = s.count
        func rank(_ q: Double) -> Double {
            guard !s.isEmpty else { return .nan }
            let i = Swift.max(0, Swift.min(s.count - 1, Int((q * Double(s.count)).rounded(.up)) - 1))
            return s[i]
        }
        p50 = rank(0.50)
        p90 = rank(0.90)
        p99 = rank(0.99)
        max = s.last ?? .nan
    }
}

/// What MariaDB did per order, from SHOW GLOBAL STATUS deltas (and mariadbd's CPU when the
/// bench runs its own server). On a shared server the counters include other clients' work.
struct DBCost: Sendable {
    var statementsPerOrder: Double
    var preparedExecutesPerOrder: Double
    var commitsPerOrder: Double
    var logFsyncsPerOrder: Double
    var cpuMsPerOrder: Double?
    var tmpTablesPerOrder: Double
    var diskTmpTablesPerOrder: Double
    var shared: Bool

    init(before: [String: Int], after: [String: Int], cpuSeconds: Double?, orders: Int, shared: Bool) {
        func d(_ k: String) -> Double { Double((after[k] ?? 0) - (before[k] ?? 0)) / Double(max(1, orders)) }
        statementsPerOrder = d("Questions")
        preparedExecutesPerOrder = d("Com_stmt_execute")
        commitsPerOrder = d("Com_commit")
        logFsyncsPerOrder = d("Innodb_data_fsyncs")
        tmpTablesPerOrder = d("Created_tmp_tables")
        diskTmpTablesPerOrder = d("Created_tmp_disk_tables")
        cpuMsPerOrder = cpuSeconds.map { $0 * 1000 / Double(max(1, orders)) }
        self.shared = shared
    }
}

// MARK: - Ping

struct PingResult: Sendable {
    var pipelinedPerSecond: Double
    var pipelinedReplies: Int
    var requestReplyPerSecond: Double
    var requestReplyConnections: Int
    var requestReplyP50us: Double
    var requestReplyP99us: Double
}

/// Pings pipelined on one connection with `window` requests in flight, for `seconds`.
func pingPipelined(socket path: String, window: Int, seconds: Double) throws -> (Double, Int) {
    let s = try LineSocket(path: path)
    let one = Array("{\"op\":\"ping\"}\n".utf8)
    let batch = [UInt8]((0..<window).flatMap { _ in one })
    try s.send(batch)
    var inFlight = window
    var replies = 0
    let start = monoNanos()
    let deadline = start + UInt64(seconds * 1e9)
    var stopping = false
    while inFlight > 0 {
        let n = try s.readCountingNewlines()
        replies += n
        inFlight -= n
        if !stopping && monoNanos() >= deadline { stopping = true }
        if !stopping && n > 0 {
            try batch.withUnsafeBytes { try s.send(raw: UnsafeRawBufferPointer(rebasing: $0[0..<(n * one.count)])) }
            inFlight += n
        }
    }
    let elapsed = Double(monoNanos() - start) / 1e9
    return (Double(replies) / elapsed, replies)
}

/// One ping at a time per connection, on `connections` threads, for `seconds`.
func pingRequestReply(socket path: String, connections: Int, seconds: Double) throws -> (Double, [Double]) {
    let results = Locked<(count: Int, samples: [Double], error: String?)>((0, [], nil))
    let start = monoNanos()
    let deadline = start + UInt64(seconds * 1e9)
    onThreads(connections) { _ in
        do {
            let s = try LineSocket(path: path)
            let one = Array("{\"op\":\"ping\"}\n".utf8)
            var n = 0
            var samples: [Double] = []
            samples.reserveCapacity(100_000)
            while true {
                let t0 = monoNanos()
                if t0 >= deadline { break }
                try s.send(one)
                var got = 0
                while got == 0 { got = try s.readCountingNewlines() }
                samples.append(Double(monoNanos() - t0) / 1000)
                n += 1
            }
            let (done, mine) = (n, samples)
            results.withLock {
                $0.count += done
                $0.samples += mine
            }
        } catch {
            results.withLock { $0.error = "\(error)" }
        }
    }
    let elapsed = Double(monoNanos() - start) / 1e9
    let r = results.withLock { $0 }
    if let e = r.error { throw BenchError("request/reply ping: \(e)") }
    return (Double(r.count) / elapsed, r.samples)
}

// MARK: - Orders

struct OrdersResult: Sendable {
    var label: String
    var concurrency: Int
    var connections: Int
    var gatewayLatencyMs: Int
    var completed: Int
    var failed: Int
    var errors: Int
    var seconds: Double
    var ordersPerSecond: Double
    var latencyMs: Percentiles
    var serverCPUSeconds: Double
    var serverPeakRSSMB: Double
    var serverRSSStartMB: Double
    var benchCPUSeconds: Double
    var firstError: String?
    var serverDied = false
    var db: DBCost?
    /// External steps: from a run entering PaymentProcessed to its task frame (see BenchWorkers).
    var taskDispatchMs: Percentiles?
    /// External steps: from sending the payment's `complete` to receiving the fulfilment task.
    var taskHopMs: Percentiles?

    var cpuMsPerOrder: Double { completed > 0 ? serverCPUSeconds * 1000 / Double(completed) : .nan }
}

let sampleItems =
    #""items":[{"product_id":"p1","name":"Laptop","quantity":1,"price":1299.99},{"product_id":"p2","name":"Mouse","quantity":2,"price":29.99}],"total":1359.97"#

func orderJSON(_ id: String) -> String {
    #"{"id":"\#(id)","customer_name":"Ann Example","email":"ann@example.com",\#(sampleItems)}"#
}

/// Closed loop: `concurrency` orders in flight at all times, spread over `connections`
/// connections (one client thread each). Each order: `submit`, then `await` its run_id (any
/// terminal status); latency is from writing the submit to reading the await reply.
func runOrders(
    socket path: String, prefix: String, total: Int, concurrency: Int, connections requested: Int
) throws -> (completed: Int, failed: Int, errors: Int, seconds: Double, latenciesMs: [Double], firstError: String?) {
    let connections = max(1, min(requested, concurrency))
    let issued = Locked(0)
    struct Acc { var completed = 0; var failed = 0; var errors = 0; var latencies: [Double] = []; var firstError: String? }
    let acc = Locked(Acc())
    let start = monoNanos()
    onThreads(connections) { c in
        // This connection's share of the concurrency.
        let window = concurrency / connections + (c < concurrency % connections ? 1 : 0)
        var local = Acc()
        local.latencies.reserveCapacity(total / connections + 16)
        do {
            let s = try LineSocket(path: path)
            var started: [Int64: UInt64] = [:]  // request id (order number) → submit time
            var inFlight = 0
            var nextID: Int64 = 0
            func submitNext() throws -> Bool {
                let n = issued.withLock { v -> Int in
                    v += 1
                    return v
                }
                guard n <= total else { return false }
                nextID += 1
                let id = nextID * 2  // even: submit; odd: its await
                started[id] = monoNanos()
                try s.send(#"{"op":"submit","id":\#(id),"order":\#(orderJSON(prefix + "-" + String(n)))}"# + "\n")
                inFlight += 1
                return true
            }
            for _ in 0..<window { if try !submitNext() { break } }
            while inFlight > 0 {
                let line = try s.readLine()
                let reply = try JSONParser.parse(line)
                guard let id = reply["id"]?.int64Value else { continue }
                let ok = reply["ok"] == .bool(true)
                if id % 2 == 0 {
                    guard ok, let runID = reply["run_id"]?.stringValue else {
                        local.errors += 1
                        if local.firstError == nil { local.firstError = String(decoding: line, as: UTF8.self) }
                        started[id] = nil
                        inFlight -= 1
                        _ = try submitNext()
                        continue
                    }
                    try s.send(#"{"op":"await","id":\#(id + 1),"run_id":"\#(runID)","timeout_ms":300000}"# + "\n")
                } else {
                    let t0 = started.removeValue(forKey: id - 1) ?? monoNanos()
                    inFlight -= 1
                    if ok {
                        local.latencies.append(Double(monoNanos() - t0) / 1e6)
                        if reply["run"]?["status"]?.stringValue == "OrderCompleted" {
                            local.completed += 1
                        } else {
                            local.failed += 1
                        }
                    } else {
                        local.errors += 1
                        if local.firstError == nil { local.firstError = String(decoding: line, as: UTF8.self) }
                    }
                    _ = try submitNext()
                }
            }
        } catch {
            local.errors += 1
            if local.firstError == nil { local.firstError = "\(error)" }
        }
        let mine = local
        acc.withLock {
            $0.completed += mine.completed
            $0.failed += mine.failed
            $0.errors += mine.errors
            $0.latencies += mine.latencies
            $0.firstError = $0.firstError ?? mine.firstError
        }
    }
    let seconds = Double(monoNanos() - start) / 1e9
    let a = acc.withLock { $0 }
    return (a.completed, a.failed, a.errors, seconds, a.latencies, a.firstError)
}

// MARK: - Fan-out

struct FanoutResult: Sendable {
    var subscribers: Int
    var orders: Int
    var eventsExpectedPerSubscriber: Int
    var framesReceived: Int
    var missing: Int
    var atToDeliveryMs: Percentiles
    var spreadMs: Percentiles
    var seconds: Double
}

/// `subscribers` connections subscribe to every event; a paced client submits `orders` orders
/// at `rate` per second. For every frame: receive wall time − the event's `at`, and receive
/// time − the first receive time of the same `seq` by any subscriber (the fan-out spread).
func runFanout(socket path: String, prefix: String, subscribers: Int, orders: Int, rate: Double, threads: Int)
    throws -> FanoutResult
{
    var socks: [LineSocket] = []
    for _ in 0..<subscribers {
        let s = try LineSocket(path: path)
        try s.send(#"{"op":"subscribe","id":"sub","from":"now","workflow":"order-processor"}"# + "\n")
        let line = try s.readLine()
        guard String(decoding: line, as: UTF8.self).contains("\"ok\":true") else {
            throw BenchError("subscribe failed: \(String(decoding: line, as: UTF8.self))")
        }
        socks.append(s)
    }
    let expected = orders * 5
    let shared = socks
    struct PerSub { var seqs: [Int64] = []; var recvNs: [UInt64] = []; var atLag: [Double] = [] }
    let results = Locked([PerSub](repeating: PerSub(), count: subscribers))
    let done = Locked(false)
    let start = monoNanos()
    let readersDone = DispatchSemaphore(value: 0)
    let readers = Thread {
        onThreads(threads) { t in
            let mine = Array(stride(from: t, to: subscribers, by: threads))
            var per = [PerSub](repeating: PerSub(), count: mine.count)
            var fds = mine.map { pollfd(fd: shared[$0].fd, events: Int16(POLLIN), revents: 0) }
            var finished = 0
            var open = Array(repeating: true, count: mine.count)
            while finished < mine.count {
                if done.withLock({ $0 }) { break }
                let rc = poll(&fds, nfds_t(fds.count), 200)
                if rc <= 0 { continue }
                for k in 0..<fds.count where open[k] && fds[k].revents != 0 {
                    let recvNs = monoNanos()
                    let recvWall = wallMillis()
                    let alive = (try? shared[mine[k]].readAvailable { line in
                        guard let seqText = scanValue(line, key: "seq"), let seq = Int64(seqText),
                            let atText = scanValue(line, key: "at"), let at = RFC3339.parse(String(atText))
                        else { return }
                        per[k].seqs.append(seq)
                        per[k].recvNs.append(recvNs)
                        per[k].atLag.append(recvWall - Double(at))
                    }) ?? false
                    if !alive || per[k].seqs.count >= expected {
                        open[k] = false
                        fds[k].fd = -1
                        finished += 1
                    }
                }
            }
            let got = per
            results.withLock { all in for (k, i) in mine.enumerated() { all[i] = got[k] } }
        }
        done.withLock { $0 = true }
        readersDone.signal()
    }
    readers.start()

    // Paced submitter: pipelined submits, replies read on the same thread.
    let submitter = try LineSocket(path: path)
    let interval = 1e9 / rate
    var sent = 0
    var replied = 0
    let t0 = monoNanos()
    while sent < orders {
        let due = t0 + UInt64(Double(sent) * interval)
        let now = monoNanos()
        if now < due { usleep(UInt32(max(50, (due - now) / 1000))) }
        sent += 1
        try submitter.send(#"{"op":"submit","id":\#(sent),"order":\#(orderJSON(prefix + "-" + String(sent)))}"# + "\n")
        while submitter.hasBufferedLine {
            _ = try submitter.readLine()
            replied += 1
        }
    }
    while replied < orders {
        _ = try submitter.readLine()
        replied += 1
    }
    // Wait for the subscribers (at most 60 s after the last submit).
    let deadline = Date().addingTimeInterval(60)
    while !done.withLock({ $0 }) && Date() < deadline { usleep(20_000) }
    done.withLock { $0 = true }
    readersDone.wait()
    let seconds = Double(monoNanos() - start) / 1e9

    let all = results.withLock { $0 }
    var firstRecv: [Int64: UInt64] = [:]
    for p in all { for (i, seq) in p.seqs.enumerated() { firstRecv[seq] = min(firstRecv[seq] ?? .max, p.recvNs[i]) } }
    var lags: [Double] = []
    var spreads: [Double] = []
    var frames = 0
    for p in all {
        frames += p.seqs.count
        lags += p.atLag
        for (i, seq) in p.seqs.enumerated() { spreads.append(Double(p.recvNs[i] - firstRecv[seq]!) / 1e6) }
    }
    return FanoutResult(
        subscribers: subscribers, orders: orders, eventsExpectedPerSubscriber: expected, framesReceived: frames,
        missing: expected * subscribers - frames, atToDeliveryMs: Percentiles(lags), spreadMs: Percentiles(spreads),
        seconds: seconds)
}

// MARK: - External steps

/// The bench's own workers of the external statuses (compiled, on the socket): OrderValidated
/// (payment) and PaymentProcessed (fulfilment), each on one connection, answering every task at
/// once with `complete` (no object, zero latency), pipelined.
///
/// Dispatch time is measured on PaymentProcessed, whose tasks start with a `complete` of this
/// bench: from the reply to the payment's `complete` (the transition into PaymentProcessed has
/// committed) to the arrival of that run's fulfilment task (0 when the task came first, as it
/// does when the server hands it over in the answer's own transaction). The whole hop, from
/// sending the payment's `complete` to receiving the fulfilment task, includes that commit.
final class BenchWorkers: @unchecked Sendable {  // shared state behind `Locked`; sockets are each used by one thread
    private let sockets: [LineSocket]
    private let group = DispatchGroup()
    private let paidAt = Locked<[String: UInt64]>([:])
    private let taskAt = Locked<[String: UInt64]>([:])
    private let sentAt = Locked<[String: UInt64]>([:])
    let dispatchMs = Locked<[Double]>([])
    let hopMs = Locked<[Double]>([])
    let answered = Locked(0)
    let errors = Locked<(count: Int, first: String?)>((0, nil))

    init(socket path: String, maxInFlight: Int) throws {
        let pay = try LineSocket(path: path)
        let ship = try LineSocket(path: path)
        sockets = [pay, ship]
        for (s, status) in [(pay, "OrderValidated"), (ship, "PaymentProcessed")] {
            try s.send(#"{"op":"work","id":0,"status":"\#(status)","max_in_flight":\#(maxInFlight),"lease_ms":600000}"# + "\n")
            let reply = try s.readLine()
            guard scanValue(reply, key: "ok") == "true" else {
                throw BenchError("work \(status): \(String(decoding: reply, as: UTF8.self))")
            }
        }
        start(pay, next: "PaymentProcessed", payment: true)
        start(ship, next: "OrderFulfilled", payment: false)
    }

    private func start(_ s: LineSocket, next: String, payment: Bool) {
        group.enter()
        let t = Thread { [self] in
            defer { group.leave() }
            var pending: [Int64: String] = [:]  // complete id → run id
            var nextID: Int64 = 1
            while true {
                guard let line = try? s.readLine() else { return }
                if let task = Self.string(after: #""task":""#, in: line), let run = Self.string(after: #""run_id":""#, in: line),
                    scanValue(line, key: "ok") == nil
                {
                    if payment { sentAt.withLock { $0[run] = monoNanos() } } else { noteTask(run) }
                    pending[nextID] = run
                    try? s.send(#"{"op":"complete","id":\#(nextID),"task":"\#(task)","status":"\#(next)"}"# + "\n")
                    nextID += 1
                    continue
                }
                guard let id = scanValue(line, key: "id").flatMap({ Int64($0) }), let run = pending.removeValue(forKey: id) else {
                    continue
                }
                if scanValue(line, key: "ok") == "true" {
                    answered.withLock { $0 += 1 }
                    if payment { notePaid(run) }
                } else {
                    errors.withLock { e in
                        e.count += 1
                        if e.first == nil { e.first = String(decoding: line, as: UTF8.self) }
                    }
                }
            }
        }
        t.stackSize = 1 << 20
        t.start()
    }

    private func notePaid(_ run: String) {
        let now = monoNanos()
        if let t = taskAt.withLock({ $0.removeValue(forKey: run) }) {
            _ = t
            dispatchMs.withLock { $0.append(0) }  // the task came before the reply
        } else {
            paidAt.withLock { $0[run] = now }
        }
    }

    private func noteTask(_ run: String) {
        let now = monoNanos()
        if let sent = sentAt.withLock({ $0.removeValue(forKey: run) }) {
            hopMs.withLock { $0.append(now > sent ? Double(now - sent) / 1e6 : 0) }
        }
        if let t = paidAt.withLock({ $0.removeValue(forKey: run) }) {
            dispatchMs.withLock { $0.append(now > t ? Double(now - t) / 1e6 : 0) }
        } else {
            taskAt.withLock { $0[run] = now }
        }
    }

    /// The string value that follows `prefix` (which ends with the opening quote).
    static func string(after prefix: String, in line: [UInt8]) -> String? {
        let needle = Array(prefix.utf8)
        guard line.count > needle.count else { return nil }
        var i = 0
        while i + needle.count <= line.count {
            if line[i] == needle[0] && Array(line[i..<(i + needle.count)]) == needle {
                let s = i + needle.count
                var e = s
                while e < line.count && line[e] != 0x22 { e += 1 }
                return String(decoding: line[s..<e], as: UTF8.self)
            }
            i += 1
        }
        return nil
    }

    /// Closes both connections and waits for the threads.
    func stop() {
        for s in sockets { shutdown(s.fd, Int32(SHUT_RDWR)) }
        group.wait()
    }
}

/// The server's writes by where their events went (`workflowd_writes_total`), read with the
/// `metrics` op: how often the direct path to the log was taken.
struct WriteRoutes: Sendable {
    var byRoute: [String: Double] = [:]
    var transitions: Double = 0

    static func read(socket: String) -> WriteRoutes? {
        guard let c = try? LineSocket(path: socket), (try? c.send("{\"op\":\"metrics\"}\n")) != nil,
            let line = try? c.readLine(), let reply = try? JSONParser.parse(String(decoding: line, as: UTF8.self)),
            let text = reply["metrics"]?.stringValue
        else { return nil }
        var r = WriteRoutes()
        for l in text.split(separator: "\n") where !l.hasPrefix("#") {
            let parts = l.split(separator: " ")
            guard parts.count == 2, let v = Double(parts[1]) else { continue }
            if parts[0].hasPrefix("workflowd_writes_total{route=\""),
                let route = parts[0].split(separator: "\"").dropFirst().first
            {
                r.byRoute[String(route)] = v
            } else if parts[0] == "workflowd_transitions_applied_total" {
                r.transitions = v
            }
        }
        return r
    }

    func since(_ b: WriteRoutes) -> WriteRoutes {
        WriteRoutes(
            byRoute: byRoute.reduce(into: [:]) { $0[$1.key] = $1.value - (b.byRoute[$1.key] ?? 0) },
            transitions: transitions - b.transitions)
    }

    func summary(orders: Int) -> String {
        let total = byRoute.values.reduce(0, +)
        guard total > 0 else { return "writes: none counted" }
        let shares = byRoute.sorted { $0.key < $1.key }.filter { $0.value > 0 }
            .map { String(format: "%@ %.0f%%", $0.key, $0.value / total * 100) }.joined(separator: ", ")
        return String(
            format: "writes: %.0f (%.2f per order, %.1f transitions per write): %@", total,
            total / Double(max(1, orders)), transitions / total, shares)
    }
}
