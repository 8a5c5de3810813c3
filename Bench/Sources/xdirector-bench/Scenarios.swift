import Foundation

/// The issue's scenarios. References (reflector, C AF_XDP forwarder) are measured in the same run, on the
/// same path and cores, interleaved with the cases they are compared with.
final class Scenarios {
    static let all = ["dr", "tun", "nat", "conns", "flows", "queues", "latency", "live", "ndr"]
    static let help = """
        dr       DR (-g) throughput at each --sizes, with the XDP_TX reflector and the C AF_XDP reference
        tun      TUN (-i) throughput: ipip at each size, gue and gre at the smallest
        nat      NAT (-m) throughput at each size
        conns    new connections per second: a SYN flood where every packet is a new flow
        flows    active flows 1k, 10k, 100k, 1M (connection-table pressure), smallest size
        queues   1..N queues (N: --max-queues), reference and XDirector, smallest size
        latency  p50/p99/max of timestamped probes at a fixed load (--latency-rate), all three forwarders
        live     a weight change then a real-server removal under UDP load (SIGHUP reloads --rules): packets lost, split
        ndr      no-drop rate (RFC 2544 style: the highest paced rate with loss ≤ 0.01 %), C reference and XDirector, DR,
                 smallest size, paced XDP live frames: a bisection of --ndr-steps trials
        all      every scenario above, in this order
        """

    let runner: Runner
    let options: BenchOptions
    private(set) var results: [Measurement] = []

    init(runner: Runner, options: BenchOptions) {
        self.runner = runner
        self.options = options
    }

    var vip: String { BenchTopology.vip }
    var smallest: Int { options.sizes.min() ?? 64 }

    func run(_ name: String) {
        FileHandle.standardError.write(Data("scenario \(name)\n".utf8))
        switch name {
        case "dr": throughput(scenario: "dr", method: "-g", sinkMode: 1, expect: BenchTopology.realMACs, sizes: options.sizes)
        case "tun":
            throughput(scenario: "tun", method: "-i", sinkMode: 2, expect: BenchTopology.realServers, sizes: options.sizes, label: "ipip")
            throughput(scenario: "tun", method: "-i --tun-type gue --tun-port 6080", sinkMode: 2, expect: BenchTopology.realServers,
                       sizes: [smallest], label: "gue")
            throughput(scenario: "tun", method: "-i --tun-type gre", sinkMode: 2, expect: BenchTopology.realServers,
                       sizes: [smallest], label: "gre")
        case "nat":
            throughput(scenario: "nat", method: "-m", sinkMode: 3, expect: BenchTopology.realServers.map { "\($0):8080" },
                       sizes: options.sizes, realPort: 8080)
        case "conns": newConnections()
        case "flows": activeFlows()
        case "queues": queueScaling()
        case "latency": latency()
        case "live": liveChange()
        case "ndr": noDropRate()
        default: FileHandle.standardError.write(Data("unknown scenario \(name)\n".utf8))
        }
    }

    // MARK: Plans

    func rules(method: String, realPort: Int = 80, weights: [Int] = [1, 1], scheduler: String = "rr") -> String {
        var lines: [String] = []
        for flag in ["-t", "-u"] {
            lines.append("-A \(flag) \(vip):80 -s \(scheduler)")
            for (server, weight) in zip(BenchTopology.realServers, weights) {
                lines.append("-a \(flag) \(vip):80 -r \(server):\(realPort) \(method) -w \(weight)")
            }
        }
        return lines.joined(separator: "\n") + "\n"
    }

    func traffic(size: Int, flows: Int? = nil, rate: Int = 0, proto: FrameTemplate.Proto? = nil) -> TrafficSpec {
        var spec = TrafficSpec()
        spec.proto = proto ?? options.proto
        spec.wireSize = size
        spec.flows = flows ?? options.flows
        spec.rate = rate
        return spec
    }

