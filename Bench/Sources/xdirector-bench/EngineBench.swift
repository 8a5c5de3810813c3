import ArgumentParser
import Dataplane
import Foundation
import Packet
import Scheduling
import XDirectorEngineBaseline

/// The forwarding method the engine benchmark's real servers use.
enum EngineMethod: String, ExpressibleByArgument, CaseIterable {
    case dr, tun, nat, fullnat
}

/// The engine benchmark's workload: one TCP service (10.0.0.100:80, wrr over 8 real servers of weight 1,
/// which picks them in the order the C baseline's round robin does), `flows` clients, 64-byte frames (60 bytes without the FCS). Flow `i` comes from 10.128.0.0 + i / 50 000,
/// port 10 000 + i % 50 000; the kernel's side writes each frame into its chunk just before the worker's
/// turn, as copy mode does, so the worker finds it in cache like a just-received frame, and in front of it
/// the XDP program's description (`FrameMetadata`, as the program writes it for a frame to a service) unless
/// `described` is false.
struct EngineWorkload {
    static let frameLength = 60
    static let vip: UInt32 = 0x0A00_0064
    static let interfaceMAC = MACAddress("02:aa:00:00:00:01")!
    static let clientMAC = MACAddress("02:00:00:00:00:01")!
    static let servers = 8

    let method: EngineMethod
    /// Frames come with the XDP program's description, as the director's program writes it.
    let described: Bool
    /// The frame with source 0.0.0.0:0, and the sums its checksums start from.
    private var template = [UInt8](repeating: 0, count: EngineWorkload.frameLength)
    private let ipSum: UInt32
    private let tcpSum: UInt32

    /// Connections the benchmark puts on one FULLNAT local address (see `snapshot`).
    static let fullNATPortsPerAddress = (65536 - LocalPortAllocator.lowestPort) * 7 / 8

    static func serverMAC(_ index: Int) -> MACAddress { MACAddress(value: 0x0E00_0000_0000 | UInt64(index + 1)) }

    init(method: EngineMethod, described: Bool = true) {
        self.method = method
        self.described = described
        var frame = [UInt8](repeating: 0, count: Self.frameLength)
        func put16(_ offset: Int, _ value: UInt16) { frame[offset] = UInt8(value >> 8); frame[offset + 1] = UInt8(value & 0xFF) }
        func put32(_ offset: Int, _ value: UInt32) { put16(offset, UInt16(value >> 16)); put16(offset + 2, UInt16(value & 0xFFFF)) }
        for i in 0..<6 {
            frame[i] = UInt8(Self.interfaceMAC.value >> (40 - 8 * UInt64(i)) & 0xFF)
            frame[6 + i] = UInt8(Self.clientMAC.value >> (40 - 8 * UInt64(i)) & 0xFF)
        }
        put16(12, 0x0800)
        frame[14] = 0x45
        put16(16, 40)          // total length: IP + TCP, no payload (the rest is Ethernet padding)
        put16(18, 0x1234)
        put16(20, 0x4000)      // DF
        frame[22] = 64
        frame[23] = IPProtocolNumber.tcp
        put32(30, Self.vip)
        put16(36, 80)
        put32(38, 1)           // sequence
        frame[46] = 0x50       // data offset 5
        put16(48, 65535)       // window
        template = frame
        ipSum = frame.withUnsafeBytes { InternetChecksum.sum($0.baseAddress! + 14, count: 20) }
        // Pseudo header (source 0, destination VIP, protocol, TCP length 20) and the header without flags.
        let pseudo = (Self.vip >> 16) + (Self.vip & 0xFFFF) + UInt32(IPProtocolNumber.tcp) + 20
        tcpSum = frame.withUnsafeBytes { InternetChecksum.sum($0.baseAddress! + 34, count: 20, initial: pseudo) }
    }

    static func source(ofFlow flow: Int) -> (address: UInt32, port: UInt16) {
        (0x0A80_0000 &+ UInt32(truncatingIfNeeded: flow / 50_000), UInt16(10_000 + flow % 50_000))
    }

