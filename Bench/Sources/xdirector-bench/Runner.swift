import Foundation
import Topology

enum Forwarder: String, Codable, CaseIterable {
    case reflector = "XDP_TX reflector"
    case reference = "C AF_XDP ref"
    case xdirector = "XDirector"
}

/// One measured run: a forwarder on the lab, traffic for warm-up + duration, counters read around the window.
struct RunPlan {
    var scenario: String
    var label: String
    var forwarder: Forwarder
    var queues = 1
    var traffic = TrafficSpec()
    var sinkMode = 0
    var expect: [String] = []
    var rules = ""
    var directorArguments: [String] = []
    var connections = 1 << 18
    /// The measured window, when the run needs another than --duration.
    var duration: Double?
    /// The generator, when the run needs another than the bench's (the no-drop search's live frames).
    var generator: String?
    /// Actions during the window (seconds after it opens), e.g. a rules change and SIGHUP.
    var events: [(at: Double, action: (Child, String) -> String?)] = []
}

/// One result line; every line carries allocations per packet where the forwarder runs in user space.
struct Measurement: Codable {
    var scenario: String
    var label: String
    var forwarder: String
    var queues: Int
    var size: Int
    var proto: String
    var flows: Int
    var offeredMpps = 0.0
    /// Medians over `repetitions` runs (see `median(of:)`); `mppsRange` is the lowest and highest run.
    var mpps = 0.0
    var repetitions = 1
    var mppsRange: ClosedRange<Double>?
    var gbps = 0.0
    /// Frames the generator sent minus frames the sink saw, over the whole run (after draining).
    var lost: Int64 = 0
    var badRewrites: UInt64 = 0
    /// Frames the generator sent over the whole run (`lost` is out of these).
    var sent: UInt64 = 0
    /// CPU time of the forwarder's packet threads (XDirector's workers, the C reference's queue threads) per
    /// forwarded packet over the window, in ns: in all, in user space, in the kernel (see `ThreadCPU`).
    var cpuNsPerPacket: Double?
    var userNsPerPacket: Double?
    var systemNsPerPacket: Double?
    var allocationsPerPacket: Double?
    var workerAllocations: UInt64?
    var latencyP50us: Double?
    var latencyP99us: Double?
    var latencyMaxUs: Double?
    var ratioToReflector: Double?
    var ratioToReference: Double?
    /// Frames the sink matched to each expected entry (real server), per phase of a run with events
    /// (before the first event, between events, after the last).
    var phaseHits: [[UInt64]] = []
    var status = "ok"
    var notes: [String] = []

    var skipped: Bool { status != "ok" }

    /// One line for repeated runs of the same case: medians of rates, losses and latencies, the spread of
    /// Mpps, the worst allocation count and every bad rewrite. A skipped run makes the line skipped.
    static func median(of samples: [Measurement]) -> Measurement {
        guard let first = samples.first, !samples.contains(where: \.skipped) else {
            return samples.first(where: \.skipped) ?? samples[0]
        }
        func middle<T: Comparable>(_ values: [T]) -> T { values.sorted()[values.count / 2] }
        func middle(_ values: [Double?]) -> Double? { values.contains(nil) ? nil : middle(values.compactMap { $0 }) }
        let byRate = samples.sorted { $0.mpps < $1.mpps }
        var line = byRate[byRate.count / 2]
        line.repetitions = samples.count
        line.mppsRange = byRate.first!.mpps...byRate.last!.mpps
        line.gbps = middle(samples.map(\.gbps))
        line.offeredMpps = middle(samples.map(\.offeredMpps))
        line.lost = middle(samples.map(\.lost))
        line.sent = middle(samples.map(\.sent))
        line.cpuNsPerPacket = middle(samples.map(\.cpuNsPerPacket))
        line.userNsPerPacket = middle(samples.map(\.userNsPerPacket))
        line.systemNsPerPacket = middle(samples.map(\.systemNsPerPacket))
        line.badRewrites = samples.reduce(0) { $0 + $1.badRewrites }
        let allocations = samples.compactMap(\.allocationsPerPacket)
        line.allocationsPerPacket = allocations.count == samples.count ? allocations.max() : first.allocationsPerPacket
        line.workerAllocations = samples.compactMap(\.workerAllocations).max()
        line.latencyP50us = middle(samples.map(\.latencyP50us))
        line.latencyP99us = middle(samples.map(\.latencyP99us))
        line.latencyMaxUs = samples.compactMap(\.latencyMaxUs).max()
        return line
    }
}

