import ArgumentParser
import Foundation
import Logging
import Synchronization
import WorkflowEngine
import WorkflowMariaDB

/// `workflowd prune`: one retention pass, by hand or from cron. It needs the same rights as
/// `serve` (SELECT, INSERT, UPDATE, DELETE) and may run beside live instances: every batch is a
/// short transaction of its own, and it deletes only what the serve-side job would.
struct Prune: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Delete finished runs and old events (retention), in small batches, then exit.",
        discussion: """
            Runs are deleted when finished (Completed, Cancelled, DataDeleted) and unchanged for the given \
            time, with their timeouts; unfinished runs never. Events are deleted from the start of the log up \
            to the first one that is not old enough, never the newest one and never one a consumer has not \
            finished. Durations: 30d, 12h, 90m, 45s.
            """)

    @OptionGroup var database: DatabaseOptions

    @Option(name: .customLong("runs-older-than"), help: "Delete finished runs unchanged for this long, e.g. 30d.")
    var runsOlderThan: String?

    @Option(name: .customLong("events-older-than"), help: "Delete events older than this, e.g. 7d.")
    var eventsOlderThan: String?

    @Flag(name: .customLong("archive"), help: "Copy runs into workflow_records_archive in the transaction that deletes them.")
    var archive = false

    @Flag(name: .customLong("dry-run"), help: "Only print how many runs and events would be deleted.")
    var dryRun = false

    @Option(name: .customLong("batch-size"), help: "Rows per transaction (default 500).")
    var batchSize: Int = 500

    func policy() throws -> RetentionPolicy {
        let runs = try Settings.milliseconds(runsOlderThan, [:], nil, "--runs-older-than", minimum: 1000)
        let events = try Settings.milliseconds(eventsOlderThan, [:], nil, "--events-older-than", minimum: 1000)
        guard runs != nil || events != nil else {
            throw SettingsError(message: "give --runs-older-than, --events-older-than or both (e.g. --runs-older-than 30d)")
        }
        if archive && runs == nil { throw SettingsError(message: "--archive needs --runs-older-than") }
        guard (1...10_000).contains(batchSize) else { throw SettingsError(message: "--batch-size: \(batchSize) is not in 1...10000") }
        return RetentionPolicy(
            runsOlderThanMilliseconds: runs, eventsOlderThanMilliseconds: events, archive: archive, batchSize: batchSize)
    }

    func run() async throws {
        let policy = try policy()
        let settings = try Settings.resolve(database, env: ProcessInfo.processInfo.environment)
        LoggingSystem.bootstrap { StreamLogHandler.standardError(label: $0) }
        let logger = settings.makeLogger(label: "workflowd")
        let db = try await DatabaseHandle(settings: settings, logger: logger)
        do {
            // Archive table and indexes come with schema version 2: refuse an older schema.
            try await SchemaMigrator(pool: db.pool, logger: logger).verify()
            try await prune(policy, store: MariaDBWorkflowStore(pool: db.pool, logger: logger))
        } catch {
            await db.close()
            throw error
        }
        await db.close()
    }

    private func prune(_ policy: RetentionPolicy, store: MariaDBWorkflowStore) async throws {
        let pruner = Pruner(store: store, policy: policy)
        let now = SystemClock().now()
        let runCutoff = policy.runsOlderThanMilliseconds.map { now.adding(milliseconds: -$0) }
        let eventCutoff = policy.eventsOlderThanMilliseconds.map { now.adding(milliseconds: -$0) }
        if dryRun {
            let plan = try await pruner.plan(now: now)
            print("dry run: nothing is deleted")
            if let runCutoff {
                print("runs: \(plan.runs) finished run(s) last changed before \(runCutoff) would be deleted\(policy.archive ? " (archived first)" : "")")
            }
            if let eventCutoff {
                print("events: \(plan.events) event(s) older than \(eventCutoff) would be deleted; \(Self.kept(plan))")
            }
            return
        }
        // A progress line per second at most, and the last one of each phase.
        let last = Mutex<(phase: Pruner.Phase?, at: ContinuousClock.Instant)>((nil, .now))
        let report = try await pruner.prune(now: now, progress: { phase, done, total in
            let due = last.withLock { l -> Bool in
                let now = ContinuousClock.now
                guard l.phase != phase || now - l.at >= .seconds(1) || done == total else { return false }
                l = (phase, now)
                return true
            }
            if due { print("\(phase.rawValue): \(done)/\(total) deleted") }
        })
        if runCutoff != nil {
            print("runs: deleted \(report.runs) finished run(s)\(policy.archive ? ", archived in workflow_records_archive" : "")")
        }
        if eventCutoff != nil {
            print("events: deleted \(report.events) event(s); \(Self.kept(report))")
        }
    }

    static func kept(_ r: Pruner.Report) -> String {
        guard let earliest = r.earliestKept else { return "the event log is empty" }
        var text = "the earliest seq kept is \(earliest)"
        switch r.eventsKeptBecause {
        case .cursor(let name)?: text += " (consumer '\(name)' has not finished the events from it on)"
        case .newest?: text += " (the newest event is always kept)"
        case .age?, nil: break
        }
        return text
    }
}
