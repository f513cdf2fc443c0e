import Testing

@testable import WorkflowWire

@Suite struct ReplyTests {
    func text(_ b: [UInt8]) -> String { String(decoding: b, as: UTF8.self) }

    @Test func successEchoesIDOrLeavesItOut() {
        #expect(text(Reply.success(id: .string("a\"b"))) == #"{"id":"a\"b","ok":true}"# + "\n")
        #expect(text(Reply.success(id: .number("1e3"))) == #"{"id":1e3,"ok":true}"# + "\n")
        #expect(text(Reply.success(id: nil)) == #"{"ok":true}"# + "\n")
        let withBody = Reply.success(id: .number("7")) { w in
            w.key("sub"); w.int(3)
            w.key("head"); w.int(120)
        }
        #expect(text(withBody) == #"{"id":7,"ok":true,"sub":3,"head":120}"# + "\n")
    }

    @Test func failureHasCodeMessageRetryable() {
        let b = Reply.failure(id: .string("x"), WireError(.notFound, "no run 'r1'"))
        #expect(text(b) == #"{"id":"x","ok":false,"error":{"code":"NOT_FOUND","message":"no run 'r1'","retryable":false}}"# + "\n")
        let noID = Reply.failure(id: nil, WireError(.badJSON, "bad"))
        #expect(text(noID) == #"{"ok":false,"error":{"code":"BAD_JSON","message":"bad","retryable":false}}"# + "\n")
    }

    @Test func timeoutCarriesTheRun() throws {
        let run = RunPayload(
            workflow: "order-processor", foreignID: "o1", runID: "r1", runState: 2, statusCode: 2,
            statusName: "OrderValidated", version: 2, object: Array(#"{"id":"o1","total":1359.97}"#.utf8), reason: nil,
            createdAt: 1_795_586_400_000, updatedAt: 1_795_586_400_123)
        let b = Reply.failure(id: .number("1"), WireError(.timeout, "timed out", run: run.json))
        let v = try JSONParser.parse(Array(b.dropLast()))
        #expect(v["ok"] == .bool(false))
        let e = try #require(v["error"])
        #expect(e["code"] == .string("TIMEOUT"))
        #expect(e["retryable"] == .bool(true))
        #expect(e["run"]?["run_id"] == .string("r1"))
        #expect(e["run"]?["object"]?["total"] == .number("1359.97"))
        #expect(e["run"]?["updated_at"] == .string("2026-11-25T06:00:00.123Z"))
    }

    @Test func retryableFollowsTheTable() {
        let retryable = Set(WireError.Code.all.filter(\.retryable).map(\.name))
        #expect(retryable == ["TIMEOUT", "LIMIT", "UNAVAILABLE", "DRAINING", "INTERNAL"])
        #expect(WireError.Code.all.count == 15)
        #expect(WireError.Code.named("CONFLICT") == .conflict)
        #expect(WireError.Code.named("FORBIDDEN") == .forbidden)
        #expect(WireError.Code.named("GONE") == .gone)
        #expect(WireError.Code.named("LINE_TOO_LONG") == .lineTooLong)
    }

    @Test func goneCarriesTheEarliestSeqKept() throws {
        let bytes = Reply.failure(id: .number("7"), WireError(.gone, "removed by retention", earliest: 42))
        #expect(
            String(decoding: bytes, as: UTF8.self)
                == #"{"id":7,"ok":false,"error":{"code":"GONE","message":"removed by retention","retryable":false,"earliest":42}}"# + "\n")
        let frame = Reply.subscriptionEnded(sub: 3, WireError(.gone, "x", earliest: 9))
        #expect(
            String(decoding: frame, as: UTF8.self)
                == #"{"sub":3,"error":{"code":"GONE","message":"x","retryable":false,"earliest":9}}"# + "\n")
    }

    @Test func runPayloadHasExactlyTheProtocolFields() throws {
        let run = RunPayload(
            workflow: "order-processor", foreignID: "o1", runID: "r1", runState: 5, statusCode: 5,
            statusName: "OrderCompleted", version: 5, object: Array("{\n \"total\": 1359.97\n}".utf8), reason: "done",
            createdAt: 0, updatedAt: 1)
        let v = try JSONParser.parse(run.json)
        guard case .object(let members) = v else { Issue.record("not an object"); return }
        #expect(
            members.map(\.key)
                == ["workflow", "foreign_id", "run_id", "run_state", "status", "status_code", "version", "object", "reason", "created_at", "updated_at"])
        #expect(v["run_state"] == .string("Completed"))
        #expect(v["status"] == .string("OrderCompleted"))
        // A pretty-printed stored object is re-encoded onto one line, numbers unchanged.
        #expect(!run.json.contains(0x0A))
        #expect(v["object"] == .object([.init("total", .number("1359.97"))]))
    }

