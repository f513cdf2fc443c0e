import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// A MariaDB server that lives entirely inside one folder: data, socket, pid file and error log.
///
/// This is the embedded default of `workflowd` (no DSN configured) and what the test harness
/// uses. It needs no systemd, no configuration files and no TCP port: the server is started
/// with `--no-defaults --skip-networking` and listens only on `<directory>/mysqld.sock`.
/// Authentication is the `unix_socket` plugin, so the operating-system user that initialised
/// the folder connects as itself (`root` when running as root) without a password.
///
/// Layout of the folder:
/// ```
/// <directory>/data/         the datadir (created by mariadb-install-db on first start)
/// <directory>/mysqld.sock   the socket
/// <directory>/mysqld.pid    the pid file
/// <directory>/error.log     the server's error log (quoted in errors)
/// <directory>/install.log   output of mariadb-install-db
/// <directory>/.lock         serialises start/stop between processes (flock; also used by
///                           scripts/mariadb.sh)
/// ```
///
/// `start()` and `stop()` are idempotent and block the calling thread (they run at start-up
/// and shutdown, never on an event loop). A server already running in the folder — started
/// by another process or by `scripts/mariadb.sh` — is reused.
///
/// This type uses no Connector/C: it drives `mariadbd`, `mariadb-install-db` and
/// `mariadb-admin` as child processes.
public struct PrivateMariaDB: Sendable {
    /// Settings of the private server. Every property documents its default.
    public struct Configuration: Sendable {
        /// How long `start()` waits for the server to answer a ping. Default: 60 s.
        public var startTimeout: Duration = .seconds(60)
        /// How long `stop()` waits at each stage (shutdown, SIGTERM) before escalating.
        /// Default: 30 s.
        public var stopTimeout: Duration = .seconds(30)
        /// `--max-connections`. Default: 500 (the pool defaults to 25 per instance; tests open
        /// many pools in parallel).
        public var maxConnections: Int = 500
        /// `--innodb-buffer-pool-size`. Default: `"256M"` — modest, this is a development server.
        public var innoDBBufferPoolSize: String = "256M"
        /// Extra `mariadbd` options appended after ours. Default: none.
        public var extraServerArguments: [String] = []

        public init() {}
    }

    /// The folder that holds everything (absolute path).
    public let directory: String
    /// The server's Unix socket: `<directory>/mysqld.sock`.
    public let socketPath: String
    /// The datadir: `<directory>/data`.
    public let dataDirectory: String
    /// The pid file: `<directory>/mysqld.pid`.
    public let pidFilePath: String
    /// The server's error log: `<directory>/error.log`.
    public let errorLogPath: String
    /// The MariaDB account that can connect over the socket without a password: the current
    /// operating-system user (`root` when running as root).
    public let user: String
    public let configuration: Configuration

    /// The longest path a Unix socket address can hold (`sun_path` is 108 bytes with its NUL).
    public static let maximumSocketPathLength = 107

    /// - Parameter directory: the folder to keep the server in; created if missing. A relative
    ///   path is taken relative to the current directory.
    public init(directory: String, configuration: Configuration = Configuration()) {
        let absolute = URL(fileURLWithPath: directory).standardizedFileURL.path
        self.directory = absolute
        self.socketPath = absolute + "/mysqld.sock"
        self.dataDirectory = absolute + "/data"
        self.pidFilePath = absolute + "/mysqld.pid"
        self.errorLogPath = absolute + "/error.log"
        self.user = Self.currentUserName()
        self.configuration = configuration
    }

    /// A DSN for this server in the Go style `WORKFLOWD_DSN` accepts, with no database:
    /// `user@unix(/abs/mysqld.sock)/`.
    public var dsn: String { "\(user)@unix(\(socketPath))/" }

    /// Whether a server answers on the socket right now.
    public var isRunning: Bool {
        guard let tools = try? Tools.locate() else { return false }
        return ping(tools)
    }

