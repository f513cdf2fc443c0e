import Foundation
import WorkflowWire

#if canImport(Glibc)
import Glibc
#endif

/// A Unix-socket client for tests. Reads poll a non-blocking socket and sleep between tries, so
/// a waiting test never holds a thread of Swift's cooperative pool (the server's engine calls
/// run there) and its expectations stay attributed to the test.
/// `@unchecked Sendable`: a test hands a client to one blocking thread at a time (`onThread`), never
/// to two at once.
final class TestClient: @unchecked Sendable {
    let fd: Int32
    private var buffer: [UInt8] = []

    init(path: String, receiveTimeoutSeconds: Int = 10) throws {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        self.fd = fd
        timeout = .seconds(receiveTimeoutSeconds)
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
        }
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard rc == 0 else {
            // `deinit` closes the descriptor.
            throw TestError("connect failed: errno \(errno)")
        }
    }

    private let timeout: Duration

    deinit { close(fd) }

    func send(_ text: String) { send(Array(text.utf8)) }

    func send(_ bytes: [UInt8]) {
        var off = 0
        while off < bytes.count {
            let n = bytes[off...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n <= 0 { return }
            off += n
        }
    }

    func shutdownWrite() { shutdown(fd, Int32(SHUT_WR)) }

    private(set) var sawEOF = false

    /// The next line without `\n`; nil at end of stream or timeout.
    func readLine() async -> String? {
        let deadline = ContinuousClock.now + timeout
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            if let nl = buffer.firstIndex(of: 0x0A) {
                let line = String(decoding: buffer[..<nl], as: UTF8.self)
                buffer.removeFirst(nl + 1)
                return line
            }
            let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
            if n > 0 {
                buffer.append(contentsOf: chunk[..<n])
                continue
            }
            if n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK) {
                sawEOF = true
                return nil
            }
            if ContinuousClock.now > deadline { return nil }
            try? await Task.sleep(for: .milliseconds(1))
        }
    }

    func readJSON() async -> JSON? {
        guard let line = await readLine() else { return nil }
        return try? JSONParser.parse(line)
    }

    /// True when the server closed the connection (EOF) with nothing left to read.
    func atEOF() async -> Bool {
        guard buffer.isEmpty, await readLine() == nil else { return false }
        return sawEOF
    }

    func request(_ line: String) async -> JSON? {
        send(line + "\n")
        return await readJSON()
    }
}

struct TestError: Error, CustomStringConvertible {
    var description: String
    init(_ d: String) { description = d }
}

/// Runs blocking work on a fresh thread and awaits its result.
func onThread<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { (c: CheckedContinuation<T, any Error>) in
        let t = Thread {
            do { c.resume(returning: try body()) } catch { c.resume(throwing: error) }
        }
        t.stackSize = 1 << 20
        t.start()
    }
}

func temporarySocketPath(_ name: String = #function) -> String {
    let clean = name.filter { $0.isLetter || $0.isNumber }.prefix(20)
    return "/tmp/wfd-\(getpid())-\(clean)-\(UInt32.random(in: 0..<UInt32.max)).sock"
}
