import Foundation
import Testing
import WorkflowTestSupport
import WorkflowWire

/// Every op of PROTOCOL.md on a real `workflowd serve` and MariaDB, with exactly its reply fields.
extension ProtocolE2E {
    @Suite("Protocol ops", .timeLimit(.minutes(3)))
    struct Ops {
        @Test func helloPingAndIDs() async throws {
            try await withServer { server, _ in
                let c = try server.client()
                let hello = parsed(try c.callLine(#"{"op":"hello","id":"h"}"#))
                #expect(hello.keys == ["id", "ok", "server", "version", "proto", "max_line", "workflows"], "\(hello)")
                #expect(hello["id"] == .string("h"))
                #expect(hello["ok"] == .bool(true))
                #expect(hello["server"] == .string("workflowd"))
                #expect(hello["version"]?.stringValue?.isEmpty == false)
                #expect(hello["proto"] == .number("1"))
                #expect(hello["max_line"] == .number("1048576"))
                let statuses = contractStatuses.enumerated().map {
                    #"{"name":"\#($1)","code":\#($0 + 1),"terminal":\#(terminalStatuses.contains($1)),"external":false}"#
                }
                #expect(
                    hello["workflows"]?.description
                        == #"[{"name":"order-processor","statuses":["# + statuses.joined(separator: ",") + "]}]")

                // ping, and `id` echoed exactly as sent, left out when absent.
                #expect(try c.callLine(#"{"op":"ping"}"#) == #"{"ok":true}"#)
                #expect(try c.callLine(#"{"op":"ping","id":1}"#) == #"{"id":1,"ok":true}"#)
                #expect(try c.callLine(#"{"id":"abc","op":"ping"}"#) == #"{"id":"abc","ok":true}"#)
                #expect(try c.callLine(#"{"op":"ping","id":""}"#) == #"{"id":"","ok":true}"#)
                #expect(try c.callLine(#"{"op":"ping","id":1e3}"#) == #"{"id":1e3,"ok":true}"#)
                #expect(try c.callLine(#"{"op":"ping","id":-7.25}"#) == #"{"id":-7.25,"ok":true}"#)
                #expect(
                    try c.callLine(#"{"op":"ping","id":123456789012345678901234567890}"#)
                        == #"{"id":123456789012345678901234567890,"ok":true}"#)
                #expect(try c.callLine(#"{"op":"ping","id":"é \"q\" \u2603"}"#).hasPrefix(#"{"id":"é \"q\" "#))
                #expect(try c.callLine(#"{"op":"ping","id":"x","extra":{"a":[1,2]}}"#) == #"{"id":"x","ok":true}"#)
                // An id that is neither string nor number: BAD_REQUEST, and no id in the reply.
                expectError(parsed(try c.callLine(#"{"op":"ping","id":true}"#)), code: "BAD_REQUEST", retryable: false, messagePrefix: "id")
                expectError(parsed(try c.callLine(#"{"op":"ping","id":{"a":1}}"#)), code: "BAD_REQUEST", retryable: false, messagePrefix: "id")
                expectError(parsed(try c.callLine(#"{"op":"ping","id":[1]}"#)), code: "BAD_REQUEST", retryable: false, messagePrefix: "id")
            }
        }

        @Test func submitTriggerGetHistory() async throws {
            try await withServer { server, _ in
                let c = try server.client()
                let line = try c.callLine(#"{"op":"submit","id":"s1","order":\#(orderJSON("ORD-A"))}"#)
                let s1 = parsed(line)
                #expect(s1.keySet == ["id", "ok", "run_id", "foreign_id", "status", "created"], "\(line)")
                #expect(s1["id"] == .string("s1") && s1["ok"] == .bool(true))
                #expect(s1["foreign_id"] == .string("ORD-A"))
                #expect(s1["status"] == .string("OrderCreated"))
                #expect(s1["created"] == .bool(true))
                let run1 = try #require(s1["run_id"]?.stringValue)
                #expect(!run1.isEmpty)

                let done = try awaitFinished(c, "ORD-A")
                #expect(done["status"] == .string("OrderCompleted"), "\(done)")
                // Finished: a new submit starts a new run.
                let s2 = try c.call(#"{"op":"submit","order":\#(orderJSON("ORD-A"))}"#)
                #expect(s2.keySet == ["ok", "run_id", "foreign_id", "status", "created"], "\(s2)")
                #expect(s2["created"] == .bool(true), "\(s2)")
                let run2 = try #require(s2["run_id"]?.stringValue)
                #expect(run2 != run1)
                try awaitFinished(c, "ORD-A")

                // An integer order id is refused at the door (the order processor's ids are strings).
                let s3 = try c.call(#"{"op":"submit","order":{"id":42,"customer_name":"N","email":"n@example.com","items":[{"product_id":"p","name":"x","quantity":3,"price":0.1}],"total":0.3}}"#)
                #expect(s3["ok"] == .bool(false), "\(s3)")
                #expect(s3["error"]?["code"] == .string("BAD_REQUEST"))
                #expect(s3["error"]?["message"]?.stringValue?.hasPrefix("order.id:") == true, "\(s3)")

                // trigger: as submit, for any workflow.
                let t = parsed(try c.callLine(#"{"op":"trigger","id":7,"workflow":"order-processor","foreign_id":"T-1","object":\#(orderJSON("T-1"))}"#))
                #expect(t.keySet == ["id", "ok", "run_id", "foreign_id", "status", "created"], "\(t)")
                #expect(t["id"] == .number("7") && t["foreign_id"] == .string("T-1") && t["created"] == .bool(true))
                #expect(t["status"] == .string("OrderCreated"))
                #expect(try awaitFinished(c, "T-1")["status"] == .string("OrderCompleted"))
                expectError(
                    parsed(try c.callLine(#"{"op":"trigger","workflow":"no-such-flow","foreign_id":"x","object":{}}"#)),
                    code: "NOT_FOUND", retryable: false)

                // get by run id: exactly {id, ok, run}; money exact; the workflow filled in its fields.
                let getLine = try c.callLine(#"{"op":"get","id":"g","run_id":"\#(run1)"}"#)
                let g = parsed(getLine)
                #expect(g.keys == ["id", "ok", "run"], "\(getLine)")
                expectRun(g["run"])
                let run = g["run"] ?? .null
                #expect(run["run_id"] == .string(run1) && run["foreign_id"] == .string("ORD-A"))
                #expect(run["status"] == .string("OrderCompleted") && run["status_code"] == .number("5"))
                #expect(run["run_state"] == .string("Completed") && run["version"] == .number("5"))
                #expect(run["reason"] == .null)
                #expect(getLine.contains(#""total":1359.97"#) && getLine.contains(#""price":1299.99"#), "\(getLine)")
                #expect(
                    run["object"]?.keySet
                        == ["id", "customer_name", "email", "items", "total", "payment_id", "tracking_id", "created_at", "updated_at"],
                    "\(run)")
                #expect(run["object"]?["payment_id"]?.stringValue?.isEmpty == false)
                #expect(run["object"]?["tracking_id"]?.stringValue?.isEmpty == false)
                #expect((run["created_at"]?.stringValue ?? "") <= (run["updated_at"]?.stringValue ?? ""))

                // get by foreign id: the latest run; with the workflow given too.
                let byForeign = try c.call(#"{"op":"get","foreign_id":"ORD-A"}"#)
                #expect(byForeign.keys == ["ok", "run"])
                #expect(byForeign["run"]?["run_id"] == .string(run2), "\(byForeign)")
                let withWorkflow = try c.call(#"{"op":"get","foreign_id":"ORD-A","workflow":"order-processor"}"#)
                #expect(withWorkflow["run"]?["run_id"] == .string(run2))
                expectError(parsed(try c.callLine(#"{"op":"get","foreign_id":"nobody","id":2}"#)), code: "NOT_FOUND", retryable: false, id: .number("2"))
                expectError(parsed(try c.callLine(#"{"op":"get","run_id":"no-such-run"}"#)), code: "NOT_FOUND", retryable: false)
                expectError(parsed(try c.callLine(#"{"op":"get","foreign_id":"ORD-A","workflow":"no-such-flow"}"#)), code: "NOT_FOUND", retryable: false)
                expectError(parsed(try c.callLine(#"{"op":"get"}"#)), code: "BAD_REQUEST", retryable: false, messagePrefix: "run_id")
                expectError(
                    parsed(try c.callLine(#"{"op":"get","run_id":"\#(run1)","foreign_id":"ORD-A"}"#)), code: "BAD_REQUEST", retryable: false,
                    messagePrefix: "run_id")

                // history: exactly {ok, events}, the five events of a completed order in seq order.
                for request in [#"{"op":"history","run_id":"\#(run1)"}"#, #"{"op":"history","foreign_id":"T-1","workflow":"order-processor"}"#] {
                    let h = try c.call(request)
                    #expect(h.keys == ["ok", "events"], "\(h)")
                    let events = h["events"]?.arrayValue ?? []
                    events.forEach { expectEvent($0) }
                    #expect(events.map { $0["version"]?.int64Value } == [1, 2, 3, 4, 5], "\(h)")
                    #expect(events.map { $0["status"]?.stringValue } == Array(contractStatuses.prefix(5)).map { Optional($0) })
                    #expect(events.map { $0["run_state"]?.stringValue } == ["Initiated", "Running", "Running", "Running", "Completed"])
                    let seqs = events.compactMap { $0["seq"]?.int64Value }
                    #expect(seqs == seqs.sorted() && Set(seqs).count == 5)
                    #expect(Set(events.compactMap { $0["run_id"]?.stringValue }).count == 1)
                    #expect(events.allSatisfy { $0["workflow"] == .string("order-processor") && $0["reason"] == .null })
                }
                let latest = try c.call(#"{"op":"history","foreign_id":"ORD-A"}"#)
                #expect(latest["events"]?.arrayValue?.allSatisfy { $0["run_id"] == .string(run2) } == true, "\(latest)")
                expectError(parsed(try c.callLine(#"{"op":"history","run_id":"no-such-run"}"#)), code: "NOT_FOUND", retryable: false)
            }
        }

        @Test func listFiltersOrderAndPaging() async throws {
            try await withServer { server, _ in
                let c = try server.client()
                for i in 1...6 { try submitOrder(c, "L-\(i)") }
                try submitOrder(c, "L-7", email: "not-an-email")
                for i in 1...7 { try awaitFinished(c, "L-\(i)") }

                let all = try c.call(#"{"op":"list","id":"l"}"#)
                #expect(all.keys == ["id", "ok", "runs", "next_cursor"], "\(all)")
                #expect(all["next_cursor"] == .null)
                let runs = all["runs"]?.arrayValue ?? []
                #expect(runs.count == 7)
                runs.forEach { expectRun($0) }
                let asc = runs.compactMap { $0["run_id"]?.stringValue }
                let created = runs.compactMap { $0["created_at"]?.stringValue }
                #expect(created == created.sorted(), "default order is ascending: \(created)")

                let desc = try c.call(#"{"op":"list","order":"desc"}"#)["runs"]?.arrayValue ?? []
                #expect(desc.compactMap { $0["run_id"]?.stringValue } == asc.reversed())

                // Cursor paging to the end, both orders; pages of 2 then an exact fit of 7.
                func pages(_ base: String, limit: Int) throws -> [[String]] {
                    var cursor: String? = nil
                    var out: [[String]] = []
                    for _ in 0..<20 {
                        let req = cursor.map { #"{"op":"list",\#(base)"limit":\#(limit),"cursor":"\#($0)"}"# } ?? #"{"op":"list",\#(base)"limit":\#(limit)}"#
                        let r = try c.call(req)
                        guard r["ok"] == .bool(true) else { throw TestError("\(req): \(r)") }
                        out.append((r["runs"]?.arrayValue ?? []).compactMap { $0["run_id"]?.stringValue })
                        guard case .string(let next)? = r["next_cursor"] else {
                            #expect(r["next_cursor"] == .null, "\(r)")
                            return out
                        }
                        cursor = next
                    }
                    throw TestError("no end of paging")
                }
                let ascPages = try pages(#""order":"asc","#, limit: 2)
                #expect(ascPages.map(\.count) == [2, 2, 2, 1], "\(ascPages)")
                #expect(ascPages.flatMap { $0 } == asc)
                let descPages = try pages(#""order":"desc","#, limit: 3)
                #expect(descPages.map(\.count) == [3, 3, 1], "\(descPages)")
                #expect(descPages.flatMap { $0 } == asc.reversed())
                let exact = try pages("", limit: 7)
                #expect(exact.flatMap { $0 } == asc)
                #expect(exact.count == 1 || (exact.count == 2 && exact[1].isEmpty), "exact fit: \(exact)")
                let filtered = try pages(#""status":["OrderCompleted"],"#, limit: 4)
                #expect(filtered.flatMap { $0 } == Array(asc.prefix(6)), "\(filtered)")

                // Stable under concurrent writes: new runs during paging; no run twice, none lost.
                let writer = try server.client()
                var seen: [String] = []
                var cursor: String? = nil
                var n = 0
                repeat {
                    let req = cursor.map { #"{"op":"list","limit":2,"cursor":"\#($0)"}"# } ?? #"{"op":"list","limit":2}"#
                    let r = try c.call(req)
                    seen += (r["runs"]?.arrayValue ?? []).compactMap { $0["run_id"]?.stringValue }
                    cursor = r["next_cursor"]?.stringValue
                    n += 1
                    try submitOrder(writer, "L-new-\(n)")
                } while cursor != nil && n < 50
                #expect(Set(seen).count == seen.count, "a run twice: \(seen)")
                #expect(Set(asc).isSubset(of: Set(seen)), "lost runs")

                // Filters (names, codes, single values), created_after inclusive / created_before exclusive.
                func ids(_ req: String) throws -> [String] {
                    let r = try c.call(req)
                    #expect(r["ok"] == .bool(true), "\(req): \(r)")
                    return (r["runs"]?.arrayValue ?? []).compactMap { $0["foreign_id"]?.stringValue }
                }
                #expect(try ids(#"{"op":"list","status":["OrderRejected"]}"#) == ["L-7"])
                #expect(try ids(#"{"op":"list","status":[6]}"#) == ["L-7"])
                #expect(try ids(#"{"op":"list","status":"OrderRejected"}"#) == ["L-7"])
                #expect(try ids(#"{"op":"list","status":["OrderRejected","OrderCompleted"],"foreign_id":["L-1","L-7","zz"]}"#) == ["L-1", "L-7"])
                #expect(try ids(#"{"op":"list","foreign_id":["L-2","L-3"],"run_state":["Completed"],"workflow":"order-processor"}"#) == ["L-2", "L-3"])
                #expect(try ids(#"{"op":"list","foreign_id":"L-4","run_state":[5]}"#) == ["L-4"])
                #expect(try ids(#"{"op":"list","foreign_id":["L-4"],"run_state":["Paused"]}"#) == [])
                let pivot = created[3]
                let after = try ids(#"{"op":"list","created_after":"\#(pivot)","foreign_id":["L-1","L-2","L-3","L-4","L-5","L-6","L-7"]}"#)
                #expect(after == runs.filter { ($0["created_at"]?.stringValue ?? "") >= pivot }.compactMap { $0["foreign_id"]?.stringValue })
                let before = try ids(#"{"op":"list","created_before":"\#(pivot)"}"#)
                #expect(before == runs.filter { ($0["created_at"]?.stringValue ?? "") < pivot }.compactMap { $0["foreign_id"]?.stringValue })
                #expect(try ids(#"{"op":"list","created_after":"2000-01-01T00:00:00Z","created_before":"2000-01-02T00:00:00+02:00"}"#) == [])

                for (req, field) in [
                    (#"{"op":"list","limit":0}"#, "limit"), (#"{"op":"list","limit":1001}"#, "limit"), (#"{"op":"list","limit":"5"}"#, "limit"),
                    (#"{"op":"list","order":"sideways"}"#, "order"), (#"{"op":"list","status":["Nope"]}"#, "status"),
                    (#"{"op":"list","run_state":["Sleeping"]}"#, "run_state"), (#"{"op":"list","created_after":"yesterday"}"#, "created_after"),
                    (#"{"op":"list","cursor":7}"#, "cursor"),
                ] {
                    expectError(parsed(try c.callLine(req)), code: "BAD_REQUEST", retryable: false, messagePrefix: field)
                }
                #expect(try c.call(#"{"op":"list","limit":1000}"#)["ok"] == .bool(true))
                #expect(try c.call(#"{"op":"list","limit":1}"#)["runs"]?.arrayValue?.count == 1)
            }
        }

        @Test func awaitReachedUnreachableAndBadArguments() async throws {
            try await withServer { server, _ in
                let c = try server.client()
                try submitOrder(c, "W-1")
                try submitOrder(c, "W-2", email: "nope")
                try awaitFinished(c, "W-1")
                try awaitFinished(c, "W-2")

                // Already reached: answered at once (well before its timeout).
                var t0 = Date()
                let a = parsed(try c.callLine(#"{"op":"await","id":"a","foreign_id":"W-1","timeout_ms":60000}"#, timeout: 5))
                #expect(Date().timeIntervalSince(t0) < 3)
                #expect(a.keys == ["id", "ok", "run"], "\(a)")
                expectRun(a["run"])
                #expect(a["run"]?["status"] == .string("OrderCompleted"))
                // Passed through on the way: also at once, the run as it is.
                t0 = Date()
                let passed = try c.call(#"{"op":"await","foreign_id":"W-1","status":["OrderValidated"],"timeout_ms":60000}"#, timeout: 5)
                #expect(Date().timeIntervalSince(t0) < 3)
                #expect(passed["ok"] == .bool(true) && passed["run"]?["status"] == .string("OrderCompleted"), "\(passed)")
                #expect(try c.call(#"{"op":"await","foreign_id":"W-1","status":"PaymentProcessed","timeout_ms":0}"#)["ok"] == .bool(true))
                #expect(try c.call(#"{"op":"await","foreign_id":"W-1","status":[3]}"#)["ok"] == .bool(true))
                let runID = try #require(a["run"]?["run_id"]?.stringValue)
                #expect(try c.call(#"{"op":"await","run_id":"\#(runID)","status":["OrderCreated"]}"#)["run"]?["run_id"] == .string(runID))

                // UNREACHABLE: the rejected order finished without PaymentProcessed.
                let u = parsed(try c.callLine(#"{"op":"await","id":9,"foreign_id":"W-2","status":["PaymentProcessed"],"timeout_ms":60000}"#, timeout: 10))
                let urun = expectError(u, code: "UNREACHABLE", retryable: false, id: .number("9"), withRun: true)
                #expect(urun?["status"] == .string("OrderRejected") && urun?["foreign_id"] == .string("W-2"), "\(u)")
                #expect(urun?["reason"]?.stringValue?.isEmpty == false, "\(u)")
                // Its default (any terminal status) is reached.
                #expect(try c.call(#"{"op":"await","foreign_id":"W-2"}"#)["run"]?["status"] == .string("OrderRejected"))

                expectError(parsed(try c.callLine(#"{"op":"await","foreign_id":"nobody","timeout_ms":100}"#)), code: "NOT_FOUND", retryable: false)
                expectError(parsed(try c.callLine(#"{"op":"await","run_id":"nope","timeout_ms":100}"#)), code: "NOT_FOUND", retryable: false)
                for (req, field) in [
                    (#"{"op":"await","foreign_id":"W-1","timeout_ms":3600001}"#, "timeout_ms"),
                    (#"{"op":"await","foreign_id":"W-1","timeout_ms":-1}"#, "timeout_ms"),
                    (#"{"op":"await","foreign_id":"W-1","timeout_ms":"1"}"#, "timeout_ms"),
                    (#"{"op":"await","foreign_id":"W-1","status":["Nope"]}"#, "status"),
                    (#"{"op":"await","status":["OrderCompleted"]}"#, "run_id"),
                ] {
                    expectError(parsed(try c.callLine(req)), code: "BAD_REQUEST", retryable: false, messagePrefix: field)
                }
                #expect(try c.call(#"{"op":"await","foreign_id":"W-1","timeout_ms":3600000}"#)["ok"] == .bool(true))
            }
        }

        /// A slow payment step (5 s) keeps runs unfinished: created:false, awaits that wait, TIMEOUT,
        /// and the run-state operations.
        @Test func unfinishedRunsAwaitLaterTimeoutAndRunStates() async throws {
            try await withServer(env: slowPaymentEnvironment) { server, _ in
                let c = try server.client()
                let t0 = Date()
                let first = try c.call(#"{"op":"submit","order":\#(orderJSON("S-1"))}"#)
                // S-3 is paused while its payment step runs, and resumed after the step would have ended.
                try submitOrder(c, "S-3")
                _ = try c.call(#"{"op":"await","foreign_id":"S-3","status":["OrderValidated"],"timeout_ms":30000}"#, timeout: 40)
                let paused3 = try c.call(#"{"op":"pause","foreign_id":"S-3"}"#)
                #expect(paused3["run"]?["run_state"] == .string("Paused") && paused3["run"]?["reason"]?.stringValue?.isEmpty == false, "\(paused3)")
                #expect(first["created"] == .bool(true), "\(first)")
                let again = parsed(try c.callLine(#"{"op":"submit","id":"again","order":\#(orderJSON("S-1"))}"#))
                #expect(again.keySet == ["id", "ok", "run_id", "foreign_id", "status", "created"], "\(again)")
                #expect(again["created"] == .bool(false), "\(again)")
                #expect(again["run_id"] == first["run_id"] && again["foreign_id"] == .string("S-1"))
                #expect(["OrderCreated", "OrderValidated"].contains(again["status"]?.stringValue ?? ""), "\(again)")
                let trig = try c.call(#"{"op":"trigger","workflow":"order-processor","foreign_id":"S-1","object":\#(orderJSON("S-1"))}"#)
                #expect(trig["created"] == .bool(false) && trig["run_id"] == first["run_id"], "\(trig)")

                // A later status, waited for.
                let validated = try c.call(#"{"op":"await","foreign_id":"S-1","status":["OrderValidated"],"timeout_ms":30000}"#, timeout: 40)
                #expect(validated["run"]?["status"] == .string("OrderValidated"), "\(validated)")
                #expect(validated["run"]?["run_state"] == .string("Running"))
                // TIMEOUT: retryable, with the run as it is.
                let to = parsed(try c.callLine(#"{"op":"await","id":"to","foreign_id":"S-1","timeout_ms":300}"#, timeout: 10))
                let torun = expectError(to, code: "TIMEOUT", retryable: true, id: .string("to"), withRun: true)
                #expect(torun?["status"] == .string("OrderValidated") && torun?["run_state"] == .string("Running"), "\(to)")
                let zero = try c.call(#"{"op":"await","foreign_id":"S-1","timeout_ms":0}"#)
                #expect(zero["error"]?["code"] == .string("TIMEOUT"), "\(zero)")

                // Run states on a second run, while the first waits for its payment.
                try submitOrder(c, "S-2")
                _ = try c.call(#"{"op":"await","foreign_id":"S-2","status":["OrderValidated"],"timeout_ms":30000}"#, timeout: 40)
                let pause = parsed(try c.callLine(#"{"op":"pause","id":"p","foreign_id":"S-2","reason":"customer called"}"#))
                #expect(pause.keys == ["id", "ok", "run"], "\(pause)")
                expectRun(pause["run"])
                #expect(pause["run"]?["run_state"] == .string("Paused") && pause["run"]?["reason"] == .string("customer called"), "\(pause)")
                expectError(parsed(try c.callLine(#"{"op":"pause","foreign_id":"S-2"}"#)), code: "INVALID_STATE", retryable: false)
                let resume = try c.call(#"{"op":"resume","foreign_id":"S-2","workflow":"order-processor"}"#)
                #expect(resume.keys == ["ok", "run"] && resume["run"]?["run_state"] == .string("Running"), "\(resume)")
                // resume of a Running run
                expectError(parsed(try c.callLine(#"{"op":"resume","id":"r2","foreign_id":"S-2"}"#)), code: "INVALID_STATE", retryable: false, id: .string("r2"))
                expectError(parsed(try c.callLine(#"{"op":"delete_data","foreign_id":"S-2"}"#)), code: "INVALID_STATE", retryable: false)
                let runID = try #require(resume["run"]?["run_id"]?.stringValue)
                // A pending await on a run that then ends elsewhere: UNREACHABLE, promptly.
                let waiter = try server.client()
                try waiter.send(#"{"op":"await","id":"pending","run_id":"\#(runID)","status":["OrderCompleted"],"timeout_ms":30000}"#)
                #expect(try waiter.callLine(#"{"op":"ping","id":"w"}"#) == #"{"id":"w","ok":true}"#)
                let cancel = try c.call(#"{"op":"cancel","run_id":"\#(runID)","reason":"duplicate"}"#)
                let tc = Date()
                let pending = parsed(try waiter.readLine(timeout: 10))
                let prun = expectError(pending, code: "UNREACHABLE", retryable: false, id: .string("pending"), withRun: true)
                #expect(prun?["run_state"] == .string("Cancelled"), "\(pending)")
                #expect(Date().timeIntervalSince(tc) < 3)
                #expect(cancel["run"]?["run_state"] == .string("Cancelled") && cancel["run"]?["reason"] == .string("duplicate"), "\(cancel)")
                expectError(parsed(try c.callLine(#"{"op":"cancel","run_id":"\#(runID)"}"#)), code: "INVALID_STATE", retryable: false)
                expectError(parsed(try c.callLine(#"{"op":"resume","run_id":"\#(runID)"}"#)), code: "INVALID_STATE", retryable: false)
                // An await on the cancelled run: it finished without a terminal status.
                let ac = try c.call(#"{"op":"await","run_id":"\#(runID)","status":["OrderCompleted"],"timeout_ms":5000}"#, timeout: 10)
                #expect(ac["error"]?["code"] == .string("UNREACHABLE"), "await on a cancelled run: \(ac)")

                let del = try c.call(#"{"op":"delete_data","run_id":"\#(runID)","reason":"GDPR request"}"#)
                #expect(del.keys == ["ok", "run"], "\(del)")
                #expect(["RequestedDataDeleted", "DataDeleted"].contains(del["run"]?["run_state"]?.stringValue ?? ""), "\(del)")
                var erased: JSON = .null
                for _ in 0..<100 {
                    erased = try c.call(#"{"op":"get","run_id":"\#(runID)"}"#)["run"] ?? .null
                    if erased["run_state"] == .string("DataDeleted") { break }
                    try await Task.sleep(for: .milliseconds(100))
                }
                #expect(erased["run_state"] == .string("DataDeleted"), "\(erased)")
                #expect(erased["object"]?["customer_name"] == .string("") && erased["object"]?["email"] == .string(""), "\(erased)")
                #expect(erased["object"]?["total"] == .number("1359.97"), "\(erased)")
                expectError(parsed(try c.callLine(#"{"op":"delete_data","run_id":"\#(runID)"}"#)), code: "INVALID_STATE", retryable: false)
                var h: [JSON] = []
                for _ in 0..<50 {  // the event log follows the outbox relay
                    h = try c.call(#"{"op":"history","run_id":"\#(runID)"}"#)["events"]?.arrayValue ?? []
                    if h.last?["run_state"] == .string("DataDeleted") { break }
                    try await Task.sleep(for: .milliseconds(100))
                }
                #expect(h.compactMap { $0["version"]?.int64Value } == (1...Int64(h.count)).map { $0 }, "\(h)")
                #expect(
                    h.compactMap { $0["run_state"]?.stringValue }.suffix(4) == ["Paused", "Running", "Cancelled", "RequestedDataDeleted"]
                        || h.compactMap { $0["run_state"]?.stringValue }.suffix(5) == [
                            "Paused", "Running", "Cancelled", "RequestedDataDeleted", "DataDeleted",
                        ], "\(h.map { $0["run_state"] ?? .null })")
                #expect(h.last?["run_state"] == .string("DataDeleted"), "\(h.map { $0["run_state"] ?? .null })")

                // The first run reaches PaymentProcessed after its 5 s payment.
                let paid = try c.call(#"{"op":"await","foreign_id":"S-1","status":["PaymentProcessed"],"timeout_ms":30000}"#, timeout: 40)
                #expect(Date().timeIntervalSince(t0) > 4, "payment latency 5 s")
                #expect(["PaymentProcessed", "OrderFulfilled", "OrderCompleted"].contains(paid["run"]?["status"]?.stringValue ?? ""), "\(paid)")
                let completed = try awaitFinished(c, "S-1")
                #expect(completed["status"] == .string("OrderCompleted"))
                expectError(parsed(try c.callLine(#"{"op":"pause","foreign_id":"S-1"}"#)), code: "INVALID_STATE", retryable: false)
                expectError(parsed(try c.callLine(#"{"op":"cancel","foreign_id":"S-1"}"#)), code: "INVALID_STATE", retryable: false)
                // S-3 stayed paused in OrderValidated although its payment step ended meanwhile;
                // resumed, it completes with one event per change and consecutive versions.
                let still = try c.call(#"{"op":"get","foreign_id":"S-3"}"#)["run"] ?? .null
                #expect(still["run_state"] == .string("Paused") && still["status"] == .string("OrderValidated"), "\(still)")
                #expect(try c.call(#"{"op":"resume","foreign_id":"S-3"}"#)["run"]?["run_state"] == .string("Running"))
                let done3 = try awaitFinished(c, "S-3")
                #expect(done3["status"] == .string("OrderCompleted") && done3["run_state"] == .string("Completed"), "\(done3)")
                var h3: [JSON] = []
                for _ in 0..<50 {
                    h3 = try c.call(#"{"op":"history","foreign_id":"S-3"}"#)["events"]?.arrayValue ?? []
                    if h3.last?["run_state"] == .string("Completed") { break }
                    try await Task.sleep(for: .milliseconds(100))
                }
                #expect(
                    h3.map { "\($0["status"]?.stringValue ?? "?")/\($0["run_state"]?.stringValue ?? "?")" } == [
                        "OrderCreated/Initiated", "OrderValidated/Running", "OrderValidated/Paused", "OrderValidated/Running",
                        "PaymentProcessed/Running", "OrderFulfilled/Running", "OrderCompleted/Completed",
                    ])
                #expect(h3.compactMap { $0["version"]?.int64Value } == Array(1...Int64(7)))
                expectError(parsed(try c.callLine(#"{"op":"pause","foreign_id":"nobody"}"#)), code: "NOT_FOUND", retryable: false)
                expectError(parsed(try c.callLine(#"{"op":"pause"}"#)), code: "BAD_REQUEST", retryable: false, messagePrefix: "run_id")
                expectError(parsed(try c.callLine(#"{"op":"cancel","foreign_id":"S-1","reason":5}"#)), code: "BAD_REQUEST", retryable: false, messagePrefix: "reason")
            }
        }

        @Test func subscribeAndUnsubscribe() async throws {
            try await withServer { server, _ in
                let c = try server.client()
                let sub = parsed(try c.callLine(#"{"op":"subscribe","id":"s"}"#))
                #expect(sub.keys == ["id", "ok", "sub", "head"], "\(sub)")
                let s = try #require(sub["sub"]?.int64Value)
                let head = try #require(sub["head"]?.int64Value)
                #expect(head == 0, "fresh database")

                let w = try server.client()
                let runA = try submitOrder(w, "U-1")
                try awaitFinished(w, "U-1")
                func frames(_ c: LineClient, _ n: Int) throws -> [JSON] {
                    try (0..<n).map { _ in
                        let f = try c.readJSON(timeout: 20)
                        #expect(f.keys == ["sub", "event"], "\(f)")
                        expectEvent(f["event"])
                        return f
                    }
                }
                let fa = try frames(c, 5)
                #expect(fa.allSatisfy { $0["sub"]?.int64Value == s })
                #expect(fa.compactMap { $0["event"]?["seq"]?.int64Value } == [1, 2, 3, 4, 5])
                #expect(fa.compactMap { $0["event"]?["version"]?.int64Value } == [1, 2, 3, 4, 5])
                #expect(fa.allSatisfy { $0["event"]?["run_id"] == .string(runA) && $0["event"]?["foreign_id"] == .string("U-1") })
                #expect(fa.compactMap { $0["event"]?["status"]?.stringValue } == Array(contractStatuses.prefix(5)))
                // Nothing else is pending: the next line is the ping reply.
                #expect(try c.callLine(#"{"op":"ping","id":"p"}"#) == #"{"id":"p","ok":true}"#)

                try submitOrder(w, "U-2", email: "bad")
                try awaitFinished(w, "U-2")  // seq 6, 7 (OrderCreated, OrderRejected)
                let fb = try frames(c, 2)
                #expect(fb.compactMap { $0["event"]?["seq"]?.int64Value } == [6, 7])
                #expect(fb.last?["event"]?["status"] == .string("OrderRejected") && fb.last?["event"]?["reason"]?.stringValue?.isEmpty == false)

                // from earliest with a status filter; from a seq; filters by run, foreign id, run state, workflow.
                let e = try server.client()
                func subscribe(_ c: LineClient, _ args: String) throws -> Int64 {
                    let r = try c.call(#"{"op":"subscribe"\#(args)}"#)
                    guard r["ok"] == .bool(true), let sub = r["sub"]?.int64Value else { throw TestError("subscribe\(args): \(r)") }
                    #expect(r["head"]?.int64Value == 7, "\(r)")
                    return sub
                }
                let s1 = try subscribe(e, #","from":"earliest","status":["OrderCompleted","OrderRejected"]"#)
                var got = try frames(e, 2)
                #expect(got.compactMap { $0["event"]?["seq"]?.int64Value } == [5, 7] && got.allSatisfy { $0["sub"]?.int64Value == s1 })
                #expect(try e.callLine(#"{"op":"unsubscribe","id":"u","sub":\#(s1)}"#) == #"{"id":"u","ok":true}"#)
                let s2 = try subscribe(e, #","from":3"#)
                #expect(s2 != s1)
                got = try frames(e, 4)
                #expect(got.compactMap { $0["event"]?["seq"]?.int64Value } == [4, 5, 6, 7])
                _ = try e.call(#"{"op":"unsubscribe","sub":\#(s2)}"#)
                let s3 = try subscribe(e, #","from":"earliest","run_id":"\#(runA)","run_state":["Running"]"#)
                got = try frames(e, 3)
                #expect(got.compactMap { $0["event"]?["seq"]?.int64Value } == [2, 3, 4])
                _ = try e.call(#"{"op":"unsubscribe","sub":\#(s3)}"#)
                let s4 = try subscribe(e, #","from":0,"foreign_id":"U-2","workflow":"order-processor","status":[1,6]"#)
                got = try frames(e, 2)
                #expect(got.compactMap { $0["event"]?["seq"]?.int64Value } == [6, 7] && got.allSatisfy { $0["sub"]?.int64Value == s4 })
                #expect(try e.callLine(#"{"op":"ping","id":1}"#) == #"{"id":1,"ok":true}"#)
                // A filter that matches nothing yet; a live event arrives for it later.
                let s5 = try subscribe(e, #","foreign_id":"U-3","status":"OrderCompleted""#)
                try submitOrder(w, "U-3")
                try awaitFinished(w, "U-3")
                got = try frames(e, 1)
                #expect(got.first?["sub"]?.int64Value == s5 && got.first?["event"]?["status"] == .string("OrderCompleted"), "\(got)")
                // s4 (U-2 only) saw none of U-3's events: the next line is the ping reply.
                #expect(try e.callLine(#"{"op":"ping","id":2}"#) == #"{"id":2,"ok":true}"#)
                // c (sub s, everything from seq 0 live) got U-3's five.
                #expect(try frames(c, 5).compactMap { $0["event"]?["seq"]?.int64Value } == [8, 9, 10, 11, 12])

                // Errors.
                expectError(parsed(try e.callLine(#"{"op":"unsubscribe","sub":\#(s1)}"#)), code: "NOT_FOUND", retryable: false)
                expectError(parsed(try e.callLine(#"{"op":"unsubscribe","sub":\#(s)}"#)), code: "NOT_FOUND", retryable: false)  // c's
                expectError(parsed(try e.callLine(#"{"op":"unsubscribe"}"#)), code: "BAD_REQUEST", retryable: false, messagePrefix: "sub")
                expectError(parsed(try e.callLine(#"{"op":"subscribe","from":"yesterday"}"#)), code: "BAD_REQUEST", retryable: false, messagePrefix: "from")
                expectError(parsed(try e.callLine(#"{"op":"subscribe","from":-1}"#)), code: "BAD_REQUEST", retryable: false, messagePrefix: "from")
                expectError(parsed(try e.callLine(#"{"op":"subscribe","status":["Nope"]}"#)), code: "BAD_REQUEST", retryable: false, messagePrefix: "status")

                // No frame after the unsubscribe reply, while events keep coming.
                let load = try server.client()
                for i in 0..<60 { try load.send(#"{"op":"submit","order":\#(orderJSON("U-load-\(i)"))}"#) }
                var before = 0
                while before < 20 {
                    let f = try c.readJSON(timeout: 20)
                    if f["sub"] != nil { before += 1 }
                }
                try c.send(#"{"op":"unsubscribe","id":"bye","sub":\#(s)}"#)
                var replied = false
                while !replied {
                    let f = try c.readJSON(timeout: 20)
                    if f["id"] == .string("bye") {
                        #expect(f.description == #"{"id":"bye","ok":true}"#)
                        replied = true
                    } else {
                        #expect(f["sub"]?.int64Value == s, "\(f)")
                    }
                }
                for i in 0..<60 { _ = try load.readJSON(timeout: 30); _ = i }
                for i in 0..<60 { try awaitFinished(w, "U-load-\(i)") }
                #expect(try c.callLine(#"{"op":"ping","id":"after"}"#) == #"{"id":"after","ok":true}"#, "a frame after unsubscribe")
                #expect(try c.next(timeout: 0.5) == .timedOut)
            }
        }

        @Test func statsGraphHealth() async throws {
            try await withServer { server, db in
                let c = try server.client()
                for i in 1...3 { try submitOrder(c, "X-\(i)") }
                try submitOrder(c, "X-4", email: "bad")
                for i in 1...4 { try awaitFinished(c, "X-\(i)") }
                try await db.waitFor("SELECT COUNT(*) FROM workflow_outbox", equals: 0)
                let subscriber = try server.client()
                _ = try subscriber.call(#"{"op":"subscribe"}"#)
                _ = try subscriber.call(#"{"op":"subscribe","status":["OrderCompleted"]}"#)

                let stats = parsed(try c.callLine(#"{"op":"stats","id":"st"}"#))
                #expect(
                    stats.keys == [
                        "id", "ok", "statuses", "run_states", "outbox", "head", "consumers", "connections", "subscriptions",
                        "uptime_ms", "external",
                    ],
                    "\(stats)")
                #expect(stats["statuses"]?.description == #"{"order-processor":{"OrderCompleted":3,"OrderRejected":1}}"#, "\(stats)")
                #expect(stats["run_states"]?.description == #"{"order-processor":{"Completed":4}}"#, "\(stats)")
                #expect(stats["outbox"]?.description == #"{"pending":0,"oldest_age_ms":null}"#, "\(stats)")
                #expect(stats["head"] == .number("17"), "3×5 + 2 events: \(stats)")
                let consumers = stats["consumers"]?.arrayValue ?? []
                #expect(!consumers.isEmpty)
                for consumer in consumers {
                    #expect(consumer.keys == ["name", "cursor", "lag"], "\(consumer)")
                    #expect(consumer["name"]?.stringValue?.isEmpty == false)
                    #expect(consumer["cursor"]?.int64Value != nil && (consumer["lag"]?.int64Value ?? -1) >= 0, "\(consumer)")
                }
                #expect(stats["connections"] == .number("2"), "\(stats)")
                #expect(stats["subscriptions"] == .number("2"), "\(stats)")
                #expect((stats["uptime_ms"]?.int64Value ?? -1) > 0)

                let graph = parsed(try c.callLine(#"{"op":"graph","id":1}"#))
                #expect(graph.keys == ["id", "ok", "mermaid"], "\(graph)")
                let mermaid = graph["mermaid"]?.stringValue ?? ""
                #expect(mermaid.hasPrefix("stateDiagram-v2\n"), "\(mermaid)")
                for edge in [
                    "[*] --> OrderCreated", "OrderCreated --> OrderValidated", "OrderValidated --> PaymentProcessed",
                    "PaymentProcessed --> OrderFulfilled", "OrderFulfilled --> OrderCompleted", "OrderCompleted --> [*]",
                    "OrderCreated --> OrderRejected",
                ] {
                    #expect(mermaid.contains(edge), "\(edge) missing in:\n\(mermaid)")
                }
                #expect(try c.call(#"{"op":"graph","workflow":"order-processor"}"#)["mermaid"]?.stringValue == mermaid)
                expectError(parsed(try c.callLine(#"{"op":"graph","workflow":"no-such-flow"}"#)), code: "NOT_FOUND", retryable: false)

                let health = parsed(try c.callLine(#"{"op":"health"}"#))
                #expect(health.keys == ["ok", "healthy", "checks"], "\(health)")
                #expect(health["healthy"] == .bool(true), "\(health)")
                let checks = health["checks"] ?? .null
                for name in ["database", "schema", "leases", "lag", "relay", "outbox"] { #expect(checks[name] != nil, "\(name): \(health)") }
                for name in checks.keys {
                    #expect(checks[name]?.keys == ["ok", "detail"], "\(name): \(health)")
                    #expect(checks[name]?["ok"] == .bool(true), "\(name): \(health)")
                    #expect(checks[name]?["detail"]?.stringValue != nil, "\(name): \(health)")
                }
            }
        }
    }
}
