import Foundation
import Testing
import WorkflowTestSupport
import WorkflowWire

/// Retention with real processes on a real MariaDB: `workflowd prune` (dry run, then real
/// deletion with archive and progress lines), subscribing from a removed `seq` over the real
/// socket, numbering after a pruned log, and the leased job of `serve`. Time is moved by
/// moving the rows' timestamps back, since a real process reads the real clock.
@Suite("Retention", .serialized, .timeLimit(.minutes(5)))
struct RetentionTests {
    static func workflowd(_ arguments: [String], env: [String: String] = [:]) async throws -> (
        status: Int32?, stdout: String, stderr: String
    ) {
        var full = ["env", "-u", "WORKFLOWD_DSN", "-u", "WORKFLOWD_RETAIN_RUNS", "-u", "WORKFLOWD_RETAIN_EVENTS"]
        for (k, v) in env { full.append("\(k)=\(v)") }
        full += [ServerProcess.binary] + arguments
        let r = try await runProgram("/usr/bin/env", Array(full.dropFirst()), stdin: nil, deadline: 120)
        return (r.status, r.stdout, r.stderr)
    }

    /// Finished runs `days` older, their events too.
    static func age(_ db: IntegrationDatabase, runsByDays: Int, eventsByDays: Int) async throws {
        _ = try await db.query(
            "UPDATE workflow_records SET updated_at = updated_at - INTERVAL \(runsByDays) DAY WHERE run_state IN (4, 5, 6)")
        _ = try await db.query("UPDATE workflow_events SET at = at - INTERVAL \(eventsByDays) DAY")
    }

    /// An unfinished run and a run waiting for its data to be erased, both a year old: never pruned.
    static func insertKeptRuns(_ db: IntegrationDatabase) async throws {
        _ = try await db.query(
            """
            INSERT INTO workflow_records (workflow_name, foreign_id, run_id, run_state, status, object, created_at, updated_at, version)
            VALUES ('order-processor', 'old-running', 'run-old-running', 2, 3, '{}', '2025-01-01', '2025-01-01', 3),
                   ('order-processor', 'old-erasing', 'run-old-erasing', 7, 5, '{}', '2025-01-01', '2025-01-01', 6)
            """)
        _ = try await db.query(
            """
            INSERT INTO workflow_timeouts (workflow_name, foreign_id, run_id, status, kind, expire_at, created_at)
            VALUES ('order-processor', 'old-running', 'run-old-running', 3, 2, '2025-01-02', '2025-01-01')
            """)
    }

    static func expectGone(_ reply: JSON, earliest: Int, sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(reply["ok"] == .bool(false), "\(reply)", sourceLocation: sourceLocation)
        let error = reply["error"] ?? .null
        #expect(error["code"] == .string("GONE"), "\(reply)", sourceLocation: sourceLocation)
        #expect(error["retryable"] == .bool(false), "\(reply)", sourceLocation: sourceLocation)
        #expect(error["earliest"] == .number("\(earliest)"), "\(reply)", sourceLocation: sourceLocation)
        #expect(error.keySet == ["code", "message", "retryable", "earliest"], "\(reply)", sourceLocation: sourceLocation)
    }

    /// A fresh database for `body`, dropped afterwards, also when `body` throws.
    static func withDatabase(_ body: (IntegrationDatabase) async throws -> Void) async throws {
        let db = try await IntegrationDatabase.create()
        do {
            try await body(db)
        } catch {
            await db.drop()
            throw error
        }
        await db.drop()
    }