    /// Starts the server if it is not running yet and waits until it answers.
    ///
    /// Initialises the datadir on first use. A live server already running in the folder is
    /// reused; a stale pid file or socket left by a crash is cleared.
    /// - Returns: the socket path.
    @discardableResult
    public func start() throws -> String {
        try checkSocketPathLength()
        let tools = try Tools.locate()
        try createDirectory(directory)
        // Temporary tables and files go to a folder of this server, not a shared /tmp where
        // another server's clean-up (or a full disk elsewhere) could meet them.
        try createDirectory(temporaryDirectory)
        let lock = try FolderLock(path: directory + "/.lock")
        defer { lock.unlock() }

        if ping(tools) { return socketPath }

        // A server that is still starting (or hung) owns the folder: wait for it, never start a
        // second one on the same datadir.
        if let pid = livePid() {
            if waitUntil(deadline: .now + configuration.startTimeout, { ping(tools) }) {
                return socketPath
            }
            throw PrivateMariaDBError(
                code: .startTimedOut,
                message: "mariadbd (pid \(pid)) runs in \(directory) but does not answer on \(socketPath)"
                    + logTail())
        }
        removeStaleFiles()

        if !isInitialised {
            try initialise(tools)
        }
        try launch(tools)
        return socketPath
    }

    /// Stops the server in the folder if one runs: `mariadb-admin shutdown`, then SIGTERM,
    /// then SIGKILL, each after `configuration.stopTimeout`. Does nothing if none runs.
    public func stop() throws {
        let tools = try Tools.locate()
        guard FileManager.default.fileExists(atPath: directory) else { return }
        let lock = try FolderLock(path: directory + "/.lock")
        defer { lock.unlock() }

        let pid = livePid()
        let answering = ping(tools)
        guard answering || pid != nil else {
            removeStaleFiles()
            return
        }
        if answering {
            // mariadb-admin waits for the pid file to go away; its failure is not fatal, the
            // signals below take over.
            _ = try? run(
                tools.admin, adminArguments + ["shutdown"], timeout: configuration.stopTimeout)
        }
        if let pid {
            if !waitUntil(deadline: .now + configuration.stopTimeout, { !isAlive(pid) }) {
                kill(pid, SIGTERM)
                if !waitUntil(deadline: .now + configuration.stopTimeout, { !isAlive(pid) }) {
                    kill(pid, SIGKILL)
                    if !waitUntil(deadline: .now + .seconds(10), { !isAlive(pid) }) {
                        throw PrivateMariaDBError(
                            code: .stopFailed,
                            message: "mariadbd (pid \(pid)) in \(directory) survived SIGKILL")
                    }
                }
            }
        } else if !waitUntil(deadline: .now + configuration.stopTimeout, { !ping(tools) }) {
            throw PrivateMariaDBError(
                code: .stopFailed,
                message: "the server on \(socketPath) still answers after shutdown and has no pid file"
                    + " to signal")
        }
        removeStaleFiles()
    }

    // MARK: - Steps

    /// The server's own `--tmpdir`.
    var temporaryDirectory: String { directory + "/tmp" }

    private var isInitialised: Bool {
        var isDirectory: ObjCBool = false
        return FileManager.default.fileExists(atPath: dataDirectory + "/mysql", isDirectory: &isDirectory)
            && isDirectory.boolValue
    }

    private func initialise(_ tools: Tools) throws {
        let createdDataDirectory = !FileManager.default.fileExists(atPath: dataDirectory)
        let logPath = directory + "/install.log"
        let arguments = [
            "--no-defaults",
            "--user=\(user)",
            "--datadir=\(dataDirectory)",
            "--auth-root-authentication-method=socket",
            "--skip-test-db",
            "--tmpdir=\(temporaryDirectory)",
        ]
        let status: Int32
        do {
            status = try run(
                tools.installDB, arguments, timeout: .seconds(120), outputPath: logPath)
        } catch let error as PrivateMariaDBError {
            throw PrivateMariaDBError(code: .initialisationFailed, message: error.message)
        }
        guard status == 0 else {
            // Leave no half-initialised datadir behind, or the next start would trust it.
            if createdDataDirectory { try? FileManager.default.removeItem(atPath: dataDirectory) }
            throw PrivateMariaDBError(
                code: .initialisationFailed,
                message: "mariadb-install-db exited with status \(status) for \(dataDirectory)"
                    + Self.tail(ofFile: logPath, label: logPath))
        }
    }

