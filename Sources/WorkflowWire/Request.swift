/// One decoded request: its `id` (if given) and its operation with validated arguments.
public struct Request: Sendable, Equatable {
    public var id: RequestID?
    public var operation: Operation

    public init(id: RequestID?, operation: Operation) {
        self.id = id
        self.operation = operation
    }
}

/// Every operation of protocol version 1, with arguments checked for presence, type and range.
/// Names of statuses are kept as given (`StatusRef`): they are resolved against the workflow
/// definitions by the server, which knows them.
public enum Operation: Sendable, Equatable {
    case hello
    case ping
    /// `submit`: `order` as compact JSON bytes (numbers exactly as sent); `orderID` is `order.id`.
    case submit(orderID: String, order: [UInt8])
    case trigger(workflow: String, foreignID: String, object: [UInt8])
    case get(RunRef)
    case list(ListArguments)
    case history(RunRef)
    case awaitStatus(AwaitArguments)
    case subscribe(SubscribeArguments)
    case unsubscribe(sub: Int64)
    case control(ControlCommand, RunRef, reason: String?)
    case stats
    case graph(workflow: String)
    case health
    /// Prometheus text of the server's and the engine's metrics (an addition to PROTOCOL.md).
    case metrics
    /// External steps: a worker of an external status; its tasks follow as pushed frames.
    case work(WorkArguments)
    case complete(CompleteArguments)
    case fail(task: String, error: String)
    case extend(task: String, leaseMilliseconds: Int?)
    case unwork(worker: Int64)
    case callback(CallbackArguments)

    /// The `op` name on the wire.
    public var name: String {
        switch self {
        case .hello: "hello"
        case .ping: "ping"
        case .submit: "submit"
        case .trigger: "trigger"
        case .get: "get"
        case .list: "list"
        case .history: "history"
        case .awaitStatus: "await"
        case .subscribe: "subscribe"
        case .unsubscribe: "unsubscribe"
        case .control(let c, _, _): c.rawValue
        case .stats: "stats"
        case .graph: "graph"
        case .health: "health"
        case .metrics: "metrics"
        case .work: "work"
        case .complete: "complete"
        case .fail: "fail"
        case .extend: "extend"
        case .unwork: "unwork"
        case .callback: "callback"
        }
    }

    /// Every op name the server knows.
    public static let names: [String] = [
        "hello", "ping", "submit", "trigger", "get", "list", "history", "await", "subscribe", "unsubscribe",
        "pause", "resume", "cancel", "delete_data", "stats", "graph", "health", "metrics", "work", "complete", "fail",
        "extend", "unwork", "callback",
    ]
}

/// The built-in workflow, the default wherever a request may name a workflow.
public let defaultWorkflow = "order-processor"

/// Which run a request is about.
public enum RunRef: Sendable, Equatable, Hashable {
    case runID(String)
    /// The latest run of (workflow, foreign id).
    case foreignID(workflow: String, foreignID: String)
}

/// A status given by name or by integer code.
public enum StatusRef: Sendable, Equatable, Hashable {
    case name(String)
    case code(Int)
}

public enum ControlCommand: String, Sendable, Equatable, CaseIterable {
    case pause
    case resume
    case cancel
    case deleteData = "delete_data"
}

public enum SortDirection: String, Sendable, Equatable {
    case asc
    case desc
}

public struct ListArguments: Sendable, Equatable {
    public var workflow: String?
    public var statuses: [StatusRef] = []
    /// Run-state codes (1...7).
    public var runStates: [Int] = []
    public var foreignIDs: [String] = []
    /// Inclusive lower bound, milliseconds since the epoch.
    public var createdAfter: Int64?
    /// Exclusive upper bound, milliseconds since the epoch.
    public var createdBefore: Int64?
    public var order: SortDirection = .asc
    /// 1...1000, default 25.
    public var limit: Int = 25
    public var cursor: ListCursor?

    public init() {}
}

/// The position after the last run of a page: keyset (created_at, run_id). On the wire it is
/// an opaque string; clients pass back what `next_cursor` said.
public struct ListCursor: Sendable, Equatable, Hashable {
    public var createdAt: Int64
    public var runID: String

