/// The outcome of decoding one line: a request, or the error to answer it with (and the `id` to
/// echo, when the line got far enough to have one).
public enum DecodedLine: Sendable, Equatable {
    case request(Request)
    case failure(RequestID?, WireError)
}

/// Turns one line (without its `\n`) into a `Request`, validating every argument.
///
/// Messages of `BAD_REQUEST` start with the field's name (`limit: must be an integer from 1 to
/// 1000`), so a client can tell which one was wrong. Unknown extra fields are ignored, so newer
/// clients can send optional arguments to older servers. A `null` optional field counts as absent.
public enum RequestDecoder {
    /// Longest `foreign_id` (and `order.id`) a run can be created with, in characters: the
    /// tables keep it in a `VARCHAR(255)`. A longer one is `BAD_REQUEST`, not a database error.
    public static let maxForeignIDLength = 255
    /// Longest `reason` in UTF-8 bytes. The reason is stored with the run and, JSON-escaped
    /// (up to 6 bytes per byte), in its event, whose column holds 64 KiB.
    public static let maxReasonBytes = 8192

    public static func decode(_ line: UnsafeRawBufferPointer) -> DecodedLine {
        let json: JSON
        do {
            json = try JSONParser.parse(line)
        } catch {
            return .failure(nil, WireError(.badJSON, "not JSON: \(error.description)"))
        }
        return decode(json)
    }

    public static func decode(_ line: [UInt8]) -> DecodedLine {
        line.withUnsafeBytes { decode($0) }
    }

    public static func decode(_ line: String) -> DecodedLine {
        decode(Array(line.utf8))
    }

    public static func decode(_ json: JSON) -> DecodedLine {
        guard case .object(let members) = json else {
            return .failure(nil, WireError(.badJSON, "the line is not a JSON object"))
        }
        let f = Fields(members: members)
        var id: RequestID?
        switch f["id"] {
        case nil: id = nil
        case .string(let s)?: id = .string(s)
        case .number(let n)?: id = .number(n)
        case let other?:
            return .failure(nil, .badRequest("id: must be a string or a number, not \(other.typeName)"))
        }
        guard let opValue = f["op"] else { return .failure(id, .badRequest("op: missing")) }
        guard case .string(let op) = opValue else {
            return .failure(id, .badRequest("op: must be a string, not \(opValue.typeName)"))
        }
        do {
            let operation = try decodeOperation(op, f)
            return .request(Request(id: id, operation: operation))
        } catch {
            return .failure(id, error)
        }
    }

