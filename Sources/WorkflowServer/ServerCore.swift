import CLibUV
import Logging
import WorkflowEngine
import WorkflowWire

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Everything the loop thread owns: the listener, the connections, the hub, the drain. Created
/// on the starting thread (before the loop thread runs), then used on the loop thread only.
final class ServerCore {
    let configuration: Configuration
    let service: any WorkflowService
    let logger: Logger
    let loop: EventLoop
    let encoder: PayloadEncoder
    private(set) var hub: SubscriptionHub!
    let startedAt = ContinuousClock.now
    let metrics = ServerMetrics()

    /// One read buffer for the whole loop: libuv fills it and the read callback consumes it
    /// before returning, so connections never need their own.
    let readBufferSize = 64 * 1024
    let readBuffer: UnsafeMutableRawPointer

    private let listener: UnsafeMutablePointer<uv_pipe_t>
    private var listenerClosed = false
    private var connections: [UInt64: Connection] = [:]
    private var nextConnectionID: UInt64 = 1
    private var listenerToken: EventListenerToken?
    private var metricsListener: MetricsHTTPListener?

    private enum Phase {
        case running
        case draining(deadline: LoopTimer)
        case closing(grace: LoopTimer)
        case stopped
    }
    private var phase: Phase = .running
    private var refusalLog = RefusalLogPolicy()

    init(configuration: Configuration, service: any WorkflowService, logger: Logger, loop: EventLoop) {
        self.configuration = configuration
        self.service = service
        self.logger = logger
        self.loop = loop
        self.encoder = PayloadEncoder(workflows: service.workflows)
        self.readBuffer = .allocate(byteCount: readBufferSize, alignment: 16)
        self.listener = .allocate(capacity: 1)
        self.hub = SubscriptionHub(core: self, capacity: configuration.recentEventsKept)
    }

    deinit {
        readBuffer.deallocate()
        listener.deallocate()
    }

    var isDraining: Bool {
        switch phase {
        case .draining: true
        case .running, .closing, .stopped: false
        }
    }

    var connectionCount: Int { connections.count }

    // MARK: - Start (on the starting thread, before the loop runs)

    func bind() throws(ServerError) {
        let path = configuration.socketPath
        try UnixSocketPath.prepare(path)
        loop.loop.pointee.data = Unmanaged.passUnretained(self).toOpaque()
        uv_pipe_init(loop.loop, listener, 0)
        listener.pointee.data = Unmanaged.passUnretained(self).toOpaque()
        var rc = uv_pipe_bind(listener, path)
        if rc == 0 {
            if chmod(path, mode_t(configuration.socketMode)) != 0 {
                rc = -errno
            }
        }
        if rc == 0 {
            rc = uv_listen(asStream(listener), configuration.listenBacklog) { server, status in
                guard let server else { return }
                let core = Unmanaged<ServerCore>.fromOpaque(server.pointee.data).takeUnretainedValue()
                core.accept(status)
            }
        }
        if rc != 0 {
            listenerClosed = true
            uv_close(asHandle(listener), nil)
            uv_run(loop.loop, UV_RUN_NOWAIT)  // let the close finish
            throw ServerError(.system, "cannot listen on the socket", uvError: uvErrorName(rc))
        }
        if let m = configuration.metricsListen {
            let listener = MetricsHTTPListener(core: self)
            do {
                try listener.bind(address: m.address, port: m.port)
            } catch {
                closeListener()
                uv_run(loop.loop, UV_RUN_NOWAIT)
                throw error
            }
            metricsListener = listener
        }
        let hub = LoopBound(self.hub!, loop: loop)
        let encoder = self.encoder
        let loop = self.loop
        listenerToken = service.addEventListener { events in
            // Encoded once here, on the engine's thread; every subscriber shares the bytes.
            let batch = events.map { SubscriptionHub.Recent(event: $0, json: encoder.eventJSON($0)) }
            loop.execute { hub.value.deliver(batch) }
        }
    }

    // MARK: - Connections

    private func accept(_ status: Int32) {
        if status != 0 {
            logger.warning("accept failed", metadata: ["uv.error": "\(uvErrorName(status))"])
            return
        }
        let handle = UnsafeMutablePointer<uv_pipe_t>.allocate(capacity: 1)
        uv_pipe_init(loop.loop, handle, 0)
        handle.pointee.data = nil
        let rc = uv_accept(asStream(listener), asStream(handle))
        if rc != 0 || !(isRunning) {
            uv_close(asHandle(handle)) { h in UnsafeMutableRawPointer(h!).deallocate() }
            return
        }
        let id = nextConnectionID
        nextConnectionID += 1
        let conn = Connection(id: id, core: self, handle: handle, limits: configuration.sessionLimits, logger: logger)
        handle.pointee.data = Unmanaged.passRetained(conn).toOpaque()
        let full = connections.count >= configuration.maxConnections
        connections[id] = conn
        if let allowed = configuration.allowedPeers, !admit(conn, allowed) { return }
        if full {
            metrics.refused()
            logger.debug("connection refused: limit", metadata: ["session.id": "\(id)"])
            conn.refuse(
                Reply.failure(id: nil, WireError(.limit, "too many connections (max \(configuration.maxConnections))")))
            return
        }
        metrics.accepted()
        logger.trace("connection opened", metadata: ["session.id": "\(id)"])
        conn.startReading()
    }

