import Foundation
import OrderWorkflow
import Testing
import WorkflowTestSupport
import WorkflowWire

/// The seed's example end to end: the five sample orders through a real server on a real
/// MariaDB, then the seed README's own SQL.
@Suite("Seed walkthrough", .timeLimit(.minutes(3)))
struct SeedWalkthroughTests {
    @Test func fiveSampleOrdersAndTheSeedSQL() async throws {
        let db = try await IntegrationDatabase.create()
        let server = try await ServerProcess.start(database: db)
        let c = try server.client()
        for order in SampleOrders.all {
            let json = String(decoding: try SampleOrders.json(order), as: UTF8.self)
            let r = try c.call(#"{"op":"submit","id":"\#(order.id)","order":\#(json)}"#)
            #expect(r["ok"] == .bool(true), "\(r)")
            #expect(r["created"] == .bool(true))
        }
        var finals: [String: JSON] = [:]
        for order in SampleOrders.all {
            let r = try c.call(#"{"op":"await","foreign_id":"\#(order.id)","timeout_ms":60000}"#, timeout: 70)
            #expect(r["ok"] == .bool(true), "\(r)")
            finals[order.id] = r["run"]
        }
        for id in ["order-1001", "order-1002", "order-1003", "order-1005"] {
            #expect(finals[id]?["status"] == .string("OrderCompleted"), "\(id): \(String(describing: finals[id]))")
            #expect(finals[id]?["run_state"] == .string("Completed"))
            let h = try c.call(#"{"op":"history","foreign_id":"\#(id)"}"#)
            guard case .array(let events)? = h["events"] else {
                Issue.record("no events for \(id): \(h)")
                continue
            }
            #expect(events.map { $0["version"]?.int64Value } == [1, 2, 3, 4, 5])
            #expect(
                events.map { $0["status"]?.stringValue } == [
                    "OrderCreated", "OrderValidated", "PaymentProcessed", "OrderFulfilled", "OrderCompleted",
                ])
            #expect(events.map { $0["run_state"]?.stringValue } == ["Initiated", "Running", "Running", "Running", "Completed"])
            #expect(finals[id]?["object"]?["payment_id"]?.stringValue?.isEmpty == false)
            #expect(finals[id]?["object"]?["tracking_id"]?.stringValue?.isEmpty == false)
        }
        #expect(finals["order-1004"]?["status"] == .string("OrderRejected"))
        #expect(finals["order-1004"]?["reason"]?.stringValue?.isEmpty == false)

        // The seed README's queries, unchanged.
        let records = try await db.query(
            "SELECT workflow_name, foreign_id, run_id, run_state, status, created_at FROM workflow_records ORDER BY created_at DESC")
        #expect(records.count == 5)
        #expect(Set(records.map { $0[0] }) == ["order-processor"])
        #expect(records.filter { $0[4] == "5" }.count == 4)
        let failed = try await db.query(
            "SELECT foreign_id, object FROM workflow_records WHERE workflow_name = 'order-processor' AND status IN (6, 7, 8)")
        #expect(failed.map { $0[0] } == ["order-1004"])
        let inPayment = try await db.query(
            "SELECT foreign_id, object, created_at FROM workflow_records WHERE workflow_name = 'order-processor' AND status = 3")
        #expect(inPayment.isEmpty)
        let timeline = try await db.query(
            "SELECT run_id, status, updated_at FROM workflow_records WHERE workflow_name = 'order-processor' AND foreign_id = 'order-1001' ORDER BY updated_at")
        #expect(timeline.count == 1 && timeline[0][1] == "5")
        // Outbox health: once the relay is done, nothing is pending.
        try await db.waitFor("SELECT COUNT(*) FROM workflow_outbox", equals: 0)
        let health = try await db.query(
            "SELECT workflow_name, COUNT(*) as pending_events, MIN(created_at) as oldest_event, MAX(created_at) as newest_event FROM workflow_outbox GROUP BY workflow_name")
        #expect(health.isEmpty)
        // 4 × 5 + 2 events, numbered 1…22 without a gap.
        let log = try await db.query("SELECT COUNT(*), MIN(seq), MAX(seq) FROM workflow_events")
        #expect(log[0] == ["22", "1", "22"])

        #expect(try await server.terminate() == 0)
        await db.drop()
    }

    @Test(arguments: [
        ("WORKFLOWD_PAYMENT_DECLINE_RATE", "PaymentFailed", 7),
        ("WORKFLOWD_FULFILLMENT_FAILURE_RATE", "FulfillmentFailed", 8),
    ])
    func failureStatusesAreReachable(variable: String, status: String, code: Int) async throws {
        let db = try await IntegrationDatabase.create()
        let server = try await ServerProcess.start(database: db, env: [variable: "1.0"])
        let c = try server.client()
        _ = try c.call(#"{"op":"submit","order":\#(orderJSON("order-f1"))}"#)
        let r = try c.call(#"{"op":"await","foreign_id":"order-f1","timeout_ms":60000}"#, timeout: 70)
        #expect(r["run"]?["status"] == .string(status), "\(r)")
        #expect(r["run"]?["status_code"]?.int64Value == Int64(code))
        #expect(r["run"]?["run_state"] == .string("Completed"))
        #expect(r["run"]?["reason"]?.stringValue?.isEmpty == false)
        #expect(try await db.int("SELECT COUNT(*) FROM workflow_records WHERE status = \(code)") == 1)
        #expect(try await server.terminate() == 0)
        await db.drop()
    }
}