/// Runs plans on one lab: the sink on the generator's side, the forwarder on the director's side.
final class Runner {
    let lab: BenchTopology
    let options: BenchOptions
    let binaries: Binaries
    let workDirectory: String
    let generatorKind: String
    private var counter = 0

    init(lab: BenchTopology, options: BenchOptions, binaries: Binaries, generatorKind: String) throws {
        self.lab = lab
        self.options = options
        self.binaries = binaries
        self.generatorKind = generatorKind
        workDirectory = NSTemporaryDirectory() + "xdirector-bench-\(getpid())"
        try FileManager.default.createDirectory(atPath: workDirectory, withIntermediateDirectories: true)
        let object = Data(base64Encoded: EmbeddedBPFObjects.bench_redirect)!
        try object.write(to: URL(fileURLWithPath: "\(workDirectory)/bench_redirect.bpf.o"))
    }

    deinit { try? FileManager.default.removeItem(atPath: workDirectory) }

    /// Cores: the generator on the first, forwarder queues on the others, wrapping onto the generator's
    /// core only when there are more queues than remaining cores.
    var cpuCount: Int { max(ProcessInfo.processInfo.activeProcessorCount, 1) }
    var generatorCore: Int { 0 }
    func forwarderCores(_ queues: Int) -> [Int] {
        let others = cpuCount > 1 ? Array(1..<cpuCount) + [0] : [0]
        return (0..<queues).map { others[$0 % others.count] }
    }

    func run(_ plan: RunPlan) -> Measurement {
        var result = Measurement(scenario: plan.scenario, label: plan.label, forwarder: plan.forwarder.rawValue, queues: plan.queues,
                                 size: plan.traffic.wireSize, proto: plan.traffic.proto.rawValue,
                                 flows: plan.traffic.flows)
        do {
            try measure(plan, into: &result)
        } catch {
            result.status = "skipped: \(error)"
        }
        let summary = result.skipped ? result.status
            : String(format: "%.3f Mpps, lost %lld, allocs/pkt %@", result.mpps, result.lost,
                     result.allocationsPerPacket.map { String(format: "%.4f", $0) } ?? "-")
        FileHandle.standardError.write(Data("  \(plan.scenario) \(plan.label) [\(plan.forwarder.rawValue)]: \(summary)\n".utf8))
        return result
    }

