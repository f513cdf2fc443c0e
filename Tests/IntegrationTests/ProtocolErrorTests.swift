import Foundation
import Testing
import WorkflowTestSupport
import WorkflowWire

#if canImport(Glibc)
import Glibc
#endif

/// Every error code the server can produce, on a real process (INTERNAL is a bug and has no
/// trigger; TIMEOUT and UNREACHABLE are also in the ops suite, INVALID_STATE there in full).
extension ProtocolE2E {
    @Suite("Protocol errors", .timeLimit(.minutes(3)))
    struct Errors {
        @Test func badJSONBadRequestUnknownOpNotFound() async throws {
            try await withServer { server, _ in
                let c = try server.client()
                let deep = String(repeating: "[", count: 70) + String(repeating: "]", count: 70)
                for line in [
                    "not json", "[1,2]", #""a string""#, "42", "null", #"{"op":"#, "{'op':'ping'}", #"{"op":"ping"} trailing"#,
                    #"{"op":"ping",}"#, #"{"op":"ping","id":1,"x":\#(deep)}"#, #"{"op":"ping","id":"\ud800"}"#, #"{"op":"ping","id":01}"#,
                ] {
                    let r = parsed(try c.callLine(line))
                    expectError(r, code: "BAD_JSON", retryable: false)
                    #expect(r.keys == ["ok", "error"], "\(line) → \(r)")
                }
                #expect(try c.callLine(#"{"op":"ping","id":"still open"}"#) == #"{"id":"still open","ok":true}"#)

                for (line, field, id) in [
                    (#"{"id":1}"#, "op", JSON.number("1")),
                    (#"{"op":5,"id":"x"}"#, "op", .string("x")),
                    (#"{"op":null}"#, "op", nil),
                    (#"{"op":"submit","id":2}"#, "order", .number("2")),
                    (#"{"op":"submit","order":"ORD-1"}"#, "order", nil),
                    (#"{"op":"submit","order":{"customer_name":"A"}}"#, "order.id", nil),
                    (#"{"op":"submit","order":{"id":""}}"#, "order.id", nil),
                    (#"{"op":"submit","order":{"id":true}}"#, "order.id", nil),
                    (#"{"op":"trigger","foreign_id":"x","object":{}}"#, "workflow", nil),
                    (#"{"op":"trigger","workflow":"order-processor","object":{}}"#, "foreign_id", nil),
                    (#"{"op":"trigger","workflow":"order-processor","foreign_id":"x"}"#, "object", nil),
                    (#"{"op":"get","run_id":5}"#, "run_id", nil),
                    (#"{"op":"get","foreign_id":["a"]}"#, "foreign_id", nil),
                    (#"{"op":"history"}"#, "run_id", nil),
                    (#"{"op":"unsubscribe","sub":"one"}"#, "sub", nil),
                    (#"{"op":"graph","workflow":5}"#, "workflow", nil),
                    (#"{"op":"list","foreign_id":[1,{}]}"#, "foreign_id", nil),
                ] {
                    let r = parsed(try c.callLine(line))
                    expectError(r, code: "BAD_REQUEST", retryable: false, id: id, messagePrefix: field)
                }
                expectError(parsed(try c.callLine(#"{"op":"frobnicate","id":7}"#)), code: "UNKNOWN_OP", retryable: false, id: .number("7"))
                expectError(parsed(try c.callLine(#"{"op":"PING"}"#)), code: "UNKNOWN_OP", retryable: false)
                expectError(parsed(try c.callLine(#"{"op":"get","id":"nf","run_id":"00000000-0000-0000-0000-000000000000"}"#)), code: "NOT_FOUND", retryable: false, id: .string("nf"))
                expectError(parsed(try c.callLine(#"{"op":"history","foreign_id":"nobody"}"#)), code: "NOT_FOUND", retryable: false)
                expectError(parsed(try c.callLine(#"{"op":"cancel","run_id":"nope"}"#)), code: "NOT_FOUND", retryable: false)
                expectError(parsed(try c.callLine(#"{"op":"delete_data","foreign_id":"nobody"}"#)), code: "NOT_FOUND", retryable: false)
                expectError(parsed(try c.callLine(#"{"op":"unsubscribe","sub":12345}"#)), code: "NOT_FOUND", retryable: false)
                #expect(try c.callLine(#"{"op":"ping","id":"end"}"#) == #"{"id":"end","ok":true}"#)
            }
        }

        @Test func connectionLimit() async throws {
            try await withServer(arguments: ["--max-connections", "5"]) { server, _ in
                // Five connections, each answered (retry while the readiness probe is still counted).
                var clients: [LineClient] = []
                let deadline = Date().addingTimeInterval(20)
                while clients.count < 5 {
                    let c = try server.client()
                    let r = try c.call(#"{"op":"ping","id":1}"#)
                    if r["ok"] == .bool(true) {
                        clients.append(c)
                    } else {
                        #expect(r["error"]?["code"] == .string("LIMIT"), "\(r)")
                        guard Date() < deadline else { throw TestError("could not open 5 connections") }
                        try await Task.sleep(for: .milliseconds(100))
                    }
                }
                #expect(try clients[0].call(#"{"op":"stats"}"#)["connections"] == .number("5"))
                // The sixth: one LIMIT line without id, then the server closes it.
                let sixth = try server.client()
                let lines = try sixth.readUntilClosed(timeout: 10)
                #expect(lines.count == 1, "\(lines)")
                expectError(parsed(lines.first), code: "LIMIT", retryable: true)
                // The five still work; after one leaves, a new one is let in.
                for c in clients { #expect(try c.callLine(#"{"op":"ping"}"#) == #"{"ok":true}"#) }
                clients.removeFirst()
                var admitted = false
                for _ in 0..<100 where !admitted {
                    let c = try server.client()
                    if case .line(let l) = try { try c.send(#"{"op":"ping","id":"n"}"#); return try c.next(timeout: 5) }(), l == #"{"id":"n","ok":true}"# {
                        admitted = true
                    } else {
                        try await Task.sleep(for: .milliseconds(50))
                    }
                }
                #expect(admitted)
            }
        }

        @Test func subscriptionLimit() async throws {
            try await withServer { server, _ in
                let c = try server.client()
                var subs: [Int64] = []
                for i in 0..<64 {
                    let r = try c.call(#"{"op":"subscribe","id":\#(i),"foreign_id":"f\#(i)"}"#)
                    #expect(r["ok"] == .bool(true), "\(r)")
                    if let s = r["sub"]?.int64Value { subs.append(s) }
                }
                #expect(Set(subs).count == 64)
                expectError(parsed(try c.callLine(#"{"op":"subscribe","id":"65th"}"#)), code: "LIMIT", retryable: true, id: .string("65th"))
                #expect(try server.client().call(#"{"op":"stats"}"#)["subscriptions"] == .number("64"))
                // The limit is per connection.
                #expect(try server.client().call(#"{"op":"subscribe"}"#)["ok"] == .bool(true))
                #expect(try c.callLine(#"{"op":"unsubscribe","sub":\#(subs[10])}"#) == #"{"ok":true}"#)
                #expect(try c.call(#"{"op":"subscribe"}"#)["ok"] == .bool(true))
                expectError(parsed(try c.callLine(#"{"op":"subscribe"}"#)), code: "LIMIT", retryable: true)
            }
        }

        @Test func lineTooLongClosesAfterEarlierReplies() async throws {
            try await withServer(arguments: ["--max-line", "1024"]) { server, _ in
                let c = try server.client()
                #expect(try c.call(#"{"op":"hello"}"#)["max_line"] == .number("1024"))
                // Exactly 1024 bytes (without the line end) is allowed, also with \r\n.
                func ping(id: Int, length: Int) -> String {
                    let head = #"{"op":"ping","id":\#(id),"pad":""#
                    return head + String(repeating: "x", count: length - head.utf8.count - 2) + #""}"#
                }
                #expect(ping(id: 1, length: 1024).utf8.count == 1024)
                #expect(try c.callLine(ping(id: 1, length: 1024)) == #"{"id":1,"ok":true}"#)
                try c.sendRaw(Array((ping(id: 2, length: 1024) + "\r\n").utf8))
                #expect(try c.readLine() == #"{"id":2,"ok":true}"#)
                // 1025 bytes: the earlier reply, then LINE_TOO_LONG, then the end; nothing after it is answered.
                try c.sendRaw(Array((#"{"op":"ping","id":3}"# + "\n" + ping(id: 4, length: 1025) + "\n" + #"{"op":"ping","id":5}"# + "\n").utf8))
                let lines = try c.readUntilClosed(timeout: 10)
                #expect(lines.count == 2, "\(lines)")
                #expect(lines.first == #"{"id":3,"ok":true}"#)
                expectError(parsed(lines.dropFirst().first), code: "LINE_TOO_LONG", retryable: false)

                // A much longer line (1 MiB, sent while the server is already closing).
                let d = try server.client()
                let big = Array((#"{"op":"ping","pad":""# + String(repeating: "y", count: 1 << 20)).utf8)
                let writer = Task.detached { [fd = d.fd] in
                    var off = 0
                    while off < big.count {
                        let n = big[off...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
                        if n <= 0 { break }
                        off += n
                    }
                }
                let bigLines = try d.readUntilClosed(timeout: 20)
                await writer.value
                #expect(bigLines.count == 1, "\(bigLines.map { $0.prefix(200) })")
                expectError(parsed(bigLines.first), code: "LINE_TOO_LONG", retryable: false)
                #expect(try server.client().callLine(#"{"op":"ping"}"#) == #"{"ok":true}"#)
            }
        }

        /// SIGTERM while a client keeps sending: its later requests are answered DRAINING (id
        /// echoed, retryable), replies stay in order, the server closes the connection and exits 0.
        /// SIGTERM while a request is in flight (a submit held up by a table lock) and another
        /// client keeps sending: its new requests get DRAINING (id echoed, retryable) in order, the
        /// in-flight submit still gets its result, then the server closes and exits 0.
        @Test func drainingWhileAClientKeepsSending() async throws {
            signal(SIGPIPE, SIG_IGN)
            let db = try await IntegrationDatabase.create()
            let server = try await ServerProcess.start(database: db, env: crashReportEnvironment)
            var lock: TableLock? = nil
            do {
                lock = try await TableLock(db, table: "workflow_records")
                let a = try server.client()
                try a.send(#"{"op":"submit","id":"held","order":\#(orderJSON("DR-1"))}"#)
                try await Task.sleep(for: .milliseconds(300))
                let c = try server.client()
                let box = Unchecked(c)
                let writer = Task {
                    try await onThread { () -> Int in
                        var n = 0
                        while n < 1_000_000 {
                            do { try box.value.send(#"{"op":"ping","id":\#(n)}"#) } catch { break }
                            n += 1
                            if n % 20 == 0 { usleep(1000) }
                        }
                        return n
                    }
                }
                var lines: [String] = []
                while lines.count < 100 {
                    guard let l = try c.readLine(timeout: 20) else { throw TestError("closed early") }
                    lines.append(l)
                }
                Glibc.kill(server.pid, SIGTERM)
                var draining = 0
                while draining < 50 {
                    guard let l = try c.readLine(timeout: 20) else { break }
                    lines.append(l)
                    if l.contains("DRAINING") { draining += 1 }
                }
                await lock?.release()
                lock = nil
                lines += try c.readUntilClosed(timeout: 30)
                let held = try a.readUntilClosed(timeout: 30)
                let sent = try await writer.value
                let status = try await server.terminate()
                #expect(status == 0, "\(server.log.suffix(2000))")
                #expect(!FileManager.default.fileExists(atPath: server.socketPath), "socket file left behind")

                #expect(held.count == 1, "\(held)")
                let r = parsed(held.first)
                #expect(r["id"] == .string("held") && r["ok"] == .bool(true) && r["created"] == .bool(true), "in-flight submit: \(r)")
                var drainingTotal = 0
                var okAfterDraining = 0
                for (n, line) in lines.enumerated() {
                    if line == #"{"id":\#(n),"ok":true}"# {
                        if drainingTotal > 0 { okAfterDraining += 1 }
                        continue
                    }
                    expectError(parsed(line), code: "DRAINING", retryable: true, id: .number("\(n)"))
                    drainingTotal += 1
                    if drainingTotal > 5 && !line.contains("DRAINING") { break }
                }
                print("PROTOCOL-DRAINING: sent \(sent) pings, got \(lines.count) replies, \(drainingTotal) DRAINING, \(okAfterDraining) ok after the first DRAINING; held submit: \(r)")
                #expect(drainingTotal >= 50, "DRAINING replies: \(drainingTotal) of \(lines.count) (sent \(sent))")
                #expect(lines.count <= sent)
            } catch {
                await lock?.release()
                server.kill()
                await db.drop()
                throw error
            }
            await db.drop()
        }

        /// MariaDB goes away under a running server: UNAVAILABLE (retryable, nothing changed), the
        /// server stays up, and works again once the database is back.
        @Test(.timeLimit(.minutes(3))) func unavailableWhileTheDatabaseIsDown() async throws {
            try await withStoppableServer { s, mdb, _ in
                let c = try s.client()
                try submitOrder(c, "UA-1")
                #expect(try awaitFinished(c, "UA-1")["status"] == .string("OrderCompleted"))

                try await mdb.stop()
                let t0 = Date()
                let r = parsed(try c.callLine(#"{"op":"submit","id":"down","order":\#(orderJSON("UA-2"))}"#, timeout: 60))
                print("PROTOCOL-UNAVAILABLE: submit with the database down answered in \(Date().timeIntervalSince(t0)) s: \(r)")
                expectError(r, code: "UNAVAILABLE", retryable: true, id: .string("down"))
                expectError(parsed(try c.callLine(#"{"op":"get","foreign_id":"UA-1"}"#, timeout: 60)), code: "UNAVAILABLE", retryable: true)
                #expect(try c.callLine(#"{"op":"ping","id":"up"}"#) == #"{"id":"up","ok":true}"#)
                let health = try c.call(#"{"op":"health"}"#, timeout: 60)
                #expect(health["ok"] == .bool(true) && health["healthy"] == .bool(false), "\(health)")
                #expect(health["checks"]?["database"]?["ok"] == .bool(false), "\(health)")
                #expect(s.process.isRunning)
                // A new connection is served too.
                #expect(try s.client().callLine(#"{"op":"ping"}"#) == #"{"ok":true}"#)

                try await mdb.start()
                var back: JSON = .null
                let deadline = Date().addingTimeInterval(60)
                repeat {
                    back = try c.call(#"{"op":"submit","order":\#(orderJSON("UA-3"))}"#, timeout: 60)
                    if back["ok"] == .bool(true) { break }
                    #expect(back["error"]?["code"] == .string("UNAVAILABLE"), "\(back)")
                    try await Task.sleep(for: .milliseconds(250))
                } while Date() < deadline
                #expect(back["ok"] == .bool(true) && back["created"] == .bool(true), "\(back)")
                #expect(try awaitFinished(c, "UA-3")["status"] == .string("OrderCompleted"))
                // Nothing was changed by the refused submit.
                expectError(parsed(try c.callLine(#"{"op":"get","foreign_id":"UA-2"}"#)), code: "NOT_FOUND", retryable: false)
            }
        }
    }
}
