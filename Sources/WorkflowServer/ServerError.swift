/// Why the server could not start or stopped: a struct with a code (STYLE.md), libuv's error
/// name kept where one caused it.
public struct ServerError: Error, Sendable, Equatable, CustomStringConvertible {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        public let name: String
        private init(_ name: String) { self.name = name }
        public var description: String { name }

        /// A live server already answers on the socket path.
        public static let addressInUse = Code("ADDRESS_IN_USE")
        /// The path exists and is not a socket; it is left alone.
        public static let pathNotSocket = Code("PATH_NOT_SOCKET")
        /// A libuv or system call failed.
        public static let system = Code("SYSTEM")
        /// `start()` was called twice.
        public static let alreadyStarted = Code("ALREADY_STARTED")
    }

    public var code: Code
    public var message: String
    /// libuv's error name (`EADDRINUSE`), when libuv reported the failure.
    public var uvError: String?

    public init(_ code: Code, _ message: String, uvError: String? = nil) {
        self.code = code
        self.message = message
        self.uvError = uvError
    }

    public var description: String {
        if let uvError { return "\(code): \(message) (\(uvError))" }
        return "\(code): \(message)"
    }
}
