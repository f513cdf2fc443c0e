/// The persistence the engine needs. `WorkflowMariaDB.MariaDBWorkflowStore` is the real one;
/// `InMemoryWorkflowStore` is a fake for pure engine tests.
///
/// Every method that changes a run also writes the outbox row announcing the change in the same
/// transaction (guarantee 1), and every change of an existing run is conditional on its version
/// (guarantee 2).
public protocol WorkflowStore: RecordStore, EventLogStore, TimeoutStore, CursorStore, LeaseStore, RetentionStore,
    TaskStore
{
    /// The store's own metrics (the MariaDB store: transactions retried, by cause), read
    /// without a query; appended to the engine's.
    var metricFamilies: [MetricFamily] { get }
}

extension WorkflowStore {
    public var metricFamilies: [MetricFamily] { [] }
}

// MARK: - Records

/// A scheduled operation to create together with a change of a run.
public struct NewTimeout: Sendable, Equatable {
    public var kind: TimeoutKind
    /// The status the run must still be in when the timeout fires.
    public var status: Int
    public var expireAt: Timestamp
    /// For retries: the attempt this retry will be (1 = first retry).
    public var attempt: Int

    public init(kind: TimeoutKind, status: Int, expireAt: Timestamp, attempt: Int = 0) {
        self.kind = kind
        self.status = status
        self.expireAt = expireAt
        self.attempt = attempt
    }
}

public enum TimeoutKind: Int, Sendable, Codable {
    /// A workflow deadline: "leave this status by then, or else".
    case timeout = 1
    /// A durable retry of a step that threw.
    case retry = 2
}

/// A run to create: the record, its first outbox row, and any timeouts of its first status.
public struct NewRun: Sendable {
    public var run: Run
    public var timeouts: [NewTimeout]
    /// The first status is external: open its task (free at once) in the same transaction.
    public var opensTask: Bool

    public init(run: Run, timeouts: [NewTimeout] = [], opensTask: Bool = false) {
        self.run = run
        self.timeouts = timeouts
        self.opensTask = opensTask
    }
}

public enum CreateRunResult: Sendable, Equatable {
    case created(Run)
    /// An unfinished run for the same (workflow, foreign id) already existed.
    case existing(Run)

    public var run: Run {
        switch self {
        case .created(let r), .existing(let r): r
        }
    }
}

/// A conditional change of one run: applied only while the stored version is `expectedVersion`.
/// `run` is the run as it will be: its `version` is `expectedVersion + 1` for a change that
/// emits an event, and stays `expectedVersion` for a bookkeeping change that emits none (a
/// retry's failure count in `meta`), so event versions are exactly the run's versions 1…N.
public struct RunUpdate: Sendable {
    public var run: Run
    public var expectedVersion: Int64
    /// Cancel the run's pending timeouts and retries (done when the run leaves a status or
    /// stops running), in the same transaction.
    public var cancelPendingTimeouts: Bool
    /// Timeouts to create for the status the run enters.
    public var newTimeouts: [NewTimeout]
    /// Mark this timeout completed in the same transaction; if it is no longer pending, the
    /// whole update is refused (a timeout fires at most once).
    public var completesTimeout: Int64?
    /// Write an outbox row for this change (and raise the version). Only meta-only changes (a
    /// retry counter) skip both.
    public var emitsEvent: Bool
    /// What happens to the task of the step at `expectedVersion` (the run waits in an external
    /// status): closed because the run moves on, or answered by a worker under a claim, in
    /// which case the whole update is refused unless that claim is still the task's own.
    public var closesTask: TaskClose?
    /// The run enters (or is resumed in) an external status: open the task of `run.version`.
    public var opensTask: Bool
    /// With `opensTask`: the task goes straight to a worker of this instance, claimed (claim 1)
    /// by `holder` until `deadline`, in the same transaction — no claim round trip after it.
    public var opensHeld: TaskHold?

