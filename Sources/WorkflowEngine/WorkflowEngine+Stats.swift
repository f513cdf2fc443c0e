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
        return EngineStats(
            byStatus: byStatus, byRunState: byRunState, outbox: outbox, head: head, consumers: lags,
            external: try await externalStats())
    }

    /// database (the log head is readable), schema (the version this build expects), leases
    /// (someone holds the relay and poller leases), lag (no consumer further behind than
    /// `healthMaxLag`), relay (the oldest outbox row is younger than
    /// `healthMaxOutboxAgeMilliseconds`), outbox (at most `healthMaxOutboxPending` rows wait),
    /// engine (not stopping). Each detail names its limit, so a probe's output explains itself.
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
                detail: (worst.1 == 0 ? "all consumers at the head" : "largest lag \(worst.1) events (\(worst.0))")
                    + " (limit \(config.healthMaxLag))")
            let outbox = try await store.outboxStats()
            let age = max(0, outbox.oldest.map { now.milliseconds - $0.milliseconds } ?? 0)
            checks["relay"] = HealthCheck(
                ok: age <= config.healthMaxOutboxAgeMilliseconds,
                detail: (outbox.oldest == nil ? "outbox empty" : "oldest unrelayed change \(age) ms old")
                    + " (limit \(config.healthMaxOutboxAgeMilliseconds) ms)")
            checks["outbox"] = HealthCheck(
                ok: outbox.pending <= config.healthMaxOutboxPending,
                detail: "\(outbox.pending) pending (limit \(config.healthMaxOutboxPending))")
            if let external = try await externalHealth(now: now) { checks["external"] = external }
        } catch {
            checks["database"] = HealthCheck(ok: false, detail: EngineCore.describe(error))
        }
        return HealthReport(checks: checks)
    }

    /// External statuses: unhealthy when runs wait in one longer than
    /// `healthMaxTaskWaitMilliseconds` and no worker anywhere holds a task of it (nor is one
    /// connected here): nobody is doing that step. Nil when the workflows have no external step.
    func externalHealth(now: Timestamp) async throws -> HealthCheck? {
        let stats = try await externalStats()
        guard !stats.isEmpty else { return nil }
        let limit = core.configuration.healthMaxTaskWaitMilliseconds
        var problems: [String] = []
        var parts: [String] = []
        for s in stats {
            let name = core.definitions[s.workflow]?.statusName(s.status) ?? String(s.status)
            let age = s.oldestWaiting.map { max(0, now.milliseconds - $0.milliseconds) } ?? 0
            if s.waiting > 0, age > limit, s.held == 0, s.workers == 0 {
                problems.append("\(name): \(s.waiting) run(s) waiting, the oldest for \(age / 1000) s, and no worker")
            }
            parts.append("\(name) \(s.waiting) waiting, \(s.held) held, \(s.workers) worker(s) here")
        }
        return problems.isEmpty
            ? HealthCheck(ok: true, detail: parts.joined(separator: "; ") + " (limit \(limit) ms)")
            : HealthCheck(ok: false, detail: problems.joined(separator: "; ") + " (limit \(limit) ms)")
    }

    /// Seconds since this engine object was made.
    public var uptimeMilliseconds: Int64 { core.clock.now().milliseconds - startedAtMilliseconds }
}

