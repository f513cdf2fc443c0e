/// Writes compact JSON straight into a byte buffer, tracking commas itself.
///
/// Encoders build replies member by member without an intermediate `JSON` tree:
/// ```
/// var w = JSONWriter()
/// w.beginObject(); w.key("ok"); w.bool(true); w.endObject()
/// ```
/// The writer trusts its caller to produce a well-formed nesting (keys only inside objects);
/// `raw(_:)` inserts bytes that are already one compact JSON value.
public struct JSONWriter: Sendable {
    public var bytes: [UInt8]
    private var needsComma = false
    private var afterKey = false
    private var stack: [Bool] = []

    public init(capacity: Int = 256) {
        bytes = []
        bytes.reserveCapacity(capacity)
    }

    @inline(__always) private mutating func prepareValue() {
        if afterKey {
            afterKey = false
        } else if needsComma {
            bytes.append(UInt8(ascii: ","))
        }
        needsComma = true
    }

    public mutating func beginObject() {
        prepareValue()
        bytes.append(UInt8(ascii: "{"))
        stack.append(needsComma)
        needsComma = false
    }

    public mutating func endObject() {
        bytes.append(UInt8(ascii: "}"))
        needsComma = stack.removeLast()
    }

    public mutating func beginArray() {
        prepareValue()
        bytes.append(UInt8(ascii: "["))
        stack.append(needsComma)
        needsComma = false
    }

    public mutating func endArray() {
        bytes.append(UInt8(ascii: "]"))
        needsComma = stack.removeLast()
    }

    public mutating func key(_ k: String) {
        if needsComma { bytes.append(UInt8(ascii: ",")) }
        needsComma = true
        appendEscaped(k)
        bytes.append(UInt8(ascii: ":"))
        afterKey = true
    }

    public mutating func string(_ s: String) {
        prepareValue()
        appendEscaped(s)
    }

    public mutating func string(_ s: String?) {
        if let s { string(s) } else { null() }
    }

    public mutating func int(_ v: Int64) {
        prepareValue()
        if v >= 0 && v < 10 {
            bytes.append(UInt8(truncatingIfNeeded: v) + 0x30)
        } else {
            bytes.append(contentsOf: String(v).utf8)
        }
    }

    public mutating func int(_ v: Int) { int(Int64(v)) }

    /// A number given as already-valid JSON number text.
    public mutating func number(text: String) {
        prepareValue()
        bytes.append(contentsOf: text.utf8)
    }

    public mutating func bool(_ v: Bool) {
        prepareValue()
        if v { bytes.append(contentsOf: [0x74, 0x72, 0x75, 0x65]) } else { bytes.append(contentsOf: [0x66, 0x61, 0x6C, 0x73, 0x65]) }
    }

    public mutating func null() {
        prepareValue()
        bytes.append(contentsOf: [0x6E, 0x75, 0x6C, 0x6C])
    }

    /// Inserts bytes that already are one compact JSON value (no newline inside).
    public mutating func raw(_ json: some Sequence<UInt8>) {
        prepareValue()
        bytes.append(contentsOf: json)
    }

    public mutating func value(_ v: JSON) {
        switch v {
        case .null: null()
        case .bool(let b): bool(b)
        case .number(let t): number(text: t)
        case .string(let s): string(s)
        case .array(let items):
            beginArray()
            for item in items { value(item) }
            endArray()
        case .object(let members):
            beginObject()
            for m in members {
                key(m.key)
                value(m.value)
            }
            endObject()
        }
    }

    private static let hex: [UInt8] = Array("0123456789abcdef".utf8)

    private mutating func appendEscaped(_ s: String) {
        bytes.append(UInt8(ascii: "\""))
        var s = s
        s.withUTF8 { u in
            var runStart = 0
            for idx in 0..<u.count {
                let c = u[idx]
                if c >= 0x20 && c != 0x22 && c != 0x5C { continue }
                if runStart < idx { bytes.append(contentsOf: UnsafeBufferPointer(rebasing: u[runStart..<idx])) }
                runStart = idx + 1
                bytes.append(UInt8(ascii: "\\"))
                switch c {
                case 0x22: bytes.append(0x22)
                case 0x5C: bytes.append(0x5C)
                case 0x0A: bytes.append(UInt8(ascii: "n"))
                case 0x0D: bytes.append(UInt8(ascii: "r"))
                case 0x09: bytes.append(UInt8(ascii: "t"))
                case 0x08: bytes.append(UInt8(ascii: "b"))
                case 0x0C: bytes.append(UInt8(ascii: "f"))
                default:
                    bytes.append(contentsOf: [UInt8(ascii: "u"), 0x30, 0x30, Self.hex[Int(c >> 4)], Self.hex[Int(c & 0xF)]])
                }
            }
            if runStart < u.count { bytes.append(contentsOf: UnsafeBufferPointer(rebasing: u[runStart..<u.count])) }
        }
        bytes.append(UInt8(ascii: "\""))
    }
}
