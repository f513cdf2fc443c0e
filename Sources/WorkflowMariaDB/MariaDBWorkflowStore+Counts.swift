import WorkflowEngine

extension MariaDBWorkflowStore: RunCountingStore {
    /// Counts by (workflow, status, run state) for `stats`; an index-only scan of
    /// `idx_counts`.
    public func runCounts() async throws -> [RunCount] {
        try await read("run counts") { c in
            try c.query(
                """
                SELECT workflow_name, status, run_state, COUNT(*) FROM workflow_records
                GROUP BY workflow_name, status, run_state
                """
            ).map { row in
                let code = Int(try row.int(2))
                guard let state = RunState(rawValue: code) else {
                    throw MariaDBError(kind: .badRow, message: "a run has unknown run_state \(code)")
                }
                return RunCount(
                    workflow: try row.string(0), status: Int(try row.int(1)), runState: state, count: Int(try row.int(3)))
            }
        }
    }
}

extension MariaDBWorkflowStore: SchemaVersionStore {
    public func schemaVersions() async throws -> (found: Int, expected: Int) {
        let found = try await read("schema version") { c in try SchemaMigrator.version(c) }
        return (found, SchemaMigrator.currentVersion)
    }
}
