import Foundation

extension OrderWorkflow {
    /// The simulation's settings, read from the environment (flags are the executable's business).
    public struct Configuration: Sendable, Equatable {
        /// `WORKFLOWD_PAYMENT_LATENCY_MS`, default 50.
        public var paymentLatencyMilliseconds: Int = 50
        /// `WORKFLOWD_PAYMENT_DECLINE_RATE`, default 0.10.
        public var paymentDeclineRate: Double = 0.10
        /// `WORKFLOWD_FULFILLMENT_LATENCY_MS`, default 50.
        public var fulfillmentLatencyMilliseconds: Int = 50
        /// `WORKFLOWD_FULFILLMENT_FAILURE_RATE`, default 0.05.
        public var fulfillmentFailureRate: Double = 0.05
        /// `WORKFLOWD_RANDOM_SEED`: makes outcomes and ids repeatable. Default: none.
        public var randomSeed: UInt64?
        /// `WORKFLOWD_PAYMENT_TIMEOUT_MS`: payment must happen this long after validation,
        /// else PaymentFailed "timed out". Default 30 000.
        public var paymentTimeoutMilliseconds: Int64 = 30_000
        /// `WORKFLOWD_FULFILLMENT_TIMEOUT_MS`: fulfilment deadline after payment, else
        /// FulfillmentFailed "timed out". Default 600 000 (10 min).
        public var fulfillmentTimeoutMilliseconds: Int64 = 600_000
        /// `WORKFLOWD_EXTERNAL_STEPS` (or `--external-steps`): statuses whose step another
        /// program does over the socket (a worker or a callback) instead of the simulation:
        /// `OrderCreated` (validation), `OrderValidated` (payment), `PaymentProcessed`
        /// (fulfilment). Default: none.
        public var externalSteps: Set<OrderStatus> = []

        /// The statuses that may be external, in workflow order.
        public static let externalizable: [OrderStatus] = [.orderCreated, .orderValidated, .paymentProcessed]

        public init() {}

        /// Parses a list such as `OrderValidated,PaymentProcessed` (names or codes, separated by
        /// commas or spaces; empty means none). `source` names the flag or variable in errors.
        public static func externalSteps(_ text: String, source: String) throws -> Set<OrderStatus> {
            var out: Set<OrderStatus> = []
            for item in text.split(whereSeparator: { $0 == "," || $0 == " " }) {
                let word = String(item)
                guard let status = OrderStatus.allCases.first(where: { $0.name == word || String($0.code) == word }) else {
                    throw OrderWorkflowError(
                        .badConfiguration,
                        "\(source): '\(word)' is not a status of order-processor (may be external: \(externalizable.map(\.name).joined(separator: ", ")))")
                }
                guard externalizable.contains(status) else {
                    throw OrderWorkflowError(
                        .badConfiguration,
                        "\(source): \(status.name) has no step that can be external (may be external: \(externalizable.map(\.name).joined(separator: ", ")))")
                }
                out.insert(status)
            }
            return out
        }

        /// Reads the variables above; unset or empty means the default. Throws
        /// `.badConfiguration` naming the variable and the value for anything malformed.
        public init(environment: [String: String]) throws {
            self.init()
            func value(_ key: String) -> String? {
                guard let v = environment[key]?.trimmingCharacters(in: .whitespaces), !v.isEmpty else { return nil }
                return v
            }
            func milliseconds(_ key: String, max: Int64) throws -> Int64? {
                guard let v = value(key) else { return nil }
                guard let n = Int64(v), n >= 0, n <= max else {
                    throw OrderWorkflowError(
                        .badConfiguration, "\(key) must be a whole number of milliseconds from 0 to \(max), got \"\(v)\"")
                }
                return n
            }
            func rate(_ key: String) throws -> Double? {
                guard let v = value(key) else { return nil }
                guard let d = Double(v), d.isFinite, d >= 0, d <= 1 else {
                    throw OrderWorkflowError(.badConfiguration, "\(key) must be a number from 0 to 1, got \"\(v)\"")
                }
                return d
            }
            if let v = try milliseconds("WORKFLOWD_PAYMENT_LATENCY_MS", max: 600_000) { paymentLatencyMilliseconds = Int(v) }
            if let v = try rate("WORKFLOWD_PAYMENT_DECLINE_RATE") { paymentDeclineRate = v }
            if let v = try milliseconds("WORKFLOWD_FULFILLMENT_LATENCY_MS", max: 600_000) {
                fulfillmentLatencyMilliseconds = Int(v)
            }
            if let v = try rate("WORKFLOWD_FULFILLMENT_FAILURE_RATE") { fulfillmentFailureRate = v }
            if let v = value("WORKFLOWD_RANDOM_SEED") {
                guard let seed = UInt64(v) else {
                    throw OrderWorkflowError(
                        .badConfiguration, "WORKFLOWD_RANDOM_SEED must be a whole number from 0 to \(UInt64.max), got \"\(v)\"")
                }
                randomSeed = seed
            }
            if let v = value("WORKFLOWD_EXTERNAL_STEPS") {
                externalSteps = try Self.externalSteps(v, source: "WORKFLOWD_EXTERNAL_STEPS")
            }
            if let v = try milliseconds("WORKFLOWD_PAYMENT_TIMEOUT_MS", max: 86_400_000 * 30), v > 0 {
                paymentTimeoutMilliseconds = v
            } else if value("WORKFLOWD_PAYMENT_TIMEOUT_MS") != nil {
                throw OrderWorkflowError(.badConfiguration, "WORKFLOWD_PAYMENT_TIMEOUT_MS must be greater than 0")
            }
            if let v = try milliseconds("WORKFLOWD_FULFILLMENT_TIMEOUT_MS", max: 86_400_000 * 30), v > 0 {
                fulfillmentTimeoutMilliseconds = v
            } else if value("WORKFLOWD_FULFILLMENT_TIMEOUT_MS") != nil {
                throw OrderWorkflowError(.badConfiguration, "WORKFLOWD_FULFILLMENT_TIMEOUT_MS must be greater than 0")
            }
        }
    }
}
