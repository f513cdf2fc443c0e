import Logging
import WorkflowEngine
import WorkflowWire

/// One `subscribe` of one connection. Loop thread only.
final class Subscription {
    enum Mode {
        /// Registered; its `subscribe` reply is not written yet, so nothing may be pushed.
        case pending
        /// Receives events as the hub gets them.
        case live
        /// Its connection's buffer is full; continues from `position` once it drains.
        case waitingWritable
        /// A catch-up read from the event log is in flight.
        case reading
        /// A catch-up read failed; a retry timer is set.
        case retrying
    }

    let id: Int64
    unowned let connection: Connection
    let filter: EventFilter
    /// `{"sub":S,"event":` — the part of a frame that differs between subscribers.
    let framePrefix: [UInt8]
    /// Every matching event with `seq <= position` has been pushed (or did not match).
    var position: Int64
    var mode: Mode = .pending
    var cancelled = false
    var retryTimer: LoopTimer?

    init(id: Int64, connection: Connection, filter: EventFilter, position: Int64) {
        self.id = id
        self.connection = connection
        self.filter = filter
        self.framePrefix = EventFrame.prefix(sub: id)
        self.position = position
    }
}

/// Fans the event stream out to subscriptions, with flow control. Loop thread only.
///
/// Events come from the engine's listener in `seq` order, each encoded to JSON once. A live
/// subscription gets each matching event pushed at once. When its connection's buffer is full,
/// the hub stops pushing to it and remembers only its `position`; once the buffer drains, the
/// subscription continues from there: from the recent events kept in memory if they reach back
/// far enough, otherwise by reading the log (`WorkflowService.events(after:)`) in batches, and
/// then rejoins live delivery. Memory per subscriber is a position and at most one batch, so a
/// slow reader never grows the server, and no event is skipped or sent twice.
final class SubscriptionHub {
    struct Recent: Sendable {
        let event: WorkflowEvent
        let json: [UInt8]
    }

    unowned let core: ServerCore
    private let capacity: Int
    /// Recent events with consecutive `seq`, oldest first (a ring of `capacity`).
    private var recent: [Recent] = []
    private var recentStart = 0
    /// The newest `seq` the hub has seen live; nil before the first event.
    private(set) var lastLiveSeq: Int64?
    /// The newest head the engine reported (to `subscribe`): before the first live event, a
    /// subscription behind it must read the log.
    private var knownHead: Int64 = 0
    private var subscriptions: [ObjectIdentifier: Subscription] = [:]
    private var watchers: [String: [AwaitWatcher]] = [:]

    init(core: ServerCore, capacity: Int) {
        self.core = core
        self.capacity = max(1, capacity)
    }

    var count: Int { subscriptions.count }

    // MARK: - Subscriptions

    func add(_ sub: Subscription, head: Int64) {
        knownHead = max(knownHead, head)
        subscriptions[ObjectIdentifier(sub)] = sub
    }

    func remove(_ sub: Subscription) {
        sub.cancelled = true
        sub.retryTimer?.cancel()
        sub.retryTimer = nil
        subscriptions[ObjectIdentifier(sub)] = nil
    }

    /// The `subscribe` reply was written: start delivering.
    func activate(connection: Connection, sub id: Int64) {
        guard let sub = connection.subscriptions[id], !sub.cancelled, case .pending = sub.mode else { return }
        advance(sub)
    }

    /// The connection's buffer drained below the low-water mark.
    func connectionWritable(_ connection: Connection) {
        for sub in connection.subscriptions.values where !sub.cancelled {
            if case .waitingWritable = sub.mode { advance(sub) }
        }
    }

    /// Events from the engine, in `seq` order (already encoded).
    func deliver(_ batch: [Recent]) {
        for item in batch {
            let seq = item.event.seq
            if let last = lastLiveSeq, seq <= last { continue }  // never twice
            if let last = lastLiveSeq, seq == last + 1 {
                appendRecent(item)
            } else {
                // First event, or the stream jumped: what is kept no longer connects.
                recent = [item]
                recentStart = 0
            }
            lastLiveSeq = seq
            for sub in subscriptions.values where !sub.cancelled {
                guard case .live = sub.mode else { continue }
                pushLive(item, to: sub)
            }
            if let list = watchers[item.event.runID] {
                for w in list { w.sawEvent(item.event.data) }
            }
        }
    }

    private func pushLive(_ item: Recent, to sub: Subscription) {
        let seq = item.event.seq
        if seq <= sub.position { return }
        if seq != sub.position + 1 {
            // Events between its position and this one were never seen live here.
            advance(sub)
            return
        }
        if sub.filter.matches(item.event.data) {
            guard sub.connection.pushFrame(prefix: sub.framePrefix, event: item.json) else {
                sub.mode = .waitingWritable
                return
            }
        }
        sub.position = seq
    }

