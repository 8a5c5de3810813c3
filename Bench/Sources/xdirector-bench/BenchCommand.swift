import ArgumentParser
import Foundation
import Topology

/// Settings shared by every scenario of one run.
struct BenchOptions {
    var duration = 3.0
    var warmup = 1.0
    var sizes = [64, 512, 1500]
    var flows = 1024
    var flowCounts = [1_000, 10_000, 100_000, 1_000_000]
    var proto: FrameTemplate.Proto = .tcp
    var maxQueues = 2
    var latencyRate = 20_000
    var liveRate = 100_000
}

/// The programs the bench drives, found next to its own binary unless given.
struct Binaries {
    var bench: String
    var director: String
    var reference: String
    var allocationCounter: String?
}

/// The entry point: the helper processes (`_generate`, `_sink`, `_reflect`) are dispatched by hand, because
/// the bench's own positional scenario list would otherwise swallow their names.
@main
enum BenchMain {
    static func main() {
        let arguments = Array(CommandLine.arguments.dropFirst())
        switch arguments.first {
        case "_generate": GenerateCommand.main(Array(arguments.dropFirst()))
        case "_sink": SinkCommand.main(Array(arguments.dropFirst()))
        case "_reflect": ReflectCommand.main(Array(arguments.dropFirst()))
        default: XDirectorBench.main(arguments)
        }
    }
}