    private func launch(_ tools: Tools) throws {
        var arguments = [
            "--no-defaults",  // must be first
            "--datadir=\(dataDirectory)",
            "--socket=\(socketPath)",
            "--skip-networking",
            "--pid-file=\(pidFilePath)",
            "--log-error=\(errorLogPath)",
            "--tmpdir=\(temporaryDirectory)",
            "--character-set-server=utf8mb4",
            "--collation-server=utf8mb4_unicode_ci",
            "--max-connections=\(configuration.maxConnections)",
            "--innodb-buffer-pool-size=\(configuration.innoDBBufferPoolSize)",
        ]
        if geteuid() == 0 { arguments.insert("--user=root", at: 1) }
        arguments += configuration.extraServerArguments

        // Output the server writes before it opens its own error log (bad options) lands in
        // the same file, so the error below can quote it.
        let log = try openForAppend(errorLogPath)
        defer { try? log.close() }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: tools.server)
        process.arguments = arguments
        process.environment = Self.childEnvironment()
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = log
        process.standardError = log
        do {
            try process.run()
        } catch {
            throw PrivateMariaDBError(
                code: .startFailed, message: "cannot run \(tools.server): \(error)")
        }

        let deadline = ContinuousClock.now + configuration.startTimeout
        while true {
            if ping(tools) { return }
            if !process.isRunning {
                throw PrivateMariaDBError(
                    code: .startFailed,
                    message: "mariadbd exited with status \(process.terminationStatus) before it"
                        + " answered on \(socketPath)" + logTail())
            }
            if ContinuousClock.now >= deadline {
                process.terminate()
                throw PrivateMariaDBError(
                    code: .startTimedOut,
                    message: "mariadbd did not answer on \(socketPath) within"
                        + " \(configuration.startTimeout)" + logTail())
            }
            Thread.sleep(forTimeInterval: 0.05)
        }
    }

    private var adminArguments: [String] {
        ["--no-defaults", "--socket=\(socketPath)", "--user=\(user)", "--connect-timeout=2"]
    }

    /// `mariadb-admin ping` exits 0 whenever a server answers, even if it refuses the account.
    private func ping(_ tools: Tools) -> Bool {
        guard FileManager.default.fileExists(atPath: socketPath) else { return false }
        return (try? run(tools.admin, adminArguments + ["ping"], timeout: .seconds(5))) == 0
    }

    /// The pid in the pid file, if that process is alive and is a MariaDB server.
    private func livePid() -> pid_t? {
        guard let text = try? String(contentsOfFile: pidFilePath, encoding: .utf8),
            let pid = pid_t(text.trimmingCharacters(in: .whitespacesAndNewlines)), pid > 0,
            isAlive(pid)
        else { return nil }
        // A pid from an old boot may now belong to another program.
        if let comm = try? String(contentsOfFile: "/proc/\(pid)/comm", encoding: .utf8) {
            let name = comm.trimmingCharacters(in: .whitespacesAndNewlines)
            guard name.hasPrefix("mariadbd") || name.hasPrefix("mysqld") else { return nil }
        }
        return pid
    }

    private func removeStaleFiles() {
        try? FileManager.default.removeItem(atPath: pidFilePath)
        try? FileManager.default.removeItem(atPath: socketPath)
    }

    private func checkSocketPathLength() throws {
        let length = socketPath.utf8.count
        guard length <= Self.maximumSocketPathLength else {
            throw PrivateMariaDBError(
                code: .socketPathTooLong,
                message: "the socket path \(socketPath) is \(length) bytes; Unix sockets allow at"
                    + " most \(Self.maximumSocketPathLength). Use a shorter folder (for example"
                    + " under /tmp).")
        }
    }

    private func logTail() -> String {
        Self.tail(ofFile: errorLogPath, label: errorLogPath)
    }

    // MARK: - Helpers

    /// Where the MariaDB programs are: `PATH`, then `/usr/sbin`, `/usr/bin` and their
    /// `/usr/local` twins (Debian keeps `mariadbd` in `/usr/sbin`, which a non-root `PATH` lacks).
    private struct Tools {
        var server: String
        var installDB: String
        var admin: String

        static func locate() throws -> Tools {
            Tools(
                server: try find(["mariadbd", "mysqld"]),
                installDB: try find(["mariadb-install-db", "mysql_install_db"]),
                admin: try find(["mariadb-admin", "mysqladmin"]))
        }

        static func find(_ names: [String]) throws -> String {
            let path = ProcessInfo.processInfo.environment["PATH"] ?? ""
            let directories =
                path.split(separator: ":").map(String.init)
                + ["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"]
            for name in names {
                for directory in directories where !directory.isEmpty {
                    let candidate = directory + "/" + name
                    if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
                }
            }
            throw PrivateMariaDBError(
                code: .programNotFound,
                message: "\(names[0]) not found in PATH, /usr/sbin or /usr/bin; install the"
                    + " mariadb-server and mariadb-client packages (scripts/install-deps.sh)")
        }
    }

    /// Runs a program to completion, killing it after `timeout`. Output goes to `outputPath`
    /// (truncated first) or is discarded.
    private func run(
        _ executable: String, _ arguments: [String], timeout: Duration, outputPath: String? = nil
    ) throws -> Int32 {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        process.environment = Self.childEnvironment()
        process.standardInput = FileHandle.nullDevice
        var output: FileHandle?
        if let outputPath {
            _ = FileManager.default.createFile(atPath: outputPath, contents: nil)
            output = FileHandle(forWritingAtPath: outputPath)
        }
        defer { try? output?.close() }
        process.standardOutput = output ?? FileHandle.nullDevice
        process.standardError = output ?? FileHandle.nullDevice
        do {
            try process.run()
        } catch {
            throw PrivateMariaDBError(
                code: .startFailed, message: "cannot run \(executable): \(error)")
        }
        if !waitUntil(deadline: .now + timeout, { !process.isRunning }) {
            process.terminate()
            if !waitUntil(deadline: .now + .seconds(2), { !process.isRunning }) {
                kill(process.processIdentifier, SIGKILL)
                process.waitUntilExit()
            }
            throw PrivateMariaDBError(
                code: .commandTimedOut,
                message: "\(executable) \(arguments.last ?? "") did not finish within \(timeout)")
        }
        return process.terminationStatus
    }

    private func waitUntil(deadline: ContinuousClock.Instant, _ condition: () -> Bool) -> Bool {
        while true {
            if condition() { return true }
            if ContinuousClock.now >= deadline { return false }
            Thread.sleep(forTimeInterval: 0.02)
        }
    }

    private func createDirectory(_ path: String) throws {
        do {
            try FileManager.default.createDirectory(
                atPath: path, withIntermediateDirectories: true)
        } catch {
            throw PrivateMariaDBError(
                code: .directoryUnusable, message: "cannot create \(path): \(error)")
        }
    }

    private func openForAppend(_ path: String) throws -> FileHandle {
        let fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o640)
        guard fd >= 0 else {
            throw PrivateMariaDBError(
                code: .directoryUnusable,
                message: "cannot open \(path): \(String(cString: strerror(errno)))")
        }
        return FileHandle(fileDescriptor: fd, closeOnDealloc: true)
    }

    /// The last lines of a log file, formatted to be appended to an error message.
    static func tail(ofFile path: String, label: String, lines: Int = 15) -> String {
        guard let data = FileManager.default.contents(atPath: path), !data.isEmpty else {
            return " (\(label) is empty or missing)"
        }
        let text = String(decoding: data.suffix(8192), as: UTF8.self)
        let last = text.split(separator: "\n", omittingEmptySubsequences: true).suffix(lines)
        return "; last lines of \(label):\n" + last.joined(separator: "\n")
    }

    /// The parent's environment without the client variables that would redirect or
    /// authenticate the MariaDB tools behind our back, plus the sbin folders in `PATH`.
    static func childEnvironment() -> [String: String] {
        var environment = ProcessInfo.processInfo.environment.filter { key, _ in
            !key.hasPrefix("MYSQL_") && !key.hasPrefix("MARIADB_")
        }
        let path = environment["PATH"] ?? ""
        environment["PATH"] = (path.isEmpty ? "" : path + ":") + "/usr/sbin:/usr/bin:/sbin:/bin"
        return environment
    }

    static func currentUserName() -> String {
        let uid = geteuid()
        if uid == 0 { return "root" }
        if let entry = getpwuid(uid), let name = entry.pointee.pw_name {
            return String(cString: name)
        }
        return ProcessInfo.processInfo.environment["USER"] ?? "root"
    }
}

