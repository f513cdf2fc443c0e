import WorkflowWire

/// Every error of WorkflowClient: one the server answered (`ok: false`, with the protocol's
/// code) or one of the connection (`cannotConnect`, `connectionClosed`, `io`, `badReply`).
///
/// A struct with a code rather than an enum, so a new code never breaks a caller's switch.
public struct WorkflowClientError: Error, Sendable, CustomStringConvertible {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        /// The protocol's code (`NOT_FOUND`, `TIMEOUT`, …) or a client-side one (`CANNOT_CONNECT`, …).
        public let name: String
        /// Whether the code came from the server.
        public let fromServer: Bool

        public init(server name: String) {
            self.name = name
            self.fromServer = true
        }

        private init(client name: String) {
            self.name = name
            self.fromServer = false
        }

        public var description: String { name }

        /// The socket does not exist or nobody listens on it.
        public static let cannotConnect = Code(client: "CANNOT_CONNECT")
        /// The server closed the connection before the reply came.
        public static let connectionClosed = Code(client: "CONNECTION_CLOSED")
        /// A read or write failed (or timed out).
        public static let io = Code(client: "IO")
        /// The server sent a line that is not a protocol message.
        public static let badReply = Code(client: "BAD_REPLY")

        public static let badJSON = Code(server: "BAD_JSON")
        public static let badRequest = Code(server: "BAD_REQUEST")
        public static let unknownOp = Code(server: "UNKNOWN_OP")
        public static let notFound = Code(server: "NOT_FOUND")
        public static let invalidState = Code(server: "INVALID_STATE")
        public static let timeout = Code(server: "TIMEOUT")
        public static let unreachable = Code(server: "UNREACHABLE")
        public static let limit = Code(server: "LIMIT")
        public static let lineTooLong = Code(server: "LINE_TOO_LONG")
        public static let unavailable = Code(server: "UNAVAILABLE")
        public static let draining = Code(server: "DRAINING")
        public static let internalError = Code(server: "INTERNAL")
        public static let forbidden = Code(server: "FORBIDDEN")
    }

    public var code: Code
    public var message: String
    /// The server's `retryable` flag; for client-side errors, whether trying again may help.
    public var retryable: Bool
    /// The whole `ok: false` reply, for server errors.
    public var reply: WorkflowMessage?

    public init(_ code: Code, _ message: String, retryable: Bool = false, reply: WorkflowMessage? = nil) {
        self.code = code
        self.message = message
        self.retryable = retryable
        self.reply = reply
    }

    /// For `TIMEOUT` and `UNREACHABLE`: the run as it is (`error.run`).
    public var run: JSON? { reply?.json["error"]?["run"] }

    public var description: String { "\(code.name): \(message)" }

    /// The error an `ok: false` reply stands for.
    static func from(reply: WorkflowMessage) -> WorkflowClientError {
        let error = reply.json["error"]
        let code = error?["code"]?.stringValue ?? "INTERNAL"
        let message = error?["message"]?.stringValue ?? ""
        var retryable = false
        if case .bool(let b)? = error?["retryable"] { retryable = b }
        return WorkflowClientError(Code(server: code), message, retryable: retryable, reply: reply)
    }
}