    @Test func eventFrameWrapsPreEncodedEvent() throws {
        let e = EventPayload(
            seq: 9, workflow: "order-processor", foreignID: "o1", runID: "r1", statusCode: 1, statusName: "OrderCreated",
            runState: 1, version: 1, at: 1_795_586_400_123, reason: nil)
        let json = e.json
        #expect(
            text(json)
                == #"{"seq":9,"workflow":"order-processor","foreign_id":"o1","run_id":"r1","status":"OrderCreated","status_code":1,"run_state":"Initiated","version":1,"at":"2026-11-25T06:00:00.123Z","reason":null}"#)
        let frame = EventFrame.encode(sub: 3, event: json)
        #expect(text(frame) == #"{"sub":3,"event":"# + text(json) + "}\n")
        #expect(EventFrame.prefix(sub: 3) + json + EventFrame.suffix == frame)
    }

    @Test func helloStatsHealthPayloads() throws {
        let hello = HelloInfo(
            server: "workflowd", version: "0.1.0", maxLine: 1_048_576,
            workflows: [.init(name: "order-processor", statuses: [.init(name: "OrderCreated", code: 1, terminal: false)])])
        let h = try JSONParser.parse(Array(Reply.success(id: nil, hello.writeMembers).dropLast()))
        #expect(h["proto"] == .number("1"))
        #expect(h["max_line"] == .number("1048576"))
        #expect(h["workflows"] == .array([.object([.init("name", .string("order-processor")), .init("statuses", .array([.object([.init("name", .string("OrderCreated")), .init("code", .number("1")), .init("terminal", .bool(false)), .init("external", .bool(false))])]))])]))

        let health = HealthInfo(checks: [.init(name: "database", ok: true, detail: "ok"), .init(name: "lag", ok: false, detail: "120 behind")])
        let hv = try JSONParser.parse(Array(Reply.success(id: nil, health.writeMembers).dropLast()))
        #expect(hv["healthy"] == .bool(false))
        #expect(hv["checks"]?["lag"]?["detail"] == .string("120 behind"))

        let stats = StatsInfo(
            byStatus: [(workflow: "order-processor", counts: [.init(name: "OrderCompleted", count: 4)])],
            byRunState: [(workflow: "order-processor", counts: [.init(name: "Completed", count: 4)])],
            outboxPending: 2, outboxOldestAgeMilliseconds: 15, head: 20, consumers: [.init(name: "c1", cursor: 18, lag: 2)],
            connections: 3, subscriptions: 1, uptimeMilliseconds: 1000)
        let sv = try JSONParser.parse(Array(Reply.success(id: nil, stats.writeMembers).dropLast()))
        #expect(sv["statuses"]?["order-processor"]?["OrderCompleted"] == .number("4"))
        #expect(sv["outbox"]?["oldest_age_ms"] == .number("15"))
        #expect(sv["consumers"] == .array([.object([.init("name", .string("c1")), .init("cursor", .number("18")), .init("lag", .number("2"))])]))
        #expect(sv["uptime_ms"] == .number("1000"))
    }

    @Test func mermaidGraph() {
        let statuses: [HelloInfo.Status] = [
            .init(name: "OrderCreated", code: 1, terminal: false), .init(name: "OrderValidated", code: 2, terminal: false),
            .init(name: "OrderCompleted", code: 5, terminal: true), .init(name: "OrderRejected", code: 6, terminal: true),
        ]
        let m = MermaidGraph.render(statuses: statuses, transitions: [1: [6, 2], 2: [5]], initial: 1)
        #expect(
            m == """
                stateDiagram-v2
                    [*] --> OrderCreated
                    OrderCreated --> OrderValidated
                    OrderCreated --> OrderRejected
                    OrderValidated --> OrderCompleted
                    OrderCompleted --> [*]
                    OrderRejected --> [*]

                """)
    }
}
