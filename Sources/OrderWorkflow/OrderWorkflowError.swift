/// The OrderWorkflow module's error: a code and a message naming what is wrong.
public struct OrderWorkflowError: Error, Sendable, Equatable, CustomStringConvertible {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        public let name: String
        private init(_ name: String) { self.name = name }
        public var description: String { name }
        /// A configuration value is malformed or out of range.
        public static let badConfiguration = Code("BAD_CONFIGURATION")
        /// A stored order could not be read.
        public static let badObject = Code("BAD_OBJECT")
    }

    public var code: Code
    public var message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { "\(code): \(message)" }
}