    public init(createdAt: Int64, runID: String) {
        self.createdAt = createdAt
        self.runID = runID
    }

    /// `<milliseconds>:<run_id>`
    public var text: String { "\(createdAt):\(runID)" }

    public init?(text: String) {
        guard let colon = text.firstIndex(of: ":"), let ms = Int64(text[..<colon]) else { return nil }
        let rest = text[text.index(after: colon)...]
        guard !rest.isEmpty else { return nil }
        self.createdAt = ms
        self.runID = String(rest)
    }
}

public struct AwaitArguments: Sendable, Equatable {
    public var run: RunRef
    /// Empty: any terminal status of the run's workflow.
    public var statuses: [StatusRef]
    /// 0...3_600_000, default 30_000.
    public var timeoutMilliseconds: Int

    public static let defaultTimeoutMilliseconds = 30_000
    public static let maxTimeoutMilliseconds = 3_600_000

    public init(run: RunRef, statuses: [StatusRef] = [], timeoutMilliseconds: Int = defaultTimeoutMilliseconds) {
        self.run = run
        self.statuses = statuses
        self.timeoutMilliseconds = timeoutMilliseconds
    }
}

public enum SubscribeFrom: Sendable, Equatable {
    case now
    case earliest
    /// Events with `seq` greater than this.
    case seq(Int64)
}

public struct SubscribeArguments: Sendable, Equatable {
    public var from: SubscribeFrom = .now
    public var workflow: String?
    public var foreignID: String?
    public var runID: String?
    public var statuses: [StatusRef] = []
    public var runStates: [Int] = []

    public init() {}
}

/// The run states of the protocol, with the seed's integer codes.
public enum RunStateName {
    public static let all: [(name: String, code: Int)] = [
        ("Initiated", 1), ("Running", 2), ("Paused", 3), ("Cancelled", 4), ("Completed", 5), ("DataDeleted", 6),
        ("RequestedDataDeleted", 7),
    ]

    public static func code(named name: String) -> Int? { all.first { $0.name == name }?.code }
    public static func name(code: Int) -> String? { all.first { $0.code == code }?.name }
}

/// `work`: the external status a worker does, how many unanswered tasks it takes at once, and how
/// long an offer lasts.
public struct WorkArguments: Sendable, Equatable {
    public var workflow: String
    public var status: StatusRef
    /// 1...1000, default 1.
    public var maxInFlight: Int
    /// 1000...3_600_000, default 30_000.
    public var leaseMilliseconds: Int

    public static let defaultLeaseMilliseconds = 30_000
    public static let leaseRange = 1_000...3_600_000

    public init(workflow: String = defaultWorkflow, status: StatusRef, maxInFlight: Int = 1, leaseMilliseconds: Int = defaultLeaseMilliseconds) {
        self.workflow = workflow
        self.status = status
        self.maxInFlight = maxInFlight
        self.leaseMilliseconds = leaseMilliseconds
    }
}

/// `complete`: a worker's answer to a task.
public struct CompleteArguments: Sendable, Equatable {
    public var task: String
    /// The next status: one the step declares.
    public var status: StatusRef
    /// Replaces the run's object (compact JSON bytes); nil keeps it.
    public var object: [UInt8]?
    public var reason: String?

    public init(task: String, status: StatusRef, object: [UInt8]? = nil, reason: String? = nil) {
        self.task = task
        self.status = status
        self.object = object
        self.reason = reason
    }
}

/// `callback`: moves a run that waits in an external status, without a task.
public struct CallbackArguments: Sendable, Equatable {
    public var run: RunRef
    /// The external status the run must be in.
    public var status: StatusRef
    /// Where it goes: one the step declares.
    public var next: StatusRef
    public var object: [UInt8]?
    public var reason: String?

    public init(run: RunRef, status: StatusRef, next: StatusRef, object: [UInt8]? = nil, reason: String? = nil) {
        self.run = run
        self.status = status
        self.next = next
        self.object = object
        self.reason = reason
    }
}
