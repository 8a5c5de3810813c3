import Dataplane
import Foundation

/// `xdirector stats` and `xdirector queues`: a reading of the director's counters, and optionally the reading
/// before it, as a table for people or as JSON. Pure: no I/O.
///
/// Per-second rates (`rate: true`) are counter deltas divided by `interval`. A counter lower than in the
/// previous reading was reset (the director restarted): its delta is then its whole current value, as
/// Prometheus's `rate()` does. A worker absent from the previous reading counts from zero. The
/// `active_connections` gauge is never turned into a rate: it is always the current reading. Without a
/// previous reading or with a non-positive interval every rate is 0.
public struct StatisticsReport: Sendable {
    public let current: DirectorStatistics
    public let previous: DirectorStatistics?
    /// Seconds between `previous` and `current`.
    public let interval: Double

    public init(_ current: DirectorStatistics, previous: DirectorStatistics? = nil, interval: Double = 0) {
        self.current = current
        self.previous = previous
        self.interval = interval
    }

    // MARK: Figures

    /// One cell: a cumulative count (or the gauge), or a per-second rate.
    enum Figure: Encodable, Equatable {
        case count(UInt64)
        case rate(Double)

        static func + (a: Figure, b: Figure) -> Figure {
            switch (a, b) {
            case (.count(let x), .count(let y)): return .count(x &+ y)
            default: return .rate(a.double + b.double)
            }
        }

        var double: Double {
            switch self {
            case .count(let value): return Double(value)
            case .rate(let value): return value
            }
        }

        var isZero: Bool { double == 0 }

        /// Counts as integers; rates with one decimal, enough for people at per-second scale.
        var text: String {
            switch self {
            case .count(let value): return String(value)
            case .rate(let value): return String(format: "%.1f", value)
            }
        }

        func encode(to encoder: Encoder) throws {
            var container = encoder.singleValueContainer()
            switch self {
            case .count(let value): try container.encode(value)
            case .rate(let value): try container.encode(value)
            }
        }
    }

    static let dropCounters = WorkerCounter.allCases.filter { $0.name.hasPrefix("drop_") }
    static let passCounterIndices = DirectorStatistics.xdpCounterNames.indices
        .filter { DirectorStatistics.xdpCounterNames[$0].hasPrefix("pass_") }

    /// A counter of a row, 0 where the row is short (a reading from a build with fewer counters).
    static func value(_ counter: WorkerCounter, in row: DirectorStatistics.WorkerRow) -> UInt64 {
        row.counters.indices.contains(counter.rawValue) ? row.counters[counter.rawValue] : 0
    }

    /// What was counted between two readings of one counter; a counter that went backwards was reset.
    static func delta(_ now: UInt64, since before: UInt64?) -> UInt64 {
        guard let before, now >= before else { return now }
        return now - before
    }

    private func perSecond(_ now: UInt64, since before: UInt64?) -> Figure {
        guard previous != nil, interval > 0, interval.isFinite else { return .rate(0) }
        return .rate(Double(Self.delta(now, since: before)) / interval)
    }

    private func previousRow(queue: UInt32) -> DirectorStatistics.WorkerRow? {
        previous?.workers.first { $0.queue == queue }
    }

    /// A worker's counter as shown.
    func figure(_ counter: WorkerCounter, of row: DirectorStatistics.WorkerRow, rate: Bool) -> Figure {
        let now = Self.value(counter, in: row)
        guard rate, counter != .activeConnections else { return .count(now) }
        return perSecond(now, since: previousRow(queue: row.queue).map { Self.value(counter, in: $0) })
    }

    /// The sum of a worker's drop counters, as shown.
    func drops(of row: DirectorStatistics.WorkerRow, rate: Bool) -> Figure {
        Self.dropCounters.map { figure($0, of: row, rate: rate) }.reduce(rate ? .rate(0) : .count(0), +)
    }

    /// A counter summed over the workers, as shown (the gauge: summed as well).
    func total(_ counter: WorkerCounter, rate: Bool) -> Figure {
        current.workers.map { figure(counter, of: $0, rate: rate) }
            .reduce(rate && counter != .activeConnections ? .rate(0) : .count(0), +)
    }

    func totalDrops(rate: Bool) -> Figure {
        current.workers.map { drops(of: $0, rate: rate) }.reduce(rate ? .rate(0) : .count(0), +)
    }

