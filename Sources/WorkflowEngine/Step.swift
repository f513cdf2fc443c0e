/// What a step function receives: the run as it was read, and the time the engine started it.
public struct StepInput: Sendable {
    public var run: Run
    public var now: Timestamp
    /// 0 on the first attempt at this version, n on the n-th durable retry.
    public var attempt: Int

    public init(run: Run, now: Timestamp, attempt: Int = 0) {
        self.run = run
        self.now = now
        self.attempt = attempt
    }

    public var runID: String { run.runID }
    public var foreignID: String { run.foreignID }
    public var version: Int64 { run.version }
    public var object: [UInt8] { run.object }

    /// A key for calls to the outside world (a payment gateway, a mail service). A step may run
    /// more than once for the same version (at-least-once, guarantee 3), never for two versions
    /// with the same key, so passing this along lets the other side deduplicate.
    public var idempotencyKey: String { "\(run.runID):\(run.version)" }
}

/// What a step decides: the next status, optionally a new object and a reason.
///
/// Failure statuses are ordinary results (`.next(rejected, reason: "no items")`); only a thrown
/// error means "try again later" (a durable retry with back-off).
public struct StepResult: Sendable, Equatable {
    public var status: Int
    /// The new object; nil keeps the run's object unchanged.
    public var object: [UInt8]?
    /// Why (for failure statuses); stored on the run and in the event.
    public var reason: String?

    public init(status: Int, object: [UInt8]? = nil, reason: String? = nil) {
        self.status = status
        self.object = object
        self.reason = reason
    }

    public static func next(_ status: Int, object: [UInt8]? = nil, reason: String? = nil) -> StepResult {
        StepResult(status: status, object: object, reason: reason)
    }
}

public typealias StepFunction = @Sendable (StepInput) async throws -> StepResult
/// Called after a change of the run state committed (see `WorkflowBuilder.onRunState`).
public typealias RunStateHook = @Sendable (Run) async -> Void
/// Returns the object with its personal data removed.
public typealias EraseFunction = @Sendable ([UInt8]) throws -> [UInt8]

/// Who does a status's step.
public enum StepKind: Sendable {
    /// A function run by the engine (at least once per version; guarantee 3).
    case function(StepFunction)
    /// Another program: the run waits in the status while a task is offered to one worker at a
    /// time (`TaskBroker`), or until a callback moves it. The worker's answer is applied as a
    /// transition under the same version check as a function's result.
    case external
}

/// A status's step: who does it and the statuses it may return.
public struct StepDefinition: Sendable {
    public var from: Int
    public var allowedNext: [Int]
    public var kind: StepKind

    public var isExternal: Bool {
        switch kind {
        case .function: false
        case .external: true
        }
    }
}

/// Checks an object a client hands in (a worker's `complete`, a `callback`) before it replaces a
/// run's object; throws a message that names what is wrong.
public typealias ObjectCheck = @Sendable (_ object: [UInt8], _ run: Run) throws -> Void

/// A deadline: if the run is still in `status` `afterMilliseconds` after entering it (or after
/// being resumed in it), `handler` decides where it goes (one of `allowedNext`).
public struct TimeoutDefinition: Sendable {
    public var status: Int
    public var afterMilliseconds: Int64
    public var allowedNext: [Int]
    public var handler: StepFunction
}
