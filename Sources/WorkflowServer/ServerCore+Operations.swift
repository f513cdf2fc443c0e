import CLibUV
import Logging
import WorkflowEngine
import WorkflowWire

/// Op dispatch. Runs on the loop thread; anything that talks to the engine runs in a Task whose
/// result comes back through the loop's queue. Replies are encoded inside the Task, off the loop.
extension ServerCore {
    func dispatch(_ request: Request, ticket: SessionStateMachine.Ticket, on conn: Connection) {
        let id = request.id
        let service = self.service
        let encoder = self.encoder
        metrics.request(request.operation.name)
        switch request.operation {
        case .ping:
            conn.reply(ticket, Reply.success(id: id))
        case .hello:
            let info = HelloInfo(
                server: configuration.serverName, version: configuration.serverVersion, maxLine: configuration.maxLine,
                workflows: encoder.hello)
            conn.reply(ticket, Reply.success(id: id, info.writeMembers))
        case .graph(let workflow):
            guard let wf = encoder.workflow(named: workflow) else {
                conn.reply(ticket, Reply.failure(id: id, WireError(.notFound, "no workflow '\(workflow)'")))
                return
            }
            let mermaid = encoder.mermaid(wf)
            conn.reply(ticket, Reply.success(id: id) { w in w.key("mermaid"); w.string(mermaid) })
        case .submit(let orderID, let order):
            spawn(conn, ticket, id, op: "submit") {
                let result = try await service.trigger(workflow: defaultWorkflow, foreignID: orderID, object: order)
                return ServerCore.createdReply(id, result, encoder)
            }
        case .trigger(let workflow, let foreignID, let object):
            guard encoder.workflow(named: workflow) != nil else {
                conn.reply(ticket, Reply.failure(id: id, WireError(.notFound, "no workflow '\(workflow)'")))
                return
            }
            spawn(conn, ticket, id, op: "trigger") {
                let result = try await service.trigger(workflow: workflow, foreignID: foreignID, object: object)
                return ServerCore.createdReply(id, result, encoder)
            }
        case .get(let ref):
            spawn(conn, ticket, id, op: "get") {
                let run = try await ServerCore.resolve(ref, service)
                return Reply.success(id: id) { w in w.key("run"); encoder.run(run).write(to: &w) }
            }
        case .history(let ref):
            spawn(conn, ticket, id, op: "history") {
                let run = try await ServerCore.resolve(ref, service)
                let events = try await service.history(runID: run.runID)
                return Reply.success(id: id) { w in
                    w.key("events")
                    w.beginArray()
                    for e in events { encoder.event(e).write(to: &w) }
                    w.endArray()
                }
            }
        case .list(let args):
            let query: RunQuery
            do {
                query = try makeQuery(args)
            } catch {
                conn.reply(ticket, Reply.failure(id: id, error))
                return
            }
            spawn(conn, ticket, id, op: "list") {
                let page = try await service.list(query)
                return Reply.success(id: id) { w in
                    w.key("runs")
                    w.beginArray()
                    for r in page.runs { encoder.run(r).write(to: &w) }
                    w.endArray()
                    w.key("next_cursor")
                    w.string(page.next.map { ListCursor(createdAt: $0.createdAt.milliseconds, runID: $0.runID).text })
                }
            }
        case .control(let command, let ref, let reason):
            let engineCommand: RunCommand =
                switch command {
                case .pause: .pause
                case .resume: .resume
                case .cancel: .cancel
                case .deleteData: .deleteData
                }
            spawn(conn, ticket, id, op: command.rawValue) {
                let runID: String
                switch ref {
                case .runID(let r): runID = r
                case .foreignID: runID = try await ServerCore.resolve(ref, service).runID
                }
                let run = try await service.control(engineCommand, runID: runID, reason: reason)
                return Reply.success(id: id) { w in w.key("run"); encoder.run(run).write(to: &w) }
            }
        case .stats:
            let connections = connectionCount
            let subscriptions = hub.count
            let uptime = startedAt.duration(to: .now)
            let uptimeMs = uptime.components.seconds * 1000 + uptime.components.attoseconds / 1_000_000_000_000_000
            spawn(conn, ticket, id, op: "stats") {
                let s = try await service.stats()
                let info = ServerCore.statsInfo(s, encoder, connections: connections, subscriptions: subscriptions, uptimeMs: uptimeMs)
                return Reply.success(id: id, info.writeMembers)
            }
        case .health:
            spawn(conn, ticket, id, op: "health") {
                let report = await service.health()
                let info = HealthInfo(
                    checks: report.checks.keys.sorted().map { HealthInfo.Check(name: $0, ok: report.checks[$0]!.ok, detail: report.checks[$0]!.detail) })
                return Reply.success(id: id, info.writeMembers)
            }
        case .metrics:
            let text = metricsText()
            spawn(conn, ticket, id, op: "metrics") {
                let body = try await text()
                return Reply.success(id: id) { w in w.key("metrics"); w.string(body) }
            }
        case .subscribe(let args):
            subscribe(args, ticket: ticket, id: id, on: conn)
        case .unsubscribe(let sub):
            guard let s = conn.subscriptions.removeValue(forKey: sub) else {
                conn.reply(ticket, Reply.failure(id: id, WireError(.notFound, "no subscription \(sub) on this connection")))
                return
            }
            hub.remove(s)
            conn.subscriptionsChanged()
            conn.reply(ticket, Reply.success(id: id))
        case .awaitStatus(let args):
            startAwait(args, ticket: ticket, id: id, on: conn)
        }
    }