/// Whether `pid` is a live process (not a zombie waiting to be reaped).
private func isAlive(_ pid: pid_t) -> Bool {
    if kill(pid, 0) != 0 && errno != EPERM { return false }
    // /proc/<pid>/stat: "pid (comm) S ..."; a zombie has already exited.
    if let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
        let close = stat.lastIndex(of: ")")
    {
        let state = stat[stat.index(after: close)...].trimmingCharacters(in: .whitespaces).first
        return state != "Z" && state != "X"
    }
    return true
}

/// An exclusive `flock` on a file in the folder, held across a start or stop so that two
/// processes (tests, workflowd, scripts/mariadb.sh) never start two servers on one datadir.
private struct FolderLock {
    let fd: Int32

    init(path: String) throws {
        // O_CLOEXEC: the server we launch must not inherit (and hold) the lock.
        fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else {
            throw PrivateMariaDBError(
                code: .directoryUnusable,
                message: "cannot open \(path): \(String(cString: strerror(errno)))")
        }
        while flock(fd, LOCK_EX) != 0 {
            guard errno == EINTR else {
                let reason = String(cString: strerror(errno))
                close(fd)
                throw PrivateMariaDBError(
                    code: .directoryUnusable, message: "cannot lock \(path): \(reason)")
            }
        }
    }