    public init(
        run: Run, expectedVersion: Int64, cancelPendingTimeouts: Bool = false,
        newTimeouts: [NewTimeout] = [], completesTimeout: Int64? = nil, emitsEvent: Bool = true,
        closesTask: TaskClose? = nil, opensTask: Bool = false
    ) {
        precondition(
            emitsEvent ? run.version == expectedVersion + 1 : run.version == expectedVersion,
            "a RunUpdate raises the version by one exactly when it emits an event")
        precondition(!opensTask || emitsEvent, "a task is opened only by a change with an event")
        self.run = run
        self.expectedVersion = expectedVersion
        self.cancelPendingTimeouts = cancelPendingTimeouts
        self.newTimeouts = newTimeouts
        self.completesTimeout = completesTimeout
        self.emitsEvent = emitsEvent
        self.closesTask = closesTask
        self.opensTask = opensTask
        self.opensHeld = nil
    }

    /// The claim this update is conditional on (a worker's `complete` or `fail`), if any.
    public var taskClaim: TaskClaim? {
        switch closesTask {
        case .complete(let claim)?, .retry(let claim, _, _)?:
            TaskClaim(runID: run.runID, version: expectedVersion, claim: claim)
        case .withdraw?, nil: nil
        }
    }
}

public enum UpdateOutcome: Sendable, Equatable {
    case applied
    /// The run was not at the expected version (or is gone, or the timeout already fired).
    case conflict
}

public enum SortOrder: String, Sendable {
    case ascending = "asc"
    case descending = "desc"
}

/// Position in a listing: the last row of the previous page. Keyset pagination over
/// (created_at, run_id) is stable under concurrent inserts: every row that exists for the
/// whole walk is visited exactly once.
public struct RunCursor: Sendable, Equatable, Hashable {
    public var createdAt: Timestamp
    public var runID: String
    public init(createdAt: Timestamp, runID: String) {
        self.createdAt = createdAt
        self.runID = runID
    }
}

public struct RunQuery: Sendable {
    public var workflow: String?
    public var foreignIDs: [String]
    public var statuses: [Int]
    public var runStates: [RunState]
    /// Inclusive lower bound on created_at.
    public var createdAfter: Timestamp?
    /// Exclusive upper bound on created_at.
    public var createdBefore: Timestamp?
    public var order: SortOrder
    public var limit: Int
    public var after: RunCursor?

    public init(
        workflow: String? = nil, foreignIDs: [String] = [], statuses: [Int] = [], runStates: [RunState] = [],
        createdAfter: Timestamp? = nil, createdBefore: Timestamp? = nil, order: SortOrder = .ascending,
        limit: Int = 25, after: RunCursor? = nil
    ) {
        self.workflow = workflow
        self.foreignIDs = foreignIDs
        self.statuses = statuses
        self.runStates = runStates
        self.createdAfter = createdAfter
        self.createdBefore = createdBefore
        self.order = order
        self.limit = limit
        self.after = after
    }
}

public struct RunPage: Sendable {
    public var runs: [Run]
    /// nil at the end.
    public var next: RunCursor?
    public init(runs: [Run], next: RunCursor?) {
        self.runs = runs
        self.next = next
    }
}

/// Where the events of a write go.
public enum EventRoute: Sendable {
    /// Outbox rows, moved into the log later by the relay (in their own transaction).
    case outbox
    /// Straight into the log, in the write's own transaction: first the outbox rows still
    /// pending (other instances' changes, or this one's from a backlog), then this write's
    /// events, numbered on from the log's head — so a run's events keep their order. Only for
    /// the holder of the `relay` lease, one such append at a time: the store takes the `turn`
    /// after the write's other statements, right before it appends (so writes overlap until
    /// then), and the caller gives it back after the commit. If the head the turn knows is
    /// stale, the insert meets a duplicate `seq` and the transaction is tried again with the head
    /// read. If many rows are pending, or the turn says the lease is gone, the write uses the
    /// outbox.
    case log(LogTurn)
}