    private func appendRecent(_ item: Recent) {
        if recent.count < capacity {
            recent.append(item)
        } else {
            recent[recentStart] = item
            recentStart = (recentStart + 1) % capacity
        }
    }

    /// The kept event with this `seq`, if still kept.
    private func recentIndex(of seq: Int64) -> Int? {
        guard let last = lastLiveSeq, !recent.isEmpty else { return nil }
        let first = last - Int64(recent.count) + 1
        guard seq >= first, seq <= last else { return nil }
        return Int(seq - first)
    }

    private func recentItem(_ k: Int) -> Recent { recent[(recentStart + k) % recent.count] }

    /// Moves a subscription forward from its position until it is live, waiting for its buffer,
    /// or reading the log.
    func advance(_ sub: Subscription) {
        guard !sub.cancelled else { return }
        // Live delivery is gap-free from the last event seen live (or, before any, from the
        // head the engine reported): a subscription there can go live.
        guard sub.position < (lastLiveSeq ?? knownHead) else {
            sub.mode = .live
            return
        }
        if let k0 = recentIndex(of: sub.position + 1) {
            for k in k0..<recent.count {
                let item = recentItem(k)
                if sub.filter.matches(item.event.data) {
                    guard sub.connection.pushFrame(prefix: sub.framePrefix, event: item.json) else {
                        sub.mode = .waitingWritable
                        return
                    }
                }
                sub.position = item.event.seq
            }
            sub.mode = .live
            return
        }
        startRead(sub)
    }

    private func startRead(_ sub: Subscription) {
        sub.mode = .reading
        let liveMark = lastLiveSeq ?? knownHead
        let after = sub.position
        let limit = core.configuration.catchUpBatchSize
        let filter = sub.filter
        let service = core.service
        let encoder = core.encoder
        core.offLoop {
            await attempt {
                try await service.events(after: after, filter: filter, limit: limit).map {
                    Recent(event: $0, json: encoder.eventJSON($0))
                }
            }
        } then: { result in
            self.readCompleted(sub, liveMark: liveMark, limit: limit, result)
        }
    }

    private func readCompleted(_ sub: Subscription, liveMark: Int64, limit: Int, _ result: Result<[Recent], any Error>) {
        guard !sub.cancelled, !sub.connection.isClosed else { return }
        switch result {
        case .failure(let error as WorkflowError) where error.code == .gone:
            // Retention deleted events this subscription has not had: it cannot continue
            // gap-free, so it ends with one error frame (when the buffer takes it) and is removed.
            let wire = WireError(.gone, error.message, earliest: error.earliestSeq)
            guard sub.connection.acceptsPushedFrames else {
                sub.mode = .waitingWritable
                return
            }
            core.metrics.error(.gone)
            _ = sub.connection.pushLine(Reply.subscriptionEnded(sub: sub.id, wire))
            sub.connection.subscriptions[sub.id] = nil
            remove(sub)
            sub.connection.streamsChanged()
        case .failure(let error):
            core.logger.warning(
                "catch-up read failed", metadata: ["session.id": "\(sub.connection.id)", "error": "\(error)"])
            sub.mode = .retrying
            sub.retryTimer = LoopTimer(loop: core.loop, milliseconds: core.configuration.catchUpRetryDelayMilliseconds) {
                [weak self, weak sub] in
                guard let self, let sub, !sub.cancelled else { return }
                sub.retryTimer = nil
                self.advance(sub)
            }
        case .success(let items):
            for item in items where item.event.seq > sub.position {
                if sub.filter.matches(item.event.data) {
                    guard sub.connection.pushFrame(prefix: sub.framePrefix, event: item.json) else {
                        sub.mode = .waitingWritable
                        return
                    }
                }
                sub.position = item.event.seq
            }
            if items.count < limit {
                // The log held nothing more that matches up to at least `liveMark` (every event
                // the hub had seen, and the reported head, were committed before the read).
                sub.position = max(sub.position, liveMark)
            }
            if sub.connection.acceptsPushedFrames {
                advance(sub)
            } else {
                sub.mode = .waitingWritable
            }
        }
    }

    // MARK: - Await watchers

    func addWatcher(_ w: AwaitWatcher) {
        watchers[w.runID, default: []].append(w)
    }

    func removeWatcher(_ w: AwaitWatcher) {
        guard var list = watchers[w.runID] else { return }
        list.removeAll { $0 === w }
        watchers[w.runID] = list.isEmpty ? nil : list
    }
}
