import Testing

@testable import WorkflowEngine

@Suite struct RunStateMachineTests {
    typealias Input = RunStateMachine.Input

    /// The diagram of ARCHITECTURE.md, written out as a table: (state, input) → next state.
    /// Every pair not listed must be refused.
    static let allowed: [RunState: [Input: RunState]] = [
        .initiated: [.advance: .running, .complete: .completed, .pause: .paused, .autoPause: .paused, .cancel: .cancelled],
        .running: [.advance: .running, .complete: .completed, .pause: .paused, .autoPause: .paused, .cancel: .cancelled],
        .paused: [.resume: .running, .cancel: .cancelled],
        .completed: [.requestDataDeletion: .requestedDataDeleted],
        .cancelled: [.requestDataDeletion: .requestedDataDeleted],
        .requestedDataDeleted: [.finishDataDeletion: .dataDeleted],
        .dataDeleted: [:],
    ]

    @Test(arguments: RunState.allCases)
    func everyInputFrom(_ state: RunState) {
        for input in Input.allCases {
            var machine = RunStateMachine(state)
            let action = machine.handle(input)
            if let next = Self.allowed[state]?[input] {
                #expect(action == .changeRunState(to: next), "\(state) + \(input)")
                #expect(machine.state == next)
            } else {
                guard case .refuse(let error) = action else {
                    Issue.record("\(state) + \(input) should be refused, got \(action)")
                    continue
                }
                #expect(error.code == .invalidState)
                #expect(error.message.contains(state.name), "message names the state: \(error.message)")
                #expect(machine.state == state, "a refusal leaves the state alone")
            }
        }
    }

    @Test func tableCoversTheDiagram() {
        // 5 + 5 + 2 + 1 + 1 + 1 allowed pairs, the rest of the 7 × 8 refused.
        let count = Self.allowed.values.map(\.count).reduce(0, +)
        #expect(count == 15)
        #expect(RunState.allCases.count * Input.allCases.count == 56)
    }

    @Test func refusalMessageSaysWhatWouldBeAllowed() {
        var m = RunStateMachine(.completed)
        guard case .refuse(let e) = m.resume() else {
            Issue.record("resume of a completed run must be refused")
            return
        }
        #expect(e.message == "cannot resume a run that is Completed; allowed only when it is Paused")
    }

    @Test func finishedStatesAreTheOnesThatNeverRunAgain() {
        for state in RunState.allCases {
            var m = RunStateMachine(state)
            let canAdvance = m.advance() == .changeRunState(to: .running)
            #expect(canAdvance == (!state.isFinished && state != .paused))
        }
    }
}
