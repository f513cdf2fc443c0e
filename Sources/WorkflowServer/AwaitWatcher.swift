import WorkflowEngine
import WorkflowWire

/// One `await` in progress. Loop thread only.
///
/// It is registered with the hub *before* the run and its history are read, so an event
/// committed in between is seen either in the history or live — never missed.
final class AwaitWatcher {
    enum State {
        /// Reading the run and its history.
        case loading
        /// Neither reached nor finished: waiting for an event or the deadline.
        case waiting
        /// The answer is decided; reading the run as it is now to send it.
        case fetching
        case done
    }

    unowned let core: ServerCore
    unowned let connection: Connection
    let ticket: SessionStateMachine.Ticket
    let requestID: RequestID?
    let runID: String
    let refs: [StatusRef]
    var state: State = .loading
    /// Resolved status codes (once the run's workflow is known).
    var statuses: Set<Int>?
    /// Events seen live while loading.
    var seen: [EventData] = []
    var timedOut = false
    var timer: LoopTimer?

    init(core: ServerCore, connection: Connection, ticket: SessionStateMachine.Ticket, requestID: RequestID?, runID: String, refs: [StatusRef]) {
        self.core = core
        self.connection = connection
        self.ticket = ticket
        self.requestID = requestID
        self.runID = runID
        self.refs = refs
    }

    enum Outcome {
        case reached
        case unreachable
        case timeout
    }

    /// A live event of this run.
    func sawEvent(_ e: EventData) {
        switch state {
        case .loading:
            if seen.count < 1024 { seen.append(e) }
        case .waiting:
            if let outcome = judge(e) { core.finishAwait(self, outcome, event: e) }
        case .fetching, .done:
            break
        }
    }

    /// What an event says about the await, if anything.
    func judge(_ e: EventData) -> Outcome? {
        guard let statuses else { return nil }
        if statuses.contains(e.status) { return .reached }
        if e.runState.isFinished { return .unreachable }
        return nil
    }

    func deadlinePassed() {
        timer = nil
        switch state {
        case .loading:
            timedOut = true
        case .waiting:
            core.finishAwait(self, .timeout)
        case .fetching, .done:
            break
        }
    }
}