    /// Writes flow `flow`'s frame with TCP `flags` at `frame`; returns its length.
    @inline(__always)
    func write(_ frame: UnsafeMutableRawPointer, flow: Int, flags: UInt8) -> Int {
        template.withUnsafeBytes { frame.copyMemory(from: $0.baseAddress!, byteCount: Self.frameLength) }
        let (address, port) = Self.source(ofFlow: flow)
        let high = UInt32(address >> 16), low = address & 0xFFFF
        frame.storeBytes(of: address.bigEndian, toByteOffset: 26, as: UInt32.self)
        frame.storeBytes(of: port.bigEndian, toByteOffset: 34, as: UInt16.self)
        frame.storeBytes(of: flags, toByteOffset: 47, as: UInt8.self)
        let ipChecksum = InternetChecksum.finish(ipSum &+ high &+ low)
        let tcpChecksum = InternetChecksum.finish(tcpSum &+ high &+ low &+ UInt32(port) &+ UInt32(flags))
        frame.storeBytes(of: ipChecksum.bigEndian, toByteOffset: 24, as: UInt16.self)
        frame.storeBytes(of: tcpChecksum.bigEndian, toByteOffset: 50, as: UInt16.self)
        // The one service is the snapshot's (and the program's map's) index 0.
        if described { _ = FrameMetadata.describe(frame, length: Self.frameLength, service: 0) }
        return Self.frameLength
    }

    /// The director's configuration for the method: counter cells and a traffic store as the director has.
    /// FULLNAT gets local addresses enough for `connections`: a single worker's allocator has every port from
    /// `LocalPortAllocator.lowestPort` up on each, of which it is given an eighth to spare (it probes a few
    /// hundred ports per allocation, so a nearly full address fails first).
    func snapshot(counters: DestinationCounterStore, traffic: DestinationTrafficStore,
                  connections: Int) -> ForwardingSnapshot {
        var destinations: [SnapshotDestination] = []
        for index in 0..<Self.servers {
            let address = IPAddress.v4(0x0A01_0001 &+ UInt32(index))
            let route: DestinationRoute
            switch method {
            case .dr: route = .directRouting
            case .tun: route = DestinationRoute(method: .tunnel, address: address, port: 80)
            case .nat: route = DestinationRoute(method: .masquerading, address: address, port: 8080)
            case .fullnat: route = DestinationRoute(method: .fullNAT, address: address, port: 8080)
            }
            destinations.append(SnapshotDestination(weight: 1, mac: Self.serverMAC(index),
                                                    cell: counters.allocate(), route: route))
        }
        let translated = method == .nat || method == .fullnat
        let service = SnapshotService(
            key: ServiceKey(proto: .tcp, address: .v4(Self.vip), port: 80),
            policy: ServicePolicy(scheduler: .wrr, seesReplies: translated), destinations: destinations,
            localAddresses: method == .fullnat
                ? (0..<max(2, connections / Self.fullNATPortsPerAddress + 1)).map { .v4(0x0A02_0001 &+ UInt32($0)) }
                : [])
        return ForwardingSnapshot(interfaceMAC: Self.interfaceMAC, services: [service], counters: counters,
                                  mtu: 1500, sourceAddresses: [.v4(0x0A00_0001)], traffic: traffic)
    }
}

/// Where the benchmark is in its flows, and the clock the connection tables see.
///
/// New connections model a healthy director's steady state, not a flood: the clock moves a second every
/// `packetsPerSecond` packets, so about a quarter of the capacity is live (SYN_RECV, 60 s), and each turn
/// sweeps enough to cover the table once per 60 s (`sweepPerBatch`). That is what keeping a quarter of the
/// table live takes whatever the clock: about 8 slots per new connection (twice as many slots as the
/// capacity, a quarter of which turns over per timeout). It is part of a new connection's cost, timed with
/// the turn and also reported apart. Without it the bench's compressed clock (hundreds of packets a second)
/// leaves the worker's own per-batch sweep thousands of seconds per round, the table fills with expired
/// entries and every new connection takes the full-table path (stable choice, evictable entries).
struct EngineFeed {
    let flows: Int
    let newConnections: Bool
    var next = 0
    var now: UInt32 = 1000
    let packetsPerSecond: Int
    var sinceTick = 0

    /// The SYN_RECV timeout the bench's connections live (`ConnectionTimeouts` default).
    static let halfOpenSeconds = 60

    init(flows: Int, newConnections: Bool, capacity: Int) {
        self.flows = flows
        self.newConnections = newConnections
        packetsPerSecond = Self.packetsPerSecond(capacity: capacity)
    }

