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

    /// A pushed frame (a subscription's `{"sub": S, "event": {...}}` or a worker's
    /// `{"worker": W, "task": {...}}`), as opposed to a reply.
    public var isFrame: Bool { json["ok"] == nil && (json["sub"] != nil || json["worker"] != nil) }

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

    /// For a subscription frame: the subscription and its event.
    public var frame: (sub: Int64, event: JSON)? {
        guard isFrame, let sub = json["sub"]?.int64Value, let event = json["event"] else { return nil }
        return (sub, event)
    }

    /// For a task frame: the worker and its task.
    public var task: (worker: Int64, task: JSON)? {
        guard isFrame, let worker = json["worker"]?.int64Value, let task = json["task"] else { return nil }
        return (worker, task)
    }
}
