/// The engine's error. `code` names what went wrong in the protocol's terms; `message` is safe
/// to show a client (no SQL, no DSN, no secrets).
public struct WorkflowError: Error, Sendable, Equatable, CustomStringConvertible {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        public let name: String
        private init(_ name: String) { self.name = name }
        public var description: String { name }

        public static let badRequest = Code("BAD_REQUEST")
        public static let notFound = Code("NOT_FOUND")
        public static let invalidState = Code("INVALID_STATE")
        /// The database cannot be reached right now; nothing was changed.
        public static let unavailable = Code("UNAVAILABLE")
        /// A write whose outcome is unknown (the connection dropped during COMMIT). On the wire
        /// it is `INTERNAL` (retryable); the store logs it once per lost commit.
        public static let outcomeUnknown = Code("OUTCOME_UNKNOWN")
        public static let conflict = Code("CONFLICT")
        public static let definition = Code("DEFINITION")
        public static let internalError = Code("INTERNAL")
        public static let draining = Code("DRAINING")
        /// Retention already deleted what was asked for; `earliestSeq` is the first `seq` kept.
        public static let gone = Code("GONE")
    }

    public var code: Code
    public var message: String
    public var retryable: Bool
    /// For `GONE`: the earliest `seq` the event log still keeps.
    public var earliestSeq: Int64?
    /// For `CONFLICT`: the run as it is now.
    public var run: Run?

    public init(_ code: Code, _ message: String, retryable: Bool = false) {
        self.code = code
        self.message = message
        self.retryable = retryable
    }

    /// Retention removed what was asked for.
    public static func gone(earliest: Int64, _ message: String) -> WorkflowError {
        var e = WorkflowError(.gone, message)
        e.earliestSeq = earliest
        return e
    }

    /// A worker's answer or a callback no longer applies; `run` is as it is now.
    public static func conflict(run: Run, _ message: String) -> WorkflowError {
        var e = WorkflowError(.conflict, message)
        e.run = run
        return e
    }

    public var description: String { "\(code): \(message)" }
}