    private func measure(_ plan: RunPlan, into result: inout Measurement) throws {
        counter += 1
        let base = "\(workDirectory)/run\(counter)"
        let (genStats, sinkStats, histogram, allocStats, rulesPath) =
            ("\(base).gen", "\(base).sink", "\(base).hist", "\(base).alloc", "\(base).rules")
        let genNS = lab.generatorNamespace, dirNS = lab.directorNamespace

        let sink = try Child("sink", BenchTopology.command(in: genNS, [binaries.bench, "_sink", "--interface", lab.generatorInterface,
            "--mode", "\(plan.sinkMode)", "--stats", sinkStats, "--histogram", histogram] + (plan.expect.isEmpty ? [] : ["--expect"] + plan.expect)))
        defer { sink.stop() }
        guard sink.waitReady(seconds: 15) else { throw BenchError("the sink did not start: \(sink.lastError)") }

        let cores = forwarderCores(plan.queues)
        let coreList = cores.map(String.init).joined(separator: ",")
        let forwarder: Child
        switch plan.forwarder {
        case .reflector:
            forwarder = try Child("reflector", BenchTopology.command(in: dirNS, [binaries.bench, "_reflect", "--interface", lab.directorInterface]))
        case .reference:
            forwarder = try Child("reference", BenchTopology.command(in: dirNS, [binaries.reference, lab.directorInterface, "\(plan.queues)",
                "\(workDirectory)/bench_redirect.bpf.o"] + cores.map(String.init)),
                environment: allocationEnvironment(allocStats, prefix: "xdb-ref-q"))
        case .xdirector:
            try plan.rules.write(toFile: rulesPath, atomically: true, encoding: .utf8)
            forwarder = try Child("xdirector", BenchTopology.command(in: dirNS, [binaries.director, "run", "--interface", lab.directorInterface,
                "--rules", rulesPath, "--state-file", rulesPath + ".state", "--queues", "0-\(plan.queues - 1)", "--cores", coreList, "--wait", "poll",
                "--connections", "\(plan.connections)"] + plan.directorArguments),
                environment: allocationEnvironment(allocStats, prefix: "xd-q"))
        }
        defer { forwarder.stop() }
        guard forwarder.waitReady(seconds: 30) else {
            forwarder.stop()
            throw BenchError(forwarder.lastError)
        }
        usleep(300_000)

        let traffic = plan.traffic
        let duration = plan.duration ?? options.duration
        let seconds = options.warmup + duration
        var arguments = [binaries.bench, "_generate", "--interface", lab.generatorInterface, "--queues", "\(plan.queues)",
                         "--proto", traffic.proto.rawValue, "--size", "\(traffic.wireSize)", "--flows", "\(traffic.flows)",
                         "--rate", "\(traffic.rate)", "--seconds", "\(seconds)", "--source-mac", formatMAC(lab.generatorMAC),
                         "--destination-mac", formatMAC(lab.directorMAC), "--destination", BenchTopology.vip, "--port", "80",
                         "--stats", genStats, "--generator", plan.generator ?? generatorKind]
        if traffic.probeEvery > 0 { arguments += ["--probe-after", "\(options.warmup)", "--probe-every", "\(traffic.probeEvery)"] }
        if cpuCount > 1 { arguments = ["taskset", "-c", "\(generatorCore)"] + arguments }
        let generator = try Child("generator", BenchTopology.command(in: genNS, arguments))
        defer { generator.stop() }

        // The window: read every counter at its start and its end.
        // The forwarder's packet threads, by name: XDirector's workers and the C reference's queue threads.
        let threads: String? = switch plan.forwarder {
        case .xdirector: "xd-q"
        case .reference: "xdb-ref-q"
        case .reflector: nil  // XDP_TX runs in the kernel's softirq: no thread of its own
        }
        Thread.sleep(forTimeInterval: options.warmup)
        let cpuStart = threads.flatMap { ThreadCPU.read(pid: forwarder.pid, prefix: $0) }
        let start = try readings(genStats, sinkStats, allocStats)
        var elapsed = 0.0
        var phaseStart = start
        for event in plan.events.sorted(by: { $0.at < $1.at }) {
            if event.at > elapsed { Thread.sleep(forTimeInterval: event.at - elapsed); elapsed = event.at }
            let before = try readings(genStats, sinkStats, allocStats)
            result.phaseHits.append(zip(before.hits, phaseStart.hits).map { $0 &- $1 })
            if let note = event.action(forwarder, rulesPath) { result.notes.append(note) }
            phaseStart = try readings(genStats, sinkStats, allocStats)
        }
        if duration > elapsed { Thread.sleep(forTimeInterval: duration - elapsed) }
        let end = try readings(genStats, sinkStats, allocStats)
        let cpuEnd = threads.flatMap { ThreadCPU.read(pid: forwarder.pid, prefix: $0) }
        if !plan.events.isEmpty { result.phaseHits.append(zip(end.hits, phaseStart.hits).map { $0 &- $1 }) }
        Topology.wait(generator.process, seconds: 10)
        if generator.process.isRunning { generator.stop() }
        if generator.process.terminationStatus != 0 { throw BenchError("the generator failed: \(generator.lastError)") }
        usleep(300_000)  // frames still in flight reach the sink
        let final = try readings(genStats, sinkStats, allocStats)
        if !forwarder.process.isRunning { result.notes.append("forwarder exited during the run: \(forwarder.lastError)") }

        let window = Double(end.sinkTime &- start.sinkTime) / 1e9
        let genWindow = Double(end.genTime &- start.genTime) / 1e9
        let forwarded = end.sink[Int(BenchBPF.rx)] &- start.sink[Int(BenchBPF.rx)]
        let bytes = end.sink[Int(BenchBPF.rxBytes)] &- start.sink[Int(BenchBPF.rxBytes)]
        let offered = end.gen[0] &- start.gen[0]
        result.mpps = window > 0 ? Double(forwarded) / window / 1e6 : 0
        // On the wire: the frame plus its 4-byte FCS.
        result.gbps = window > 0 ? Double(bytes &+ 4 &* forwarded) * 8 / window / 1e9 : 0
        result.offeredMpps = genWindow > 0 ? Double(offered) / genWindow / 1e6 : 0
        result.lost = Int64(bitPattern: final.gen[0]) - Int64(bitPattern: final.sink[Int(BenchBPF.rx)])
        result.sent = final.gen[0]
        if let cpuStart, let cpuEnd, let cpu = cpuEnd.perPacket(since: cpuStart, packets: forwarded) {
            (result.cpuNsPerPacket, result.userNsPerPacket, result.systemNsPerPacket) = (cpu.total, cpu.user, cpu.system)
        }
        result.badRewrites = final.sink[Int(BenchBPF.bad)]
        if let before = start.allocations, let after = end.allocations, plan.forwarder != .reflector {
            result.workerAllocations = after &- before
            result.allocationsPerPacket = forwarded > 0 ? Double(after &- before) / Double(forwarded) : nil
        }

        forwarder.stop()
        sink.stop()
        if traffic.probeEvery > 0 { latency(histogram: histogram, sinkStats: sinkStats, into: &result) }
    }

