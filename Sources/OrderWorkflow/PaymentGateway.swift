/// Charges an order. The key is the step's idempotency key (run id and version): a repeated
/// call with the same key must not charge twice.
public protocol PaymentGateway: Sendable {
    func charge(_ order: Order, runID: String, idempotencyKey: String) async throws -> PaymentOutcome
}

public enum PaymentOutcome: Sendable, Equatable {
    case approved(paymentID: String)
    case declined(reason: String)
}

/// The seed's simulated gateway: waits `latencyMilliseconds` on a timer (never a sleeping
/// thread) and declines a `declineRate` share of payments.
public struct SimulatedPaymentGateway: PaymentGateway {
    public var latencyMilliseconds: Int
    public var declineRate: Double
    public var random: SimulationRandom

    public init(latencyMilliseconds: Int, declineRate: Double, random: SimulationRandom) {
        self.latencyMilliseconds = latencyMilliseconds
        self.declineRate = declineRate
        self.random = random
    }

    public func charge(_ order: Order, runID: String, idempotencyKey: String) async throws -> PaymentOutcome {
        if latencyMilliseconds > 0 { try await Task.sleep(for: .milliseconds(latencyMilliseconds)) }
        if random.unit(key: order.id, purpose: "payment") < declineRate {
            return .declined(reason: "payment declined")
        }
        return .approved(paymentID: random.identifier(prefix: "pay", key: idempotencyKey, purpose: "payment"))
    }
}
