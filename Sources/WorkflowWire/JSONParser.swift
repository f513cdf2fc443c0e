/// A strict JSON parser (RFC 8259) working directly on UTF-8 bytes.
///
/// - Numbers are validated and kept as text (`JSON.number`), so nothing is rounded.
/// - Strings must be valid UTF-8; escapes, including `\u` surrogate pairs, are decoded; a lone
///   surrogate, a raw control character (NUL included) or an unknown escape is an error.
/// - Nesting deeper than `maxDepth` is refused, so a hostile line cannot exhaust the stack.
/// - Errors name what was wrong and the byte offset.
public struct JSONParser {
    /// Default nesting limit (arrays and objects).
    public static let defaultMaxDepth = 64

    public static func parse(_ bytes: [UInt8], maxDepth: Int = defaultMaxDepth) throws(JSONParseError) -> JSON {
        let result: Result<JSON, JSONParseError> = bytes.withUnsafeBytes { buf in
            do throws(JSONParseError) { return .success(try parse(buf, maxDepth: maxDepth)) } catch { return .failure(error) }
        }
        return try result.get()
    }

    public static func parse(_ string: String, maxDepth: Int = defaultMaxDepth) throws(JSONParseError) -> JSON {
        try parse(Array(string.utf8), maxDepth: maxDepth)
    }

    public static func parse(_ buffer: UnsafeRawBufferPointer, maxDepth: Int = defaultMaxDepth) throws(JSONParseError) -> JSON {
        var p = JSONParser(buffer: buffer, maxDepth: maxDepth)
        p.skipWhitespace()
        let v = try p.parseValue(depth: 0)
        p.skipWhitespace()
        guard p.i == p.end else { throw JSONParseError("unexpected data after the JSON value", offset: p.i) }
        return v
    }

    private let b: UnsafeRawBufferPointer
    private let end: Int
    private var i = 0
    private let maxDepth: Int

    private init(buffer: UnsafeRawBufferPointer, maxDepth: Int) {
        self.b = buffer
        self.end = buffer.count
        self.maxDepth = maxDepth
    }

    private mutating func skipWhitespace() {
        while i < end {
            switch b[i] {
            case 0x20, 0x09, 0x0A, 0x0D: i += 1
            default: return
            }
        }
    }

    private mutating func parseValue(depth: Int) throws(JSONParseError) -> JSON {
        guard i < end else { throw JSONParseError("unexpected end of input", offset: i) }
        switch b[i] {
        case UInt8(ascii: "{"): return try parseObject(depth: depth + 1)
        case UInt8(ascii: "["): return try parseArray(depth: depth + 1)
        case UInt8(ascii: "\""): return .string(try parseString())
        case UInt8(ascii: "t"): try literal("true"); return .bool(true)
        case UInt8(ascii: "f"): try literal("false"); return .bool(false)
        case UInt8(ascii: "n"): try literal("null"); return .null
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return .number(try parseNumber())
        default: throw JSONParseError("unexpected character \(describe(b[i]))", offset: i)
        }
    }

    private func describe(_ c: UInt8) -> String {
        if c >= 0x21 && c < 0x7F { return "'\(Character(Unicode.Scalar(c)))'" }
        return "byte 0x" + String(c, radix: 16)
    }

    private mutating func literal(_ word: StaticString) throws(JSONParseError) {
        let n = word.utf8CodeUnitCount
        let start = i
        guard i + n <= end else { throw JSONParseError("invalid literal", offset: start) }
        let w = word.utf8Start
        for k in 0..<n where b[i + k] != w[k] { throw JSONParseError("invalid literal", offset: start) }
        i += n
    }

