import Foundation

/// The `order-processor` object (PROTOCOL.md). A client sends `id, customer_name, email, items,
/// total`; the workflow fills in the rest.
///
/// Money is `Decimal`: on this platform `JSONDecoder` reads a number such as `1359.97` into a
/// `Decimal` from its text and `JSONEncoder` writes it back the same (tested in
/// `OrderTests.moneyRoundTrips`), so no binary float ever touches an amount.
public struct Order: Codable, Sendable, Equatable {
    public var id: String
    public var customerName: String?
    public var email: String?
    public var items: [OrderItem]
    public var total: Decimal
    public var paymentID: String?
    public var trackingID: String?
    public var createdAt: String?
    public var updatedAt: String?

    public init(
        id: String, customerName: String?, email: String?, items: [OrderItem], total: Decimal,
        paymentID: String? = nil, trackingID: String? = nil, createdAt: String? = nil, updatedAt: String? = nil
    ) {
        self.id = id
        self.customerName = customerName
        self.email = email
        self.items = items
        self.total = total
        self.paymentID = paymentID
        self.trackingID = trackingID
        self.createdAt = createdAt
        self.updatedAt = updatedAt
    }

    enum CodingKeys: String, CodingKey {
        case id
        case customerName = "customer_name"
        case email, items, total
        case paymentID = "payment_id"
        case trackingID = "tracking_id"
        case createdAt = "created_at"
        case updatedAt = "updated_at"
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        id = try c.decode(String.self, forKey: .id)
        customerName = try c.decodeIfPresent(String.self, forKey: .customerName)
        email = try c.decodeIfPresent(String.self, forKey: .email)
        items = try c.decodeIfPresent([OrderItem].self, forKey: .items) ?? []
        total = try c.decode(Decimal.self, forKey: .total)
        paymentID = try c.decodeIfPresent(String.self, forKey: .paymentID)
        trackingID = try c.decodeIfPresent(String.self, forKey: .trackingID)
        createdAt = try c.decodeIfPresent(String.self, forKey: .createdAt)
        updatedAt = try c.decodeIfPresent(String.self, forKey: .updatedAt)
    }

    /// Writes every field, nulls included, so every stored order has the same shape.
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(id, forKey: .id)
        try c.encode(customerName, forKey: .customerName)
        try c.encode(email, forKey: .email)
        try c.encode(items, forKey: .items)
        try c.encode(total, forKey: .total)
        try c.encode(paymentID, forKey: .paymentID)
        try c.encode(trackingID, forKey: .trackingID)
        try c.encode(createdAt, forKey: .createdAt)
        try c.encode(updatedAt, forKey: .updatedAt)
    }

    /// The JSON the run stores.
    public func jsonBytes() throws -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return Array(try encoder.encode(self))
    }

    public init(jsonBytes: [UInt8]) throws {
        self = try JSONDecoder().decode(Order.self, from: Data(jsonBytes))
    }

    /// A decoding error in a sentence that names the field (`items[0].quantity: expected a
    /// number`), without Foundation's debug text.
    public static func describe(_ error: any Error) -> String {
        func path(_ keys: [any CodingKey]) -> String {
            var out = ""
            for k in keys {
                if let i = k.intValue { out += "[\(i)]" } else { out += (out.isEmpty ? "" : ".") + k.stringValue }
            }
            return out.isEmpty ? "the object" : out
        }
        switch error as? DecodingError {
        case .typeMismatch(let type, let c)?: return "\(path(c.codingPath)): expected \(typeName(type))"
        case .valueNotFound(let type, let c)?: return "\(path(c.codingPath)): expected \(typeName(type)), found null"
        case .keyNotFound(let key, let c)?: return "\(path(c.codingPath + [key])): missing"
        case .dataCorrupted(let c)?: return "\(path(c.codingPath)): \(c.codingPath.isEmpty ? "not JSON" : "not a valid value")"
        case nil: return "\(error)"
        @unknown default: return "not readable"
        }
    }

    private static func typeName(_ type: Any.Type) -> String {
        switch type {
        case is String.Type: "a string"
        case is Int.Type, is Decimal.Type, is Double.Type: "a number"
        case is [OrderItem].Type, is [Any].Type: "an array"
        default: "an object"
        }
    }
}

public struct OrderItem: Codable, Sendable, Equatable {
    public var productID: String
    public var name: String
    public var quantity: Int
    public var price: Decimal

    public init(productID: String, name: String, quantity: Int, price: Decimal) {
        self.productID = productID
        self.name = name
        self.quantity = quantity
        self.price = price
    }

    enum CodingKeys: String, CodingKey {
        case productID = "product_id"
        case name, quantity, price
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        productID = try c.decodeIfPresent(String.self, forKey: .productID) ?? ""
        name = try c.decodeIfPresent(String.self, forKey: .name) ?? ""
        quantity = try c.decode(Int.self, forKey: .quantity)
        price = try c.decode(Decimal.self, forKey: .price)
    }
}
