import Dispatch
import Foundation
import Testing
import WorkflowEngine
@testable import WorkflowMariaDB

/// What the database must decide when writers race: one winner per version, deadlocks retried,
/// one unfinished run per foreign id, a gap-free event log.
@Suite("Store concurrency", .serialized, .timeLimit(.minutes(2)))
struct ConcurrencyTests {
    @Test func twoConcurrentConditionalUpdatesOfOneRunExactlyOneApplies() async throws {
        try await TestDatabase.with { store, pool async throws in
            for i in 0..<25 {
                let r = Fixtures.run(foreignID: "order-\(i)")
                _ = try await store.create(NewRun(run: r))
                var a = Fixtures.next(r, status: 2)
                a.run.object = Array("A".utf8)
                var b = Fixtures.next(r, status: 6, state: .completed)
                b.run.object = Array("B".utf8)
                let (ra, rb) = (a, b)
                async let oa = store.update([ra])
                async let ob = store.update([rb])
                let outcomes = try await [oa, ob]
                #expect(outcomes.sorted { "\($0)" < "\($1)" } == [[.applied], [.conflict]], "run \(i): \(outcomes)")
                let stored = try #require(try await store.lookup(runID: r.runID))
                let winner = outcomes[0] == [.applied] ? a.run : b.run
                #expect(stored == winner, "the stored run is the winner's")
                // Exactly one outbox row for version 2, and it is the winner's.
                let rows = try await pool.withConnection { c in
                    try c.query("SELECT version, status FROM workflow_outbox WHERE run_id = ? ORDER BY id", [.text(r.runID)])
                        .map { [try $0.int(0), try $0.int(1)] }
                }
                #expect(rows == [[1, 1], [2, Int64(winner.status)]])
            }
        }
    }

    @Test func aForcedDeadlockIsRetriedAndBothTransactionsApplyOnce() async throws {
        try await TestDatabase.with { store, pool async throws in
            try await store.setCursor("row-a", to: 0)
            try await store.setCursor("row-b", to: 0)
            // Each transaction locks its first row, then waits until the other has locked its
            // first row, then asks for the other's: they cross for real and InnoDB picks a victim.
            let aLocked = DispatchSemaphore(value: 0)
            let bLocked = DispatchSemaphore(value: 0)
            let attempts = Locked((one: 0, two: 0, waitTimedOut: false))
            @Sendable func add(_ c: MariaDBConnection, _ name: String, _ n: Int64) throws {
                try c.execute("UPDATE workflow_cursors SET seq = seq + ? WHERE name = ?", [.int(n), .text(name)])
            }
            async let one: Void = pool.transaction { c in
                let attempt = attempts.withLock { $0.one += 1; return $0.one }
                try add(c, "row-a", 1)
                if attempt == 1 {
                    aLocked.signal()
                    if bLocked.wait(timeout: .now() + 10) == .timedOut { attempts.withLock { $0.waitTimedOut = true } }
                }
                try add(c, "row-b", 1)
            }
            async let two: Void = pool.transaction { c in
                let attempt = attempts.withLock { $0.two += 1; return $0.two }
                try add(c, "row-b", 100)
                if attempt == 1 {
                    bLocked.signal()
                    if aLocked.wait(timeout: .now() + 10) == .timedOut { attempts.withLock { $0.waitTimedOut = true } }
                }
                try add(c, "row-a", 100)
            }
            _ = try await (one, two)
            let a = attempts.value
            #expect(!a.waitTimedOut, "the two transactions never both held their first lock")
            #expect(a.one + a.two == 3, "exactly one of the two should be retried once: \(a)")
            // Each applied exactly once: 1 + 100 on both rows.
            #expect(try await store.cursor("row-a") == 101)
            #expect(try await store.cursor("row-b") == 101)
        }
    }

