/// Which leases this instance should hold, decided from the lease table as it is: the state
/// machine of `LeaseKeeper`, without I/O, clock or locks.
///
/// Each round reads every lease row (`plan(rows:now:)`), asks to renew or take the leases it
/// wants and to release the ones it must give up, then learns which it holds
/// (`acquired(_:now:)`). Roles (`relay`, `poller`, `retention` where configured) go to whoever
/// takes them first. Consumer partitions are shared: each instance holds a member slot
/// (`member/0` … `member/<maxInstances-1>`), counts the live slots, and takes partition `p`
/// only when `p % live == its rank` among them, releasing any other.
struct LeaseAssignment: Equatable {
    struct Partitioned: Sendable, Equatable {
        var name: String
        var partition: Int
    }

    /// What a round asks of the store.
    struct Plan: Equatable {
        /// Renew (ours) or take (free or expired): in one conditional statement.
        var acquire: [String]
        /// Ours, but no longer meant for us (a partition that moved to another instance).
        var release: [String]
    }

    /// What changed in a round, for the log and for waking the parts that wait on a lease.
    struct Changes: Equatable {
        var gained: [String] = []
        /// Wanted but not renewed: someone else has it now (or the store refused).
        var lost: [String] = []
        var released: [String] = []
        var isEmpty: Bool { gained.isEmpty && lost.isEmpty && released.isEmpty }
    }

    let me: String
    let maxInstances: Int
    let roles: [String]
    let partitioned: [Partitioned]
    /// Leases this instance holds, with their expiry.
    private(set) var held: [String: Timestamp] = [:]
    /// The member slot asked for in the current round.
    private var slotAsked: String?
    /// Live member slots at the last round, this one's included (nil before the first round).
    private(set) var liveMembers: Int?

    init(me: String, maxInstances: Int, roles: [String], partitioned: [Partitioned]) {
        self.me = me
        self.maxInstances = max(1, maxInstances)
        self.roles = roles
        self.partitioned = partitioned
    }

    static func member(_ i: Int) -> String { "member/\(i)" }

    /// The member slot this instance holds, if any.
    var slot: Int? {
        held.keys.compactMap { $0.hasPrefix("member/") ? Int($0.dropFirst("member/".count)) : nil }.min()
    }

    /// One round: from every lease row as the store has it now.
    mutating func plan(rows: [Lease], now: Timestamp) -> Plan {
        var byName: [String: Lease] = [:]
        for r in rows { byName[r.name] = r }
        func free(_ name: String) -> Bool {
            guard let l = byName[name] else { return true }
            return l.holder == me || l.expiresAt <= now
        }
        // Keep our slot, else the first free one.
        let mine = slot.map(Self.member) ?? (0..<maxInstances).map(Self.member).first(where: free)
        slotAsked = mine
        var live: [Int] = []
        for i in 0..<maxInstances {
            let name = Self.member(i)
            if name == mine {
                live.append(i)
            } else if let l = byName[name], l.expiresAt > now, l.holder != me {
                live.append(i)
            }
        }
        liveMembers = live.count
        let rank = mine.flatMap { m in live.firstIndex { Self.member($0) == m } }
        var acquire = (mine.map { [$0] } ?? []) + roles
        var release: [String] = []
        for p in partitioned {
            if let rank, p.partition % live.count == rank {
                acquire.append(p.name)
            } else if held[p.name] != nil {
                release.append(p.name)
            }
        }
        // A member slot we held but no longer ask for (we picked another) goes too.
        for name in held.keys where name.hasPrefix("member/") && name != mine { release.append(name) }
        return Plan(acquire: acquire, release: release.sorted())
    }

    /// The round's outcome: `release` was given up, and of `plan.acquire` this instance now
    /// holds `holding`, until `expiresAt`.
    mutating func acquired(_ plan: Plan, holding: Set<String>, expiresAt: Timestamp) -> Changes {
        var changes = Changes()
        for name in plan.release where held.removeValue(forKey: name) != nil { changes.released.append(name) }
        for name in plan.acquire {
            if holding.contains(name) {
                if held[name] == nil { changes.gained.append(name) }
                held[name] = expiresAt
            } else if held.removeValue(forKey: name) != nil {
                changes.lost.append(name)
            }
        }
        return changes
    }

    /// True while `name` is ours with more than `margin` left, so work stops before another
    /// instance could take over.
    func holds(_ name: String, now: Timestamp, marginMilliseconds: Int64) -> Bool {
        guard let expires = held[name] else { return false }
        return expires.milliseconds - now.milliseconds > marginMilliseconds
    }

    /// Everything, for a graceful stop.
    mutating func releaseAll() -> [String] {
        defer { held = [:] }
        return held.keys.sorted()
    }
}
