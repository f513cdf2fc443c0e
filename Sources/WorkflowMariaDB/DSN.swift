/// How to reach MariaDB: parsed from a DSN, never printed with its password.
///
/// Accepted forms:
/// - the seed's Go-style DSN: `user[:password]@tcp(host[:port])/db?param=value&…`
///   and `user[:password]@unix(/path/to.sock)/db?…`
/// - a URL: `mariadb://user[:password]@host[:port]/db?…` (also `mysql://`), or
///   `mariadb://user@localhost/db?socket=/path/to.sock`
///
/// Parameters: `tls=true|false|skip-verify|preferred`, `timeout` (connect), `readTimeout`,
/// `writeTimeout` (Go durations such as `5s`, `500ms`, `1m`), `charset`, `collation`,
/// `parseTime`, `loc` (accepted for compatibility: times are always UTC here), `tls-ca` /
/// `ssl-ca`, `tls-cert`, `tls-key`. Unknown parameters are an error, so a typo does not
/// silently change behaviour.
public struct MariaDBConfiguration: Sendable, Equatable, CustomStringConvertible {
    public enum Endpoint: Sendable, Equatable {
        case tcp(host: String, port: Int)
        case unix(path: String)
    }

    public enum TLSMode: String, Sendable, Equatable {
        /// No TLS.
        case disabled = "false"
        /// TLS required and the server certificate verified (`tls=true`).
        case verify = "true"
        /// TLS required, certificate not verified (`tls=skip-verify`).
        case skipVerify = "skip-verify"
        /// TLS if the server offers it (`tls=preferred`).
        case preferred = "preferred"
    }

    public var endpoint: Endpoint
    public var user: String
    public var password: String?
    /// Empty: no default database.
    public var database: String
    public var tls: TLSMode = .disabled
    public var tlsCA: String?
    public var tlsCert: String?
    public var tlsKey: String?
    /// Seconds. Defaults: connect 10 s, read 30 s, write 30 s.
    public var connectTimeout: Int = 10
    public var readTimeout: Int = 30
    public var writeTimeout: Int = 30
    public var charset: String = "utf8mb4"
    public var collation: String = "utf8mb4_unicode_ci"
    /// `wsrep_sync_wait` for every session (`wsrep_sync_wait=N` in the DSN, 0…15): on a Galera
    /// cluster, 1 makes each read wait until the node has applied every write the cluster
    /// committed before it (read-your-writes across nodes). nil: the server's setting, unless
    /// workflowd finds a cluster and sets 1 (see `ClusterCheck`).
    public var syncWait: Int?

    public init(endpoint: Endpoint, user: String, password: String? = nil, database: String) {
        self.endpoint = endpoint
        self.user = user
        self.password = password
        self.database = database
    }

    /// The DSN with the password replaced by `***`: the only form that may be logged.
    public var description: String {
        let auth = password == nil ? user : "\(user):***"
        let extra = syncWait.map { "&wsrep_sync_wait=\($0)" } ?? ""
        switch endpoint {
        case .tcp(let host, let port): return "\(auth)@tcp(\(host):\(port))/\(database)?tls=\(tls.rawValue)\(extra)"
        case .unix(let path): return "\(auth)@unix(\(path))/\(database)?tls=\(tls.rawValue)\(extra)"
        }
    }

    public struct ParseError: Error, Sendable, Equatable, CustomStringConvertible {
        public var message: String
        public var description: String { "invalid DSN: \(message)" }

        static let rawSeparatorInPassword = ParseError(
            message: "an '@' after the address: percent-encode '@', '/', '(' and ':' in the user and password (%40, %2F, %28, %3A)")

