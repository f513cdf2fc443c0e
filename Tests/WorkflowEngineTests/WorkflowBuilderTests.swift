import Testing

@testable import WorkflowEngine

@Suite struct WorkflowBuilderTests {
    func base() -> WorkflowBuilder {
        var b = WorkflowBuilder(name: "w")
        b.status("Start", code: 1)
        b.status("End", code: 2, terminal: true)
        b.initial(1)
        return b
    }

    func problems(_ b: WorkflowBuilder) -> String? {
        do {
            _ = try b.build()
            return nil
        } catch let e as WorkflowError {
            #expect(e.code == .definition)
            return e.message
        } catch {
            return "\(error)"
        }
    }

    @Test func aCompleteDefinitionBuilds() throws {
        var b = base()
        b.step(from: 1, to: [2]) { _ in .next(2) }
        let d = try b.build()
        #expect(d.stepStatuses == [1])
        #expect(d.isTerminal(2) && !d.isTerminal(1))
        #expect(d.description.transitions == [1: [2]])
        #expect(d.description.statuses.map(\.name) == ["Start", "End"])
    }

    @Test func stepToUndeclaredStatusIsRefused() {
        var b = base()
        b.step(from: 1, to: [2, 9]) { _ in .next(2) }
        #expect(problems(b)?.contains("may return undeclared status 9") == true)
    }

    @Test func everyProblemIsListed() {
        var b = WorkflowBuilder(name: "w")
        b.status("A", code: 1)
        b.status("A", code: 1)
        b.status("B", code: 2)
        b.step(from: 3, to: [1]) { _ in .next(1) }
        b.timeout(in: 1, after: 0, to: 7, reason: "x")
        let p = problems(b) ?? ""
        for expected in [
            "status code 1 is declared twice", "status name A is declared twice", "no status is terminal",
            "no initial status is set", "a step starts from undeclared status 3", "the timeout of A is not positive",
            "the timeout of A may return undeclared status 7", "non-terminal status B has neither a step nor a timeout",
        ] {
            #expect(p.contains(expected), "missing \"\(expected)\" in \(p)")
        }
    }

    @Test func terminalStatusesHaveNoStepsAndTheInitialIsNotTerminal() {
        var b = base()
        b.initial(2)
        b.step(from: 2, to: [1]) { _ in .next(1) }
        let p = problems(b) ?? ""
        #expect(p.contains("the initial status End is terminal"))
        #expect(p.contains("terminal status End has a step"))
    }

    @Test(.timeLimit(.minutes(1)))
    func aStepReturningAnUndeclaredStatusIsADefinitionError() async throws {
        var b = base()
        b.status("Other", code: 3, terminal: true)
        b.step(from: 1, to: [2]) { _ in .next(3) }
        let d = try b.build()
        let run = Run(
            workflow: "w", foreignID: "f", runID: "r", runState: .initiated, status: 1, version: 1, object: [],
            createdAt: Timestamp(milliseconds: 0), updatedAt: Timestamp(milliseconds: 0))
        do {
            _ = try await d.runStep(from: 1, StepInput(run: run, now: Timestamp(milliseconds: 0)))
            Issue.record("expected a definition error")
        } catch let e as WorkflowError {
            #expect(e.code == .definition)
            #expect(e.message.contains("returned Other"))
        }
    }
}
