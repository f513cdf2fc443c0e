import Foundation

/// Runs blocking work (child processes, waiting for pool threads) on a thread of its own, so it
/// never occupies one of the cooperative pool's few threads.
enum Blocking {
    static func run<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { (c: CheckedContinuation<T, Error>) in
            let thread = Thread {
                do {
                    c.resume(returning: try body())
                } catch {
                    c.resume(throwing: error)
                }
            }
            thread.name = "workflowd-blocking"
            thread.start()
        }
    }
}
