import Foundation
import WorkflowWire

/// Everything measured in one run; renders the table and the JSON.
final class Report {
    let quick: Bool
    let loadBefore: String
    var loadAfter = "?"
    let binary: String
    var ping: PingResult?
    var orders: [OrdersResult] = []
    /// Payment and fulfilment by the bench's workers over the socket.
    var external: [OrdersResult] = []
    var ceilings: [CeilingResult] = []
    var fanout: FanoutResult?
    var fanoutServerRSSMB: Double?
    var fanoutBaseline: FanoutResult?
    var fanoutServerCPUus: Double?
    var idleCPUPercent: Double?
    var idleStatementsPerSecond: Double?

    init(quick: Bool, loadBefore: String, binary: String) {
        self.quick = quick
        self.loadBefore = loadBefore
        self.binary = binary
    }

    /// Zero latency, 20 concurrent (or the smallest concurrency above 1 if 20 was not run).
    var fixed: OrdersResult? {
        let zero = orders.filter { $0.gatewayLatencyMs == 0 && $0.concurrency > 1 }
        return zero.first { $0.concurrency == 20 } ?? zero.min { $0.concurrency < $1.concurrency }
    }

    /// Zero latency, one order at a time.
    var single: OrdersResult? { orders.first { $0.gatewayLatencyMs == 0 && $0.concurrency == 1 } }

    /// Zero latency, the largest concurrency.
    var saturation: OrdersResult? {
        orders.filter { $0.gatewayLatencyMs == 0 }.max { $0.concurrency < $1.concurrency }
    }

    var poolMaxOpen = 25

    var externalSaturation: OrdersResult? { external.max { $0.concurrency < $1.concurrency } }
    var externalFixed: OrdersResult? { external.first { $0.concurrency == 20 } ?? external.min { $0.concurrency < $1.concurrency } }
    /// The same concurrency as the external saturation run, in-process (zero latency).
    var externalRatio: Double? {
        guard let x = externalSaturation,
            let inProcess = orders.first(where: { $0.gatewayLatencyMs == 0 && $0.concurrency == x.concurrency })
        else { return nil }
        return x.ordersPerSecond / inProcess.ordersPerSecond
    }
    /// Task dispatch of the 20-concurrent external run (as `p50_ms` is of the 20-concurrent
    /// in-process run); every run's figures are in its scenario entry.
    var taskDispatch: Percentiles? { externalFixed?.taskDispatchMs }

    /// The ceiling as issue 5 defines it: one transaction per transition.
    func ceiling(for r: OrdersResult?) -> CeilingResult? {
        guard let r else { return nil }
        return ceilings.first { $0.connections == min(r.concurrency, poolMaxOpen) && $0.batch == 1 }
    }

    func batchedCeiling(for r: OrdersResult?) -> CeilingResult? {
        guard let r else { return nil }
        return ceilings.first { $0.connections == min(r.concurrency, poolMaxOpen) && $0.batch > 1 }
    }

    var batchedRatio: Double? {
        guard let s = saturation, let c = batchedCeiling(for: s) else { return nil }
        return s.ordersPerSecond / c.ordersPerSecond
    }

    var ratio: Double? {
        guard let s = saturation, let c = ceiling(for: s) else { return nil }
        return s.ordersPerSecond / c.ordersPerSecond
    }

    private func f(_ v: Double?, _ digits: Int = 1) -> String {
        guard let v, v.isFinite else { return "-" }
        return String(format: "%.\(digits)f", v)
    }

    private func pad(_ rows: [[String]]) -> String {
        var widths = [Int](repeating: 0, count: rows.map(\.count).max() ?? 0)
        for r in rows { for (i, c) in r.enumerated() { widths[i] = max(widths[i], c.count) } }
        return rows.enumerated().map { (n, r) in
            let line = r.enumerated().map { (i, c) in
                i == 0 ? c.padding(toLength: widths[i], withPad: " ", startingAt: 0)
                    : String(repeating: " ", count: widths[i] - c.count) + c
            }.joined(separator: "  ")
            return n == 0 ? line + "\n" + String(repeating: "-", count: line.count) : line
        }.joined(separator: "\n")
    }