    static func decodeOperation(_ op: String, _ f: Fields) throws(WireError) -> Operation {
        switch op {
        case "hello": return .hello
        case "ping": return .ping
        case "stats": return .stats
        case "health": return .health
        case "metrics": return .metrics
        case "graph": return .graph(workflow: try f.string("workflow") ?? defaultWorkflow)
        case "submit":
            guard let order = f["order"] else { throw .badRequest("order: missing") }
            guard case .object = order else { throw .badRequest("order: must be an object, not \(order.typeName)") }
            let orderID: String
            switch order["id"] {
            case nil, .null?: throw .badRequest("order.id: missing")
            case .string(let s)?:
                guard !s.isEmpty else { throw .badRequest("order.id: must not be empty") }
                guard s.unicodeScalars.count <= maxForeignIDLength else {
                    throw .badRequest("order.id: longer than \(maxForeignIDLength) characters")
                }
                orderID = s
            // The order processor's Order has a string id (PROTOCOL.md's orders use "order-1001"):
            // refuse anything else here rather than accept a run the workflow must reject.
            case let other?: throw .badRequest("order.id: must be a string, not \(other.typeName)")
            }
            return .submit(orderID: orderID, order: order.bytes)
        case "trigger":
            let workflow = try f.requiredString("workflow")
            let foreignID = try f.requiredString("foreign_id")
            guard foreignID.unicodeScalars.count <= maxForeignIDLength else {
                throw .badRequest("foreign_id: longer than \(maxForeignIDLength) characters")
            }
            guard let object = f["object"] else { throw .badRequest("object: missing") }
            return .trigger(workflow: workflow, foreignID: foreignID, object: object.bytes)
        case "get": return .get(try f.runRef())
        case "history": return .history(try f.runRef())
        case "pause", "resume", "cancel", "delete_data":
            let command = ControlCommand(rawValue: op)!
            let run = try f.runRef()
            return .control(command, run, reason: try f.reason("reason"))
        case "list":
            var a = ListArguments()
            a.workflow = try f.string("workflow")
            a.statuses = try f.statusList("status")
            a.runStates = try f.runStateList("run_state")
            a.foreignIDs = try f.stringList("foreign_id")
            a.createdAfter = try f.time("created_after")
            a.createdBefore = try f.time("created_before")
            if let order = try f.string("order") {
                guard let d = SortDirection(rawValue: order) else { throw .badRequest("order: must be \"asc\" or \"desc\"") }
                a.order = d
            }
            a.limit = try f.int("limit", in: 1...1000) ?? 25
            if let c = try f.string("cursor") {
                guard let cursor = ListCursor(text: c) else { throw .badRequest("cursor: not a cursor this server issued") }
                a.cursor = cursor
            }
            return .list(a)
        case "await":
            let run = try f.runRef()
            let statuses = try f.statusList("status")
            let timeout =
                try f.int("timeout_ms", in: 0...AwaitArguments.maxTimeoutMilliseconds)
                ?? AwaitArguments.defaultTimeoutMilliseconds
            return .awaitStatus(AwaitArguments(run: run, statuses: statuses, timeoutMilliseconds: timeout))
        case "subscribe":
            var a = SubscribeArguments()
            switch f["from"] {
            case nil, .null?: a.from = .now
            case .string("now")?: a.from = .now
            case .string("earliest")?: a.from = .earliest
            case .number(let n)?:
                guard let seq = Int64(n), seq >= 0 else { throw .badRequest("from: a seq must be an integer >= 0") }
                a.from = .seq(seq)
            case let other?:
                throw .badRequest("from: must be \"now\", \"earliest\" or a seq, not \(other)")
            }
            a.workflow = try f.string("workflow")
            a.foreignID = try f.string("foreign_id")
            a.runID = try f.string("run_id")
            a.statuses = try f.statusList("status")
            a.runStates = try f.runStateList("run_state")
            return .subscribe(a)
        case "unsubscribe":
            guard let sub = try f.int64("sub", in: 1...Int64.max) else { throw .badRequest("sub: missing") }
            return .unsubscribe(sub: sub)
        case "work":
            let workflow = try f.string("workflow") ?? defaultWorkflow
            guard !workflow.isEmpty else { throw .badRequest("workflow: must not be empty") }
            return .work(
                WorkArguments(
                    workflow: workflow, status: try f.status("status"),
                    maxInFlight: try f.int("max_in_flight", in: 1...1000) ?? 1,
                    leaseMilliseconds: try f.int("lease_ms", in: WorkArguments.leaseRange) ?? WorkArguments.defaultLeaseMilliseconds))
        case "complete":
            return .complete(
                CompleteArguments(
                    task: try f.requiredString("task"), status: try f.status("status"), object: f.present("object")?.bytes,
                    reason: try f.reason("reason")))
        case "fail":
            let task = try f.requiredString("task")
            guard let error = try f.reason("error") else { throw .badRequest("error: missing") }
            guard !error.isEmpty else { throw .badRequest("error: must not be empty") }
            return .fail(task: task, error: error)
        case "extend":
            return .extend(task: try f.requiredString("task"), leaseMilliseconds: try f.int("lease_ms", in: WorkArguments.leaseRange))
        case "unwork":
            guard let worker = try f.int64("worker", in: 1...Int64.max) else { throw .badRequest("worker: missing") }
            return .unwork(worker: worker)
        case "callback":
            return .callback(
                CallbackArguments(
                    run: try f.runRef(), status: try f.status("status"), next: try f.status("next"),
                    object: f.present("object")?.bytes, reason: try f.reason("reason")))
        default:
            throw WireError(.unknownOp, "unknown op '\(op)'")
        }
    }
}

/// Typed access to a request's members; every failure names the field.
struct Fields {
    let members: [JSON.Member]

    subscript(key: String) -> JSON? {
        for m in members where m.key == key { return m.value }
        return nil
    }

    /// Absent or null → nil.
    func present(_ key: String) -> JSON? {
        switch self[key] {
        case nil, .null?: nil
        case let v?: v
        }
    }

    func string(_ key: String) throws(WireError) -> String? {
        guard let v = present(key) else { return nil }
        guard case .string(let s) = v else { throw .badRequest("\(key): must be a string, not \(v.typeName)") }
        return s
    }

    func requiredString(_ key: String) throws(WireError) -> String {
        guard let s = try string(key) else { throw .badRequest("\(key): missing") }
        guard !s.isEmpty else { throw .badRequest("\(key): must not be empty") }
        return s
    }

