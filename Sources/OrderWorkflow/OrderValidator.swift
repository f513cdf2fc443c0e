import Foundation

/// The validation step's rules: customer name and a plausible email present, at least one item,
/// quantities > 0, prices ≥ 0, total > 0 and equal to the sum of the items to the cent.
public enum OrderValidator {
    /// nil when valid; otherwise every problem, joined by "; ".
    public static func problems(in order: Order) -> String? {
        var problems: [String] = []
        if (order.customerName ?? "").trimmingCharacters(in: .whitespaces).isEmpty {
            problems.append("customer name is missing")
        }
        let email = order.email ?? ""
        if email.isEmpty {
            problems.append("email is missing")
        } else if !isPlausibleEmail(email) {
            problems.append("email \"\(email)\" is not plausible")
        }
        if order.items.isEmpty { problems.append("the order has no items") }
        var sum = Decimal(0)
        for (i, item) in order.items.enumerated() {
            if item.quantity <= 0 { problems.append("item \(i + 1) has quantity \(item.quantity); it must be > 0") }
            if item.price < 0 { problems.append("item \(i + 1) has a negative price") }
            sum += item.price * Decimal(item.quantity)
        }
        if order.total <= 0 {
            problems.append("total must be > 0")
        } else if cents(order.total) != cents(sum) {
            problems.append("total \(order.total) does not equal the sum of the items \(cents(sum))")
        }
        return problems.isEmpty ? nil : problems.joined(separator: "; ")
    }

    /// `local@domain.tld`: one `@`, no spaces, a dot inside the domain with text on both sides.
    public static func isPlausibleEmail(_ s: String) -> Bool {
        let parts = s.split(separator: "@", omittingEmptySubsequences: false)
        guard parts.count == 2, !parts[0].isEmpty, !s.contains(where: \.isWhitespace) else { return false }
        let labels = parts[1].split(separator: ".", omittingEmptySubsequences: false)
        return labels.count >= 2 && labels.allSatisfy { !$0.isEmpty }
    }

    static func cents(_ d: Decimal) -> Decimal {
        var value = d
        var rounded = Decimal()
        NSDecimalRound(&rounded, &value, 2, .plain)
        return rounded
    }
}
