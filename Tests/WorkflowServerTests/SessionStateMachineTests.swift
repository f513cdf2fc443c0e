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
        _ = m.replyReady(dispatched(a)[0].0, Array("pong\n".utf8))
        a = m.bytesReceived(Array("ng\",\"id\":2}\n".utf8))
        #expect(dispatched(a).map(\.1) == [Request(id: .number("2"), operation: .ping)])
    }

    @Test func pipelinedRequestsRunOneAfterAnotherAndReplyInOrder() {
        var m = SessionStateMachine(limits: Self.limits)
        let a = m.bytesReceived(Array("{\"op\":\"ping\",\"id\":1}\n{\"op\":\"ping\",\"id\":2}\n{\"op\":\"ping\",\"id\":3}\n".utf8))
        // Only the first runs: a pipelined request sees the effects of the ones before it.
        let t1 = dispatched(a)
        #expect(t1.map(\.1.id) == [.number("1")])
        let b = m.replyReady(t1[0].0, Array("r1\n".utf8))
        #expect(written(b) == ["r1\n"])
        let t2 = dispatched(b)
        #expect(t2.map(\.1.id) == [.number("2")])
        let c = m.replyReady(t2[0].0, Array("r2\n".utf8))
        #expect(written(c) == ["r2\n"])
        let t3 = dispatched(c)
        #expect(t3.map(\.1.id) == [.number("3")])
        #expect(written(m.replyReady(t3[0].0, Array("r3\n".utf8))) == ["r3\n"])
    }

    @Test func anAwaitBetweenRequestsDoesNotBreakTheOrder() {
        // The regression: await tickets once shared the ordered counter, and a ping after an
        // await hit "reply for unknown ticket" (a crash of the whole server).
        var m = SessionStateMachine(limits: Self.limits)
        let a = m.bytesReceived(
            Array("{\"op\":\"ping\",\"id\":\"p\"}\n{\"op\":\"await\",\"id\":\"w\",\"foreign_id\":\"x\"}\n{\"op\":\"ping\",\"id\":\"p2\"}\n".utf8))
        let first = dispatched(a)
        #expect(first.map(\.1.id) == [.string("p")])
        // The await starts only after the ping before it finished; the ping after it does not wait for it.
        let b = m.replyReady(first[0].0, Array("pong\n".utf8))
        let next = dispatched(b)
        #expect(next.map(\.1.id) == [.string("w"), .string("p2")])
        #expect(next.map(\.0.ordered) == [false, true])
        #expect(written(m.replyReady(next[1].0, Array("pong2\n".utf8))) == ["pong2\n"])
        #expect(written(m.replyReady(next[0].0, Array("awaited\n".utf8))) == ["awaited\n"])
    }

    @Test func pipelinedInputStopsReadingWhileARequestRuns() {
        var m = SessionStateMachine(limits: SessionStateMachine.Limits(maxLine: 1 << 20, writeHighWater: 1 << 20, writeLowWater: 1 << 10, maxPendingRequests: 256))
        let line = Array("{\"op\":\"ping\"}\n".utf8)
        var input: [UInt8] = []
        while input.count < SessionStateMachine.inputHighWater + 1024 { input += line }
        let a = m.bytesReceived(input)
        #expect(dispatched(a).count == 1)
        #expect(a.contains(.stopReading))
        var next = dispatched(a)[0].0
        var answered = 1
        var resumed = false
        while true {
            let b = m.replyReady(next, Array("x\n".utf8))
            if b.contains(.startReading) { resumed = true }
            guard let t = dispatched(b).first else { break }
            next = t.0
            answered += 1
        }
        #expect(answered == input.count / line.count)
        #expect(resumed)
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

    @Test func streamsKeepAHalfClosedSessionOpenUntilTheyEnd() {
        var m = SessionStateMachine(limits: Self.limits)
        _ = m.streamsChanged(count: 1)
        #expect(!m.inputEnded().contains(.close))
        #expect(m.acceptsPushedFrames)
        #expect(m.acceptsTaskFrames)
        #expect(m.streamsChanged(count: 0).contains(.close))
    }

    /// A worker's answers that follow each other run at once; anything after them waits for
    /// them, and replies keep request order.
    @Test func pipelinedAnswersRunTogetherAndWhatFollowsWaits() {
        var m = SessionStateMachine(limits: Self.limits)
        let lines = [
            #"{"op":"complete","id":1,"task":"a/2/1","status":3}"#, #"{"op":"fail","id":2,"task":"b/2/1","error":"x"}"#,
            #"{"op":"extend","id":3,"task":"c/2/1"}"#, #"{"op":"get","id":4,"run_id":"a"}"#,
            #"{"op":"complete","id":5,"task":"d/2/1","status":3}"#,
        ]
        let a = m.bytesReceived(Array((lines.joined(separator: "\n") + "\n").utf8))
        let first = dispatched(a)
        #expect(first.map(\.1.id) == [.number("1"), .number("2"), .number("3")], "the three answers at once")
        // Replies out of order are written in order.
        #expect(written(m.replyReady(first[2].0, Array("r3\n".utf8))).isEmpty)
        #expect(written(m.replyReady(first[1].0, Array("r2\n".utf8))).isEmpty)
        let b = m.replyReady(first[0].0, Array("r1\n".utf8))
        #expect(written(b) == ["r1\n", "r2\n", "r3\n"])
        // Only now the get, alone; the answer after it waits for it.
        #expect(dispatched(b).map(\.1.id) == [.number("4")])
        let c = m.replyReady(dispatched(b)[0].0, Array("r4\n".utf8))
        #expect(written(c) == ["r4\n"] && dispatched(c).map(\.1.id) == [.number("5")])
    }

    @Test func workReplyActivatesTheWorkerWhenWrittenAfterEarlierReplies() {
        var m = SessionStateMachine(limits: Self.limits)
        let a = m.bytesReceived(Array("{\"op\":\"work\",\"status\":2}\n".utf8))
        let work = dispatched(a)
        #expect(work.count == 1)
        #expect(
            m.replyReady(work[0].0, Array("w\n".utf8), activates: .worker(3))
                == [.write(Array("w\n".utf8)), .activated(.worker(3))])
    }

    @Test func subscribeReplyActivatesTheSubscriptionWhenWritten() {
        var m = SessionStateMachine(limits: Self.limits)
        let a = m.bytesReceived(Array("{\"op\":\"get\",\"run_id\":\"x\"}\n{\"op\":\"subscribe\"}\n".utf8))
        let get = dispatched(a)
        #expect(get.count == 1)
        let b = m.replyReady(get[0].0, Array("get\n".utf8))
        #expect(written(b) == ["get\n"])
        let sub = dispatched(b)
        #expect(sub.count == 1)
        #expect(m.replyReady(sub[0].0, Array("sub\n".utf8), activates: .subscription(7)) == [.write(Array("sub\n".utf8)), .activated(.subscription(7))])
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

    @Test func tooManyPendingAwaitsStopsReading() {
        var m = SessionStateMachine(limits: Self.limits)
        let lines = (1...6).map { "{\"op\":\"await\",\"run_id\":\"r\",\"id\":\($0)}\n" }.joined()
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
        let t0 = dispatched(m.bytesReceived(Array("{\"op\":\"ping\"}\n{\"op\":\"ping\"}\n".utf8))).map(\.0)
        let t1 = dispatched(m.replyReady(t0[0], Array("a\n".utf8))).map(\.0)
        #expect(t1.count == 1)
        #expect(m.close() == [.stopReading])
        #expect(m.replyReady(t1[0], Array("b\n".utf8)) == [])
        #expect(m.writeCompleted(2) == [.close])
    }

    @Test func connectionFailureClosesAtOnce() {
        var m = SessionStateMachine(limits: Self.limits)
        _ = m.bytesReceived(Array("{\"op\":\"ping\"}\n".utf8))
        #expect(m.connectionFailed() == [.close])
        #expect(m.connectionFailed() == [])
    }
}
