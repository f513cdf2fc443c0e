/// The run-state machine of ARCHITECTURE.md, as a pure value: no I/O, no clock, no locks.
///
/// ```
/// Initiated → Running → Completed            (a terminal status sets Completed)
/// Initiated/Running ⇄ Paused                 (pause / resume; auto-pause after N errors)
/// Initiated/Running/Paused → Cancelled
/// Completed/Cancelled → RequestedDataDeleted → DataDeleted   (personal data erased)
/// ```
///
/// One `mutating func` per input; each returns an `Action` the engine carries out. Anything the
/// diagram does not allow is `.refuse` with an `INVALID_STATE` error whose message says what was
/// asked, the state the run is in, and from which states it would have been allowed.
public struct RunStateMachine: Sendable, Equatable {
    public enum Action: Sendable, Equatable {
        /// Write the run with this run state (and the event announcing it).
        case changeRunState(to: RunState)
        /// Leave the run as it is; tell the caller why.
        case refuse(WorkflowError)
    }

    /// Every input the machine knows, for exhaustive tests.
    public enum Input: String, Sendable, CaseIterable {
        case advance, complete, pause, autoPause, resume, cancel, requestDataDeletion, finishDataDeletion
    }

    public private(set) var state: RunState

    public init(_ state: RunState) { self.state = state }

    /// A step moved the run to a non-terminal status.
    public mutating func advance() -> Action {
        switch state {
        case .initiated, .running:
            return move(to: .running)
        case .paused, .cancelled, .completed, .dataDeleted, .requestedDataDeleted:
            return refuse("advance", allowed: [.initiated, .running])
        }
    }

    /// A step (or a timeout) moved the run to a terminal status.
    public mutating func complete() -> Action {
        switch state {
        case .initiated, .running:
            return move(to: .completed)
        case .paused, .cancelled, .completed, .dataDeleted, .requestedDataDeleted:
            return refuse("complete", allowed: [.initiated, .running])
        }
    }

    /// An operator pauses the run.
    public mutating func pause() -> Action {
        switch state {
        case .initiated, .running:
            return move(to: .paused)
        case .paused, .cancelled, .completed, .dataDeleted, .requestedDataDeleted:
            return refuse("pause", allowed: [.initiated, .running])
        }
    }

    /// The engine pauses the run after its step failed too often.
    public mutating func autoPause() -> Action {
        switch state {
        case .initiated, .running:
            return move(to: .paused)
        case .paused, .cancelled, .completed, .dataDeleted, .requestedDataDeleted:
            return refuse("auto-pause", allowed: [.initiated, .running])
        }
    }

    /// An operator resumes a paused run; it continues as Running in the status it was paused in.
    public mutating func resume() -> Action {
        switch state {
        case .paused:
            return move(to: .running)
        case .initiated, .running, .cancelled, .completed, .dataDeleted, .requestedDataDeleted:
            return refuse("resume", allowed: [.paused])
        }
    }

    public mutating func cancel() -> Action {
        switch state {
        case .initiated, .running, .paused:
            return move(to: .cancelled)
        case .cancelled, .completed, .dataDeleted, .requestedDataDeleted:
            return refuse("cancel", allowed: [.initiated, .running, .paused])
        }
    }

    /// An operator asks for the run's personal data to be erased.
    public mutating func requestDataDeletion() -> Action {
        switch state {
        case .completed, .cancelled:
            return move(to: .requestedDataDeleted)
        case .initiated, .running, .paused, .dataDeleted, .requestedDataDeleted:
            return refuse("delete data of", allowed: [.completed, .cancelled])
        }
    }

    /// The erase function ran; the object no longer holds personal data.
    public mutating func finishDataDeletion() -> Action {
        switch state {
        case .requestedDataDeleted:
            return move(to: .dataDeleted)
        case .initiated, .running, .paused, .cancelled, .completed, .dataDeleted:
            return refuse("finish data deletion of", allowed: [.requestedDataDeleted])
        }
    }

    /// Dispatches an input by name (tests walk every pair of state and input with this).
    public mutating func handle(_ input: Input) -> Action {
        switch input {
        case .advance: advance()
        case .complete: complete()
        case .pause: pause()
        case .autoPause: autoPause()
        case .resume: resume()
        case .cancel: cancel()
        case .requestDataDeletion: requestDataDeletion()
        case .finishDataDeletion: finishDataDeletion()
        }
    }

    private mutating func move(to next: RunState) -> Action {
        state = next
        return .changeRunState(to: next)
    }

    private func refuse(_ verb: String, allowed: [RunState]) -> Action {
        let names = allowed.map(\.name).joined(separator: ", ")
        return .refuse(
            WorkflowError(
                .invalidState, "cannot \(verb) a run that is \(state.name); allowed only when it is \(names)"))
    }
}
