import Foundation
import WorkflowWire

#if canImport(Glibc)
import Glibc
#endif

/// A minimal blocking newline-JSON client over a Unix socket, for tests.
public final class LineClient {
    public let fd: Int32
    private var buffer: [UInt8] = []

    public init(path: String) throws {
        // `fd` is stored only once connected: a class whose init throws after its properties
        // are set runs `deinit`, which would close the descriptor a second time — by then,
        // perhaps, another thread's new socket under the same number.
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw TestError("socket() failed") }
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: addr.sun_path) else {
            close(fd)
            throw TestError("socket path too long")
        }
        withUnsafeMutableBytes(of: &addr.sun_path) { p in
            for (i, b) in bytes.enumerated() { p[i] = b }
            p[bytes.count] = 0
        }
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        if rc != 0 {
            let e = errno
            close(fd)
            throw TestError("connect(\(path)) failed: errno \(e)")
        }
        self.fd = fd
    }

    deinit { close(fd) }

    public func send(_ line: String) throws {
        let data = Array((line + "\n").utf8)
        var off = 0
        while off < data.count {
            let n = data[off...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            guard n > 0 else { throw TestError("write failed: errno \(errno)") }
            off += n
        }
    }

    /// The next line, or nil at end of stream; throws after `timeout` seconds without one.
    public func readLine(timeout: Double = 30) throws -> String? {
        let deadline = Date().addingTimeInterval(timeout)
        while true {
            if let nl = buffer.firstIndex(of: 10) {
                let line = String(decoding: buffer[..<nl], as: UTF8.self)
                buffer.removeSubrange(...nl)
                return line
            }
            let left = deadline.timeIntervalSinceNow
            guard left > 0 else { throw TestError("no reply within \(timeout) s") }
            var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let ready = poll(&pfd, 1, Int32(min(left, 1) * 1000))
            if ready <= 0 { continue }
            var chunk = [UInt8](repeating: 0, count: 65536)
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, 65536) }
            if n <= 0 { return nil }
            buffer += chunk[..<n]
        }
    }

    /// Sends one request and returns its reply parsed.
    public func call(_ line: String, timeout: Double = 30) throws -> JSON {
        try send(line)
        guard let reply = try readLine(timeout: timeout) else { throw TestError("connection closed") }
        return try JSONParser.parse(reply)
    }

    public func shutdownWrite() { shutdown(fd, Int32(SHUT_WR)) }
}

public struct TestError: Error, CustomStringConvertible {
    public var description: String
    public init(_ d: String) { description = d }
}

public enum LineRead: Equatable {
    case line(String)
    case closed
    case timedOut
}

extension LineClient {
    /// Writes bytes exactly as given (no line end added).
    public func sendRaw(_ bytes: [UInt8]) throws {
        var off = 0
        while off < bytes.count {
            let n = bytes[off...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            guard n > 0 else { throw TestError("write failed: errno \(errno)") }
            off += n
        }
    }

    /// The next line, `.closed` at end of stream, `.timedOut` after `timeout` seconds.
    public func next(timeout: Double) throws -> LineRead {
        do {
            guard let line = try readLine(timeout: timeout) else { return .closed }
            return .line(line)
        } catch let e as TestError where e.description.hasPrefix("no reply") {
            return .timedOut
        }
    }

    /// The next line parsed; fails on end of stream or timeout.
    public func readJSON(timeout: Double = 30) throws -> JSON {
        guard let line = try readLine(timeout: timeout) else { throw TestError("connection closed") }
        return try JSONParser.parse(line)
    }

    /// Sends one request and returns the raw reply line.
    public func callLine(_ line: String, timeout: Double = 30) throws -> String {
        try send(line)
        guard let reply = try readLine(timeout: timeout) else { throw TestError("connection closed") }
        return reply
    }

    /// Every line until the server closes (fails after `timeout`).
    public func readUntilClosed(timeout: Double = 30) throws -> [String] {
        var lines: [String] = []
        let deadline = Date().addingTimeInterval(timeout)
        while true {
            let left = deadline.timeIntervalSinceNow
            guard left > 0 else { throw TestError("connection still open after \(timeout) s; got \(lines.count) lines") }
            switch try next(timeout: left) {
            case .line(let l): lines.append(l)
            case .closed: return lines
            case .timedOut: throw TestError("connection still open after \(timeout) s; got \(lines.count) lines")
            }
        }
    }

    /// Shrinks the receive buffer so a reader that stops reading pushes back sooner.
    public func setReceiveBuffer(_ bytes: Int32) {
        var v = bytes
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &v, socklen_t(MemoryLayout<Int32>.size))
    }
}

/// A reference made sendable for hand-over to one other thread at a time.
public final class Unchecked<T>: @unchecked Sendable {
    public var value: T
    public init(_ value: T) { self.value = value }
}

/// Runs `body` on its own thread (blocking socket I/O must not tie up the cooperative pool)
/// and returns its result.
public func onThread<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { (c: CheckedContinuation<T, any Error>) in
        let t = Thread {
            do { c.resume(returning: try body()) } catch { c.resume(throwing: error) }
        }
        t.stackSize = 1 << 20
        t.start()
    }
}

