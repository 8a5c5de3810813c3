import CXDP
import XCTest
import XDirectorTestSupport
@testable import xdirector_bench

/// The bench's pure pieces: generated frames carry valid checksums (the AF_XDP generator's and the
/// live-frames program's), repeated runs combine into medians, and the live-change split is judged.
final class BenchLogicTests: XCTestCase {
    static let source: [UInt8] = [2, 0, 0, 0, 0, 1], destination: [UInt8] = [2, 0, 0, 0, 0, 2]

    func template(_ proto: FrameTemplate.Proto, _ size: Int) -> FrameTemplate {
        FrameTemplate(proto: proto, wireSize: size, sourceMAC: Self.source, destinationMAC: Self.destination,
                      destination: 0xC612_010A, destinationPort: 80)
    }

    /// IPv4 header and TCP/UDP checksums both verify (a valid checksum makes the one's complement sum 0xFFFF).
    func assertValid(_ frame: [UInt8], _ proto: FrameTemplate.Proto, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(ReferenceChecksum.onesComplementSum(Array(frame[14..<34])), 0xFFFF, "IPv4 header checksum", file: file, line: line)
        let segment = Array(frame[34...])
        let pseudo = Array(frame[26..<34]) + [0, proto == .tcp ? 6 : 17] + bigEndianBytes(UInt16(segment.count))
        XCTAssertEqual(ReferenceChecksum.onesComplementSum(pseudo + segment), 0xFFFF, "\(proto) checksum", file: file, line: line)
    }

    func stamped(_ template: FrameTemplate, source: UInt32, port: UInt16, syn: Bool, probe: UInt64) -> [UInt8] {
        var frame = template.bytes
        frame.withUnsafeMutableBytes { template.stamp($0.baseAddress!, source: source, sourcePort: port, syn: syn, probe: probe) }
        return frame
    }

    func testStampedFramesCarryValidChecksums() {
        for proto in FrameTemplate.Proto.allCases {
            for size in [64, 128, 512, 1500] {
                let template = template(proto, size)
                XCTAssertEqual(template.length, size - 4)
                for (source, port, syn, probe) in [(UInt32(0x0A00_0000), UInt16(1024), true, UInt64(0)),
                                                   (0x0AFF_FFFF, 0xFFFF, false, 0x0123_4567_89AB_CDEF),
                                                   (0x0A12_3456, 17_407, false, 1)] {
                    let frame = stamped(template, source: source, port: port, syn: syn, probe: probe)
                    assertValid(frame, proto)
                    XCTAssertEqual(Array(frame[26..<30]), bigEndianBytes(source))
                    XCTAssertEqual(Array(frame[34..<36]), bigEndianBytes(port))
                    if proto == .tcp { XCTAssertEqual(frame[47], syn ? 0x02 : 0x10) }
                }
            }
        }
    }

    /// The live-frames program, run once per packet by BPF_PROG_RUN without live frames (the frame comes
    /// back): it writes the flow's fields and checksums from the template's base sums. Needs root.
    func testLiveFramesProgramWritesValidFrames() throws {
        try XCTSkipUnless(getuid() == 0, "loading BPF programs needs root")
        // Its flow counter is per CPU: stay on one, and give the test thread its CPUs back after (the
        // processes later tests spawn inherit its affinity).
        defer { _ = cxdp_unpin_thread() }
        XCTAssertEqual(cxdp_pin_thread_to_cpu(0), 0)
        for proto in FrameTemplate.Proto.allCases {
            let template = template(proto, 64)
            let program = try LoadedProgram(base64: EmbeddedBPFObjects.bench_gen, program: "xdirector_bench_gen")
            var config: [UInt32] = [3, 1, template.ipBaseSum, template.l4BaseSum, proto == .tcp ? 1 : 0]
            var key: UInt32 = 0
            XCTAssertEqual(bpf_map_update_elem(program.mapFD("gen_config"), &key, &config, UInt64(BPF_ANY)), 0)
            var ports: [UInt16] = []
            for packet in 0..<5 {
                var output = [UInt8](repeating: 0, count: 256)
                var options = bpf_test_run_opts()
                options.sz = MemoryLayout<bpf_test_run_opts>.size
                let result = template.bytes.withUnsafeBytes { input in
                    output.withUnsafeMutableBytes { out in
                        options.data_in = input.baseAddress
                        options.data_size_in = UInt32(input.count)
                        options.data_out = out.baseAddress
                        options.data_size_out = UInt32(out.count)
                        return bpf_prog_test_run_opts(program.programFD, &options)
                    }
                }
                XCTAssertEqual(result, 0)
                XCTAssertEqual(options.retval, XDP_TX.rawValue)
                let frame = Array(output.prefix(Int(options.data_size_out)))
                XCTAssertEqual(frame.count, template.length)
                assertValid(frame, proto)
                ports.append(UInt16(frame[34]) << 8 | UInt16(frame[35]))
                if proto == .tcp { XCTAssertEqual(frame[47], packet < 3 ? 0x02 : 0x10, "a SYN opens each of the 3 flows") }
            }
            XCTAssertEqual(ports, [1024, 1025, 1026, 1024, 1025], "3 flows, cycled")
        }
    }