    func unlock() {
        flock(fd, LOCK_UN)
        close(fd)
    }
}

/// Why a private MariaDB server could not be started or stopped. Messages name paths and
/// programs, never credentials.
public struct PrivateMariaDBError: Error, Sendable, CustomStringConvertible {
    /// A stable, extensible error code.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        public let rawValue: String
        public init(_ rawValue: String) { self.rawValue = rawValue }
        public var description: String { rawValue }

        /// `mariadbd`, `mariadb-install-db` or `mariadb-admin` is not installed.
        public static let programNotFound = Code("PROGRAM_NOT_FOUND")
        /// The socket path does not fit in a Unix socket address.
        public static let socketPathTooLong = Code("SOCKET_PATH_TOO_LONG")
        /// The folder cannot be created, opened or locked.
        public static let directoryUnusable = Code("DIRECTORY_UNUSABLE")
        /// `mariadb-install-db` failed.
        public static let initialisationFailed = Code("INITIALISATION_FAILED")
        /// `mariadbd` could not be run or exited during start-up.
        public static let startFailed = Code("START_FAILED")
        /// The server did not answer a ping in time.
        public static let startTimedOut = Code("START_TIMED_OUT")
        /// A helper program did not finish in time.
        public static let commandTimedOut = Code("COMMAND_TIMED_OUT")
        /// The server could not be stopped.
        public static let stopFailed = Code("STOP_FAILED")
    }

    public let code: Code
    public let message: String

    public init(code: Code, message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { "PrivateMariaDB \(code): \(message)" }
}
