/// An error from MariaDB or Connector/C, keeping the raw numbers (errno and SQLSTATE) so callers
/// can tell a deadlock from a lost connection from a duplicate key.
///
/// `message` comes from the server or the client library. They never contain a password (the
/// server says "using password: YES" at most), and this type never adds the DSN.
public struct MariaDBError: Error, Sendable, CustomStringConvertible, Equatable {
    public struct Kind: Hashable, Sendable, CustomStringConvertible {
        let raw: String
        public var description: String { raw }
        /// 1213 deadlock, 1205 lock wait timeout: the transaction was (or must be) rolled back
        /// and can be retried as a whole.
        public static let retryableConflict = Kind(raw: "retryable conflict")
        /// The connection broke before COMMIT was sent: nothing was applied; reconnect and retry.
        public static let connectionLost = Kind(raw: "connection lost")
        /// A multi-row conditional update matched fewer runs than it names (one had moved on):
        /// the transaction is rolled back and the store applies the batch run by run. Never
        /// leaves the store.
        public static let batchConflict = Kind(raw: "batch conflict")
        /// The connection broke while COMMIT was in flight: the write may or may not be applied.
        /// Never retried blindly; callers re-read (version checks make that safe).
        public static let commitOutcomeUnknown = Kind(raw: "commit outcome unknown")
        /// The server cannot be reached or refuses connections (e.g. 1040 too many connections).
        public static let unavailable = Kind(raw: "unavailable")
        /// 1062 duplicate key.
        public static let duplicateKey = Kind(raw: "duplicate key")
        /// A bad DSN or option; a configuration mistake, not a server problem.
        public static let configuration = Kind(raw: "configuration")
        /// The pool is shut down.
        public static let shutdown = Kind(raw: "shut down")
        /// A row that does not decode (e.g. a run state code the engine does not know).
        public static let badRow = Kind(raw: "bad row")
        /// Anything else the server reported (syntax, constraint, data too long, ...).
        public static let other = Kind(raw: "server error")
    }

    public var kind: Kind
    /// MariaDB / Connector/C error number (0 when the error is our own).
    public var errno: UInt32
    public var sqlState: String
    public var message: String

    public init(kind: Kind, errno: UInt32 = 0, sqlState: String = "HY000", message: String) {
        self.kind = kind
        self.errno = errno
        self.sqlState = sqlState
        self.message = message
    }

    /// Classifies a server or client error number.
    public init(errno: UInt32, sqlState: String, message: String) {
        self.init(kind: Self.classify(errno), errno: errno, sqlState: sqlState, message: message)
    }

    static func classify(_ errno: UInt32) -> Kind {
        switch errno {
        case 1213, 1205: .retryableConflict
        // 2006 gone away, 2013 lost during query, 2055 lost (system error), 4031 disconnected
        // by the server (wait_timeout), 1927 connection killed, 1053 server shutdown in progress.
        case 2006, 2013, 2055, 4031, 1927, 1053: .connectionLost
        // 2002/2003 cannot connect, 2005 unknown host, 1040 too many connections,
        // 1129 host blocked, 2026 TLS error, 1045 access denied is configuration.
        // 1047 on a Galera node outside the primary component ("WSREP has not yet prepared
        // node for application use"): the node takes no reads or writes until it rejoins.
        case 2002, 2003, 2005, 1040, 1129, 2026, 1047: .unavailable
        case 1045, 1044, 1049: .configuration
        case 1062: .duplicateKey
        default: .other
        }
    }

    public var description: String {
        // errno 0: our own error (schema lock, schema version); no server number to show.
        errno == 0 ? "MariaDB: \(message)" : "MariaDB error \(errno) (\(sqlState)): \(message)"
    }

    /// Whether a caller may try the same operation again later.
    public var isTransient: Bool {
        kind == .retryableConflict || kind == .connectionLost || kind == .unavailable
    }
}
