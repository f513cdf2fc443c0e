import Foundation
import Synchronization
import Testing

@testable import OrderWorkflow
@testable import WorkflowEngine

/// The order processor on the engine with the in-memory store and a manual clock.
@Suite struct OrderWorkflowTests {
    let clock = ManualClock()

    static func configuration(decline: Double = 0, fulfillmentFailure: Double = 0, seed: UInt64? = 1) -> OrderWorkflow.Configuration {
        var c = OrderWorkflow.Configuration()
        c.paymentLatencyMilliseconds = 0
        c.fulfillmentLatencyMilliseconds = 0
        c.paymentDeclineRate = decline
        c.fulfillmentFailureRate = fulfillmentFailure
        c.randomSeed = seed
        return c
    }

    static func engineConfiguration() -> WorkflowEngine.Configuration {
        var c = WorkflowEngine.Configuration()
        c.instanceID = "orders-1"
        c.relayIdleMilliseconds = 5
        c.eventPollMilliseconds = 5
        c.timeoutPollMilliseconds = 5
        c.leaseRenewMilliseconds = 20
        c.cursorFlushMilliseconds = 10
        c.random = { 0.5 }
        return c
    }

    func make(
        _ config: OrderWorkflow.Configuration, payment: (any PaymentGateway)? = nil
    ) throws -> (WorkflowEngine, InMemoryWorkflowStore) {
        let store = InMemoryWorkflowStore(clock: clock)
        let definition = try OrderWorkflow.definition(configuration: config, payment: payment)
        let engine = try WorkflowEngine(
            store: store, definitions: [definition], configuration: Self.engineConfiguration(), clock: clock)
        return (engine, store)
    }

