import WorkflowWire

/// One line from the server: the parsed object and its exact text (without the line end), so a
/// tool can print what the server sent byte for byte.
public struct WorkflowMessage: Sendable, Equatable {
    public var json: JSON
    public var line: String

    public init(json: JSON, line: String) {
        self.json = json
        self.line = line
    }

    /// A pushed subscription frame (`{"sub": S, "event": {...}}`), as opposed to a reply.
    public var isFrame: Bool { json["ok"] == nil && json["sub"] != nil }

    /// `ok` of a reply.
    public var isOK: Bool { json["ok"] == .bool(true) }

    /// A reply's `id`, as the server echoed it.
    public var id: RequestID? {
        switch json["id"] {
        case .string(let s)?: .string(s)
        case .number(let n)?: .number(n)
        default: nil
        }
    }

    /// For a frame: the subscription and its event.
    public var frame: (sub: Int64, event: JSON)? {
        guard isFrame, let sub = json["sub"]?.int64Value, let event = json["event"] else { return nil }
        return (sub, event)
    }
}
