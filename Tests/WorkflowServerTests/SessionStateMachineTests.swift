import Testing
import WorkflowWire

@testable import WorkflowServer

@Suite struct SessionStateMachineTests {
    typealias Action = SessionStateMachine.Action
    static let limits = SessionStateMachine.Limits(maxLine: 64, writeHighWater: 100, writeLowWater: 20, maxPendingRequests: 4)

    func dispatched(_ actions: [Action]) -> [(SessionStateMachine.Ticket, Request)] {
        actions.compactMap { if case .dispatch(let t, let r) = $0 { (t, r) } else { nil } }
    }

    func written(_ actions: [Action]) -> [String] {
        actions.compactMap { if case .write(let b) = $0 { String(decoding: b, as: UTF8.self) } else { nil } }
    }

    @Test func framingSplitsLinesAcceptsCRLFAndSkipsBlankLines() {
        var m = SessionStateMachine(limits: Self.limits)
        var a = m.bytesReceived(Array("{\"op\":\"ping\",\"id\":1}\r\n\n   \r\n{\"op\":\"pi".utf8))
        #expect(dispatched(a).map(\.1) == [Request(id: .number("1"), operation: .ping)])
        a = m.bytesReceived(Array("ng\",\"id\":2}\n".utf8))
        #expect(dispatched(a).map(\.1) == [Request(id: .number("2"), operation: .ping)])
    }

    @Test func pipelinedRepliesGoOutInRequestOrder() {
        var m = SessionStateMachine(limits: Self.limits)
        let a = m.bytesReceived(Array("{\"op\":\"ping\",\"id\":1}\n{\"op\":\"ping\",\"id\":2}\n{\"op\":\"ping\",\"id\":3}\n".utf8))
        let t = dispatched(a).map(\.0)
        #expect(t.count == 3)
        #expect(written(m.replyReady(t[2], Array("r3\n".utf8))) == [])
        #expect(written(m.replyReady(t[1], Array("r2\n".utf8))) == [])
        #expect(written(m.replyReady(t[0], Array("r1\n".utf8))) == ["r1\n", "r2\n", "r3\n"])
    }

    @Test func awaitRepliesGoOutWhenReady() {
        var m = SessionStateMachine(limits: Self.limits)
        let a = m.bytesReceived(Array("{\"op\":\"await\",\"run_id\":\"r\",\"id\":\"w\"}\n{\"op\":\"ping\",\"id\":2}\n".utf8))
        let t = dispatched(a).map(\.0)
        #expect(t.map(\.ordered) == [false, true])
        #expect(written(m.replyReady(t[1], Array("pong\n".utf8))) == ["pong\n"])
        #expect(written(m.replyReady(t[0], Array("awaited\n".utf8))) == ["awaited\n"])
    }

    @Test func decodeErrorsAreAnsweredInOrder() {
        var m = SessionStateMachine(limits: Self.limits)
        let a = m.bytesReceived(Array("{\"op\":\"ping\",\"id\":1}\nnot json\n".utf8))
        #expect(written(a).isEmpty)  // the error waits behind the ping
        let t = dispatched(a).map(\.0)
        let out = written(m.replyReady(t[0], Array("pong\n".utf8)))
        #expect(out.count == 2)
        #expect(out[1].contains("BAD_JSON"))
    }

    @Test func halfCloseSendsPendingRepliesThenCloses() {
        var m = SessionStateMachine(limits: Self.limits)
        let a = m.bytesReceived(Array("{\"op\":\"ping\"}\n".utf8))
        let t = dispatched(a).map(\.0)
        #expect(!m.inputEnded().contains(.close))
        let b = m.replyReady(t[0], Array("pong\n".utf8))
        #expect(written(b) == ["pong\n"])
        #expect(!b.contains(.close))  // the reply is not written yet
        #expect(m.writeCompleted(5) == [.close])
        #expect(m.isClosed)
    }

    @Test func halfCloseWithoutPendingClosesAtOnce() {
        var m = SessionStateMachine(limits: Self.limits)
        #expect(m.inputEnded().contains(.close))
    }

    @Test func lastLineWithoutNewlineIsHandledAtEndOfInput() {
        var m = SessionStateMachine(limits: Self.limits)
        #expect(dispatched(m.bytesReceived(Array("{\"op\":\"ping\"}".utf8))).isEmpty)
        #expect(dispatched(m.inputEnded()).count == 1)
    }

    @Test func subscriptionsKeepAHalfClosedSessionOpenUntilTheyEnd() {
        var m = SessionStateMachine(limits: Self.limits)
        _ = m.subscriptionsChanged(count: 1)
        #expect(!m.inputEnded().contains(.close))
        #expect(m.acceptsPushedFrames)
        #expect(m.subscriptionsChanged(count: 0).contains(.close))
    }