    private mutating func parseObject(depth: Int) throws(JSONParseError) -> JSON {
        guard depth <= maxDepth else { throw JSONParseError("nesting deeper than \(maxDepth)", offset: i) }
        i += 1  // {
        var members: [JSON.Member] = []
        skipWhitespace()
        if i < end, b[i] == UInt8(ascii: "}") {
            i += 1
            return .object(members)
        }
        while true {
            skipWhitespace()
            guard i < end else { throw JSONParseError("unexpected end of input in an object", offset: i) }
            guard b[i] == UInt8(ascii: "\"") else { throw JSONParseError("expected a member name", offset: i) }
            let key = try parseString()
            skipWhitespace()
            guard i < end, b[i] == UInt8(ascii: ":") else { throw JSONParseError("expected ':'", offset: i) }
            i += 1
            skipWhitespace()
            let value = try parseValue(depth: depth)
            members.append(JSON.Member(key, value))
            skipWhitespace()
            guard i < end else { throw JSONParseError("unexpected end of input in an object", offset: i) }
            if b[i] == UInt8(ascii: ",") {
                i += 1
                continue
            }
            if b[i] == UInt8(ascii: "}") {
                i += 1
                return .object(members)
            }
            throw JSONParseError("expected ',' or '}'", offset: i)
        }
    }

    private mutating func parseArray(depth: Int) throws(JSONParseError) -> JSON {
        guard depth <= maxDepth else { throw JSONParseError("nesting deeper than \(maxDepth)", offset: i) }
        i += 1  // [
        var items: [JSON] = []
        skipWhitespace()
        if i < end, b[i] == UInt8(ascii: "]") {
            i += 1
            return .array(items)
        }
        while true {
            skipWhitespace()
            items.append(try parseValue(depth: depth))
            skipWhitespace()
            guard i < end else { throw JSONParseError("unexpected end of input in an array", offset: i) }
            if b[i] == UInt8(ascii: ",") {
                i += 1
                continue
            }
            if b[i] == UInt8(ascii: "]") {
                i += 1
                return .array(items)
            }
            throw JSONParseError("expected ',' or ']'", offset: i)
        }
    }

    private mutating func parseNumber() throws(JSONParseError) -> String {
        let start = i
        if b[i] == UInt8(ascii: "-") { i += 1 }
        guard i < end, isDigit(b[i]) else { throw JSONParseError("invalid number", offset: start) }
        if b[i] == UInt8(ascii: "0") {
            i += 1
            if i < end, isDigit(b[i]) { throw JSONParseError("invalid number (leading zero)", offset: start) }
        } else {
            while i < end, isDigit(b[i]) { i += 1 }
        }
        if i < end, b[i] == UInt8(ascii: ".") {
            i += 1
            guard i < end, isDigit(b[i]) else { throw JSONParseError("invalid number (no digit after '.')", offset: start) }
            while i < end, isDigit(b[i]) { i += 1 }
        }
        if i < end, b[i] == UInt8(ascii: "e") || b[i] == UInt8(ascii: "E") {
            i += 1
            if i < end, b[i] == UInt8(ascii: "+") || b[i] == UInt8(ascii: "-") { i += 1 }
            guard i < end, isDigit(b[i]) else { throw JSONParseError("invalid number (bad exponent)", offset: start) }
            while i < end, isDigit(b[i]) { i += 1 }
        }
        return String(decoding: UnsafeRawBufferPointer(rebasing: b[start..<i]), as: UTF8.self)
    }

    @inline(__always) private func isDigit(_ c: UInt8) -> Bool { c >= 0x30 && c <= 0x39 }

