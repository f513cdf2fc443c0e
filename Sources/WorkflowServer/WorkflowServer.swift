import Logging
import Synchronization
import WorkflowEngine

/// The workflowd protocol server: a libuv loop on its own thread serving newline-delimited JSON
/// on a Unix socket, in front of a `WorkflowService`.
///
/// ```
/// let server = WorkflowServer(configuration: .init(socketPath: "/run/workflowd.sock"), service: engine, logger: logger)
/// try server.start()
/// ...
/// await server.drain()          // or: try await server.run() and cancel the task
/// ```
public final class WorkflowServer: Sendable {
    public let configuration: Configuration
    private let service: any WorkflowService
    private let logger: Logger
    private let state = Mutex<State>(State())

    private struct State {
        var started = false
        var stopped = false
        var waiters: [CheckedContinuation<Void, Never>] = []
        var loop: EventLoop?
        var core: LoopBound<ServerCore>?
    }

    public init(configuration: Configuration, service: any WorkflowService, logger: Logger) {
        self.configuration = configuration
        self.service = service
        self.logger = logger
    }

    /// Binds the socket (refusing if a live server owns it, removing a stale file) and starts the
    /// loop thread. Returns once the socket accepts connections.
    public func start() throws(ServerError) {
        let already = state.withLock { s -> Bool in
            if s.started { return true }
            s.started = true
            return false
        }
        if already { throw ServerError(.alreadyStarted, "the server was already started") }
        let loop = try EventLoop()
        let core = ServerCore(configuration: configuration, service: service, logger: logger, loop: loop)
        do {
            try core.bind()
        } catch {
            state.withLock { $0.stopped = true }
            throw error
        }
        // The core is kept alive by `state` until the loop thread has ended.
        state.withLock {
            $0.loop = loop
            $0.core = LoopBound(core, loop: loop)
        }
        try loop.startThread { [self] in self.loopEnded() }
        var metadata: Logger.Metadata = ["socket": "\(configuration.socketPath)"]
        if let allowed = configuration.allowedPeers {
            metadata["allow.uids"] = "\(allowed.uids.sorted().map(String.init).joined(separator: ","))"
            metadata["allow.gids"] = "\(allowed.gids.sorted().map(String.init).joined(separator: ","))"
        }
        logger.info("listening", metadata: metadata)
    }

    private func loopEnded() {
        let waiters = state.withLock { s -> [CheckedContinuation<Void, Never>] in
            s.stopped = true
            s.core = nil
            let w = s.waiters
            s.waiters = []
            return w
        }
        for w in waiters { w.resume() }
    }

    /// Graceful shutdown: stop accepting, answer new requests `DRAINING` (and pending `await`s
    /// too), let in-flight requests finish for up to `timeoutMilliseconds` (default: the
    /// configuration's), close every session, end the loop. Returns when the loop has ended.
    public func drain(timeoutMilliseconds: UInt64? = nil) async {
        let timeout = timeoutMilliseconds ?? configuration.drainTimeoutMilliseconds
        let target = state.withLock { s -> (EventLoop, LoopBound<ServerCore>)? in
            guard let loop = s.loop, let core = s.core, !s.stopped else { return nil }
            return (loop, core)
        }
        if let (loop, core) = target {
            loop.execute { core.value.beginDrain(timeoutMilliseconds: timeout) }
        }
        await waitUntilStopped()
    }

    /// Waits until the loop has ended (after `drain`).
    public func waitUntilStopped() async {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let done = state.withLock { s -> Bool in
                if s.stopped || !s.started { return true }
                s.waiters.append(c)
                return false
            }
            if done { c.resume() }
        }
    }

    /// Starts, serves until the task is cancelled, then drains.
    public func run() async throws {
        try start()
        await withTaskCancellationHandler {
            await waitUntilStopped()
        } onCancel: {
            Task { await self.drain() }
        }
    }
}
