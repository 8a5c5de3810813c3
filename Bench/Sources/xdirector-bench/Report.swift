import Foundation
import Topology

/// The machine and command a report was made with.
struct RunInfo: Codable {
    var command: String
    var date: String
    var kernel: String
    var cpu: String
    var cpus: Int
    var generator: String
    var topology: String
    var cores: String
    var durationSeconds: Double
    var warmupSeconds: Double
    var repetitions: Int
}

/// Writes the table (stdout), report.json, report.md and throughput.png.
struct Report {
    let info: RunInfo
    let results: [Measurement]

    private static func number(_ value: Double?, _ format: String) -> String { value.map { String(format: format, $0) } ?? "-" }

    var header: [String] {
        ["scenario", "case", "forwarder", "q", "size", "Mpps", "min-max", "Gbit/s", "offered", "lost", "bad", "cpu ns/pkt", "usr/sys", "allocs/pkt",
         "x reflector", "x C ref", "p50 us", "p99 us", "max us", "status / notes"]
    }

    func row(_ m: Measurement) -> [String] {
        let ok = !m.skipped
        let tail = ([m.status] + m.notes).joined(separator: "; ")
        return [m.scenario, m.label, m.forwarder, "\(m.queues)", "\(m.size)",
                ok ? Self.number(m.mpps, "%.3f") : "-",
                ok ? m.mppsRange.map { String(format: "%.3f-%.3f", $0.lowerBound, $0.upperBound) } ?? "-" : "-",
                ok ? Self.number(m.gbps, "%.2f") : "-",
                ok ? Self.number(m.offeredMpps, "%.3f") : "-", ok ? "\(m.lost)" : "-", ok ? "\(m.badRewrites)" : "-",
                ok ? Self.number(m.cpuNsPerPacket, "%.0f") : "-",
                ok && m.userNsPerPacket != nil ? String(format: "%.0f/%.0f", m.userNsPerPacket!, m.systemNsPerPacket ?? 0) : "-",
                m.forwarder == Forwarder.reflector.rawValue && ok ? "0 (kernel)" : Self.number(m.allocationsPerPacket, "%.4f"),
                Self.number(m.ratioToReflector, "%.2f"), Self.number(m.ratioToReference, "%.2f"),
                Self.number(m.latencyP50us, "%.1f"), Self.number(m.latencyP99us, "%.1f"), Self.number(m.latencyMaxUs, "%.1f"), tail]
    }

    func table() -> String {
        let rows = [header] + results.map(row)
        let widths = header.indices.map { column in rows.map { $0[column].count }.max() ?? 0 }
        return rows.enumerated().map { index, row in
            let line = row.enumerated().map { column, cell in
                column == row.count - 1 ? cell : cell.padding(toLength: widths[column], withPad: " ", startingAt: 0)
            }.joined(separator: "  ")
            return index == 0 ? line + "\n" + String(repeating: "-", count: min(line.count, 160)) : line
        }.joined(separator: "\n")
    }

    func markdown() -> String {
        var text = "# XDirector benchmark\n\n"
        text += "- Command: `\(info.command)`\n- Date: \(info.date)\n- Machine: \(info.cpu), \(info.cpus) CPUs, Linux \(info.kernel)\n"
        text += "- Generator: \(info.generator)\n- Topology: \(info.topology)\n- Cores: \(info.cores)\n"
        text += "- Window: \(info.durationSeconds) s after \(info.warmupSeconds) s of warm-up, \(info.repetitions) runs per case with "
            + "references and XDirector interleaved; every figure is the median of the runs (`min-max`: the runs' spread, ratios "
            + "are ratios of medians); Mpps and Gbit/s are what the sink "
            + "received (Gbit/s counts the 4-byte FCS, not preamble and gap); `lost` = sent - received over the whole run; "
            + "`bad` = frames without the expected rewrite; `cpu ns/pkt` = CPU time of the forwarder's packet threads per forwarded "
            + "packet over the window, `usr/sys` its user and kernel parts (from /proc/<pid>/task/<tid>/schedstat and stat; "
            + "softirq work on other cores is not in it).\n\n"
        text += "| " + header.joined(separator: " | ") + " |\n"
        text += "|" + header.map { _ in "---" }.joined(separator: "|") + "|\n"
        for m in results { text += "| " + row(m).map { $0.replacingOccurrences(of: "|", with: "/") }.joined(separator: " | ") + " |\n" }
        text += "\n## Targets\n\n" + targets().map { "- \($0)" }.joined(separator: "\n") + "\n"
        return text
    }

