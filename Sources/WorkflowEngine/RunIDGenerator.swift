import Synchronization

/// Where run ids come from; injected so tests can use predictable ids.
public protocol RunIDGenerator: Sendable {
    func next(now: Timestamp) -> String
}

/// UUID version 7 (RFC 9562): 48 bits of Unix milliseconds, then random bits. Time-ordered ids
/// keep InnoDB's primary-key inserts near the right edge of the index instead of scattering them.
public struct UUIDv7Generator: RunIDGenerator {
    public init() {}

    public func next(now: Timestamp) -> String {
        var rng = SystemRandomNumberGenerator()
        var b = [UInt8](repeating: 0, count: 16)
        let ms = UInt64(max(now.milliseconds, 0))
        for i in 0..<6 { b[i] = UInt8(truncatingIfNeeded: ms >> (8 * (5 - UInt64(i)))) }
        let r1 = rng.next() as UInt64
        let r2 = rng.next() as UInt64
        for i in 0..<5 { b[6 + i] = UInt8(truncatingIfNeeded: r1 >> (8 * UInt64(i))) }
        for i in 0..<5 { b[11 + i] = UInt8(truncatingIfNeeded: r2 >> (8 * UInt64(i))) }
        b[6] = (b[6] & 0x0F) | 0x70
        b[8] = (b[8] & 0x3F) | 0x80
        let hex = Array("0123456789abcdef".utf8)
        var out: [UInt8] = []
        out.reserveCapacity(36)
        for (i, byte) in b.enumerated() {
            if i == 4 || i == 6 || i == 8 || i == 10 { out.append(UInt8(ascii: "-")) }
            out.append(hex[Int(byte >> 4)])
            out.append(hex[Int(byte & 0x0F)])
        }
        return String(decoding: out, as: UTF8.self)
    }
}

/// `prefix-1`, `prefix-2`, … for tests.
public final class SequentialRunIDGenerator: RunIDGenerator {
    private let counter = Mutex(0)
    private let prefix: String
    public init(prefix: String = "run") { self.prefix = prefix }
    public func next(now: Timestamp) -> String {
        let n = counter.withLock { c -> Int in
            c += 1
            return c
        }
        return "\(prefix)-\(n)"
    }
}
