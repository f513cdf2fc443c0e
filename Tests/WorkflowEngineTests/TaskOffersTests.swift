import Testing

@testable import WorkflowEngine

/// The broker's decisions as a value: no store, no clock, no threads.
@Suite struct TaskOffersTests {
    static let t0 = Timestamp(milliseconds: 1_764_000_000_000)
    static let key = TaskOffers.GroupKey(workflow: "w", status: 2)

    func spec(maxInFlight: Int = 1, lease: Int64 = 30_000) -> WorkerSpec {
        WorkerSpec(workflow: "w", status: 2, maxInFlight: maxInFlight, leaseMilliseconds: lease)
    }

    func task(_ runID: String, version: Int64 = 2, claim: Int64 = 1, deadline: Timestamp = t0.adding(milliseconds: 30_000))
        -> ExternalTask
    {
        let run = Run(
            workflow: "w", foreignID: "f-\(runID)", runID: runID, runState: .running, status: 2, version: version, object: [],
            createdAt: Self.t0, updatedAt: Self.t0)
        return ExternalTask(claim: TaskClaim(runID: runID, version: version, claim: claim), run: run, attempt: 1, deadline: deadline)
    }

    @Test func aWorkerGetsNothingUntilReadyAndNeverMoreThanMaxInFlight() {
        var o = TaskOffers()
        let w = o.addWorker(spec(maxInFlight: 2))
        let r1 = o.offerable(runID: "r1", version: 2, status: 2, workflow: "w")
        #expect(r1)
        let r2 = o.offerable(runID: "r2", version: 2, status: 2, workflow: "w")
        #expect(r2)
        let r3 = o.offerable(runID: "r3", version: 2, status: 2, workflow: "w")
        #expect(r3)
        #expect(o.plan(now: Self.t0).isEmpty, "not ready: no claim")
        let r4 = o.setReady(w, true)
        #expect(r4)
        let plan = o.plan(now: Self.t0)
        #expect(plan == [.init(group: Self.key, runIDs: ["r1", "r2"], limit: 2, leaseMilliseconds: 30_000)])
        #expect(o.plan(now: Self.t0).isEmpty, "one claim in flight per group")
        let given = o.claimed(plan[0], [task("r1"), task("r2")])
        #expect(given.map(\.worker) == [w] && given[0].tasks.count == 2)
        #expect(o.workers[w]?.room == 0)
        #expect(o.plan(now: Self.t0).isEmpty, "full: r3 waits")
        o.finished(TaskClaim(runID: "r1", version: 2, claim: 1))
        #expect(o.plan(now: Self.t0) == [.init(group: Self.key, runIDs: ["r3"], limit: 1, leaseMilliseconds: 30_000)])
    }

    @Test func workGoesRoundAndAnExpiredTaskGoesToAnotherWorkerFirst() {
        var o = TaskOffers()
        let a = o.addWorker(spec())
        let b = o.addWorker(spec())
        _ = o.setReady(a, true)
        _ = o.setReady(b, true)
        _ = o.offerable(runID: "r1", version: 2, status: 2, workflow: "w")
        _ = o.offerable(runID: "r2", version: 2, status: 2, workflow: "w")
        let plan = o.plan(now: Self.t0)
        let given = o.claimed(plan[0], [task("r1"), task("r2")])
        #expect(Set(given.map(\.worker)) == [a, b], "one each")
        let holderOfR1 = given.first { $0.tasks.contains { $0.claim.runID == "r1" } }!.worker
        // b answers r2; r1's deadline passes: offered again, to the other worker.
        o.finished(TaskClaim(runID: "r2", version: 2, claim: 1))
        let expired = o.expire(now: Self.t0.adding(milliseconds: 30_000))
        #expect(expired.map(\.task.claim.runID) == ["r1"])
        let again = o.plan(now: Self.t0.adding(milliseconds: 30_000))
        #expect(again.first?.runIDs == ["r1"])
        let second = o.claimed(again[0], [task("r1", claim: 2)])
        #expect(second.map(\.worker) == [holderOfR1 == a ? b : a])
        // The old claim's answer no longer frees anything; the new one does.
        let r5 = o.finished(TaskClaim(runID: "r1", version: 2, claim: 1))
        #expect(r5 == nil)
        let r6 = o.finished(TaskClaim(runID: "r1", version: 2, claim: 2))
        #expect(r6 == second[0].worker)
    }