    /// Checks the peer of a new connection against the allow-list; a refused one gets one
    /// `FORBIDDEN` line and is closed. Unknown credentials are refused too.
    private func admit(_ conn: Connection, _ allowed: PeerAllowList) -> Bool {
        var fd = uv_os_fd_t()
        let peer = uv_fileno(asHandle(conn.handle), &fd) == 0 ? PeerCredentials.of(fd: Int32(fd)) : nil
        if let peer, allowed.admits(uid: peer.uid, gid: peer.gid) { return true }
        let message: String
        let decision = refusalLog.refused(uid: peer?.uid, gid: peer?.gid, now: uv_now(loop.loop))
        var metadata: Logger.Metadata = ["session.id": "\(conn.id)"]
        if let peer {
            metadata["peer.uid"] = "\(peer.uid)"
            metadata["peer.gid"] = "\(peer.gid)"
            metadata["peer.pid"] = "\(peer.pid)"
            message = "uid \(peer.uid) / gid \(peer.gid) may not use this server"
        } else {
            message = "the server could not tell who connected, and only listed users may use it"
        }
        if decision.warn, decision.suppressed > 0 { metadata["refusals.not_logged"] = "\(decision.suppressed)" }
        let line: Logger.Message =
            peer == nil ? "connection refused: peer credentials unknown" : "connection refused: peer not in the allow-list"
        // One warning per peer a minute at most (a loop of retries must not flood the log).
        logger.log(level: decision.warn ? .warning : .debug, line, metadata: metadata)
        metrics.refused()
        conn.refuse(Reply.failure(id: nil, WireError(.forbidden, message)))
        return false
    }

    private var isRunning: Bool {
        switch phase {
        case .running: true
        case .draining, .closing, .stopped: false
        }
    }

    /// Called once per connection, as its handle closes.
    func connectionClosed(_ conn: Connection) {
        connections[conn.id] = nil
        for sub in conn.subscriptions.values { hub.remove(sub) }
        conn.subscriptions = [:]
        for w in conn.awaits.values { cancelAwait(w) }
        conn.awaits = [:]
        for w in conn.workers.values { service.removeWorker(w.token) }
        conn.workers = [:]
        logger.trace("connection closed", metadata: ["session.id": "\(conn.id)"])
        if case .closing = phase, connections.isEmpty { stop() }
    }

    // MARK: - Drain

    /// Stop accepting, answer new requests `DRAINING`, let in-flight requests finish until the
    /// deadline, then close every session and end the loop.
    func beginDrain(timeoutMilliseconds: UInt64) {
        guard case .running = phase else { return }
        logger.info("draining", metadata: ["connections": "\(connections.count)"])
        let deadline = LoopTimer(loop: loop, milliseconds: timeoutMilliseconds) { [weak self] in self?.finishDrain() }
        phase = .draining(deadline: deadline)
        closeListener()
        for conn in Array(connections.values) {
            for w in Array(conn.awaits.values) {
                completeAwait(w, Reply.failure(id: w.requestID, WireError(.draining, "the server is shutting down")))
            }
            conn.run(conn.machine.beginDrain())
        }
        checkDrainDone()
    }

    func checkDrainDone() {
        guard case .draining = phase else { return }
        for conn in connections.values where conn.machine.pendingRequests > 0 { return }
        finishDrain()
    }

    private func finishDrain() {
        guard case .draining(let deadline) = phase else { return }
        deadline.cancel()
        let grace = LoopTimer(loop: loop, milliseconds: configuration.closeGraceMilliseconds) { [weak self] in
            guard let self else { return }
            for conn in Array(self.connections.values) { conn.run(conn.machine.connectionFailed()) }
        }
        phase = .closing(grace: grace)
        for conn in Array(connections.values) { conn.run(conn.machine.close()) }
        if connections.isEmpty { stop() }
    }

    private func stop() {
        guard case .closing(let grace) = phase else { return }
        grace.cancel()
        phase = .stopped
        if let token = listenerToken {
            service.removeEventListener(token)
            listenerToken = nil
        }
        closeListener()
        metricsListener?.close()
        logger.info("server stopped")
        loop.closeQueue()
    }

    private func closeListener() {
        guard !listenerClosed else { return }
        listenerClosed = true
        uv_close(asHandle(listener), nil)
        unlink(configuration.socketPath)
    }
}