        /// Messages quote the part that is wrong ('udp', '99999'). When a password holds a raw
        /// separator the parser may split inside it, so a quoted part that overlaps where a
        /// password can be (from the first ':' of the user info to the last '@') is replaced.
        func hidingPasswordFragments(of dsn: String) -> ParseError {
            let body = dsn.firstRange(of: "://").map { dsn[$0.upperBound...] } ?? dsn[...]
            guard let colon = body.firstIndex(of: ":"), let at = body.lastIndex(of: "@"), colon < at else { return self }
            let span = body[body.index(after: colon)..<at]
            guard !span.isEmpty else { return self }
            var parts = message.split(separator: "'", omittingEmptySubsequences: false)
            var i = 1
            while i < parts.count - 1 {
                if !parts[i].isEmpty, span.contains(parts[i]) || parts[i].contains(span) { parts[i] = "…" }
                i += 2
            }
            return ParseError(message: parts.joined(separator: "'"))
        }
    }

    public init(dsn: String) throws(ParseError) {
        do {
            try self.init(parsing: dsn)
        } catch {
            throw error.hidingPasswordFragments(of: dsn)
        }
    }

    private init(parsing dsn: String) throws(ParseError) {
        let trimmed = dsn.trimmingSpaces()
        guard !trimmed.isEmpty else { throw ParseError(message: "the DSN is empty") }
        if let r = trimmed.firstRange(of: "://") {
            let scheme = trimmed[..<r.lowerBound].lowercased()
            guard scheme == "mariadb" || scheme == "mysql" else {
                throw ParseError(message: "unknown scheme '\(scheme)' (use mariadb:// or the user@tcp(host:port)/db form)")
            }
            try self.init(url: String(trimmed[r.upperBound...]))
        } else {
            try self.init(goStyle: trimmed)
        }
    }

    private init(goStyle s: String) throws(ParseError) {
        // user[:password]@proto(address)/db?params — the password may contain '@', so split at the
        // last '@' before the protocol part.
        guard let at = s.lastIndex(of: "@", before: s.firstIndex(of: "(")) else {
            throw ParseError(message: "missing 'user@' before the address (expected user[:password]@tcp(host:port)/db)")
        }
        let (user, password) = try Self.splitUserInfo(String(s[..<at]))
        let rest = s[s.index(after: at)...]
        guard let open = rest.firstIndex(of: "("), let close = rest.firstIndex(of: ")"), open < close else {
            throw ParseError(message: "missing address: expected tcp(host:port) or unix(/path/to.sock) after '@'")
        }
        // An '@' here means the split above was wrong: the password holds a raw '(' and '@'.
        guard !rest[..<close].contains("@") else { throw ParseError.rawSeparatorInPassword }
        let proto = String(rest[..<open])
        let address = String(rest[rest.index(after: open)..<close])
        let endpoint: Endpoint
        switch proto {
        case "tcp":
            endpoint = try Self.parseHostPort(address)
        case "unix":
            guard address.hasPrefix("/") else { throw ParseError(message: "unix socket path must be absolute") }
            endpoint = .unix(path: address)
        default:
            throw ParseError(message: "unknown protocol '\(proto)' (use tcp or unix)")
        }
        var tail = rest[rest.index(after: close)...]
        guard tail.first == "/" else { throw ParseError(message: "missing '/' and database name after the address") }
        tail = tail.dropFirst()
        let (db, query) = Self.splitQuery(String(tail))
        self.init(endpoint: endpoint, user: user, password: password, database: try Self.decode(db, part: "database"))
        try applyParameters(query)
    }

