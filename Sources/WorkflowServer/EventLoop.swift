import CLibUV
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A libuv loop on its own thread, with one locked queue through which other threads hand it
/// work: `execute` appends a closure and calls `uv_async_send` only when the queue was empty,
/// so a burst of results costs one wake-up.
///
/// `@unchecked Sendable`: `loop` and `async` are used on the loop thread only (apart from
/// `uv_async_send`, which libuv documents as thread-safe); the job queue is guarded by `jobs`.
final class EventLoop: @unchecked Sendable {
    let loop: UnsafeMutablePointer<uv_loop_t>
    private let async: UnsafeMutablePointer<uv_async_t>
    private let jobs = Mutex<JobQueue>(JobQueue())
    private let thread = Mutex<pthread_t?>(nil)

    private struct JobQueue {
        var items: [@Sendable () -> Void] = []
        /// After shutdown jobs are dropped: their results have nobody to go to.
        var closed = false
    }

    init() throws(ServerError) {
        loop = .allocate(capacity: 1)
        let rc = uv_loop_init(loop)
        guard rc == 0 else {
            loop.deallocate()
            throw ServerError(.system, "cannot create the event loop", uvError: uvErrorName(rc))
        }
        async = .allocate(capacity: 1)
        uv_async_init(loop, async) { handle in
            guard let handle else { return }
            let me = Unmanaged<EventLoop>.fromOpaque(handle.pointee.data).takeUnretainedValue()
            me.runJobs()
        }
        // Unretained: the loop object outlives its handles (it waits for the thread to end).
        async.pointee.data = Unmanaged.passUnretained(self).toOpaque()
    }

    deinit {
        // Only reached after the thread ended and every handle was closed.
        uv_loop_close(loop)
        loop.deallocate()
        async.deallocate()
    }

    /// Runs `job` on the loop thread soon. Returns false (and drops the job) after shutdown.
    @discardableResult
    func execute(_ job: @escaping @Sendable () -> Void) -> Bool {
        let wake = jobs.withLock { q -> Bool? in
            if q.closed { return nil }
            q.items.append(job)
            return q.items.count == 1
        }
        guard let wake else { return false }
        if wake { uv_async_send(async) }
        return true
    }

    private func runJobs() {
        while true {
            let batch = jobs.withLock { q -> [@Sendable () -> Void] in
                let b = q.items
                q.items = []
                return b
            }
            if batch.isEmpty { return }
            for job in batch { job() }
        }
    }

    /// Starts the loop thread; `body` is not used after the loop ends. `onExit` runs on the loop
    /// thread after `uv_run` returned (every handle closed).
    func startThread(onExit: @escaping @Sendable () -> Void) throws(ServerError) {
        final class Box: @unchecked Sendable {  // handed to one new thread, read once there
            let loop: EventLoop
            let onExit: @Sendable () -> Void
            init(_ loop: EventLoop, _ onExit: @escaping @Sendable () -> Void) {
                self.loop = loop
                self.onExit = onExit
            }
        }
        let box = Unmanaged.passRetained(Box(self, onExit)).toOpaque()
        var tid = pthread_t()
        let rc = pthread_create(
            &tid, nil,
            { arg in
                let box = Unmanaged<Box>.fromOpaque(arg!).takeRetainedValue()
                uv_run(box.loop.loop, UV_RUN_DEFAULT)
                box.onExit()
                return nil
            }, box)
        guard rc == 0 else {
            Unmanaged<Box>.fromOpaque(box).release()
            throw ServerError(.system, "cannot start the loop thread (errno \(rc))")
        }
        pthread_detach(tid)
        thread.withLock { $0 = tid }
    }

    var isOnLoopThread: Bool {
        guard let t = thread.withLock({ $0 }) else { return false }
        return pthread_equal(t, pthread_self()) != 0
    }

    /// The loop thread has started (before that, the starting thread owns everything).
    var isRunning: Bool { thread.withLock { $0 != nil } }

    /// Stops accepting jobs and closes the wake-up handle; the loop ends once every other
    /// handle is closed. Loop thread only.
    func closeQueue() {
        jobs.withLock { $0.closed = true }
        runJobs()
        uv_close(asHandle(async), nil)
    }
}

/// A one-shot timer on the loop. Loop thread only.
final class LoopTimer {
    private let handle: UnsafeMutablePointer<uv_timer_t>
    private var callback: (() -> Void)?
    private var closed = false

    init(loop: EventLoop, milliseconds: UInt64, _ callback: @escaping () -> Void) {
        handle = .allocate(capacity: 1)
        uv_timer_init(loop.loop, handle)
        self.callback = callback
        // Retained until the close callback: the timer lives while libuv may call it.
        handle.pointee.data = Unmanaged.passRetained(self).toOpaque()
        uv_timer_start(
            handle,
            { h in
                guard let h else { return }
                let me = Unmanaged<LoopTimer>.fromOpaque(h.pointee.data).takeUnretainedValue()
                let cb = me.callback
                me.cancel()
                cb?()
            }, milliseconds, 0)
    }

    /// Stops the timer (if it has not fired) and frees it.
    func cancel() {
        guard !closed else { return }
        closed = true
        callback = nil
        uv_timer_stop(handle)
        uv_close(asHandle(handle)) { h in
            guard let h else { return }
            Unmanaged<LoopTimer>.fromOpaque(h.pointee.data).release()
            UnsafeMutableRawPointer(h).deallocate()
        }
    }
}

@inline(__always) func asHandle<T>(_ p: UnsafeMutablePointer<T>) -> UnsafeMutablePointer<uv_handle_t> {
    UnsafeMutableRawPointer(p).assumingMemoryBound(to: uv_handle_t.self)
}

@inline(__always) func asStream<T>(_ p: UnsafeMutablePointer<T>) -> UnsafeMutablePointer<uv_stream_t> {
    UnsafeMutableRawPointer(p).assumingMemoryBound(to: uv_stream_t.self)
}

func uvErrorName(_ rc: Int32) -> String {
    String(cString: uv_err_name(rc))
}