    func director(_ scenario: String, _ label: String, traffic: TrafficSpec, rules: String, sinkMode: Int = 1,
                  expect: [String] = BenchTopology.realMACs, queues: Int = 1) -> RunPlan {
        var plan = RunPlan(scenario: scenario, label: label, forwarder: .xdirector, queues: queues, traffic: traffic,
                           sinkMode: sinkMode, expect: expect, rules: rules)
        // Room for every flow the run can open, per worker (new flows: the whole run at up to 0.5 Mpps, what
        // copy-mode veth reaches; beyond it the table is full and SYNs are dropped, which the table shows).
        // Workers clear their table when they start, so a larger one only delays their first packet.
        let expected = traffic.flows > 0 ? traffic.flows / queues
            : Int(5e5 * (options.warmup + options.duration)) / queues
        plan.connections = max(1 << 18, min(expected + expected / 4, 1 << 22))
        return plan
    }

    /// Runs `plans` `--repeat` times, interleaved (A, B, C, A, B, C, ...) so that the machine's drifts hit
    /// every plan alike; one median line per plan. A plan skipped once is not run again.
    func interleaved(_ plans: [RunPlan]) -> [Measurement] {
        var samples = Array(repeating: [Measurement](), count: plans.count)
        for _ in 0..<options.repetitions {
            for (index, plan) in plans.enumerated() where samples[index].last?.skipped != true {
                samples[index].append(runner.run(plan))
            }
        }
        return samples.map(Measurement.median)
    }

    /// The references (the C AF_XDP forwarder, and the XDP_TX reflector if asked) for this traffic, measured
    /// interleaved with `plans`; appends the references' lines and then the plans' lines, with ratios of
    /// medians, and returns the plans' lines.
    @discardableResult
    func againstReferences(size: Int, queues: Int = 1, proto: FrameTemplate.Proto? = nil, reflector: Bool = false,
                           _ plans: [RunPlan], notes: ([Measurement], Measurement) -> [Measurement] = { lines, _ in lines }) -> [Measurement] {
        let spec = traffic(size: size, proto: proto)
        let forwarders: [Forwarder] = reflector ? [.reflector, .reference] : [.reference]
        let references = forwarders.map { RunPlan(scenario: "reference", label: "\(size)B q\(queues)", forwarder: $0, queues: queues, traffic: spec) }
        let lines = interleaved(references + plans)
        let reflectorLine = reflector ? lines[0] : nil, referenceLine = lines[forwarders.count - 1]
        let measured = lines.dropFirst(forwarders.count).map { line in
            var result = line
            guard !result.skipped else { return result }
            if let reflectorLine, !reflectorLine.skipped, reflectorLine.mpps > 0 { result.ratioToReflector = result.mpps / reflectorLine.mpps }
            if !referenceLine.skipped, referenceLine.mpps > 0 { result.ratioToReference = result.mpps / referenceLine.mpps }
            return result
        }
        let noted = notes(Array(measured), referenceLine)
        results += lines.prefix(forwarders.count) + noted
        return noted
    }

    // MARK: Scenarios

    func throughput(scenario: String, method: String, sinkMode: Int, expect: [String], sizes: [Int], label: String? = nil,
                    realPort: Int = 80) {
        for size in sizes {
            let plan = director(scenario, "\(label.map { "\($0) " } ?? "")\(size)B", traffic: traffic(size: size),
                                rules: rules(method: method, realPort: realPort), sinkMode: sinkMode, expect: expect)
            let lines = againstReferences(size: size, reflector: scenario == "dr", [plan])
            if lines[0].skipped { break }  // the method is not supported: one line says so
        }
    }

    func newConnections() {
        let plan = director("conns", "SYN flood \(smallest)B", traffic: traffic(size: smallest, flows: 0, proto: .tcp), rules: rules(method: "-g"))
        againstReferences(size: smallest, proto: .tcp, [plan]) { lines, _ in
            lines.map { line in
                var line = line
                line.notes.append(String(format: "%.0f new connections/s", line.mpps * 1e6))
                return line
            }
        }
    }

