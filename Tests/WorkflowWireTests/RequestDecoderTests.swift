import Testing

@testable import WorkflowWire

@Suite struct RequestDecoderTests {
    func op(_ line: String) throws -> Operation {
        switch RequestDecoder.decode(line) {
        case .request(let r): return r.operation
        case .failure(_, let e):
            Issue.record("unexpected failure \(e)")
            throw e
        }
    }

    func failure(_ line: String) -> (RequestID?, WireError)? {
        switch RequestDecoder.decode(line) {
        case .request(let r):
            Issue.record("unexpectedly decoded \(r)")
            return nil
        case .failure(let id, let e): return (id, e)
        }
    }

    // MARK: id and framing-level errors

    @Test func idIsKeptExactlyAsGiven() {
        #expect(RequestDecoder.decode(#"{"op":"ping","id":"a-1"}"#) == .request(Request(id: .string("a-1"), operation: .ping)))
        #expect(RequestDecoder.decode(#"{"op":"ping","id":1e3}"#) == .request(Request(id: .number("1e3"), operation: .ping)))
        #expect(
            RequestDecoder.decode(#"{"id":123456789012345678901234567890,"op":"ping"}"#)
                == .request(Request(id: .number("123456789012345678901234567890"), operation: .ping)))
        #expect(RequestDecoder.decode(#"{"op":"ping"}"#) == .request(Request(id: nil, operation: .ping)))
    }