    @Test func aLeavingWorkersTasksAreReleasedThenOfferedAgainFirst() {
        var o = TaskOffers()
        let a = o.addWorker(spec(maxInFlight: 2))
        _ = o.setReady(a, true)
        _ = o.offerable(runID: "r1", version: 2, status: 2, workflow: "w")
        let plan = o.plan(now: Self.t0)
        _ = o.claimed(plan[0], [task("r1")])
        _ = o.offerable(runID: "r9", version: 2, status: 2, workflow: "w")
        let b = o.addWorker(spec())
        o.removeWorker(a)
        let releases = o.takeReleasing()
        #expect(releases.map(\.claim) == [TaskClaim(runID: "r1", version: 2, claim: 1)])
        o.released(releases)
        _ = o.setReady(b, true)
        #expect(o.plan(now: Self.t0).first?.runIDs == ["r1"], "released work first")
    }

    @Test func lateEventsForHandledTasksCostNoClaimAndAFullInboxAsksForAScan() {
        var o = TaskOffers(maxCandidates: 2)
        let a = o.addWorker(spec(maxInFlight: 10))
        _ = o.setReady(a, true)
        // A worker's arrival asks for a scan of the status.
        let scan = o.plan(now: Self.t0)
        #expect(scan == [.init(group: Self.key, runIDs: nil, limit: 10, leaseMilliseconds: 30_000)])
        o.scanned(Self.key, full: false, nextFree: nil, now: Self.t0)
        _ = o.claimed(scan[0], [task("r1")])
        let r7 = o.offerable(runID: "r1", version: 2, status: 2, workflow: "w")
        #expect(!r7, "held here")
        o.finished(TaskClaim(runID: "r1", version: 2, claim: 1))
        let r8 = o.offerable(runID: "r1", version: 2, status: 2, workflow: "w")
        #expect(!r8, "answered here")
        let r9 = o.offerable(runID: "r1", version: 4, status: 2, workflow: "w")
        #expect(r9, "a newer step of the run")
        let r10 = o.offerable(runID: "x", version: 2, status: 3, workflow: "w")
        #expect(!r10, "no worker of that status")
        _ = o.offerable(runID: "r2", version: 2, status: 2, workflow: "w")
        _ = o.offerable(runID: "r3", version: 2, status: 2, workflow: "w")
        #expect(o.groups[Self.key]?.candidates == ["r1", "r2"] && o.groups[Self.key]?.scanDue == true)
    }

    @Test func nothingToDoMeansNoWakeUpButADeadlineOrAScanTimeIsOne() {
        var o = TaskOffers(scanIntervalMilliseconds: 1_000)
        #expect(o.nextWake(now: Self.t0) == nil, "no worker: nothing is due, ever")
        let a = o.addWorker(spec(maxInFlight: 2))
        #expect(o.nextWake(now: Self.t0) == nil, "not ready")
        _ = o.setReady(a, true)
        #expect(o.nextWake(now: Self.t0) == Self.t0, "a new worker: scan now")
        let scan = o.plan(now: Self.t0)
        o.scanned(Self.key, full: false, nextFree: Self.t0.adding(milliseconds: 400), now: Self.t0)
        _ = o.claimed(scan[0], [task("r1", deadline: Self.t0.adding(milliseconds: 5_000))])
        #expect(o.nextWake(now: Self.t0) == Self.t0.adding(milliseconds: 400), "a retry time the scan saw")
        _ = o.setReady(a, false)
        #expect(o.nextWake(now: Self.t0) == Self.t0.adding(milliseconds: 5_000), "no room: only the deadline")
    }

