import WorkflowEngine
import WorkflowWire

/// Ops that describe the service: hello, graph, stats, health, metrics.
extension ServerCore {
    func hello(_ id: RequestID?, _ ticket: SessionStateMachine.Ticket, _ conn: Connection) {
        let info = HelloInfo(
            server: configuration.serverName, version: configuration.serverVersion, maxLine: configuration.maxLine,
            workflows: encoder.hello)
        conn.reply(ticket, Reply.success(id: id, info.writeMembers))
    }

    func graph(_ workflow: String, _ id: RequestID?, _ ticket: SessionStateMachine.Ticket, _ conn: Connection) {
        guard let wf = encoder.workflow(named: workflow) else {
            conn.reply(ticket, Reply.failure(id: id, WireError(.notFound, "no workflow '\(workflow)'")))
            return
        }
        let mermaid = encoder.mermaid(wf)
        conn.reply(ticket, Reply.success(id: id) { w in w.key("mermaid"); w.string(mermaid) })
    }

    func stats(_ id: RequestID?, _ ticket: SessionStateMachine.Ticket, _ conn: Connection) {
        let connections = connectionCount
        let subscriptions = hub.count
        let uptime = startedAt.duration(to: .now)
        let uptimeMs = uptime.components.seconds * 1000 + uptime.components.attoseconds / 1_000_000_000_000_000
        let service = self.service
        let encoder = self.encoder
        spawn(conn, ticket, id, op: "stats") {
            let s = try await service.stats()
            let info = Replies.statsInfo(s, encoder, connections: connections, subscriptions: subscriptions, uptimeMs: uptimeMs)
            return Reply.success(id: id, info.writeMembers)
        }
    }

    func health(_ id: RequestID?, _ ticket: SessionStateMachine.Ticket, _ conn: Connection) {
        let service = self.service
        spawn(conn, ticket, id, op: "health") {
            let report = await service.health()
            let info = HealthInfo(
                checks: report.checks.keys.sorted().map {
                    HealthInfo.Check(name: $0, ok: report.checks[$0]!.ok, detail: report.checks[$0]!.detail)
                })
            return Reply.success(id: id, info.writeMembers)
        }
    }

    func metricsOp(_ id: RequestID?, _ ticket: SessionStateMachine.Ticket, _ conn: Connection) {
        let text = metricsText()
        spawn(conn, ticket, id, op: "metrics") {
            let body = try await text()
            return Reply.success(id: id) { w in w.key("metrics"); w.string(body) }
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
}