/// One write's turn at appending to the log (see `EventRoute.log`). Used by one write at a
/// time: its transaction (which may run again after a deadlock) and then its caller.
public final class LogTurn: @unchecked Sendable {
    /// What the store may assume once it holds the turn.
    public struct Grant: Sendable, Equatable {
        /// The log's head as the previous appender left it (nil: read it).
        public var knownHead: Int64?
        /// No outbox row is pending (every write since the outbox was last drained went to the
        /// log, and no other instance writes): the pending rows need not be looked for.
        public var outboxEmpty: Bool
        public init(knownHead: Int64?, outboxEmpty: Bool) {
            self.knownHead = knownHead
            self.outboxEmpty = outboxEmpty
        }
    }

    private let takeBlocking: @Sendable () -> Grant?
    private let takeAsync: @Sendable () async -> Grant?
    /// Set once the turn was taken (nil: not taken, or refused).
    public private(set) var grant: Grant?
    public private(set) var taken = false

    /// `blocking` is for a database thread (it may wait for the previous appender); `async`
    /// for a store whose writes run on Swift's concurrency pool. Either returns nil when the
    /// write must use the outbox after all.
    public init(blocking: @escaping @Sendable () -> Grant?, async: @escaping @Sendable () async -> Grant?) {
        self.takeBlocking = blocking
        self.takeAsync = `async`
    }

    /// A turn that is granted at once (tests of stores).
    public static func granted(knownHead: Int64? = nil, outboxEmpty: Bool = false) -> LogTurn {
        let g = Grant(knownHead: knownHead, outboxEmpty: outboxEmpty)
        return LogTurn(blocking: { g }, async: { g })
    }

    /// Takes the turn from a database thread (waiting for it); later calls return the same grant.
    public func take() -> Grant? {
        if !taken {
            grant = takeBlocking()
            taken = true
        }
        return grant
    }

    public func takeAsync() async -> Grant? {
        if !taken {
            grant = await takeAsync()
            taken = true
        }
        return grant
    }

    /// The store read or moved the head (nil: unknown after a failed append).
    public func headMoved(to head: Int64?) { grant?.knownHead = head }
}

/// A write and the events it appended to the log (empty on the outbox route), in `seq` order.
public struct Written<Value: Sendable>: Sendable {
    public var value: Value
    public var appended: [WorkflowEvent]
    public init(_ value: Value, appended: [WorkflowEvent] = []) {
        self.value = value
        self.appended = appended
    }
}

public protocol RecordStore: Sendable {
    /// Inserts the run and its outbox row in one transaction. If an unfinished run exists for
    /// the same (workflow, foreign id) — the database refuses a second — returns that one.
    func create(_ new: NewRun) async throws -> CreateRunResult
    /// Creates several runs in one transaction, each as `create(_:)` would (a run whose foreign
    /// id has an unfinished run gives `.existing`), results in the same order. Throws if the
    /// transaction fails as a whole; the caller may then create the runs one by one.
    func create(batch: [NewRun]) async throws -> [CreateRunResult]
    /// Applies each update conditionally on its version, writing its outbox row and timeout
    /// changes in the same transaction. Many updates go in one transaction; if that transaction
    /// fails for a reason other than a version conflict, each is retried on its own, so one bad
    /// run cannot fail the others. Outcomes are in the order of `updates`.
    func update(_ updates: [RunUpdate]) async throws -> [UpdateOutcome]
    /// `update` with its events on `route`.
    func update(_ updates: [RunUpdate], route: EventRoute) async throws -> Written<[UpdateOutcome]>
    /// `create(batch:)` with the new runs' events on `route`.
    func create(batch: [NewRun], route: EventRoute) async throws -> Written<[CreateRunResult]>
    func lookup(runID: String) async throws -> Run?
    func lookup(runIDs: [String]) async throws -> [Run]
    /// The most recently created run for (workflow, foreign id).
    func latest(workflow: String, foreignID: String) async throws -> Run?
    func list(_ query: RunQuery) async throws -> RunPage
}

// MARK: - Outbox and event log

public struct OutboxRow: Sendable, Equatable {
    public var id: Int64
    public var data: EventData
    public var createdAt: Timestamp
    public init(id: Int64, data: EventData, createdAt: Timestamp) {
        self.id = id
        self.data = data
        self.createdAt = createdAt
    }
}

