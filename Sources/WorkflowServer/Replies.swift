import WorkflowEngine
import WorkflowWire

/// Reply bodies built from engine values (off the loop, inside the ops' Tasks).
enum Replies {
    /// `{"run": {...}}`
    static func run(_ id: RequestID?, _ run: Run, _ encoder: PayloadEncoder) -> [UInt8] {
        Reply.success(id: id) { w in w.key("run"); encoder.run(run).write(to: &w) }
    }

    /// `submit` / `trigger`: `run_id, foreign_id, status, created`.
    static func created(_ id: RequestID?, _ result: CreateRunResult, _ encoder: PayloadEncoder) -> [UInt8] {
        let run = result.run
        let created: Bool
        switch result {
        case .created: created = true
        case .existing: created = false
        }
        return Reply.success(id: id) { w in
            w.key("run_id"); w.string(run.runID)
            w.key("foreign_id"); w.string(run.foreignID)
            w.key("status"); w.string(encoder.statusName(workflow: run.workflow, code: run.status) ?? String(run.status))
            w.key("created"); w.bool(created)
        }
    }

    /// The reply of an await whose run reached one of its statuses.
    static func awaitReached(_ id: RequestID?, _ run: Run, _ encoder: PayloadEncoder) -> [UInt8] {
        Self.run(id, run, encoder)
    }

    static func awaitFailure(_ id: RequestID?, _ outcome: AwaitWatcher.Outcome, _ run: Run, _ encoder: PayloadEncoder) -> [UInt8] {
        let error: WireError =
            switch outcome {
            case .timeout: WireError(.timeout, "the run did not reach the status in time", run: encoder.runJSON(run))
            case .unreachable, .reached:
                WireError(.unreachable, "the run finished without reaching the status", run: encoder.runJSON(run))
            }
        return Reply.failure(id: id, error)
    }

    static func statsInfo(
        _ s: EngineStats, _ encoder: PayloadEncoder, connections: Int, subscriptions: Int, uptimeMs: Int64
    ) -> StatsInfo {
        let byStatus = s.byStatus.keys.sorted().map { wf in
            (
                workflow: wf,
                counts: s.byStatus[wf]!.keys.sorted().map {
                    StatsInfo.Count(name: encoder.statusName(workflow: wf, code: $0) ?? String($0), count: s.byStatus[wf]![$0]!)
                }
            )
        }
        let byRunState = s.byRunState.keys.sorted().map { wf in
            (
                workflow: wf,
                counts: s.byRunState[wf]!.keys.sorted { $0.rawValue < $1.rawValue }.map {
                    StatsInfo.Count(name: $0.name, count: s.byRunState[wf]![$0]!)
                }
            )
        }
        let now = SystemClock().now().milliseconds
        let age = s.outbox.oldest.map { max(0, now - $0.milliseconds) }
        let external = s.external.map { e in
            StatsInfo.External(
                workflow: e.workflow, status: encoder.statusName(workflow: e.workflow, code: e.status) ?? String(e.status),
                waiting: e.waiting, held: e.held, scheduled: e.scheduled,
                oldestWaitingMilliseconds: e.oldestWaiting.map { max(0, now - $0.milliseconds) }, workers: e.workers)
        }
        return StatsInfo(
            byStatus: byStatus, byRunState: byRunState, outboxPending: s.outbox.pending, outboxOldestAgeMilliseconds: age,
            head: s.head, consumers: s.consumers.map { .init(name: $0.name, cursor: $0.cursor, lag: $0.lag) },
            connections: connections, subscriptions: subscriptions, uptimeMilliseconds: uptimeMs, external: external)
    }
}
