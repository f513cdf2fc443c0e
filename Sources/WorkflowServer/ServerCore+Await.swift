import CLibUV
import WorkflowEngine
import WorkflowWire

/// `await`: registers a watcher with the hub before reading the run and its history, so an event
/// committed in between is seen either in the history or live, then answers when it decides.
extension ServerCore {
    func startAwait(_ a: AwaitArguments, ticket: SessionStateMachine.Ticket, id: RequestID?, on conn: Connection) {
        let deadline = uv_now(loop.loop) + UInt64(a.timeoutMilliseconds)
        switch a.run {
        case .runID(let runID):
            watch(runID: runID, refs: a.statuses, deadline: deadline, ticket: ticket, id: id, on: conn)
        case .foreignID:
            let service = self.service
            let logger = self.logger
            let metrics = self.metrics
            let ref = a.run
            offLoop {
                await attempt { try await ServerCore.resolve(ref, service) }.mapError {
                    ServerCore.mapError($0, op: "await", logger: logger, metrics: metrics)
                }
            } then: { result in
                switch result {
                case .success(let run):
                    self.watch(
                        runID: run.runID, knownRun: run, refs: a.statuses, deadline: deadline, ticket: ticket, id: id, on: conn)
                case .failure(let e):
                    conn.reply(ticket, Reply.failure(id: id, e))
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
        let service = self.service
        offLoop {
            await attempt { () async throws -> RunAndHistory in
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
        } then: { result in
            self.awaitLoaded(w, result)
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
            completeAwait(w, Replies.awaitReached(w.requestID, run, encoder))
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
            completeAwait(w, Replies.awaitFailure(w.requestID, .unreachable, run, encoder))
        } else if !seen.isEmpty {
            finishAwait(w, .unreachable)
        } else if w.timedOut {
            completeAwait(w, Replies.awaitFailure(w.requestID, .timeout, run, encoder))
        } else {
            w.state = .waiting
        }
    }

    /// The outcome is known; answer with the run. When a live event decided it and this
    /// instance committed that very version, the run is in memory (`recentRun`); otherwise it is
    /// read as it is now.
    func finishAwait(_ w: AwaitWatcher, _ outcome: AwaitWatcher.Outcome, event: EventData? = nil) {
        if case .reached = outcome, let event, let run = service.recentRun(id: w.runID, version: event.version) {
            completeAwait(w, Replies.awaitReached(w.requestID, run, self.encoder))
            return
        }
        w.state = .fetching
        let service = self.service
        let encoder = self.encoder
        let logger = self.logger
        let metrics = self.metrics
        let id = w.requestID
        let runID = w.runID
        offLoop {
            let result = await attempt { () async throws -> [UInt8] in
                let run = try await ServerCore.resolve(.runID(runID), service)
                switch outcome {
                case .reached:
                    return Replies.awaitReached(id, run, encoder)
                case .unreachable, .timeout:
                    return Replies.awaitFailure(id, outcome, run, encoder)
                }
            }
            return switch result {
            case .success(let b): b
            case .failure(let error): Reply.failure(id: id, ServerCore.mapError(error, op: "await", logger: logger, metrics: metrics))
            }
        } then: { bytes in
            self.completeAwait(w, bytes)
        }
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

