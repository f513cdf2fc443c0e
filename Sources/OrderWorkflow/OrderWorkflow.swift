import WorkflowEngine

/// The seed's order processor on the engine:
///
/// ```
/// OrderCreated → OrderValidated → PaymentProcessed → OrderFulfilled → OrderCompleted
///      ↓ invalid        ↓ declined / timed out   ↓ failed / timed out
/// OrderRejected    PaymentFailed            FulfillmentFailed
/// ```
public enum OrderWorkflow {
    public static let name = "order-processor"

    /// The checked definition. `payment` and `fulfillment` default to the simulated services
    /// configured by `configuration`.
    public static func definition(
        configuration: Configuration = Configuration(), payment: (any PaymentGateway)? = nil,
        fulfillment: (any FulfillmentService)? = nil
    ) throws -> WorkflowDefinition {
        let random = SimulationRandom(seed: configuration.randomSeed)
        let payment =
            payment
            ?? SimulatedPaymentGateway(
                latencyMilliseconds: configuration.paymentLatencyMilliseconds,
                declineRate: configuration.paymentDeclineRate, random: random)
        let fulfillment =
            fulfillment
            ?? SimulatedFulfillmentService(
                latencyMilliseconds: configuration.fulfillmentLatencyMilliseconds,
                failureRate: configuration.fulfillmentFailureRate, random: random)

        var b = WorkflowBuilder(name: name)
        for s in OrderStatus.allCases { b.status(s.name, code: s.code, terminal: s.isTerminal) }
        b.initial(OrderStatus.orderCreated.code)
        let external = configuration.externalSteps
        func step(
            _ from: OrderStatus, to: [OrderStatus], _ function: @escaping StepFunction
        ) {
            if external.contains(from) {
                b.externalStep(from: from.code, to: to.map(\.code))
            } else {
                b.step(from: from.code, to: to.map(\.code), function)
            }
        }

        step(.orderCreated, to: [.orderValidated, .orderRejected]) {
            input in
            let order: Order
            do {
                order = try Order(jsonBytes: input.object)
            } catch {
                return .next(OrderStatus.orderRejected.code, reason: "the order is not a valid order object")
            }
            if order.id != input.foreignID {
                return .next(
                    OrderStatus.orderRejected.code, reason: "order id \(order.id) does not match \(input.foreignID)")
            }
            if let problems = OrderValidator.problems(in: order) {
                return .next(OrderStatus.orderRejected.code, reason: problems)
            }
            var o = order
            o.createdAt = o.createdAt ?? input.now.rfc3339
            o.updatedAt = input.now.rfc3339
            return .next(OrderStatus.orderValidated.code, object: try o.jsonBytes())
        }

        step(.orderValidated, to: [.paymentProcessed, .paymentFailed]) {
            input in
            var order = try decode(input)
            switch try await payment.charge(order, runID: input.runID, idempotencyKey: input.idempotencyKey) {
            case .approved(let paymentID):
                order.paymentID = paymentID
                order.updatedAt = input.now.rfc3339
                return .next(OrderStatus.paymentProcessed.code, object: try order.jsonBytes())
            case .declined(let reason):
                return .next(OrderStatus.paymentFailed.code, reason: reason)
            }
        }

        step(.paymentProcessed, to: [.orderFulfilled, .fulfillmentFailed]) {
            input in
            var order = try decode(input)
            switch try await fulfillment.ship(order, runID: input.runID, idempotencyKey: input.idempotencyKey) {
            case .shipped(let trackingID):
                order.trackingID = trackingID
                order.updatedAt = input.now.rfc3339
                return .next(OrderStatus.orderFulfilled.code, object: try order.jsonBytes())
            case .failed(let reason):
                return .next(OrderStatus.fulfillmentFailed.code, reason: reason)
            }
        }

        // Nothing left to do but record it; the object stays as it is (no decode, no encode).
        b.step(from: OrderStatus.orderFulfilled.code, to: [OrderStatus.orderCompleted.code]) { _ in
            .next(OrderStatus.orderCompleted.code)
        }

        b.timeout(
            in: OrderStatus.orderValidated.code, after: configuration.paymentTimeoutMilliseconds,
            to: OrderStatus.paymentFailed.code, reason: "timed out")
        b.timeout(
            in: OrderStatus.paymentProcessed.code, after: configuration.fulfillmentTimeoutMilliseconds,
            to: OrderStatus.fulfillmentFailed.code, reason: "timed out")

        b.erase(eraseCustomerData)
        b.checkObjects(checkOrder)
        return try b.build()
    }

    /// What a worker or a callback may store as the object of an order run: an order (PROTOCOL.md's
    /// shape) whose `id` is the run's foreign id.
    @Sendable public static func checkOrder(_ object: [UInt8], run: Run) throws {
        let order: Order
        do {
            order = try Order(jsonBytes: object)
        } catch {
            throw WorkflowError(
                .badRequest, "not an order (an object with id, items and total, as submitted): \(Order.describe(error))")
        }
        guard order.id == run.foreignID else {
            throw WorkflowError(.badRequest, "id is \(order.id), but this run is for \(run.foreignID)")
        }
    }

    /// Blanks `customer_name` and `email`; everything else (items, amounts, ids) stays for the books.
    ///
    /// An object that is not a readable order (`trigger` takes any object) is erased whole:
    /// nothing in it is known not to be personal, and failing instead would leave the run in
    /// RequestedDataDeleted for good, since a repeated delete-data would fail the same way.
    @Sendable public static func eraseCustomerData(_ object: [UInt8]) throws -> [UInt8] {
        guard var order = try? Order(jsonBytes: object) else { return Array("{}".utf8) }
        order.customerName = ""
        order.email = ""
        return try order.jsonBytes()
    }

    private static func decode(_ input: StepInput) throws -> Order {
        do {
            return try Order(jsonBytes: input.object)
        } catch {
            throw OrderWorkflowError(.badObject, "run \(input.runID) holds an unreadable order")
        }
    }
}