    func int64(_ key: String, in range: ClosedRange<Int64>) throws(WireError) -> Int64? {
        guard let v = present(key) else { return nil }
        guard case .number(let text) = v else { throw .badRequest("\(key): must be an integer, not \(v.typeName)") }
        guard let n = Int64(text), range.contains(n) else {
            if range.upperBound == Int64.max {
                throw .badRequest("\(key): must be an integer >= \(range.lowerBound)")
            }
            throw .badRequest("\(key): must be an integer from \(range.lowerBound) to \(range.upperBound)")
        }
        return n
    }

    func int(_ key: String, in range: ClosedRange<Int>) throws(WireError) -> Int? {
        guard let n = try int64(key, in: Int64(range.lowerBound)...Int64(range.upperBound)) else { return nil }
        return Int(n)
    }

    func time(_ key: String) throws(WireError) -> Int64? {
        guard let s = try string(key) else { return nil }
        guard let ms = RFC3339.parse(s) else {
            throw .badRequest("\(key): must be an RFC 3339 time such as \"2026-11-25T06:00:00.000Z\"")
        }
        return ms
    }

    /// A text kept with the run (a reason, a worker's error): at most `maxReasonBytes`.
    func reason(_ key: String) throws(WireError) -> String? {
        let text = try string(key)
        if let text, text.utf8.count > RequestDecoder.maxReasonBytes {
            throw .badRequest("\(key): longer than \(RequestDecoder.maxReasonBytes) bytes")
        }
        return text
    }

    /// One required status, by name or integer code.
    func status(_ key: String) throws(WireError) -> StatusRef {
        guard let v = present(key) else { throw .badRequest("\(key): missing") }
        switch v {
        case .string(let s):
            guard !s.isEmpty else { throw .badRequest("\(key): a status name must not be empty") }
            return .name(s)
        case .number(let n):
            guard let code = Int(n), code >= 0 else { throw .badRequest("\(key): a status code must be an integer >= 0") }
            return .code(code)
        default:
            throw .badRequest("\(key): must be a status name or code, not \(v.typeName)")
        }
    }

    /// An array of values, or a single value taken as a one-element array.
    private func list(_ key: String) -> [JSON] {
        switch present(key) {
        case nil: []
        case .array(let items)?: items
        case let v?: [v]
        }
    }

    func stringList(_ key: String) throws(WireError) -> [String] {
        var out: [String] = []
        for v in list(key) {
            guard case .string(let s) = v else { throw .badRequest("\(key): must be an array of strings") }
            out.append(s)
        }
        return out
    }

    func statusList(_ key: String) throws(WireError) -> [StatusRef] {
        var out: [StatusRef] = []
        for v in list(key) {
            switch v {
            case .string(let s):
                guard !s.isEmpty else { throw .badRequest("\(key): a status name must not be empty") }
                out.append(.name(s))
            case .number(let n):
                guard let code = Int(n), code >= 0 else { throw .badRequest("\(key): a status code must be an integer >= 0") }
                out.append(.code(code))
            default:
                throw .badRequest("\(key): must be an array of status names or codes")
            }
        }
        return out
    }

    func runStateList(_ key: String) throws(WireError) -> [Int] {
        var out: [Int] = []
        for v in list(key) {
            switch v {
            case .string(let s):
                guard let code = RunStateName.code(named: s) else { throw .badRequest("\(key): unknown run state '\(s)'") }
                out.append(code)
            case .number(let n):
                guard let code = Int(n), RunStateName.name(code: code) != nil else {
                    throw .badRequest("\(key): unknown run state code \(n)")
                }
                out.append(code)
            default:
                throw .badRequest("\(key): must be an array of run state names or codes")
            }
        }
        return out
    }

    /// `run_id`, or `foreign_id` with `workflow` (default `order-processor`).
    func runRef() throws(WireError) -> RunRef {
        let runID = try string("run_id")
        let foreignID = try string("foreign_id")
        switch (runID, foreignID) {
        case (let r?, nil):
            guard !r.isEmpty else { throw .badRequest("run_id: must not be empty") }
            return .runID(r)
        case (nil, let fid?):
            guard !fid.isEmpty else { throw .badRequest("foreign_id: must not be empty") }
            let workflow = try string("workflow") ?? defaultWorkflow
            guard !workflow.isEmpty else { throw .badRequest("workflow: must not be empty") }
            return .foreignID(workflow: workflow, foreignID: fid)
        case (nil, nil):
            throw .badRequest("run_id: missing (give run_id, or foreign_id with an optional workflow)")
        case (_?, _?):
            throw .badRequest("run_id: give run_id or foreign_id, not both")
        }
    }
}
