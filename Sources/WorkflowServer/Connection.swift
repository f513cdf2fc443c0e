import CLibUV
import Logging
import WorkflowWire

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// One client connection: the libuv pipe, its `SessionStateMachine`, and the driver that runs the
/// machine's actions. Lives on the loop thread only.
///
/// The handle's `data` holds this object retained (`Unmanaged.passRetained`) from accept until
/// libuv's close callback, which releases it exactly once.
final class Connection {
    let id: UInt64
    unowned let core: ServerCore
    let handle: UnsafeMutablePointer<uv_pipe_t>
    var machine: SessionStateMachine
    var logger: Logger

    /// Bytes queued for the socket but not yet handed to libuv.
    private var pendingOut: [UInt8] = []
    /// Size of the write libuv is doing now (one at a time; later bytes coalesce).
    private var writeInFlight = 0
    private var reading = false
    private var handleClosed = false
    /// Actions are run re-entrantly (a ping is answered while its dispatch runs); the socket is
    /// written once the outermost run finishes, so pipelined replies share one write.
    private var runDepth = 0
    /// Replies that arrived while actions were running (a ping answered inside its own
    /// dispatch). The outermost `run` feeds them to the machine one by one, so a long pipeline
    /// of synchronous requests is a loop, not a recursion as deep as the pipeline.
    private var deferredReplies: [(SessionStateMachine.Ticket, [UInt8], SessionStateMachine.Activation?)] = []
    private var deferredHead = 0

    /// Live subscriptions of this connection, by id.
    var subscriptions: [Int64: Subscription] = [:]
    var pendingSubscribes = 0
    var nextSubscriptionID: Int64 = 1
    /// `await`s waiting on this connection, by ticket number.
    var awaits: [UInt64: AwaitWatcher] = [:]
    /// Workers of this connection, by id.
    var workers: [Int64: Worker] = [:]
    var nextWorkerID: Int64 = 1

    init(id: UInt64, core: ServerCore, handle: UnsafeMutablePointer<uv_pipe_t>, limits: SessionStateMachine.Limits, logger: Logger) {
        self.id = id
        self.core = core
        self.handle = handle
        self.machine = SessionStateMachine(limits: limits)
        self.logger = logger
        self.logger[metadataKey: "session.id"] = "\(id)"
    }

    var isClosed: Bool { handleClosed }

    // MARK: - libuv plumbing

    func startReading() {
        guard !reading, !handleClosed else { return }
        reading = true
        let rc = uv_read_start(
            asStream(handle),
            { handle, suggested, buf in
                guard let handle, let buf else { return }
                let core = Unmanaged<ServerCore>.fromOpaque(handle.pointee.loop.pointee.data).takeUnretainedValue()
                buf.pointee = uv_buf_init(core.readBuffer.assumingMemoryBound(to: CChar.self), UInt32(core.readBufferSize))
            },
            { stream, nread, buf in
                guard let stream else { return }
                let me = Unmanaged<Connection>.fromOpaque(stream.pointee.data).takeUnretainedValue()
                me.didRead(nread, buf)
            })
        if rc != 0 {
            reading = false
            logger.debug("read start failed", metadata: ["uv.error": "\(uvErrorName(rc))"])
            run(machine.connectionFailed())
        }
    }

    func stopReading() {
        guard reading, !handleClosed else { return }
        reading = false
        uv_read_stop(asStream(handle))
    }

    private func didRead(_ nread: Int, _ buf: UnsafePointer<uv_buf_t>?) {
        if nread > 0, let base = buf?.pointee.base {
            run(machine.bytesReceived(UnsafeRawBufferPointer(start: base, count: nread)))
        } else if nread == Int(UV_EOF.rawValue) {
            stopReading()
            // End of input is either a half-close (the peer shut its writing side and still
            // reads: pending replies and its streams go on) or the peer closing for good.
            // POLLHUP tells them apart on a Unix socket; a worker or subscriber that vanished
            // must not keep its tasks or its place.
            if peerHungUp() {
                run(machine.connectionFailed())
            } else {
                run(machine.inputEnded())
                if !handleClosed { watchForHangUp() }
            }
        } else if nread < 0 {
            logger.debug("read failed", metadata: ["uv.error": "\(uvErrorName(Int32(nread)))"])
            run(machine.connectionFailed())
        }
    }

    /// Whether the peer has closed its end completely (not just shut its writing side). A
    /// zero-timeout poll of this connection's descriptor: it never blocks the loop.
    private func peerHungUp() -> Bool {
        var fd = uv_os_fd_t()
        guard uv_fileno(asHandle(handle), &fd) == 0 else { return true }
        var p = pollfd(fd: Int32(fd), events: 0, revents: 0)
        guard poll(&p, 1, 0) >= 0 else { return false }
        return p.revents & Int16(POLLHUP | POLLERR) != 0
    }

    private var hangUpTimer: LoopTimer?

    /// After a half-close nothing more is read, so a later full close would go unnoticed while
    /// nothing is written (an idle worker, a quiet subscription): look once a second.
    private func watchForHangUp() {
        hangUpTimer = LoopTimer(loop: core.loop, milliseconds: 1_000) { [weak self] in
            guard let self, !self.handleClosed else { return }
            self.hangUpTimer = nil
            if self.peerHungUp() {
                self.run(self.machine.connectionFailed())
            } else {
                self.watchForHangUp()
            }
        }
    }

    /// Queues bytes for the socket; written when the current action run ends.
    private func queue(_ bytes: [UInt8]) {
        pendingOut.append(contentsOf: bytes)
    }

