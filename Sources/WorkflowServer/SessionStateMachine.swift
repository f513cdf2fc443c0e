import WorkflowWire

/// One client connection's protocol logic, without I/O: framing, ordering of replies, read
/// back-pressure, half-close, draining and closing.
///
/// The driver (`Connection`) feeds it inputs — bytes read, end of input, replies computed,
/// writes completed — and runs the `Action`s it returns, in order.
///
/// - Replies go out in request order; `await` replies go out when ready (clients match by id).
/// - A line over `maxLine` is answered `LINE_TOO_LONG` (after earlier replies) and the
///   connection closes once that reply is written.
/// - Reading stops while too many bytes wait to be written or too many requests are pending,
///   and resumes (including lines already buffered) once both are low again.
/// - After the client's end of input, every pending reply is still sent; then the connection
///   closes, unless it has streams (subscriptions, workers), which keep going until the client closes.
struct SessionStateMachine {
    struct Limits: Sendable, Equatable {
        /// Longest accepted line in bytes, without its `\n`.
        var maxLine: Int
        /// Stop reading (and stop pushing events) at this many unwritten bytes.
        var writeHighWater: Int
        /// Resume below this many.
        var writeLowWater: Int
        /// Stop reading at this many requests without a reply.
        var maxPendingRequests: Int
    }

    /// Which reply slot a dispatched request fills.
    struct Ticket: Hashable, Sendable {
        var number: UInt64
        /// false for `await`, whose reply does not wait for earlier ones.
        var ordered: Bool
    }

    enum Action: Equatable {
        /// Run this request; answer with `replyReady(ticket, ...)`.
        case dispatch(Ticket, Request)
        case write([UInt8])
        /// The reply that starts a stream (`subscribe`, `work`) is now written: its frames may follow.
        case activated(Activation)
        /// Unwritten bytes fell back below the low-water mark after having been high.
        case writable
        case stopReading
        case startReading
        /// Close the connection now (everything owed has been written).
        case close
    }

    /// A stream whose frames may only follow the reply that started it.
    enum Activation: Equatable, Sendable {
        case subscription(Int64)
        case worker(Int64)
    }

    private struct Slot {
        var reply: [UInt8]?
        var activates: Activation?
        /// A worker's answer (`complete`, `fail`, `extend`): may run beside the answers before it.
        var answer = false
    }

    private struct Session {
        var inbuf: [UInt8] = []
        var consumed = 0
        /// Bytes after `consumed` already scanned without finding `\n`.
        var scanned = 0
        /// Numbers of ordered slots (every request but `await`, and errors known at once).
        var nextTicket: UInt64 = 0
        /// Numbers of `await` tickets: a counter of their own, so ordered slots stay contiguous.
        var nextAwaitTicket: UInt64 = 0
        /// Ordered requests dispatched whose reply has not come back. Requests of one connection
        /// run one after another: the next line is dispatched only when this is 0, so a
        /// pipelined `get` sees the `submit` before it.
        var orderedInFlight = 0
        /// Of those, workers' answers: answers that follow each other on one connection run at
        /// once (each is about its own task), their replies still in request order.
        var answersInFlight = 0
        /// A line decoded while answers ran that must wait for them (any other op).
        var peeked: (start: Int, next: Int, decoded: DecodedLine)?
        /// Ticket number of `ordered[orderedHead]`.
        var headTicket: UInt64 = 0
        var ordered: [Slot] = []
        var orderedHead = 0
        var awaitsInFlight = 0
        /// Subscriptions and workers: they keep the connection open after its input ended.
        var streams = 0
        var outstandingBytes = 0
        var aboveHighWater = false
        var readingStopped = false
        /// The client ended its input (half-close or full close).
        var endOfInput = false
        /// A fatal framing error was answered: close once the ordered replies are written.
        var closeAfterReplies = false
        var draining = false

        var orderedPending: Int { ordered.count - orderedHead }
        var pending: Int { orderedPending + awaitsInFlight }
    }

    private enum State {
        case open(Session)
        /// Waiting for the last bytes to be written before closing.
        case closing(outstandingBytes: Int)
        case closed
    }

    let limits: Limits
    private var state: State = .open(Session())

    init(limits: Limits) {
        self.limits = limits
    }

    // MARK: - Queries

    /// Whether pushed frames may be written now (open and below the high-water mark).
    var acceptsPushedFrames: Bool {
        switch state {
        case .open(let s): !s.aboveHighWater && !s.closeAfterReplies
        case .closing, .closed: false
        }
    }

