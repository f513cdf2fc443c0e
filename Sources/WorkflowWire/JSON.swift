/// A JSON value as the protocol needs it.
///
/// Numbers keep their exact source text (`1359.97` stays `1359.97`; an integer with 40 digits
/// stays as it is), so values the server only passes through are never rounded. Objects keep
/// their members in source order; lookup is linear, which is the fastest choice for the small
/// objects of this protocol.
public enum JSON: Sendable, Equatable {
    case null
    case bool(Bool)
    /// The number exactly as written (validated JSON number grammar).
    case number(String)
    case string(String)
    case array([JSON])
    case object([Member])

    public struct Member: Sendable, Equatable {
        public var key: String
        public var value: JSON
        public init(_ key: String, _ value: JSON) {
            self.key = key
            self.value = value
        }
    }

    /// The first member named `key` of an object; nil for a missing key or a non-object.
    public subscript(key: String) -> JSON? {
        guard case .object(let members) = self else { return nil }
        for m in members where m.key == key { return m.value }
        return nil
    }

    /// A short name of the value's type for error messages.
    public var typeName: String {
        switch self {
        case .null: "null"
        case .bool: "boolean"
        case .number: "number"
        case .string: "string"
        case .array: "array"
        case .object: "object"
        }
    }

    public var stringValue: String? {
        if case .string(let s) = self { return s }
        return nil
    }

    /// The number as an `Int64` when it is an integer in range (`3`, `-7`, also `3.0` and `3e2`
    /// are refused: the protocol's integers are written as integers).
    public var int64Value: Int64? {
        guard case .number(let text) = self else { return nil }
        return Int64(text)
    }

    /// Compact serialisation, as bytes.
    public var bytes: [UInt8] {
        var w = JSONWriter()
        w.value(self)
        return w.bytes
    }
}

extension JSON: CustomStringConvertible {
    public var description: String { String(decoding: bytes, as: UTF8.self) }
}

/// Why a text is not JSON, and where (byte offset from the start of the line).
public struct JSONParseError: Error, Sendable, Equatable, CustomStringConvertible {
    public var message: String
    public var offset: Int
    public init(_ message: String, offset: Int) {
        self.message = message
        self.offset = offset
    }
    public var description: String { "\(message) at byte \(offset)" }
}
