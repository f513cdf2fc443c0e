extension WorkflowEngine {
    /// Pause, resume, cancel or delete-data. Each changes only the run state and reason (and,
    /// for delete-data, the object through the erase function) under the version check; on a
    /// conflict it reads the run again and re-decides, so it never overwrites a step's newer data.
    ///
    /// - pause / cancel cancel the run's pending timeouts and retries;
    /// - resume clears the failure count and starts the status's deadlines afresh; its event
    ///   makes the status's consumer run the step again;
    /// - delete-data writes RequestedDataDeleted, then the erased object as DataDeleted (two
    ///   versions, two events). If the erase fails, the run stays RequestedDataDeleted and a
    ///   repeated delete-data finishes it.
    public func control(_ command: RunCommand, runID: String, reason: String?) async throws -> Run {
        for _ in 0..<16 {
            guard let run = try await core.store.lookup(runID: runID) else {
                throw WorkflowError(.notFound, "no run \(runID)")
            }
            guard let definition = core.definitions[run.workflow] else {
                throw WorkflowError(.notFound, "no workflow named \(run.workflow) in this engine")
            }
            if command == .deleteData, run.runState == .requestedDataDeleted {
                if let done = try await finishDataDeletion(run, definition: definition) { return done }
                continue
            }
            var machine = RunStateMachine(run.runState)
            let action: RunStateMachine.Action
            switch command {
            case .pause: action = machine.pause()
            case .resume: action = machine.resume()
            case .cancel: action = machine.cancel()
            case .deleteData: action = machine.requestDataDeletion()
            }
            let next: RunState
            switch action {
            case .refuse(let error): throw error
            case .changeRunState(let state): next = state
            }
            let now = core.clock.now()
            var r = run
            r.runState = next
            r.version += 1
            r.updatedAt = now
            // A run waiting in an external status has an open task while it is runnable: pause,
            // cancel and delete-data close it, resume opens a fresh one (a new version).
            let waitsForTask = definition.isExternal(run.status)
            let closes: TaskClose? = waitsForTask && EngineCore.runnable.contains(run.runState) ? .withdraw : nil
            let update: RunUpdate
            switch command {
            case .pause:
                r.reason = reason ?? "paused on request"
                update = RunUpdate(run: r, expectedVersion: run.version, cancelPendingTimeouts: true, closesTask: closes)
            case .resume:
                r.reason = nil
                r.meta = nil
                update = RunUpdate(
                    run: r, expectedVersion: run.version, cancelPendingTimeouts: true,
                    newTimeouts: definition.newTimeouts(for: run.status, now: now), opensTask: waitsForTask)
            case .cancel:
                r.reason = reason ?? "cancelled on request"
                update = RunUpdate(run: r, expectedVersion: run.version, cancelPendingTimeouts: true, closesTask: closes)
            case .deleteData:
                r.reason = reason ?? run.reason
                update = RunUpdate(run: r, expectedVersion: run.version, cancelPendingTimeouts: true, closesTask: closes)
            }
            let outcome = try await core.write { route in
                try await core.store.update([update], route: route)
            } committed: { outcomes in
                guard outcomes.first == .applied else { return }
                core.recentRuns.put(CollectionOfOne(r))  // replaces the older copy
                core.committed([update])
            }
            guard outcome.first == .applied else { continue }
            core.stepAtOnce([r])
            await core.runHooks(previous: run.runState, run: r)
            if command == .deleteData {
                if let done = try await finishDataDeletion(r, definition: definition) { return done }
                continue
            }
            return r
        }
        throw WorkflowError(.unavailable, "run \(runID) kept changing; try again", retryable: true)
    }

    /// RequestedDataDeleted → DataDeleted with the erased object; nil on a version conflict.
    private func finishDataDeletion(_ run: Run, definition: WorkflowDefinition) async throws -> Run? {
        var machine = RunStateMachine(run.runState)
        guard case .changeRunState(let next) = machine.finishDataDeletion() else {
            preconditionFailure("finishDataDeletion called for a run that is \(run.runState)")
        }
        var r = run
        do {
            r.object = try definition.erase?(run.object) ?? []
        } catch {
            throw WorkflowError(.internalError, "erasing the data of run \(run.runID) failed; try again", retryable: true)
        }
        r.runState = next
        r.version += 1
        r.updatedAt = core.clock.now()
        let update = RunUpdate(run: r, expectedVersion: run.version)
        let outcome = try await core.write { route in
            try await core.store.update([update], route: route)
        } committed: { outcomes in
            // The erased run replaces the cached copy, so no copy of the personal data stays in memory.
            if outcomes.first == .applied { core.recentRuns.put(CollectionOfOne(r)) }
        }
        guard outcome.first == .applied else { return nil }
        await core.runHooks(previous: run.runState, run: r)
        return r
    }
}