    /// Whether frames of claimed tasks may still be written (open, not closing after an error).
    var acceptsTaskFrames: Bool {
        switch state {
        case .open(let s): !s.closeAfterReplies
        case .closing, .closed: false
        }
    }

    var isClosed: Bool {
        switch state {
        case .closed: true
        case .open, .closing: false
        }
    }

    /// Requests without a reply yet.
    var pendingRequests: Int {
        switch state {
        case .open(let s): s.pending
        case .closing, .closed: 0
        }
    }

    var unwrittenBytes: Int {
        switch state {
        case .open(let s): s.outstandingBytes
        case .closing(let n): n
        case .closed: 0
        }
    }

    // MARK: - Inputs

    mutating func bytesReceived(_ bytes: UnsafeRawBufferPointer) -> [Action] {
        switch state {
        case .open(var s):
            if s.endOfInput || s.closeAfterReplies { return [] }
            s.inbuf.append(contentsOf: bytes)
            var actions: [Action] = []
            processLines(&s, &actions)
            finish(s, &actions)
            return actions
        case .closing, .closed:
            return []
        }
    }

    mutating func bytesReceived(_ bytes: [UInt8]) -> [Action] {
        bytes.withUnsafeBytes { bytesReceived($0) }
    }

    /// The client shut down its writing side (or closed).
    mutating func inputEnded() -> [Action] {
        switch state {
        case .open(var s):
            s.endOfInput = true
            var actions: [Action] = []
            processLines(&s, &actions)
            finish(s, &actions)
            return actions
        case .closing, .closed:
            return []
        }
    }

    /// The reply for `ticket` is ready. `activates` names the stream a `subscribe` or `work`
    /// reply starts; it becomes active when the reply is written.
    mutating func replyReady(_ ticket: Ticket, _ reply: [UInt8], activates: Activation? = nil) -> [Action] {
        switch state {
        case .open(var s):
            var actions: [Action] = []
            if ticket.ordered {
                precondition(s.orderedInFlight > 0, "ordered reply without an ordered request in flight")
                s.orderedInFlight -= 1
                let index = s.orderedHead + Int(ticket.number - s.headTicket)
                precondition(
                    ticket.number >= s.headTicket && index < s.ordered.count && s.ordered[index].reply == nil,
                    "reply for unknown ticket \(ticket) (head \(s.headTicket), \(s.orderedPending) pending)")
                if s.ordered[index].answer { s.answersInFlight -= 1 }
                s.ordered[index] = Slot(reply: reply, activates: activates)
                flushOrdered(&s, &actions)
            } else {
                precondition(s.awaitsInFlight > 0, "await reply without an await in flight")
                s.awaitsInFlight -= 1
                write(reply, &s, &actions)
            }
            processLines(&s, &actions)
            finish(s, &actions)
            return actions
        case .closing, .closed:
            return []
        }
    }

    /// The driver wrote `count` bytes of pushed frames itself.
    mutating func framesWritten(_ count: Int) -> [Action] {
        switch state {
        case .open(var s):
            var actions: [Action] = []
            s.outstandingBytes += count
            updateBackPressure(&s, &actions)
            state = .open(s)
            return actions
        case .closing(let n):
            state = .closing(outstandingBytes: n + count)
            return []
        case .closed:
            return []
        }
    }

    mutating func writeCompleted(_ count: Int) -> [Action] {
        switch state {
        case .open(var s):
            precondition(s.outstandingBytes >= count, "wrote more than was queued")
            s.outstandingBytes -= count
            var actions: [Action] = []
            processLines(&s, &actions)
            finish(s, &actions)
            return actions
        case .closing(let n):
            precondition(n >= count, "wrote more than was queued")
            if n - count == 0 {
                state = .closed
                return [.close]
            }
            state = .closing(outstandingBytes: n - count)
            return []
        case .closed:
            return []
        }
    }

    /// The connection's subscriptions and workers now number `count`.
    mutating func streamsChanged(count: Int) -> [Action] {
        switch state {
        case .open(var s):
            s.streams = count
            var actions: [Action] = []
            finish(s, &actions)
            return actions
        case .closing, .closed:
            return []
        }
    }

    /// The server is shutting down: new requests are answered `DRAINING`.
    mutating func beginDrain() -> [Action] {
        switch state {
        case .open(var s):
            s.draining = true
            var actions: [Action] = []
            processLines(&s, &actions)
            finish(s, &actions)
            return actions
        case .closing, .closed:
            return []
        }
    }

