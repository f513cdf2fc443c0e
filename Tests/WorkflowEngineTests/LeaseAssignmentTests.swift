import Testing

@testable import WorkflowEngine

/// Lease assignment as a value: rows in, a plan out, the outcome back in.
@Suite struct LeaseAssignmentTests {
    static let t0 = Timestamp(milliseconds: 1_764_000_000_000)
    static let parts = (0..<4).map { LeaseAssignment.Partitioned(name: "consumer/w/1/\($0)of4", partition: $0) }

    func lease(_ name: String, _ holder: String, expires: Int64 = 10_000) -> Lease {
        Lease(name: name, holder: holder, expiresAt: Self.t0.adding(milliseconds: expires), generation: 1)
    }

    func machine(_ me: String) -> LeaseAssignment {
        LeaseAssignment(me: me, maxInstances: 4, roles: ["relay", "poller"], partitioned: Self.parts)
    }

    @Test func aLoneInstanceAsksForItsSlotTheRolesAndEveryPartition() {
        var a = machine("a")
        let plan = a.plan(rows: [], now: Self.t0)
        #expect(plan.acquire == ["member/0", "relay", "poller"] + Self.parts.map(\.name))
        #expect(plan.release.isEmpty)
        #expect(a.liveMembers == 1)
        let changes = a.acquired(plan, holding: Set(plan.acquire), expiresAt: Self.t0.adding(milliseconds: 10_000))
        #expect(changes.gained.count == 7 && changes.lost.isEmpty)
        #expect(a.slot == 0 && a.holds("relay", now: Self.t0, marginMilliseconds: 2_000))
        #expect(!a.holds("relay", now: Self.t0.adding(milliseconds: 8_500), marginMilliseconds: 2_000), "too close to expiry")
        // The next round renews the same: nothing changes hands.
        let again = a.plan(rows: plan.acquire.map { lease($0, "a") }, now: Self.t0.adding(milliseconds: 2_000))
        #expect(again == plan)
        #expect(a.acquired(again, holding: Set(again.acquire), expiresAt: Self.t0.adding(milliseconds: 12_000)).isEmpty)
    }

    @Test func aSecondInstanceTakesHalfThePartitionsAndTheFirstReleasesThem() {
        var a = machine("a")
        let p1 = a.plan(rows: [], now: Self.t0)
        _ = a.acquired(p1, holding: Set(p1.acquire), expiresAt: Self.t0.adding(milliseconds: 10_000))
        var rows = p1.acquire.map { lease($0, "a") }
        // b arrives: slot 1, the roles are a's, partitions 1 and 3 are b's (rank 1 of 2).
        var b = machine("b")
        let pb = b.plan(rows: rows, now: Self.t0)
        #expect(pb.acquire == ["member/1", "relay", "poller", Self.parts[1].name, Self.parts[3].name])
        let cb = b.acquired(pb, holding: ["member/1"], expiresAt: Self.t0.adding(milliseconds: 10_000))
        #expect(cb.gained == ["member/1"])
        rows.append(lease("member/1", "b"))
        // a sees two live members: releases 1 and 3, keeps 0 and 2.
        let pa = a.plan(rows: rows, now: Self.t0.adding(milliseconds: 1_000))
        #expect(pa.release == [Self.parts[1].name, Self.parts[3].name])
        #expect(pa.acquire.contains(Self.parts[0].name) && !pa.acquire.contains(Self.parts[1].name))
        let ca = a.acquired(pa, holding: Set(pa.acquire), expiresAt: Self.t0.adding(milliseconds: 11_000))
        #expect(ca.released == [Self.parts[1].name, Self.parts[3].name] && ca.gained.isEmpty)
        #expect(a.liveMembers == 2)
    }

    @Test func aDeadInstancesSlotAndLeasesAreTakenAfterTheyExpire() {
        var b = machine("b")
        let rows = [
            lease("member/0", "a", expires: 1_000), lease("relay", "a", expires: 1_000), lease("poller", "a", expires: 1_000),
            lease("member/1", "b"),
        ]
        _ = b.acquired(
            LeaseAssignment.Plan(acquire: ["member/1"], release: []), holding: ["member/1"],
            expiresAt: Self.t0.adding(milliseconds: 10_000))
        let before = b.plan(rows: rows, now: Self.t0)
        #expect(before.acquire.contains("relay") && b.liveMembers == 2, "asks (the store refuses while a's lease lives)")
        let after = b.plan(rows: rows, now: Self.t0.adding(milliseconds: 1_000))
        #expect(b.liveMembers == 1, "a's slot expired")
        #expect(after.acquire == ["member/1", "relay", "poller"] + Self.parts.map(\.name))
    }

    @Test func aLeaseSomeoneElseTookIsLost() {
        var a = machine("a")
        let p = a.plan(rows: [], now: Self.t0)
        _ = a.acquired(p, holding: Set(p.acquire), expiresAt: Self.t0.adding(milliseconds: 10_000))
        let next = a.plan(rows: p.acquire.map { lease($0, "a") }, now: Self.t0.adding(milliseconds: 2_000))
        let c = a.acquired(next, holding: Set(next.acquire).subtracting(["relay"]), expiresAt: Self.t0.adding(milliseconds: 12_000))
        #expect(c.lost == ["relay"] && !a.holds("relay", now: Self.t0.adding(milliseconds: 2_000), marginMilliseconds: 0))
        #expect(a.releaseAll().count == 6)
        #expect(a.held.isEmpty)
    }

    @Test func summariesNameRolesAndCountPartitions() {
        #expect(LeaseKeeper.summary(["relay", "consumer/a", "consumer/b", "member/0"]) == "member/0, relay, 2 consumer partitions")
    }
}
