/// External steps: workers, their answers, callbacks. A worker's answer is an ordinary
/// transition (`EngineCore.transition`) made conditional on the task's claim, committed through
/// the engine's commit queue with the steps' results, so it is applied exactly once.
extension WorkflowEngine {
    /// What a `fail` did.
    public enum TaskFailure: Sendable, Equatable {
        /// The task is offered again at this time (attempt + 1).
        case retry(at: Timestamp)
        /// The retry limit was reached: the run is paused with the error as its reason.
        case paused(Run)
    }

    /// Registers a worker of an external status; `offer` receives its tasks (on an engine
    /// thread: hand them off quickly). It gets none until `setWorkerReady(_:true)`.
    public func addWorker(_ spec: WorkerSpec, offer: @escaping @Sendable ([ExternalTask]) -> Void) throws -> WorkerToken {
        guard let definition = core.definitions[spec.workflow] else {
            throw WorkflowError(.notFound, "no workflow named \(spec.workflow)")
        }
        guard definition.isExternal(spec.status) else {
            let external = definition.externalStatuses.map { definition.statusName($0) }
            throw WorkflowError(
                .badRequest,
                "status: \(definition.statusName(spec.status)) is not an external status of \(spec.workflow) "
                    + (external.isEmpty ? "(it has none; see --external-steps)" : "(external: \(external.joined(separator: ", ")))"))
        }
        if core.isStopping { throw WorkflowError(.draining, "the engine is stopping", retryable: true) }
        return core.tasks.addWorker(spec, offer: offer)
    }

    /// Whether the worker may be given tasks now (its connection takes frames).
    public func setWorkerReady(_ token: WorkerToken, _ ready: Bool) { core.tasks.setReady(token, ready) }

    /// The worker is gone: the tasks it holds are freed and offered again at once.
    public func removeWorker(_ token: WorkerToken) { core.tasks.removeWorker(token) }

    /// A worker's answer: moves the run from the task's status to `status` (one the step
    /// declares), replacing the object when one is given. Exactly once: under the run's version
    /// and the task's claim. A repeat of an answer that committed returns the run again.
    public func complete(task id: String, status: Int, object: [UInt8]?, reason: String?) async throws -> Run {
        let claim = try Self.claim(id)
        let (run, taskStatus, definition) = try await taskContext(claim)
        guard definition.allowedNext(from: taskStatus).contains(status) else {
            throw Self.badNext("status", status, from: taskStatus, definition)
        }
        if let object { try check(object, for: run, definition) }
        if run.version == claim.version, run.status == taskStatus, EngineCore.runnable.contains(run.runState),
            let update = core.transition(
                run, to: StepResult(status: status, object: object, reason: reason), definition: definition,
                now: core.clock.now(), completesTimeout: nil, answering: claim.claim)
        {
            if try await commits.commit(update, previousRunState: run.runState) == .applied {
                core.taskCounters.completed.add(1, ordering: .relaxed)
                core.tasks.finished(claim)
                return update.run
            }
        }
        return try await settled(claim, answer: status, definition)
    }

    /// A worker's `fail`: a durable retry with the workflow's back-off (the task is offered again
    /// at `retry(at:)`), or, at the retry limit, the run paused with `error` as its reason.
    public func fail(task id: String, error: String) async throws -> TaskFailure {
        let claim = try Self.claim(id)
        let (run, taskStatus, definition) = try await taskContext(claim)
        guard run.version == claim.version, run.status == taskStatus, EngineCore.runnable.contains(run.runState) else {
            return try await failSettled(claim, definition)
        }
        if let record = try await core.store.task(runID: claim.runID, version: claim.version), record.claim == claim.claim,
            record.isOpen, record.holder == nil, let at = record.availableAt
        {
            return .retry(at: at)  // this fail (or the worker's leaving) already freed it
        }
        let now = core.clock.now()
        var meta = RunMeta(run.meta)
        meta.failures += 1
        meta.lastError = error
        var r = run
        r.meta = meta.bytes
        r.updatedAt = now
        let update: RunUpdate
        let outcome: TaskFailure
        if meta.failures >= core.configuration.retry.maxAttempts {
            var machine = RunStateMachine(run.runState)
            guard case .changeRunState(let next) = machine.autoPause() else { return try await failSettled(claim, definition) }
            r.version += 1
            r.runState = next
            r.reason = error
            update = RunUpdate(
                run: r, expectedVersion: run.version, cancelPendingTimeouts: true, closesTask: .complete(claim: claim.claim))
            outcome = .paused(r)
        } else {
            let delay = core.configuration.retry.delay(attempt: meta.failures, unit: core.configuration.random())
            let at = now.adding(milliseconds: delay)
            update = RunUpdate(
                run: r, expectedVersion: run.version, emitsEvent: false,
                closesTask: .retry(claim: claim.claim, availableAt: at, attempt: meta.failures + 1))
            outcome = .retry(at: at)
        }
        guard try await commits.commit(update, previousRunState: run.runState) == .applied else {
            return try await failSettled(claim, definition)
        }
        core.counters.stepFailures.add(1, ordering: .relaxed)
        core.taskCounters.failed.add(1, ordering: .relaxed)
        core.tasks.finished(claim)
        if case .retry(let at) = outcome { core.tasks.retrying(workflow: run.workflow, status: run.status, at: at) }
        return outcome
    }

