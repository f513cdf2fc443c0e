import Synchronization

/// The automatic retention pass of `serve`: while this instance holds the `retention` lease, it
/// runs the configured `RetentionPolicy` every `intervalMilliseconds` (real time), with cutoffs
/// from the injected clock. One instance prunes at a time; a pass stops between two batches
/// when the lease is lost or the engine stops, and the next holder simply starts again (each
/// batch is its own transaction, so a half-done pass leaves nothing half-done behind).
final class RetentionJob: Sendable {
    private let core: EngineCore
    var wakeup: Wakeup { core.retentionWakeup }
    /// Totals since start, for metrics and tests.
    let runsDeleted = Atomic<Int>(0)
    let eventsDeleted = Atomic<Int>(0)
    let passes = Atomic<Int>(0)

    init(core: EngineCore) { self.core = core }

    func run(leases: LeaseKeeper) async {
        guard let policy = core.configuration.retention, policy.isActive else { return }
        let pruner = Pruner(store: core.store, policy: policy)
        while !core.isStopping, !Task.isCancelled {
            guard leases.holds(LeaseKeeper.retention) else {
                // Woken when leases move; the timeout is only a backstop.
                await wakeup.wait(milliseconds: 5_000)
                continue
            }
            do {
                let core = self.core
                let report = try await pruner.prune(
                    now: core.clock.now(),
                    shouldContinue: { !core.isStopping && !Task.isCancelled && leases.holds(LeaseKeeper.retention) })
                runsDeleted.add(report.runs, ordering: .relaxed)
                eventsDeleted.add(Int(report.events), ordering: .relaxed)
                passes.add(1, ordering: .relaxed)
                if report.runs > 0 || report.events > 0 {
                    core.logger.info(
                        "retention pass",
                        metadata: [
                            "runs.deleted": "\(report.runs)", "events.deleted": "\(report.events)",
                            "events.earliest": "\(report.earliestKept.map(String.init) ?? "none")",
                        ])
                }
                if case .cursor(let name)? = report.eventsKeptBecause {
                    core.logger.debug("retention kept events a consumer has not finished", metadata: ["consumer": "\(name)"])
                }
            } catch {
                core.counters.storeErrors.add(1, ordering: .relaxed)
                core.logger.warning("retention pass failed", metadata: ["error": "\(EngineCore.describe(error))"])
            }
            await wakeup.wait(milliseconds: policy.intervalMilliseconds)
        }
    }
}
