/// What the server (and any other front end) asks of the engine. `WorkflowEngine` implements
/// it against a `WorkflowStore`; the server knows nothing else about the engine.
///
/// Errors thrown are `WorkflowError`s; their `code` maps one to one onto the protocol's error
/// codes (NOT_FOUND, INVALID_STATE, UNAVAILABLE, BAD_REQUEST, ...).
public protocol WorkflowService: Sendable {
    /// The workflows this instance runs, for `hello` and `graph`.
    var workflows: [WorkflowDescription] { get }

    /// Starts a run for (workflow, foreign id); while one is unfinished, returns it (`.existing`).
    func trigger(workflow: String, foreignID: String, object: [UInt8]) async throws -> CreateRunResult
    func run(id: String) async throws -> Run?
    /// The run as of `version` if this instance committed that version recently; memory only,
    /// no database call (nil when unknown: read it with `run(id:)`).
    func recentRun(id: String, version: Int64) -> Run?
    func latestRun(workflow: String, foreignID: String) async throws -> Run?
    func list(_ query: RunQuery) async throws -> RunPage
    /// The run's events; waits (briefly) for the relay until the log holds the run's current
    /// version, so a reader sees its own writes.
    func history(runID: String) async throws -> [WorkflowEvent]
    /// The run's events already in the log, without waiting for the relay: for a reader that
    /// also listens to live events (registered before this call), which bring the rest.
    func loggedHistory(runID: String) async throws -> [WorkflowEvent]
    /// Pause, resume, cancel or delete-data under the version check; throws INVALID_STATE when
    /// the run state does not allow it, NOT_FOUND when there is no such run.
    func control(_ command: RunCommand, runID: String, reason: String?) async throws -> Run

    /// Events after `seq` that match, in `seq` order (catch-up reads for subscriptions); `GONE`
    /// (`WorkflowError.gone`) when retention already deleted `seq + 1`.
    func events(after seq: Int64, filter: EventFilter, limit: Int) async throws -> [WorkflowEvent]
    /// The newest `seq` in the event log.
    func head() async throws -> Int64
    /// The lowest `seq` the event log still keeps (retention deletes from the start); nil when
    /// it is empty.
    func earliestSeq() async throws -> Int64?
    /// Registers a callback that receives every event of the log, in `seq` order, as soon as it
    /// is known to this instance (at once after the local relay commits; by polling otherwise).
    /// Called on an engine thread: the callee must hand the events off quickly and not block.
    /// Events may arrive in several calls but never out of order, never twice.
    func addEventListener(_ listener: @escaping @Sendable ([WorkflowEvent]) -> Void) -> EventListenerToken
    func removeEventListener(_ token: EventListenerToken)

    // External steps (workers and callbacks).

    /// Registers a worker of an external status; `offer` receives its tasks on an engine thread
    /// (hand them off quickly), none before `setWorkerReady(_:true)`. Throws BAD_REQUEST naming
    /// `status` when the status is not external, NOT_FOUND for an unknown workflow.
    func addWorker(_ spec: WorkerSpec, offer: @escaping @Sendable ([ExternalTask]) -> Void) throws -> WorkerToken
    /// Whether the worker's connection takes task frames now (flow control).
    func setWorkerReady(_ token: WorkerToken, _ ready: Bool)
    /// The worker is gone (`unwork`, its connection closed): its tasks are offered again.
    func removeWorker(_ token: WorkerToken)
    /// A worker's answer; see `WorkflowEngine.complete`.
    func complete(task: String, status: Int, object: [UInt8]?, reason: String?) async throws -> Run
    func fail(task: String, error: String) async throws -> WorkflowEngine.TaskFailure
    func extend(task: String, leaseMilliseconds: Int64?) async throws -> Timestamp
    func callback(runID: String, status: Int, next: Int, object: [UInt8]?, reason: String?) async throws -> Run

    func stats() async throws -> EngineStats
    func health() async -> HealthReport
    /// The engine's metrics (counts read from the store, counters kept in memory), for the
    /// `metrics` op and the HTTP endpoint.
    func metrics() async throws -> [MetricFamily]
}