    /// Moves the deadline of a held task to `leaseMilliseconds` from now (default: its worker's
    /// lease, or 30 s). Returns the new deadline.
    public func extend(task id: String, leaseMilliseconds: Int64?) async throws -> Timestamp {
        let claim = try Self.claim(id)
        let lease = leaseMilliseconds ?? core.tasks.held(claim)?.leaseMilliseconds ?? 30_000
        let now = core.clock.now()
        let deadline = now.adding(milliseconds: lease)
        if try await core.store.extendTask(claim, until: deadline, now: now) {
            core.tasks.extended(claim, to: deadline)
            return deadline
        }
        let (_, _, definition) = try await taskContext(claim)
        throw try await conflict(claim, definition, "the task is no longer held under this id")
    }

    /// Moves a run that waits in the external status `status` to `next`, without a task (a
    /// payment provider's webhook, say). A worker holding the run's task can no longer answer it.
    public func callback(runID: String, status: Int, next: Int, object: [UInt8]?, reason: String?) async throws -> Run {
        for _ in 0..<16 {
            guard let run = try await core.store.lookup(runID: runID) else { throw WorkflowError(.notFound, "no run \(runID)") }
            guard let definition = core.definitions[run.workflow] else {
                throw WorkflowError(.notFound, "no workflow named \(run.workflow) in this engine")
            }
            guard definition.isExternal(status) else {
                throw WorkflowError(
                    .badRequest, "status: \(definition.statusName(status)) is not an external status of \(run.workflow)")
            }
            guard definition.allowedNext(from: status).contains(next) else {
                throw Self.badNext("next", next, from: status, definition)
            }
            if let object { try check(object, for: run, definition) }
            guard run.status == status, EngineCore.runnable.contains(run.runState),
                let update = core.transition(
                    run, to: StepResult(status: next, object: object, reason: reason), definition: definition,
                    now: core.clock.now(), completesTimeout: nil)
            else {
                throw WorkflowError.conflict(
                    run: run,
                    "run \(runID) is not waiting in \(definition.statusName(status)): it is \(definition.statusName(run.status)), \(run.runState)")
            }
            if try await commits.commit(update, previousRunState: run.runState) == .applied { return update.run }
        }
        throw WorkflowError(.unavailable, "run \(runID) kept changing; try again", retryable: true)
    }

    /// Per external status: runs waiting (free tasks), tasks held (by any instance's workers),
    /// tasks waiting for a retry time, and this instance's workers.
    public func externalStats() async throws -> [ExternalStatusStats] {
        var out: [ExternalStatusStats] = []
        let now = core.clock.now()
        for definition in core.definitions.values.sorted(by: { $0.name < $1.name }) {
            for status in definition.externalStatuses {
                let c = try await core.store.taskCounts(workflow: definition.name, status: status, now: now)
                let local = core.tasks.local(workflow: definition.name, status: status)
                out.append(
                    ExternalStatusStats(
                        workflow: definition.name, status: status, waiting: c.waiting, held: c.held, scheduled: c.scheduled,
                        oldestWaiting: c.oldestWaiting, workers: local.workers, heldHere: local.held))
            }
        }
        return out
    }

    // MARK: Helpers

    static func claim(_ id: String) throws -> TaskClaim {
        guard let claim = TaskClaim(text: id) else { throw WorkflowError(.notFound, "no task '\(id)'") }
        return claim
    }

    /// The run (as held here, or read) and the status and definition of the task `claim` names;
    /// NOT_FOUND when there is no such task.
    private func taskContext(_ claim: TaskClaim) async throws -> (Run, Int, WorkflowDefinition) {
        if let held = core.tasks.held(claim), let definition = core.definitions[held.task.run.workflow] {
            return (held.task.run, held.task.run.status, definition)
        }
        guard let run = try await core.store.lookup(runID: claim.runID),
            let definition = core.definitions[run.workflow]
        else { throw WorkflowError(.notFound, "no task '\(claim.text)'") }
        if run.version == claim.version, definition.isExternal(run.status) { return (run, run.status, definition) }
        guard let record = try await core.store.task(runID: claim.runID, version: claim.version),
            claim.claim <= record.claim
        else { throw WorkflowError(.notFound, "no task '\(claim.text)'") }
        return (run, record.status, definition)
    }