    /// Collects the metrics text: the server's counters are read now, on the loop thread; the
    /// returned closure reads the engine's (database queries) and renders, off the loop.
    func metricsText() -> @Sendable () async throws -> String {
        let uptime = startedAt.duration(to: .now).components
        let own = metrics.families(
            connections: connectionCount, subscriptions: hub.count,
            uptimeSeconds: Double(uptime.seconds) + Double(uptime.attoseconds) / 1e18)
        let service = self.service
        return { PrometheusText.render(own + (try await service.metrics())) }
    }

    /// Runs `body` in a Task and sends its reply (or its error) back through the loop.
    private func spawn(
        _ conn: Connection, _ ticket: SessionStateMachine.Ticket, _ id: RequestID?, op: String,
        _ body: @escaping @Sendable () async throws -> [UInt8]
    ) {
        let bound = LoopBound(conn)
        let loop = self.loop
        let logger = self.logger
        let metrics = self.metrics
        Task {
            let bytes: [UInt8] =
                switch await attempt(body) {
                case .success(let b): b
                case .failure(let error): Reply.failure(id: id, ServerCore.mapError(error, op: op, logger: logger, metrics: metrics))
                }
            loop.execute { bound.value.reply(ticket, bytes) }
        }
    }

    static func mapError(_ error: any Error, op: String, logger: Logger, metrics: ServerMetrics) -> WireError {
        let (wire, log) = wireError(from: error)
        metrics.error(wire.code)
        if log {
            logger.error("request failed", metadata: ["op": "\(op)", "error": "\(String(reflecting: error))"])
        }
        return wire
    }

    static func resolve(_ ref: RunRef, _ service: any WorkflowService) async throws -> Run {
        switch ref {
        case .runID(let r):
            guard let run = try await service.run(id: r) else { throw WireError(.notFound, "no run '\(r)'") }
            return run
        case .foreignID(let workflow, let foreignID):
            guard let run = try await service.latestRun(workflow: workflow, foreignID: foreignID) else {
                throw WireError(.notFound, "no run of '\(workflow)' for foreign_id '\(foreignID)'")
            }
            return run
        }
    }

