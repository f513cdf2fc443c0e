/// What retention removes, and how. Used by `workflowd prune` (once) and by the engine's leased
/// retention job (`WorkflowEngine.Configuration.retention`, every `intervalMilliseconds`).
public struct RetentionPolicy: Sendable, Equatable {
    /// Delete finished runs (`RunState.prunable`) whose `updated_at` is older than this; nil
    /// keeps every run.
    public var runsOlderThanMilliseconds: Int64?
    /// Delete events older than this (from the start of the log, never the newest one, never
    /// one a consumer has not finished); nil keeps every event.
    public var eventsOlderThanMilliseconds: Int64?
    /// Copy runs into `workflow_records_archive` in the transaction that deletes them.
    public var archive: Bool
    /// Rows per transaction. Default 500.
    public var batchSize: Int
    /// Real time between two passes of the engine's job. Default 5 minutes.
    public var intervalMilliseconds: Int

    public init(
        runsOlderThanMilliseconds: Int64? = nil, eventsOlderThanMilliseconds: Int64? = nil, archive: Bool = false,
        batchSize: Int = 500, intervalMilliseconds: Int = 300_000
    ) {
        self.runsOlderThanMilliseconds = runsOlderThanMilliseconds
        self.eventsOlderThanMilliseconds = eventsOlderThanMilliseconds
        self.archive = archive
        self.batchSize = batchSize
        self.intervalMilliseconds = intervalMilliseconds
    }

    /// True when the policy deletes anything at all.
    public var isActive: Bool { runsOlderThanMilliseconds != nil || eventsOlderThanMilliseconds != nil }
}