    func table() -> String {
        var out = "\nworkflowd-bench\(quick ? " (quick)" : "") — \(ProcessInfo.processInfo.activeProcessorCount) cores, load average \(loadBefore) before, \(loadAfter) after\n\n"
        var rows: [[String]] = [[
            "orders scenario", "conc", "conns", "orders", "s", "orders/s", "p50 ms", "p90 ms", "p99 ms", "max ms",
            "srv CPU ms/order", "srv peak RSS MB", "bench CPU ms/order", "db stmts/order", "db commits/order",
            "db CPU ms/order", "errors",
        ]]
        for o in orders + external {
            let n = Double(max(1, o.completed + o.failed))
            rows.append([
                o.taskDispatchMs != nil
                    ? "external workers" : o.gatewayLatencyMs == 0 ? "zero latency" : "gateways \(o.gatewayLatencyMs) ms",
                "\(o.concurrency)",
                "\(o.connections)", "\(o.completed + o.failed)", f(o.seconds), f(o.ordersPerSecond, 0), f(o.latencyMs.p50),
                f(o.latencyMs.p90), f(o.latencyMs.p99), f(o.latencyMs.max), f(o.cpuMsPerOrder, 2), f(o.serverPeakRSSMB, 0),
                f(o.benchCPUSeconds * 1000 / n, 2), f(o.db?.statementsPerOrder), f(o.db?.commitsPerOrder),
                f(o.db?.cpuMsPerOrder, 2), o.serverDied ? "\(o.errors + o.failed) SERVER DIED" : "\(o.errors + o.failed)",
            ])
        }
        out += pad(rows) + "\n\n"
        var crow: [[String]] = [[
            "ceiling (MariaDB only)", "conns", "orders", "s", "orders/s", "txn/s", "relay batches", "db stmts/order",
            "db commits/order", "db CPU ms/order",
        ]]
        for c in ceilings {
            crow.append([
                c.batch == 1 ? "1 txn per transition" : "\(c.batch) orders per txn", "\(c.connections)+1", "\(c.orders)", f(c.seconds), f(c.ordersPerSecond, 0),
                f(c.transactionsPerSecond, 0), "\(c.relayBatches)", f(c.db?.statementsPerOrder), f(c.db?.commitsPerOrder),
                f(c.db?.cpuMsPerOrder, 2),
            ])
        }
        out += pad(crow) + "\n\n"
        var s: [[String]] = [["summary", "measured", "target", "met"]]
        func row(_ name: String, _ v: Double?, _ digits: Int, _ target: String, _ ok: ((Double) -> Bool)?) {
            let met = v.flatMap { v in ok.map { $0(v) ? "yes" : "NO" } } ?? ""
            s.append([name, f(v, digits), target, met])
        }
        let sat = saturation
        // The targets of issue 10 (and issue 9's for external steps).
        row("p50 submit→completed ms, 1 at a time", single?.latencyMs.p50, 2, "<= 3") { $0 <= 3 }
        row("server CPU ms/order, 1 at a time", single?.cpuMsPerOrder, 2, "<= 0.5") { $0 <= 0.5 }
        row("server CPU while idle, % of a core", idleCPUPercent, 2, "<= 0.2") { $0 <= 0.2 }
        row("MariaDB statements/s while idle", idleStatementsPerSecond, 1, "", nil)
        row("p50 submit→completed ms, 20 concurrent", fixed?.latencyMs.p50, 1, "<= 15") { $0 <= 15 }
        row("p99 submit→completed ms, 20 concurrent", fixed?.latencyMs.p99, 1, "", nil)
        row("orders/s, zero latency, 20 concurrent", fixed?.ordersPerSecond, 0, ">= 1300") { $0 >= 1300 }
        row("orders/s, zero latency, saturation (c=\(sat?.concurrency ?? 0))", sat?.ordersPerSecond, 0, ">= 2000") { $0 >= 2000 }
        row("ratio to batched ceiling (saturation)", batchedRatio, 2, ">= 0.8") { $0 >= 0.8 }
        row("server CPU ms/order (saturation)", sat?.cpuMsPerOrder, 2, "<= 0.35") { $0 <= 0.35 }
        row("MariaDB statements/order, 20 concurrent", fixed?.db?.statementsPerOrder, 1, "<= 4") { $0 <= 4 }
        row("ceiling orders/s (\(ceiling(for: sat)?.connections ?? 0) conns)", ceiling(for: sat)?.ordersPerSecond, 0, "", nil)
        row("ratio to ceiling (saturation)", ratio, 2, "", nil)
        row("batched ceiling orders/s (\(batchedCeiling(for: sat)?.batch ?? 0) orders/txn)", batchedCeiling(for: sat)?.ordersPerSecond, 0, "", nil)
        let x = externalSaturation
        row("external workers: orders/s (c=\(x?.concurrency ?? 0))", x?.ordersPerSecond, 0, "", nil)
        row("external / in-process orders/s (same c)", externalRatio, 2, ">= 0.70 (issue 9)") { $0 >= 0.70 }
        row("external workers: p50 ms, 20 concurrent", externalFixed?.latencyMs.p50, 1, "", nil)
        row("external workers: p99 ms, 20 concurrent", externalFixed?.latencyMs.p99, 1, "", nil)
        row("task dispatch p50 ms, 20 concurrent (entering the status → task)", taskDispatch?.p50, 2, "<= 1 (issue 9)") { $0 <= 1 }
        row("task dispatch p99 ms, 20 concurrent", taskDispatch?.p99, 2, "", nil)
        row("task dispatch p50 ms, saturation", x?.taskDispatchMs?.p50, 2, "", nil)
        row("task hop p50 ms (answer sent → next step's task, 20 concurrent)", externalFixed?.taskHopMs?.p50, 2, "", nil)
        row("ping/s pipelined, 1 connection", ping?.pipelinedPerSecond, 0, ">= 100000") { $0 >= 100_000 }
        row("ping/s request/reply, 16 connections", ping?.requestReplyPerSecond, 0, "", nil)
        row("fan-out at→delivery p99 ms, \(fanout?.subscribers ?? 0) subs", fanout?.atToDeliveryMs.p99, 1, "<= 5") { $0 <= 5 }
        row("fan-out spread p99 ms (first→each subscriber)", fanout?.spreadMs.p99, 1, "", nil)
        row("fan-out at→delivery p99 ms, 1 subscriber (baseline)", fanoutBaseline?.atToDeliveryMs.p99, 1, "", nil)
        row("server peak RSS MB (max of scenarios)", peakRSS, 0, "<= 150") { $0 <= 150 }
        out += pad(s) + "\n"
        if let fo = fanout, fo.missing != 0 {
            out += "\nfan-out: \(fo.missing) frames missing of \(fo.eventsExpectedPerSubscriber * fo.subscribers)\n"
        }
        return out
    }