    @Test func pruneDryRunThenDeletesInBatchesAndSubscribersAreToldWhatIsGone() async throws {
        signal(SIGPIPE, SIG_IGN)
        try await Self.withDatabase { db in
            // Three orders run to completion; the server stops gracefully (cursors written).
            let first = try await ServerProcess.start(database: db)
            do {
                let c = try first.client()
                for i in 1...3 { try submitOrder(c, "ret-\(i)") }
                for i in 1...3 { try awaitFinished(c, "ret-\(i)") }
                try await db.waitFor("SELECT COUNT(*) FROM workflow_outbox", equals: 0)
                #expect(try await first.terminate() == 0)
            } catch {
                first.kill()
                throw error
            }
            #expect(try await db.int("SELECT COUNT(*) FROM workflow_events") == 15)
            #expect(try await db.int("SELECT MIN(seq) FROM workflow_cursors") == 15, "a consumer stopped before the head")
            try await Self.insertKeptRuns(db)
            try await Self.age(db, runsByDays: 40, eventsByDays: 10)

            // Dry run: counts, nothing deleted.
            let args = ["prune", "--dsn", db.dsn, "--runs-older-than", "30d", "--events-older-than", "7d", "--archive"]
            let dry = try await Self.workflowd(args + ["--dry-run"])
            #expect(dry.status == 0, "\(dry)")
            #expect(dry.stdout.contains("runs: 3 finished run(s) last changed before"), "\(dry.stdout)")
            #expect(dry.stdout.contains("would be deleted (archived first)"), "\(dry.stdout)")
            #expect(dry.stdout.contains("events: 14 event(s) older than"), "\(dry.stdout)")
            #expect(dry.stdout.contains("the earliest seq kept is 15 (the newest event is always kept)"), "\(dry.stdout)")
            #expect(try await db.int("SELECT COUNT(*) FROM workflow_records") == 5)
            #expect(try await db.int("SELECT COUNT(*) FROM workflow_events") == 15)
            #expect(try await db.int("SELECT COUNT(*) FROM workflow_records_archive") == 0)

            // For real, two rows per transaction: a progress line per phase at least.
            let real = try await Self.workflowd(args + ["--batch-size", "2"])
            #expect(real.status == 0, "\(real)")
            #expect(real.stdout.contains("runs: 3/3 deleted"), "\(real.stdout)")
            #expect(real.stdout.contains("events: 14/14 deleted"), "\(real.stdout)")
            #expect(real.stdout.contains("runs: deleted 3 finished run(s), archived in workflow_records_archive"), "\(real.stdout)")
            #expect(real.stdout.contains("events: deleted 14 event(s); the earliest seq kept is 15"), "\(real.stdout)")
            #expect(
                try await db.query("SELECT foreign_id FROM workflow_records ORDER BY foreign_id") == [["old-erasing"], ["old-running"]])
            #expect(
                try await db.query("SELECT foreign_id, run_state, status FROM workflow_records_archive ORDER BY foreign_id")
                    == [["ret-1", "5", "5"], ["ret-2", "5", "5"], ["ret-3", "5", "5"]])
            #expect(try await db.query("SELECT run_id FROM workflow_timeouts") == [["run-old-running"]])
            #expect(try await db.query("SELECT MIN(seq), MAX(seq), COUNT(*) FROM workflow_events") == [["15", "15", "1"]])

            // A second pass finds nothing more.
            let again = try await Self.workflowd(args)
            #expect(again.status == 0, "\(again)")
            #expect(again.stdout.contains("runs: deleted 0 finished run(s)"), "\(again.stdout)")