    /// Close after writing what is already queued; replies still owed are dropped.
    mutating func close() -> [Action] {
        switch state {
        case .open(let s):
            var actions: [Action] = []
            if !s.readingStopped { actions.append(.stopReading) }
            if s.outstandingBytes == 0 {
                state = .closed
                actions.append(.close)
            } else {
                state = .closing(outstandingBytes: s.outstandingBytes)
            }
            return actions
        case .closing, .closed:
            return []
        }
    }

    /// A read or write failed: the connection is gone.
    mutating func connectionFailed() -> [Action] {
        switch state {
        case .open, .closing:
            state = .closed
            return [.close]
        case .closed:
            return []
        }
    }

    // MARK: - Internals

    private func isPaused(_ s: Session) -> Bool {
        s.aboveHighWater || s.pending >= limits.maxPendingRequests
    }

    private mutating func processLines(_ s: inout Session, _ actions: inout [Action]) {
        while !s.closeAfterReplies && !isPaused(s) && s.orderedInFlight == s.answersInFlight {
            if let p = s.peeked, p.start == s.consumed {
                if s.orderedInFlight > 0 { break }  // still waiting for the answers before it
                s.peeked = nil
                s.consumed = p.next
                s.scanned = 0
                handle(p.decoded, &s, &actions)
                continue
            }
            let available = s.inbuf.count - s.consumed
            if available == 0 { break }
            var newline: Int? = nil
            s.inbuf.withUnsafeBufferPointer { buf in
                var k = s.consumed + s.scanned
                while k < buf.count {
                    if buf[k] == 0x0A {
                        newline = k
                        return
                    }
                    k += 1
                }
            }
            let lineEnd: Int
            let next: Int
            if let nl = newline {
                lineEnd = nl
                next = nl + 1
            } else {
                s.scanned = available
                if available > limits.maxLine + 1 || (available > limits.maxLine && s.inbuf.last != 0x0D) {
                    lineTooLong(&s, &actions)
                    return
                }
                guard s.endOfInput else { break }
                // The last line at end of input may lack its `\n`.
                lineEnd = s.inbuf.count
                next = s.inbuf.count
            }
            var end = lineEnd
            if end > s.consumed && s.inbuf[end - 1] == 0x0D { end -= 1 }
            let start = s.consumed
            s.consumed = next
            s.scanned = 0
            if end - start > limits.maxLine {
                lineTooLong(&s, &actions)
                return
            }
            if isBlank(s.inbuf, start, end) { continue }
            let decoded = s.inbuf.withUnsafeBytes { RequestDecoder.decode(UnsafeRawBufferPointer(rebasing: $0[start..<end])) }
            if s.orderedInFlight > 0, !Self.isAnswer(decoded) {
                // Runs only after the answers in flight (a pipelined `get` sees their effect).
                s.peeked = (start, next, decoded)
                s.consumed = start
                break
            }
            handle(decoded, &s, &actions)
        }
        if s.consumed == s.inbuf.count {
            s.inbuf.removeAll(keepingCapacity: s.inbuf.capacity <= 65_536)
            s.consumed = 0
            s.scanned = 0
            s.peeked = nil
        } else if s.consumed > 65_536 {
            s.inbuf.removeFirst(s.consumed)
            s.consumed = 0
            s.peeked = nil
        }
    }

    private static func isAnswer(_ decoded: DecodedLine) -> Bool {
        guard case .request(let r) = decoded else { return false }
        switch r.operation {
        case .complete, .fail, .extend: return true
        case .hello, .ping, .submit, .trigger, .get, .list, .history, .awaitStatus, .subscribe, .unsubscribe, .control,
            .stats, .graph, .health, .metrics, .work, .unwork, .callback:
            return false
        }
    }

    private func isBlank(_ b: [UInt8], _ start: Int, _ end: Int) -> Bool {
        var k = start
        while k < end {
            switch b[k] {
            case 0x20, 0x09, 0x0D: k += 1
            default: return false
            }
        }
        return true
    }

    private mutating func lineTooLong(_ s: inout Session, _ actions: inout [Action]) {
        s.closeAfterReplies = true
        s.inbuf = []
        s.consumed = 0
        s.scanned = 0
        let error = WireError(.lineTooLong, "line longer than max_line (\(limits.maxLine) bytes); closing the connection")
        enqueueFilled(Reply.failure(id: nil, error), &s, &actions)
    }

