import Logging
import Synchronization

/// Takes, renews and gives up this instance's leases: the driver of `LeaseAssignment`.
///
/// A round is two statements when nothing changes hands: read every lease row, then renew the
/// wanted ones in one conditional update (`LeaseStore.acquireLeases`; a lease another holder
/// keeps alive is never taken, so two instances or two cluster nodes never both hold one).
/// Rounds run every `leaseRenewMilliseconds`; every change of hands is logged at info, and the
/// parts waiting for a lease are woken at once. When an instance dies its slot and leases
/// expire after one TTL and the others take its partitions at their next round, so a takeover
/// needs at most about two lease periods. Overlap while views differ is harmless: every
/// transition is version-checked.
final class LeaseKeeper: Sendable {
    typealias Partitioned = LeaseAssignment.Partitioned

    static let relay = "relay"
    static let poller = "poller"
    /// Held only by instances with retention configured.
    static let retention = "retention"

    private let core: EngineCore
    private let state: Mutex<LeaseAssignment>
    /// Called (outside the lock) after a round in which leases changed hands. (In a box: a
    /// closure kept directly in a Mutex gains a reabstraction thunk on every access.)
    private final class Callback: Sendable {
        let body: @Sendable () -> Void
        init(_ body: @escaping @Sendable () -> Void) { self.body = body }
    }
    private let changed = Mutex<Callback?>(nil)
    let wakeup = Wakeup()

    init(core: EngineCore, partitioned: [Partitioned]) {
        self.core = core
        var roles = [Self.relay, Self.poller]
        if core.configuration.retention?.isActive == true { roles.append(Self.retention) }
        self.state = Mutex(
            LeaseAssignment(
                me: core.configuration.instanceID, maxInstances: core.configuration.maxInstances, roles: roles,
                partitioned: partitioned))
    }

    private var ttl: Int64 { core.configuration.leaseTTLMilliseconds }

    /// Runs `body` after every round in which a lease was gained, lost or released.
    func onChange(_ body: @escaping @Sendable () -> Void) { changed.withLock { $0 = Callback(body) } }

    /// True while this instance holds `name` with some margin before expiry, so it stops working
    /// before another instance could take over.
    func holds(_ name: String) -> Bool {
        let now = core.clock.now()
        return state.withLock { $0.holds(name, now: now, marginMilliseconds: ttl / 5) }
    }

    var heldNames: [String] { state.withLock { Array($0.held.keys) } }

    /// Whether other instances share the database (as of the last round; true before it). Alone,
    /// every change comes from this instance's own commits, which signal whoever must act, so
    /// the relay and the poller need not look for the others' work.
    var othersLive: Bool { state.withLock { ($0.liveMembers ?? 2) > 1 } }

    /// Renews until `done` fires, then releases everything.
    func run(until done: OneShot) async {
        while !done.isFired && !Task.isCancelled {
            await tick()
            await wakeup.wait(milliseconds: core.configuration.leaseRenewMilliseconds)
        }
        await releaseAll()
    }

    /// One round of membership, roles and partitions.
    func tick() async {
        let store = core.store
        let me = core.configuration.instanceID
        let started = ContinuousClock.now
        do {
            let rows = try await store.leases()
            let now = core.clock.now()
            let plan = state.withLock { $0.plan(rows: rows, now: now) }
            if !plan.release.isEmpty { try await store.releaseLeases(plan.release, holder: me) }
            let holding = try await store.acquireLeases(plan.acquire, holder: me, now: now, ttlMilliseconds: ttl)
            let changes = state.withLock { $0.acquired(plan, holding: holding, expiresAt: now.adding(milliseconds: ttl)) }
            core.storeHealth.succeeded()
            if !changes.isEmpty {
                log(changes, rows: rows)
                changed.withLock { $0 }?.body()
            }
        } catch {
            core.storeHealth.failed("lease renewal", error, started: started)
        }
    }

    /// One info line per round that changed something (a start takes ~20 leases at once).
    private func log(_ c: LeaseAssignment.Changes, rows: [Lease]) {
        var metadata: Logger.Metadata = ["instance": "\(core.configuration.instanceID)"]
        if !c.gained.isEmpty {
            metadata["leases.gained"] = "\(Self.summary(c.gained))"
            // Generations after the take-over (the row's before it, +1 when the holder changed).
            let previous = Dictionary(rows.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
            let takenFrom = c.gained.compactMap { name -> String? in
                guard let l = previous[name], l.holder != core.configuration.instanceID else { return nil }
                return "\(name)@\(l.holder.prefix(8))"
            }
            if !takenFrom.isEmpty { metadata["leases.taken_over"] = "\(takenFrom.prefix(8).joined(separator: ","))" }
        }
        if !c.lost.isEmpty { metadata["leases.lost"] = "\(Self.summary(c.lost))" }
        if !c.released.isEmpty { metadata["leases.released"] = "\(Self.summary(c.released))" }
        core.logger.log(level: c.lost.isEmpty ? .info : .warning, "leases changed hands", metadata: metadata)
    }

    /// `relay, poller, 16 consumer partitions, member/0`
    static func summary(_ names: [String]) -> String {
        let consumers = names.filter { $0.hasPrefix("consumer/") }
        var parts = names.filter { !$0.hasPrefix("consumer/") }.sorted()
        if consumers.count == 1 { parts.append(consumers[0]) } else if !consumers.isEmpty {
            parts.append("\(consumers.count) consumer partitions")
        }
        return parts.joined(separator: ", ")
    }

    func releaseAll() async {
        let names = state.withLock { $0.releaseAll() }
        guard !names.isEmpty else { return }
        _ = try? await core.store.releaseLeases(names, holder: core.configuration.instanceID)
    }
}
