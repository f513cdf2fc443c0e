/// The order processor's statuses, with the seed's integer codes.
public enum OrderStatus: Int, Sendable, CaseIterable, CustomStringConvertible {
    case orderCreated = 1
    case orderValidated = 2
    case paymentProcessed = 3
    case orderFulfilled = 4
    case orderCompleted = 5
    case orderRejected = 6
    case paymentFailed = 7
    case fulfillmentFailed = 8

    public var code: Int { rawValue }

    public var name: String {
        switch self {
        case .orderCreated: "OrderCreated"
        case .orderValidated: "OrderValidated"
        case .paymentProcessed: "PaymentProcessed"
        case .orderFulfilled: "OrderFulfilled"
        case .orderCompleted: "OrderCompleted"
        case .orderRejected: "OrderRejected"
        case .paymentFailed: "PaymentFailed"
        case .fulfillmentFailed: "FulfillmentFailed"
        }
    }

    public var description: String { name }

    /// 5, 6, 7, 8.
    public var isTerminal: Bool {
        switch self {
        case .orderCreated, .orderValidated, .paymentProcessed, .orderFulfilled: false
        case .orderCompleted, .orderRejected, .paymentFailed, .fulfillmentFailed: true
        }
    }
}
