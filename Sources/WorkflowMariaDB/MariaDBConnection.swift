import CMariaDB
import WorkflowEngine

/// One blocking connection to MariaDB. Not thread-safe: it lives on exactly one pool thread
/// (see `MariaDBPool`) and is never touched from Swift's cooperative pool.
///
/// Every statement is a server-side prepared statement, cached per connection by its SQL text,
/// so a hot statement costs one round trip per execution.
public final class MariaDBConnection {
    private var mysql: UnsafeMutablePointer<MYSQL>?
    private var statements: [String: UnsafeMutablePointer<MYSQL_STMT>] = [:]
    public let configuration: MariaDBConfiguration
    /// Monotonic seconds when the connection was opened; the pool recycles old connections.
    public let openedAt: Double
    /// Set when an error shows the connection is unusable; the pool then replaces it.
    public private(set) var isBroken = false
    /// Statements cached before the cache is flushed (bounded: IN lists are bucketed).
    static let statementCacheLimit = 512

    /// Opens a connection. Throws `.unavailable` if the server cannot be reached,
    /// `.configuration` for access problems.
    /// `mysql_library_init` (`mysql_server_init`) is not thread-safe, and `mysql_init` runs it
    /// implicitly on first use: two pool threads connecting at once could both run it and
    /// corrupt the library's global state. A Swift static is initialised exactly once, under a
    /// lock, before any connection is made.
    static let libraryInitialised: Bool = mysql_server_init(0, nil, nil) == 0