    @Test func aSecondUnfinishedRunForOneForeignIDIsRefusedByTheDatabase() async throws {
        try await TestDatabase.with { (store: MariaDBWorkflowStore, pool: MariaDBPool) async throws -> Void in
            let first = Fixtures.run(foreignID: "order-1001")
            #expect(try await store.create(NewRun(run: first)) == .created(first))
            // A raw INSERT, bypassing the store: the unique key refuses it.
            let second = Fixtures.run(foreignID: "order-1001", at: Fixtures.t0.adding(milliseconds: 10))
            let refused = await #expect(throws: MariaDBError.self) {
                try await pool.transaction { c in
                    try c.execute(
                        """
                        INSERT INTO workflow_records (workflow_name, foreign_id, run_id, run_state, status, object, created_at, updated_at)
                        VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                        """,
                        [
                            .text(second.workflow), .text(second.foreignID), .text(second.runID), .int(2), .int(1),
                            .bytes(second.object), .timestamp(second.createdAt), .timestamp(second.updatedAt),
                        ])
                }
            }
            #expect(refused?.kind == .duplicateKey)
            #expect(refused?.errno == 1062)
            #expect(refused?.sqlState == "23000")
            #expect(refused?.message.contains("uniq_unfinished_run") == true, "\(String(describing: refused))")
            // Paused counts as unfinished too.
            await #expect(throws: MariaDBError.self) {
                try await pool.transaction { c in
                    try c.execute(
                        """
                        INSERT INTO workflow_records (workflow_name, foreign_id, run_id, run_state, status, object, created_at, updated_at)
                        VALUES (?, ?, ?, 3, 1, '', ?, ?)
                        """,
                        [.text(second.workflow), .text(second.foreignID), .text("paused-run"), .timestamp(Fixtures.t0), .timestamp(Fixtures.t0)])
                }
            }
            // Through the store: the first run comes back, and nothing is written.
            #expect(try await store.create(NewRun(run: second)) == .existing(first))
            #expect(try await TestDatabase.scalar(pool, "SELECT COUNT(*) FROM workflow_records") == 1)
            #expect(try await TestDatabase.scalar(pool, "SELECT COUNT(*) FROM workflow_outbox") == 1)
            // Another workflow may use the same foreign id.
            let elsewhere = Fixtures.run(workflow: "refunds", foreignID: "order-1001")
            #expect(try await store.create(NewRun(run: elsewhere)) == .created(elsewhere))

