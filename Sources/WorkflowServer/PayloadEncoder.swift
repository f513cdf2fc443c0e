import WorkflowEngine
import WorkflowWire

/// Turns engine values into wire payloads. Immutable after start, so any thread may use it
/// (the event listener encodes each event once, on the engine's thread).
struct PayloadEncoder: Sendable {
    let workflows: [WorkflowDescription]
    private let statusNames: [String: [Int: String]]

    init(workflows: [WorkflowDescription]) {
        self.workflows = workflows
        var names: [String: [Int: String]] = [:]
        for wf in workflows {
            var m: [Int: String] = [:]
            for s in wf.statuses { m[s.code] = s.name }
            names[wf.name] = m
        }
        statusNames = names
    }

    func workflow(named name: String) -> WorkflowDescription? { workflows.first { $0.name == name } }

    func statusName(workflow: String, code: Int) -> String? { statusNames[workflow]?[code] }

    func run(_ r: Run) -> RunPayload {
        RunPayload(
            workflow: r.workflow, foreignID: r.foreignID, runID: r.runID, runState: r.runState.rawValue,
            statusCode: r.status, statusName: statusName(workflow: r.workflow, code: r.status), version: r.version,
            object: r.object, reason: r.reason, createdAt: r.createdAt.milliseconds, updatedAt: r.updatedAt.milliseconds)
    }

    func runJSON(_ r: Run) -> [UInt8] { run(r).json }

    func event(_ e: WorkflowEvent) -> EventPayload {
        EventPayload(
            seq: e.seq, workflow: e.workflow, foreignID: e.foreignID, runID: e.runID, statusCode: e.status,
            statusName: statusName(workflow: e.workflow, code: e.status), runState: e.runState.rawValue,
            version: e.version, at: e.at.milliseconds, reason: e.reason)
    }

    func eventJSON(_ e: WorkflowEvent) -> [UInt8] { event(e).json }

    func task(_ t: ExternalTask) -> TaskPayload {
        TaskPayload(
            task: t.claim.text, workflow: t.run.workflow, runID: t.run.runID, foreignID: t.run.foreignID,
            statusCode: t.run.status, statusName: statusName(workflow: t.run.workflow, code: t.run.status),
            version: t.claim.version, attempt: t.attempt, object: t.run.object, idempotencyKey: t.idempotencyKey,
            deadline: t.deadline.milliseconds)
    }

    /// One status reference as a code: a name is looked up in `workflow` when given, otherwise in
    /// every workflow, and must name one status (BAD_REQUEST naming `field` otherwise). A code
    /// must be one of the workflow's (or any workflow's).
    func statusCode(_ ref: StatusRef, workflow: String?, field: String) throws(WireError) -> Int {
        let candidates = workflow.map { w in workflows.filter { $0.name == w } } ?? workflows
        switch ref {
        case .code(let c):
            guard candidates.contains(where: { $0.status(code: c) != nil }) else {
                throw .badRequest("\(field): unknown status code \(c)")
            }
            return c
        case .name(let n):
            let found = Set(candidates.compactMap { $0.status(named: n)?.code })
            guard let code = found.first else { throw .badRequest("\(field): unknown status '\(n)'") }
            guard found.count == 1 else {
                throw .badRequest("\(field): '\(n)' names statuses of several workflows; give its code")
            }
            return code
        }
    }

    /// Status references resolved to codes. Names are looked up in `workflow` when given,
    /// otherwise in every workflow. Throws BAD_REQUEST naming `field` for an unknown name.
    func statusCodes(_ refs: [StatusRef], workflow: String?, field: String) throws(WireError) -> [Int] {
        var codes: [Int] = []
        for ref in refs {
            switch ref {
            case .code(let c):
                codes.append(c)
            case .name(let n):
                let candidates = workflow.map { w in workflows.filter { $0.name == w } } ?? workflows
                let found = candidates.compactMap { $0.status(named: n)?.code }
                guard !found.isEmpty else { throw .badRequest("\(field): unknown status '\(n)'") }
                codes.append(contentsOf: found)
            }
        }
        return codes
    }

    var hello: [HelloInfo.Workflow] {
        workflows.map { wf in
            HelloInfo.Workflow(
                name: wf.name,
                statuses: wf.statuses.sorted { $0.code < $1.code }.map {
                    HelloInfo.Status(name: $0.name, code: $0.code, terminal: $0.terminal, external: $0.external)
                })
        }
    }

    func mermaid(_ wf: WorkflowDescription) -> String {
        MermaidGraph.render(
            statuses: wf.statuses.sorted { $0.code < $1.code }.map {
                HelloInfo.Status(name: $0.name, code: $0.code, terminal: $0.terminal)
            }, transitions: wf.transitions, initial: wf.initialStatus)
    }
}

/// Maps an error thrown by the engine to the wire. Only `WorkflowError`s carry their code and
/// (client-safe) message; anything else is INTERNAL with a generic message — `logDetail` says
/// whether the caller should log the detail.
func wireError(from error: any Error) -> (error: WireError, logDetail: Bool) {
    if let e = error as? WireError { return (e, false) }
    guard let e = error as? WorkflowError else {
        return (WireError(.internalError, "internal error"), true)
    }
    if e.code == .outcomeUnknown {
        // Logged by the store, once per lost commit (a commit may carry many requests).
        return (WireError(.internalError, e.message, retryable: true), false)
    }
    if let code = WireError.Code.named(e.code.name) {
        return (
            WireError(
                code, e.message, retryable: code == .internalError ? true : e.retryable || code.retryable,
                earliest: e.earliestSeq),
            code == .internalError
        )
    }
    // Engine codes without a wire meaning (CONFLICT, DEFINITION): the message is client-safe.
    return (WireError(.internalError, e.message, retryable: true), true)
}