    private mutating func handle(_ decoded: DecodedLine, _ s: inout Session, _ actions: inout [Action]) {
        switch decoded {
        case .failure(let id, let error):
            enqueueFilled(Reply.failure(id: id, error), &s, &actions)
        case .request(let request):
            if s.draining {
                enqueueFilled(Reply.failure(id: request.id, WireError(.draining, "the server is shutting down")), &s, &actions)
                return
            }
            let ticket: Ticket
            switch request.operation {
            case .awaitStatus:
                ticket = Ticket(number: s.nextAwaitTicket, ordered: false)
                s.nextAwaitTicket += 1
                s.awaitsInFlight += 1
            case .hello, .ping, .submit, .trigger, .get, .list, .history, .subscribe, .unsubscribe, .control, .stats,
                .graph, .health, .metrics, .work, .complete, .fail, .extend, .unwork, .callback:
                ticket = Ticket(number: s.nextTicket, ordered: true)
                if s.orderedPending == 0 {
                    s.headTicket = s.nextTicket
                }
                let answer = Self.isAnswer(decoded)
                s.ordered.append(Slot(reply: nil, activates: nil, answer: answer))
                s.nextTicket += 1
                s.orderedInFlight += 1
                if answer { s.answersInFlight += 1 }
            }
            actions.append(.dispatch(ticket, request))
        }
    }

    /// An ordered reply known at once (an error from decoding, DRAINING).
    private mutating func enqueueFilled(_ reply: [UInt8], _ s: inout Session, _ actions: inout [Action]) {
        if s.orderedPending == 0 {
            s.headTicket = s.nextTicket
        }
        s.ordered.append(Slot(reply: reply, activates: nil))
        s.nextTicket += 1
        flushOrdered(&s, &actions)
    }

    private mutating func flushOrdered(_ s: inout Session, _ actions: inout [Action]) {
        while s.orderedHead < s.ordered.count, let reply = s.ordered[s.orderedHead].reply {
            let activates = s.ordered[s.orderedHead].activates
            s.ordered[s.orderedHead] = Slot()
            s.orderedHead += 1
            s.headTicket += 1
            write(reply, &s, &actions)
            if let stream = activates { actions.append(.activated(stream)) }
        }
        if s.orderedHead == s.ordered.count {
            s.ordered.removeAll(keepingCapacity: true)
            s.orderedHead = 0
        } else if s.orderedHead > 1024 {
            s.ordered.removeFirst(s.orderedHead)
            s.orderedHead = 0
        }
    }

    private func write(_ bytes: [UInt8], _ s: inout Session, _ actions: inout [Action]) {
        s.outstandingBytes += bytes.count
        actions.append(.write(bytes))
    }

    /// Unprocessed request bytes buffered while a request runs before reading stops.
    static let inputHighWater = 256 << 10

    private func updateBackPressure(_ s: inout Session, _ actions: inout [Action]) {
        if !s.aboveHighWater && s.outstandingBytes >= limits.writeHighWater {
            s.aboveHighWater = true
        } else if s.aboveHighWater && s.outstandingBytes <= limits.writeLowWater {
            s.aboveHighWater = false
            actions.append(.writable)
        }
        // Complete lines wait in `inbuf` while a request runs; past this much, stop reading so a
        // client that pipelines megabytes cannot grow the server's memory. (Only while something
        // runs: otherwise what is buffered is one partial line, bounded by max_line.)
        let inputFull = s.orderedInFlight > 0 && s.inbuf.count - s.consumed >= Self.inputHighWater
        let wantStopped = isPaused(s) || inputFull || s.endOfInput || s.closeAfterReplies
        if wantStopped && !s.readingStopped {
            s.readingStopped = true
            actions.append(.stopReading)
        } else if !wantStopped && s.readingStopped {
            s.readingStopped = false
            actions.append(.startReading)
        }
    }

    /// Settles back-pressure and decides whether the session is done; stores the new state.
    private mutating func finish(_ s0: Session, _ actions: inout [Action]) {
        var s = s0
        let wasAbove = s.aboveHighWater
        updateBackPressure(&s, &actions)
        if wasAbove && !s.aboveHighWater {
            // Unpaused by writes: lines already buffered can go now.
            processLines(&s, &actions)
            updateBackPressure(&s, &actions)
        }
        let linesLeft = s.inbuf.count > s.consumed
        let done: Bool
        if s.closeAfterReplies {
            done = s.orderedPending == 0
        } else {
            done = s.endOfInput && !linesLeft && s.pending == 0 && s.streams == 0
        }
        if done {
            if s.outstandingBytes == 0 {
                state = .closed
                actions.append(.close)
            } else {
                state = .closing(outstandingBytes: s.outstandingBytes)
            }
        } else {
            state = .open(s)
        }
    }
}
