import Foundation
import Testing
import WorkflowEngine
import enum WorkflowEngine.SortOrder
@testable import WorkflowMariaDB

/// The store conformance cases of luno/workflow's adapter suite, adapted to this store, plus the
/// timeout, cursor and lease cases the engine relies on.
@Suite("Store conformance", .serialized, .timeLimit(.minutes(2)))
struct StoreConformanceTests {
    // MARK: - Helpers

    /// Creates runs with at most `width` creates in flight; fails on anything but `.created`.
    static func createAll(_ store: MariaDBWorkflowStore, _ runs: [Run], width: Int = 8) async throws {
        try await withThrowingTaskGroup(of: CreateRunResult.self) { group in
            var it = runs.makeIterator()
            for _ in 0..<width {
                guard let r = it.next() else { break }
                group.addTask { try await store.create(NewRun(run: r)) }
            }
            while let result = try await group.next() {
                guard case .created = result else {
                    Issue.record("create returned \(result)")
                    return
                }
                if let r = it.next() { group.addTask { try await store.create(NewRun(run: r)) } }
            }
        }
    }

    /// Walks a listing page by page (page sizes cycle through `pageSizes`) until `next` is nil.
    static func walk(
        _ store: MariaDBWorkflowStore, _ query: RunQuery, pageSizes: [Int],
        between: ((RunCursor) async throws -> Void)? = nil
    ) async throws -> (runs: [Run], pages: [Int]) {
        var q = query
        var runs: [Run] = []
        var pages: [Int] = []
        var i = 0
        while true {
            q.limit = pageSizes[i % pageSizes.count]
            let page = try await store.list(q)
            #expect(page.runs.count <= q.limit)
            runs += page.runs
            pages.append(page.runs.count)
            i += 1
            guard let next = page.next, i < 10_000 else { break }
            #expect(next == RunCursor(createdAt: page.runs.last!.createdAt, runID: page.runs.last!.runID))
            q.after = next
            try await between?(next)
        }
        return (runs, pages)
    }

    static func sorted(_ runs: [Run], _ order: SortOrder) -> [Run] {
        let asc = runs.sorted { ($0.createdAt, $0.runID) < ($1.createdAt, $1.runID) }
        return order == .ascending ? asc : asc.reversed()
    }

    // MARK: - Store, latest, lookup, update