    /// The XDP program's counters, by name, as shown.
    func xdpFigures(rate: Bool) -> [(name: String, figure: Figure)] {
        zip(DirectorStatistics.xdpCounterNames, current.xdp).enumerated().map { index, pair in
            guard rate else { return (pair.0, .count(pair.1)) }
            let before = previous.flatMap { $0.xdp.indices.contains(index) ? $0.xdp[index] : nil }
            return (pair.0, perSecond(pair.1, since: before))
        }
    }

    /// Frames the XDP program passed to the kernel (every `pass_*` counter).
    func passes(rate: Bool) -> Figure {
        xdpFigures(rate: rate).filter { $0.name.hasPrefix("pass_") }.map(\.figure).reduce(rate ? .rate(0) : .count(0), +)
    }

    // MARK: Table

    private static let mainColumns: [(title: String, counter: WorkerCounter?)] = [
        ("rx_packets", .rxPackets), ("rx_bytes", .rxBytes), ("tx_packets", .txPackets), ("tx_bytes", .txBytes),
        ("drops", nil), ("new_conns", .newConnections), ("active_conns", .activeConnections),
        ("empty_polls", .emptyPolls), ("fill_shortfalls", .fillRingShortfalls), ("rx_wakeups", .rxWakeups),
        ("tx_kicks", .txKicks),
    ]

    /// Counters with a column of their own, or shown among the drops.
    private static let shownElsewhere = Set(mainColumns.compactMap(\.counter) + dropCounters)

    /// One row per worker and a totals row; then every non-zero drop reason and every other non-zero event,
    /// per worker and in total; then the XDP program's counters. With `rate`, per-second values.
    public func table(rate: Bool) -> String {
        let workers = current.workers
        var sections: [String] = []
        if rate {
            sections.append(String(format: "per second, over %.1f s", interval))
        }

        var rows = [["queue", "core", "cpu", "mode"] + Self.mainColumns.map(\.title) + ["kernel_passes"]]
        for row in workers {
            let cells: [String] = Self.mainColumns.map { column in
                guard let counter = column.counter else { return drops(of: row, rate: rate).text }
                return figure(counter, of: row, rate: rate).text
            }
            // The XDP program counts per CPU, not per queue: passes have a total only.
            rows.append([String(row.queue), String(row.core), String(row.cpu), Self.mode(row)] + cells + ["-"])
        }
        let totals: [String] = Self.mainColumns.map { column in
            guard let counter = column.counter else { return totalDrops(rate: rate).text }
            return total(counter, rate: rate).text
        }
        rows.append(["total", "", "", ""] + totals + [passes(rate: rate).text])
        sections.append(Self.align(rows, left: [0, 3]))

        // Non-zero in the current reading (a reason seen once stays listed, its rate possibly 0).
        let reasons = Self.dropCounters.filter { counter in workers.contains { Self.value(counter, in: $0) != 0 } }
        if !reasons.isEmpty {
            sections.append(breakdown(title: "drops by reason", counters: reasons, rate: rate))
        }
        let others = WorkerCounter.allCases.filter { counter in
            !Self.shownElsewhere.contains(counter) && workers.contains { Self.value(counter, in: $0) != 0 }
        }
        if !others.isEmpty {
            sections.append(breakdown(title: "other events", counters: others, rate: rate))
        }

        let xdp = xdpFigures(rate: rate)
        if !xdp.isEmpty {
            sections.append(Self.align([["xdp program", "value"]] + xdp.map { [$0.name, $0.figure.text] }, left: [0]))
        }
        return sections.joined(separator: "\n\n")
    }

    private func breakdown(title: String, counters: [WorkerCounter], rate: Bool) -> String {
        var rows = [[title] + current.workers.map { "queue \($0.queue)" } + ["total"]]
        for counter in counters {
            rows.append([counter.name] + current.workers.map { figure(counter, of: $0, rate: rate).text }
                + [total(counter, rate: rate).text])
        }
        return Self.align(rows, left: [0])
    }

    static func mode(_ row: DirectorStatistics.WorkerRow) -> String { row.zeroCopy ? "zero-copy" : "copy" }

