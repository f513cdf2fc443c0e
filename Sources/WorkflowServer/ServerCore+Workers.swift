import WorkflowEngine
import WorkflowWire

/// External steps on the socket: `work` / `unwork` (a worker and its task frames, with flow
/// control) and the answers `complete`, `fail`, `extend`, `callback`. The engine decides which
/// worker gets which task (`TaskBroker`); the server writes the frames and tells the engine when
/// a worker's connection can take more.
extension ServerCore {
    func work(_ a: WorkArguments, _ id: RequestID?, _ ticket: SessionStateMachine.Ticket, _ conn: Connection) {
        guard let wf = encoder.workflow(named: a.workflow) else {
            conn.reply(ticket, Reply.failure(id: id, WireError(.notFound, "no workflow '\(a.workflow)'")))
            return
        }
        let status: Int
        do {
            status = try encoder.statusCode(a.status, workflow: wf.name, field: "status")
        } catch {
            conn.reply(ticket, Reply.failure(id: id, error))
            return
        }
        let workerID = conn.nextWorkerID
        let spec = WorkerSpec(
            workflow: wf.name, status: status, maxInFlight: a.maxInFlight, leaseMilliseconds: Int64(a.leaseMilliseconds))
        let bound = LoopBound(conn, loop: loop)
        let loop = self.loop
        let encoder = self.encoder
        let token: WorkerToken
        do {
            token = try service.addWorker(spec) { tasks in
                // Encoded here, on the engine's thread: the loop only appends bytes.
                let frames = tasks.map { encoder.task($0).frame(worker: workerID) }
                let claims = tasks.map(\.claim)
                loop.execute { bound.value.core.deliverTasks(workerID, frames, claims, on: bound.value) }
            }
        } catch {
            conn.reply(ticket, Reply.failure(id: id, ServerCore.mapError(error, op: "work", logger: logger, metrics: metrics)))
            return
        }
        conn.nextWorkerID += 1
        conn.workers[workerID] = Worker(id: workerID, token: token, workflow: wf.name)
        conn.streamsChanged()
        conn.reply(ticket, Reply.success(id: id) { w in w.key("worker"); w.int(workerID) }, activates: .worker(workerID))
    }

    func unwork(_ workerID: Int64, _ id: RequestID?, _ ticket: SessionStateMachine.Ticket, _ conn: Connection) {
        guard let w = conn.workers.removeValue(forKey: workerID) else {
            conn.reply(ticket, Reply.failure(id: id, WireError(.notFound, "no worker \(workerID) on this connection")))
            return
        }
        // From here no frame of it is written (deliverTasks finds it gone); what it holds is
        // freed and offered again.
        service.removeWorker(w.token)
        conn.streamsChanged()
        conn.reply(ticket, Reply.success(id: id))
    }

    /// The `work` reply is written: the worker may get tasks.
    func activateWorker(_ workerID: Int64, on conn: Connection) {
        guard let w = conn.workers[workerID] else { return }
        w.active = true
        updateReadiness(conn)
    }

    /// The connection drained below the low-water mark.
    func workersWritable(_ conn: Connection) { updateReadiness(conn) }

    /// Tasks the engine claimed for a worker. Written even above the high-water mark (they are
    /// claimed, and bounded by `max_in_flight`); a worker that is gone drops them — the engine
    /// frees them when the worker is removed.
    func deliverTasks(_ workerID: Int64, _ frames: [[UInt8]], _ claims: [TaskClaim], on conn: Connection) {
        guard conn.workers[workerID] != nil, !conn.isClosed else { return }
        if !conn.pushTaskFrames(frames) { return }
        updateReadiness(conn)
    }

    /// Tells the engine which workers of `conn` may get tasks: active ones, while the
    /// connection takes pushed frames.
    private func updateReadiness(_ conn: Connection) {
        let writable = conn.acceptsPushedFrames
        for w in conn.workers.values {
            let ready = w.active && writable
            if ready != w.ready {
                w.ready = ready
                service.setWorkerReady(w.token, ready)
            }
        }
    }

    // MARK: Answers

    func complete(_ a: CompleteArguments, _ id: RequestID?, _ ticket: SessionStateMachine.Ticket, _ conn: Connection) {
        let status: Int
        do {
            status = try encoder.statusCode(a.status, workflow: nil, field: "status")
        } catch {
            conn.reply(ticket, Reply.failure(id: id, error))
            return
        }
        let service = self.service
        let encoder = self.encoder
        spawn(conn, ticket, id, op: "complete") {
            Replies.run(id, try await service.complete(task: a.task, status: status, object: a.object, reason: a.reason), encoder)
        }
    }

    func fail(_ task: String, _ error: String, _ id: RequestID?, _ ticket: SessionStateMachine.Ticket, _ conn: Connection) {
        let service = self.service
        let encoder = self.encoder
        spawn(conn, ticket, id, op: "fail") {
            switch try await service.fail(task: task, error: error) {
            case .retry(let at):
                return Reply.success(id: id) { w in w.key("retry_at"); w.string(at.rfc3339) }
            case .paused(let run):
                return Reply.success(id: id) { w in
                    w.key("paused"); w.bool(true)
                    w.key("run"); encoder.run(run).write(to: &w)
                }
            }
        }
    }

    func extend(_ task: String, _ lease: Int?, _ id: RequestID?, _ ticket: SessionStateMachine.Ticket, _ conn: Connection) {
        let service = self.service
        spawn(conn, ticket, id, op: "extend") {
            let deadline = try await service.extend(task: task, leaseMilliseconds: lease.map(Int64.init))
            return Reply.success(id: id) { w in w.key("deadline"); w.string(deadline.rfc3339) }
        }
    }

    func callback(_ a: CallbackArguments, _ id: RequestID?, _ ticket: SessionStateMachine.Ticket, _ conn: Connection) {
        let workflow: String? =
            switch a.run {
            case .runID: nil
            case .foreignID(let w, _): w
            }
        let status: Int
        let next: Int
        do {
            status = try encoder.statusCode(a.status, workflow: workflow, field: "status")
            next = try encoder.statusCode(a.next, workflow: workflow, field: "next")
        } catch {
            conn.reply(ticket, Reply.failure(id: id, error))
            return
        }
        let service = self.service
        let encoder = self.encoder
        spawn(conn, ticket, id, op: "callback") {
            let runID = try await ServerCore.runID(a.run, service)
            let run = try await service.callback(runID: runID, status: status, next: next, object: a.object, reason: a.reason)
            return Replies.run(id, run, encoder)
        }
    }
}
