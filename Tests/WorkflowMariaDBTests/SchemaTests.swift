import Foundation
import Testing
import WorkflowEngine
import enum WorkflowEngine.SortOrder
@testable import WorkflowMariaDB

/// The schema: the file and the embedded copy agree, migrating is idempotent and forward-only,
/// the seed's SQL runs unchanged, times and text round-trip, and no hot query scans a table.
@Suite("Schema", .serialized, .timeLimit(.minutes(2)))
struct SchemaTests {
    static var repositoryRoot: URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    }

    @Test func schemaFileIsByteIdenticalToTheEmbeddedCopy() throws {
        let file = try Data(contentsOf: Self.repositoryRoot.appendingPathComponent("schema.sql"))
        // A multi-line Swift literal cannot end with the file's final newline; everything else
        // must be the same bytes.
        let embedded = Data((Schema.sql + "\n").utf8)
        #expect(file.count == embedded.count)
        if file != embedded {
            let a = Array(file), b = Array(embedded)
            let at = zip(a, b).enumerated().first { $0.element.0 != $0.element.1 }?.offset ?? min(a.count, b.count)
            Issue.record("schema.sql and Schema.sql differ at byte \(at): \(String(decoding: a[at..<min(a.count, at + 60)], as: UTF8.self))")
        }
        #expect(
            SchemaMigrator.statements.count == 18,
            "v1: 7 tables and the version row; v2: 2 indexes, 1 table, the version row; v3: 1 table, the version row; v4: 3 ALTERs, the version row")
        // Every statement is idempotent (IF NOT EXISTS / IF EXISTS / IGNORE).
        #expect(
            SchemaMigrator.statements.allSatisfy {
                $0.hasPrefix("CREATE TABLE IF NOT EXISTS") || $0.hasPrefix("CREATE INDEX IF NOT EXISTS") || $0.hasPrefix("INSERT IGNORE")
                    || ($0.hasPrefix("ALTER TABLE") && ($0.contains(" IF NOT EXISTS") || $0.contains(" IF EXISTS")))
            })
    }

    /// Columns, indexes and the version table: what a second migration must not change.
    static func dump(_ pool: MariaDBPool) async throws -> [[String?]] {
        try await pool.withConnection { c in
            let columns = try c.queryText(
                """
                SELECT 'column', table_name, column_name, ordinal_position, column_type, is_nullable, column_default,
                  extra, generation_expression, collation_name
                FROM information_schema.columns WHERE table_schema = DATABASE() ORDER BY table_name, ordinal_position
                """)
            let indexes = try c.queryText(
                """
                SELECT 'index', table_name, index_name, seq_in_index, column_name, non_unique, index_type
                FROM information_schema.statistics WHERE table_schema = DATABASE() ORDER BY table_name, index_name, seq_in_index
                """)
            let tables = try c.queryText(
                """
                SELECT 'table', table_name, engine, table_collation FROM information_schema.tables
                WHERE table_schema = DATABASE() ORDER BY table_name
                """)
            let versions = try c.queryText(
                "SELECT 'version', version, CAST(applied_at AS CHAR) FROM workflow_schema_version ORDER BY version")
            return columns + indexes + tables + versions
        }
    }

    @Test func migratingTwiceChangesNothing() async throws {
        try await TestDatabase.with { _, pool async throws in
            let before = try await Self.dump(pool)
            #expect(before.filter { $0[0] == "table" }.count == 9)
            #expect(before.filter { $0[0] == "version" }.map { $0[1] } == (1...SchemaMigrator.currentVersion).map(String.init))
            #expect(before.contains { $0[0] == "index" && $0[2] == "uniq_unfinished_run" && $0[5] == "0" })
            #expect(!before.contains { $0[0] == "index" && $0[2] == "uniq_active_run" })
            try await Task.sleep(for: .milliseconds(5))  // so a rewritten applied_at would differ
            let migrator = SchemaMigrator(pool: pool, logger: TestDatabase.logger)
            #expect(try await migrator.migrate() == SchemaMigrator.currentVersion, "the second migration finds the current version")
            #expect(try await migrator.version() == SchemaMigrator.currentVersion)
            #expect(try await Self.dump(pool) == before)
            // The statements themselves are idempotent too (docker-compose applies the file).
            try await pool.withConnection { c in
                for s in SchemaMigrator.statements { try c.executeText(s) }
            }
            #expect(try await Self.dump(pool) == before)
        }
    }

    @Test func aFreshDatabaseMigratesFromZero() async throws {
        try await TestDatabase.with { _, pool async throws in
            try await pool.withConnection { c in
                for t in Self.tables
                {
                    try c.executeText("DROP TABLE \(t)")
                }
            }
            let migrator = SchemaMigrator(pool: pool, logger: TestDatabase.logger)
            #expect(try await migrator.version() == 0)
            #expect(try await migrator.migrate() == 0)
            #expect(try await migrator.version() == SchemaMigrator.currentVersion)
            #expect(try await TestDatabase.scalar(pool, "SELECT COUNT(*) FROM workflow_schema_version") == SchemaMigrator.currentVersion)
        }
    }

    static let tables = [
        "workflow_records", "workflow_outbox", "workflow_timeouts", "workflow_events", "workflow_cursors",
        "workflow_leases", "workflow_schema_version", "workflow_records_archive", "workflow_tasks",
    ]

    /// A database made by version 1 (its schema.sql, with rows in it) upgrades to the current
    /// version and ends up exactly like a fresh one; its rows are untouched. `serve` refuses the
    /// old schema when it may not migrate.
    @Test func versionOneUpgradesToTheCurrentVersion() async throws {
        try await TestDatabase.with { store, fresh async throws in
            let expected = try await Self.dump(fresh).filter { $0[0] != "version" }
            try await TestDatabase.with { _, pool async throws in
                try await pool.withConnection { c in
                    for t in Self.tables
                    {
                        try c.executeText("DROP TABLE \(t)")
                    }
                    for s in SchemaMigrator.split(SchemaV1.sql) { try c.executeText(s) }
                }
                let old = MariaDBWorkflowStore(pool: pool, logger: TestDatabase.logger)
                let run = Fixtures.run(foreignID: "order-v1", status: 5, state: .completed, at: Fixtures.t0)
                _ = try await old.create(NewRun(run: run))
                _ = try await old.relay(limit: 10)
                let migrator = SchemaMigrator(pool: pool, logger: TestDatabase.logger)
                #expect(try await migrator.version() == 1)
                await #expect(throws: MariaDBError.self) { try await migrator.verify() }
                #expect(try await migrator.migrate() == 1, "the migration starts from version 1")
                #expect(try await migrator.version() == SchemaMigrator.currentVersion)
                try await migrator.verify()
                #expect(try await Self.dump(pool).filter { $0[0] != "version" } == expected)
                #expect(
                    try await TestDatabase.text(pool, "SELECT version FROM workflow_schema_version ORDER BY version")
                        == (1...SchemaMigrator.currentVersion).map { [String($0)] })
                #expect(try await old.lookup(runID: run.runID)?.foreignID == "order-v1")
                #expect(try await old.head() == 1)
                // The new parts work on the upgraded database.
                #expect(try await old.prunableRuns(updatedBefore: Fixtures.t0.adding(milliseconds: 1)) == 1)
            }
            _ = store
        }
    }

    /// A database made by version 2 (schema.sql of that release) with a run waiting in a status
    /// that becomes external upgrades to the current version exactly like a fresh database, and the run gets
    /// its task: the engine opens the tasks missing for runs already waiting there, once.
    @Test func versionTwoUpgradesToThreeAndWaitingRunsGetTheirTasks() async throws {
        try await TestDatabase.with { _, fresh async throws in
            let expected = try await Self.dump(fresh).filter { $0[0] != "version" }
            try await TestDatabase.with { _, pool async throws in
                try await pool.withConnection { c in
                    for t in Self.tables { try c.executeText("DROP TABLE IF EXISTS \(t)") }
                    for s in SchemaMigrator.split(SchemaV2.sql) { try c.executeText(s) }
                }
                let store = MariaDBWorkflowStore(pool: pool, logger: TestDatabase.logger)
                let waiting = Fixtures.run(foreignID: "order-v2", status: 2, state: .running, at: Fixtures.t0)
                // Written as version 2 wrote it: the record and its outbox row, no task.
                try await pool.transaction { c in
                    try c.execute(
                        "INSERT INTO workflow_records (\(MariaDBWorkflowStore.runColumns)) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        MariaDBWorkflowStore.runRow(waiting))
                }
                let migrator = SchemaMigrator(pool: pool, logger: TestDatabase.logger)
                #expect(try await migrator.version() == 2)
                await #expect(throws: MariaDBError.self) { try await migrator.verify() }
                #expect(try await migrator.migrate() == 2, "the migration starts from version 2")
                #expect(try await migrator.version() == SchemaMigrator.currentVersion)
                try await migrator.verify()
                #expect(try await Self.dump(pool).filter { $0[0] != "version" } == expected)
                #expect(
                    try await TestDatabase.text(pool, "SELECT version FROM workflow_schema_version ORDER BY version")
                        == (1...SchemaMigrator.currentVersion).map { [String($0)] })
                #expect(try await store.lookup(runID: waiting.runID) == waiting)
                // Status 2 is now external: the missing task is opened once, then claimable.
                let now = Fixtures.t0.adding(milliseconds: 1000)
                #expect(try await store.openMissingTasks(workflow: waiting.workflow, status: 2, now: now) == 1)
                #expect(try await store.openMissingTasks(workflow: waiting.workflow, status: 2, now: now) == 0)
                let claimed = try await store.claimTasks(
                    workflow: waiting.workflow, status: 2, runIDs: [waiting.runID], holder: "h#1", now: now,
                    deadline: now.adding(milliseconds: 30_000))
                #expect(claimed.map(\.claim) == [TaskClaim(runID: waiting.runID, version: waiting.version, claim: 1)])
                #expect(claimed.first?.run == waiting)
            }
        }
    }

    /// A database made by version 3, with finished and unfinished runs, upgrades to version 4:
    /// the key that kept one unfinished run per foreign id is replaced by one that finished runs
    /// do not share, and it still refuses a second unfinished run while allowing any number of
    /// finished ones.
    @Test func versionThreeUpgradesToFourAndStillRefusesASecondUnfinishedRun() async throws {
        try await TestDatabase.with { _, fresh async throws in
            let expected = try await Self.dump(fresh).filter { $0[0] != "version" }
            try await TestDatabase.with { _, pool async throws in
                try await pool.withConnection { c in
                    for t in Self.tables { try c.executeText("DROP TABLE IF EXISTS \(t)") }
                    for s in SchemaMigrator.split(SchemaV3.sql) { try c.executeText(s) }
                }
                let store = MariaDBWorkflowStore(pool: pool, logger: TestDatabase.logger)
                let done = Fixtures.run(foreignID: "order-v3", status: 5, state: .completed, at: Fixtures.t0)
                let open = Fixtures.run(foreignID: "order-v3", status: 2, state: .running, at: Fixtures.t0.adding(milliseconds: 1))
                try await pool.transaction { c in
                    for r in [done, open] {
                        try c.execute(
                            "INSERT INTO workflow_records (\(MariaDBWorkflowStore.runColumns)) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                            MariaDBWorkflowStore.runRow(r))
                    }
                }
                let migrator = SchemaMigrator(pool: pool, logger: TestDatabase.logger)
                #expect(try await migrator.migrate() == 3, "the migration starts from version 3")
                #expect(try await migrator.version() == 4)
                #expect(try await Self.dump(pool).filter { $0[0] != "version" } == expected)
                #expect(try await store.lookup(runID: done.runID) == done)
                #expect(try await store.lookup(runID: open.runID) == open)
                // The unfinished run is still the one a submit for its foreign id finds.
                let again = Fixtures.run(foreignID: "order-v3", status: 1, state: .initiated, at: Fixtures.t0.adding(milliseconds: 2))
                let refused = try await store.create(NewRun(run: again))
                #expect(refused == .existing(open))
                // Finished runs share no key: a second finished run of the foreign id is stored.
                let doneToo = Fixtures.run(foreignID: "order-v3", status: 6, state: .completed, at: Fixtures.t0.adding(milliseconds: 3))
                try await pool.transaction { c in
                    try c.execute(
                        "INSERT INTO workflow_records (\(MariaDBWorkflowStore.runColumns)) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        MariaDBWorkflowStore.runRow(doneToo))
                }
                #expect(try await TestDatabase.scalar(pool, "SELECT COUNT(*) FROM workflow_records WHERE foreign_id = 'order-v3'") == 3)
                #expect(
                    try await TestDatabase.scalar(
                        pool, "SELECT COUNT(DISTINCT finished_run_id) FROM workflow_records WHERE foreign_id = 'order-v3'")
                        == 3, "each finished run has a key of its own")
            }
        }
    }

    @Test func aNewerSchemaVersionIsRefused() async throws {
        try await TestDatabase.with { _, pool async throws in
            try await pool.transaction { c in
                try c.execute("INSERT INTO workflow_schema_version (version, applied_at) VALUES (?, ?)", [.int(Int64(SchemaMigrator.currentVersion + 1)), .timestamp(Fixtures.t0)])
            }
            let before = try await Self.dump(pool)
            do {
                try await SchemaMigrator(pool: pool, logger: TestDatabase.logger).migrate()
                Issue.record("migrated a database with a newer schema version")
            } catch let e as MariaDBError {
                #expect(e.kind == .configuration)
                #expect(e.message.contains("schema version \(SchemaMigrator.currentVersion + 1)"), "\(e.message)")
                #expect(e.message.contains("newer"), "\(e.message)")
            }
            #expect(try await Self.dump(pool) == before)
            // The named lock (one per database, as SchemaMigrator takes it) was released.
            #expect(try await TestDatabase.scalar(pool, "SELECT IS_FREE_LOCK(CONCAT('workflowd_schema.', DATABASE()))") == 1)
        }
    }

    // MARK: - The seed README's SQL

    @Test func theSeedReadmesSQLRunsUnchanged() async throws {
        try await TestDatabase.with { store, pool async throws in
            let a = Fixtures.run(foreignID: "order-1001", status: 3, state: .running, at: Fixtures.t0)
            let b = Fixtures.run(foreignID: "order-1002", status: 6, state: .completed, at: Fixtures.t0.adding(milliseconds: 1000))
            let c = Fixtures.run(foreignID: "order-1003", status: 7, state: .completed, at: Fixtures.t0.adding(milliseconds: 2000))
            let d = Fixtures.run(workflow: "refunds", foreignID: "order-1001", status: 1, at: Fixtures.t0.adding(milliseconds: 3000))
            for r in [a, b, c, d] { _ = try await store.create(NewRun(run: r)) }
            let a2 = Fixtures.next(a, status: 4, at: Fixtures.t0.adding(milliseconds: 5000))
            #expect(try await store.update([a2]) == [.applied])

            // "Inspect the Database"
            let records = try await TestDatabase.text(
                pool,
                """
                SELECT workflow_name, foreign_id, run_id, run_state, status, created_at 
                FROM workflow_records 
                ORDER BY created_at DESC;
                """)
            #expect(
                records == [
                    ["refunds", "order-1001", d.runID, "1", "1", "2025-11-25 06:00:03.123"],
                    ["order-processor", "order-1003", c.runID, "5", "7", "2025-11-25 06:00:02.123"],
                    ["order-processor", "order-1002", b.runID, "5", "6", "2025-11-25 06:00:01.123"],
                    ["order-processor", "order-1001", a.runID, "2", "4", "2025-11-25 06:00:00.123"],
                ])
            let outbox = try await TestDatabase.text(
                pool,
                """
                SELECT id, workflow_name, created_at 
                FROM workflow_outbox 
                ORDER BY created_at DESC;
                """)
            #expect(outbox.map { $0[1] } == ["order-processor", "refunds", "order-processor", "order-processor", "order-processor"])
            #expect(outbox.map { $0[2] } == [
                "2025-11-25 06:00:05.123", "2025-11-25 06:00:03.123", "2025-11-25 06:00:02.123", "2025-11-25 06:00:01.123",
                "2025-11-25 06:00:00.123",
            ])
            // "Monitor Outbox Health"
            let health = try await TestDatabase.text(
                pool,
                """
                SELECT 
                    workflow_name,
                    COUNT(*) as pending_events,
                    MIN(created_at) as oldest_event,
                    MAX(created_at) as newest_event
                FROM workflow_outbox
                GROUP BY workflow_name;
                """)
            #expect(
                health.sorted { ($0[0] ?? "") < ($1[0] ?? "") } == [
                    ["order-processor", "4", "2025-11-25 06:00:00.123", "2025-11-25 06:00:05.123"],
                    ["refunds", "1", "2025-11-25 06:00:03.123", "2025-11-25 06:00:03.123"],
                ])
            // The three Go queries, with their `?` parameters.
            let inPayment = try await pool.withConnection { conn in
                try conn.query(
                    """
                        SELECT foreign_id, object, created_at 
                        FROM workflow_records 
                        WHERE workflow_name = ? AND status = ?
                    """, [.text("order-processor"), .int(4)]
                ).map { [try $0.string(0), try $0.string(1), try $0.timestamp(2).sqlDateTime] }
            }
            #expect(inPayment == [["order-1001", #"{"id":"x","total":1359.97}"#, "2025-11-25 06:00:00.123"]])
            let failed = try await pool.withConnection { conn in
                try conn.query(
                    """
                        SELECT foreign_id, object 
                        FROM workflow_records 
                        WHERE workflow_name = ? AND status IN (?, ?, ?)
                    """, [.text("order-processor"), .int(6), .int(7), .int(8)]
                ).map { try $0.string(0) }
            }
            #expect(failed.sorted() == ["order-1002", "order-1003"])
            let timeline = try await pool.withConnection { conn in
                try conn.query(
                    """
                        SELECT run_id, status, updated_at 
                        FROM workflow_records 
                        WHERE workflow_name = ? AND foreign_id = ?
                        ORDER BY updated_at
                    """, [.text("order-processor"), .text("order-1001")]
                ).map { [try $0.string(0), String(try $0.int(1)), try $0.timestamp(2).rfc3339] }
            }
            #expect(timeline == [[a.runID, "4", "2025-11-25T06:00:05.123Z"]])
        }
    }

    // MARK: - Times and text

    @Test func timestampsAreUTCWithMilliseconds() async throws {
        try await TestDatabase.with { store, pool async throws in
            let times: [(Timestamp, String)] = [
                (Fixtures.t0, "2025-11-25 06:00:00.123"),
                (Timestamp(milliseconds: 1), "1970-01-01 00:00:00.001"),
                (Timestamp(milliseconds: 946_684_799_999), "1999-12-31 23:59:59.999"),
                (Timestamp(milliseconds: 1_709_210_096_789), "2024-02-29 12:34:56.789"),
            ]
            for (i, (t, text)) in times.enumerated() {
                var made = Fixtures.run(foreignID: "order-\(i)", at: t)
                made.updatedAt = t.adding(milliseconds: 1)
                let r = made
                _ = try await store.create(NewRun(run: r))
                let back = try #require(try await store.lookup(runID: r.runID))
                #expect(back.createdAt == t)
                #expect(back.updatedAt == t.adding(milliseconds: 1))
                let shown = try await pool.withConnection { c in
                    try c.query(
                        "SELECT CAST(created_at AS CHAR), UNIX_TIMESTAMP(created_at) * 1000 FROM workflow_records WHERE run_id = ?",
                        [.text(r.runID)]
                    ).map { [try $0.string(0), try $0.string(1)] }
                }
                #expect(shown.first?.first == text, "created_at as stored text")
                #expect(shown.first?.last.flatMap { Double($0) }.map { Int64($0) } == t.milliseconds, "stored as UTC")
            }
            // Every session is in UTC, whatever the server's own zone.
            #expect(try await TestDatabase.text(pool, "SELECT @@session.time_zone") == [["+00:00"]])
            // And a session in another zone still sees the same DATETIME text (no conversion).
            let other = try await pool.withConnection { c -> [[String?]] in
                try c.executeText("SET time_zone = '+05:30'")
                defer { try? c.executeText("SET time_zone = '+00:00'") }
                return try c.queryText("SELECT CAST(created_at AS CHAR) FROM workflow_records WHERE foreign_id = 'order-0'")
            }
            #expect(other == [["2025-11-25 06:00:00.123"]])
        }
    }

    @Test func utf8mb4RoundTrip() async throws {
        try await TestDatabase.with { store, pool async throws in
            let foreignID = "order-🚀-ünïcødé-日本-𝄞"
            let object = #"{"customer":"Zoë 🎉","note":"emoji 🍕🍔 and 中文","total":12.5}"#
            let r = Fixtures.run(foreignID: foreignID, object: object)
            var withReason = r
            withReason.reason = "paused: 💳 declined"
            _ = try await store.create(NewRun(run: withReason))
            let back = try #require(try await store.lookup(runID: r.runID))
            #expect(back == withReason)
            #expect(String(decoding: back.object, as: UTF8.self) == object)
            #expect(try await store.latest(workflow: r.workflow, foreignID: foreignID) == withReason)
            #expect(try await store.list(RunQuery(foreignIDs: [foreignID])).runs == [withReason])
            #expect(try await store.outboxBatch(limit: 1).first?.data.foreignID == foreignID)
            #expect(try await store.outboxBatch(limit: 1).first?.data.reason == "paused: 💳 declined")
            let text = try await TestDatabase.text(pool, "SELECT r.foreign_id, CHAR_LENGTH(r.foreign_id), JSON_VALUE(o.data, '$.foreign_id') FROM workflow_records r JOIN workflow_outbox o ON o.run_id = r.run_id")
            #expect(text == [[foreignID, String(foreignID.unicodeScalars.count), foreignID]])
            // The table's own collation and the session's are utf8mb4.
            #expect(try await TestDatabase.text(pool, "SELECT @@character_set_client, @@character_set_results") == [["utf8mb4", "utf8mb4"]])
        }
    }

    // MARK: - EXPLAIN on the hot queries

    /// Fills every table with a few thousand rows shaped like real data, then ANALYZEs them.
    static func populate(_ store: MariaDBWorkflowStore, _ pool: MariaDBPool) async throws -> [String] {
        let n = 3000
        var runIDs: [String] = []
        var rows: [[SQLValue]] = []
        for i in 0..<n {
            let runID = Fixtures.newRunID()
            runIDs.append(runID)
            let finished = i % 10 != 0 || i >= 2500  // one unfinished run per foreign id
            rows.append([
                .text(i % 3 == 0 ? "refunds" : "order-processor"), .text("order-\(i % 2500)"), .text(runID),
                .int(finished ? (i % 7 == 0 ? 4 : 5) : (i % 20 == 0 ? 3 : 2)), .int(i % 8 + 1),
                .bytes(Array(#"{"id":"order","total":1359.97}"#.utf8)),
                .timestamp(Fixtures.t0.adding(milliseconds: Int64(i) * 1000)),
                .timestamp(Fixtures.t0.adding(milliseconds: Int64(i) * 1000 + 500)), .null, .int(Int64(i % 5 + 1)), .null,
            ])
        }
        let records = rows
        let ids = runIDs
        try await pool.transaction { c in
            try MariaDBWorkflowStore.insertRows(
                c, prefix: "INSERT INTO workflow_records (\(MariaDBWorkflowStore.runColumns))",
                tuple: "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows: records)
            try MariaDBWorkflowStore.writeOutbox(c, runIDs: ids)
            var timeouts: [[SQLValue]] = []
            for (i, id) in ids.enumerated() {
                timeouts.append([
                    .text("order-processor"), .text("order-\(i)"), .text(id), .int(i % 8 + 1), .int(i % 4 == 0 ? 2 : 1),
                    .int(i % 3), .timestamp(Fixtures.t0.adding(milliseconds: Int64(i) * 1000 + 60_000)),
                    .timestamp(Fixtures.t0.adding(milliseconds: Int64(i) * 1000)),
                ])
            }
            try MariaDBWorkflowStore.insertRows(
                c, prefix: MariaDBWorkflowStore.timeoutInsert, tuple: MariaDBWorkflowStore.timeoutTuple, rows: timeouts)
            // Most timeouts are settled, as in a live system.
            try c.execute("UPDATE workflow_timeouts SET completed = 1 WHERE id % 10 BETWEEN 1 AND 6")
            try c.execute("UPDATE workflow_timeouts SET cancelled = 1 WHERE id % 10 BETWEEN 7 AND 8")
            for i in 0..<300 {
                try c.execute(
                    "INSERT INTO workflow_cursors (name, seq, updated_at) VALUES (?, ?, ?)",
                    [.text("consumer/order-processor/\(i % 8 + 1)/\(i)of300"), .int(Int64(i)), .timestamp(Fixtures.t0)])
                try c.execute(
                    "INSERT INTO workflow_leases (name, holder, expires_at, generation) VALUES (?, ?, ?, 1)",
                    [.text("consumer/order-processor/\(i % 8 + 1)/\(i)of300"), .text("instance-\(i % 3)"), .timestamp(Fixtures.t0)])
            }
        }
        // Two thirds of the outbox moves to the event log, the rest waits.
        var moved = 0
        while moved < 2000 { moved += try await store.relay(limit: 500).count }
        try await pool.withConnection { c in
            for t in ["workflow_records", "workflow_outbox", "workflow_timeouts", "workflow_events", "workflow_cursors", "workflow_leases"] {
                _ = try c.queryText("ANALYZE TABLE \(t)")
            }
        }
        return runIDs
    }

    struct HotQuery: Sendable {
        var name: String
        var sql: String
        var params: [SQLValue]
    }

    /// The statements the store runs, as the store builds them (copied from the store sources).
    static func hotQueries(runIDs: [String]) -> [HotQuery] {
        let S = MariaDBWorkflowStore.self
        let runID = SQLValue.text(runIDs[1234])
        let mid = Fixtures.t0.adding(milliseconds: 1_500_000)
        func inList(_ values: [SQLValue]) -> (String, [SQLValue]) { S.inList(values) }
        var q: [HotQuery] = []

        // Records
        q.append(HotQuery(name: "lookup by run_id", sql: "SELECT \(S.runColumns) FROM workflow_records WHERE run_id = ?", params: [runID]))
        for size in [3, 100] {
            let (list, values) = inList(runIDs.prefix(size).map { .text($0) })
            q.append(HotQuery(name: "lookup IN-list of \(size)", sql: "SELECT \(S.runColumns) FROM workflow_records WHERE run_id IN \(list)", params: values))
        }
        q.append(HotQuery(
            name: "latest by foreign id",
            sql: """
                SELECT \(S.runColumns) FROM workflow_records WHERE workflow_name = ? AND foreign_id = ?
                ORDER BY created_at DESC, run_id DESC LIMIT 1
                """, params: [.text("order-processor"), .text("order-1234")]))
        q.append(HotQuery(
            name: "create: existing unfinished run",
            sql: "SELECT \(S.runColumns) FROM workflow_records WHERE workflow_name = ? AND active_foreign_id = ?",
            params: [.text("order-processor"), .text("order-1234")]))
        q.append(HotQuery(
            name: "conditional update",
            sql: """
                UPDATE workflow_records SET run_state = ?, status = ?, object = ?, reason = ?, updated_at = ?,
                  meta = ?, version = ? WHERE run_id = ? AND version = ?
                """,
            params: [.int(2), .int(3), .bytes([1]), .null, .timestamp(mid), .null, .int(3), runID, .int(2)]))
        do {
            let (list, values) = inList(runIDs.prefix(20).map { .text($0) })
            q.append(HotQuery(
                name: "write outbox from records",
                sql: """
                    INSERT INTO workflow_outbox
                      (workflow_name, data, created_at, foreign_id, run_id, status, run_state, version, reason)
                    SELECT workflow_name,
                      JSON_OBJECT('workflow', workflow_name, 'foreign_id', foreign_id, 'run_id', run_id,
                        'status', status, 'run_state', run_state, 'version', version,
                        'at', DATE_FORMAT(updated_at, '%Y-%m-%dT%H:%i:%s.%fZ'), 'reason', reason),
                      updated_at, foreign_id, run_id, status, run_state, version, reason
                    FROM workflow_records WHERE run_id IN \(list)
                    """, params: values))
        }

        // Listing, built as `list(_:)` builds it.
        func list(_ name: String, _ query: RunQuery) -> HotQuery {
            var conditions: [String] = []
            var values: [SQLValue] = []
            if let w = query.workflow {
                conditions.append("workflow_name = ?")
                values.append(.text(w))
            }
            if !query.foreignIDs.isEmpty {
                let (l, v) = inList(query.foreignIDs.map { .text($0) })
                conditions.append("foreign_id IN \(l)")
                values += v
            }
            if !query.statuses.isEmpty {
                let (l, v) = inList(query.statuses.map { .int($0) })
                conditions.append("status IN \(l)")
                values += v
            }
            if !query.runStates.isEmpty {
                let (l, v) = inList(query.runStates.map { .int($0.rawValue) })
                conditions.append("run_state IN \(l)")
                values += v
            }
            if let after = query.createdAfter {
                conditions.append("created_at >= ?")
                values.append(.timestamp(after))
            }
            if let before = query.createdBefore {
                conditions.append("created_at < ?")
                values.append(.timestamp(before))
            }
            let asc = query.order == .ascending
            if let cursor = query.after {
                let op = asc ? ">" : "<"
                conditions.append("(created_at \(op) ? OR (created_at = ? AND run_id \(op) ?))")
                values += [.timestamp(cursor.createdAt), .timestamp(cursor.createdAt), .text(cursor.runID)]
            }
            let direction = asc ? "ASC" : "DESC"
            let whereClause = conditions.isEmpty ? "" : " WHERE " + conditions.joined(separator: " AND ")
            values.append(.int(query.limit + 1))
            return HotQuery(
                name: name,
                sql: "SELECT \(S.runColumns) FROM workflow_records\(whereClause) ORDER BY created_at \(direction), run_id \(direction) LIMIT ?",
                params: values)
        }
        let cursor = RunCursor(createdAt: mid, runID: runIDs[1500])
        let wf = "order-processor"
        for order in [SortOrder.ascending, .descending] {
            let o = order.rawValue
            q.append(list("list by workflow (\(o))", RunQuery(workflow: wf, order: order)))
            q.append(list("list by workflow, keyset (\(o))", RunQuery(workflow: wf, order: order, after: cursor)))
            q.append(list("list by workflow + status (\(o))", RunQuery(workflow: wf, statuses: [3], order: order, after: cursor)))
            q.append(list("list by workflow + statuses (\(o))", RunQuery(workflow: wf, statuses: [6, 7, 8], order: order)))
            q.append(list("list by workflow + run state (\(o))", RunQuery(workflow: wf, runStates: [.paused], order: order, after: cursor)))
            q.append(list("list by workflow + run states (\(o))", RunQuery(workflow: wf, runStates: [.running, .paused], order: order)))
            q.append(list("list by workflow + foreign ids (\(o))", RunQuery(workflow: wf, foreignIDs: ["order-17", "order-1800"], order: order)))
            q.append(list(
                "list by workflow + window (\(o))",
                RunQuery(workflow: wf, createdAfter: mid, createdBefore: mid.adding(milliseconds: 60_000), order: order, after: cursor)))
            q.append(list("list, no filter (\(o))", RunQuery(order: order, after: cursor)))
            q.append(list("list by window only (\(o))", RunQuery(createdAfter: mid, createdBefore: mid.adding(milliseconds: 60_000), order: order)))
            q.append(list("list by foreign ids only (\(o))", RunQuery(foreignIDs: ["order-17"], order: order)))
        }

        // Outbox and event log
        let outboxColumns = "SELECT id, workflow_name, foreign_id, run_id, status, run_state, version, created_at, reason"
        q.append(HotQuery(name: "outbox batch", sql: "\(outboxColumns)\nFROM workflow_outbox ORDER BY id LIMIT ?", params: [.int(100)]))
        q.append(HotQuery(name: "outbox batch FOR UPDATE (relay)", sql: "\(outboxColumns)\nFROM workflow_outbox ORDER BY id LIMIT ? FOR UPDATE", params: [.int(100)]))
        q.append(HotQuery(
            name: "relay: copy to the log",
            sql: """
                INSERT INTO workflow_events (seq, workflow_name, foreign_id, run_id, status, run_state, version, at, reason)
                SELECT ? + ROW_NUMBER() OVER (ORDER BY id), workflow_name, foreign_id, run_id, status, run_state,
                  version, created_at, reason
                FROM workflow_outbox WHERE id <= ?
                """, params: [.int(1_000_000), .int(2100)]))
        q.append(HotQuery(name: "relay: delete moved rows", sql: "DELETE FROM workflow_outbox WHERE id <= ?", params: [.int(2100)]))
        do {
            let (list, values) = inList([.int(2001), .int(2002), .int(2003)])
            q.append(HotQuery(name: "delete outbox by ids", sql: "DELETE FROM workflow_outbox WHERE id IN \(list)", params: values))
        }
        q.append(HotQuery(name: "outbox stats", sql: "SELECT COUNT(*), MIN(created_at) FROM workflow_outbox", params: []))
        q.append(HotQuery(name: "log head", sql: "SELECT COALESCE(MAX(seq), 0) FROM workflow_events", params: []))
        let ev = "SELECT \(S.eventColumns) FROM workflow_events WHERE"
        for after in [Int64(0), 1900] {
            q.append(HotQuery(name: "events after \(after), no filter", sql: "\(ev) seq > ? ORDER BY seq LIMIT ?", params: [.int(after), .int(256)]))
            q.append(HotQuery(
                name: "events after \(after), workflow + status",
                sql: "\(ev) seq > ? AND workflow_name = ? AND status IN (?) ORDER BY seq LIMIT ?",
                params: [.int(after), .text(wf), .int(3), .int(256)]))
            // The step consumer's filter: workflow, its status, the runnable states, its partition.
            q.append(HotQuery(
                name: "events after \(after), consumer filter",
                sql: "\(ev) seq > ? AND workflow_name = ? AND status IN (?) AND run_state IN (?, ?) AND MOD(CRC32(run_id), ?) = ? ORDER BY seq LIMIT ?",
                params: [.int(after), .text(wf), .int(1), .int(1), .int(2), .int(4), .int(1), .int(256)]))
            q.append(HotQuery(
                name: "events after \(after), run id", sql: "\(ev) seq > ? AND run_id = ? ORDER BY seq LIMIT ?",
                params: [.int(after), runID, .int(256)]))
        }
        q.append(HotQuery(name: "history by run_id", sql: "SELECT \(S.eventColumns) FROM workflow_events WHERE run_id = ? ORDER BY seq", params: [runID]))

        // Timeouts
        q.append(HotQuery(
            name: "due timeouts",
            sql: """
                SELECT \(S.timeoutColumns) FROM workflow_timeouts
                WHERE completed = 0 AND cancelled = 0 AND expire_at <= ? ORDER BY id LIMIT ?
                """, params: [.timestamp(mid), .int(100)]))
        q.append(HotQuery(name: "timeouts of a run", sql: "SELECT \(S.timeoutColumns) FROM workflow_timeouts WHERE run_id = ? ORDER BY id", params: [runID]))
        do {
            let (list, values) = inList(runIDs.prefix(5).map { .text($0) })
            q.append(HotQuery(
                name: "cancel timeouts by run_id",
                sql: "UPDATE workflow_timeouts SET cancelled = 1 WHERE run_id IN \(list) AND completed = 0 AND cancelled = 0",
                params: values))
        }
        q.append(HotQuery(
            name: "complete a timeout",
            sql: "UPDATE workflow_timeouts SET completed = 1 WHERE id = ? AND completed = 0 AND cancelled = 0", params: [.int(17)]))

        // Retention (MariaDBWorkflowStore+Retention.swift)
        let old = SQLValue.timestamp(Fixtures.t0.adding(milliseconds: 300_000))
        let finished = S.prunableStates
        q.append(HotQuery(name: "retention: earliest seq", sql: "SELECT MIN(seq) FROM workflow_events", params: []))
        q.append(HotQuery(name: "retention: oldest outbox row", sql: "SELECT MIN(created_at) FROM workflow_outbox", params: []))
        q.append(HotQuery(
            name: "retention: count finished runs",
            sql: "SELECT COUNT(*) FROM workflow_records WHERE run_state IN \(finished) AND updated_at < ?", params: [old]))
        q.append(HotQuery(
            name: "retention: lock a batch of finished runs",
            sql: """
                SELECT run_id FROM workflow_records WHERE run_state IN \(finished) AND updated_at < ?
                LIMIT ? FOR UPDATE
                """, params: [old, .int(500)]))
        do {
            let (list, values) = inList(runIDs.prefix(100).map { .text($0) })
            q.append(HotQuery(
                name: "retention: archive a batch",
                sql: """
                    INSERT INTO workflow_records_archive (\(S.runColumns), archived_at)
                    SELECT \(S.runColumns), ? FROM workflow_records WHERE run_id IN \(list)
                    """, params: [old] + values))
            q.append(HotQuery(name: "retention: delete timeouts of a batch", sql: "DELETE FROM workflow_timeouts WHERE run_id IN \(list)", params: values))
            q.append(HotQuery(name: "retention: delete a batch of runs", sql: "DELETE FROM workflow_records WHERE run_id IN \(list)", params: values))
        }
        q.append(HotQuery(
            name: "retention: first event not old enough",
            sql: "SELECT seq FROM workflow_events WHERE seq >= ? AND at >= ? ORDER BY seq LIMIT 1", params: [.int(1), old]))
        q.append(HotQuery(name: "retention: lowest cursor", sql: "SELECT name, seq FROM workflow_cursors ORDER BY seq LIMIT 1", params: []))
        q.append(HotQuery(
            name: "retention: delete old events", sql: "DELETE FROM workflow_events WHERE seq < ? ORDER BY seq LIMIT ?",
            params: [.int(300), .int(500)]))

        // Cursors and leases
        let name = SQLValue.text("consumer/order-processor/2/1of300")
        q.append(HotQuery(name: "cursor by name", sql: "SELECT seq FROM workflow_cursors WHERE name = ?", params: [name]))
        q.append(HotQuery(name: "lease by name", sql: "SELECT name, holder, expires_at, generation FROM workflow_leases WHERE name = ?", params: [name]))
        q.append(HotQuery(
            name: "acquire lease",
            sql: """
                UPDATE workflow_leases SET generation = IF(holder = ?, generation, generation + 1),
                  holder = ?, expires_at = ? WHERE name = ? AND (holder = ? OR expires_at <= ?)
                """,
            params: [.text("instance-1"), .text("instance-1"), .timestamp(mid), name, .text("instance-1"), .timestamp(mid)]))
        q.append(HotQuery(
            name: "release lease",
            sql: "UPDATE workflow_leases SET expires_at = '1970-01-01 00:00:00.000' WHERE name = ? AND holder = ?",
            params: [name, .text("instance-1")]))
        return q
    }

    @Test func noHotQueryScansAWholeTable() async throws {
        try await TestDatabase.with { store, pool async throws in
            let runIDs = try await Self.populate(store, pool)
            #expect(try await TestDatabase.scalar(pool, "SELECT COUNT(*) FROM workflow_records") == 3000)
            #expect(try await TestDatabase.scalar(pool, "SELECT COUNT(*) FROM workflow_events") == 2000)
            #expect(try await TestDatabase.scalar(pool, "SELECT COUNT(*) FROM workflow_outbox") == 1000)
            let queries = Self.hotQueries(runIDs: runIDs)
            // EXPLAIN runs as a prepared statement with the same `?` parameters the store binds.
            // (EXPLAIN of an UPDATE or DELETE does not change anything.)
            let plans = try await pool.withConnection { c in
                try queries.map { q in
                    (q, try c.query("EXPLAIN " + q.sql, q.params).map { row in row.values.indices.map { try? row.optionalString($0) ?? "NULL" } })
                }
            }
            var scans: [String] = []
            for (q, rows) in plans {
                #expect(!rows.isEmpty, "\(q.name): EXPLAIN returned nothing")
                for row in rows {
                    // id, select_type, table, type, possible_keys, key, key_len, ref, rows, Extra
                    let type = row[3] ?? "NULL"
                    let line = "\(q.name): table=\(row[2] ?? "-") type=\(type) key=\(row[5] ?? "-") rows=\(row[8] ?? "-") extra=\(row[9] ?? "")"
                    print("EXPLAIN \(line)")
                    if type == "ALL" { scans.append(line) }
                }
            }
            #expect(scans.isEmpty, "full table scans:\n\(scans.joined(separator: "\n"))")
            // The check can fail: a query on a column without an index shows type ALL.
            let unindexed = try await pool.withConnection { c in
                try c.query("EXPLAIN SELECT run_id FROM workflow_records WHERE reason = ?", [.text("x")]).map { try $0.string(3) }
            }
            #expect(unindexed == ["ALL"])
        }
    }
}