    private init(url s: String) throws(ParseError) {
        guard let at = s.lastIndex(of: "@", before: s.firstIndex(of: "/")) else {
            throw ParseError(message: "missing 'user@' in the URL (expected mariadb://user:password@host:port/db)")
        }
        let (user, password) = try Self.splitUserInfo(String(s[..<at]))
        let rest = String(s[s.index(after: at)...])
        // An '@' after the host means the split above was wrong: the password holds a raw '/'
        // and '@' (it would otherwise parse, and the host or database would be part of it).
        guard !rest.prefix(while: { $0 != "?" }).contains("@") else { throw ParseError.rawSeparatorInPassword }
        let slash = rest.firstIndex(of: "/")
        let hostPort = slash.map { String(rest[..<$0]) } ?? rest
        let (db, query) = slash.map { Self.splitQuery(String(rest[rest.index(after: $0)...])) } ?? ("", "")
        guard !hostPort.isEmpty else { throw ParseError(message: "missing host in the URL") }
        self.init(
            endpoint: try Self.parseHostPort(hostPort), user: user, password: password,
            database: try Self.decode(db, part: "database"))
        try applyParameters(query)
    }

    private static func splitUserInfo(_ s: String) throws(ParseError) -> (String, String?) {
        let user: String
        let password: String?
        if let colon = s.firstIndex(of: ":") {
            user = String(s[..<colon])
            password = try decode(String(s[s.index(after: colon)...]), part: "password")
        } else {
            user = s
            password = nil
        }
        guard !user.isEmpty else { throw ParseError(message: "the user name is empty") }
        return (try decode(user, part: "user"), password)
    }

    private static func parseHostPort(_ s: String) throws(ParseError) -> Endpoint {
        var host = s
        var port = 3306
        if s.hasPrefix("[") {  // [::1]:3306
            guard let end = s.firstIndex(of: "]") else { throw ParseError(message: "unclosed '[' in host") }
            host = String(s[s.index(after: s.startIndex)..<end])
            let after = s[s.index(after: end)...]
            if after.hasPrefix(":") { port = try parsePort(String(after.dropFirst())) }
        } else if let colon = s.lastIndex(of: ":") {
            host = String(s[..<colon])
            port = try parsePort(String(s[s.index(after: colon)...]))
        }
        guard !host.isEmpty else { throw ParseError(message: "the host is empty") }
        return .tcp(host: host, port: port)
    }

    private static func parsePort(_ s: String) throws(ParseError) -> Int {
        guard let p = Int(s), (1...65535).contains(p) else {
            throw ParseError(message: "port '\(s)' is not a number from 1 to 65535")
        }
        return p
    }

    private static func splitQuery(_ s: String) -> (String, String) {
        guard let q = s.firstIndex(of: "?") else { return (s, "") }
        return (String(s[..<q]), String(s[s.index(after: q)...]))
    }