    func measurement(_ mpps: Double, allocations: Double? = 0, bad: UInt64 = 0, lost: Int64 = 0, status: String = "ok") -> xdirector_bench.Measurement {
        var m = xdirector_bench.Measurement(scenario: "dr", label: "64B", forwarder: Forwarder.xdirector.rawValue, queues: 1, size: 64,
                            proto: "tcp", flows: 1024)
        m.mpps = mpps
        m.gbps = mpps / 2
        m.allocationsPerPacket = allocations
        m.badRewrites = bad
        m.lost = lost
        m.status = status
        return m
    }

    func testMedianOfRepeatedRuns() {
        let line = xdirector_bench.Measurement.median(of: [measurement(0.3, allocations: 0, lost: 1), measurement(0.1, allocations: 0.5, bad: 2, lost: 5),
                                           measurement(0.2, allocations: 0, bad: 1, lost: 9)])
        XCTAssertEqual(line.mpps, 0.2)
        XCTAssertEqual(line.gbps, 0.1)
        XCTAssertEqual(line.mppsRange, 0.1...0.3)
        XCTAssertEqual(line.repetitions, 3)
        XCTAssertEqual(line.lost, 5)
        XCTAssertEqual(line.badRewrites, 3, "every bad rewrite counts")
        XCTAssertEqual(line.allocationsPerPacket, 0.5, "the worst run's allocations")
        let skipped = xdirector_bench.Measurement.median(of: [measurement(0.3), measurement(0, status: "skipped: no")])
        XCTAssertTrue(skipped.skipped)
    }

    func testSplitFollowsWeights() {
        let follows = Scenarios.splitNotes([[500, 500], [750, 250], [1000, 0]], expected: [0.5, 0.75, 1.0])
        XCTAssertEqual(follows, ["rs1 share per phase 50%, 75%, 100% (follows the weights)"])
        let stuck = Scenarios.splitNotes([[500, 500], [500, 500], [1000, 0]], expected: [0.5, 0.75, 1.0])
        XCTAssertTrue(stuck[0].contains("NOT follow"))
        let silent = Scenarios.splitNotes([[500, 500], [750, 250], [0, 0]], expected: [0.5, nil, 1.0])
        XCTAssertTrue(silent[0].contains("no traffic") && silent[0].contains("NOT follow"))
        let unjudged = Scenarios.splitNotes([[500, 500], [500, 500], [1000, 0]], expected: [nil, nil, 1.0])
        XCTAssertTrue(unjudged[0].contains("(follows"))
    }

    func testLiveTargetFailsOnLoss() {
        var line = measurement(0.1, lost: 0)
        line.scenario = "live"
        line.label = "weight 3:1, remove rs2, established flows"
        let info = RunInfo(command: "", date: "", kernel: "", cpu: "", cpus: 2, generator: "", topology: "", cores: "",
                           durationSeconds: 1, warmupSeconds: 0.5, repetitions: 3)
        XCTAssertTrue(Report(info: info, results: [line]).targets().last!.contains(": met"))
        line.lost = 1
        XCTAssertTrue(Report(info: info, results: [line]).targets().last!.contains("NOT met"))
    }

    func testThreadCPUReadsStatAndSplitsUserAndSystem() throws {
        // A thread name with spaces and parentheses: the fields are counted after the last ")".
        let stat = "4242 (xd-q0 (x) y) S 1 4242 4242 0 -1 4194368 10 0 0 0 30 70 0 0 20 0 3 0 100 0 0"
        let (user, system) = try XCTUnwrap(ThreadCPU.ticks(stat))
        XCTAssertEqual(user, 30)
        XCTAssertEqual(system, 70)
        let start = ThreadCPU(nanoseconds: 1_000, userTicks: 10, systemTicks: 10, threads: 1)
        let end = ThreadCPU(nanoseconds: 1_001_000, userTicks: 40, systemTicks: 80, threads: 1)
        let cpu = try XCTUnwrap(end.perPacket(since: start, packets: 10_000))
        XCTAssertEqual(cpu.total, 100, accuracy: 1e-9)
        XCTAssertEqual(cpu.user, 30, accuracy: 1e-9)
        XCTAssertEqual(cpu.system, 70, accuracy: 1e-9)
        XCTAssertNil(end.perPacket(since: start, packets: 0))
        // This process's own threads are found by name (the test runner's main thread at least).
        let name = try String(contentsOfFile: "/proc/self/comm", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        let own = try XCTUnwrap(ThreadCPU.read(pid: getpid(), prefix: String(name.prefix(4))))
        XCTAssertGreaterThan(own.nanoseconds, 0)
        XCTAssertNil(ThreadCPU.read(pid: getpid(), prefix: "no-such-thread-name"))
    }
}
