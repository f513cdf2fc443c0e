/// An addition to the store protocols (kept apart from `WorkflowStore` so no existing method
/// changes meaning): counts of runs by status and by run state, for `stats`.
///
/// A store that does not adopt it still works; `stats` then reports no counts. The MariaDB store
/// answers it with `SELECT workflow_name, status, run_state, COUNT(*) ... GROUP BY ...`.
public protocol RunCountingStore: Sendable {
    func runCounts() async throws -> [RunCount]
}

/// How many runs of `workflow` are in (`status`, `runState`).
public struct RunCount: Sendable, Equatable {
    public var workflow: String
    public var status: Int
    public var runState: RunState
    public var count: Int

    public init(workflow: String, status: Int, runState: RunState, count: Int) {
        self.workflow = workflow
        self.status = status
        self.runState = runState
        self.count = count
    }
}

/// An addition for `health`: the schema version the database has and the one this build
/// expects. A store without it reports no schema check.
public protocol SchemaVersionStore: Sendable {
    func schemaVersions() async throws -> (found: Int, expected: Int)
}
