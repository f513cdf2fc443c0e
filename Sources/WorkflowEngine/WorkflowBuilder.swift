/// Builds a `WorkflowDefinition` and checks it whole: `build()` lists every problem at once.
///
/// ```swift
/// var b = WorkflowBuilder(name: "order-processor")
/// b.status("OrderCreated", code: 1)
/// b.status("OrderRejected", code: 6, terminal: true)
/// b.initial(1)
/// b.step(from: 1, to: [2, 6]) { input in ... }
/// b.timeout(in: 2, after: 30_000, to: 7, reason: "timed out")
/// let definition = try b.build()
/// ```
public struct WorkflowBuilder: Sendable {
    public let name: String
    private var statuses: [WorkflowStatus] = []
    private var initialStatus: Int?
    private var steps: [StepDefinition] = []
    private var timeouts: [TimeoutDefinition] = []
    private var hooks: [RunState: [RunStateHook]] = [:]
    private var erase: EraseFunction?
    private var objectCheck: ObjectCheck?

    public init(name: String) { self.name = name }

    public mutating func status(_ name: String, code: Int, terminal: Bool = false) {
        statuses.append(WorkflowStatus(name: name, code: code, terminal: terminal))
    }

    /// The status a new run starts in.
    public mutating func initial(_ code: Int) { initialStatus = code }

    /// The step that moves a run out of `from`; it may return only the statuses in `to`.
    public mutating func step(from: Int, to allowedNext: [Int], _ function: @escaping StepFunction) {
        steps.append(StepDefinition(from: from, allowedNext: allowedNext, kind: .function(function)))
    }

    /// A step that another program does (a worker's `complete`, or a `callback`): a run in
    /// `from` waits there, offered as a task, until one of `to` is chosen or a timeout fires.
    public mutating func externalStep(from: Int, to allowedNext: [Int]) {
        steps.append(StepDefinition(from: from, allowedNext: allowedNext, kind: .external))
    }

    /// Checks the objects workers and callbacks hand in; a throw becomes `BAD_REQUEST` naming
    /// `object`, and nothing is stored.
    public mutating func checkObjects(_ check: @escaping ObjectCheck) { objectCheck = check }

    /// A deadline that moves the run to `target` with `reason` if it is still in `status`
    /// `milliseconds` after entering it.
    public mutating func timeout(in status: Int, after milliseconds: Int64, to target: Int, reason: String) {
        timeouts.append(
            TimeoutDefinition(
                status: status, afterMilliseconds: milliseconds, allowedNext: [target],
                handler: { _ in .next(target, reason: reason) }))
    }

    /// A deadline with its own handler, which may return only the statuses in `allowedNext`.
    public mutating func timeout(
        in status: Int, after milliseconds: Int64, allowedNext: [Int], _ handler: @escaping StepFunction
    ) {
        timeouts.append(
            TimeoutDefinition(status: status, afterMilliseconds: milliseconds, allowedNext: allowedNext, handler: handler))
    }

    /// Called once a change to `state` has committed, by the engine instance that made it.
    /// Best effort (at most once): a crash between the commit and the call loses the call.
    /// A reader that must see every change subscribes to the event log instead.
    public mutating func onRunState(_ state: RunState, _ hook: @escaping RunStateHook) {
        hooks[state, default: []].append(hook)
    }

    /// Removes personal data from an object; `delete_data` stores what it returns.
    public mutating func erase(_ function: @escaping EraseFunction) { erase = function }

    /// Checks the definition; throws a `.definition` error naming every problem found.
    public func build() throws -> WorkflowDefinition {
        var problems: [String] = []
        if name.isEmpty { problems.append("the workflow has no name") }
        if statuses.isEmpty { problems.append("no statuses are declared") }
        var codes: Set<Int> = []
        var names: Set<String> = []
        for s in statuses {
            if s.code <= 0 { problems.append("status \(s.name) has code \(s.code); codes must be positive") }
            if !codes.insert(s.code).inserted { problems.append("status code \(s.code) is declared twice") }
            if s.name.isEmpty { problems.append("status \(s.code) has no name") }
            if !names.insert(s.name).inserted { problems.append("status name \(s.name) is declared twice") }
        }
        let byCode = Dictionary(statuses.map { ($0.code, $0) }, uniquingKeysWith: { a, _ in a })
        func label(_ code: Int) -> String { byCode[code]?.name ?? "\(code)" }
        if !statuses.isEmpty, !statuses.contains(where: \.terminal) { problems.append("no status is terminal") }
        if let initialStatus {
            if byCode[initialStatus] == nil {
                problems.append("the initial status \(initialStatus) is not declared")
            } else if byCode[initialStatus]!.terminal {
                problems.append("the initial status \(label(initialStatus)) is terminal")
            }
        } else {
            problems.append("no initial status is set")
        }
        var stepByStatus: [Int: StepDefinition] = [:]
        for step in steps {
            if byCode[step.from] == nil { problems.append("a step starts from undeclared status \(step.from)") }
            if byCode[step.from]?.terminal == true { problems.append("terminal status \(label(step.from)) has a step") }
            if stepByStatus[step.from] != nil { problems.append("status \(label(step.from)) has two steps") }
            if step.allowedNext.isEmpty { problems.append("the step of \(label(step.from)) declares no next status") }
            for to in step.allowedNext where byCode[to] == nil {
                problems.append("the step of \(label(step.from)) may return undeclared status \(to)")
            }
            stepByStatus[step.from] = step
        }
        var timeoutByStatus: [Int: TimeoutDefinition] = [:]
        for t in timeouts {
            if byCode[t.status] == nil { problems.append("a timeout is set on undeclared status \(t.status)") }
            if byCode[t.status]?.terminal == true { problems.append("terminal status \(label(t.status)) has a timeout") }
            if timeoutByStatus[t.status] != nil { problems.append("status \(label(t.status)) has two timeouts") }
            if t.afterMilliseconds <= 0 { problems.append("the timeout of \(label(t.status)) is not positive") }
            if t.allowedNext.isEmpty { problems.append("the timeout of \(label(t.status)) declares no next status") }
            for to in t.allowedNext where byCode[to] == nil {
                problems.append("the timeout of \(label(t.status)) may return undeclared status \(to)")
            }
            timeoutByStatus[t.status] = t
        }
        for s in statuses where !s.terminal && stepByStatus[s.code] == nil && timeoutByStatus[s.code] == nil {
            problems.append("non-terminal status \(s.name) has neither a step nor a timeout, so a run there never moves")
        }
        guard problems.isEmpty, let initialStatus else {
            throw WorkflowError(.definition, "workflow \(name.isEmpty ? "?" : name): " + problems.joined(separator: "; "))
        }
        return WorkflowDefinition(
            name: name, statuses: statuses, initialStatus: initialStatus, steps: stepByStatus,
            timeouts: timeoutByStatus, hooks: hooks, erase: erase, objectCheck: objectCheck)
    }
}
