import Foundation
import Testing
import WorkflowMariaDB
import WorkflowTestSupport
import WorkflowWire

#if canImport(Glibc)
import Glibc
#endif

/// A TCP proxy in front of the test MariaDB's Unix socket that can stop passing bytes (a network
/// that goes silent: no reset, no FIN), so workflowd's connections hit their read timeouts and
/// its new connections their connect timeout. Threads of its own; blocking sockets.
final class SilentProxy: @unchecked Sendable {
    let port: Int
    private let target: String
    private let listener: Int32
    private let lock = NSLock()
    private var silent = false
    private var stopped = false
    private var open: Set<Int32> = []

    init(unixTarget: String) throws {
        target = unixTarget
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var yes: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &yes, socklen_t(MemoryLayout<Int32>.size))
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        let ok = withUnsafeMutablePointer(to: &addr) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, len) == 0 && getsockname(fd, $0, &len) == 0 && listen(fd, 64) == 0
            }
        }
        guard ok else {
            close(fd)
            throw TestError("proxy: bind/listen failed, errno \(errno)")
        }
        listener = fd
        port = Int(UInt16(bigEndian: addr.sin_port))
        Thread { self.acceptLoop() }.start()
    }

    var isSilent: Bool {
        get { lock.withLock { silent } }
        set { lock.withLock { silent = newValue } }
    }

    func stop() {
        lock.withLock {
            stopped = true
            for fd in open { shutdown(fd, Int32(SHUT_RDWR)) }
        }
        shutdown(listener, Int32(SHUT_RDWR))
        close(listener)
    }

    private var isStopped: Bool { lock.withLock { stopped } }

    private func acceptLoop() {
        while !isStopped {
            let client = accept(listener, nil, nil)
            if client < 0 { if isStopped { return } else { continue } }
            let server = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
            var addr = sockaddr_un()
            addr.sun_family = sa_family_t(AF_UNIX)
            withUnsafeMutableBytes(of: &addr.sun_path) { raw in
                let bytes = Array(target.utf8)
                raw.copyBytes(from: bytes.prefix(raw.count - 1))
            }
            let connected = withUnsafePointer(to: &addr) { p in
                p.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(server, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) == 0 }
            }
            guard connected else {
                close(client)
                close(server)
                continue
            }
            lock.withLock { open.formUnion([client, server]) }
            let pair = Pair(a: client, b: server)
            Thread { self.pump(from: client, to: server, pair) }.start()
            Thread { self.pump(from: server, to: client, pair) }.start()
        }
    }

    private final class Pair: @unchecked Sendable {
        let a: Int32, b: Int32
        private let lock = NSLock()
        private var ends = 0
        init(a: Int32, b: Int32) { self.a = a; self.b = b }
        /// The second pump to end closes both descriptors.
        func ended() -> Bool { lock.withLock { ends += 1; return ends == 2 } }
    }

    private func pump(from: Int32, to: Int32, _ pair: Pair) {
        var buf = [UInt8](repeating: 0, count: 65_536)
        loop: while !isStopped {
            if isSilent {
                usleep(10_000)  // the network is silent: nothing passes, nothing is closed
                continue
            }
            var p = pollfd(fd: from, events: Int16(POLLIN), revents: 0)
            let r = poll(&p, 1, 20)
            if r == 0 { continue }
            if r < 0 { break }
            if isSilent { continue }  // bytes arrived while going silent: hold them back
            let n = read(from, &buf, buf.count)
            if n <= 0 { break }
            var sent = 0
            while sent < n {
                let w = buf[sent..<n].withUnsafeBytes { write(to, $0.baseAddress!, n - sent) }
                if w <= 0 { break loop }
                sent += w
            }
        }
        shutdown(to, Int32(SHUT_RDWR))
        shutdown(from, Int32(SHUT_RDWR))
        if pair.ended() {
            lock.withLock { open.subtract([pair.a, pair.b]) }
            close(pair.a)
            close(pair.b)
        }
    }
}

