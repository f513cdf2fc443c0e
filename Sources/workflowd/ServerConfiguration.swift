import WorkflowServer

/// The module and its main class share the name `WorkflowServer`, so the module's
/// `Configuration` is reached through this alias from a file that imports only that module.
typealias ServerConfiguration = Configuration
