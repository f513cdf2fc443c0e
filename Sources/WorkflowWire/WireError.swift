/// A protocol error as it goes on the wire: `{"code","message","retryable"}` (+ `run` for
/// `TIMEOUT` and `UNREACHABLE`, `earliest` for `GONE`).
///
/// A struct with a code rather than an enum, so adding a code never breaks a switch elsewhere.
public struct WireError: Error, Sendable, Equatable, CustomStringConvertible {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        public let name: String
        /// Whether a client may retry the same request unchanged (PROTOCOL.md's table).
        public let retryable: Bool
        private init(_ name: String, retryable: Bool) {
            self.name = name
            self.retryable = retryable
        }
        public var description: String { name }

        public static let badJSON = Code("BAD_JSON", retryable: false)
        public static let badRequest = Code("BAD_REQUEST", retryable: false)
        public static let unknownOp = Code("UNKNOWN_OP", retryable: false)
        public static let notFound = Code("NOT_FOUND", retryable: false)
        public static let invalidState = Code("INVALID_STATE", retryable: false)
        public static let timeout = Code("TIMEOUT", retryable: true)
        public static let unreachable = Code("UNREACHABLE", retryable: false)
        public static let limit = Code("LIMIT", retryable: true)
        public static let lineTooLong = Code("LINE_TOO_LONG", retryable: false)
        public static let unavailable = Code("UNAVAILABLE", retryable: true)
        public static let draining = Code("DRAINING", retryable: true)
        public static let internalError = Code("INTERNAL", retryable: true)
        /// An addition to the contract: the peer's user is not in the server's allow-list;
        /// sent once, without `id`, at accept, and the connection is closed.
        public static let forbidden = Code("FORBIDDEN", retryable: false)
        /// An addition to the contract: retention already deleted the events asked for
        /// (`subscribe` from an old `seq`, a catch-up read, or a run's `history`);
        /// `error.earliest` is the earliest `seq` still kept.
        public static let gone = Code("GONE", retryable: false)
        /// External steps: a `complete`, `fail`, `extend` or `callback` whose run is no longer
        /// where the task or callback expected it; `error.run` holds the run as it is.
        public static let conflict = Code("CONFLICT", retryable: false)

        public static let all: [Code] = [
            .badJSON, .badRequest, .unknownOp, .notFound, .invalidState, .timeout, .unreachable, .limit,
            .lineTooLong, .unavailable, .draining, .internalError, .forbidden, .gone, .conflict,
        ]

        /// The code named `name`, if the protocol has it.
        public static func named(_ name: String) -> Code? { all.first { $0.name == name } }
    }

    public var code: Code
    public var message: String
    public var retryable: Bool
    /// For `TIMEOUT`, `UNREACHABLE` and `CONFLICT`: the run as it is, already encoded (`RunPayload.json`).
    public var run: [UInt8]?
    /// For `GONE`: the earliest `seq` the event log still keeps.
    public var earliest: Int64?

    public init(_ code: Code, _ message: String, retryable: Bool? = nil, run: [UInt8]? = nil, earliest: Int64? = nil) {
        self.code = code
        self.message = message
        self.retryable = retryable ?? code.retryable
        self.run = run
        self.earliest = earliest
    }

    public var description: String { "\(code.name): \(message)" }

    public static func badRequest(_ message: String) -> WireError { WireError(.badRequest, message) }
}

extension WireError {
    /// `{"code","message","retryable"[,"run"][,"earliest"]}`
    func write(to w: inout JSONWriter) {
        w.beginObject()
        w.key("code")
        w.string(code.name)
        w.key("message")
        w.string(message)
        w.key("retryable")
        w.bool(retryable)
        if let run {
            w.key("run")
            w.raw(run)
        }
        if let earliest {
            w.key("earliest")
            w.int(earliest)
        }
        w.endObject()
    }
}