    /// A quarter of `capacity` arrives per SYN_RECV timeout.
    static func packetsPerSecond(capacity: Int) -> Int { max(1, capacity / (4 * halfOpenSeconds)) }

    /// Slots a turn sweeps beyond the worker's own for new connections (a round of the table per SYN_RECV
    /// timeout); `fullTable`: none, so the table fills with expired entries and stays full (the full-table
    /// path, as under a SYN flood).
    static func sweepPerBatch(capacity: Int, fullTable: Bool) -> Int {
        guard !fullTable else { return 0 }
        let batchesPerRound = max(1, halfOpenSeconds * packetsPerSecond(capacity: capacity) / Int(Worker.batchSize))
        return ConnectionTable.slotCount(capacity: capacity) / batchesPerRound + 1
    }

    /// Delivers one batch of the worker's size on `rings`, SYNs for new connections, else ACKs of the flows
    /// in turn; returns how many.
    @inline(__always)
    mutating func deliver(_ rings: MemoryRings, _ workload: EngineWorkload, flags: UInt8? = nil) -> Int {
        let first = next
        let flows = self.flows
        let syn = newConnections
        let received = rings.receive(count: Int(Worker.batchSize)) { frame, index in
            let flow = syn ? first &+ index : (first &+ index) % flows
            return workload.write(frame, flow: flow, flags: flags ?? (syn ? TCPFlags.syn : TCPFlags.ack))
        }
        next = newConnections ? next &+ received : (next + received) % flows
        if newConnections {
            sinceTick += received
            if sinceTick >= packetsPerSecond { sinceTick = 0; now &+= 1 }
        }
        return received
    }
}

/// TCP flag bytes the workload sends.
enum TCPFlags {
    static let syn: UInt8 = 0x02
    static let ack: UInt8 = 0x10
}

/// What one side measured.
struct EngineMeasurement {
    var packets = 0
    var transmitted = 0
    var nanoseconds: UInt64 = 0
    /// The most connections the table held after a timed turn (nil: the side does not say).
    var mostHeld: Int?
    var nsPerPacket: Double { packets == 0 ? 0 : Double(nanoseconds) / Double(packets) }
    var mpps: Double { nanoseconds == 0 ? 0 : Double(packets) * 1000 / Double(nanoseconds) }
}

/// The Swift side: the worker's engine over rings in memory, one `RingLoop.turn` per batch.
final class SwiftEngineSide {
    let rings = MemoryRings()
    let counters = WorkerCounterBlock()
    let counterStore = DestinationCounterStore()
    let traffic = DestinationTrafficStore(workers: 1, capacity: 64)
    // The worker keeps both in locals of its thread's loop, which the compiler checks statically; as
    // properties of this (single-threaded) class they would cost a dynamic exclusivity check each per turn,
    // which the worker does not pay.
    @exclusivity(unchecked) var engine: ForwardingEngine
    @exclusivity(unchecked) var loop: RingLoop

    init(workload: EngineWorkload, capacity: Int) {
        let snapshot = workload.snapshot(counters: counterStore, traffic: traffic, connections: capacity)
        engine = ForwardingEngine(snapshot: snapshot, connectionCapacity: capacity, counters: counters)
        loop = RingLoop(rings: rings.rings, counters: counters)
    }

    deinit { loop.drainTransmissions() }

    /// Slots each turn sweeps beyond the worker's own (`EngineFeed.sweepPerBatch(capacity:fullTable:)`), and
    /// the time they took.
    var reclaim = 0
    private(set) var reclaimNanoseconds: UInt64 = 0

    /// The worker's turn and the sweeping `reclaim` asks for, alone in a function so callgrind can count
    /// just it (`--toggle-collect=*engineTurn*`).
    @inline(never)
    func engineTurn(now: UInt32) -> UInt32 {
        let received = loop.turn(engine: &engine, now: now)
        if reclaim > 0 {
            let start = monotonicNanoseconds()
            engine.sweep(now: now, limit: reclaim)
            reclaimNanoseconds &+= monotonicNanoseconds() &- start
        }
        return received
    }

    /// The connections the table holds.
    func held() -> Int { engine.connectionCount }
}

/// The C side: the baseline's batch loop over rings in memory.
final class BaselineSide {
    let rings = MemoryRings()
    let baseline: OpaquePointer