    public init(configuration: MariaDBConfiguration) throws(MariaDBError) {
        self.configuration = configuration
        self.openedAt = monotonicSeconds()
        guard Self.libraryInitialised else {
            throw MariaDBError(kind: .unavailable, message: "mysql_library_init failed (out of memory)")
        }
        guard let m = mysql_init(nil) else {
            throw MariaDBError(kind: .unavailable, message: "mysql_init failed (out of memory)")
        }
        mysql = m
        var connectTimeout = UInt32(configuration.connectTimeout)
        var readTimeout = UInt32(configuration.readTimeout)
        var writeTimeout = UInt32(configuration.writeTimeout)
        mysql_optionsv_uint(m, MYSQL_OPT_CONNECT_TIMEOUT, &connectTimeout)
        mysql_optionsv_uint(m, MYSQL_OPT_READ_TIMEOUT, &readTimeout)
        mysql_optionsv_uint(m, MYSQL_OPT_WRITE_TIMEOUT, &writeTimeout)
        _ = mysql_options(m, MYSQL_SET_CHARSET_NAME, configuration.charset)
        // Every session works in UTC, in READ COMMITTED (no gap locks: the relay's locking read
        // of the outbox must not block writers appending to it), with the configured collation.
        _ = mysql_options(m, MYSQL_INIT_COMMAND, "SET time_zone = '+00:00'")
        _ = mysql_options(m, MYSQL_INIT_COMMAND, "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
        _ = mysql_options(m, MYSQL_INIT_COMMAND, "SET collation_connection = '\(configuration.collation)'")
        if let wait = configuration.syncWait {
            _ = mysql_options(m, MYSQL_INIT_COMMAND, "SET SESSION wsrep_sync_wait = \(wait)")
        }
        var off: my_bool = 0
        _ = mysql_options(m, MYSQL_OPT_RECONNECT, &off)  // we reconnect ourselves, knowingly
        switch configuration.tls {
        case .disabled:
            break
        case .verify, .skipVerify, .preferred:
            var enforce: my_bool = configuration.tls == .preferred ? 0 : 1
            var verify: my_bool = configuration.tls == .verify ? 1 : 0
            if configuration.tls != .preferred { _ = mysql_options(m, MYSQL_OPT_SSL_ENFORCE, &enforce) }
            _ = mysql_options(m, MYSQL_OPT_SSL_VERIFY_SERVER_CERT, &verify)
            if let ca = configuration.tlsCA { _ = mysql_options(m, MYSQL_OPT_SSL_CA, ca) }
            if let cert = configuration.tlsCert { _ = mysql_options(m, MYSQL_OPT_SSL_CERT, cert) }
            if let key = configuration.tlsKey { _ = mysql_options(m, MYSQL_OPT_SSL_KEY, key) }
        }
        var host: String? = nil
        var port: UInt32 = 0
        var socket: String? = nil
        switch configuration.endpoint {
        case .tcp(let h, let p):
            // Connector/C treats "localhost" as "use the default socket": force TCP.
            host = h == "localhost" ? "127.0.0.1" : h
            port = UInt32(p)
        case .unix(let path):
            host = "localhost"
            socket = path
        }
        let flags = UInt(CLIENT_FOUND_ROWS)
        let ok = mysql_real_connect(
            m, host, configuration.user, configuration.password,
            configuration.database.isEmpty ? nil : configuration.database, port, socket, flags)
        if ok == nil {
            let error = Self.error(of: m)
            mysql_close(m)
            mysql = nil
            // A failed connect is never a lost write; report it as unavailable unless it is a
            // clear configuration problem.
            var e = error
            if e.kind != .configuration { e.kind = .unavailable }
            throw e
        }
        // Connector/C 3.3 enforces TLS only together with certificate verification: with
        // `tls=skip-verify` and a server without TLS it silently connects in plain text. A
        // required TLS that did not happen is an error, before any query is sent.
        if configuration.tls == .verify || configuration.tls == .skipVerify, mysql_get_ssl_cipher(m) == nil {
            mysql_close(m)
            mysql = nil
            throw MariaDBError(
                kind: .unavailable, errno: 2026, sqlState: "HY000",
                message: "TLS/SSL error: tls=\(configuration.tls.rawValue) requires TLS, but the server does not support it")
        }
    }

    deinit { close() }

    /// Closes the connection and every cached statement.
    public func close() {
        for (_, stmt) in statements { mysql_stmt_close(stmt) }
        statements.removeAll()
        if let m = mysql { mysql_close(m) }
        mysql = nil
    }

    /// The server's version string, e.g. `10.11.19-MariaDB-0+deb12u1`.
    public var serverVersion: String {
        guard let m = mysql, let s = mysql_get_server_info(m) else { return "" }
        return String(cString: s)
    }

    // MARK: - Plain text queries (no input: DDL, transaction control)

    /// Runs SQL that carries no input (transaction control, DDL). Never pass values in `sql`.
    public func executeText(_ sql: String) throws(MariaDBError) {
        guard let m = mysql else { throw lost("the connection is closed") }
        if mysql_real_query(m, sql, UInt(sql.utf8.count)) != 0 { throw fail(Self.error(of: m)) }
        // Drain any result so the connection stays usable.
        repeat {
            if let res = mysql_store_result(m) { mysql_free_result(res) }
        } while mysql_next_result(m) == 0
    }

    /// A text query returning rows, for statements with no input (e.g. `SHOW`, `EXPLAIN`).
    public func queryText(_ sql: String) throws(MariaDBError) -> [[String?]] {
        guard let m = mysql else { throw lost("the connection is closed") }
        if mysql_real_query(m, sql, UInt(sql.utf8.count)) != 0 { throw fail(Self.error(of: m)) }
        guard let res = mysql_store_result(m) else {
            if mysql_field_count(m) == 0 { return [] }
            throw fail(Self.error(of: m))
        }
        defer { mysql_free_result(res) }
        let n = Int(mysql_num_fields(res))
        var rows: [[String?]] = []
        while let row = mysql_fetch_row(res) {
            let lengths = mysql_fetch_lengths(res)!
            var out: [String?] = []
            for i in 0..<n {
                if let p = row[i] {
                    out.append(String(decoding: UnsafeRawBufferPointer(start: p, count: Int(lengths[i])), as: UTF8.self))
                } else {
                    out.append(nil)
                }
            }
            rows.append(out)
        }
        return rows
    }

    // MARK: - Prepared statements

    /// Executes a statement that returns no rows.
    @discardableResult
    public func execute(_ sql: String, _ params: [SQLValue] = []) throws(MariaDBError) -> ExecResult {
        let stmt = try prepared(sql)
        try run(stmt, params)
        let affected = mysql_stmt_affected_rows(stmt)
        let id = mysql_stmt_insert_id(stmt)
        // Statements that return rows must use query(); free anything left just in case.
        mysql_stmt_free_result(stmt)
        return ExecResult(affectedRows: affected == UInt64.max ? 0 : Int(affected), lastInsertID: Int64(id))
    }

    /// Executes a statement and returns all its rows.
    public func query(_ sql: String, _ params: [SQLValue] = []) throws(MariaDBError) -> [SQLRow] {
        let stmt = try prepared(sql)
        var updateMaxLength: my_bool = 1
        _ = mysql_stmt_attr_set(stmt, STMT_ATTR_UPDATE_MAX_LENGTH, &updateMaxLength)
        try run(stmt, params)
        guard let meta = mysql_stmt_result_metadata(stmt) else {
            mysql_stmt_free_result(stmt)
            return []
        }
        defer {
            mysql_free_result(meta)
            mysql_stmt_free_result(stmt)
        }
        if mysql_stmt_store_result(stmt) != 0 { throw fail(Self.error(of: stmt)) }
        let columnCount = Int(mysql_num_fields(meta))
        let fields = mysql_fetch_fields(meta)!
        let rowCount = Int(mysql_stmt_num_rows(stmt))
        if rowCount == 0 { return [] }

        enum Kind { case int, time, bytes }
        var kinds: [Kind] = []
        var bufferSizes: [Int] = []
        for i in 0..<columnCount {
            let f = fields[i]
            switch f.type {
            case MYSQL_TYPE_TINY, MYSQL_TYPE_SHORT, MYSQL_TYPE_LONG, MYSQL_TYPE_INT24, MYSQL_TYPE_LONGLONG,
                MYSQL_TYPE_YEAR:
                kinds.append(.int)
                bufferSizes.append(8)
            case MYSQL_TYPE_DATETIME, MYSQL_TYPE_TIMESTAMP, MYSQL_TYPE_DATE:
                kinds.append(.time)
                bufferSizes.append(MemoryLayout<MYSQL_TIME>.stride)
            default:
                kinds.append(.bytes)
                bufferSizes.append(max(1, Int(f.max_length)))
            }
        }
        let binds = UnsafeMutablePointer<MYSQL_BIND>.allocate(capacity: columnCount)
        binds.initialize(repeating: MYSQL_BIND(), count: columnCount)
        let lengths = UnsafeMutablePointer<UInt>.allocate(capacity: columnCount)
        lengths.initialize(repeating: 0, count: columnCount)
        let nulls = UnsafeMutablePointer<my_bool>.allocate(capacity: columnCount)
        nulls.initialize(repeating: 0, count: columnCount)
        let total = bufferSizes.reduce(0) { $0 + ($1 + 7) / 8 * 8 }
        let storage = UnsafeMutableRawPointer.allocate(byteCount: max(total, 8), alignment: 8)
        defer {
            binds.deallocate()
            lengths.deallocate()
            nulls.deallocate()
            storage.deallocate()
        }
        var offset = 0
        for i in 0..<columnCount {
            binds[i].buffer = storage + offset
            binds[i].buffer_length = UInt(bufferSizes[i])
            binds[i].length = lengths + i
            binds[i].is_null = nulls + i
            switch kinds[i] {
            case .int:
                binds[i].buffer_type = MYSQL_TYPE_LONGLONG
            case .time:
                binds[i].buffer_type = MYSQL_TYPE_DATETIME
            case .bytes:
                binds[i].buffer_type = MYSQL_TYPE_BLOB
            }
            offset += (bufferSizes[i] + 7) / 8 * 8
        }
        if mysql_stmt_bind_result(stmt, binds) != 0 { throw fail(Self.error(of: stmt)) }
        var rows: [SQLRow] = []
        rows.reserveCapacity(rowCount)
        while true {
            let rc = mysql_stmt_fetch(stmt)
            if rc == MYSQL_NO_DATA { break }
            if rc == 1 { throw fail(Self.error(of: stmt)) }
            // MYSQL_DATA_TRUNCATED cannot happen: buffers are sized from max_length.
            var values: [SQLValue] = []
            values.reserveCapacity(columnCount)
            for i in 0..<columnCount {
                if nulls[i] != 0 {
                    values.append(.null)
                    continue
                }
                let p = binds[i].buffer!
                switch kinds[i] {
                case .int:
                    values.append(.int(p.loadUnaligned(as: Int64.self)))
                case .time:
                    let t = p.loadUnaligned(as: MYSQL_TIME.self)
                    let days = Timestamp.days(fromCivil: Int64(t.year), Int64(t.month), Int64(t.day))
                    let secs = ((days * 24 + Int64(t.hour)) * 60 + Int64(t.minute)) * 60 + Int64(t.second)
                    values.append(.timestamp(Timestamp(milliseconds: secs * 1000 + Int64(t.second_part) / 1000)))
                case .bytes:
                    let n = Int(lengths[i])
                    values.append(.bytes(Array(UnsafeRawBufferPointer(start: p, count: n))))
                }
            }
            rows.append(SQLRow(values: values))
        }
        return rows
    }

    private func prepared(_ sql: String) throws(MariaDBError) -> UnsafeMutablePointer<MYSQL_STMT> {
        if let s = statements[sql] { return s }
        guard let m = mysql else { throw lost("the connection is closed") }
        if statements.count >= Self.statementCacheLimit {
            for (_, s) in statements { mysql_stmt_close(s) }
            statements.removeAll()
        }
        guard let stmt = mysql_stmt_init(m) else { throw fail(Self.error(of: m)) }
        if mysql_stmt_prepare(stmt, sql, UInt(sql.utf8.count)) != 0 {
            let e = Self.error(of: stmt)
            mysql_stmt_close(stmt)
            throw fail(e)
        }
        statements[sql] = stmt
        return stmt
    }

    private func run(_ stmt: UnsafeMutablePointer<MYSQL_STMT>, _ params: [SQLValue]) throws(MariaDBError) {
        let expected = Int(mysql_stmt_param_count(stmt))
        precondition(expected == params.count, "statement wants \(expected) parameters, got \(params.count)")
        if params.isEmpty {
            if mysql_stmt_execute(stmt) != 0 { throw fail(Self.error(of: stmt)) }
            return
        }
        // One allocation holds every parameter's bytes; it outlives mysql_stmt_execute.
        var sizes: [Int] = []
        sizes.reserveCapacity(params.count)
        for p in params {
            switch p {
            case .null: sizes.append(0)
            case .int, .double: sizes.append(8)
            case .text(let s): sizes.append(s.utf8.count)
            case .bytes(let b): sizes.append(b.count)
            case .timestamp: sizes.append(MemoryLayout<MYSQL_TIME>.stride)
            }
        }
        let total = sizes.reduce(0) { $0 + ($1 + 7) / 8 * 8 }
        let storage = UnsafeMutableRawPointer.allocate(byteCount: max(total, 8), alignment: 8)
        let binds = UnsafeMutablePointer<MYSQL_BIND>.allocate(capacity: params.count)
        binds.initialize(repeating: MYSQL_BIND(), count: params.count)
        let lengths = UnsafeMutablePointer<UInt>.allocate(capacity: params.count)
        lengths.initialize(repeating: 0, count: params.count)
        defer {
            storage.deallocate()
            binds.deallocate()
            lengths.deallocate()
        }
        var offset = 0
        for (i, p) in params.enumerated() {
            let at = storage + offset
            binds[i].buffer = at
            switch p {
            case .null:
                binds[i].buffer_type = MYSQL_TYPE_NULL
            case .int(let v):
                at.storeBytes(of: v, as: Int64.self)
                binds[i].buffer_type = MYSQL_TYPE_LONGLONG
            case .double(let v):
                at.storeBytes(of: v, as: Double.self)
                binds[i].buffer_type = MYSQL_TYPE_DOUBLE
            case .text(let s):
                var copy = s
                copy.withUTF8 { u in
                    if u.count > 0 { at.copyMemory(from: u.baseAddress!, byteCount: u.count) }
                }
                binds[i].buffer_type = MYSQL_TYPE_STRING
                lengths[i] = UInt(sizes[i])
                binds[i].buffer_length = UInt(sizes[i])
                binds[i].length = lengths + i
            case .bytes(let b):
                b.withUnsafeBytes { u in
                    if u.count > 0 { at.copyMemory(from: u.baseAddress!, byteCount: u.count) }
                }
                binds[i].buffer_type = MYSQL_TYPE_BLOB
                lengths[i] = UInt(sizes[i])
                binds[i].buffer_length = UInt(sizes[i])
                binds[i].length = lengths + i
            case .timestamp(let t):
                let (days, msOfDay) = Timestamp.floorDivMod(t.milliseconds, 86_400_000)
                let (y, mo, d) = Timestamp.civil(fromDays: days)
                var time = MYSQL_TIME()
                time.year = UInt32(y)
                time.month = UInt32(mo)
                time.day = UInt32(d)
                time.hour = UInt32(msOfDay / 3_600_000)
                time.minute = UInt32((msOfDay / 60_000) % 60)
                time.second = UInt32((msOfDay / 1000) % 60)
                time.second_part = UInt((msOfDay % 1000) * 1000)
                time.time_type = MYSQL_TIMESTAMP_DATETIME
                at.storeBytes(of: time, as: MYSQL_TIME.self)
                binds[i].buffer_type = MYSQL_TYPE_DATETIME
                binds[i].buffer_length = UInt(MemoryLayout<MYSQL_TIME>.stride)
            }
            offset += (sizes[i] + 7) / 8 * 8
        }
        if mysql_stmt_bind_param(stmt, binds) != 0 { throw fail(Self.error(of: stmt)) }
        if mysql_stmt_execute(stmt) != 0 { throw fail(Self.error(of: stmt)) }
    }

    // MARK: - Errors

    private func lost(_ message: String) -> MariaDBError {
        isBroken = true
        return MariaDBError(kind: .connectionLost, errno: 2006, message: message)
    }

    /// Marks the connection broken when the error says so, then returns the error to throw.
    private func fail(_ e: MariaDBError) -> MariaDBError {
        if e.kind == .connectionLost || e.kind == .unavailable { isBroken = true }
        // A statement whose connection was lost is unusable after a reconnect anyway.
        return e
    }

    static func error(of m: UnsafeMutablePointer<MYSQL>) -> MariaDBError {
        MariaDBError(
            errno: mysql_errno(m), sqlState: String(cString: mysql_sqlstate(m)), message: String(cString: mysql_error(m)))
    }

    static func error(of s: UnsafeMutablePointer<MYSQL_STMT>) -> MariaDBError {
        MariaDBError(
            errno: mysql_stmt_errno(s), sqlState: String(cString: mysql_stmt_sqlstate(s)),
            message: String(cString: mysql_stmt_error(s)))
    }
}

/// `mysql_options` takes `const void *`; a helper keeps the integer options readable.
@inline(__always)
private func mysql_optionsv_uint(_ m: UnsafeMutablePointer<MYSQL>, _ option: mysql_option, _ value: inout UInt32) {
    _ = mysql_options(m, option, &value)
}

#if canImport(Glibc)
import Glibc
#endif

func monotonicSeconds() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}