    func activeFlows() {
        let plans = options.flowCounts.map { flows in
            director("flows", "\(flows) flows", traffic: traffic(size: smallest, flows: flows), rules: rules(method: "-g"))
        }
        againstReferences(size: smallest, plans) { lines, _ in
            lines.map { line in
                // Each flow opens with a SYN on its first packet: fewer packets than flows means fewer flows opened.
                var line = line
                let sent = line.offeredMpps * 1e6 * (options.warmup + options.duration)
                if !line.skipped && sent < Double(line.flows) { line.notes.append(String(format: "only ~%.0f flows opened in the run", sent)) }
                return line
            }
        }
    }

    func queueScaling() {
        var oneQueue: (reference: Double, director: Double)?
        for queues in 1...max(options.maxQueues, 1) {
            let plan = director("queues", "\(queues) queue\(queues == 1 ? "" : "s")", traffic: traffic(size: smallest),
                                rules: rules(method: "-g"), queues: queues)
            againstReferences(size: smallest, queues: queues, [plan]) { lines, reference in
                guard let line = lines.first, !line.skipped, !reference.skipped else { return lines }
                guard let base = oneQueue else {
                    oneQueue = (reference.mpps, line.mpps)
                    return lines
                }
                var noted = line
                noted.notes.append(String(format: "%@ scales %.2fx over 1 queue", Forwarder.reference.rawValue, reference.mpps / base.reference))
                noted.notes.append(String(format: "%@ scales %.2fx over 1 queue", Forwarder.xdirector.rawValue, line.mpps / base.director))
                return [noted]
            }
        }
    }

    func latency() {
        var spec = traffic(size: max(smallest, 128), rate: options.latencyRate)
        spec.probeEvery = 16
        let plans = Forwarder.allCases.map { forwarder in
            var plan = director("latency", "\(options.latencyRate / 1000) kpps \(spec.wireSize)B", traffic: spec, rules: rules(method: "-g"))
            plan.forwarder = forwarder
            if forwarder != .xdirector { plan.sinkMode = 0; plan.expect = [] }
            return plan
        }
        var lines = interleaved(plans)
        if let index = lines.firstIndex(where: { $0.forwarder == Forwarder.xdirector.rawValue }), !lines[index].skipped,
           let p50 = lines[index].latencyP50us {
            for reference in lines where reference.forwarder != Forwarder.xdirector.rawValue {
                if let base = reference.latencyP50us {
                    lines[index].notes.append(String(format: "adds %.1f µs p50 over the %@", p50 - base, reference.forwarder))
                }
            }
        }
        results += lines
    }

    /// Weight changes and removals under load, on UDP: a flow whose real server is removed is rescheduled
    /// (TCP connections to a removed server are dropped by design, as IPVS's expire_nodest_conn does), so
    /// no packet may be lost. Two runs: established flows (the removal moves them), and a new flow per
    /// packet (each phase's split must follow its weights: 1:1, 3:1, 1:0).
    /// RFC 2544's throughput test, as a no-drop rate: for each forwarder, the highest offered rate (paced)
    /// whose run loses at most 0.01 % of what was sent, found by bisection between 0 and --ndr-max Mpps in
    /// --ndr-steps trials (one run each). The paced live-frames generator offers several times what the
    /// AF_XDP generator can on veth, so it is the one used here. The line is the highest passing trial; its
    /// notes list every trial.
    func noDropRate() {
        let size = smallest
        // Live frames where the kernel has them (`_generate` falls back to AF_XDP and says so where not).
        let generator = "live"
        let candidates: [(Forwarder, String)] = [(.reference, "\(size)B q1"), (.xdirector, "DR \(size)B")]
        for (forwarder, label) in candidates {
            var low = 0.0, high = options.ndrMax * 1e6
            var best: Measurement?
            var trials: [String] = []
            var rate = high
            for _ in 0..<options.ndrSteps {
                var plan = forwarder == .xdirector
                    ? director("ndr", label, traffic: traffic(size: size, rate: Int(rate)), rules: rules(method: "-g"))
                    : RunPlan(scenario: "ndr", label: label, forwarder: forwarder, traffic: traffic(size: size, rate: Int(rate)))
                plan.generator = generator
                let trial = runner.run(plan)
                if trial.skipped { best = best ?? trial; break }
                let loss = trial.sent > 0 ? Double(max(trial.lost, 0)) / Double(trial.sent) : 1
                let passed = loss <= 1e-4
                trials.append(String(format: "%.3f %@ (loss %.3f%%)", rate / 1e6, passed ? "ok" : "lost", loss * 100))
                if passed {
                    low = rate
                    best = trial  // bisection: each passing rate is above the previous one
                    if rate >= high { break }  // the top of the range passes: nothing above it is searched
                } else {
                    high = rate
                }
                rate = (low + high) / 2
            }
            var line = best ?? Measurement(scenario: "ndr", label: label, forwarder: forwarder.rawValue, queues: 1, size: size,
                                           proto: options.proto.rawValue, flows: options.flows)
            if best == nil { line.status = "no trial passed (lowest tried \(trials.last ?? "-"))" }
            line.notes.append(String(format: "no-drop rate %.3f Mpps offered", low / 1e6))
            line.notes.append("paced live frames; trials (Mpps): " + trials.joined(separator: ", "))
            results.append(line)
        }
    }