    private mutating func applyParameters(_ query: String) throws(ParseError) {
        guard !query.isEmpty else { return }
        for pair in query.split(separator: "&", omittingEmptySubsequences: true) {
            let kv = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            let key = String(kv[0])
            let value = try Self.decode(kv.count > 1 ? String(kv[1]) : "", part: "parameter \(key)")
            switch key {
            case "tls", "ssl":
                switch value.lowercased() {
                case "true", "1", "verify", "required": tls = .verify
                case "false", "0", "disabled": tls = .disabled
                case "skip-verify", "skip_verify": tls = .skipVerify
                case "preferred": tls = .preferred
                default:
                    throw ParseError(message: "parameter tls: '\(value)' is not one of true, false, skip-verify, preferred")
                }
            case "tls-ca", "ssl-ca", "tlsCA": tlsCA = value
            case "tls-cert", "ssl-cert": tlsCert = value
            case "tls-key", "ssl-key": tlsKey = value
            case "timeout", "connectTimeout": connectTimeout = try Self.seconds(value, key)
            case "readTimeout": readTimeout = try Self.seconds(value, key)
            case "writeTimeout": writeTimeout = try Self.seconds(value, key)
            case "charset":
                // Go accepts a comma-separated preference list; take the first.
                let first = value.split(separator: ",").first.map(String.init) ?? ""
                guard first.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "_" }), !first.isEmpty else {
                    throw ParseError(message: "parameter charset: '\(value)' is not a character set name")
                }
                charset = first
            case "collation":
                guard value.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "_" }), !value.isEmpty else {
                    throw ParseError(message: "parameter collation: '\(value)' is not a collation name")
                }
                collation = value
            case "wsrep_sync_wait":
                guard let n = Int(value), (0...15).contains(n) else {
                    throw ParseError(message: "parameter wsrep_sync_wait: '\(value)' is not a number from 0 to 15")
                }
                syncWait = n
            case "socket":
                guard value.hasPrefix("/") else { throw ParseError(message: "parameter socket: path must be absolute") }
                endpoint = .unix(path: value)
            case "parseTime", "loc", "multiStatements", "interpolateParams", "allowNativePasswords",
                "clientFoundRows", "columnsWithAlias", "rejectReadOnly":
                continue  // Go driver options with no meaning (or a fixed meaning) here.
            default:
                throw ParseError(message: "unknown parameter '\(key)'")
            }
        }
    }

    /// Go duration (`5s`, `250ms`, `1m30s`) or plain seconds, rounded up to whole seconds
    /// (Connector/C takes whole seconds).
    private static func seconds(_ s: String, _ key: String) throws(ParseError) -> Int {
        if let n = Int(s), n > 0 { return n }
        var total = 0.0
        var number = ""
        var unit = ""
        var parsedAny = false
        func flush() -> Bool {
            guard let v = Double(number) else { return false }
            switch unit {
            case "h": total += v * 3600
            case "m": total += v * 60
            case "s": total += v
            case "ms": total += v / 1000
            case "us", "µs": total += v / 1_000_000
            default: return false
            }
            number = ""
            unit = ""
            parsedAny = true
            return true
        }
        for c in s {
            if c.isNumber || c == "." {
                if !unit.isEmpty { guard flush() else { break } }
                number.append(c)
            } else {
                unit.append(c)
            }
        }
        guard flush(), parsedAny, total > 0, total <= 86_400 else {
            throw ParseError(message: "parameter \(key): '\(s)' is not a duration such as 5s or 500ms")
        }
        return max(1, Int(total.rounded(.up)))
    }

    /// Percent-decoding; errors name the part but never echo a password.
    private static func decode(_ s: String, part: String) throws(ParseError) -> String {
        guard s.contains("%") else { return s }
        var bytes: [UInt8] = []
        var it = Array(s.utf8)[...]
        while let b = it.popFirst() {
            if b == UInt8(ascii: "%") {
                guard it.count >= 2, let v = UInt8(String(decoding: it.prefix(2), as: UTF8.self), radix: 16) else {
                    throw ParseError(message: "bad percent-escape in the \(part)")
                }
                bytes.append(v)
                it = it.dropFirst(2)
            } else {
                bytes.append(b)
            }
        }
        guard let decoded = String(validating: bytes, as: UTF8.self) else {
            throw ParseError(message: "the \(part) is not valid UTF-8 after percent-decoding")
        }
        return decoded
    }
}

extension String {
    fileprivate func trimmingSpaces() -> String {
        var s = Substring(self)
        while s.first?.isWhitespace == true { s = s.dropFirst() }
        while s.last?.isWhitespace == true { s = s.dropLast() }
        return String(s)
    }

    fileprivate func lastIndex(of c: Character, before limit: String.Index?) -> String.Index? {
        let head = self[..<(limit ?? endIndex)]
        return head.lastIndex(of: c)
    }
}

extension MariaDBConfiguration: CustomReflectable {
    /// `dump()` and debuggers show the password as `***`, like `description`.
    public var customMirror: Mirror {
        Mirror(
            self,
            children: [
                "endpoint": endpoint, "user": user, "password": password == nil ? "nil" : "***",
                "database": database, "tls": tls, "tlsCA": tlsCA as Any, "connectTimeout": connectTimeout,
                "readTimeout": readTimeout, "writeTimeout": writeTimeout, "charset": charset, "collation": collation,
            ], displayStyle: .struct)
    }
}