    init(capacity: Int) {
        let interfaceMAC = EngineWorkload.interfaceMAC.bytes
        baseline = interfaceMAC.withUnsafeBufferPointer { xdb_baseline_create(UInt32(capacity), $0.baseAddress!) }
        var address = [UInt8](repeating: 0, count: 16)
        withUnsafeBytes(of: EngineWorkload.vip.bigEndian) { for i in 0..<4 { address[i] = $0[i] } }
        let macs = (0..<EngineWorkload.servers).flatMap { EngineWorkload.serverMAC($0).bytes }
        _ = xdb_baseline_add_service(baseline, 4, address, 80, IPProtocolNumber.tcp, UInt32(EngineWorkload.servers), macs)
    }

    deinit { xdb_baseline_destroy(baseline) }

    /// The baseline's turn, alone in a function so callgrind can count just it (`--toggle-collect=*baselineTurn*`).
    /// It reclaims expired slots as it probes, so it needs no sweeping.
    @inline(never)
    func baselineTurn(now: UInt32) -> UInt32 {
        let r = rings.rings
        return xdb_baseline_batch(baseline, r.fill, r.completion, r.rx, r.tx, r.area, r.frameSize, now)
    }
}

/// Runs one side: opens the flows (established runs), then times `packets` packets, batch by batch.
enum EngineRun {
    /// `held`: the connections the side's table holds (nil: a side that does not say), read between turns.
    static func run(workload: EngineWorkload, flows: Int, packets: Int, newConnections: Bool, capacity: Int,
                    turn: (UInt32) -> UInt32, rings: MemoryRings,
                    check: ((UnsafeMutableRawPointer, Int) -> Void)? = nil, held: (() -> Int)? = nil)
        -> EngineMeasurement {
        var feed = EngineFeed(flows: flows, newConnections: newConnections, capacity: capacity)
        var measurement = EngineMeasurement()
        if !newConnections {
            // Untimed: a SYN then an ACK per flow, so every connection is established.
            for flags in [TCPFlags.syn, TCPFlags.ack] {
                var opened = 0
                while opened < flows {
                    let batch = min(Int(Worker.batchSize), flows - opened)
                    feed.next = opened
                    _ = rings.receive(count: batch) { frame, index in workload.write(frame, flow: opened + index, flags: flags) }
                    _ = turn(feed.now)
                    rings.transmit()
                    opened += batch
                }
            }
            feed.next = 0
        }
        while measurement.packets < packets {
            _ = feed.deliver(rings, workload)
            let start = monotonicNanoseconds()
            let received = turn(feed.now)
            measurement.nanoseconds &+= monotonicNanoseconds() &- start
            measurement.packets += Int(received)
            if let check {
                measurement.transmitted += rings.transmit(check)
            } else {
                measurement.transmitted += rings.transmit()
            }
            if let held { measurement.mostHeld = max(measurement.mostHeld ?? 0, held()) }
        }
        return measurement
    }
}

