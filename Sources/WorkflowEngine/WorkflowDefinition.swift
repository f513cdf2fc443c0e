/// One status of a workflow: a name for people, a code for the database.
public struct WorkflowStatus: Sendable, Hashable {
    public var name: String
    public var code: Int
    /// Reaching a terminal status completes the run.
    public var terminal: Bool

    public init(name: String, code: Int, terminal: Bool = false) {
        self.name = name
        self.code = code
        self.terminal = terminal
    }
}

/// A checked workflow: statuses, steps, deadlines, hooks and the erase function. Made only by
/// `WorkflowBuilder.build()`, so every value of this type has passed the definition checks.
public struct WorkflowDefinition: Sendable {
    public let name: String
    public let statuses: [WorkflowStatus]
    public let initialStatus: Int
    public let steps: [Int: StepDefinition]
    public let timeouts: [Int: TimeoutDefinition]
    public let hooks: [RunState: [RunStateHook]]
    public let erase: EraseFunction?
    /// Checks objects handed in by workers and callbacks; nil accepts any JSON value.
    public let objectCheck: ObjectCheck?
    private let byCode: [Int: WorkflowStatus]

    init(
        name: String, statuses: [WorkflowStatus], initialStatus: Int, steps: [Int: StepDefinition],
        timeouts: [Int: TimeoutDefinition], hooks: [RunState: [RunStateHook]], erase: EraseFunction?,
        objectCheck: ObjectCheck? = nil
    ) {
        self.name = name
        self.statuses = statuses
        self.initialStatus = initialStatus
        self.steps = steps
        self.timeouts = timeouts
        self.hooks = hooks
        self.erase = erase
        self.objectCheck = objectCheck
        self.byCode = Dictionary(uniqueKeysWithValues: statuses.map { ($0.code, $0) })
    }

    public func status(code: Int) -> WorkflowStatus? { byCode[code] }
    public func status(named name: String) -> WorkflowStatus? { statuses.first { $0.name == name } }
    public func isTerminal(_ code: Int) -> Bool { byCode[code]?.terminal ?? false }
    public func statusName(_ code: Int) -> String { byCode[code]?.name ?? "status \(code)" }

    /// The statuses whose step is a function, in declaration order: one consumer each (per
    /// partition). External statuses have no consumer: their tasks are offered by the broker.
    public var stepStatuses: [Int] { statuses.map(\.code).filter { steps[$0].map { !$0.isExternal } ?? false } }

    /// The statuses whose step another program does, in declaration order.
    public var externalStatuses: [Int] { statuses.map(\.code).filter { steps[$0]?.isExternal ?? false } }

    public func isExternal(_ code: Int) -> Bool { steps[code]?.isExternal ?? false }

    /// The statuses a step of `status` may move a run to (empty when it has no step).
    public func allowedNext(from status: Int) -> [Int] { steps[status]?.allowedNext ?? [] }

    /// What `hello` and `graph` show.
    public var description: WorkflowDescription {
        var transitions: [Int: [Int]] = [:]
        for (from, step) in steps { transitions[from, default: []].append(contentsOf: step.allowedNext) }
        for (from, t) in timeouts {
            for to in t.allowedNext where !(transitions[from] ?? []).contains(to) { transitions[from, default: []].append(to) }
        }
        return WorkflowDescription(
            name: name, statuses: statuses.map {
                StatusDescription(name: $0.name, code: $0.code, terminal: $0.terminal, external: isExternal($0.code))
            },
            transitions: transitions, initialStatus: initialStatus)
    }

    /// New timeouts for a run entering (or resumed in) `status`.
    func newTimeouts(for status: Int, now: Timestamp) -> [NewTimeout] {
        guard let t = timeouts[status] else { return [] }
        return [NewTimeout(kind: .timeout, status: status, expireAt: now.adding(milliseconds: t.afterMilliseconds))]
    }

    /// Runs the step of `status` and checks that it returned a status it declared. A step that
    /// returns anything else is a definition error (thrown as `.definition`), not a transient one.
    public func runStep(from status: Int, _ input: StepInput) async throws -> StepResult {
        guard let step = steps[status], case .function(let function) = step.kind else {
            throw WorkflowError(.definition, "\(name): \(statusName(status)) has no step the engine runs")
        }
        let result = try await function(input)
        try check(result, from: status, allowed: step.allowedNext, what: "step")
        return result
    }

    /// Runs the deadline handler of `status`, checked like a step.
    public func runTimeout(of status: Int, _ input: StepInput) async throws -> StepResult {
        guard let t = timeouts[status] else {
            throw WorkflowError(.definition, "\(name): \(statusName(status)) has no timeout")
        }
        let result = try await t.handler(input)
        try check(result, from: status, allowed: t.allowedNext, what: "timeout")
        return result
    }

    private func check(_ result: StepResult, from status: Int, allowed: [Int], what: String) throws {
        guard allowed.contains(result.status) else {
            let names = allowed.map { statusName($0) }.joined(separator: ", ")
            throw WorkflowError(
                .definition,
                "\(name): the \(what) of \(statusName(status)) returned \(statusName(result.status)), "
                    + "which it does not declare (declared: \(names))")
        }
    }
}