extension WorkflowEngine {
    /// Metrics of this instance: gauges read from the store now (one `stats()`), counters since
    /// start. Names and meanings are listed in docs/operations.md.
    public func metrics() async throws -> [MetricFamily] {
        typealias F = MetricFamily
        typealias L = MetricFamily.Label
        let s = try await stats()
        let now = core.clock.now()
        let c = core.counters
        var families: [F] = []

        var byStatus: [F.Sample] = []
        var byRunState: [F.Sample] = []
        for wf in workflows {
            for st in wf.statuses {
                byStatus.append(.init(
                    labels: [L("workflow", wf.name), L("status", st.name)], value: Double(s.byStatus[wf.name]?[st.code] ?? 0)))
            }
            for rs in RunState.allCases {
                byRunState.append(.init(
                    labels: [L("workflow", wf.name), L("run_state", rs.name)], value: Double(s.byRunState[wf.name]?[rs] ?? 0)))
            }
        }
        families.append(F("workflowd_runs", .gauge, help: "Runs by workflow and status.", samples: byStatus))
        families.append(F("workflowd_runs_by_run_state", .gauge, help: "Runs by workflow and run state.", samples: byRunState))
        families.append(F("workflowd_outbox_pending", .gauge, help: "Outbox rows not yet relayed into the event log.", value: Double(s.outbox.pending)))
        let oldestAge = s.outbox.oldest.map { Double(max(0, now.milliseconds - $0.milliseconds)) / 1000 } ?? 0
        families.append(F("workflowd_outbox_oldest_age_seconds", .gauge, help: "Age of the oldest outbox row (0 when empty).", value: oldestAge))
        families.append(F("workflowd_event_log_head", .gauge, help: "Newest seq in the event log.", value: Double(s.head)))
        families.append(F("workflowd_events_delivered_head", .gauge, help: "Newest seq this instance has delivered to its consumers and subscribers.", value: Double(deliveredHead)))
        families.append(F(
            "workflowd_consumer_lag_events", .gauge, help: "Events in the log after the consumer's cursor.",
            samples: s.consumers.map { .init(labels: [L("consumer", $0.name)], value: Double($0.lag)) }))
        families.append(F("workflowd_consumer_lag_max_events", .gauge, help: "The largest consumer lag.", value: Double(s.consumers.map(\.lag).max() ?? 0)))

        families.append(F("workflowd_steps_total", .counter, help: "Steps run.", value: Double(c.stepsRun.load(ordering: .relaxed))))
        families.append(F("workflowd_step_failures_total", .counter, help: "Steps that threw (each becomes a retry or, after the last attempt, a pause).", value: Double(c.stepFailures.load(ordering: .relaxed))))
        families.append(F("workflowd_step_duration_seconds", .histogram, help: "Time from a step's start to its result.", samples: c.stepLatency.samples()))
        families.append(F("workflowd_transitions_applied_total", .counter, help: "Run updates committed by this instance.", value: Double(c.applied.load(ordering: .relaxed))))
        families.append(F("workflowd_runs_from_memory_total", .counter, help: "Runs a step consumer took from the recently-committed cache instead of reading them from the database.", value: Double(c.runsFromMemory.load(ordering: .relaxed))))
        families.append(F("workflowd_steps_started_at_once_total", .counter, help: "Steps started right after the commit that put their run in the status, without waiting for its event.", value: Double(c.stepsAtOnce.load(ordering: .relaxed))))
        families.append(F("workflowd_transition_conflicts_total", .counter, help: "Run updates refused by the version check (another writer was first).", value: Double(c.conflicts.load(ordering: .relaxed))))
        families.append(F("workflowd_timeouts_fired_total", .counter, help: "Timeouts fired by this instance.", value: Double(c.timeoutsFired.load(ordering: .relaxed))))
        let skipped = c.skipped.snapshot
        families.append(F(
            "workflowd_events_skipped_total", .counter, help: "Events a step consumer passed over, by reason.",
            samples: EngineCore.SkipReason.allCases.enumerated().map { .init(labels: [L("reason", $1.rawValue)], value: Double(skipped[$0])) }))
        families += core.store.metricFamilies
        let byRoute = c.writesByRoute.snapshot
        families.append(F(
            "workflowd_writes_total", .counter, help: "Transactions of this instance that wrote changes, by where their events went: the log itself (the relay's holder, writer free) or the outbox (and why).",
            samples: EngineCore.WriteRoute.allCases.enumerated().map { .init(labels: [L("route", $1.rawValue)], value: Double(byRoute[$0])) }))
        let byState = c.eventsByRunState.snapshot
        families.append(F(
            "workflowd_run_state_changes_total", .counter, help: "Events delivered to this instance, by the run state they record.",
            samples: RunState.allCases.enumerated().map { .init(labels: [L("run_state", $1.name)], value: Double(byState[$0])) }))
        families.append(F(
            "workflowd_retention_deleted_total", .counter, help: "Rows the retention job of this instance deleted, by kind.",
            samples: [
                .init(labels: [L("kind", "runs")], value: Double(retention.runsDeleted.load(ordering: .relaxed))),
                .init(labels: [L("kind", "events")], value: Double(retention.eventsDeleted.load(ordering: .relaxed))),
            ]))
        families.append(F("workflowd_retention_passes_total", .counter, help: "Retention passes this instance ran (it holds the retention lease).", value: Double(retention.passes.load(ordering: .relaxed))))
        families.append(F("workflowd_store_errors_total", .counter, help: "Failed database calls in the engine's loops (each is retried).", value: Double(c.storeErrors.load(ordering: .relaxed))))
        let t = core.taskCounters
        families.append(F("workflowd_tasks_offered_total", .counter, help: "Tasks of external steps this instance gave to its workers.", value: Double(t.offered.load(ordering: .relaxed))))
        families.append(F("workflowd_tasks_completed_total", .counter, help: "Workers' complete answers this instance committed.", value: Double(t.completed.load(ordering: .relaxed))))
        families.append(F("workflowd_tasks_failed_total", .counter, help: "Workers' fail answers this instance committed (each a retry or, at the limit, a pause).", value: Double(t.failed.load(ordering: .relaxed))))
        families.append(F("workflowd_tasks_expired_total", .counter, help: "Tasks held by this instance's workers whose deadline passed unanswered (offered again).", value: Double(t.expired.load(ordering: .relaxed))))
        families.append(F("workflowd_task_wait_seconds", .histogram, help: "Time from a task becoming free to its offer to a worker.", samples: t.wait.samples()))
        var waiting: [F.Sample] = []
        var held: [F.Sample] = []
        var workers: [F.Sample] = []
        for e in s.external {
            let labels = [L("workflow", e.workflow), L("status", core.definitions[e.workflow]?.statusName(e.status) ?? String(e.status))]
            waiting.append(.init(labels: labels, value: Double(e.waiting)))
            held.append(.init(labels: labels, value: Double(e.held)))
            workers.append(.init(labels: labels, value: Double(e.workers)))
        }
        families.append(F("workflowd_tasks_waiting", .gauge, help: "Runs waiting in an external status for a worker (free tasks).", samples: waiting))
        families.append(F("workflowd_tasks_held", .gauge, help: "Tasks of an external status held by workers (of any instance).", samples: held))
        families.append(F("workflowd_workers", .gauge, help: "Workers of an external status connected to this instance.", samples: workers))
        families.append(F("workflowd_leases_held", .gauge, help: "Leases (relay, poller, retention, consumer partitions, member slot) this instance holds.", value: Double(heldLeases.count)))
        return families
    }
}