    /// Pushes one subscription frame made of a per-subscription prefix and a shared event JSON.
    /// Returns false when the connection does not take pushed frames now (buffer full).
    func pushFrame(prefix: [UInt8], event: [UInt8]) -> Bool {
        guard machine.acceptsPushedFrames else { return false }
        pendingOut.append(contentsOf: prefix)
        pendingOut.append(contentsOf: event)
        pendingOut.append(contentsOf: EventFrame.suffix)
        run(machine.framesWritten(prefix.count + event.count + EventFrame.suffix.count))
        return true
    }

    /// Pushes task frames even above the high-water mark: their tasks are claimed already, and
    /// a worker holds at most `max_in_flight` of them, so they are bounded. False when the
    /// connection is closing.
    func pushTaskFrames(_ frames: [[UInt8]]) -> Bool {
        guard !handleClosed, machine.acceptsTaskFrames else { return false }
        var n = 0
        for f in frames {
            pendingOut.append(contentsOf: f)
            n += f.count
        }
        run(machine.framesWritten(n))
        return true
    }

    /// Pushes one whole pushed line (a subscription's closing error frame); false when the
    /// connection does not take pushed frames now.
    func pushLine(_ line: [UInt8]) -> Bool {
        guard machine.acceptsPushedFrames else { return false }
        pendingOut.append(contentsOf: line)
        run(machine.framesWritten(line.count))
        return true
    }

    var acceptsPushedFrames: Bool { machine.acceptsPushedFrames }

    private func flush() {
        guard writeInFlight == 0, !pendingOut.isEmpty, !handleClosed else { return }
        let count = pendingOut.count
        let data = UnsafeMutableRawPointer.allocate(byteCount: count, alignment: 1)
        pendingOut.withUnsafeBytes { data.copyMemory(from: $0.baseAddress!, byteCount: count) }
        pendingOut.removeAll(keepingCapacity: pendingOut.capacity <= 1 << 20)
        let req = UnsafeMutablePointer<uv_write_t>.allocate(capacity: 1)
        req.pointee.data = data
        var buf = uv_buf_init(data.assumingMemoryBound(to: CChar.self), UInt32(count))
        writeInFlight = count
        let rc = uv_write(req, asStream(handle), &buf, 1) { req, status in
            guard let req else { return }
            let stream = req.pointee.handle!
            req.pointee.data.deallocate()
            let me = Unmanaged<Connection>.fromOpaque(stream.pointee.data).takeUnretainedValue()
            req.deallocate()
            me.didWrite(status)
        }
        if rc != 0 {
            writeInFlight = 0
            data.deallocate()
            req.deallocate()
            logger.debug("write failed", metadata: ["uv.error": "\(uvErrorName(rc))"])
            run(machine.connectionFailed())
        }
    }

    private func didWrite(_ status: Int32) {
        let count = writeInFlight
        writeInFlight = 0
        if handleClosed { return }
        if status != 0 {
            logger.debug("write failed", metadata: ["uv.error": "\(uvErrorName(status))"])
            run(machine.connectionFailed())
            return
        }
        run(machine.writeCompleted(count))
    }

    private func closeHandle() {
        guard !handleClosed else { return }
        handleClosed = true
        hangUpTimer?.cancel()
        hangUpTimer = nil
        reading = false
        pendingOut = []
        core.connectionClosed(self)
        uv_close(asHandle(handle)) { h in
            guard let h else { return }
            Unmanaged<Connection>.fromOpaque(h.pointee.data).release()
            UnsafeMutableRawPointer(h).deallocate()
        }
    }

    // MARK: - Running actions

    func run(_ actions: [SessionStateMachine.Action]) {
        runDepth += 1
        perform(actions)
        if runDepth == 1 {
            while deferredHead < deferredReplies.count {
                let (ticket, bytes, activates) = deferredReplies[deferredHead]
                deferredHead += 1
                perform(machine.replyReady(ticket, bytes, activates: activates))
            }
            deferredReplies.removeAll(keepingCapacity: deferredReplies.capacity <= 256)
            deferredHead = 0
        }
        runDepth -= 1
        if runDepth == 0 {
            flush()
            if core.isDraining { core.checkDrainDone() }
        }
    }

    private func perform(_ actions: [SessionStateMachine.Action]) {
        for action in actions {
            switch action {
            case .dispatch(let ticket, let request):
                core.dispatch(request, ticket: ticket, on: self)
            case .write(let bytes):
                queue(bytes)
            case .activated(.subscription(let sub)):
                core.hub.activate(connection: self, sub: sub)
            case .activated(.worker(let id)):
                core.activateWorker(id, on: self)
            case .writable:
                core.hub.connectionWritable(self)
                core.workersWritable(self)
            case .stopReading:
                stopReading()
            case .startReading:
                startReading()
            case .close:
                flush()
                closeHandle()
            }
        }
    }

    /// Answers a dispatched request.
    func reply(_ ticket: SessionStateMachine.Ticket, _ bytes: [UInt8], activates: SessionStateMachine.Activation? = nil) {
        if runDepth > 0 {
            deferredReplies.append((ticket, bytes, activates))
        } else {
            run(machine.replyReady(ticket, bytes, activates: activates))
        }
    }

    /// Writes a final line (such as `LIMIT` at accept) and closes.
    func refuse(_ bytes: [UInt8]) {
        pendingOut.append(contentsOf: bytes)
        run(machine.framesWritten(bytes.count) + machine.close())
    }

    /// Subscriptions or workers came or went.
    func streamsChanged() {
        run(machine.streamsChanged(count: subscriptions.count + workers.count))
    }
}
