import Synchronization

/// Takes, renews and gives up this instance's leases.
///
/// Roles (`relay`, `poller`, and `retention` where it is configured) go to whoever takes them first. Consumer partitions are shared:
/// each instance holds a member slot (`member/0` … `member/<maxInstances-1>`), counts the live
/// slots, and takes partition `p` only when `p % live == its rank` among them, releasing any
/// other it holds. When an instance dies its slot and leases expire after one TTL and the
/// others take its partitions at their next renewal, so a takeover needs at most about two
/// lease periods. Overlap while views differ is harmless: every transition is version-checked.
final class LeaseKeeper: Sendable {
    struct Partitioned: Sendable {
        var name: String
        var partition: Int
    }

    static let relay = "relay"
    static let poller = "poller"
    /// Held only by instances with retention configured.
    static let retention = "retention"

    private let core: EngineCore
    private let partitioned: [Partitioned]
    private let held = Mutex<[String: Lease]>([:])
    private let slot = Mutex<Int?>(nil)
    let wakeup = Wakeup()

    init(core: EngineCore, partitioned: [Partitioned]) {
        self.core = core
        self.partitioned = partitioned
    }

    private var ttl: Int64 { core.configuration.leaseTTLMilliseconds }

    /// True while this instance holds `name` with some margin before expiry, so it stops working
    /// before another instance could take over.
    func holds(_ name: String) -> Bool {
        let now = core.clock.now()
        return held.withLock { h in
            guard let l = h[name] else { return false }
            return l.expiresAt.milliseconds - now.milliseconds > ttl / 5
        }
    }

    var heldNames: [String] { held.withLock { Array($0.keys) } }

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
        let maxInstances = max(core.configuration.maxInstances, 1)
        let started = ContinuousClock.now
        do {
            var mySlot = slot.withLock { $0 }
            if let s = mySlot, try await acquire("member/\(s)") == nil { mySlot = nil }
            if mySlot == nil {
                for i in 0..<maxInstances {
                    if try await acquire("member/\(i)") != nil {
                        mySlot = i
                        break
                    }
                }
            }
            slot.withLock { $0 = mySlot }
            let now = core.clock.now()
            var live: [Int] = []
            for i in 0..<maxInstances {
                if i == mySlot {
                    live.append(i)
                } else if let l = try await store.lease("member/\(i)"), l.expiresAt > now, l.holder != me {
                    live.append(i)
                }
            }
            _ = try await acquire(Self.relay)
            _ = try await acquire(Self.poller)
            if core.configuration.retention?.isActive == true { _ = try await acquire(Self.retention) }
            let rank = mySlot.flatMap { live.firstIndex(of: $0) }
            for p in partitioned {
                if let rank, p.partition % live.count == rank {
                    _ = try await acquire(p.name)
                } else if held.withLock({ $0[p.name] != nil }) {
                    held.withLock { _ = $0.removeValue(forKey: p.name) }
                    try await store.releaseLease(p.name, holder: me)
                }
            }
            core.storeHealth.succeeded()
        } catch {
            core.storeHealth.failed("lease renewal", error, started: started)
        }
    }

    private func acquire(_ name: String) async throws -> Lease? {
        let lease = try await core.store.acquireLease(
            name, holder: core.configuration.instanceID, now: core.clock.now(), ttlMilliseconds: ttl)
        held.withLock { $0[name] = lease }
        return lease
    }

    func releaseAll() async {
        let names = held.withLock { h -> [String] in
            defer { h = [:] }
            return Array(h.keys)
        }
        for name in names {
            _ = try? await core.store.releaseLease(name, holder: core.configuration.instanceID)
        }
        slot.withLock { $0 = nil }
    }
}
