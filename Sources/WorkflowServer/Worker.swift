import WorkflowEngine

/// One `work` of one connection: a worker of an external status. Loop thread only.
///
/// Registered with the engine when `work` is dispatched; it gets tasks only once its reply is
/// written (activated) and while its connection is below the write high-water mark (ready).
final class Worker {
    let id: Int64
    let token: WorkerToken
    let workflow: String
    /// Its `work` reply is written: task frames may follow.
    var active = false
    /// What the engine was last told about flow control.
    var ready = false

    init(id: Int64, token: WorkerToken, workflow: String) {
        self.id = id
        self.token = token
        self.workflow = workflow
    }
}