    private func allocationEnvironment(_ path: String, prefix: String) -> [String: String] {
        guard let library = binaries.allocationCounter else { return [:] }
        return ["LD_PRELOAD": library, "XDB_ALLOC_FILE": path, "XDB_ALLOC_PREFIX": prefix]
    }

    private struct Readings {
        var genTime: UInt64, gen: [UInt64], sinkTime: UInt64, sink: [UInt64], allocations: UInt64?
        var hits: ArraySlice<UInt64> { sink[Int(BenchBPF.hits)..<Int(BenchBPF.hits + BenchBPF.expectSlots)] }
    }

    private func readings(_ genStats: String, _ sinkStats: String, _ allocStats: String) throws -> Readings {
        guard let (genTime, gen) = StatsFile.read(genStats), gen.count >= 2 else { throw BenchError("the generator reports nothing") }
        guard let (sinkTime, sink) = StatsFile.read(sinkStats), sink.count >= Int(BenchBPF.counterCount) else {
            throw BenchError("the sink reports nothing")
        }
        let allocations = StatsFile.read(allocStats).flatMap { $0.1.first }
        return Readings(genTime: genTime, gen: gen, sinkTime: sinkTime, sink: sink, allocations: allocations)
    }

    private func latency(histogram: String, sinkStats: String, into result: inout Measurement) {
        guard let text = try? String(contentsOfFile: histogram, encoding: .utf8) else { return }
        let buckets = text.split(separator: "\n").compactMap { line -> (Int, UInt64)? in
            let parts = line.split(separator: " ")
            guard parts.count == 2, let bucket = Int(parts[0]), let count = UInt64(parts[1]) else { return nil }
            return (bucket, count)
        }.sorted { $0.0 < $1.0 }
        let total = buckets.reduce(0) { $0 + $1.1 }
        guard total > 0 else { result.notes.append("no probes came back"); return }
        func percentile(_ p: Double) -> Double {
            let rank = UInt64((Double(total) * p).rounded(.up))
            var seen: UInt64 = 0
            for (bucket, count) in buckets {
                seen += count
                if seen >= rank { return Double(bucket) + 0.5 }  // bucket midpoint, 1 µs wide
            }
            return Double(buckets.last!.0)
        }
        result.latencyP50us = percentile(0.5)
        result.latencyP99us = percentile(0.99)
        if let (_, values) = StatsFile.read(sinkStats), values.count > Int(BenchBPF.maxNanoseconds) {
            result.latencyMaxUs = Double(values[Int(BenchBPF.maxNanoseconds)]) / 1000
        }
        result.notes.append("\(total) probes")
    }
}
