import WorkflowEngine
import WorkflowWire

/// Ops on runs: submit, trigger, get, history, list, and the run-state commands.
extension ServerCore {
    func submit(_ orderID: String, _ order: [UInt8], _ id: RequestID?, _ ticket: SessionStateMachine.Ticket, _ conn: Connection) {
        let service = self.service
        let encoder = self.encoder
        spawn(conn, ticket, id, op: "submit") {
            let result = try await service.trigger(workflow: defaultWorkflow, foreignID: orderID, object: order)
            return Replies.created(id, result, encoder)
        }
    }

    func trigger(
        _ workflow: String, _ foreignID: String, _ object: [UInt8], _ id: RequestID?, _ ticket: SessionStateMachine.Ticket,
        _ conn: Connection
    ) {
        guard encoder.workflow(named: workflow) != nil else {
            conn.reply(ticket, Reply.failure(id: id, WireError(.notFound, "no workflow '\(workflow)'")))
            return
        }
        let service = self.service
        let encoder = self.encoder
        spawn(conn, ticket, id, op: "trigger") {
            let result = try await service.trigger(workflow: workflow, foreignID: foreignID, object: object)
            return Replies.created(id, result, encoder)
        }
    }

    func get(_ ref: RunRef, _ id: RequestID?, _ ticket: SessionStateMachine.Ticket, _ conn: Connection) {
        let service = self.service
        let encoder = self.encoder
        spawn(conn, ticket, id, op: "get") {
            Replies.run(id, try await ServerCore.resolve(ref, service), encoder)
        }
    }

    func history(_ ref: RunRef, _ id: RequestID?, _ ticket: SessionStateMachine.Ticket, _ conn: Connection) {
        let service = self.service
        let encoder = self.encoder
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
    }

    func list(_ args: ListArguments, _ id: RequestID?, _ ticket: SessionStateMachine.Ticket, _ conn: Connection) {
        let query: RunQuery
        do {
            query = try makeQuery(args)
        } catch {
            conn.reply(ticket, Reply.failure(id: id, error))
            return
        }
        let service = self.service
        let encoder = self.encoder
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
    }

    func control(
        _ command: ControlCommand, _ ref: RunRef, _ reason: String?, _ id: RequestID?, _ ticket: SessionStateMachine.Ticket,
        _ conn: Connection
    ) {
        let engineCommand: RunCommand =
            switch command {
            case .pause: .pause
            case .resume: .resume
            case .cancel: .cancel
            case .deleteData: .deleteData
            }
        let service = self.service
        let encoder = self.encoder
        spawn(conn, ticket, id, op: command.rawValue) {
            let runID = try await ServerCore.runID(ref, service)
            return Replies.run(id, try await service.control(engineCommand, runID: runID, reason: reason), encoder)
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
}
