import WorkflowEngine

/// A value bound to a `?` of a prepared statement. There is no way to splice a value into SQL
/// text: everything that carries input goes through these.
public enum SQLValue: Sendable, Equatable {
    case null
    case int(Int64)
    case double(Double)
    case text(String)
    case bytes([UInt8])
    case timestamp(Timestamp)

    public static func int(_ v: Int) -> SQLValue { .int(Int64(v)) }
    public static func optionalText(_ v: String?) -> SQLValue { v.map(SQLValue.text) ?? .null }
    public static func optionalBytes(_ v: [UInt8]?) -> SQLValue { v.map(SQLValue.bytes) ?? .null }
}

/// One row of a result set. Integer columns arrive as `.int`, DATETIME columns as
/// `.timestamp`, everything else as `.bytes`.
public struct SQLRow: Sendable {
    public var values: [SQLValue]

    public init(values: [SQLValue]) { self.values = values }

    public func int(_ i: Int) throws(MariaDBError) -> Int64 {
        switch values[i] {
        case .int(let v): return v
        case .bytes(let b):
            if let v = Int64(String(decoding: b, as: UTF8.self)) { return v }
        default: break
        }
        throw MariaDBError(kind: .badRow, message: "column \(i) is not an integer")
    }

    public func optionalInt(_ i: Int) throws(MariaDBError) -> Int64? {
        if case .null = values[i] { return nil }
        return try int(i)
    }

    public func string(_ i: Int) throws(MariaDBError) -> String {
        switch values[i] {
        case .bytes(let b): return String(decoding: b, as: UTF8.self)
        case .text(let s): return s
        case .int(let v): return String(v)
        default: throw MariaDBError(kind: .badRow, message: "column \(i) is not text")
        }
    }

    public func optionalString(_ i: Int) throws(MariaDBError) -> String? {
        if case .null = values[i] { return nil }
        return try string(i)
    }

    public func bytes(_ i: Int) throws(MariaDBError) -> [UInt8] {
        switch values[i] {
        case .bytes(let b): return b
        case .text(let s): return Array(s.utf8)
        default: throw MariaDBError(kind: .badRow, message: "column \(i) is not binary")
        }
    }

    public func optionalBytes(_ i: Int) throws(MariaDBError) -> [UInt8]? {
        if case .null = values[i] { return nil }
        return try bytes(i)
    }

    public func timestamp(_ i: Int) throws(MariaDBError) -> Timestamp {
        switch values[i] {
        case .timestamp(let t): return t
        case .bytes(let b):
            if let t = Timestamp(parsing: String(decoding: b, as: UTF8.self)) { return t }
        default: break
        }
        throw MariaDBError(kind: .badRow, message: "column \(i) is not a DATETIME")
    }

    public func optionalTimestamp(_ i: Int) throws(MariaDBError) -> Timestamp? {
        if case .null = values[i] { return nil }
        return try timestamp(i)
    }
}

/// What a statement that returns no rows did.
public struct ExecResult: Sendable, Equatable {
    /// With CLIENT_FOUND_ROWS (always set here): rows matched, not only rows changed.
    public var affectedRows: Int
    public var lastInsertID: Int64
}
