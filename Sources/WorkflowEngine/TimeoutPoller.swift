import Synchronization

/// Fires due deadlines and durable retries while this instance holds the `poller` lease.
///
/// A timeout fires at most once: its transition carries `completesTimeout`, which the store
/// refuses unless the timeout is still pending, in the same transaction as the version check.
/// It fires only if the run is still in the timeout's status and runnable; a pending timeout
/// found otherwise (none should be: leaving a status cancels them) is cancelled.
final class TimeoutPoller: Sendable {
    private let core: EngineCore
    private let inFlight = Mutex<Set<Int64>>([])
    var wakeup: Wakeup { core.pollerWakeup }

    init(core: EngineCore) { self.core = core }

    func run(leases: LeaseKeeper) async {
        let commits = CommitQueue(core: core)
        let config = core.configuration
        await withDiscardingTaskGroup { group in
            group.addTask { await commits.run(afterBatch: { _ in }) }
            while !core.isStopping, !Task.isCancelled {
                guard leases.holds(LeaseKeeper.poller) else {
                    // Woken when leases move; the timeout is only a backstop.
                    await wakeup.wait(milliseconds: 5_000)
                    continue
                }
                let busy = inFlight.withLock { $0 }
                let capacity = config.maxConcurrentSteps - busy.count
                if capacity <= 0 {
                    await wakeup.wait(milliseconds: config.timeoutPollMilliseconds)
                    continue
                }
                let started = ContinuousClock.now
                var next: Timestamp?
                do {
                    let now = core.clock.now()
                    // Looking now: a commit that schedules something from here on signals.
                    core.pollerNextLook.withLock { $0 = nil }
                    let limit = capacity + busy.count
                    let due = try await core.store.dueTimeouts(now: now, limit: limit)
                    let fresh = Array(due.filter { !busy.contains($0.id) }.prefix(capacity))
                    if !fresh.isEmpty { try await fire(fresh, group: &group, commits: commits) }
                    if due.count == limit, !fresh.isEmpty { continue }
                    if due.count < limit { next = try await core.store.nextTimeout(after: now) }
                } catch {
                    core.storeHealth.failed("polling timeouts", error, started: started)
                }
                await waitForNext(next, others: leases.othersLive)
            }
            while !inFlight.withLock({ $0.isEmpty }), !Task.isCancelled {
                await wakeup.wait(milliseconds: 100)
            }
            commits.close()
        }
    }

    /// Waits until the next known due time, a local commit scheduling an earlier one (it
    /// signals), or — when other instances share the database, whose timeouts this one cannot
    /// hear about — `timeoutPollMilliseconds` at most. Alone and with nothing scheduled, it
    /// waits for a signal (`idleBackstopMilliseconds` at most): an idle instance does not poll.
    private func waitForNext(_ next: Timestamp?, others: Bool) async {
        let now = core.clock.now()
        let planned = core.pollerNextLook.withLock { look -> Timestamp? in
            if let next, look.map({ next < $0 }) ?? true { look = next }
            return look
        }
        let cap = others ? core.configuration.timeoutPollMilliseconds : core.configuration.idleBackstopMilliseconds
        let ms = planned.map { Int(clamping: max(1, $0.milliseconds - now.milliseconds)) } ?? cap
        await wakeup.wait(milliseconds: min(ms, cap))
    }

    private func fire(_ due: [TimeoutRecord], group: inout DiscardingTaskGroup, commits: CommitQueue) async throws {
        let runs = try await core.store.lookup(runIDs: Array(Set(due.map(\.runID))))
        var byID: [String: Run] = [:]
        for r in runs { byID[r.runID] = r }
        for t in due {
            guard let definition = core.definitions[t.workflow], let run = byID[t.runID], run.status == t.status,
                EngineCore.runnable.contains(run.runState)
            else {
                _ = try? await core.store.cancelTimeout(id: t.id)
                continue
            }
            inFlight.withLock { _ = $0.insert(t.id) }
            let core = self.core
            group.addTask {
                let update: RunUpdate?
                switch t.kind {
                case .timeout:
                    core.counters.timeoutsFired.add(1, ordering: .relaxed)
                    do {
                        let input = StepInput(run: run, now: core.clock.now())
                        let result = try await definition.runTimeout(of: t.status, input)
                        update = core.transition(
                            run, to: result, definition: definition, now: core.clock.now(), completesTimeout: t.id)
                    } catch {
                        core.logger.warning(
                            "timeout handler failed", metadata: ["run.id": "\(run.runID)", "error": "\(error)"])
                        update = nil
                    }
                case .retry:
                    update = await core.executeStep(
                        run, definition: definition, attempt: t.attempt, completesTimeout: t.id)
                }
                if let update {
                    commits.submit(
                        PendingCommit(update: update, previousRunState: run.runState) { _ in
                            self.inFlight.withLock { _ = $0.remove(t.id) }
                            self.wakeup.signal()
                        })
                } else {
                    self.inFlight.withLock { _ = $0.remove(t.id) }
                    self.wakeup.signal()
                }
            }
        }
    }
}
