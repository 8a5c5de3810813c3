import ArgumentParser
import Foundation

/// Parses "aa:bb:cc:dd:ee:ff".
func parseMAC(_ text: String) -> [UInt8]? {
    let parts = text.split(separator: ":").compactMap { UInt8($0, radix: 16) }
    return parts.count == 6 ? parts : nil
}

/// Parses dotted IPv4 into a host-order number.
func parseIPv4(_ text: String) -> UInt32? {
    let parts = text.split(separator: ".").compactMap { UInt32($0) }
    guard parts.count == 4, parts.allSatisfy({ $0 < 256 }) else { return nil }
    return parts.reduce(0) { $0 << 8 | $1 }
}

/// `_generate`: runs inside the generator's namespace, pinned by the bench with taskset.
struct GenerateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "_generate", abstract: "(internal) transmit traffic", shouldDisplay: false)

    @Option var interface: String
    @Option var queues = 1
    @Option var proto: String = "tcp"
    @Option var size = 64
    @Option var flows = 1024
    @Option var rate = 0
    @Option var seconds = 3.0
    @Option var probeAfter = 0.0
    @Option var probeEvery = 0
    @Option var sourceMac: String
    @Option var destinationMac: String
    @Option var destination: String
    @Option var port = 80
    @Option var stats: String
    @Option var generator = "afxdp"

    func run() throws {
        guard let source = parseMAC(sourceMac), let target = parseMAC(destinationMac), let address = parseIPv4(destination),
              let kind = FrameTemplate.Proto(rawValue: proto) else { throw ValidationError("bad MAC, address or protocol") }
        let spec = TrafficSpec(proto: kind, wireSize: size, flows: flows, rate: rate, seconds: seconds, probeAfter: probeAfter,
                               probeEvery: probeEvery, sourceMAC: source, destinationMAC: target, destination: address,
                               destinationPort: UInt16(port))
        switch generator {
        case "pktgen": try PktgenGenerator(interface: interface, spec: spec, statsPath: stats).run()
        case "live" where probeEvery == 0:
            do {
                return try LiveFramesGenerator(interface: interface, queues: queues, spec: spec, statsPath: stats).run()
            } catch {
                FileHandle.standardError.write(Data("live frames: \(error); using the AF_XDP generator\n".utf8))
            }
            fallthrough
        default: try AFXDPGenerator(interface: interface, queues: queues, spec: spec, statsPath: stats).run()
        }
    }
}

/// `_sink`: attaches the sink to the generator's interface, rewrites its counters to `--stats` every 20 ms,
/// and on SIGINT/SIGTERM writes the latency histogram ("<µs> <count>" lines) to `--histogram` and detaches.
struct SinkCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "_sink", abstract: "(internal) count forwarded frames", shouldDisplay: false)

    @Option var interface: String
    @Option var mode = 0
    @Option(parsing: .upToNextOption) var expect: [String] = []
    @Option var stats: String
    @Option var histogram: String

    func run() throws {
        var signals = StopSignals()
        let program = try AttachedProgram(base64: EmbeddedBPFObjects.bench_sink, program: "xdirector_bench_sink", interface: interface)
        let counters = program.mapFD("sink_counters"), latency = program.mapFD("sink_latency")
        guard AttachedProgram.update32(fd: program.mapFD("sink_config"), key: 0, value: UInt32(mode)) else {
            throw BenchError("cannot configure the sink")
        }
        for (slot, text) in expect.prefix(Int(BenchBPF.expectSlots)).enumerated() {
            _ = AttachedProgram.update(fd: program.mapFD("sink_expect"), key: UInt32(slot), value: Self.expectation(text))
        }
        print("sink attached to \(interface) (\(program.attachedNatively ? "native" : "generic") XDP); ready")
        fflush(nil)
        let keys = 0..<BenchBPF.counterCount
        for _ in 0..<(24 * 3600 * 50) {
            StatsFile.write(stats, AttachedProgram.perCPU(fd: counters, keys: keys, maximum: [BenchBPF.maxNanoseconds]))
            if signals.wait(milliseconds: 20) { break }
        }
        let buckets = AttachedProgram.perCPU(fd: latency, keys: 0..<BenchBPF.latencyBuckets)
        let lines = buckets.enumerated().filter { $0.element > 0 }.map { "\($0.offset) \($0.element)" }
        try (lines.joined(separator: "\n") + "\n").write(toFile: histogram, atomically: true, encoding: .utf8)
        StatsFile.write(stats, AttachedProgram.perCPU(fd: counters, keys: keys, maximum: [BenchBPF.maxNanoseconds]))
        program.close()
    }

    /// "aa:bb:..": a MAC as the sink reads it (6 bytes in frame order, little-endian load);
    /// "a.b.c.d[:port]": an address and port in network order, as the sink compares them.
    static func expectation(_ text: String) -> UInt64 {
        if let mac = parseMAC(text) {
            return mac.enumerated().reduce(0) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) }
        }
        let parts = text.split(separator: ":")
        guard let address = parseIPv4(String(parts[0])) else { return 0 }
        let port = parts.count > 1 ? UInt16(parts[1]) ?? 0 : 0
        return UInt64(address.bigEndian) | UInt64(port.bigEndian) << 32
    }
}

/// `_reflect`: the XDP_TX reflector, attached until SIGINT/SIGTERM.
struct ReflectCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "_reflect", abstract: "(internal) XDP_TX reflector", shouldDisplay: false)

    @Option var interface: String

    func run() throws {
        var signals = StopSignals()
        let program = try AttachedProgram(base64: EmbeddedBPFObjects.bench_reflect, program: "xdirector_bench_reflect", interface: interface)
        print("reflector attached to \(interface) (\(program.attachedNatively ? "native" : "generic") XDP); ready")
        fflush(nil)
        for _ in 0..<(24 * 3600 * 5) where !signals.wait(milliseconds: 200) {}
        program.close()
    }
}
