import ArgumentParser
import Foundation
import Topology

extension FrameTemplate.Proto: ExpressibleByArgument {}

/// Comma-separated integers, e.g. "64,512,1500".
private func integers(_ text: String) throws -> [Int] {
    let values = text.split(separator: ",").map { Int($0.trimmingCharacters(in: .whitespaces)) }
    guard !values.isEmpty, !values.contains(nil) else { throw ValidationError("expected comma-separated integers: \(text)") }
    return values.compactMap { $0 }
}

/// Settings shared by every scenario of one run, as given on the command line.
struct BenchOptions: ParsableArguments {
    @Option(help: "Seconds measured per run (after the warm-up).")
    var duration = 1.0

    @Option(help: "Seconds of traffic before the measured window.")
    var warmup = 0.5

    @Option(name: .customLong("repeat"), help: "Runs per case, references and XDirector interleaved; medians are reported.")
    var repetitions = 3

    @Option(help: "Frame sizes on the wire, FCS included (comma-separated, 60 to 1518).", transform: integers)
    var sizes = [64, 512, 1500]

    @Option(help: "Flows in throughput runs.")
    var flows = 1024

    @Option(help: "Flow counts of the flows scenario (comma-separated).", transform: integers)
    var flowCounts = [1_000, 10_000, 100_000, 1_000_000]

    @Option(help: "tcp (each flow opens with a SYN) or udp.")
    var proto = FrameTemplate.Proto.tcp

    @Option(help: "Most queues in the queues scenario (default: the CPU count, at most 4).")
    var maxQueues = min(ProcessInfo.processInfo.activeProcessorCount, 4)

    @Option(help: "Packets per second of the latency scenario.")
    var latencyRate = 20_000

    @Option(help: "Packets per second of the live-change scenario.")
    var liveRate = 100_000

    @Option(help: "ndr: the highest rate tried, in Mpps (the first trial).")
    var ndrMax = 2.0

    @Option(help: "ndr: trials per forwarder (bisection steps).")
    var ndrSteps = 7

    mutating func validate() throws {
        guard duration >= 0.5, warmup >= 0.2 else { throw ValidationError("--duration is at least 0.5 s, --warmup 0.2 s") }
        guard (1...15).contains(repetitions) else { throw ValidationError("--repeat is 1 to 15") }
        guard !sizes.isEmpty, sizes.allSatisfy({ (60...1518).contains($0) }) else { throw ValidationError("--sizes: give sizes between 60 and 1518") }
        guard flows >= 1, flowCounts.allSatisfy({ $0 > 0 }) else { throw ValidationError("--flows and --flow-counts are positive") }
        guard (1...16).contains(maxQueues) else { throw ValidationError("--max-queues is 1 to 16") }
        guard latencyRate >= 1000, liveRate >= 1000 else { throw ValidationError("--latency-rate and --live-rate are at least 1000") }
        guard ndrMax > 0, (1...20).contains(ndrSteps) else { throw ValidationError("--ndr-max is positive, --ndr-steps 1 to 20") }
    }
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
        case "engine": EngineCommand.main(Array(arguments.dropFirst()))
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

    @OptionGroup var options: BenchOptions

    @Option(help: "auto (pktgen when the kernel has it, else afxdp), afxdp, live (XDP live frames, paced or not; probes use AF_XDP), or pktgen.")
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
        var options = self.options
        let cpus = ProcessInfo.processInfo.activeProcessorCount

        let binaries = try Self.binaries(director: director)
        let generatorKind = Self.chooseGenerator(generator, proto: options.proto)
        if generatorKind == "pktgen" && options.proto == .tcp {
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
            generator: ["pktgen": "kernel pktgen", "live": "XDP live frames (BPF_PROG_RUN), AF_XDP TX-only for paced runs",
                        "afxdp": "AF_XDP TX-only"][generatorKind] ?? generatorKind,
            topology: lab.generatorNamespace == nil ? "\(lab.generatorInterface) → \(lab.directorInterface) (given)"
                : "veth pair between two namespaces, \(options.maxQueues) queues, MTU 1600, no bridge",
            cores: cores, durationSeconds: options.duration, warmupSeconds: options.warmup,
            repetitions: options.repetitions)
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

    /// auto: the kernel's pktgen where it exists (the field's usual tool), else the AF_XDP generator. Live
    /// frames are opt-in: they lift the XDP_TX ceiling, but on veth their unpaced load lands in the softirq
    /// of the generator's core and starves copy-mode AF_XDP forwarders (both collapse to about 0.1 Mpps).
    static func chooseGenerator(_ wanted: String, proto: FrameTemplate.Proto) -> String {
        if wanted == "afxdp" || wanted == "live" { return wanted }
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