            // The server again: numbering goes on after the kept head; subscribers asking for what
            // is gone are told the earliest seq kept.
            let server = try await ServerProcess.start(database: db)
            do {
                let c = try server.client()
                try submitOrder(c, "ret-4")
                try awaitFinished(c, "ret-4")
                let history = try c.call(#"{"op":"history","foreign_id":"ret-4"}"#)
                guard case .array(let events)? = history["events"] else { throw TestError("history: \(history)") }
                #expect(events.first?["seq"] == .number("16"), "\(history)")

                let gone = try c.call(#"{"op":"subscribe","from":3,"id":"g"}"#)
                Self.expectGone(gone, earliest: 15)
                #expect(gone["id"] == .string("g"))
                #expect(gone["error"]?["earliest"] == .number("15"), "\(gone)")
                #expect(gone["error"]?["message"]?.stringValue?.contains("earliest seq still kept is 15") == true, "\(gone)")
                // The last removed seq is still a valid place to resume from.
                let edge = try c.call(#"{"op":"subscribe","from":14}"#)
                #expect(edge["ok"] == .bool(true), "\(edge)")
                #expect(try c.readJSON()["event"]?["seq"] == .number("15"))
                #expect(try c.readJSON()["event"]?["seq"] == .number("16"))

                let c2 = try server.client()
                let earliest = try c2.call(#"{"op":"subscribe","from":"earliest"}"#)
                #expect(earliest["ok"] == .bool(true), "\(earliest)")
                #expect(try c2.readJSON()["event"]?["seq"] == .number("15"))

                #expect(try c2.readJSON()["event"]?["seq"] == .number("16"))
                let pruned = try server.client().call(#"{"op":"get","foreign_id":"ret-1"}"#)
                _ = expectError(pruned, code: "NOT_FOUND", retryable: false)
                #expect(try await server.terminate() == 0)
            } catch {
                server.kill()
                throw error
            }
        }
    }

    @Test func serveRunsTheLeasedRetentionJob() async throws {
        try await withServer(arguments: ["--retain-runs", "30d", "--retain-events", "7d", "--retention-interval", "200ms"]) {
            server, db in
            let c = try server.client()
            for i in 1...4 { try submitOrder(c, "job-\(i)") }
            for i in 1...4 { try awaitFinished(c, "job-\(i)") }
            try await db.waitFor("SELECT COUNT(*) FROM workflow_outbox", equals: 0)
            try await db.waitFor("SELECT COUNT(*) FROM workflow_leases WHERE name = 'retention' AND expires_at > UTC_TIMESTAMP(3)", equals: 1)
            #expect(try await db.int("SELECT COUNT(*) FROM workflow_records") == 4, "young runs were deleted")
            try await Self.insertKeptRuns(db)
            try await Self.age(db, runsByDays: 31, eventsByDays: 8)
            try await db.waitFor("SELECT COUNT(*) FROM workflow_records WHERE run_state = 5", equals: 0)
            #expect(try await db.int("SELECT COUNT(*) FROM workflow_records") == 2, "an unfinished run was deleted")
            #expect(try await db.int("SELECT COUNT(*) FROM workflow_records_archive") == 0, "archived without --retention-archive")
            // Events go up to the lowest consumer cursor, never the newest.
            try await db.waitFor("SELECT COUNT(*) FROM workflow_events", equals: 1)
            #expect(try await db.int("SELECT MIN(seq) FROM workflow_events") == 20)
            Self.expectGone(try c.call(#"{"op":"subscribe","from":0}"#), earliest: 20)
        }
    }

    @Test func badRetentionSettingsStopTheStartWithTheirName() async throws {
        try await Self.withDatabase { db in
            let flag = try await Self.workflowd(["serve", "--dsn", db.dsn, "--retain-runs", "soon"])
            #expect(flag.status != 0)
            #expect(flag.stderr.contains("--retain-runs: 'soon' is not a duration"), "\(flag.stderr)")
            let env = try await Self.workflowd(["serve", "--dsn", db.dsn], env: ["WORKFLOWD_RETAIN_EVENTS": "0d"])
            #expect(env.status != 0)
            #expect(env.stderr.contains("WORKFLOWD_RETAIN_EVENTS: '0d'"), "\(env.stderr)")
            let archive = try await Self.workflowd(["serve", "--dsn", db.dsn, "--retention-archive"])
            #expect(archive.status != 0)
            #expect(archive.stderr.contains("archiving needs --retain-runs"), "\(archive.stderr)")
            let prune = try await Self.workflowd(["prune", "--dsn", db.dsn])
            #expect(prune.status != 0)
            #expect(prune.stderr.contains("give --runs-older-than, --events-older-than or both"), "\(prune.stderr)")
        }
    }
}