struct EngineCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "xdirector-bench engine",
        abstract: "Measures the worker's per-packet work on frames in memory (no sockets, no root), against a C baseline.",
        discussion: """
            The worker's engine, snapshot and tables, fed in batches of the worker's size through RingLoop.turn (the \
            code the worker runs per turn) over rings in plain memory; the C baseline (Bench/reference/baseline) does \
            the same work for DR over the same rings. Timed per turn; ns/packet and Mpps per side.

            --new-connections: every packet a SYN, in a healthy director's steady state: about a quarter of the \
            table live, each turn sweeping enough for a round of the table per SYN_RECV timeout (timed with it, and \
            printed apart), so the table \
            stays below the three quarters where the flood defences begin (the line "table:" says how full it \
            got). --full-table instead keeps the table full of expired entries: a SYN flood's path.

            Instructions per packet, repeatable: --callgrind runs each side under valgrind --tool=callgrind twice, \
            collecting only inside the turn (--toggle-collect=*engineTurn* or *baselineTurn*), with --packets and \
            2 x --packets, and divides the difference by --packets, which cancels the set-up (flows opened, first \
            touches). With --cache-sim it also counts last-level cache misses per packet, simulating a last-level \
            cache of --last-level-mib (32) rather than the host's.
            """
    )

    @Option(help: "Forwarding method of the real servers (the C baseline always does DR).")
    var method = EngineMethod.dr

    @Option(help: "Established flows, sent round robin.")
    var flows = 1024

    @Option(help: "Packets timed per side.")
    var packets = 2_000_000

    @Flag(help: "Every packet a SYN of a new connection.")
    var newConnections = false

    @Flag(help: "With --new-connections: into a table kept full of expired entries (no sweeping between turns), the full-table path a SYN flood takes.")
    var fullTable = false

    @Option(help: "Connection table capacity (default: the larger of --flows and 65536).")
    var capacity: Int?

    @Flag(help: "Frames without the XDP program's description (metadata): the worker parses each and looks its service up, as for a driver without XDP metadata.")
    var withoutMetadata = false

    @Option(help: "swift, c, or both.")
    var only = "both"

    @Flag(help: "Also count instructions per packet under callgrind (slow: valgrind runs the bench four times).")
    var callgrind = false

    @Flag(help: "With --callgrind: simulate the caches and report last-level misses per packet.")
    var cacheSim = false

    // callgrind simulates the host's last-level cache unless told otherwise; some hosts report hundreds of
    // megabytes (every CCX's L3 summed), which holds a million connections and hides every miss.
    @Option(help: "With --cache-sim: the simulated last-level cache in MiB (16-way, 64-byte lines), as one socket's L3 share.")
    var lastLevelMiB = 32

    func validate() throws {
        guard flows >= 1, packets >= Int(Worker.batchSize) else { throw ValidationError("--flows ≥ 1, --packets ≥ 64") }
        guard ["swift", "c", "both"].contains(only) else { throw ValidationError("--only is swift, c or both") }
    }

    var tableCapacity: Int { capacity ?? max(flows, 65536) }

    func run() throws {
        let workload = EngineWorkload(method: method, described: !withoutMetadata)
        let scenario = newConnections ? "new connection per packet" + (fullTable ? " into a full table" : "")
            : "\(flows) established flows"
        print("engine: \(method.rawValue), \(scenario), \(packets) packets, 64 B, capacity \(tableCapacity)")
        var swift: EngineMeasurement?
        var c: EngineMeasurement?
        if only != "c" {
            let side = SwiftEngineSide(workload: workload, capacity: tableCapacity)
            side.reclaim = newConnections ? EngineFeed.sweepPerBatch(capacity: tableCapacity, fullTable: fullTable) : 0
            let measured = EngineRun.run(workload: workload, flows: flows, packets: packets, newConnections: newConnections,
                                         capacity: tableCapacity, turn: side.engineTurn,
                                         rings: side.rings, held: side.held)
            swift = measured
            print(Self.line("XDirector engine", measured))
            if newConnections, let held = measured.mostHeld {
                print(String(format: "  table: at most %d connections held (%.0f%% of the capacity; the flood defences start at 75%%)",
                             held, 100 * Double(held) / Double(tableCapacity)))
                if side.reclaim > 0 {
                    print(String(format: "  of which sweeping %d slots a turn (a round of the table per SYN_RECV timeout): %.1f ns/packet",
                                 side.reclaim, Double(side.reclaimNanoseconds) / Double(measured.packets)))
                }
            } else if let held = measured.mostHeld {
                // How full the slots are decides how far flows sit from their home slot, hence what a lookup
                // reads: the same flows in a table of larger --capacity run faster.
                let slots = ConnectionTable.slotCount(capacity: tableCapacity)
                print(String(format: "  table: %d connections in %d slots (%.0f%% of the slots, %.0f%% of the capacity)",
                             held, slots, 100 * Double(held) / Double(slots), 100 * Double(held) / Double(tableCapacity)))
            }
        }
        if only != "swift" {
            let side = BaselineSide(capacity: tableCapacity)
            let measured = EngineRun.run(workload: workload, flows: flows, packets: packets, newConnections: newConnections,
                                         capacity: tableCapacity, turn: side.baselineTurn,
                                         rings: side.rings)
            c = measured
            print(Self.line("C baseline (DR)", measured))
        }
        if let swift, let c, c.nsPerPacket > 0 {
            print(String(format: "ratio ns/packet: %.2fx the C baseline", swift.nsPerPacket / c.nsPerPacket))
        }
        if callgrind {
            var counts: [String: (Double, Double?)] = [:]
            for side in only == "both" ? ["swift", "c"] : [only] {
                counts[side] = try countInstructions(side: side)
                let (instructions, misses) = counts[side]!
                let label = side == "swift" ? "XDirector engine" : "C baseline (DR)"
                print(String(format: "%@: %.0f instructions/packet", label, instructions)
                      + (misses.map { String(format: ", %.2f last-level cache misses/packet", $0) } ?? ""))
            }
            if let s = counts["swift"]?.0, let b = counts["c"]?.0, b > 0 {
                print(String(format: "ratio instructions/packet: %.2fx the C baseline", s / b))
            }
        }
    }

    static func line(_ name: String, _ m: EngineMeasurement) -> String {
        String(format: "%@: %.1f ns/packet, %.2f Mpps, %d of %d transmitted", name, m.nsPerPacket, m.mpps, m.transmitted, m.packets)
    }

    /// Instructions (and last-level misses) per packet of one side: two callgrind runs, the difference.
    /// Valgrind cannot read the DWARF of Swift's release binaries, so it runs a copy without debug
    /// information (`objcopy --strip-debug`): the symbols `--toggle-collect` names stay.
    func countInstructions(side: String) throws -> (Double, Double?) {
        let own = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        let stripped = NSTemporaryDirectory() + "xdirector-bench-\(getpid())-nodebug"
        defer { try? FileManager.default.removeItem(atPath: stripped) }
        guard Self.execute("/usr/bin/objcopy", ["--strip-debug", own, stripped]).status == 0 else {
            throw ValidationError("objcopy --strip-debug failed (binutils is needed for --callgrind)")
        }
        var results: [(packets: Double, instructions: Double, misses: Double)] = []
        for count in [packets, 2 * packets] {
            let output = NSTemporaryDirectory() + "xdirector-engine-\(getpid())-\(side)-\(count).callgrind"
            defer { try? FileManager.default.removeItem(atPath: output) }
            var arguments = ["--tool=callgrind", "--callgrind-out-file=\(output)",
                             "--toggle-collect=*\(side == "swift" ? "engineTurn" : "baselineTurn")*"]
            if cacheSim { arguments += ["--cache-sim=yes", "--LL=\(lastLevelMiB << 20),16,64"] }
            arguments += [stripped, "engine", "--method", method.rawValue, "--flows", String(flows), "--packets", String(count),
                          "--capacity", String(tableCapacity), "--only", side]
            if newConnections { arguments.append("--new-connections") }
            if withoutMetadata { arguments.append("--without-metadata") }
            if fullTable { arguments.append("--full-table") }
            let run = Self.execute("/usr/bin/valgrind", arguments)
            // "...: N ns/packet, M Mpps, T of P transmitted": P is the packets the run timed.
            guard run.status == 0, let line = run.output.split(separator: "\n").first(where: { $0.hasSuffix("transmitted") }),
                  let timed = line.split(separator: " ").dropLast().last.flatMap({ Double($0) }),
                  let text = try? String(contentsOfFile: output, encoding: .utf8)
            else { throw ValidationError("valgrind --tool=callgrind failed: \(run.output.suffix(500))") }
            let (instructions, misses) = Self.summary(text)
            results.append((timed, instructions, misses))
        }
        let packetDifference = results[1].packets - results[0].packets
        let instructions = (results[1].instructions - results[0].instructions) / packetDifference
        let misses = cacheSim ? (results[1].misses - results[0].misses) / packetDifference : nil
        return (instructions, misses)
    }

    static func execute(_ path: String, _ arguments: [String]) -> (status: Int32, output: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: path)
        process.arguments = arguments
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = FileHandle.nullDevice
        do { try process.run() } catch { return (-1, "\(error)") }
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: data, as: UTF8.self))
    }

    /// Ir and last-level misses (DLmr + DLmw + ILmr) from a callgrind output's summary.
    static func summary(_ text: String) -> (Double, Double) {
        var events: [String] = []
        var values: [Double] = []
        for line in text.split(separator: "\n") {
            if line.hasPrefix("events:") { events = line.dropFirst(7).split(separator: " ").map(String.init) }
            if line.hasPrefix("summary:") || line.hasPrefix("totals:") {
                values = line.split(separator: ":")[1].split(separator: " ").compactMap { Double($0) }
            }
        }
        func value(_ name: String) -> Double { events.firstIndex(of: name).flatMap { $0 < values.count ? values[$0] : nil } ?? 0 }
        return (value("Ir"), value("DLmr") + value("DLmw") + value("ILmr"))
    }
}
