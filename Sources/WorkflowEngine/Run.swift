/// One workflow run as stored in `workflow_records`.
public struct Run: Sendable, Equatable {
    public var workflow: String
    public var foreignID: String
    public var runID: String
    public var runState: RunState
    /// The workflow's status code (for the order processor: 1 OrderCreated … 8 FulfillmentFailed).
    public var status: Int
    /// Starts at 1 and grows by exactly 1 with every change; transitions are conditional on it.
    public var version: Int64
    /// The workflow's object, serialised (JSON for the built-in workflow).
    public var object: [UInt8]
    /// Why the run was paused, cancelled, rejected or failed; nil otherwise.
    public var reason: String?
    public var createdAt: Timestamp
    public var updatedAt: Timestamp
    /// Engine bookkeeping (e.g. consecutive step errors); opaque to SQL readers.
    public var meta: [UInt8]?

    public init(
        workflow: String, foreignID: String, runID: String, runState: RunState, status: Int,
        version: Int64, object: [UInt8], reason: String? = nil, createdAt: Timestamp,
        updatedAt: Timestamp, meta: [UInt8]? = nil
    ) {
        self.workflow = workflow
        self.foreignID = foreignID
        self.runID = runID
        self.runState = runState
        self.status = status
        self.version = version
        self.object = object
        self.reason = reason
        self.createdAt = createdAt
        self.updatedAt = updatedAt
        self.meta = meta
    }

    /// The event that announces this run as it is now (written to the outbox with the change).
    public var event: EventData {
        EventData(
            workflow: workflow, foreignID: foreignID, runID: runID, status: status, runState: runState,
            version: version, at: updatedAt, reason: reason)
    }
}