            // Once the first finishes, a new run may start.
            let done = Fixtures.next(first, status: 5, state: .completed)
            #expect(try await store.update([done]) == [.applied])
            #expect(try await store.create(NewRun(run: second)) == .created(second))
            #expect(try await store.latest(workflow: first.workflow, foreignID: "order-1001") == second)
            let third = Fixtures.run(foreignID: "order-1001", at: Fixtures.t0.adding(milliseconds: 20))
            #expect(try await store.create(NewRun(run: third)) == .existing(second))
        }
    }

    @Test func concurrentCreatesForOneForeignIDMakeExactlyOneRun() async throws {
        try await TestDatabase.with { store, pool async throws in
            for round in 0..<5 {
                let candidates = (0..<8).map { _ in Fixtures.run(foreignID: "order-\(round)") }
                let results = try await withThrowingTaskGroup(of: CreateRunResult.self) { group in
                    for r in candidates { group.addTask { try await store.create(NewRun(run: r)) } }
                    var all: [CreateRunResult] = []
                    for try await r in group { all.append(r) }
                    return all
                }
                let created = results.filter { if case .created = $0 { true } else { false } }
                #expect(created.count == 1, "round \(round): \(created.count) created")
                #expect(Set(results.map(\.run.runID)).count == 1, "every caller sees the same run")
                #expect(
                    try await TestDatabase.scalar(
                        pool, "SELECT COUNT(*) FROM workflow_records WHERE foreign_id = ?", [.text("order-\(round)")]) == 1)
                #expect(
                    try await TestDatabase.scalar(
                        pool, "SELECT COUNT(*) FROM workflow_outbox WHERE foreign_id = ?", [.text("order-\(round)")]) == 1)
            }
        }
    }

    @Test func eventLogSeqStaysGapFreeUnderConcurrentAppenders() async throws {
        try await TestDatabase.with { store, pool async throws in
            var winners: [[WorkflowEvent]] = []
            var losers = 0
            for round in 0..<6 {
                let outcomes = await withTaskGroup(of: Result<[WorkflowEvent], any Error>.self) { group in
                    for k in 0..<8 {
                        let batch = (1...3).map { v in
                            EventData(
                                workflow: "wf", foreignID: "f-\(round)-\(k)", runID: "run-\(round)-\(k)", status: v,
                                runState: .running, version: Int64(v), at: Fixtures.t0, reason: nil)
                        }
                        group.addTask {
                            do { return .success(try await store.append(batch)) } catch { return .failure(error) }
                        }
                    }
                    var all: [Result<[WorkflowEvent], any Error>] = []
                    for await o in group { all.append(o) }
                    return all
                }
                var roundWinners = 0
                for o in outcomes {
                    switch o {
                    case .success(let events):
                        winners.append(events)
                        roundWinners += 1
                    case .failure(let error):
                        losers += 1
                        #expect(error is WorkflowError, "a loser gets the store's error: \(error)")
                    }
                }
                #expect(roundWinners >= 1, "round \(round): nobody won")
            }
            let stored = try await pool.withConnection { c in
                try c.query("SELECT \(MariaDBWorkflowStore.eventColumns) FROM workflow_events ORDER BY seq")
                    .map(MariaDBWorkflowStore.decodeEvent)
            }
            let n = Int64(winners.count * 3)
            #expect(stored.map(\.seq) == Array(1...n), "seq has a gap or a duplicate")
            #expect(Set(stored) == Set(winners.joined()), "the log holds exactly the winners' events")
            // A winner's batch is contiguous and in its own order.
            for w in winners {
                #expect(w.map(\.seq) == Array(w[0].seq...(w[0].seq + 2)))
                #expect(w.map(\.version) == [1, 2, 3])
            }
            // A loser appended nothing: every stored run id belongs to a winner.
            #expect(Set(stored.map(\.runID)).count == winners.count)
            #expect(try await store.head() == n)
            print("event-log appenders: \(winners.count) batches won, \(losers) refused")
        }
    }

    static func relayUntilDone(
        _ store: MariaDBWorkflowStore, writing: Locked<Int>, relayed: Locked<[WorkflowEvent]>, errors: Locked<Int>
    ) async throws {
        while true {
            let stillWriting = writing.value > 0
            do {
                let moved = try await store.relay(limit: 7)
                relayed.withLock { $0 += moved }
                if moved.isEmpty {
                    if !stillWriting { break }
                    try await Task.sleep(for: .milliseconds(1))
                }
            } catch let e as WorkflowError where e.retryable {
                errors.withLock { $0 += 1 }
            }
        }
    }

    @Test func theRelayUnderConcurrentWritersMovesEveryOutboxRowOnce() async throws {
        try await TestDatabase.with { store, pool async throws in
            let writing = Locked(4)
            let relayed = Locked([WorkflowEvent]())
            let relayErrors = Locked(0)
            // Two relays at once, as during a lease hand-over: they must still move each row
            // once and keep seq gap-free.
            let relay = Task {
                async let first: Void = Self.relayUntilDone(store, writing: writing, relayed: relayed, errors: relayErrors)
                async let second: Void = Self.relayUntilDone(store, writing: writing, relayed: relayed, errors: relayErrors)
                _ = try await (first, second)
            }

            try await withThrowingTaskGroup(of: Void.self) { group in
                for w in 0..<4 {
                    group.addTask {
                        defer { writing.withLock { $0 -= 1 } }
                        for i in 0..<25 {
                            let r = Fixtures.run(foreignID: "w\(w)-\(i)", at: Fixtures.t0.adding(milliseconds: Int64(i)))
                            let created = try await store.create(NewRun(run: r))
                            #expect(created == .created(r))
                            var current = r
                            for status in 2...4 {
                                let u = Fixtures.next(current, status: status)
                                let outcome = try await store.update([u])
                                #expect(outcome == [.applied])
                                current = u.run
                            }
                        }
                    }
                }
                try await group.waitForAll()
            }
            try await relay.value
            let events = relayed.value.sorted { $0.seq < $1.seq }
            #expect(events.count == 400, "4 writers x 25 runs x 4 changes")
            #expect(events.map(\.seq) == Array(1...Int64(events.count)), "seq has a gap, a duplicate or is out of order")
            let keys = events.map { "\($0.runID)#\($0.version)" }
            #expect(Set(keys).count == 400, "a change was moved twice")
            // Per run: versions 1, 2, 3, 4 in seq order, with the statuses written.
            let byRun = Dictionary(grouping: events, by: \.runID)
            #expect(byRun.count == 100)
            for (run, list) in byRun {
                #expect(list.map(\.version) == [1, 2, 3, 4], "run \(run)")
                #expect(list.map(\.status) == [1, 2, 3, 4], "run \(run)")
            }
            #expect(try await TestDatabase.scalar(pool, "SELECT COUNT(*) FROM workflow_outbox") == 0)
            let stored = try await pool.withConnection { c in
                try c.query("SELECT \(MariaDBWorkflowStore.eventColumns) FROM workflow_events ORDER BY seq")
                    .map(MariaDBWorkflowStore.decodeEvent)
            }
            #expect(stored == events, "the log differs from what the relay reported")
            print("relay under writers: \(events.count) events, \(relayErrors.value) retryable relay errors")
        }
    }
}