    static func createdReply(_ id: RequestID?, _ result: CreateRunResult, _ encoder: PayloadEncoder) -> [UInt8] {
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

    private func makeQuery(_ a: ListArguments) throws(WireError) -> RunQuery {
        RunQuery(
            workflow: a.workflow, foreignIDs: a.foreignIDs,
            statuses: try encoder.statusCodes(a.statuses, workflow: a.workflow, field: "status"),
            runStates: a.runStates.compactMap(RunState.init(rawValue:)),
            createdAfter: a.createdAfter.map(Timestamp.init(milliseconds:)),
            createdBefore: a.createdBefore.map(Timestamp.init(milliseconds:)),
            order: a.order == .asc ? .ascending : .descending, limit: a.limit,
            after: a.cursor.map { RunCursor(createdAt: Timestamp(milliseconds: $0.createdAt), runID: $0.runID) })
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
        let age = s.outbox.oldest.map { max(0, SystemClock().now().milliseconds - $0.milliseconds) }
        return StatsInfo(
            byStatus: byStatus, byRunState: byRunState, outboxPending: s.outbox.pending, outboxOldestAgeMilliseconds: age,
            head: s.head, consumers: s.consumers.map { .init(name: $0.name, cursor: $0.cursor, lag: $0.lag) },
            connections: connections, subscriptions: subscriptions, uptimeMilliseconds: uptimeMs)
    }

    // MARK: - subscribe

    private func subscribe(_ a: SubscribeArguments, ticket: SessionStateMachine.Ticket, id: RequestID?, on conn: Connection) {
        guard conn.subscriptions.count + conn.pendingSubscribes < configuration.maxSubscriptionsPerConnection else {
            conn.reply(
                ticket,
                Reply.failure(
                    id: id,
                    WireError(.limit, "too many subscriptions on this connection (max \(configuration.maxSubscriptionsPerConnection))")))
            return
        }
        let filter: EventFilter
        do {
            filter = EventFilter(
                workflow: a.workflow, foreignID: a.foreignID, runID: a.runID,
                statuses: try encoder.statusCodes(a.statuses, workflow: a.workflow, field: "status"),
                runStates: a.runStates.compactMap(RunState.init(rawValue:)))
        } catch {
            conn.reply(ticket, Reply.failure(id: id, error))
            return
        }
        conn.pendingSubscribes += 1
        let bound = LoopBound(conn)
        let core = LoopBound(self)
        let service = self.service
        let loop = self.loop
        Task {
            // The head first: retention never deletes the newest event, so the earliest read
            // after it is at most the head.
            let head = await attempt { () async throws -> (head: Int64, earliest: Int64?) in
                let head = try await service.head()
                return (head, try await service.earliestSeq())
            }
            loop.execute { core.value.subscribed(bound.value, ticket, id, a.from, filter, head) }
        }
    }

    private func subscribed(
        _ conn: Connection, _ ticket: SessionStateMachine.Ticket, _ id: RequestID?, _ from: SubscribeFrom,
        _ filter: EventFilter, _ log: Result<(head: Int64, earliest: Int64?), any Error>
    ) {
        conn.pendingSubscribes -= 1
        guard !conn.isClosed else { return }
        switch log {
        case .failure(let error):
            conn.reply(ticket, Reply.failure(id: id, ServerCore.mapError(error, op: "subscribe", logger: logger, metrics: metrics)))
        case .success(let (head, earliest)):
            let position: Int64
            switch from {
            case .now: position = head
            case .earliest: position = max(0, (earliest ?? 1) - 1)
            case .seq(let s):
                // `from: s` asks for every event after s: refused when retention deleted s + 1.
                if let earliest, earliest - 1 > s {  // (not s + 1: s may be Int64.max)
                    metrics.error(.gone)
                    conn.reply(
                        ticket,
                        Reply.failure(
                            id: id,
                            WireError(
                                .gone,
                                "events after seq \(s) up to \(earliest - 1) were removed by retention; the earliest seq still kept is \(earliest) (subscribe from \(earliest - 1) or \"earliest\")",
                                earliest: earliest)))
                    return
                }
                position = s
            }
            let subID = conn.nextSubscriptionID
            conn.nextSubscriptionID += 1
            let sub = Subscription(id: subID, connection: conn, filter: filter, position: position)
            conn.subscriptions[subID] = sub
            hub.add(sub, head: head)
            conn.subscriptionsChanged()
            conn.reply(ticket, Reply.success(id: id) { w in w.key("sub"); w.int(subID); w.key("head"); w.int(head) }, activates: subID)
        }
    }

    // MARK: - await

    private func startAwait(_ a: AwaitArguments, ticket: SessionStateMachine.Ticket, id: RequestID?, on conn: Connection) {
        let deadline = uv_now(loop.loop) + UInt64(a.timeoutMilliseconds)
        switch a.run {
        case .runID(let runID):
            watch(runID: runID, refs: a.statuses, deadline: deadline, ticket: ticket, id: id, on: conn)
        case .foreignID:
            let bound = LoopBound(conn)
            let core = LoopBound(self)
            let service = self.service
            let loop = self.loop
            let logger = self.logger
            let metrics = self.metrics
            let ref = a.run
            Task {
                let result = await attempt { try await ServerCore.resolve(ref, service) }.mapError {
                    ServerCore.mapError($0, op: "await", logger: logger, metrics: metrics)
                }
                loop.execute {
                    let conn = bound.value
                    switch result {
                    case .success(let run):
                        core.value.watch(
                            runID: run.runID, knownRun: run, refs: a.statuses, deadline: deadline, ticket: ticket, id: id, on: conn)
                    case .failure(let e):
                        conn.reply(ticket, Reply.failure(id: id, e))
                    }
                }
            }
        }
    }

    /// `knownRun`, when the caller has just read the run, saves reading it again: a copy read
    /// before the watcher is registered is enough, because the history is read after it.
    private func watch(
        runID: String, knownRun: Run? = nil, refs: [StatusRef], deadline: UInt64, ticket: SessionStateMachine.Ticket,
        id: RequestID?, on conn: Connection
    ) {
        guard !conn.isClosed else { return }
        if isDraining {
            conn.reply(ticket, Reply.failure(id: id, WireError(.draining, "the server is shutting down")))
            return
        }
        let w = AwaitWatcher(core: self, connection: conn, ticket: ticket, requestID: id, runID: runID, refs: refs)
        conn.awaits[ticket.number] = w
        hub.addWatcher(w)
        let now = uv_now(loop.loop)
        w.timer = LoopTimer(loop: loop, milliseconds: deadline > now ? deadline - now : 0) { [weak w] in w?.deadlinePassed() }
        let bound = LoopBound(w)
        let core = LoopBound(self)
        let service = self.service
        let loop = self.loop
        Task {
            let result = await attempt { () async throws -> RunAndHistory in
                let run: Run
                if let knownRun { run = knownRun } else { run = try await ServerCore.resolve(.runID(runID), service) }
                // The watcher is registered: events the log does not hold yet arrive live, so
                // there is no need to wait for the relay here. The history only matters for a
                // status the run may have passed through: not for the default (terminal
                // statuses, which a run never leaves) when the run was read after the watcher
                // was registered — every later change then arrives live.
                guard knownRun != nil || !refs.isEmpty else { return RunAndHistory(run: run, history: []) }
                let history = try await service.loggedHistory(runID: runID)
                return RunAndHistory(run: run, history: history)
            }
            loop.execute { core.value.awaitLoaded(bound.value, result) }
        }
    }

    private func awaitLoaded(_ w: AwaitWatcher, _ result: Result<RunAndHistory, any Error>) {
        guard case .loading = w.state else { return }
        let run: Run
        let history: [WorkflowEvent]
        switch result {
        case .failure(let error):
            completeAwait(w, Reply.failure(id: w.requestID, ServerCore.mapError(error, op: "await", logger: logger, metrics: metrics)))
            return
        case .success(let loaded):
            run = loaded.run
            history = loaded.history
        }
        let codes: [Int]
        if w.refs.isEmpty {
            codes = encoder.workflow(named: run.workflow)?.statuses.filter(\.terminal).map(\.code) ?? []
        } else {
            do {
                codes = try encoder.statusCodes(w.refs, workflow: run.workflow, field: "status")
            } catch {
                completeAwait(w, Reply.failure(id: w.requestID, error))
                return
            }
        }
        let set = Set(codes)
        w.statuses = set
        if set.contains(run.status) {
            completeAwait(w, ServerCore.awaitReached(w.requestID, run, encoder))
            return
        }
        if history.contains(where: { set.contains($0.status) }) {
            // The history was read after the run, so it can hold newer events than `run`:
            // answer with the run as it is now, never the older copy.
            finishAwait(w, .reached)
            return
        }
        let seen = w.seen.compactMap { e in w.judge(e).map { (outcome: $0, event: e) } }
        w.seen = []
        if let reached = seen.first(where: { if case .reached = $0.outcome { true } else { false } }) {
            finishAwait(w, .reached, event: reached.event)
        } else if run.runState.isFinished {
            completeAwait(w, ServerCore.awaitFailure(w.requestID, .unreachable, run, encoder))
        } else if !seen.isEmpty {
            finishAwait(w, .unreachable)
        } else if w.timedOut {
            completeAwait(w, ServerCore.awaitFailure(w.requestID, .timeout, run, encoder))
        } else {
            w.state = .waiting
        }
    }

    /// The outcome is known; answer with the run. When a live event decided it and this
    /// instance committed that very version, the run is in memory (`recentRun`); otherwise it is
    /// read as it is now.
    func finishAwait(_ w: AwaitWatcher, _ outcome: AwaitWatcher.Outcome, event: EventData? = nil) {
        if case .reached = outcome, let event, let run = service.recentRun(id: w.runID, version: event.version) {
            completeAwait(w, ServerCore.awaitReached(w.requestID, run, self.encoder))
            return
        }
        w.state = .fetching
        let bound = LoopBound(w)
        let core = LoopBound(self)
        let service = self.service
        let encoder = self.encoder
        let loop = self.loop
        let logger = self.logger
        let metrics = self.metrics
        let id = w.requestID
        let runID = w.runID
        Task {
            let result = await attempt { () async throws -> [UInt8] in
                let run = try await ServerCore.resolve(.runID(runID), service)
                switch outcome {
                case .reached:
                    return ServerCore.awaitReached(id, run, encoder)
                case .unreachable, .timeout:
                    return ServerCore.awaitFailure(id, outcome, run, encoder)
                }
            }
            let bytes: [UInt8] =
                switch result {
                case .success(let b): b
                case .failure(let error): Reply.failure(id: id, ServerCore.mapError(error, op: "await", logger: logger, metrics: metrics))
                }
            loop.execute { core.value.completeAwait(bound.value, bytes) }
        }
    }

    /// The reply of an await whose run reached one of its statuses.
    static func awaitReached(_ id: RequestID?, _ run: Run, _ encoder: PayloadEncoder) -> [UInt8] {
        Reply.success(id: id) { out in out.key("run"); encoder.run(run).write(to: &out) }
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

    func completeAwait(_ w: AwaitWatcher, _ bytes: [UInt8]) {
        if case .done = w.state { return }
        cancelAwait(w)
        w.connection.awaits[w.ticket.number] = nil
        w.connection.reply(w.ticket, bytes)
    }

    func cancelAwait(_ w: AwaitWatcher) {
        w.state = .done
        w.timer?.cancel()
        w.timer = nil
        hub.removeWatcher(w)
    }
}

struct RunAndHistory: Sendable {
    var run: Run
    var history: [WorkflowEvent]
}

/// The outcome of an async throwing call as a value.
func attempt<T: Sendable>(_ body: @Sendable () async throws -> T) async -> Result<T, any Error> {
    do {
        return .success(try await body())
    } catch {
        return .failure(error)
    }
}
