import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Monotonic nanoseconds (latencies).
@inline(__always) func monoNanos() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
}

/// Wall-clock milliseconds with a fraction (compared with the server's `at`).
@inline(__always) func wallMillis() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_REALTIME, &ts)
    return Double(ts.tv_sec) * 1000 + Double(ts.tv_nsec) / 1_000_000
}

struct BenchError: Error, CustomStringConvertible {
    var description: String
    init(_ d: String) { description = d }
}

/// A blocking client connection on a Unix stream socket: plain POSIX, no Foundation I/O,
/// one owner thread at a time.
final class LineSocket: @unchecked Sendable {
    let fd: Int32
    private var buffer: [UInt8]
    private var start = 0
    private var end = 0

    init(path: String) throws {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw BenchError("socket(): \(String(cString: strerror(errno)))") }
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: addr.sun_path) else {
            close(fd)
            throw BenchError("socket path too long: \(path)")
        }
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in
            for (i, b) in bytes.enumerated() { raw[i] = b }
            raw[bytes.count] = 0
        }
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        guard rc == 0 else {
            let e = String(cString: strerror(errno))
            close(fd)
            throw BenchError("connect(\(path)): \(e)")
        }
        self.fd = fd
        buffer = [UInt8](repeating: 0, count: 1 << 16)
    }

    deinit { close(fd) }

    func send(_ bytes: [UInt8]) throws {
        try bytes.withUnsafeBytes { try send(raw: $0) }
    }

    func send(raw: UnsafeRawBufferPointer) throws {
        var off = 0
        while off < raw.count {
            let n = write(fd, raw.baseAddress! + off, raw.count - off)
            if n < 0 {
                if errno == EINTR { continue }
                throw BenchError("write: \(String(cString: strerror(errno)))")
            }
            off += n
        }
    }

    func send(_ s: String) throws { try send(Array(s.utf8)) }

    /// Reads whatever is available (blocking) and returns the number of newlines in it.
    /// For counting replies whose content does not matter (ping).
    func readCountingNewlines() throws -> Int {
        let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress!, $0.count) }
        if n < 0 {
            if errno == EINTR { return 0 }
            throw BenchError("read: \(String(cString: strerror(errno)))")
        }
        if n == 0 { throw BenchError("server closed the connection") }
        var count = 0
        buffer.withUnsafeBytes { raw in
            var p = raw.baseAddress!
            var left = n
            while left > 0, let q = memchr(p, 0x0A, left) {
                count += 1
                let consumed = UnsafeRawPointer(q) - p + 1
                p = UnsafeRawPointer(q) + 1
                left -= consumed
            }
        }
        return count
    }

    /// Fills the buffer once with one read(); returns false at EOF.
    private func fill() throws -> Bool {
        if start > 0 && start == end {
            start = 0
            end = 0
        }
        if end == buffer.count {
            if start > 0 {
                buffer.withUnsafeMutableBytes { raw in
                    _ = memmove(raw.baseAddress!, raw.baseAddress! + start, end - start)
                }
                end -= start
                start = 0
            } else {
                buffer.append(contentsOf: [UInt8](repeating: 0, count: buffer.count))
            }
        }
        while true {
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress! + end, $0.count - end) }
            if n < 0 {
                if errno == EINTR { continue }
                throw BenchError("read: \(String(cString: strerror(errno)))")
            }
            if n == 0 { return false }
            end += n
            return true
        }
    }

    /// Whether a whole line is already buffered (no read needed).
    var hasBufferedLine: Bool {
        buffer.withUnsafeBytes { raw in end > start && memchr(raw.baseAddress! + start, 0x0A, end - start) != nil }
    }

    /// The next line without its newline; blocks. Throws at EOF.
    func readLine() throws -> [UInt8] {
        while true {
            let found: Int? = buffer.withUnsafeBytes { raw in
                guard end > start, let q = memchr(raw.baseAddress! + start, 0x0A, end - start) else { return nil }
                return UnsafeRawPointer(q) - raw.baseAddress!
            }
            if let nl = found {
                let line = Array(buffer[start..<nl])
                start = nl + 1
                return line
            }
            guard try fill() else { throw BenchError("server closed the connection") }
        }
    }

    /// Non-blocking style use with poll(): reads once, then hands each complete line to `body`.
    /// Returns false at EOF.
    func readAvailable(_ body: ([UInt8]) -> Void) throws -> Bool {
        guard try fill() else { return false }
        while true {
            let found: Int? = buffer.withUnsafeBytes { raw in
                guard end > start, let q = memchr(raw.baseAddress! + start, 0x0A, end - start) else { return nil }
                return UnsafeRawPointer(q) - raw.baseAddress!
            }
            guard let nl = found else { return true }
            body(Array(buffer[start..<nl]))
            start = nl + 1
        }
    }
}

/// Runs `body(i)` on `n` new threads and waits for all of them.
func onThreads(_ n: Int, _ body: @escaping @Sendable (Int) -> Void) {
    let group = DispatchGroup()
    for i in 0..<n {
        group.enter()
        let t = Thread {
            body(i)
            group.leave()
        }
        t.stackSize = 1 << 20
        t.start()
    }
    group.wait()
}

/// A lock-protected value shared by client threads.
final class Locked<T>: @unchecked Sendable {
    private var value: T
    private let lock = NSLock()
    init(_ v: T) { value = v }
    func withLock<R>(_ body: (inout T) throws -> R) rethrows -> R {
        lock.lock()
        defer { lock.unlock() }
        return try body(&value)
    }
}

/// Finds `"key":` in a JSON line and returns the bytes of its simple value (number or string
/// contents). Enough for the server's own output, whose keys are never escaped.
func scanValue(_ line: [UInt8], key: String) -> Substring? {
    let needle = Array("\"\(key)\":".utf8)
    return line.withUnsafeBytes { raw -> Substring? in
        guard raw.count >= needle.count else { return nil }
        var i = 0
        let limit = raw.count - needle.count
        outer: while i <= limit {
            for j in 0..<needle.count where raw[i + j] != needle[j] {
                i += 1
                continue outer
            }
            var k = i + needle.count
            while k < raw.count && raw[k] == 0x20 { k += 1 }
            if k < raw.count && raw[k] == 0x22 {  // string
                let s = k + 1
                var e = s
                while e < raw.count && raw[e] != 0x22 { e += 1 }
                return Substring(decoding: UnsafeRawBufferPointer(rebasing: raw[s..<e]), as: UTF8.self)
            }
            let s = k
            var e = s
            while e < raw.count && raw[e] != 0x2C && raw[e] != 0x7D && raw[e] != 0x5D { e += 1 }
            return Substring(decoding: UnsafeRawBufferPointer(rebasing: raw[s..<e]), as: UTF8.self)
        }
        return nil
    }
}