struct XDirectorBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "xdirector-bench",
        abstract: "Measures XDirector against an XDP_TX reflector and a C AF_XDP forwarder, in the same run, on the same path.",
        discussion: """
            Scenarios (default: all):
            \(Scenarios.help)

            By default the bench builds two network namespaces joined by a veth pair: the generator and the sink on one \
            end, the forwarder under test on the other. Results: a table on stdout, and report.json, report.md and \
            throughput.png in --output. Needs root. Build first: swift build -c release (all products).
            """
    )

    @Argument(help: "Scenarios to run: \(Scenarios.all.joined(separator: ", ")), or all.")
    var scenarios: [String] = ["all"]

    @Option(help: "Seconds measured per run (after the warm-up).")
    var duration = 3.0

    @Option(help: "Seconds of traffic before the measured window.")
    var warmup = 1.0

    @Option(help: "Frame sizes on the wire, FCS included (comma-separated).")
    var sizes = "64,512,1500"

    @Option(help: "Flows in throughput runs.")
    var flows = 1024

    @Option(help: "Flow counts of the flows scenario (comma-separated).")
    var flowCounts = "1000,10000,100000,1000000"

    @Option(help: "tcp (each flow opens with a SYN) or udp.")
    var proto = "tcp"

    @Option(help: "Most queues in the queues scenario (default: the CPU count, at most 4).")
    var maxQueues: Int?

    @Option(help: "Packets per second of the latency scenario.")
    var latencyRate = 20_000

    @Option(help: "Packets per second of the live-change scenario.")
    var liveRate = 100_000

    @Option(help: "auto (pktgen when the kernel has it, for UDP), afxdp, or pktgen.")
    var generator = "auto"

    @Option(help: "Directory for report.json, report.md and throughput.png.")
    var output = "Bench/results/latest"

    @Option(help: "Generator-side interface of an existing setup (with --director-interface; no namespaces).")
    var generatorInterface: String?

    @Option(help: "Director-side interface of an existing setup.")
    var directorInterface: String?

    @Option(help: "The xdirector binary (default: next to this one).")
    var director: String?

    mutating func run() throws {
        guard getuid() == 0 else { throw ValidationError("xdirector-bench needs root (namespaces, XDP, AF_XDP)") }
        let names = scenarios.contains("all") ? Scenarios.all : scenarios
        if let unknown = names.first(where: { !Scenarios.all.contains($0) }) { throw ValidationError("unknown scenario \(unknown)") }
        guard let kind = FrameTemplate.Proto(rawValue: proto) else { throw ValidationError("--proto is tcp or udp") }
        var options = BenchOptions()
        options.duration = max(duration, 0.5)
        options.warmup = max(warmup, 0.2)
        options.sizes = sizes.split(separator: ",").compactMap { Int($0) }.filter { (60...1518).contains($0) }
        options.flows = max(flows, 1)
        options.flowCounts = flowCounts.split(separator: ",").compactMap { Int($0) }.filter { $0 > 0 }
        options.proto = kind
        let cpus = ProcessInfo.processInfo.activeProcessorCount
        options.maxQueues = max(1, min(maxQueues ?? min(cpus, 4), 16))
        options.latencyRate = max(latencyRate, 1000)
        options.liveRate = max(liveRate, 1000)
        guard !options.sizes.isEmpty else { throw ValidationError("--sizes: give sizes between 60 and 1518") }

        let binaries = try Self.binaries(director: director)
        let generatorKind = Self.chooseGenerator(generator, proto: kind)
        if generatorKind == "pktgen" && kind == .tcp {
            print("pktgen: sends UDP only; using --proto udp")
            options.proto = .udp
        }

        Children.shared.installSignalHandlers()
        let lab: BenchTopology
        if let generatorInterface, let directorInterface {
            lab = try BenchTopology(generatorInterface: generatorInterface, directorInterface: directorInterface, queues: options.maxQueues)
        } else {
            lab = try BenchTopology(queues: options.maxQueues)
        }
        Children.shared.topology = lab
        defer { Children.shared.stopAll() }

        let runner = try Runner(lab: lab, options: options, binaries: binaries, generatorKind: generatorKind)
        let suite = Scenarios(runner: runner, options: options)
        let started = Date()
        for name in names { suite.run(name) }

        let cores = cpus > 1
            ? "generator on CPU \(runner.generatorCore), forwarder queue i on CPU \(runner.forwarderCores(options.maxQueues).map(String.init).joined(separator: "/")) "
              + "(veth NAPI, hence the director's XDP program and the sink, runs in the softirq of the sending core)"
            : "everything on the one CPU"
        let info = RunInfo(
            command: CommandLine.arguments.joined(separator: " "),
            date: ISO8601DateFormatter().string(from: started),
            kernel: (try? String(contentsOfFile: "/proc/sys/kernel/osrelease", encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines) ?? "?",
            cpu: Self.cpuModel(), cpus: cpus,
            generator: generatorKind == "pktgen" ? "kernel pktgen" : "AF_XDP TX-only (copy mode on veth)",
            topology: lab.generatorNamespace == nil ? "\(lab.generatorInterface) → \(lab.directorInterface) (given)"
                : "veth pair between two namespaces, \(options.maxQueues) queues, MTU 1600, no bridge",
            cores: cores, durationSeconds: options.duration, warmupSeconds: options.warmup)
        let report = Report(info: info, results: suite.results)
        print(report.table())
        print("")
        for line in report.targets() { print("target: \(line)") }
        try report.write(to: output)
        print("wrote \(output)/report.json, report.md, throughput.png (\(Int(Date().timeIntervalSince(started))) s)")
    }

    static func binaries(director: String?) throws -> Binaries {
        let own = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        let directory = (own as NSString).deletingLastPathComponent
        let found = Binaries(bench: own, director: director ?? "\(directory)/xdirector", reference: "\(directory)/xdirector-bench-ref",
                             allocationCounter: "\(directory)/libXDirectorAllocCount.so")
        for path in [found.director, found.reference] where !FileManager.default.isExecutableFile(atPath: path) {
            throw ValidationError("\(path) is missing: build every product first (swift build -c release)")
        }
        var binaries = found
        if let library = found.allocationCounter, !FileManager.default.fileExists(atPath: library) {
            print("allocation counter \(library) is missing: allocations will not be counted")
            binaries.allocationCounter = nil
        }
        return binaries
    }

    static func chooseGenerator(_ wanted: String, proto: FrameTemplate.Proto) -> String {
        if wanted == "afxdp" { return "afxdp" }
        if !PktgenGenerator.available { _ = try? Topology.run(["modprobe", "pktgen"], check: false, timeout: 10) }
        if PktgenGenerator.available { return "pktgen" }
        print("pktgen: not available on this kernel, using the AF_XDP generator")
        return "afxdp"
    }

    static func cpuModel() -> String {
        let text = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) ?? ""
        let line = text.split(separator: "\n").first { $0.hasPrefix("model name") }
        return line.map { String($0.split(separator: ":", maxSplits: 1).last ?? "").trimmingCharacters(in: .whitespaces) } ?? "unknown CPU"
    }
}