    @Test func storeThenLatestLookupAndUpdate() async throws {
        try await TestDatabase.with { store, _ async throws in
            let r = Fixtures.run(foreignID: "order-1001")
            let other = Fixtures.run(foreignID: "order-1002", at: Fixtures.t0.adding(milliseconds: 5))
            #expect(try await store.create(NewRun(run: r)) == .created(r))
            #expect(try await store.create(NewRun(run: other)) == .created(other))
            #expect(try await store.lookup(runID: r.runID) == r)
            #expect(try await store.latest(workflow: r.workflow, foreignID: "order-1001") == r)
            #expect(try await store.latest(workflow: "another-workflow", foreignID: "order-1001") == nil)
            #expect(try await store.latest(workflow: r.workflow, foreignID: "order-9999") == nil)
            #expect(try await store.lookup(runID: "no-such-run") == nil)
            let both = try await store.lookup(runIDs: [r.runID, other.runID, "no-such-run"])
            #expect(both.count == 2)
            #expect(Set(both.map(\.runID)) == [r.runID, other.runID])
            #expect(both.first { $0.runID == r.runID } == r)

            var changed = r
            changed.status = 2
            changed.runState = .running
            changed.version = 2
            changed.object = Array(#"{"id":"order-1001","total":1359.97,"validated":true}"#.utf8)
            changed.reason = "validated"
            changed.meta = [1, 2, 3]
            changed.updatedAt = r.updatedAt.adding(milliseconds: 250)
            #expect(try await store.update([RunUpdate(run: changed, expectedVersion: 1)]) == [.applied])
            #expect(try await store.lookup(runID: r.runID) == changed)
            #expect(try await store.latest(workflow: r.workflow, foreignID: "order-1001") == changed)
            // The other run is untouched.
            #expect(try await store.lookup(runID: other.runID) == other)
            // A stale version is refused and changes nothing.
            var stale = changed
            stale.status = 3
            #expect(try await store.update([RunUpdate(run: stale, expectedVersion: 1)]) == [.conflict])
            #expect(try await store.lookup(runID: r.runID) == changed)
        }
    }

    @Test func latestIsTheMostRecentlyCreatedRun() async throws {
        try await TestDatabase.with { store, _ async throws in
            let old = Fixtures.run(foreignID: "order-7", state: .completed, at: Fixtures.t0)
            let newer = Fixtures.run(foreignID: "order-7", state: .cancelled, at: Fixtures.t0.adding(milliseconds: 1000))
            let newest = Fixtures.run(foreignID: "order-7", state: .running, at: Fixtures.t0.adding(milliseconds: 2000))
            for r in [newer, newest, old] { #expect(try await store.create(NewRun(run: r)) == .created(r)) }
            #expect(try await store.latest(workflow: old.workflow, foreignID: "order-7") == newest)
        }
    }

    @Test func oneBadUpdateInABatchDoesNotFailTheOthers() async throws {
        try await TestDatabase.with { store, pool async throws in
            var runs: [Run] = []
            for i in 0..<4 {
                let r = Fixtures.run(foreignID: "order-\(i)")
                _ = try await store.create(NewRun(run: r))
                runs.append(r)
            }
            // Run 1's update cannot be stored (its reason is longer than a TEXT column holds).
            var bad = Fixtures.next(runs[1], status: 6, state: .completed)
            bad.run.reason = String(repeating: "x", count: 70_000)
            let updates = [Fixtures.next(runs[0], status: 2), bad, Fixtures.next(runs[2], status: 2), Fixtures.next(runs[3], status: 2)]
            do {
                let outcomes = try await store.update(updates)
                #expect(outcomes == [.applied, .conflict, .applied, .applied])
            } catch {
                // The store reports the bad run's error; the others must be applied regardless.
                print("batch with one bad update threw: \(error)")
            }
            for i in [0, 2, 3] { #expect(try await store.lookup(runID: runs[i].runID) == updates[i].run, "run \(i)") }
            #expect(try await store.lookup(runID: runs[1].runID) == runs[1], "the bad run is unchanged")
            let outbox = try await pool.withConnection { c in
                try c.query("SELECT run_id, version FROM workflow_outbox ORDER BY id").map { "\(try $0.string(0))#\(try $0.int(1))" }
            }
            #expect(outbox == runs.map { "\($0.runID)#1" } + [0, 2, 3].map { "\(runs[$0].runID)#2" })
        }
    }

    // MARK: - Outbox

    @Test func everyStoreOperationWritesItsOutboxRowWhichIsDeletable() async throws {
        try await TestDatabase.with { store, pool async throws in
            let r = Fixtures.run(foreignID: "order-1001")
            _ = try await store.create(NewRun(run: r))
            let afterCreate = try await store.outboxBatch(limit: 10)
            #expect(afterCreate.count == 1)
            #expect(afterCreate.first?.data == r.event)
            #expect(afterCreate.first?.createdAt == r.updatedAt)

            let u = Fixtures.next(r, status: 2)
            #expect(try await store.update([u]) == [.applied])
            let afterUpdate = try await store.outboxBatch(limit: 10)
            #expect(afterUpdate.count == 2)
            #expect(afterUpdate.map(\.data) == [r.event, u.run.event])
            #expect(afterUpdate[0].id < afterUpdate[1].id)

            // The JSON in `data` says the same, for SQL readers.
            let json = try await pool.withConnection { c in
                try c.query(
                    """
                    SELECT JSON_VALUE(data, '$.run_id'), JSON_VALUE(data, '$.version'), JSON_VALUE(data, '$.status')
                    FROM workflow_outbox ORDER BY id
                    """
                ).map { [try $0.string(0), try $0.string(1), try $0.string(2)] }
            }
            #expect(json == [[r.runID, "1", "1"], [r.runID, "2", "2"]])

            // A meta-only change writes no row and keeps the version (event versions stay the
            // run's versions); a conflicting update writes none either.
            var metaOnly = u.run
            metaOnly.meta = [9]
            #expect(try await store.update([RunUpdate(run: metaOnly, expectedVersion: 2, emitsEvent: false)]) == [.applied])
            #expect(try await store.lookup(runID: r.runID) == metaOnly)
            #expect(try await store.lookup(runID: r.runID)?.version == 2)
            #expect(try await store.update([Fixtures.next(r, status: 5)]) == [.conflict])
            #expect(try await store.outboxStats() == OutboxStats(pending: 2, oldest: r.updatedAt))

            #expect(try await store.deleteOutbox(ids: afterUpdate.map(\.id)) == 2)
            #expect(try await store.outboxBatch(limit: 10).isEmpty)
            #expect(try await TestDatabase.scalar(pool, "SELECT COUNT(*) FROM workflow_outbox") == 0)
            #expect(try await store.deleteOutbox(ids: afterUpdate.map(\.id)) == 0)
            #expect(try await store.outboxStats() == OutboxStats(pending: 0, oldest: nil))
        }
    }

    @Test func outboxBatchIsInCreationOrderAndLimited() async throws {
        try await TestDatabase.with { store, _ async throws in
            var runs: [Run] = []
            for i in 0..<7 {
                // created_at goes backwards: the batch must follow creation (id) order anyway.
                let r = Fixtures.run(foreignID: "order-\(i)", at: Fixtures.t0.adding(milliseconds: Int64(100 - i)))
                _ = try await store.create(NewRun(run: r))
                runs.append(r)
            }
            let first = try await store.outboxBatch(limit: 5)
            #expect(first.map(\.data.runID) == runs.prefix(5).map(\.runID))
            #expect(try await store.deleteOutbox(ids: [first[1].id, first[3].id]) == 2)
            let rest = try await store.outboxBatch(limit: 100)
            #expect(rest.map(\.data.runID) == [0, 2, 4, 5, 6].map { runs[$0].runID })
        }
    }

    // MARK: - Event log reads

    @Test func eventsAfterASeqWithFiltersHistoryAndHead() async throws {
        try await TestDatabase.with { store, _ async throws in
            #expect(try await store.head() == 0)
            var runs: [Run] = []
            for i in 0..<12 {
                let r = Fixtures.run(workflow: i < 10 ? "wf-e" : "wf-x", foreignID: "f-\(i)", at: Fixtures.t0.adding(milliseconds: Int64(i)))
                _ = try await store.create(NewRun(run: r))
                runs.append(r)
            }
            // Run 0 goes 1 → 2 → 3; runs 1…4 go to 2; run 5 completes.
            let a2 = Fixtures.next(runs[0], status: 2)
            #expect(try await store.update([a2]) == [.applied])
            #expect(try await store.update([Fixtures.next(a2.run, status: 3)]) == [.applied])
            #expect(try await store.update((1...4).map { Fixtures.next(runs[$0], status: 2) }) == Array(repeating: .applied, count: 4))
            #expect(try await store.update([Fixtures.next(runs[5], status: 5, state: .completed)]) == [.applied])
            let all = try await store.relay(limit: 1000)
            #expect(all.count == 19, "12 creates, 2 + 4 + 1 updates")
            #expect(try await store.head() == Int64(all.count))

            func read(_ after: Int64, _ filter: EventFilter, limit: Int = 1000) async throws -> [WorkflowEvent] {
                try await store.events(after: after, filter: filter, limit: limit)
            }
            #expect(try await read(0, EventFilter()) == all)
            #expect(try await read(7, EventFilter()) == all.filter { $0.seq > 7 })
            #expect(try await read(0, EventFilter(), limit: 3) == Array(all.prefix(3)))
            #expect(try await read(Int64(all.count), EventFilter()).isEmpty)
            #expect(try await read(0, EventFilter(workflow: "wf-x")) == all.filter { $0.workflow == "wf-x" })
            let status2 = try await read(0, EventFilter(workflow: "wf-e", statuses: [2]))
            #expect(status2 == all.filter { $0.workflow == "wf-e" && $0.status == 2 })
            #expect(status2.count == 5)
            #expect(try await read(0, EventFilter(statuses: [2, 3])) == all.filter { [2, 3].contains($0.status) })
            #expect(try await read(0, EventFilter(runStates: [.completed])) == all.filter { $0.runState == .completed })
            #expect(try await read(0, EventFilter(foreignID: "f-0")) == all.filter { $0.foreignID == "f-0" })
            #expect(try await read(0, EventFilter(runID: runs[0].runID)).map(\.version) == [1, 2, 3])
            // Partitions: the SQL filter agrees with Partition.contains, and together they cover
            // the log exactly once.
            var covered: [WorkflowEvent] = []
            for index in 0..<3 {
                let p = Partition(index: index, count: 3)
                let part = try await read(0, EventFilter(partition: p))
                #expect(part.allSatisfy { p.contains(runID: $0.runID) }, "partition \(index)")
                #expect(part == all.filter { p.contains(runID: $0.runID) }, "partition \(index)")
                covered += part
            }
            #expect(covered.sorted { $0.seq < $1.seq } == all)
            // History: one run's events in seq order.
            let history = try await store.history(runID: runs[0].runID)
            #expect(history == all.filter { $0.runID == runs[0].runID })
            #expect(history.map(\.status) == [1, 2, 3])
            #expect(try await store.history(runID: "no-such-run").isEmpty)
        }
    }

    // MARK: - Listing

    @Test func listAcrossTwoWorkflowsVisitsEveryRecordOnceInBothOrders() async throws {
        try await TestDatabase.with { store, _ async throws in
            // 1000 runs in two workflows; three share each created_at, so run_id breaks ties,
            // and run ids are a shuffled numbering so they do not follow creation.
            let ids = Array(0..<1000).shuffled()
            var runs: [Run] = []
            for i in 0..<1000 {
                let workflow = i % 2 == 0 ? "wf-a" : "wf-b"
                let runID = "run-" + String(String(ids[i] + 100_000).dropFirst())
                let at = Fixtures.t0.adding(milliseconds: Int64(i / 3) * 7)
                runs.append(Fixtures.run(workflow: workflow, foreignID: "order-\(i)", runID: runID, at: at))
            }
            try await Self.createAll(store, runs.shuffled())
            // Looking up all 1000 at once (more than one IN-list chunk) finds each once.
            let found = try await store.lookup(runIDs: runs.map(\.runID))
            #expect(found.count == 1000)
            #expect(Set(found.map(\.runID)) == Set(runs.map(\.runID)))
            for order in [SortOrder.ascending, .descending] {
                let expected = Self.sorted(runs, order)
                for size in [53, 100, 847, 50] {
                    let (seen, pages) = try await Self.walk(store, RunQuery(order: order), pageSizes: [size])
                    #expect(seen.count == 1000, "page size \(size), \(order): \(seen.count) records")
                    #expect(Set(seen.map(\.runID)).count == seen.count, "a record was visited twice")
                    #expect(seen.map(\.runID) == expected.map(\.runID), "page size \(size), \(order): wrong order")
                    #expect(pages.count == (1000 + size - 1) / size)
                    #expect(pages.dropLast().allSatisfy { $0 == size })
                }
                // Mixed page sizes: 53 + 100 + 847 = 1000, and the walk ends there.
                let (mixed, mixedPages) = try await Self.walk(store, RunQuery(order: order), pageSizes: [53, 100, 847, 50])
                #expect(mixedPages == [53, 100, 847])
                #expect(mixed == expected, "records read back differ from what was stored")
                // Per workflow: each sees its own 500, and the two are disjoint.
                var union = Set<String>()
                for wf in ["wf-a", "wf-b"] {
                    let (seen, _) = try await Self.walk(store, RunQuery(workflow: wf, order: order), pageSizes: [53, 100, 847, 50])
                    #expect(seen.map(\.runID) == expected.filter { $0.workflow == wf }.map(\.runID))
                    union.formUnion(seen.map(\.runID))
                }
                #expect(union.count == 1000)
            }
        }
    }

    @Test func listFilters() async throws {
        try await TestDatabase.with { store, _ async throws in
            let states: [RunState] = [.initiated, .running, .paused, .completed, .cancelled, .dataDeleted]
            var runs: [Run] = []
            for i in 0..<60 {
                runs.append(
                    Fixtures.run(
                        workflow: "wf-f", foreignID: "f-\(i)", status: i % 8 + 1, state: states[i % states.count],
                        at: Fixtures.t0.adding(milliseconds: Int64(i) * 1000)))
            }
            // One foreign id with four runs: three finished, one running.
            let sharedStates: [RunState] = [.completed, .cancelled, .completed, .running]
            for (k, s) in sharedStates.enumerated() {
                runs.append(
                    Fixtures.run(
                        workflow: "wf-f", foreignID: "shared", status: 4, state: s,
                        at: Fixtures.t0.adding(milliseconds: Int64(k) * 15_000 + 500)))
            }
            // Another workflow with the same foreign ids, statuses and states: filtered out.
            for i in 0..<10 {
                runs.append(
                    Fixtures.run(
                        workflow: "wf-g", foreignID: i < 5 ? "shared" : "f-\(i)", status: 2,
                        state: i < 5 ? .completed : .paused, at: Fixtures.t0.adding(milliseconds: Int64(i) * 3000)))
            }
            try await Self.createAll(store, runs)
            let mine = runs.filter { $0.workflow == "wf-f" }
            let check = FilterCheck(store: store)
            try await check.run(RunQuery(workflow: "wf-f", foreignIDs: ["shared"]), mine.filter { $0.foreignID == "shared" }, "one foreign id")
            try await check.run(
                RunQuery(workflow: "wf-f", foreignIDs: ["f-3", "f-10", "shared", "nobody"], order: .descending),
                mine.filter { ["f-3", "f-10", "shared"].contains($0.foreignID) }, "several foreign ids")
            try await check.run(RunQuery(workflow: "wf-f", runStates: [.paused]), mine.filter { $0.runState == .paused }, "one run state")
            try await check.run(
                RunQuery(workflow: "wf-f", runStates: [.completed, .cancelled, .dataDeleted]),
                mine.filter { [.completed, .cancelled, .dataDeleted].contains($0.runState) }, "several run states")
            try await check.run(RunQuery(workflow: "wf-f", statuses: [2]), mine.filter { $0.status == 2 }, "one status")
            try await check.run(
                RunQuery(workflow: "wf-f", statuses: [6, 7, 8], order: .descending), mine.filter { [6, 7, 8].contains($0.status) },
                "several statuses")
            // The window includes its lower bound and excludes its upper bound.
            let from = Fixtures.t0.adding(milliseconds: 10_000)
            let to = Fixtures.t0.adding(milliseconds: 20_000)
            try await check.run(
                RunQuery(workflow: "wf-f", createdAfter: from, createdBefore: to),
                mine.filter { $0.createdAt >= from && $0.createdAt < to }, "created-at window")
            let windowed = try await store.list(RunQuery(workflow: "wf-f", createdAfter: from, createdBefore: to, limit: 100))
            #expect(windowed.runs.first?.createdAt == from)
            #expect(!windowed.runs.map(\.createdAt).contains(to))
            try await check.run(
                RunQuery(workflow: "wf-f", statuses: [1, 2, 3], runStates: [.initiated, .running], createdAfter: from),
                mine.filter { [1, 2, 3].contains($0.status) && [.initiated, .running].contains($0.runState) && $0.createdAt >= from },
                "status + run state + window")
            // No match is an empty page with no cursor.
            let none = try await store.list(RunQuery(workflow: "wf-f", foreignIDs: ["nobody"]))
            #expect(none.runs.isEmpty && none.next == nil)
            // Without a workflow filter, both workflows show.
            let (all, _) = try await Self.walk(store, RunQuery(foreignIDs: ["shared"]), pageSizes: [3])
            #expect(all.count == 9)
        }
    }

    /// Lists with a query and compares with the expected subset of `runs`, in order.
    struct FilterCheck {
        let store: MariaDBWorkflowStore

        func run(_ q: RunQuery, _ matching: [Run], _ label: String) async throws {
            let (seen, _) = try await StoreConformanceTests.walk(store, q, pageSizes: [7])
            let expected = StoreConformanceTests.sorted(matching, q.order)
            #expect(!expected.isEmpty, "\(label): the fixture should match something")
            #expect(seen.map(\.runID) == expected.map(\.runID), "\(label)")
        }
    }

    @Test func keysetPaginationIsStableUnderConcurrentInserts() async throws {
        try await TestDatabase.with { store, _ async throws in
            let existing = (0..<300).map { i in
                Fixtures.run(workflow: "wf-k", foreignID: "old-\(i)", at: Fixtures.t0.adding(milliseconds: Int64(i / 2) * 10))
            }
            try await Self.createAll(store, existing)
            for order in [SortOrder.ascending, .descending] {
                let inserted = Locked(0)
                let tag = order.rawValue
                // New rows land everywhere: before, after and exactly on the times of old rows.
                let inserter = Task {
                    for i in 0..<200 {
                        let at = Fixtures.t0.adding(milliseconds: Int64.random(in: -20...1520))
                        _ = try await store.create(NewRun(run: Fixtures.run(workflow: "wf-k", foreignID: "new-\(tag)-\(i)", at: at)))
                        inserted.withLock { $0 += 1 }
                    }
                }
                // Between pages, one row lands just ahead of the cursor (it must be seen) and
                // one just behind it (it must not be).
                let placed = Locked((ahead: [String](), behind: [String]()))
                let step: Int64 = order == .ascending ? 1 : -1
                let (seen, _) = try await Self.walk(store, RunQuery(workflow: "wf-k", order: order), pageSizes: [17]) { cursor in
                    let k = placed.value.ahead.count
                    let ahead = Fixtures.run(workflow: "wf-k", foreignID: "ahead-\(tag)-\(k)", at: cursor.createdAt.adding(milliseconds: step))
                    let behind = Fixtures.run(workflow: "wf-k", foreignID: "behind-\(tag)-\(k)", at: cursor.createdAt.adding(milliseconds: -step))
                    _ = try await store.create(NewRun(run: ahead))
                    _ = try await store.create(NewRun(run: behind))
                    placed.withLock {
                        $0.ahead.append(ahead.runID)
                        $0.behind.append(behind.runID)
                    }
                }
                try await inserter.value
                #expect(inserted.value == 200)
                let ids = seen.map(\.runID)
                #expect(Set(ids).count == ids.count, "\(order): a row was visited twice")
                let seenIDs = Set(ids)
                let missing = existing.filter { !seenIDs.contains($0.runID) }
                #expect(missing.isEmpty, "\(order): \(missing.count) pre-existing rows were skipped")
                #expect(placed.value.ahead.count >= 17, "the walk should take many pages")
                #expect(placed.value.ahead.allSatisfy(seenIDs.contains), "\(order): a row inserted ahead of the cursor was not seen")
                #expect(!placed.value.behind.contains(where: seenIDs.contains), "\(order): a row behind the cursor was seen")
                let keys = seen.map { ($0.createdAt, $0.runID) }
                let monotonic = zip(keys, keys.dropFirst()).allSatisfy { order == .ascending ? $0 < $1 : $0 > $1 }
                #expect(monotonic, "\(order): the walk went backwards")
            }
        }
    }

    // MARK: - Timeouts

    @Test func completedAndCancelledTimeoutsAreNotDue() async throws {
        try await TestDatabase.with { store, _ async throws in
            let r = Fixtures.run(foreignID: "order-1")
            _ = try await store.create(NewRun(run: r))
            let due = Fixtures.t0.adding(milliseconds: 60_000)
            var ids: [Int64] = []
            for _ in 0..<3 {
                ids.append(try await store.createTimeout(for: r, NewTimeout(kind: .timeout, status: 1, expireAt: due), now: Fixtures.t0))
            }
            #expect(try await store.completeTimeout(id: ids[0]))
            #expect(try await store.cancelTimeout(id: ids[1]))
            let now = due.adding(milliseconds: 1)
            let list = try await store.dueTimeouts(now: now, limit: 10)
            #expect(list.map(\.id) == [ids[2]])
            #expect(
                list.first
                    == TimeoutRecord(
                        id: ids[2], workflow: r.workflow, foreignID: r.foreignID, runID: r.runID, kind: .timeout, status: 1,
                        attempt: 0, expireAt: due, createdAt: Fixtures.t0))
            // Each settles once: completing or cancelling again is refused.
            #expect(try await store.completeTimeout(id: ids[0]) == false)
            #expect(try await store.cancelTimeout(id: ids[0]) == false)
            #expect(try await store.completeTimeout(id: ids[1]) == false)
            #expect(try await store.completeTimeout(id: 999_999) == false)
            let all = try await store.timeouts(runID: r.runID)
            #expect(all.map(\.id) == ids)
            #expect(all.map(\.completed) == [true, false, false])
            #expect(all.map(\.cancelled) == [false, true, false])
            // Not due before its time.
            #expect(try await store.dueTimeouts(now: due.adding(milliseconds: -1), limit: 10).isEmpty)
            #expect(try await store.dueTimeouts(now: due, limit: 10).map(\.id) == [ids[2]])
        }
    }

    @Test func dueTimeoutsAreListedInInsertionOrder() async throws {
        try await TestDatabase.with { store, _ async throws in
            var ids: [Int64] = []
            for i in 0..<8 {
                let r = Fixtures.run(foreignID: "order-\(i)")
                _ = try await store.create(NewRun(run: r))
                // Expiry goes backwards while insertion goes forwards; one is not yet due.
                let expire = Fixtures.t0.adding(milliseconds: i == 5 ? 999_999 : Int64(10_000 - i * 1000))
                ids.append(
                    try await store.createTimeout(
                        for: r, NewTimeout(kind: i % 2 == 0 ? .timeout : .retry, status: 1, expireAt: expire, attempt: i),
                        now: Fixtures.t0))
            }
            let now = Fixtures.t0.adding(milliseconds: 20_000)
            let due = try await store.dueTimeouts(now: now, limit: 100)
            #expect(due.map(\.id) == ids.enumerated().filter { $0.offset != 5 }.map(\.element))
            #expect(due.map(\.attempt) == [0, 1, 2, 3, 4, 6, 7])
            #expect(due.map(\.kind) == [.timeout, .retry, .timeout, .retry, .timeout, .timeout, .retry])
            #expect(try await store.dueTimeouts(now: now, limit: 3).map(\.id) == Array(ids.prefix(3)))
        }
    }

    @Test func anUpdateThatCompletesATimeoutFiresAtMostOnce() async throws {
        try await TestDatabase.with { store, _ async throws in
            let r = Fixtures.run(foreignID: "order-1")
            let expire = Fixtures.t0.adding(milliseconds: 1000)
            _ = try await store.create(NewRun(run: r, timeouts: [NewTimeout(kind: .timeout, status: 1, expireAt: expire)]))
            let timeout = try #require(try await store.dueTimeouts(now: expire, limit: 10).first)
            #expect(timeout.runID == r.runID)

            var first = Fixtures.next(r, status: 6, state: .completed)
            first.completesTimeout = timeout.id
            #expect(try await store.update([first]) == [.applied])
            let afterFirst = try await store.lookup(runID: r.runID)
            #expect(afterFirst == first.run)
            let outboxAfterFirst = try await store.outboxBatch(limit: 100)

            // A second firing (even one at the right version) is refused and changes nothing.
            var second = Fixtures.next(first.run, status: 7, state: .completed)
            second.completesTimeout = timeout.id
            #expect(try await store.update([second]) == [.conflict])
            #expect(try await store.lookup(runID: r.runID) == afterFirst)
            #expect(try await store.outboxBatch(limit: 100) == outboxAfterFirst)
            #expect(try await store.timeouts(runID: r.runID).map(\.completed) == [true])
            #expect(try await store.dueTimeouts(now: expire, limit: 10).isEmpty)
        }
    }

    @Test func aTimeoutWhoseRunMovedOnStaysPending() async throws {
        try await TestDatabase.with { store, _ async throws in
            let r = Fixtures.run(foreignID: "order-1")
            let expire = Fixtures.t0.adding(milliseconds: 1000)
            _ = try await store.create(NewRun(run: r, timeouts: [NewTimeout(kind: .timeout, status: 1, expireAt: expire)]))
            let timeout = try #require(try await store.dueTimeouts(now: expire, limit: 10).first)
            // The run moved on without cancelling: the firing at the old version must not count.
            var moved = Fixtures.next(r, status: 2)
            moved.cancelPendingTimeouts = false
            #expect(try await store.update([moved]) == [.applied])
            var late = Fixtures.next(r, status: 6, state: .completed)
            late.completesTimeout = timeout.id
            #expect(try await store.update([late]) == [.conflict])
            #expect(try await store.lookup(runID: r.runID) == moved.run)
            let after = try await store.timeouts(runID: r.runID)
            #expect(after.map(\.completed) == [false], "a refused firing must leave the timeout pending")
            #expect(after.map(\.cancelled) == [false])
        }
    }

    @Test func cancelPendingTimeoutsCancelsInTheSameTransaction() async throws {
        try await TestDatabase.with { store, pool async throws in
            let r = Fixtures.run(foreignID: "order-1")
            let other = Fixtures.run(foreignID: "order-2")
            let t = Fixtures.t0.adding(milliseconds: 5000)
            _ = try await store.create(
                NewRun(run: r, timeouts: [NewTimeout(kind: .timeout, status: 1, expireAt: t), NewTimeout(kind: .retry, status: 1, expireAt: t, attempt: 1)]))
            _ = try await store.create(NewRun(run: other, timeouts: [NewTimeout(kind: .timeout, status: 1, expireAt: t)]))
            let completedID = try #require(try await store.timeouts(runID: r.runID).first?.id)
            #expect(try await store.completeTimeout(id: completedID))

            // A transaction that applies the update and then fails leaves the timeouts pending:
            // the cancellation belongs to the update's transaction.
            var u = Fixtures.next(r, status: 2)
            u.newTimeouts = [NewTimeout(kind: .timeout, status: 2, expireAt: t.adding(milliseconds: 1000))]
            struct Abort: Error {}
            let update = u
            let outcome = Locked<[UpdateOutcome]>([])
            await #expect(throws: Abort.self) {
                try await pool.transaction { c in
                    let o = try MariaDBWorkflowStore.apply(c, [update], nil)
                    outcome.withLock { $0 = o }
                    throw Abort()
                }
            }
            #expect(outcome.value == [.applied], "inside the transaction the update applied")
            #expect(try await store.lookup(runID: r.runID) == r)
            #expect(try await store.timeouts(runID: r.runID).map(\.cancelled) == [false, false])

            // A conflicting update cancels nothing.
            var stale = Fixtures.next(r, status: 3)
            stale.run.version = 6
            stale.expectedVersion = 5
            #expect(try await store.update([stale]) == [.conflict])
            #expect(try await store.timeouts(runID: r.runID).map(\.cancelled) == [false, false])

            #expect(try await store.update([u]) == [.applied])
            let after = try await store.timeouts(runID: r.runID)
            #expect(after.count == 3)
            #expect(after.map(\.completed) == [true, false, false])
            #expect(after.map(\.cancelled) == [false, true, false], "completed stays completed, pending is cancelled, new is pending")
            #expect(after.last?.status == 2)
            #expect(after.last?.createdAt == u.run.updatedAt)
            // The other run's timeout is untouched.
            #expect(try await store.timeouts(runID: other.runID).map(\.cancelled) == [false])
            #expect(try await store.dueTimeouts(now: t.adding(milliseconds: 1000), limit: 10).map(\.runID) == [other.runID, r.runID])
        }
    }

    // MARK: - Cursors

    @Test func cursorsGetAndSet() async throws {
        try await TestDatabase.with { store, pool async throws in
            #expect(try await store.cursor("consumer-a") == 0)
            try await store.setCursor("consumer-a", to: 5)
            #expect(try await store.cursor("consumer-a") == 5)
            try await store.setCursor("consumer-a", to: 42)
            #expect(try await store.cursor("consumer-a") == 42)
            #expect(try await store.cursor("consumer-b") == 0)
            try await store.setCursor("consumer-b", to: 7)
            #expect(try await store.cursor("consumer-a") == 42)
            #expect(try await store.cursor("consumer-b") == 7)
            #expect(try await TestDatabase.scalar(pool, "SELECT COUNT(*) FROM workflow_cursors") == 2)
        }
    }

    // MARK: - Leases

    @Test func fiveContendersNeverHoldTheLeaseAtOnce() async throws {
        try await TestDatabase.with { store, _ async throws in
            // Rounds at injected times: each round starts after the last lease expired, and all
            // five contend at once. Exactly one wins each round.
            var lastGeneration: Int64 = 0
            var lastHolder = ""
            for round in 0..<30 {
                let now = Fixtures.t0.adding(milliseconds: Int64(round) * 10_000)
                let results = try await withThrowingTaskGroup(of: Lease?.self) { group in
                    for i in 0..<5 {
                        group.addTask { try await store.acquireLease("relay", holder: "instance-\(i)", now: now, ttlMilliseconds: 5000) }
                    }
                    var all: [Lease?] = []
                    for try await r in group { all.append(r) }
                    return all
                }
                let winners = results.compactMap { $0 }
                #expect(winners.count == 1, "round \(round): \(winners.count) holders")
                guard let w = winners.first else { continue }
                #expect(try await store.lease("relay") == w)
                #expect(w.expiresAt == now.adding(milliseconds: 5000))
                if round > 0 {
                    #expect(w.generation == (w.holder == lastHolder ? lastGeneration : lastGeneration + 1))
                }
                lastGeneration = w.generation
                lastHolder = w.holder
            }
        }
    }

    @Test func fiveContendersInRealTimeNeverOverlap() async throws {
        try await TestDatabase.with { store, _ async throws in
            // Each contender loops: take the lease, hold it briefly, give it up. The shared
            // counter notes how many believe they hold it; it must never exceed one.
            let state = Locked((holding: 0, maxHolding: 0, log: [(String, Int64)]()))
            try await withThrowingTaskGroup(of: Void.self) { group in
                for i in 0..<5 {
                    group.addTask {
                        let me = "instance-\(i)"
                        for _ in 0..<25 {
                            let now = SystemClock().now()
                            if let lease = try await store.acquireLease("poller", holder: me, now: now, ttlMilliseconds: 60_000) {
                                state.withLock {
                                    $0.holding += 1
                                    $0.maxHolding = max($0.maxHolding, $0.holding)
                                    $0.log.append((lease.holder, lease.generation))
                                }
                                #expect(lease.holder == me)
                                try await Task.sleep(for: .milliseconds(2))
                                state.withLock { $0.holding -= 1 }
                                #expect(try await store.releaseLease("poller", holder: me))
                            } else {
                                try await Task.sleep(for: .milliseconds(1))
                            }
                        }
                    }
                }
                try await group.waitForAll()
            }
            let s = state.value
            #expect(s.maxHolding == 1, "two holders at once")
            #expect(s.log.count >= 5, "the lease changed hands too rarely to tell: \(s.log.count)")
            // The fencing token grows by one exactly when the holder changes.
            for (a, b) in zip(s.log, s.log.dropFirst()) {
                #expect(b.1 == (a.0 == b.0 ? a.1 : a.1 + 1), "generation \(a) -> \(b)")
            }
        }
    }

    @Test func renewKeepsTheGenerationAndExpiryHandsItOver() async throws {
        try await TestDatabase.with { store, _ async throws in
            let t = Fixtures.t0
            let a = try #require(try await store.acquireLease("relay", holder: "a", now: t, ttlMilliseconds: 1000))
            #expect(a == Lease(name: "relay", holder: "a", expiresAt: t.adding(milliseconds: 1000), generation: 1))
            // Someone else before expiry: refused, nothing changes.
            #expect(try await store.acquireLease("relay", holder: "b", now: t.adding(milliseconds: 999), ttlMilliseconds: 1000) == nil)
            #expect(try await store.lease("relay") == a)
            // The holder renews: same generation, later expiry.
            let renewed = try #require(try await store.acquireLease("relay", holder: "a", now: t.adding(milliseconds: 500), ttlMilliseconds: 1000))
            #expect(renewed == Lease(name: "relay", holder: "a", expiresAt: t.adding(milliseconds: 1500), generation: 1))
            #expect(try await store.acquireLease("relay", holder: "b", now: t.adding(milliseconds: 1499), ttlMilliseconds: 1000) == nil)
            // After expiry another takes over, with the next generation.
            let b = try #require(try await store.acquireLease("relay", holder: "b", now: t.adding(milliseconds: 1500), ttlMilliseconds: 1000))
            #expect(b == Lease(name: "relay", holder: "b", expiresAt: t.adding(milliseconds: 2500), generation: 2))
            #expect(try await store.acquireLease("relay", holder: "a", now: t.adding(milliseconds: 1600), ttlMilliseconds: 1000) == nil)
            // Release: only the holder can; then another takes it at once.
            #expect(try await store.releaseLease("relay", holder: "a") == false)
            #expect(try await store.lease("relay") == b)
            #expect(try await store.releaseLease("relay", holder: "b"))
            let c = try #require(try await store.acquireLease("relay", holder: "c", now: t.adding(milliseconds: 1601), ttlMilliseconds: 1000))
            #expect(c.generation == 3)
            #expect(c.holder == "c")
            // Leases are independent by name.
            let other = try #require(try await store.acquireLease("consumer-1/4", holder: "a", now: t.adding(milliseconds: 1601), ttlMilliseconds: 1000))
            #expect(other.generation == 1)
            #expect(try await store.lease("relay")?.holder == "c")
            #expect(try await store.lease("nobody") == nil)
        }
    }
}
