/// The engine's bookkeeping in `workflow_records.meta`: consecutive step failures at the current
/// status and the last error. Stored as `<count>\n<last error>` in UTF-8, small and readable.
struct RunMeta: Sendable, Equatable {
    var failures: Int = 0
    var lastError: String?

    init(failures: Int = 0, lastError: String? = nil) {
        self.failures = failures
        self.lastError = lastError
    }

    init(_ bytes: [UInt8]?) {
        guard let bytes, !bytes.isEmpty else { return }
        let text = String(decoding: bytes, as: UTF8.self)
        let parts = text.split(separator: "\n", maxSplits: 1, omittingEmptySubsequences: false)
        failures = Int(parts[0]) ?? 0
        lastError = parts.count > 1 ? String(parts[1]) : nil
    }

    var bytes: [UInt8]? {
        guard failures > 0 || lastError != nil else { return nil }
        return Array("\(failures)\n\(lastError ?? "")".utf8)
    }
}