    /// After an answer was not applied: a repeat of the answer that closed the task is
    /// answered with the run; anything else is CONFLICT (or NOT_FOUND for a task that never was).
    private func settled(_ claim: TaskClaim, answer status: Int, _ definition: WorkflowDefinition) async throws -> Run {
        let record = try await core.store.task(runID: claim.runID, version: claim.version)
        if let record, record.doneClaim == claim.claim, record.doneStatus == status,
            let run = try await core.store.lookup(runID: claim.runID)
        {
            core.tasks.finished(claim)
            return run
        }
        core.tasks.finished(claim)
        throw try await conflict(claim, definition, nil, record: record)
    }

    private func failSettled(_ claim: TaskClaim, _ definition: WorkflowDefinition) async throws -> TaskFailure {
        let record = try await core.store.task(runID: claim.runID, version: claim.version)
        if let record, record.doneClaim == claim.claim, let run = try await core.store.lookup(runID: claim.runID),
            run.runState == .paused, run.version == claim.version + 1
        {
            return .paused(run)  // the fail that reached the limit, repeated
        }
        core.tasks.finished(claim)
        throw try await conflict(claim, definition, nil, record: record)
    }

    /// CONFLICT with the run as it is now, saying why the task's answer no longer applies.
    private func conflict(
        _ claim: TaskClaim, _ definition: WorkflowDefinition, _ why: String?, record known: TaskRecord? = nil
    ) async throws -> WorkflowError {
        let record: TaskRecord?
        if let known { record = known } else { record = try await core.store.task(runID: claim.runID, version: claim.version) }
        // A claim number never issued, for a task there never was: not a task of this server.
        guard let run = try await core.store.lookup(runID: claim.runID), let record, claim.claim <= record.claim else {
            return WorkflowError(.notFound, "no task '\(claim.text)'")
        }
        let reason: String
        if let why {
            reason = why
        } else if record.isOpen, record.claim != claim.claim {
            reason = "the task was offered again (the deadline passed or its worker left); the newer offer answers it"
        } else if record.doneClaim != nil, record.doneClaim != claim.claim {
            reason = "another offer of this task already answered it"
        } else if run.version != claim.version {
            reason =
                "the run has moved on: it is \(definition.statusName(run.status)), \(run.runState), version \(run.version)"
        } else {
            reason = "the task is closed (the run is \(run.runState))"
        }
        return WorkflowError.conflict(run: run, "task \(claim.text): \(reason)")
    }

    private func check(_ object: [UInt8], for run: Run, _ definition: WorkflowDefinition) throws {
        guard let check = definition.objectCheck else { return }
        do {
            try check(object, run)
        } catch {
            throw WorkflowError(.badRequest, "object: \(EngineCore.describe(error))")
        }
    }

    static func badNext(_ field: String, _ status: Int, from: Int, _ definition: WorkflowDefinition) -> WorkflowError {
        let allowed = definition.allowedNext(from: from).map { definition.statusName($0) }.joined(separator: ", ")
        return WorkflowError(
            .badRequest,
            "\(field): the step of \(definition.statusName(from)) may not go to \(definition.statusName(status)) (allowed: \(allowed))")
    }
}

/// `stats` for one external status.
public struct ExternalStatusStats: Sendable, Equatable {
    public var workflow: String
    public var status: Int
    /// Runs whose task is free now: waiting for a worker.
    public var waiting: Int
    /// Tasks held by workers (of any instance) until a deadline still ahead.
    public var held: Int
    /// Tasks waiting for their retry time after a `fail`.
    public var scheduled: Int
    /// Since when the longest-waiting free task has been free.
    public var oldestWaiting: Timestamp?
    /// Workers of this status connected to this instance, and tasks they hold.
    public var workers: Int
    public var heldHere: Int

    public init(
        workflow: String, status: Int, waiting: Int, held: Int, scheduled: Int, oldestWaiting: Timestamp?, workers: Int,
        heldHere: Int
    ) {
        self.workflow = workflow
        self.status = status
        self.waiting = waiting
        self.held = held
        self.scheduled = scheduled
        self.oldestWaiting = oldestWaiting
        self.workers = workers
        self.heldHere = heldHere
    }
}