    @Test(arguments: [#"{"op":"ping","id":true}"#, #"{"op":"ping","id":{}}"#, #"{"op":"ping","id":null}"#])
    func badIDIsBadRequest(_ line: String) {
        guard let (id, e) = failure(line) else { return }
        #expect(id == nil)
        #expect(e.code == .badRequest)
        #expect(e.message.hasPrefix("id:"))
    }

    @Test(arguments: ["not json", "[1,2]", "\"ping\"", "42", "{\"op\":\"ping\"", "{\"op\":\"ping\"} {}"])
    func notAnObjectIsBadJSON(_ line: String) {
        guard let (id, e) = failure(line) else { return }
        #expect(id == nil)
        #expect(e.code == .badJSON)
        #expect(e.retryable == false)
    }

    @Test func invalidUTF8IsBadJSON() {
        let line: [UInt8] = Array(#"{"op":"ping","id":""#.utf8) + [0xFF, 0xFE] + Array(#""}"#.utf8)
        guard case .failure(nil, let e) = RequestDecoder.decode(line) else {
            Issue.record("accepted invalid UTF-8")
            return
        }
        #expect(e.code == .badJSON)
        #expect(e.message.contains("UTF-8"))
    }

    @Test func missingOrBadOp() {
        if let (id, e) = failure(#"{"id":7}"#) {
            #expect(id == .number("7"))
            #expect(e.code == .badRequest)
            #expect(e.message == "op: missing")
        }
        if let (_, e) = failure(#"{"op":5}"#) {
            #expect(e.code == .badRequest)
            #expect(e.message.hasPrefix("op:"))
        }
        if let (id, e) = failure(#"{"op":"fly","id":"x"}"#) {
            #expect(id == .string("x"))
            #expect(e.code == .unknownOp)
            #expect(e.message.contains("fly"))
        }
    }

    // MARK: every op

    @Test func opsWithoutArguments() throws {
        #expect(try op(#"{"op":"hello"}"#) == .hello)
        #expect(try op(#"{"op":"ping"}"#) == .ping)
        #expect(try op(#"{"op":"stats"}"#) == .stats)
        #expect(try op(#"{"op":"health"}"#) == .health)
        #expect(try op(#"{"op":"graph"}"#) == .graph(workflow: "order-processor"))
        #expect(try op(#"{"op":"graph","workflow":"other"}"#) == .graph(workflow: "other"))
    }

    @Test func submitKeepsTheOrderExactly() throws {
        let order = #"{"id":"ORD-1","customer_name":"Zoë","email":"z@example.com","items":[{"product_id":"P1","name":"Laptop","quantity":1,"price":1299.99}],"total":1359.97}"#
        let o = try op(#"{"op":"submit","order":"# + order + "}")
        #expect(o == .submit(orderID: "ORD-1", order: Array(order.utf8)))
    }

    @Test(arguments: [
        (#"{"op":"submit"}"#, "order: missing"),
        (#"{"op":"submit","order":[1]}"#, "order: must be an object"),
        (#"{"op":"submit","order":{}}"#, "order.id: missing"),
        (#"{"op":"submit","order":{"id":""}}"#, "order.id: must not be empty"),
        (#"{"op":"submit","order":{"id":1.5}}"#, "order.id: must be a string, not number"),
        (#"{"op":"submit","order":{"id":42}}"#, "order.id: must be a string, not number"),
        (#"{"op":"submit","order":{"id":true}}"#, "order.id: must be a string, not boolean"),
    ])
    func submitBadRequests(_ line: String, _ prefix: String) {
        guard let (_, e) = failure(line) else { return }
        #expect(e.code == .badRequest)
        #expect(e.message.hasPrefix(prefix), "\(e.message)")
    }

    @Test func trigger() throws {
        #expect(
            try op(#"{"op":"trigger","workflow":"w","foreign_id":"f","object":{"a":1.10}}"#)
                == .trigger(workflow: "w", foreignID: "f", object: Array(#"{"a":1.10}"#.utf8)))
        for (line, field) in [
            (#"{"op":"trigger","foreign_id":"f","object":{}}"#, "workflow"),
            (#"{"op":"trigger","workflow":"w","object":{}}"#, "foreign_id"),
            (#"{"op":"trigger","workflow":"w","foreign_id":"f"}"#, "object"),
            (#"{"op":"trigger","workflow":1,"foreign_id":"f","object":{}}"#, "workflow"),
        ] {
            guard let (_, e) = failure(line) else { continue }
            #expect(e.code == .badRequest)
            #expect(e.message.hasPrefix(field + ":"), "\(e.message)")
        }
    }

    /// Found by the fault fuzzer: an id longer than the tables' VARCHAR(255) reached MariaDB
    /// and came back as INTERNAL ("database error 1406"); a reason over 64 KiB did the same.
    @Test func overlongForeignIDsAndReasonsAreBadRequests() throws {
        let max = String(repeating: "ü", count: RequestDecoder.maxForeignIDLength)
        #expect(try op(#"{"op":"trigger","workflow":"w","foreign_id":"\#(max)","object":{}}"#) == .trigger(workflow: "w", foreignID: max, object: Array("{}".utf8)))
        #expect(try op(#"{"op":"submit","order":{"id":"\#(max)"}}"#) == .submit(orderID: max, order: Array(#"{"id":"\#(max)"}"#.utf8)))
        let reason = String(repeating: "r", count: RequestDecoder.maxReasonBytes)
        #expect(try op(#"{"op":"pause","run_id":"r","reason":"\#(reason)"}"#) == .control(.pause, .runID("r"), reason: reason))
        for (line, prefix) in [
            (#"{"op":"trigger","workflow":"w","foreign_id":"\#(max)x","object":{}}"#, "foreign_id: longer than 255 characters"),
            (#"{"op":"submit","order":{"id":"\#(max)x"}}"#, "order.id: longer than 255 characters"),
            (#"{"op":"pause","run_id":"r","reason":"\#(reason)x"}"#, "reason: longer than 8192 bytes"),
            (#"{"op":"delete_data","foreign_id":"o","reason":"\#(String(repeating: "ü", count: 4097))"}"#, "reason: longer than"),
        ] {
            guard let (_, e) = failure(line) else { continue }
            #expect(e.code == .badRequest)
            #expect(e.message.hasPrefix(prefix), "\(e.message)")
        }
    }

    @Test func runReferences() throws {
        #expect(try op(#"{"op":"get","run_id":"r1"}"#) == .get(.runID("r1")))
        #expect(try op(#"{"op":"get","foreign_id":"o1"}"#) == .get(.foreignID(workflow: "order-processor", foreignID: "o1")))
        #expect(try op(#"{"op":"history","foreign_id":"o1","workflow":"w"}"#) == .history(.foreignID(workflow: "w", foreignID: "o1")))
        for line in [#"{"op":"get"}"#, #"{"op":"get","run_id":""}"#, #"{"op":"get","run_id":3}"#, #"{"op":"get","run_id":"a","foreign_id":"b"}"#] {
            guard let (_, e) = failure(line) else { continue }
            #expect(e.code == .badRequest)
            #expect(e.message.hasPrefix("run_id:"), "\(e.message)")
        }
        if let (_, e) = failure(#"{"op":"history","foreign_id":7}"#) { #expect(e.message.hasPrefix("foreign_id:")) }
    }

    @Test func controlOps() throws {
        #expect(try op(#"{"op":"pause","run_id":"r","reason":"ops"}"#) == .control(.pause, .runID("r"), reason: "ops"))
        #expect(try op(#"{"op":"resume","run_id":"r"}"#) == .control(.resume, .runID("r"), reason: nil))
        #expect(try op(#"{"op":"cancel","foreign_id":"o"}"#) == .control(.cancel, .foreignID(workflow: "order-processor", foreignID: "o"), reason: nil))
        #expect(try op(#"{"op":"delete_data","run_id":"r","reason":null}"#) == .control(.deleteData, .runID("r"), reason: nil))
        if let (_, e) = failure(#"{"op":"pause","run_id":"r","reason":5}"#) { #expect(e.message.hasPrefix("reason:")) }
        if let (_, e) = failure(#"{"op":"cancel"}"#) { #expect(e.message.hasPrefix("run_id:")) }
    }

    @Test func listDefaultsAndArguments() throws {
        #expect(try op(#"{"op":"list"}"#) == .list(ListArguments()))
        var a = ListArguments()
        a.workflow = "order-processor"
        a.statuses = [.name("OrderCompleted"), .code(6)]
        a.runStates = [2, 5]
        a.foreignIDs = ["o1", "o2"]
        a.createdAfter = 1_795_586_400_000
        a.createdBefore = 1_795_586_400_123
        a.order = .desc
        a.limit = 1000
        a.cursor = ListCursor(createdAt: 17, runID: "r:9")
        let line = #"{"op":"list","workflow":"order-processor","status":["OrderCompleted",6],"run_state":["Running",5],"foreign_id":["o1","o2"],"created_after":"2026-11-25T06:00:00.000Z","created_before":"2026-11-25T06:00:00.123Z","order":"desc","limit":1000,"cursor":"17:r:9"}"#
        #expect(try op(line) == .list(a))
        // A single value is taken as a one-element list.
        var b = ListArguments()
        b.statuses = [.name("OrderCreated")]
        #expect(try op(#"{"op":"list","status":"OrderCreated"}"#) == .list(b))
    }

    @Test(arguments: [
        (#"{"op":"list","limit":0}"#, "limit:"),
        (#"{"op":"list","limit":1001}"#, "limit:"),
        (#"{"op":"list","limit":2.5}"#, "limit:"),
        (#"{"op":"list","limit":"5"}"#, "limit:"),
        (#"{"op":"list","order":"up"}"#, "order:"),
        (#"{"op":"list","status":[true]}"#, "status:"),
        (#"{"op":"list","status":[-1]}"#, "status:"),
        (#"{"op":"list","run_state":["Sleeping"]}"#, "run_state:"),
        (#"{"op":"list","run_state":[9]}"#, "run_state:"),
        (#"{"op":"list","foreign_id":[1]}"#, "foreign_id:"),
        (#"{"op":"list","created_after":"yesterday"}"#, "created_after:"),
        (#"{"op":"list","created_before":"2026-11-25T06:00:00"}"#, "created_before:"),
        (#"{"op":"list","cursor":"nope"}"#, "cursor:"),
        (#"{"op":"list","workflow":[]}"#, "workflow:"),
    ])
    func listBadRequests(_ line: String, _ prefix: String) {
        guard let (_, e) = failure(line) else { return }
        #expect(e.code == .badRequest)
        #expect(e.message.hasPrefix(prefix), "\(e.message)")
    }

    @Test func awaitArguments() throws {
        #expect(
            try op(#"{"op":"await","run_id":"r"}"#)
                == .awaitStatus(AwaitArguments(run: .runID("r"), statuses: [], timeoutMilliseconds: 30000)))
        #expect(
            try op(#"{"op":"await","foreign_id":"o","status":["OrderCompleted",6],"timeout_ms":3600000}"#)
                == .awaitStatus(
                    AwaitArguments(
                        run: .foreignID(workflow: "order-processor", foreignID: "o"),
                        statuses: [.name("OrderCompleted"), .code(6)], timeoutMilliseconds: 3_600_000)))
        for (line, prefix) in [
            (#"{"op":"await","run_id":"r","timeout_ms":3600001}"#, "timeout_ms:"),
            (#"{"op":"await","run_id":"r","timeout_ms":-1}"#, "timeout_ms:"),
            (#"{"op":"await","run_id":"r","timeout_ms":"1"}"#, "timeout_ms:"),
            (#"{"op":"await","run_id":"r","status":{}}"#, "status:"),
            (#"{"op":"await"}"#, "run_id:"),
        ] {
            guard let (_, e) = failure(line) else { continue }
            #expect(e.code == .badRequest)
            #expect(e.message.hasPrefix(prefix), "\(e.message)")
        }
    }

    @Test func subscribeArguments() throws {
        #expect(try op(#"{"op":"subscribe"}"#) == .subscribe(SubscribeArguments()))
        var a = SubscribeArguments()
        a.from = .earliest
        #expect(try op(#"{"op":"subscribe","from":"earliest"}"#) == .subscribe(a))
        a.from = .seq(41)
        a.workflow = "order-processor"
        a.foreignID = "o"
        a.runID = "r"
        a.statuses = [.code(5)]
        a.runStates = [4]
        #expect(
            try op(#"{"op":"subscribe","from":41,"workflow":"order-processor","foreign_id":"o","run_id":"r","status":[5],"run_state":["Cancelled"]}"#)
                == .subscribe(a))
        var now = SubscribeArguments()
        now.from = .now
        #expect(try op(#"{"op":"subscribe","from":"now"}"#) == .subscribe(now))
        for (line, prefix) in [
            (#"{"op":"subscribe","from":"later"}"#, "from:"),
            (#"{"op":"subscribe","from":-3}"#, "from:"),
            (#"{"op":"subscribe","from":1.5}"#, "from:"),
            (#"{"op":"subscribe","run_id":1}"#, "run_id:"),
            (#"{"op":"subscribe","run_state":[0]}"#, "run_state:"),
        ] {
            guard let (_, e) = failure(line) else { continue }
            #expect(e.code == .badRequest)
            #expect(e.message.hasPrefix(prefix), "\(e.message)")
        }
    }

    @Test func unsubscribe() throws {
        #expect(try op(#"{"op":"unsubscribe","sub":3}"#) == .unsubscribe(sub: 3))
        for line in [#"{"op":"unsubscribe"}"#, #"{"op":"unsubscribe","sub":0}"#, #"{"op":"unsubscribe","sub":"3"}"#] {
            guard let (_, e) = failure(line) else { continue }
            #expect(e.code == .badRequest)
            #expect(e.message.hasPrefix("sub:"), "\(e.message)")
        }
    }

    @Test func everyOpNameDecodes() {
        let lines: [String: String] = [
            "submit": #"{"op":"submit","order":{"id":"1"}}"#,
            "trigger": #"{"op":"trigger","workflow":"w","foreign_id":"f","object":null}"#,
            "unsubscribe": #"{"op":"unsubscribe","sub":1}"#,
            "work": #"{"op":"work","status":"OrderValidated"}"#,
            "complete": #"{"op":"complete","task":"r/2/1","status":3}"#,
            "fail": #"{"op":"fail","task":"r/2/1","error":"card declined"}"#,
            "extend": #"{"op":"extend","task":"r/2/1"}"#,
            "unwork": #"{"op":"unwork","worker":1}"#,
            "callback": #"{"op":"callback","run_id":"r","status":2,"next":3}"#,
        ]
        for name in Operation.names {
            let line = lines[name] ?? (["get", "history", "await", "pause", "resume", "cancel", "delete_data"].contains(name)
                ? #"{"op":"\#(name)","run_id":"r"}"# : #"{"op":"\#(name)"}"#)
            guard case .request(let r) = RequestDecoder.decode(line) else {
                Issue.record("op \(name) did not decode")
                continue
            }
            #expect(r.operation.name == name)
        }
    }
}
