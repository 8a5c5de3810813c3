import Foundation

/// The issue's scenarios. References (reflector, C AF_XDP forwarder) are measured in the same run, on the
/// same path and cores, and cached per (size, queues, protocol) so each is measured once.
final class Scenarios {
    static let all = ["dr", "tun", "nat", "conns", "flows", "queues", "latency", "live"]
    static let help = """
        dr       DR (-g) throughput at each --sizes, with the XDP_TX reflector and the C AF_XDP reference
        tun      TUN (-i) throughput: ipip at each size, gue and gre at the smallest
        nat      NAT (-m) throughput at each size
        conns    new connections per second: a SYN flood where every packet is a new flow
        flows    active flows 1k, 10k, 100k, 1M (connection-table pressure), smallest size
        queues   1..N queues (N: --max-queues), reference and XDirector, smallest size
        latency  p50/p99/max of timestamped probes at a fixed load (--latency-rate), all three forwarders
        live     a weight change then a real-server removal under load (SIGHUP reloads --rules): packets lost
        all      every scenario above, in this order
        """

    let runner: Runner
    let options: BenchOptions
    private(set) var results: [Measurement] = []
    private var references: [String: Measurement] = [:]

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

    /// The reflector's and the C reference's numbers for this traffic, measured now or earlier in the run.
    func referencesFor(size: Int, queues: Int = 1, proto: FrameTemplate.Proto? = nil) -> (Measurement, Measurement) {
        let spec = traffic(size: size, proto: proto)
        func measured(_ forwarder: Forwarder) -> Measurement {
            let key = "\(forwarder)|\(size)|\(queues)|\(spec.proto)"
            if let known = references[key] { return known }
            let plan = RunPlan(scenario: "reference", label: "\(size)B q\(queues)", forwarder: forwarder, queues: queues, traffic: spec)
            let result = runner.run(plan)
            references[key] = result
            results.append(result)
            return result
        }
        return (measured(.reflector), measured(.reference))
    }

    func withRatios(_ measurement: Measurement, _ refs: (Measurement, Measurement)) -> Measurement {
        var result = measurement
        guard !result.skipped else { return result }
        if !refs.0.skipped, refs.0.mpps > 0 { result.ratioToReflector = result.mpps / refs.0.mpps }
        if !refs.1.skipped, refs.1.mpps > 0 { result.ratioToReference = result.mpps / refs.1.mpps }
        return result
    }

    // MARK: Scenarios

    func throughput(scenario: String, method: String, sinkMode: Int, expect: [String], sizes: [Int], label: String? = nil,
                    realPort: Int = 80) {
        for size in sizes {
            let refs = referencesFor(size: size)
            let plan = director(scenario, "\(label.map { "\($0) " } ?? "")\(size)B", traffic: traffic(size: size),
                                rules: rules(method: method, realPort: realPort), sinkMode: sinkMode, expect: expect)
            let result = runner.run(plan)
            results.append(withRatios(result, refs))
            if result.skipped { break }  // the method is not supported: one line says so
        }
    }

    func newConnections() {
        var spec = traffic(size: smallest, flows: 0, proto: .tcp)
        spec.flows = 0
        let refs = referencesFor(size: smallest, proto: .tcp)
        var result = runner.run(director("conns", "SYN flood \(smallest)B", traffic: spec, rules: rules(method: "-g")))
        result.notes.append(String(format: "%.0f new connections/s", result.mpps * 1e6))
        results.append(withRatios(result, refs))
    }

    func activeFlows() {
        let refs = referencesFor(size: smallest)
        for flows in options.flowCounts {
            var result = runner.run(director("flows", "\(flows) flows", traffic: traffic(size: smallest, flows: flows), rules: rules(method: "-g")))
            // Each flow opens with a SYN on its first packet: fewer packets than flows means fewer flows opened.
            let sent = result.offeredMpps * 1e6 * (options.warmup + options.duration)
            if !result.skipped && sent < Double(flows) { result.notes.append(String(format: "only ~%.0f flows opened in the run", sent)) }
            results.append(withRatios(result, refs))
        }
    }

    func queueScaling() {
        var base: [Forwarder: Double] = [:]
        for queues in 1...max(options.maxQueues, 1) {
            let refs = referencesFor(size: smallest, queues: queues)
            var result = runner.run(director("queues", "\(queues) queue\(queues == 1 ? "" : "s")", traffic: traffic(size: smallest),
                                             rules: rules(method: "-g"), queues: queues))
            result = withRatios(result, refs)
            for (forwarder, measurement) in [(Forwarder.reference, refs.1), (.xdirector, result)] where !measurement.skipped {
                if queues == 1 { base[forwarder] = measurement.mpps }
                if let one = base[forwarder], one > 0, queues > 1 {
                    let note = String(format: "%@ scales %.2fx over 1 queue", forwarder.rawValue, measurement.mpps / one)
                    if forwarder == .xdirector { result.notes.append(note) } else { result.notes.append(note) }
                }
            }
            results.append(result)
        }
    }

    func latency() {
        var spec = traffic(size: max(smallest, 128), rate: options.latencyRate)
        spec.probeEvery = 16
        var measured: [Forwarder: Measurement] = [:]
        for forwarder in Forwarder.allCases {
            var plan = director("latency", "\(options.latencyRate / 1000) kpps \(spec.wireSize)B", traffic: spec, rules: rules(method: "-g"))
            plan.forwarder = forwarder
            if forwarder != .xdirector { plan.sinkMode = 0; plan.expect = [] }
            measured[forwarder] = runner.run(plan)
        }
        if var director = measured[.xdirector], !director.skipped, let p50 = director.latencyP50us {
            for forwarder in [Forwarder.reflector, .reference] {
                if let reference = measured[forwarder]?.latencyP50us {
                    director.notes.append(String(format: "adds %.1f µs p50 over the %@", p50 - reference, forwarder.rawValue))
                }
            }
            measured[.xdirector] = director
        }
        results += Forwarder.allCases.compactMap { measured[$0] }
    }

    func liveChange() {
        let rate = options.liveRate
        let spec = traffic(size: smallest, rate: rate)
        let initial = rules(method: "-g", weights: [1, 1], scheduler: "wrr")
        // Same load, no change: the loss the path has anyway, to compare against.
        var baseline = runner.run(director("live", "no change \(rate / 1000) kpps", traffic: spec, rules: initial))
        baseline.notes.append("baseline for the live change")
        results.append(baseline)

        var plan = director("live", "weight 3:1, then remove rs2", traffic: spec, rules: initial)
        let reweighted = rules(method: "-g", weights: [3, 1], scheduler: "wrr")
        let removed = rules(method: "-g", weights: [3], scheduler: "wrr")
        let step = options.duration / 3
        let reload = { (text: String, what: String) -> (Child, String) -> String? in
            { child, path in
                try? text.write(toFile: path, atomically: true, encoding: .utf8)
                guard child.process.isRunning else { return nil }
                kill(child.pid, SIGHUP)
                usleep(200_000)
                return child.process.isRunning ? "\(what): reloaded" : "\(what): the director exited on SIGHUP"
            }
        }
        plan.events = [(step, reload(reweighted, "weight change")), (2 * step, reload(removed, "real-server removal"))]
        var result = runner.run(plan)
        if result.notes.contains(where: { $0.contains("exited on SIGHUP") }) {
            result.status = "skipped: xdirector run does not reload --rules on SIGHUP (it exited)"
        }
        results.append(result)
    }
}