    @Test func aFailedClaimPutsItsCandidatesBackAndWaits() {
        var o = TaskOffers()
        let a = o.addWorker(spec(maxInFlight: 4))
        _ = o.setReady(a, true)
        o.scanned(Self.key, full: false, nextFree: nil, now: Self.t0)
        _ = o.offerable(runID: "r1", version: 2, status: 2, workflow: "w")
        let plan = o.plan(now: Self.t0)
        o.claimFailed(plan[0], now: Self.t0, retryAfterMilliseconds: 250)
        #expect(o.plan(now: Self.t0.adding(milliseconds: 100)).isEmpty)
        #expect(o.nextWake(now: Self.t0) == Self.t0.adding(milliseconds: 250))
        #expect(o.plan(now: Self.t0.adding(milliseconds: 250)).first?.runIDs == ["r1"])
    }

    @Test func recentKeysForgetsTheOldest() {
        var k = RecentKeys(capacity: 2)
        k.insert("a", 1)
        k.insert("b", 1)
        k.insert("c", 1)
        #expect(!k.contains("a", 1) && k.contains("b", 1) && k.contains("c", 1))
    }

    @Test func taskIDsRoundTripAndAnythingElseIsUnknown() {
        let c = TaskClaim(runID: "01a2-x/y", version: 3, claim: 7)
        #expect(TaskClaim(text: c.text) == c)
        #expect(c.idempotencyKey == "01a2-x/y:3")
        for bad in ["", "r", "r/1", "r/x/1", "r/1/0", "/1/1", "r/0/1"] { #expect(TaskClaim(text: bad) == nil, "\(bad)") }
    }
}

extension TaskOffersTests {
    /// The answer that moves a run into the next external status hands that status's task to a
    /// worker in the same commit, although the run's previous task is still held until then.
    @Test func theNextStepsTaskIsHandedOverInTheCommitOfTheAnswer() {
        var o = TaskOffers()
        let payer = o.addWorker(spec())
        let shipper = o.addWorker(WorkerSpec(workflow: "w", status: 3, maxInFlight: 1, leaseMilliseconds: 10_000))
        _ = o.setReady(payer, true)
        _ = o.setReady(shipper, true)
        _ = o.offerable(runID: "r1", version: 2, status: 2, workflow: "w")
        let plan = o.plan(now: Self.t0).first { $0.group == Self.key }!
        _ = o.claimed(plan, [task("r1")])
        var next = task("r1", version: 3).run
        next.status = 3
        let reserved = o.reserve(next, now: Self.t0)
        #expect(reserved?.worker == shipper && reserved?.task.claim == TaskClaim(runID: "r1", version: 3, claim: 1))
        #expect(reserved?.task.deadline == Self.t0.adding(milliseconds: 10_000))
        #expect(o.workers[payer]?.held.isEmpty == true, "the answered task no longer counts")
        let ok = o.settle(reserved!.task, committed: true)
        #expect(ok && o.heldTask(reserved!.task.claim)?.worker == shipper)
        // A second run finds the shipper full: its task is left for a claim.
        var other = task("r2", version: 3).run
        other.status = 3
        #expect(o.reserve(other, now: Self.t0) == nil)
    }

    @Test func aReservationWhoseCommitFailedIsForgotten() {
        var o = TaskOffers()
        let w = o.addWorker(spec())
        _ = o.setReady(w, true)
        let reserved = o.reserve(task("r1").run, now: Self.t0)!
        #expect(o.workers[w]?.room == 0)
        let delivered = o.settle(reserved.task, committed: false)
        #expect(!delivered && o.workers[w]?.room == 1 && o.heldTask(reserved.task.claim) == nil)
    }
}