extension WorkflowService {
    public func metrics() async throws -> [MetricFamily] { [] }
    public func addWorker(_ spec: WorkerSpec, offer: @escaping @Sendable ([ExternalTask]) -> Void) throws -> WorkerToken {
        throw WorkflowError(.badRequest, "status: this service has no external steps")
    }
    public func setWorkerReady(_ token: WorkerToken, _ ready: Bool) {}
    public func removeWorker(_ token: WorkerToken) {}
    public func complete(task: String, status: Int, object: [UInt8]?, reason: String?) async throws -> Run {
        throw WorkflowError(.notFound, "no task '\(task)'")
    }
    public func fail(task: String, error: String) async throws -> WorkflowEngine.TaskFailure {
        throw WorkflowError(.notFound, "no task '\(task)'")
    }
    public func extend(task: String, leaseMilliseconds: Int64?) async throws -> Timestamp {
        throw WorkflowError(.notFound, "no task '\(task)'")
    }
    public func callback(runID: String, status: Int, next: Int, object: [UInt8]?, reason: String?) async throws -> Run {
        throw WorkflowError(.badRequest, "status: this service has no external steps")
    }
    public func recentRun(id: String, version: Int64) -> Run? { nil }
    public func loggedHistory(runID: String) async throws -> [WorkflowEvent] { try await history(runID: runID) }
    /// Services without retention keep every event: the log starts at 1 when it has any.
    public func earliestSeq() async throws -> Int64? { try await head() > 0 ? 1 : nil }
}

public struct EventListenerToken: Hashable, Sendable {
    public let id: Int
    public init(id: Int) { self.id = id }
}

/// Commands that change only a run's run state (and reason).
public enum RunCommand: String, Sendable, CaseIterable {
    case pause
    case resume
    case cancel
    case deleteData = "delete_data"
}

public struct StatusDescription: Sendable, Equatable {
    public var name: String
    public var code: Int
    public var terminal: Bool
    /// Its step is done by another program (a worker or a callback).
    public var external: Bool
    public init(name: String, code: Int, terminal: Bool, external: Bool = false) {
        self.name = name
        self.code = code
        self.terminal = terminal
        self.external = external
    }
}

public struct WorkflowDescription: Sendable, Equatable {
    public var name: String
    public var statuses: [StatusDescription]
    /// Allowed transitions (from code → to codes), for `graph`.
    public var transitions: [Int: [Int]]
    public var initialStatus: Int
    public init(name: String, statuses: [StatusDescription], transitions: [Int: [Int]], initialStatus: Int) {
        self.name = name
        self.statuses = statuses
        self.transitions = transitions
        self.initialStatus = initialStatus
    }

    public func status(named name: String) -> StatusDescription? { statuses.first { $0.name == name } }
    public func status(code: Int) -> StatusDescription? { statuses.first { $0.code == code } }
}

public struct ConsumerLag: Sendable, Equatable {
    public var name: String
    public var cursor: Int64
    public var lag: Int64
    public init(name: String, cursor: Int64, lag: Int64) {
        self.name = name
        self.cursor = cursor
        self.lag = lag
    }
}

public struct EngineStats: Sendable, Equatable {
    /// workflow → status code → count
    public var byStatus: [String: [Int: Int]]
    /// workflow → run state → count
    public var byRunState: [String: [RunState: Int]]
    public var outbox: OutboxStats
    public var head: Int64
    public var consumers: [ConsumerLag]
    /// Per external status: runs waiting, tasks held, workers here.
    public var external: [ExternalStatusStats]
    public init(
        byStatus: [String: [Int: Int]], byRunState: [String: [RunState: Int]], outbox: OutboxStats, head: Int64,
        consumers: [ConsumerLag], external: [ExternalStatusStats] = []
    ) {
        self.byStatus = byStatus
        self.byRunState = byRunState
        self.outbox = outbox
        self.head = head
        self.consumers = consumers
        self.external = external
    }
}

public struct HealthCheck: Sendable, Equatable {
    public var ok: Bool
    public var detail: String
    public init(ok: Bool, detail: String) {
        self.ok = ok
        self.detail = detail
    }
}

public struct HealthReport: Sendable, Equatable {
    public var checks: [String: HealthCheck]
    public var healthy: Bool { checks.values.allSatisfy(\.ok) }
    public init(checks: [String: HealthCheck]) { self.checks = checks }
}
