import WorkflowEngine
import WorkflowWire

/// `subscribe` and `unsubscribe`: the handshake that starts a subscription at the right `seq`
/// (the delivery itself is `SubscriptionHub`'s).
extension ServerCore {
    func subscribe(_ a: SubscribeArguments, ticket: SessionStateMachine.Ticket, id: RequestID?, on conn: Connection) {
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
        let service = self.service
        offLoop {
            // The head first: retention never deletes the newest event, so the earliest read
            // after it is at most the head.
            await attempt { () async throws -> (head: Int64, earliest: Int64?) in
                let head = try await service.head()
                return (head, try await service.earliestSeq())
            }
        } then: { head in
            self.subscribed(conn, ticket, id, a.from, filter, head)
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
            conn.reply(
                ticket, Reply.failure(id: id, ServerCore.mapError(error, op: "subscribe", logger: logger, metrics: metrics)))
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
            conn.streamsChanged()
            conn.reply(
                ticket, Reply.success(id: id) { w in w.key("sub"); w.int(subID); w.key("head"); w.int(head) },
                activates: .subscription(subID))
        }
    }

    func unsubscribe(_ sub: Int64, _ id: RequestID?, _ ticket: SessionStateMachine.Ticket, _ conn: Connection) {
        guard let s = conn.subscriptions.removeValue(forKey: sub) else {
            conn.reply(ticket, Reply.failure(id: id, WireError(.notFound, "no subscription \(sub) on this connection")))
            return
        }
        hub.remove(s)
        conn.streamsChanged()
        conn.reply(ticket, Reply.success(id: id))
    }
}
