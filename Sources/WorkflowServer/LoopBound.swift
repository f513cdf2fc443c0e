/// Carries a loop-owned object through a `@Sendable` closure that runs on the loop thread.
///
/// `@unchecked Sendable` is sound here because the wrapped value is only touched on the libuv
/// loop thread: closures holding a `LoopBound` are handed to `EventLoop.execute`, which runs them
/// there. Other threads only retain and release the reference.
struct LoopBound<Value: AnyObject>: @unchecked Sendable {
    let value: Value
    init(_ value: Value) { self.value = value }
}
