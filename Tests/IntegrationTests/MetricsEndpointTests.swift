import Foundation
import Testing
import WorkflowTestSupport
import WorkflowWire

#if canImport(Glibc)
import Glibc
#endif

/// The `metrics` op and the `--metrics-listen` HTTP endpoint of a real server process.
@Suite("Metrics", .timeLimit(.minutes(3)))
struct MetricsEndpointTests {
    @Test func metricsOpAndHTTPEndpointAgreeWithTheDatabase() async throws {
        let port = try freeTCPPort()
        try await withServer(arguments: ["--metrics-listen", "127.0.0.1:\(port)"]) { server, db in
            let c = try server.client()
            for i in 1...3 { try submitOrder(c, "MET-\(i)") }
            try submitOrder(c, "MET-bad", email: "")  // rejected by validation
            for id in ["MET-1", "MET-2", "MET-3", "MET-bad"] { try awaitFinished(c, id) }
            _ = try c.call(#"{"op":"get","foreign_id":"NO-SUCH"}"#)  // one NOT_FOUND

            // Cursors are written shortly after the work; the lag gauge must come down to 0.
            var text = ""
            let deadline = Date().addingTimeInterval(30)
            repeat {
                let r = try c.call(#"{"op":"metrics","id":"m"}"#)
                #expect(r["ok"] == .bool(true) && r["id"] == .string("m"))
                text = r["metrics"]?.stringValue ?? ""
                if text.contains("\nworkflowd_consumer_lag_max_events 0\n") { break }
                try await Task.sleep(for: .milliseconds(100))
            } while Date() < deadline
            let completed = try await db.int("SELECT COUNT(*) FROM workflow_records WHERE status = 5")
            #expect(completed == 3)
            for line in [
                #"workflowd_runs{workflow="order-processor",status="OrderCompleted"} 3"#,
                #"workflowd_runs{workflow="order-processor",status="OrderRejected"} 1"#,
                #"workflowd_runs_by_run_state{workflow="order-processor",run_state="Completed"} 4"#,
                "workflowd_outbox_pending 0",
                "workflowd_consumer_lag_max_events 0",
                #"workflowd_run_state_changes_total{run_state="Initiated"} 4"#,
                #"workflowd_requests_total{op="submit"} 4"#,
                #"workflowd_request_errors_total{code="NOT_FOUND"} 1"#,
                "workflowd_connections 1",
                "workflowd_subscriptions 0",
                "workflowd_store_errors_total 0",
                // 3 completed orders ran 4 steps each, the rejected one 1: 13 steps, 13 updates.
                "workflowd_steps_total 13",
                "workflowd_transitions_applied_total 13",
                #"workflowd_step_duration_seconds_bucket{le="+Inf"} 13"#,
            ] {
                #expect(text.contains("\n" + line + "\n"), "missing: \(line)\n\(text)")
            }
            #expect(text.contains("# TYPE workflowd_step_duration_seconds histogram"))
            #expect(text.contains("# TYPE workflowd_requests_total counter"))

            // The same text over HTTP.
            let http = try await onThread { try httpGet(port: port, "GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n") }
            #expect(http.hasPrefix("HTTP/1.1 200 OK\r\n"), "\(http.prefix(200))")
            #expect(http.contains("Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"))
            #expect(http.contains(#"workflowd_runs{workflow="order-processor",status="OrderCompleted"} 3"#))
            #expect(http.contains(#"workflowd_requests_total{op="metrics"}"#))
            let body = http.components(separatedBy: "\r\n\r\n").dropFirst().joined(separator: "\r\n\r\n")
            let length = http.components(separatedBy: "\r\n").first { $0.hasPrefix("Content-Length: ") }.map { Int($0.dropFirst(16)) }
            #expect(length == body.utf8.count)

            let notFound = try await onThread { try httpGet(port: port, "GET /other HTTP/1.1\r\nHost: x\r\n\r\n") }
            #expect(notFound.hasPrefix("HTTP/1.1 404 Not Found\r\n"))
            let wrongMethod = try await onThread { try httpGet(port: port, "POST /metrics HTTP/1.1\r\nHost: x\r\n\r\n") }
            #expect(wrongMethod.hasPrefix("HTTP/1.1 405 Method Not Allowed\r\n"))
            let garbage = try await onThread { try httpGet(port: port, "\u{1}\u{2}garbage\r\n\r\n") }
            #expect(garbage.hasPrefix("HTTP/1.1 400 Bad Request\r\n"))
            // The server is still fine.
            #expect(try c.call(#"{"op":"ping"}"#)["ok"] == .bool(true))
        }
    }

    @Test func aBadMetricsAddressIsAClearStartupError() async throws {
        for (value, shown) in [("localhost:9464", "localhost:9464"), ("127.0.0.1", "127.0.0.1"), ("127.0.0.1:0", "127.0.0.1:0")] {
            let r = try await runProgram(ServerProcess.binary, ["serve", "--metrics-listen", value, "--dsn", "root@unix(/nonexistent.sock)/db"], stdin: nil, deadline: 30)
            #expect(r.status != 0 && r.status != nil)
            #expect(r.stderr.contains("--metrics-listen: '\(shown)' is not ADDRESS:PORT"), "\(r.stderr)")
        }
    }
}

/// A TCP port that was free a moment ago on 127.0.0.1.
func freeTCPPort() throws -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { throw TestError("socket: errno \(errno)") }
    defer { close(fd) }
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    addr.sin_port = 0
    var len = socklen_t(MemoryLayout<sockaddr_in>.size)
    let bound = withUnsafeMutablePointer(to: &addr) { p in
        p.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) == 0 && getsockname(fd, $0, &len) == 0 }
    }
    guard bound else { throw TestError("bind: errno \(errno)") }
    return Int(UInt16(bigEndian: addr.sin_port))
}

/// Sends `request` to 127.0.0.1:`port` and returns everything the server sends until it closes.
func httpGet(port: Int, _ request: String) throws -> String {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { throw TestError("socket: errno \(errno)") }
    defer { close(fd) }
    var timeout = timeval(tv_sec: 30, tv_usec: 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    addr.sin_port = UInt16(port).bigEndian
    let connected = withUnsafePointer(to: &addr) { p in
        p.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
    }
    guard connected else { throw TestError("connect to port \(port): errno \(errno)") }
    let bytes = Array(request.utf8)
    guard write(fd, bytes, bytes.count) == bytes.count else { throw TestError("write: errno \(errno)") }
    var out: [UInt8] = []
    var buf = [UInt8](repeating: 0, count: 65_536)
    while true {
        let n = read(fd, &buf, buf.count)
        if n < 0 { throw TestError("read: errno \(errno)") }
        if n == 0 { break }
        out += buf[0..<n]
    }
    return String(decoding: out, as: UTF8.self)
}
