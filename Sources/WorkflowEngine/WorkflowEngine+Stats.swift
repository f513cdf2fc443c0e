extension WorkflowEngine {
    public func stats() async throws -> EngineStats {
        let store = core.store
        var byStatus: [String: [Int: Int]] = [:]
        var byRunState: [String: [RunState: Int]] = [:]
        if let counting = store as? any RunCountingStore {
            for c in try await counting.runCounts() {
                byStatus[c.workflow, default: [:]][c.status, default: 0] += c.count
                byRunState[c.workflow, default: [:]][c.runState, default: 0] += c.count
            }
        }
        let outbox = try await store.outboxStats()
        let head = try await store.head()
        var lags: [ConsumerLag] = []
        for c in consumers {
            let cursor = try await store.cursor(c.name)
            lags.append(ConsumerLag(name: c.name, cursor: cursor, lag: max(0, head - cursor)))
        }
        return EngineStats(byStatus: byStatus, byRunState: byRunState, outbox: outbox, head: head, consumers: lags)
    }

    /// database (the log head is readable), leases (someone holds the relay and poller leases),
    /// lag (no consumer further behind than `healthMaxLag`), outbox (oldest row younger than
    /// `healthMaxOutboxAgeMilliseconds`), engine (not stopping).
    public func health() async -> HealthReport {
        let store = core.store
        let config = core.configuration
        let now = core.clock.now()
        var checks: [String: HealthCheck] = [:]
        checks["engine"] =
            core.isStopping ? HealthCheck(ok: false, detail: "stopping") : HealthCheck(ok: true, detail: "running")
        do {
            let head = try await store.head()
            checks["database"] = HealthCheck(ok: true, detail: "event head \(head)")
            if let schemaStore = store as? any SchemaVersionStore {
                let (found, expected) = try await schemaStore.schemaVersions()
                checks["schema"] = HealthCheck(
                    ok: found == expected,
                    detail: found == expected
                        ? "version \(found)" : "database has schema version \(found), this build expects \(expected)")
            }
            var missing: [String] = []
            for name in [LeaseKeeper.relay, LeaseKeeper.poller] {
                let lease = try await store.lease(name)
                if lease == nil || lease!.expiresAt <= now { missing.append(name) }
            }
            checks["leases"] =
                missing.isEmpty
                ? HealthCheck(ok: true, detail: "relay and poller held")
                : HealthCheck(ok: false, detail: "nobody holds: " + missing.joined(separator: ", "))
            var worst: (String, Int64) = ("", 0)
            for c in consumers {
                let lag = max(0, head - (try await store.cursor(c.name)))
                if lag > worst.1 { worst = (c.name, lag) }
            }
            checks["lag"] = HealthCheck(
                ok: worst.1 <= config.healthMaxLag,
                detail: worst.1 == 0 ? "all consumers at the head" : "largest lag \(worst.1) events (\(worst.0))")
            let outbox = try await store.outboxStats()
            let age = outbox.oldest.map { now.milliseconds - $0.milliseconds } ?? 0
            checks["outbox"] = HealthCheck(
                ok: age <= config.healthMaxOutboxAgeMilliseconds,
                detail: "\(outbox.pending) pending, oldest \(age) ms")
        } catch {
            checks["database"] = HealthCheck(ok: false, detail: EngineCore.describe(error))
        }
        return HealthReport(checks: checks)
    }

    /// Seconds since this engine object was made.
    public var uptimeMilliseconds: Int64 { core.clock.now().milliseconds - startedAtMilliseconds }
}