public struct OutboxStats: Sendable, Equatable {
    public var pending: Int
    public var oldest: Timestamp?
    public init(pending: Int, oldest: Timestamp?) {
        self.pending = pending
        self.oldest = oldest
    }
}

public protocol EventLogStore: Sendable {
    /// Outbox rows in creation order.
    func outboxBatch(limit: Int) async throws -> [OutboxRow]
    /// Deletes outbox rows; returns how many were deleted.
    @discardableResult func deleteOutbox(ids: [Int64]) async throws -> Int
    func outboxStats() async throws -> OutboxStats
    /// Appends events with the next `seq` values; concurrent appenders never leave a gap nor
    /// share a `seq` (a loser gets an error and appends nothing). Returns the stored events.
    func append(_ events: [EventData]) async throws -> [WorkflowEvent]
    /// The relay's step: in one transaction, moves up to `limit` outbox rows, in creation order,
    /// into the event log with the next `seq` values and deletes them. Returns what it appended.
    func relay(limit: Int) async throws -> [WorkflowEvent]
    /// Events with `seq > after` matching `filter`, in `seq` order.
    func events(after: Int64, filter: EventFilter, limit: Int) async throws -> [WorkflowEvent]
    /// Every event of one run, in `seq` order.
    func history(runID: String) async throws -> [WorkflowEvent]
    /// The highest `seq` in the log (0 when empty).
    func head() async throws -> Int64
}

// MARK: - Timeouts

public struct TimeoutRecord: Sendable, Equatable {
    public var id: Int64
    public var workflow: String
    public var foreignID: String
    public var runID: String
    public var kind: TimeoutKind
    public var status: Int
    public var attempt: Int
    public var expireAt: Timestamp
    public var createdAt: Timestamp
    public var completed: Bool
    public var cancelled: Bool

    public init(
        id: Int64, workflow: String, foreignID: String, runID: String, kind: TimeoutKind, status: Int,
        attempt: Int, expireAt: Timestamp, createdAt: Timestamp, completed: Bool = false, cancelled: Bool = false
    ) {
        self.id = id
        self.workflow = workflow
        self.foreignID = foreignID
        self.runID = runID
        self.kind = kind
        self.status = status
        self.attempt = attempt
        self.expireAt = expireAt
        self.createdAt = createdAt
        self.completed = completed
        self.cancelled = cancelled
    }
}

public protocol TimeoutStore: Sendable {
    @discardableResult
    func createTimeout(for run: Run, _ timeout: NewTimeout, now: Timestamp) async throws -> Int64
    /// Marks a pending timeout completed; false if it was not pending.
    func completeTimeout(id: Int64) async throws -> Bool
    /// Marks a pending timeout cancelled; false if it was not pending.
    func cancelTimeout(id: Int64) async throws -> Bool
    /// Pending (neither completed nor cancelled) timeouts with `expireAt <= now`, in insertion order.
    func dueTimeouts(now: Timestamp, limit: Int) async throws -> [TimeoutRecord]
    /// The earliest `expireAt` of a pending timeout after `now`, if any.
    func nextTimeout(after now: Timestamp) async throws -> Timestamp?
    /// Every timeout of a run, in insertion order.
    func timeouts(runID: String) async throws -> [TimeoutRecord]
}

// MARK: - Cursors and leases

public protocol CursorStore: Sendable {
    /// The last `seq` the consumer finished (0 if it never ran).
    func cursor(_ name: String) async throws -> Int64
    func setCursor(_ name: String, to seq: Int64) async throws
}

public struct Lease: Sendable, Equatable {
    public var name: String
    public var holder: String
    public var expiresAt: Timestamp
    /// Grows by one each time the lease changes hands: a fencing token.
    public var generation: Int64
    public init(name: String, holder: String, expiresAt: Timestamp, generation: Int64) {
        self.name = name
        self.holder = holder
        self.expiresAt = expiresAt
        self.generation = generation
    }
}