    /// The issue's targets, each with whether this run met it.
    func targets() -> [String] {
        func ratioTarget(_ scenario: String, _ name: String, _ goal: Double) -> String {
            let lines = results.filter { $0.scenario == scenario && $0.forwarder == Forwarder.xdirector.rawValue }
            if let skipped = lines.first(where: { $0.skipped }), lines.allSatisfy({ $0.skipped }) {
                return "\(name) ≥ \(goal)× the C AF_XDP reference: not measured (\(skipped.status))"
            }
            let ratios = lines.compactMap { m in m.ratioToReference.map { (m.label, $0) } }
            guard !ratios.isEmpty else { return "\(name) ≥ \(goal)× the C AF_XDP reference: no ratio measured" }
            let met = ratios.allSatisfy { $0.1 >= goal }
            return "\(name) ≥ \(goal)× the C AF_XDP reference: \(met ? "met" : "NOT met") ("
                + ratios.map { String(format: "%@ %.2f×", $0.0, $0.1) }.joined(separator: ", ") + ")"
        }
        var lines = [ratioTarget("dr", "DR", 0.9), ratioTarget("tun", "TUN", 0.85), ratioTarget("nat", "NAT", 0.8)]
        // Steady state: runs that reload the rules (live change) are reported apart.
        let measured = results.filter { $0.forwarder == Forwarder.xdirector.rawValue && !$0.skipped }
        let allocations = measured.filter { $0.phaseHits.isEmpty }.compactMap { $0.allocationsPerPacket }
        let reloading = measured.filter { !$0.phaseHits.isEmpty }.compactMap { $0.workerAllocations }
        if allocations.isEmpty {
            lines.append("0 allocations per packet: not measured (allocation counter not loaded)")
        } else {
            let worst = allocations.max() ?? 0
            lines.append(String(format: "0 allocations per packet in the workers: %@ (worst line %.4f, %d lines)",
                                worst == 0 ? "met" : "NOT met", worst, allocations.count)
                + (reloading.isEmpty ? "" : "; runs with two reloads: \(reloading.map(String.init).joined(separator: ", ")) allocations in the workers"))
        }
        let scaling = results.filter { $0.scenario == "queues" }.flatMap { $0.notes.filter { $0.contains("scales") } }
        lines.append("Near-linear growth with queues: " + (scaling.isEmpty ? "not measured (one queue)" : scaling.joined(separator: "; "))
            + " (\(info.cores))")
        let live = results.filter { $0.scenario == "live" && $0.label.contains("remove") }
        if let skipped = live.first(where: \.skipped) {
            lines.append("Live change loses 0 packets: not measured (\(skipped.status))")
        } else if !live.isEmpty {
            let met = live.allSatisfy { $0.lost == 0 && !$0.notes.contains { $0.contains("NOT follow") } }
            lines.append("Live change loses 0 packets and follows the weights: \(met ? "met" : "NOT met") ("
                + live.map { "\($0.label): lost \($0.lost)" }.joined(separator: "; ") + ")")
        }
        return lines
    }

    func write(to directory: String) throws {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        struct Document: Codable { var run: RunInfo; var results: [Measurement]; var targets: [String] }
        try encoder.encode(Document(run: info, results: results, targets: targets())).write(to: URL(fileURLWithPath: "\(directory)/report.json"))
        try markdown().write(toFile: "\(directory)/report.md", atomically: true, encoding: .utf8)
        plot(directory)
    }

    /// throughput.png: Mpps per size for the three forwarders (DR), and per queue count, with gnuplot.
    private func plot(_ directory: String) {
        let forwarders = Forwarder.allCases.map(\.rawValue)
        let sizes = Array(Set(results.filter { $0.scenario == "dr" || $0.scenario == "reference" }.map(\.size))).sorted()
        func mpps(_ forwarder: String, where match: (Measurement) -> Bool) -> String {
            results.first { $0.forwarder == forwarder && !$0.skipped && match($0) }.map { String(format: "%.4f", $0.mpps) } ?? "0"
        }
        var dr = "size " + forwarders.map { "\"\($0)\"" }.joined(separator: " ") + "\n"
        for size in sizes {
            dr += "\(size) " + forwarders.map { forwarder in
                mpps(forwarder) { m in m.size == size && m.queues == 1 && (m.scenario == "dr" || (m.scenario == "reference" && m.proto == (results.first { $0.scenario == "dr" }?.proto ?? m.proto))) }
            }.joined(separator: " ") + "\n"
        }
        let queueCounts = Array(Set(results.filter { $0.scenario == "queues" }.map(\.queues))).sorted()
        var queues = "queues \"C AF_XDP ref\" \"XDirector\"\n"
        for count in queueCounts {
            let reference = results.first { $0.scenario == "reference" && $0.queues == count && $0.forwarder == Forwarder.reference.rawValue && !$0.skipped }
            let director = results.first { $0.scenario == "queues" && $0.queues == count && !$0.skipped }
            queues += "\(count) \(String(format: "%.4f", reference?.mpps ?? 0)) \(String(format: "%.4f", director?.mpps ?? 0))\n"
        }
        try? dr.write(toFile: "\(directory)/dr.dat", atomically: true, encoding: .utf8)
        try? queues.write(toFile: "\(directory)/queues.dat", atomically: true, encoding: .utf8)
        let script = """
            set terminal pngcairo size 1200,500 noenhanced
            set output '\(directory)/throughput.png'
            set multiplot layout 1,\((sizes.isEmpty || queueCounts.isEmpty) ? 1 : 2) title 'XDirector benchmark (\(info.cpus) CPUs, \(info.generator))'
            set style data histograms
            set style histogram clustered gap 1
            set style fill solid 0.8 border -1
            set ylabel 'Mpps received by the sink'
            set yrange [0:*]
            set key below
            set title 'DR forwarding by frame size (bytes)'
            \(sizes.isEmpty ? "" : "plot '\(directory)/dr.dat' using 2:xtic(1) title columnheader(2), '' using 3 title columnheader(3), '' using 4 title columnheader(4)")
            set title 'Queue scaling (smallest frames)'
            \(queueCounts.isEmpty ? "" : "plot '\(directory)/queues.dat' using 2:xtic(1) title columnheader(2), '' using 3 title columnheader(3)")
            unset multiplot
            """
        let path = "\(directory)/throughput.gp"
        try? script.write(toFile: path, atomically: true, encoding: .utf8)
        if sizes.isEmpty && queueCounts.isEmpty { return }
        do {
            try Topology.run(["gnuplot", path], timeout: 30)
        } catch {
            FileHandle.standardError.write(Data("xdirector-bench: no PNG plot (\(error); install gnuplot-nox)\n".utf8))
        }
    }
}
