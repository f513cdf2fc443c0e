import Foundation

/// The seed's five sample orders, for the demo and the tests. order-1004 has no customer name,
/// so validation rejects it; the other four are valid.
public enum SampleOrders {
    public static let all: [Order] = [
        Order(
            id: "order-1001", customerName: "Alice Johnson", email: "alice@example.com",
            items: [
                OrderItem(productID: "LAPTOP-001", name: "Laptop", quantity: 1, price: Decimal(string: "1299.99")!),
                OrderItem(productID: "MOUSE-001", name: "Wireless Mouse", quantity: 2, price: Decimal(string: "29.99")!),
            ],
            total: Decimal(string: "1359.97")!),
        Order(
            id: "order-1002", customerName: "Bob Smith", email: "bob@example.com",
            items: [
                OrderItem(productID: "BOOK-042", name: "Go Programming", quantity: 1, price: Decimal(string: "49.99")!)
            ],
            total: Decimal(string: "49.99")!),
        Order(
            id: "order-1003", customerName: "Carol White", email: "carol@example.com",
            items: [
                OrderItem(productID: "HEADSET-007", name: "Headphones", quantity: 1, price: Decimal(string: "199.99")!),
                OrderItem(productID: "CABLE-003", name: "USB-C Cable", quantity: 3, price: Decimal(string: "12.50")!),
            ],
            total: Decimal(string: "237.49")!),
        Order(
            id: "order-1004", customerName: "", email: "dave@example.com",
            items: [
                OrderItem(productID: "PHONE-010", name: "Smartphone", quantity: 1, price: Decimal(string: "799.00")!)
            ],
            total: Decimal(string: "799.00")!),
        Order(
            id: "order-1005", customerName: "Eve Davis", email: "eve@example.com",
            items: [
                OrderItem(productID: "DESK-100", name: "Standing Desk", quantity: 1, price: Decimal(string: "549.00")!),
                OrderItem(productID: "LAMP-020", name: "Desk Lamp", quantity: 2, price: Decimal(string: "34.95")!),
            ],
            total: Decimal(string: "618.90")!),
    ]

    /// The JSON a client would submit for each (the first five fields).
    public static func json(_ order: Order) throws -> [UInt8] { try order.jsonBytes() }
}
