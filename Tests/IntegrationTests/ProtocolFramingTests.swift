import Foundation
import Testing
import WorkflowTestSupport
import WorkflowWire

#if canImport(Glibc)
import Glibc
#endif

/// Framing, pipelining and half-close on the real socket.
extension ProtocolE2E {
    @Suite("Protocol framing", .timeLimit(.minutes(3)))
    struct Framing {
        @Test func bytesOnTheWire() async throws {
            try await withServer { server, _ in
                let c = try server.client()
                // Invalid UTF-8, NUL inside and outside a string, a lone NUL: BAD_JSON, connection stays.
                let bad: [[UInt8]] = [
                    Array(#"{"op":"ping","id":""#.utf8) + [0xFF] + Array(#""}"#.utf8),
                    Array(#"{"op":"ping","id":""#.utf8) + [0xC0, 0xAF] + Array(#""}"#.utf8),
                    Array(#"{"op":"ping","id":""#.utf8) + [0xE2, 0x82] + Array(#""}"#.utf8),
                    Array(#"{"op":"ping","id":""#.utf8) + [0xED, 0xA0, 0x80] + Array(#""}"#.utf8),  // encoded surrogate
                    [0xFF, 0xFE] + Array(#"{"op":"ping"}"#.utf8),
                    Array(#"{"op":"ping","id":"a"#.utf8) + [0] + Array(#"b"}"#.utf8),
                    Array(#"{"op":"ping",#.utf8) + [0] + Array(#""id":1}"#.utf8),
                    [0],
                    Array(#"{"op":"ping","id":"tab"#.utf8) + [9] + Array(#"inside"}"#.utf8),
                ]
                for bytes in bad {
                    try c.sendRaw(bytes + [10])
                    let line = try c.readLine()
                    let r = parsed(line)
                    expectError(r, code: "BAD_JSON", retryable: false)
                    #expect(r.keys == ["ok", "error"], "\(bytes) → \(String(describing: line))")
                }
                #expect(try c.callLine(#"{"op":"ping","id":"open"}"#) == #"{"id":"open","ok":true}"#)

                // \r\n endings; blank lines (empty, spaces, tabs, \r) are ignored.
                try c.sendRaw(Array("{\"op\":\"ping\",\"id\":1}\r\n".utf8))
                #expect(try c.readLine() == #"{"id":1,"ok":true}"#)
                try c.sendRaw(Array("\n\n   \n\t\r\n\r\n \t \n{\"op\":\"ping\",\"id\":2}\n\n".utf8))
                #expect(try c.readLine() == #"{"id":2,"ok":true}"#)
                #expect(try c.callLine(#"{"op":"ping","id":3}"#) == #"{"id":3,"ok":true}"#)
                #expect(try c.next(timeout: 0.3) == .timedOut)

                // Valid multi-byte UTF-8 comes back as the same text.
                let r = try c.call(#"{"op":"ping","id":"Grüße ☃ 𝄞 \u00e9"}"#)
                #expect(r["id"] == .string("Grüße ☃ 𝄞 é"), "\(r)")

                // Two requests in one write; one request dribbled a byte at a time.
                try c.sendRaw(Array("{\"op\":\"ping\",\"id\":4}\n{\"op\":\"ping\",\"id\":5}\n".utf8))
                #expect(try c.readLine() == #"{"id":4,"ok":true}"#)
                #expect(try c.readLine() == #"{"id":5,"ok":true}"#)
                for b in Array("{\"op\":\"ping\",\"id\":6}\n".utf8) {
                    try c.sendRaw([b])
                    usleep(2000)
                }
                #expect(try c.readLine() == #"{"id":6,"ok":true}"#)

                // The default max_line (1 MiB): exactly 1,048,576 bytes pass, one more is LINE_TOO_LONG.
                let big = try server.client()
                let head = #"{"op":"ping","id":"big","pad":""#
                let exact = head + String(repeating: "z", count: (1 << 20) - head.utf8.count - 2) + #""}"#
                #expect(exact.utf8.count == 1 << 20)
                try await onThread { [big = Unchecked(big)] in try big.value.send(exact) }
                #expect(try big.readLine(timeout: 30) == #"{"id":"big","ok":true}"#)
                let over = head + String(repeating: "z", count: (1 << 20) - head.utf8.count - 1) + #""}"#
                let bigBox = Unchecked(big)
                let writer = Task { try? await onThread { try bigBox.value.send(over) } }
                let bigLines = try big.readUntilClosed(timeout: 30)
                _ = await writer.value
                #expect(bigLines.count == 1, "\(bigLines.map { $0.prefix(100) })")
                expectError(parsed(bigLines.first), code: "LINE_TOO_LONG", retryable: false)

                // A last line without \n before the end of input is handled; then the server closes.
                try c.sendRaw(Array(#"{"op":"ping","id":"last"}"#.utf8))
                c.shutdownWrite()
                #expect(try c.readUntilClosed(timeout: 10) == [#"{"id":"last","ok":true}"#])
            }
        }

        @Test func halfCloseWithSocat() async throws {
            try await withServer { server, _ in
                let ping = try await runProgram(
                    "/usr/bin/socat", ["-", "UNIX-CONNECT:\(server.socketPath)"], stdin: #"{"op":"ping"}"# + "\n", deadline: 10)
                print("PROTOCOL-SOCAT: ping exited \(String(describing: ping.status)) after \(ping.seconds) s")
                #expect(ping.status == 0, "\(ping.stderr)")
                #expect(ping.stdout == #"{"ok":true}"# + "\n")
                #expect(ping.seconds < 2, "socat took \(ping.seconds) s")

                let c = try server.client()
                try submitOrder(c, "H-1")
                try awaitFinished(c, "H-1")
                let two = try await runProgram(
                    "/usr/bin/socat", ["-", "UNIX-CONNECT:\(server.socketPath)"],
                    stdin: #"{"op":"await","foreign_id":"H-1","id":"w"}"# + "\n" + #"{"op":"ping","id":"p"}"# + "\n" + #"{"op":"nope"}"#,
                    deadline: 10)
                #expect(two.status == 0)
                let lines = two.stdout.split(separator: "\n").map(String.init)
                #expect(lines.count == 3, "\(two.stdout)")
                #expect(Set(lines.map { (parsed($0)["id"] ?? .null).description }) == [#""w""#, #""p""#, "null"])
                #expect(two.seconds < 2)
            }
        }

        /// Half-close with our own client: pending replies (also a slow await) still arrive, then
        /// the server closes; with a subscription it keeps streaming until the client closes.
        @Test func halfCloseKeepsPendingRepliesAndSubscriptions() async throws {
            try await withServer(env: slowPaymentEnvironment) { server, _ in
                let w = try server.client()
                try submitOrder(w, "HC-1")
                let c = try server.client()
                try c.send(#"{"op":"await","id":"slow","foreign_id":"HC-1","status":["PaymentProcessed"],"timeout_ms":30000}"#)
                try c.send(#"{"op":"ping","id":1}"#)
                c.shutdownWrite()
                let lines = try c.readUntilClosed(timeout: 40)
                #expect(lines.count == 2, "\(lines)")
                #expect(lines.first == #"{"id":1,"ok":true}"#)
                let slow = parsed(lines.last)
                #expect(slow["id"] == .string("slow") && slow["ok"] == .bool(true), "\(slow)")

                let s = try server.client()
                let sub = try s.call(#"{"op":"subscribe","foreign_id":"HC-2"}"#)
                #expect(sub["ok"] == .bool(true))
                s.shutdownWrite()
                try submitOrder(w, "HC-2")
                let f = try s.readJSON(timeout: 20)
                #expect(f["event"]?["foreign_id"] == .string("HC-2") && f["event"]?["version"] == .number("1"), "\(f)")
                #expect(try s.readJSON(timeout: 20)["event"]?["status"] == .string("OrderValidated"))
                #expect(try s.next(timeout: 0.5) == .timedOut, "still open while subscribed")
            }
        }

        /// 1,000 requests written before reading: replies in request order by id, an await in the
        /// middle answered out of order when its run gets there.
        @Test func pipeliningAThousandRequests() async throws {
            try await withServer(env: slowPaymentEnvironment) { server, _ in
                let c = try server.client()
                try submitOrder(c, "PL-1")
                var text = ""
                for i in 0..<1000 {
                    switch i {
                    case 500: text += #"{"op":"await","id":"w","foreign_id":"PL-1","status":["PaymentProcessed"],"timeout_ms":60000}"#
                    case let i where i % 10 == 3: text += #"{"op":"get","id":\#(i),"foreign_id":"PL-1"}"#
                    case let i where i % 10 == 7: text += #"{"op":"nope","id":\#(i)}"#
                    default: text += #"{"op":"ping","id":\#(i)}"#
                    }
                    text += "\n"
                }
                let t0 = Date()
                try c.sendRaw(Array(text.utf8))
                var ids: [JSON] = []
                var firstNineNinetyNine = 0.0
                while ids.count < 1000 {
                    let r = try c.readJSON(timeout: 60)
                    ids.append(r["id"] ?? .null)
                    if ids.count == 999 { firstNineNinetyNine = Date().timeIntervalSince(t0) }
                    guard let n = r["id"]?.int64Value else {
                        #expect(r["id"] == .string("w") && r["ok"] == .bool(true), "\(r)")
                        #expect(["PaymentProcessed", "OrderFulfilled", "OrderCompleted"].contains(r["run"]?["status"]?.stringValue ?? ""), "\(r)")
                        continue
                    }
                    switch n % 10 {
                    case 3: #expect(r["ok"] == .bool(true) && r["run"]?["foreign_id"] == .string("PL-1"), "\(r)")
                    case 7: #expect(r["error"]?["code"] == .string("UNKNOWN_OP"), "\(r)")
                    default: #expect(r.description == #"{"id":\#(n),"ok":true}"#)
                    }
                }
                let expected = (0..<1000).filter { $0 != 500 }.map { JSON.number("\($0)") } + [.string("w")]
                #expect(ids == expected, "replies out of order")
                print("PROTOCOL-PIPELINE: 999 replies in \(firstNineNinetyNine) s, the await after \(Date().timeIntervalSince(t0)) s")
            }
        }
    }
}