    var peakRSS: Double? {
        let all = orders.map(\.serverPeakRSSMB) + [fanoutServerRSSMB].compactMap { $0 }
        return all.filter(\.isFinite).max()
    }

    func json() -> String {
        var w = JSONWriter(capacity: 4096)
        func num(_ v: Double?) {
            if let v, v.isFinite { w.number(text: String(format: "%.3f", v)) } else { w.null() }
        }
        func pct(_ p: Percentiles) {
            w.beginObject()
            w.key("count"); w.int(p.count)
            w.key("p50"); num(p.p50)
            w.key("p90"); num(p.p90)
            w.key("p99"); num(p.p99)
            w.key("max"); num(p.max)
            w.endObject()
        }
        func dbJSON(_ d: DBCost?) {
            guard let d else { return }
            w.key("mariadb_per_order")
            w.beginObject()
            w.key("statements"); num(d.statementsPerOrder)
            w.key("prepared_executes"); num(d.preparedExecutesPerOrder)
            w.key("commits"); num(d.commitsPerOrder)
            w.key("innodb_fsyncs"); num(d.logFsyncsPerOrder)
            w.key("cpu_ms"); num(d.cpuMsPerOrder)
            w.key("tmp_tables"); num(d.tmpTablesPerOrder)
            w.key("disk_tmp_tables"); num(d.diskTmpTablesPerOrder)
            w.key("shared_server"); w.bool(d.shared)
            w.endObject()
        }
        let sat = saturation
        let fix = fixed
        w.beginObject()
        w.key("orders_per_second"); num(sat?.ordersPerSecond)
        w.key("orders_per_second_1"); num(single?.ordersPerSecond)
        w.key("p50_ms_1"); num(single?.latencyMs.p50)
        w.key("p99_ms_1"); num(single?.latencyMs.p99)
        w.key("server_cpu_ms_per_order_1"); num(single?.cpuMsPerOrder)
        w.key("idle_cpu_percent"); num(idleCPUPercent)
        w.key("idle_statements_per_second"); num(idleStatementsPerSecond)
        w.key("statements_per_order_20"); num(fixed?.db?.statementsPerOrder)
        w.key("orders_per_second_20"); num(fix?.ordersPerSecond)
        w.key("p50_ms"); num(fix?.latencyMs.p50)
        w.key("p90_ms"); num(fix?.latencyMs.p90)
        w.key("p99_ms"); num(fix?.latencyMs.p99)
        w.key("ceiling_orders_per_second"); num(ceiling(for: sat)?.ordersPerSecond)
        w.key("ratio_to_ceiling"); num(ratio)
        w.key("ceiling_batched_orders_per_second"); num(batchedCeiling(for: sat)?.ordersPerSecond)
        w.key("ratio_to_batched_ceiling"); num(batchedRatio)
        if let fix, let c = ceiling(for: fix) {
            w.key("ratio_to_ceiling_20"); num(fix.ordersPerSecond / c.ordersPerSecond)
        }
        w.key("external_orders_per_second"); num(externalSaturation?.ordersPerSecond)
        w.key("external_ratio_to_in_process"); num(externalRatio)
        w.key("external_p50_ms_20"); num(externalFixed?.latencyMs.p50)
        w.key("external_p99_ms_20"); num(externalFixed?.latencyMs.p99)
        w.key("task_dispatch_p50_ms"); num(taskDispatch?.p50)
        w.key("task_dispatch_p99_ms"); num(taskDispatch?.p99)
        w.key("task_hop_p50_ms_20"); num(externalFixed?.taskHopMs?.p50)
        w.key("ping_per_second"); num(ping?.pipelinedPerSecond)
        w.key("ping_request_reply_per_second_16"); num(ping?.requestReplyPerSecond)
        w.key("fanout_p99_ms"); num(fanout?.atToDeliveryMs.p99)
        w.key("fanout_spread_p99_ms"); num(fanout?.spreadMs.p99)
        w.key("server_rss_mb"); num(peakRSS)
        w.key("server_cpu_ms_per_order"); num(sat?.cpuMsPerOrder)
        w.key("quick"); w.bool(quick)
        w.key("cores"); w.int(ProcessInfo.processInfo.activeProcessorCount)
        w.key("load_average_before"); w.string(loadBefore)
        w.key("load_average_after"); w.string(loadAfter)
        w.key("scenarios")
        w.beginArray()
        for o in orders + external {
            w.beginObject()
            w.key("name"); w.string(o.label)
            if let d = o.taskDispatchMs {
                w.key("task_dispatch_ms"); pct(d)
            }
            if let h = o.taskHopMs {
                w.key("task_hop_ms"); pct(h)
            }
            w.key("gateway_latency_ms"); w.int(o.gatewayLatencyMs)
            w.key("concurrency"); w.int(o.concurrency)
            w.key("connections"); w.int(o.connections)
            w.key("completed"); w.int(o.completed)
            w.key("failed"); w.int(o.failed)
            w.key("errors"); w.int(o.errors)
            w.key("server_died"); w.bool(o.serverDied)
            w.key("seconds"); num(o.seconds)
            w.key("orders_per_second"); num(o.ordersPerSecond)
            w.key("latency_ms"); pct(o.latencyMs)
            w.key("server_cpu_seconds"); num(o.serverCPUSeconds)
            w.key("server_cpu_ms_per_order"); num(o.cpuMsPerOrder)
            w.key("server_peak_rss_mb"); num(o.serverPeakRSSMB)
            w.key("server_rss_at_start_mb"); num(o.serverRSSStartMB)
            w.key("bench_cpu_seconds"); num(o.benchCPUSeconds)
            dbJSON(o.db)
            w.endObject()
        }
        w.endArray()
        w.key("ceilings")
        w.beginArray()
        for c in ceilings {
            w.beginObject()
            w.key("connections"); w.int(c.connections)
            w.key("relay_connections"); w.int(1)
            w.key("orders_per_transaction"); w.int(c.batch)
            w.key("orders"); w.int(c.orders)
            w.key("seconds"); num(c.seconds)
            w.key("orders_per_second"); num(c.ordersPerSecond)
            w.key("transactions_per_second"); num(c.transactionsPerSecond)
            w.key("events"); w.int(c.events)
            w.key("relay_batches"); w.int(c.relayBatches)
            dbJSON(c.db)
            w.endObject()
        }
        w.endArray()
        if let p = ping {
            w.key("ping")
            w.beginObject()
            w.key("pipelined_per_second"); num(p.pipelinedPerSecond)
            w.key("pipelined_window"); w.int(200)
            w.key("request_reply_per_second"); num(p.requestReplyPerSecond)
            w.key("request_reply_connections"); w.int(p.requestReplyConnections)
            w.key("request_reply_p50_us"); num(p.requestReplyP50us)
            w.key("request_reply_p99_us"); num(p.requestReplyP99us)
            w.endObject()
        }
        if let fo = fanout {
            w.key("fanout")
            w.beginObject()
            w.key("subscribers"); w.int(fo.subscribers)
            w.key("orders"); w.int(fo.orders)
            w.key("frames_received"); w.int(fo.framesReceived)
            w.key("frames_missing"); w.int(fo.missing)
            w.key("at_to_delivery_ms"); pct(fo.atToDeliveryMs)
            w.key("spread_ms"); pct(fo.spreadMs)
            w.key("server_cpu_us_per_frame"); num(fanoutServerCPUus)
            if let b = fanoutBaseline {
                w.key("baseline_1_subscriber_at_to_delivery_ms"); pct(b.atToDeliveryMs)
            }
            w.endObject()
        }
        w.endObject()
        return String(decoding: w.bytes, as: UTF8.self) + "\n"
    }
}