    @Test func subscribeReplyActivatesTheSubscriptionWhenWritten() {
        var m = SessionStateMachine(limits: Self.limits)
        let a = m.bytesReceived(Array("{\"op\":\"get\",\"run_id\":\"x\"}\n{\"op\":\"subscribe\"}\n".utf8))
        let t = dispatched(a).map(\.0)
        #expect(m.replyReady(t[1], Array("sub\n".utf8), activates: 7) == [])
        #expect(m.replyReady(t[0], Array("get\n".utf8)) == [.write(Array("get\n".utf8)), .write(Array("sub\n".utf8)), .subscriptionActivated(7)])
    }

    @Test func lineOverMaxLineIsAnsweredThenClosed() {
        var m = SessionStateMachine(limits: Self.limits)
        let a = m.bytesReceived([UInt8](repeating: 0x20, count: 65))
        let out = written(a)
        #expect(out.count == 1)
        #expect(out.first?.contains("LINE_TOO_LONG") == true)
        #expect(a.contains(.stopReading))
        #expect(!a.contains(.close))
        #expect(m.writeCompleted(Array(out[0].utf8).count) == [.close])
    }

    @Test func lineOfExactlyMaxLineIsAccepted() {
        var m = SessionStateMachine(limits: Self.limits)
        let line = "{\"op\":\"ping\",\"id\":\"" + String(repeating: "a", count: 64 - 21) + "\"}"
        #expect(line.utf8.count == 64)
        #expect(dispatched(m.bytesReceived(Array((line + "\r\n").utf8))).count == 1)
    }

    @Test func fullWriteBufferStopsReadingUntilDrained() {
        var m = SessionStateMachine(limits: Self.limits)
        let a = m.bytesReceived(Array("{\"op\":\"ping\"}\n".utf8))
        let t = dispatched(a)[0].0
        let big = [UInt8](repeating: 0x61, count: 150)
        let b = m.replyReady(t, big)
        #expect(b.contains(.stopReading))
        #expect(!m.acceptsPushedFrames)
        // Lines that arrive meanwhile wait.
        #expect(dispatched(m.bytesReceived(Array("{\"op\":\"ping\",\"id\":9}\n".utf8))).isEmpty)
        #expect(m.writeCompleted(100) == [])  // 50 left: still above low water
        let c = m.writeCompleted(50)
        #expect(c.contains(.writable))
        #expect(c.contains(.startReading))
        #expect(dispatched(c).map(\.1.id) == [.number("9")])
    }

    @Test func tooManyPendingRequestsStopsReading() {
        var m = SessionStateMachine(limits: Self.limits)
        let lines = (1...6).map { "{\"op\":\"ping\",\"id\":\($0)}\n" }.joined()
        let a = m.bytesReceived(Array(lines.utf8))
        let d = dispatched(a)
        #expect(d.count == 4)
        #expect(a.contains(.stopReading))
        let b = m.replyReady(d[0].0, Array("x\n".utf8))
        #expect(dispatched(b).map(\.1.id) == [.number("5")])
    }

    @Test func drainingAnswersNewRequestsWithDRAINING() {
        var m = SessionStateMachine(limits: Self.limits)
        _ = m.beginDrain()
        let out = written(m.bytesReceived(Array("{\"op\":\"ping\",\"id\":\"late\"}\n".utf8)))
        #expect(out.count == 1)
        #expect(out[0].contains("\"DRAINING\""))
        #expect(out[0].contains("\"id\":\"late\""))
        #expect(out[0].contains("\"retryable\":true"))
    }

    @Test func closeWaitsForQueuedBytesAndDropsLateReplies() {
        var m = SessionStateMachine(limits: Self.limits)
        let t = dispatched(m.bytesReceived(Array("{\"op\":\"ping\"}\n{\"op\":\"ping\"}\n".utf8))).map(\.0)
        _ = m.replyReady(t[0], Array("a\n".utf8))
        #expect(m.close() == [.stopReading])
        #expect(m.replyReady(t[1], Array("b\n".utf8)) == [])
        #expect(m.writeCompleted(2) == [.close])
    }

    @Test func connectionFailureClosesAtOnce() {
        var m = SessionStateMachine(limits: Self.limits)
        _ = m.bytesReceived(Array("{\"op\":\"ping\"}\n".utf8))
        #expect(m.connectionFailed() == [.close])
        #expect(m.connectionFailed() == [])
    }
}
