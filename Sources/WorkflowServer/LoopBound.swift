/// Carries a loop-owned object through a `@Sendable` closure that runs on the loop thread
/// (swift-nio's `NIOLoopBound`, for our loop).
///
/// `@unchecked Sendable` is sound because the value is only touched on the libuv loop thread:
/// closures holding a `LoopBound` are handed to `EventLoop.execute`, which runs them there, and
/// `value` checks it (in debug builds; the check takes a lock). Other threads only retain and
/// release the reference.
struct LoopBound<Value: AnyObject>: @unchecked Sendable {
    private let wrapped: Value
    let loop: EventLoop

    init(_ value: Value, loop: EventLoop) {
        self.wrapped = value
        self.loop = loop
    }

    var value: Value {
        assert(loop.isOnLoopThread || !loop.isRunning, "a LoopBound value touched off the loop thread")
        return wrapped
    }
}