    /// Pads every column to its widest cell: the `left` ones left-aligned (names), the others (numbers) right-aligned.
    static func align(_ rows: [[String]], left: Set<Int>) -> String {
        let count = rows.map(\.count).max() ?? 0
        let widths = (0..<count).map { column in rows.map { column < $0.count ? $0[column].count : 0 }.max() ?? 0 }
        return rows.map { row in
            row.enumerated().map { column, cell in
                let padding = String(repeating: " ", count: widths[column] - cell.count)
                return left.contains(column) ? cell + padding : padding + cell
            }.joined(separator: "  ").replacingOccurrences(of: "\\s+$", with: "", options: .regularExpression)
        }.joined(separator: "\n")
    }

    // MARK: JSON

    private struct JSONWorker: Encodable {
        var queue: UInt32
        var core: Int
        var cpu: Int
        var mode: String
        var threadID: Int32
        var counters: [String: Figure]

        enum CodingKeys: String, CodingKey {
            case queue, core, cpu, mode, counters
            case threadID = "thread_id"
        }
    }

    private struct JSONReport: Encodable {
        var intervalSeconds: Double?
        var workers: [JSONWorker]
        var totals: [String: Figure]
        var xdp: [String: Figure]

        enum CodingKeys: String, CodingKey {
            case workers, totals, xdp
            case intervalSeconds = "interval_seconds"
        }
    }

    /// Stable keys, sorted: `workers` (`queue`, `core`, `cpu`, `mode`, `thread_id`, `counters`), `totals`, `xdp`.
    /// `counters` and `totals` hold every worker counter by name, zeros included, plus `drops` (the sum of the
    /// `drop_*` counters); `totals` are the sums over the workers. Counts are integers. With `rate` the same
    /// shape, every count a per-second floating-point number (a whole one may print without a fraction: `2`),
    /// except `active_connections` which stays the integer gauge, and `interval_seconds` is added at the top.
    public func json(rate: Bool) -> String {
        func counters(_ figureOf: (WorkerCounter) -> Figure, drops: Figure) -> [String: Figure] {
            var result = Dictionary(uniqueKeysWithValues: WorkerCounter.allCases.map { ($0.name, figureOf($0)) })
            result["drops"] = drops
            return result
        }
        let report = JSONReport(
            intervalSeconds: rate ? interval : nil,
            workers: current.workers.map { row in
                JSONWorker(queue: row.queue, core: row.core, cpu: row.cpu, mode: Self.mode(row), threadID: row.threadID,
                           counters: counters({ figure($0, of: row, rate: rate) }, drops: drops(of: row, rate: rate)))
            },
            totals: counters({ total($0, rate: rate) }, drops: totalDrops(rate: rate)),
            xdp: Dictionary(xdpFigures(rate: rate).map { ($0.name, $0.figure) }, uniquingKeysWith: { first, _ in first }))
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .prettyPrinted]
        // Figures are finite by construction (the interval is checked), so encoding cannot fail.
        guard let data = try? encoder.encode(report) else { return "{}" }
        return String(decoding: data, as: UTF8.self)
    }

    // MARK: Queues

    /// `xdirector queues`: for each queue its core, the CPU its worker last ran on, its thread, the socket's
    /// mode and the ring and UMEM sizes in force.
    public func queuesTable() -> String {
        var rows = [["queue", "core", "cpu", "thread", "mode", "rx_ring", "tx_ring", "fill_ring", "completion_ring", "umem"]]
        for row in current.workers {
            let rings = row.rings
            let umemBytes = UInt64(rings.frameCount) * UInt64(rings.frameSize)
            rows.append([String(row.queue), String(row.core), String(row.cpu), String(row.threadID), Self.mode(row),
                         String(rings.rxRingSize), String(rings.txRingSize),
                         // XSKQueue sizes the fill ring to the frame count, so every frame can wait in it.
                         String(rings.frameCount), String(rings.completionRingSize),
                         "\(rings.frameCount) x \(rings.frameSize) B = \(Self.bytes(umemBytes))"])
        }
        return Self.align(rows, left: [4, 9])
    }

    /// Bytes in binary units, for sizes people read.
    static func bytes(_ count: UInt64) -> String {
        let units = ["B", "KiB", "MiB", "GiB", "TiB"]
        var value = Double(count)
        var unit = 0
        while value >= 1024, unit < units.count - 1 {
            value /= 1024
            unit += 1
        }
        return unit == 0 ? "\(count) B" : String(format: value.rounded() == value ? "%.0f %@" : "%.1f %@", value,
                                                   units[unit] as NSString)
    }
}
