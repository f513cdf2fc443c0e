import Logging
import WorkflowEngine
import WorkflowWire

/// Op routing. Runs on the loop thread: each op is handed to the file of its concern
/// (`+Runs`, `+Info`, `+Subscriptions`, `+Await`, `+Workers`). Anything that talks to the engine
/// goes off the loop with `offLoop`, and its reply, encoded off the loop, comes back through the
/// loop's queue.
extension ServerCore {
    func dispatch(_ request: Request, ticket: SessionStateMachine.Ticket, on conn: Connection) {
        let id = request.id
        metrics.request(request.operation.name)
        switch request.operation {
        case .ping: conn.reply(ticket, Reply.success(id: id))
        case .hello: hello(id, ticket, conn)
        case .graph(let workflow): graph(workflow, id, ticket, conn)
        case .stats: stats(id, ticket, conn)
        case .health: health(id, ticket, conn)
        case .metrics: metricsOp(id, ticket, conn)
        case .submit(let orderID, let order): submit(orderID, order, id, ticket, conn)
        case .trigger(let workflow, let foreignID, let object): trigger(workflow, foreignID, object, id, ticket, conn)
        case .get(let ref): get(ref, id, ticket, conn)
        case .history(let ref): history(ref, id, ticket, conn)
        case .list(let args): list(args, id, ticket, conn)
        case .control(let command, let ref, let reason): control(command, ref, reason, id, ticket, conn)
        case .subscribe(let args): subscribe(args, ticket: ticket, id: id, on: conn)
        case .unsubscribe(let sub): unsubscribe(sub, id, ticket, conn)
        case .awaitStatus(let args): startAwait(args, ticket: ticket, id: id, on: conn)
        case .work(let args): work(args, id, ticket, conn)
        case .unwork(let worker): unwork(worker, id, ticket, conn)
        case .complete(let args): complete(args, id, ticket, conn)
        case .fail(let task, let error): fail(task, error, id, ticket, conn)
        case .extend(let task, let lease): extend(task, lease, id, ticket, conn)
        case .callback(let args): callback(args, id, ticket, conn)
        }
    }

    /// Runs `work` off the loop thread (in a Task) and `then` with its result back on the loop.
    /// The one way loop-owned code waits for the engine: `then`, and the loop-owned objects it
    /// captures, only ever run on the loop thread (`LoopBound` carries them through the Task).
    func offLoop<T: Sendable>(_ work: @escaping @Sendable () async -> T, then: @escaping (T) -> Void) {
        let back = LoopBound(LoopClosure(then), loop: loop)
        let loop = self.loop
        Task {
            let value = await work()
            loop.execute { back.value.body(value) }
        }
    }

    /// Runs `body` off the loop and answers `ticket` with its reply, or its error mapped to the wire.
    func spawn(
        _ conn: Connection, _ ticket: SessionStateMachine.Ticket, _ id: RequestID?, op: String,
        _ body: @escaping @Sendable () async throws -> [UInt8]
    ) {
        let logger = self.logger
        let metrics = self.metrics
        let encoder = self.encoder
        offLoop {
            switch await attempt(body) {
            case .success(let b): b
            case .failure(let error):
                Reply.failure(id: id, ServerCore.mapError(error, op: op, logger: logger, metrics: metrics, encoder: encoder))
            }
        } then: { bytes in
            conn.reply(ticket, bytes)
        }
    }

    static func mapError(
        _ error: any Error, op: String, logger: Logger, metrics: ServerMetrics, encoder: PayloadEncoder? = nil
    ) -> WireError {
        var (wire, log) = wireError(from: error)
        if wire.code == .conflict, let run = (error as? WorkflowError)?.run, let encoder {
            wire.run = encoder.runJSON(run)
        }
        metrics.error(wire.code)
        if log {
            logger.error("request failed", metadata: ["op": "\(op)", "error": "\(String(reflecting: error))"])
        }
        return wire
    }

    static func resolve(_ ref: RunRef, _ service: any WorkflowService) async throws -> Run {
        switch ref {
        case .runID(let r):
            guard let run = try await service.run(id: r) else { throw WireError(.notFound, "no run '\(r)'") }
            return run
        case .foreignID(let workflow, let foreignID):
            guard let run = try await service.latestRun(workflow: workflow, foreignID: foreignID) else {
                throw WireError(.notFound, "no run of '\(workflow)' for foreign_id '\(foreignID)'")
            }
            return run
        }
    }

    /// The run id of `ref`, reading the run only for a foreign id.
    static func runID(_ ref: RunRef, _ service: any WorkflowService) async throws -> String {
        switch ref {
        case .runID(let r): r
        case .foreignID: try await resolve(ref, service).runID
        }
    }
}

/// A closure that must run on the loop thread (see `ServerCore.offLoop`).
final class LoopClosure<T> {
    let body: (T) -> Void
    init(_ body: @escaping (T) -> Void) { self.body = body }
}

/// The outcome of an async throwing call as a value.
func attempt<T: Sendable>(_ body: @Sendable () async throws -> T) async -> Result<T, any Error> {
    do {
        return .success(try await body())
    } catch {
        return .failure(error)
    }
}