    func liveChange() {
        let rate = options.liveRate
        let initial = rules(method: "-g", weights: [1, 1], scheduler: "wrr")
        // Phases long enough to judge a split on: at least a second each.
        let duration = max(options.duration, 3)
        // Same load, no change, for both kinds of traffic: the loss the path has anyway, to compare against.
        for (label, flows) in [("", options.flows), (", new flow per packet", 0)] {
            var quiet = director("live", "no change \(rate / 1000) kpps udp\(label)",
                                 traffic: traffic(size: smallest, flows: flows, rate: rate, proto: .udp), rules: initial)
            quiet.duration = duration
            var baseline = runner.run(quiet)
            baseline.notes.append("baseline for the live change")
            results.append(baseline)
        }

        let step = duration / 3
        let reload = { (text: String, what: String) -> (Child, String) -> String? in
            { child, path in
                try? text.write(toFile: path, atomically: true, encoding: .utf8)
                guard child.process.isRunning else { return nil }
                kill(child.pid, SIGHUP)
                usleep(200_000)
                return child.process.isRunning ? nil : "\(what): the director exited on SIGHUP"
            }
        }
        let events = [(step, reload(rules(method: "-g", weights: [3, 1], scheduler: "wrr"), "weight change")),
                      (2 * step, reload(rules(method: "-g", weights: [3], scheduler: "wrr"), "real-server removal"))]
        // Established flows keep their server through both changes: a removed server drains, as in IPVS.
        for (label, flows, expected) in [("established flows", options.flows, [Double?](repeating: nil, count: 3)), ("new flow per packet", 0, [0.5, 0.75, 1.0])] {
            var plan = director("live", "weight 3:1, remove rs2, \(label)", traffic: traffic(size: smallest, flows: flows, rate: rate, proto: .udp),
                                rules: initial)
            plan.events = events
            plan.duration = duration
            var result = runner.run(plan)
            if result.notes.contains(where: { $0.contains("exited on SIGHUP") }) {
                result.status = "skipped: xdirector run does not reload --rules on SIGHUP (it exited)"
            }
            result.notes += Self.splitNotes(result.phaseHits, expected: expected)
            results.append(result)
        }
    }

    /// "rs1 share per phase 50%, 75%, 100%", and whether each share is within 5 points of what the weights give
    /// (nil: not judged, e.g. established flows keep their server when only the weights change).
    static func splitNotes(_ phases: [[UInt64]], expected: [Double?]) -> [String] {
        guard phases.count == expected.count else { return [] }
        let shares = phases.map { hits -> Double? in
            let total = hits.prefix(2).reduce(0, +)
            return total > 0 ? Double(hits[0]) / Double(total) : nil
        }
        // A phase with no traffic at all fails too.
        let misses = zip(shares, expected).filter { share, want in share == nil || want.map { abs(share! - $0) > 0.05 } ?? false }
        return ["rs1 share per phase " + shares.map { $0.map { String(format: "%.0f%%", $0 * 100) } ?? "no traffic" }.joined(separator: ", ")
            + (misses.isEmpty ? " (follows the weights)" : " (does NOT follow the weights)")]
    }
}