public protocol LeaseStore: Sendable {
    /// Takes the lease if it is free or expired, or renews it if `holder` has it.
    /// Returns the lease on success, nil if someone else holds it.
    func acquireLease(_ name: String, holder: String, now: Timestamp, ttlMilliseconds: Int64) async throws -> Lease?
    /// Gives the lease up if `holder` has it.
    @discardableResult func releaseLease(_ name: String, holder: String) async throws -> Bool
    func lease(_ name: String) async throws -> Lease?
    /// Every lease row (a few dozen: roles, member slots, consumer partitions).
    func leases() async throws -> [Lease]
    /// Renews or takes each of `names` for `holder` (one that another holder keeps alive is not
    /// taken) until `now + ttl`; returns the names `holder` holds afterwards.
    func acquireLeases(_ names: [String], holder: String, now: Timestamp, ttlMilliseconds: Int64) async throws -> Set<String>
    /// Gives up those of `names` that `holder` has.
    func releaseLeases(_ names: [String], holder: String) async throws
}

// MARK: - Retention

/// How far event retention may go: the log is deleted from its start up to (not including)
/// `keepFrom`, so what is kept is always one unbroken range of `seq` ending at the newest event.
public struct EventPruneBound: Sendable, Equatable {
    /// Why the log is kept from `keepFrom` on.
    public enum Reason: Sendable, Equatable {
        /// The event at `keepFrom` is not older than the cutoff.
        case age
        /// The newest event is always kept: the relay numbers the next event after it.
        case newest
        /// This consumer has not finished the events from `keepFrom` on.
        case cursor(String)
    }

    /// The lowest `seq` in the log; nil when the log is empty.
    public var earliest: Int64?
    /// The first `seq` to keep.
    public var keepFrom: Int64
    public var reason: Reason

    public init(earliest: Int64?, keepFrom: Int64, reason: Reason) {
        self.earliest = earliest
        self.keepFrom = keepFrom
        self.reason = reason
    }

    /// How many events retention may delete (the log has no gaps, so this is a difference).
    public var deletable: Int64 { earliest.map { max(0, keepFrom - $0) } ?? 0 }
}

/// Deleting old data: finished runs (with their timeouts, optionally archived first) and the
/// oldest events. Every call is one short transaction (or one statement) over an index range.
public protocol RetentionStore: Sendable {
    /// The lowest `seq` still in the event log; nil when it is empty.
    func earliestSeq() async throws -> Int64?
    /// How many runs `pruneRuns(updatedBefore:…)` would delete now: runs in a
    /// `RunState.prunable` state whose `updated_at` is before the cutoff and before the oldest
    /// pending outbox row (a run whose change is still waiting for the relay is kept).
    func prunableRuns(updatedBefore cutoff: Timestamp) async throws -> Int
    /// Deletes up to `limit` of those runs and their timeouts in one transaction; with
    /// `archivedAt`, copies them into `workflow_records_archive` first in the same
    /// transaction. Outbox rows are never touched. Returns how many runs were deleted.
    func pruneRuns(updatedBefore cutoff: Timestamp, archivedAt: Timestamp?, limit: Int) async throws -> Int
    /// Where event retention for `cutoff` must stop: at the first event not older than it, the
    /// newest event, or the lowest consumer cursor + 1, whichever comes first.
    func eventPruneBound(before cutoff: Timestamp) async throws -> EventPruneBound
    /// Deletes up to `limit` of the oldest events with `seq < below`; returns how many.
    func deleteEvents(below: Int64, limit: Int) async throws -> Int
}

extension RecordStore {
    /// Stores that cannot append in a write's transaction use the outbox.
    public func update(_ updates: [RunUpdate], route: EventRoute) async throws -> Written<[UpdateOutcome]> {
        Written(try await update(updates))
    }

    public func create(batch: [NewRun], route: EventRoute) async throws -> Written<[CreateRunResult]> {
        Written(try await create(batch: batch))
    }

    public func update(_ updates: [RunUpdate]) async throws -> [UpdateOutcome] {
        try await update(updates, route: .outbox).value
    }

    /// One transaction per run: for stores without a batched create.
    public func create(batch: [NewRun]) async throws -> [CreateRunResult] {
        var results: [CreateRunResult] = []
        for n in batch { results.append(try await create(n)) }
        return results
    }
}
