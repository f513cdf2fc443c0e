/// Ships an order; the key is the step's idempotency key.
public protocol FulfillmentService: Sendable {
    func ship(_ order: Order, runID: String, idempotencyKey: String) async throws -> FulfillmentOutcome
}

public enum FulfillmentOutcome: Sendable, Equatable {
    case shipped(trackingID: String)
    case failed(reason: String)
}

/// The seed's simulated warehouse: waits `latencyMilliseconds` on a timer and fails a
/// `failureRate` share of shipments.
public struct SimulatedFulfillmentService: FulfillmentService {
    public var latencyMilliseconds: Int
    public var failureRate: Double
    public var random: SimulationRandom

    public init(latencyMilliseconds: Int, failureRate: Double, random: SimulationRandom) {
        self.latencyMilliseconds = latencyMilliseconds
        self.failureRate = failureRate
        self.random = random
    }

    public func ship(_ order: Order, runID: String, idempotencyKey: String) async throws -> FulfillmentOutcome {
        if latencyMilliseconds > 0 { try await Task.sleep(for: .milliseconds(latencyMilliseconds)) }
        if random.unit(key: order.id, purpose: "fulfillment") < failureRate {
            return .failed(reason: "fulfillment failed")
        }
        return .shipped(trackingID: random.identifier(prefix: "trk", key: idempotencyKey, purpose: "fulfillment"))
    }
}