    private mutating func parseString() throws(JSONParseError) -> String {
        let open = i
        i += 1  // opening quote
        let start = i
        var ascii = true
        // Fast path: no escapes.
        while i < end {
            let c = b[i]
            if c == UInt8(ascii: "\"") {
                let raw = UnsafeRawBufferPointer(rebasing: b[start..<i])
                i += 1
                if ascii { return String(decoding: raw, as: UTF8.self) }
                guard let s = String(validating: raw.bindMemory(to: UInt8.self), as: UTF8.self) else {
                    throw JSONParseError("invalid UTF-8 in a string", offset: start + firstInvalidUTF8(raw))
                }
                return s
            }
            if c == UInt8(ascii: "\\") { break }
            if c < 0x20 { throw JSONParseError("control character \(describe(c)) in a string", offset: i) }
            if c >= 0x80 { ascii = false }
            i += 1
        }
        guard i < end else { throw JSONParseError("unterminated string", offset: open) }
        // Slow path: escapes present. Collect bytes, then validate once.
        var out = [UInt8](UnsafeRawBufferPointer(rebasing: b[start..<i]))
        while i < end {
            let c = b[i]
            if c == UInt8(ascii: "\"") {
                i += 1
                guard let s = String(validating: out, as: UTF8.self) else {
                    throw JSONParseError("invalid UTF-8 in a string", offset: start)
                }
                return s
            }
            if c < 0x20 { throw JSONParseError("control character \(describe(c)) in a string", offset: i) }
            if c != UInt8(ascii: "\\") {
                out.append(c)
                i += 1
                continue
            }
            let escAt = i
            i += 1
            guard i < end else { break }
            let e = b[i]
            i += 1
            switch e {
            case UInt8(ascii: "\""): out.append(0x22)
            case UInt8(ascii: "\\"): out.append(0x5C)
            case UInt8(ascii: "/"): out.append(0x2F)
            case UInt8(ascii: "b"): out.append(0x08)
            case UInt8(ascii: "f"): out.append(0x0C)
            case UInt8(ascii: "n"): out.append(0x0A)
            case UInt8(ascii: "r"): out.append(0x0D)
            case UInt8(ascii: "t"): out.append(0x09)
            case UInt8(ascii: "u"):
                var scalar = try hex4(at: escAt)
                if scalar >= 0xD800 && scalar <= 0xDBFF {
                    guard i + 1 < end, b[i] == UInt8(ascii: "\\"), b[i + 1] == UInt8(ascii: "u") else {
                        throw JSONParseError("lone surrogate in \\u escape", offset: escAt)
                    }
                    i += 2
                    let low = try hex4(at: escAt)
                    guard low >= 0xDC00 && low <= 0xDFFF else {
                        throw JSONParseError("lone surrogate in \\u escape", offset: escAt)
                    }
                    scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                } else if scalar >= 0xDC00 && scalar <= 0xDFFF {
                    throw JSONParseError("lone surrogate in \\u escape", offset: escAt)
                }
                appendUTF8(&out, scalar)
            default:
                throw JSONParseError("invalid escape \\\(Character(Unicode.Scalar(e)))", offset: escAt)
            }
        }
        throw JSONParseError("unterminated string", offset: open)
    }

    private mutating func hex4(at escAt: Int) throws(JSONParseError) -> UInt32 {
        guard i + 4 <= end else { throw JSONParseError("invalid \\u escape", offset: escAt) }
        var v: UInt32 = 0
        for _ in 0..<4 {
            let c = b[i]
            let d: UInt32
            switch c {
            case 0x30...0x39: d = UInt32(c - 0x30)
            case 0x41...0x46: d = UInt32(c - 0x41 + 10)
            case 0x61...0x66: d = UInt32(c - 0x61 + 10)
            default: throw JSONParseError("invalid \\u escape", offset: escAt)
            }
            v = v << 4 | d
            i += 1
        }
        return v
    }

    private func appendUTF8(_ out: inout [UInt8], _ s: UInt32) {
        switch s {
        case 0..<0x80:
            out.append(UInt8(s))
        case 0x80..<0x800:
            out.append(UInt8(0xC0 | (s >> 6)))
            out.append(UInt8(0x80 | (s & 0x3F)))
        case 0x800..<0x10000:
            out.append(UInt8(0xE0 | (s >> 12)))
            out.append(UInt8(0x80 | ((s >> 6) & 0x3F)))
            out.append(UInt8(0x80 | (s & 0x3F)))
        default:
            out.append(UInt8(0xF0 | (s >> 18)))
            out.append(UInt8(0x80 | ((s >> 12) & 0x3F)))
            out.append(UInt8(0x80 | ((s >> 6) & 0x3F)))
            out.append(UInt8(0x80 | (s & 0x3F)))
        }
    }

    /// Offset of the first byte where UTF-8 decoding fails (for error messages).
    private func firstInvalidUTF8(_ raw: UnsafeRawBufferPointer) -> Int {
        var it = raw.makeIterator()
        var decoder = UTF8()
        var offset = 0
        var consumed = 0
        while true {
            switch decoder.decode(&it) {
            case .scalarValue(let s):
                consumed += UTF8.width(s)
                offset = consumed
            case .emptyInput: return offset
            case .error: return offset
            }
        }
    }
}