    /// Runs the engine, submits the orders, waits until every run is finished and the log is
    /// relayed, and returns the runs in order.
    func process(_ engine: WorkflowEngine, _ store: InMemoryWorkflowStore, _ orders: [Order]) async throws -> [Run] {
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await engine.run() }
            defer { engine.shutdown() }
            var ids: [String] = []
            for o in orders {
                ids.append(try await engine.trigger(workflow: OrderWorkflow.name, foreignID: o.id, object: o.jsonBytes()).run.runID)
            }
            let deadline = ContinuousClock.now + .seconds(30)
            while ContinuousClock.now < deadline {
                let runs = try await store.lookup(runIDs: ids)
                let pending = try await store.outboxStats().pending
                if runs.allSatisfy({ $0.runState.isFinished }), pending == 0, try await store.head() == engine.deliveredHead {
                    engine.shutdown()
                    try await group.waitForAll()
                    return try await store.lookup(runIDs: ids)
                }
                try await Task.sleep(for: .milliseconds(2))
            }
            Issue.record("orders did not finish")
            throw CancellationError()
        }
    }

    @Test(.timeLimit(.minutes(1)))
    func theFiveSampleOrders() async throws {
        let (engine, store) = try make(Self.configuration())
        let runs = try await process(engine, store, SampleOrders.all)
        for run in runs {
            let history = try await store.history(runID: run.runID)
            if run.foreignID == "order-1004" {
                #expect(run.status == OrderStatus.orderRejected.code && run.runState == .completed)
                #expect(run.reason == "customer name is missing")
                #expect(history.map(\.status) == [1, 6] && history.map(\.version) == [1, 2])
                continue
            }
            #expect(run.status == OrderStatus.orderCompleted.code && run.runState == .completed, "\(run.foreignID)")
            #expect(history.count == 5, "exactly five events for \(run.foreignID)")
            #expect(history.map(\.version) == [1, 2, 3, 4, 5])
            #expect(history.map(\.status) == [1, 2, 3, 4, 5])
            #expect(history.map(\.runState) == [.initiated, .running, .running, .running, .completed])
            let order = try Order(jsonBytes: run.object)
            let submitted = SampleOrders.all.first { $0.id == run.foreignID }!
            #expect(order.total == submitted.total, "money unchanged")
            #expect(order.paymentID?.hasPrefix("pay_") == true && order.trackingID?.hasPrefix("trk_") == true)
            #expect(order.createdAt != nil && order.updatedAt == clock.now().rfc3339)
        }
        let all = try await store.events(after: 0, filter: EventFilter(), limit: 1_000)
        #expect(all.count == 4 * 5 + 2 && all.map(\.seq) == Array(1...22))
        #expect(try await store.outboxStats().pending == 0)
    }

    @Test(.timeLimit(.minutes(1)))
    func everyDeclineIsPaymentFailed() async throws {
        let (engine, store) = try make(Self.configuration(decline: 1.0))
        let runs = try await process(engine, store, SampleOrders.all)
        for run in runs where run.foreignID != "order-1004" {
            #expect(run.status == OrderStatus.paymentFailed.code && run.reason == "payment declined")
            #expect(try await store.history(runID: run.runID).map(\.status) == [1, 2, 7])
        }
    }

    @Test(.timeLimit(.minutes(1)))
    func everyShippingFailureIsFulfillmentFailed() async throws {
        let (engine, store) = try make(Self.configuration(fulfillmentFailure: 1.0))
        let runs = try await process(engine, store, SampleOrders.all)
        for run in runs where run.foreignID != "order-1004" {
            #expect(run.status == OrderStatus.fulfillmentFailed.code && run.reason == "fulfillment failed")
            #expect(try await store.history(runID: run.runID).map(\.status) == [1, 2, 3, 8])
            #expect(try Order(jsonBytes: run.object).paymentID != nil, "paid before the shipment failed")
        }
    }

    @Test(.timeLimit(.minutes(1)))
    func aSeedMakesOutcomesRepeatableWhateverTheConcurrency() async throws {
        let orders = (0..<60).map { i in
            Order(
                id: "seeded-\(i)", customerName: "C", email: "c@example.com",
                items: [OrderItem(productID: "p", name: "n", quantity: 1, price: 10)], total: 10)
        }
        var outcomes: [[String: Int]] = []
        for _ in 0..<2 {
            let (engine, store) = try make(Self.configuration(decline: 0.5, seed: 99))
            // Fresh UUID run ids each time: outcomes follow the seed and the order id only.
            let runs = try await process(engine, store, orders)
            let random = SimulationRandom(seed: 99)
            for r in runs {
                let declined = random.unit(key: r.foreignID, purpose: "payment") < 0.5
                #expect(r.status == (declined ? OrderStatus.paymentFailed.code : OrderStatus.orderCompleted.code))
            }
            outcomes.append(Dictionary(uniqueKeysWithValues: runs.map { ($0.foreignID, $0.status) }))
        }
        #expect(outcomes[0] == outcomes[1], "the same seed gives the same outcomes")
        #expect(Set(outcomes[0].values) == [OrderStatus.orderCompleted.code, OrderStatus.paymentFailed.code])
    }

    /// A gateway that never answers until cancelled: only the deadline can move the run.
    struct StuckGateway: PaymentGateway {
        func charge(_ order: Order, runID: String, idempotencyKey: String) async throws -> PaymentOutcome {
            try await Task.sleep(for: .seconds(3_600))
            return .declined(reason: "unreachable")
        }
    }

    @Test(.timeLimit(.minutes(1)))
    func aPaymentThatTakesTooLongTimesOut() async throws {
        var config = Self.configuration()
        config.paymentTimeoutMilliseconds = 30_000
        let (engine, store) = try make(config, payment: StuckGateway())
        var engineConfig = Self.engineConfiguration()
        engineConfig.drainMilliseconds = 200
        let stuckEngine = try WorkflowEngine(
            store: store, definitions: [try OrderWorkflow.definition(configuration: config, payment: StuckGateway())],
            configuration: engineConfig, clock: clock)
        _ = engine
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await stuckEngine.run() }
            let order = SampleOrders.all[0]
            let run = try await stuckEngine.trigger(workflow: OrderWorkflow.name, foreignID: order.id, object: order.jsonBytes()).run
            let deadline = ContinuousClock.now + .seconds(20)
            while try await store.lookup(runID: run.runID)?.status != OrderStatus.orderValidated.code, ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(2))
            }
            let timeouts = try await store.timeouts(runID: run.runID)
            #expect(timeouts.count == 1 && timeouts[0].status == OrderStatus.orderValidated.code)
            #expect(timeouts[0].expireAt == clock.now().adding(milliseconds: 30_000))
            clock.advance(milliseconds: 30_000)
            while try await store.lookup(runID: run.runID)?.runState != .completed, ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(2))
            }
            let failed = try await store.lookup(runID: run.runID)!
            #expect(failed.status == OrderStatus.paymentFailed.code && failed.reason == "timed out")
            #expect(try await store.timeouts(runID: run.runID).map(\.completed) == [true], "fired once")
            stuckEngine.shutdown()
            try await group.waitForAll()
        }
    }

    @Test(.timeLimit(.minutes(1)))
    func deleteDataBlanksTheCustomer() async throws {
        let (engine, store) = try make(Self.configuration())
        let runs = try await process(engine, store, [SampleOrders.all[0]])
        let deleted = try await engine.control(.deleteData, runID: runs[0].runID, reason: "customer request")
        #expect(deleted.runState == .dataDeleted && deleted.version == 7)
        let order = try Order(jsonBytes: deleted.object)
        #expect(order.customerName == "" && order.email == "" && order.total == SampleOrders.all[0].total)
    }

    /// Zero simulated latency, in-memory store, debug build: how many orders per second the
    /// engine itself completes. Printed for the report; the bound only catches a collapse.
    @Test(.timeLimit(.minutes(1)))
    func inMemoryThroughput() async throws {
        let (engine, store) = try make(Self.configuration(seed: nil))
        let count = 2_000
        let orders = (0..<count).map { i in
            Order(
                id: "bulk-\(i)", customerName: "C", email: "c@example.com",
                items: [OrderItem(productID: "p", name: "n", quantity: 2, price: Decimal(string: "12.34")!)],
                total: Decimal(string: "24.68")!)
        }
        let start = ContinuousClock.now
        let runs = try await process(engine, store, orders)
        let seconds = Double((ContinuousClock.now - start).components.attoseconds) / 1e18
            + Double((ContinuousClock.now - start).components.seconds)
        #expect(runs.allSatisfy { $0.status == OrderStatus.orderCompleted.code })
        print("in-memory throughput: \(count) orders in \(String(format: "%.2f", seconds)) s = \(Int(Double(count) / seconds)) orders/s")
        #expect(Double(count) / seconds > 50)
    }
}
