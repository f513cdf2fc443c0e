import Logging
import Testing
import WorkflowEngine
@testable import WorkflowMariaDB

@Suite("Health: schema check", .timeLimit(.minutes(2)))
struct HealthSchemaTests {
    static func definition() throws -> WorkflowDefinition {
        var b = WorkflowBuilder(name: "w")
        b.status("A", code: 1, terminal: false)
        b.status("B", code: 2, terminal: true)
        b.initial(1)
        b.step(from: 1, to: [2]) { _ in StepResult(status: 2) }
        return try b.build()
    }

    @Test func healthReportsTheSchemaVersionAndFailsOnAMismatch() async throws {
        try await TestDatabase.with { store, pool in
            let current = SchemaMigrator.currentVersion
            #expect(try await store.schemaVersions() == (current, current))
            let engine = try WorkflowEngine(store: store, definitions: [try Self.definition()], logger: TestDatabase.logger)
            let ok = await engine.health()
            #expect(ok.checks["schema"] == HealthCheck(ok: true, detail: "version \(SchemaMigrator.currentVersion)"))
            _ = try await pool.withConnection {
                try $0.execute(
                    "INSERT INTO workflow_schema_version (version, applied_at) VALUES (?, UTC_TIMESTAMP(3))", [.int(Int64(current + 1))])
            }
            let bad = await engine.health()
            #expect(bad.checks["schema"]?.ok == false)
            #expect(bad.checks["schema"]?.detail.contains("version \(current + 1)") == true)
            #expect(!bad.healthy)
        }
    }
}