/// The network to the database goes silent for a while (a timeout, not a refusal): requests get
/// UNAVAILABLE, the server stays up, the log has one warning and one recovery line, and every
/// acknowledged order finishes exactly once afterwards.
@Suite("Network timeout", .timeLimit(.minutes(4)))
struct NetworkTimeoutTests {
    @Test func aSilentNetworkIsSurvived() async throws {
        signal(SIGPIPE, SIG_IGN)
        let base = try await IntegrationDatabase.create()
        guard case .unix(let socketPath) = base.configuration.endpoint else {
            print("NETWORK-TIMEOUT: the test MariaDB is not on a Unix socket; skipped")
            await base.drop()
            return
        }
        let proxy = try SilentProxy(unixTarget: socketPath)
        defer { proxy.stop() }
        var viaProxy = base.configuration
        viaProxy.endpoint = .tcp(host: "127.0.0.1", port: proxy.port)
        viaProxy.connectTimeout = 1
        viaProxy.readTimeout = 2
        viaProxy.writeTimeout = 2
        let db = IntegrationDatabase(configuration: viaProxy)
        let s = try await ServerProcess.start(
            database: db, env: crashReportEnvironment.merging(["WORKFLOWD_LOG_LEVEL": "notice"]) { $1 })
        do {
            let c = try s.client()
            var acknowledged: [String] = []
            for i in 0..<20 {
                try submitOrder(c, "NT-before-\(i)")
                acknowledged.append("NT-before-\(i)")
            }
            proxy.isSilent = true
            let silentAt = Date()
            // Requests fail (after the read or connect timeout) with a retryable error.
            var unavailable = 0
            var unknown = 0
            var i = 0
            while Date().timeIntervalSince(silentAt) < 8 {
                let id = "NT-during-\(i)"
                i += 1
                let r = try c.call(#"{"op":"submit","order":\#(orderJSON(id))}"#, timeout: 60)
                if r["ok"] == .bool(true) {
                    acknowledged.append(id)
                    continue
                }
                let code = r["error"]?["code"]?.stringValue
                #expect(r["error"]?["retryable"] == .bool(true), "\(r)")
                if code == "UNAVAILABLE" { unavailable += 1 } else if code == "INTERNAL" { unknown += 1 } else { Issue.record("unexpected: \(r)") }
            }
            #expect(unavailable >= 1, "no UNAVAILABLE while the network was silent")
            #expect(s.process.isRunning)
            #expect(try c.call(#"{"op":"ping"}"#)["ok"] == .bool(true), "the socket still answers")
            proxy.isSilent = false

            // Back: new orders are taken; everything acknowledged finishes once.
            let back = Date().addingTimeInterval(60)
            var after = 0
            while after < 10 && Date() < back {
                let id = "NT-after-\(after)"
                let r = try c.call(#"{"op":"submit","order":\#(orderJSON(id))}"#, timeout: 60)
                if r["ok"] == .bool(true) {
                    acknowledged.append(id)
                    after += 1
                } else {
                    try await Task.sleep(for: .milliseconds(200))
                }
            }
            #expect(after == 10)
            try await base.waitFor("SELECT COUNT(*) FROM workflow_records WHERE run_state <> 5", equals: 0, timeout: 120)
            try await base.waitFor("SELECT COUNT(*) FROM workflow_outbox", equals: 0)
            let stored = Set(try await base.query("SELECT foreign_id FROM workflow_records").compactMap { $0[0] })
            #expect(Set(acknowledged).isSubset(of: stored), "acknowledged but not stored: \(Set(acknowledged).subtracting(stored))")
            let repeated = try await base.int(
                "SELECT COUNT(*) FROM (SELECT run_id FROM workflow_events GROUP BY run_id HAVING COUNT(*) <> COUNT(DISTINCT version)) x")
            #expect(repeated == 0, "a transition applied twice")

            let log = try await OutageLog(s)
            print("NETWORK-TIMEOUT: silent 8 s: \(unavailable) UNAVAILABLE, \(unknown) outcome-unknown replies; \(acknowledged.count) orders acknowledged, all finished once; log: \(log.summary)")
            #expect(log.failing.count == 1, "\(log.failing)")
            #expect(log.recovered.count == 1)
            #expect(log.others.isEmpty, "\(log.others.prefix(5).joined(separator: "\n"))")
            #expect(try await s.terminate() == 0)
        } catch {
            s.kill()
            await base.drop()
            throw error
        }
        await base.drop()
    }
}
