import Synchronization

/// An auto-reset wake-up for one waiting task: `signal()` wakes the waiter, or, if nobody waits,
/// makes the next `wait` return at once. Many signals before a wait count as one (a burst needs
/// only one wake-up). Waiting honours task cancellation.
final class Wakeup: Sendable {
    private struct State {
        var signaled = false
        var waiter: (id: Int, continuation: CheckedContinuation<Void, Never>)?
        var cancelledID: Int?
        var nextID = 0
    }

    private let state = Mutex(State())

    func signal() {
        let c = state.withLock { s -> CheckedContinuation<Void, Never>? in
            if let w = s.waiter {
                s.waiter = nil
                return w.continuation
            }
            s.signaled = true
            return nil
        }
        c?.resume()
    }

    /// Waits for a signal or for `milliseconds` (real time), whichever comes first.
    func wait(milliseconds: Int) async {
        if state.withLock({ s in
            defer { s.signaled = false }
            return s.signaled
        }) { return }
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await self.wait() }
            group.addTask { try? await Task.sleep(for: .milliseconds(milliseconds)) }
            await group.next()
            group.cancelAll()
        }
    }

    /// Waits for a signal (or for cancellation).
    func wait() async {
        let id = state.withLock { s -> Int in
            s.nextID += 1
            return s.nextID
        }
        await withTaskCancellationHandler {
            await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
                let now = state.withLock { s -> Bool in
                    if s.signaled {
                        s.signaled = false
                        return true
                    }
                    if s.cancelledID == id { return true }
                    precondition(s.waiter == nil, "Wakeup has a single waiter")
                    s.waiter = (id, c)
                    return false
                }
                if now { c.resume() }
            }
        } onCancel: {
            let c = state.withLock { s -> CheckedContinuation<Void, Never>? in
                if let w = s.waiter, w.id == id {
                    s.waiter = nil
                    return w.continuation
                }
                s.cancelledID = id
                return nil
            }
            c?.resume()
        }
    }
}
