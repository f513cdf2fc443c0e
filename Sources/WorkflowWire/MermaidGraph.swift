/// Renders a workflow's transitions as a mermaid `stateDiagram-v2`.
public enum MermaidGraph {
    /// - Parameters:
    ///   - statuses: every status (name, code, terminal), in code order.
    ///   - transitions: from code → to codes.
    ///   - initial: the status a new run starts in.
    public static func render(
        statuses: [HelloInfo.Status], transitions: [Int: [Int]], initial: Int
    ) -> String {
        func name(_ code: Int) -> String {
            statuses.first { $0.code == code }?.name ?? "Status\(code)"
        }
        var lines = ["stateDiagram-v2"]
        lines.append("    [*] --> \(name(initial))")
        for from in transitions.keys.sorted() {
            for to in transitions[from]!.sorted() {
                lines.append("    \(name(from)) --> \(name(to))")
            }
        }
        for s in statuses where s.terminal {
            lines.append("    \(s.name) --> [*]")
        }
        return lines.joined(separator: "\n") + "\n"
    }
}
