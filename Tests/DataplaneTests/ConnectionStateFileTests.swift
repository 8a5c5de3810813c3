import Dataplane
import Foundation
import Logging
import Packet
import Scheduling
import XCTest
import XDirectorTestSupport

/// What a logger was told, for checking warnings.
private final class LogRecord: @unchecked Sendable {
    private let lock = NSLock()
    private var entries: [(Logger.Level, String)] = []
    func append(_ level: Logger.Level, _ message: String) { lock.withLock { entries.append((level, message)) } }
    var warnings: [String] { lock.withLock { entries.filter { $0.0 == .warning }.map(\.1) } }
}

private struct RecordingLogHandler: LogHandler {
    let record: LogRecord
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .trace
    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }
    func log(event: LogEvent) { record.append(event.level, event.message.description) }
}

/// The director's connection state in a file: the engine resumes it after the file and every engine were
/// let go (as after a restart), and files it cannot use are set aside.
final class ConnectionStateFileTests: XCTestCase {
    private let interfaceMAC = MACAddress("02:aa:00:00:00:01")!
    private let realA = MACAddress("0e:00:00:00:00:0a")!
    private let realB = MACAddress("0e:00:00:00:00:0b")!
    /// PacketBuilder's default source MAC: the client's (or its router's) side.
    private let clientMAC = MACAddress("02:00:00:00:00:01")!
    private var directory = ""
    private var path: String { directory + "/state/xdirector.state" }
    private let log = LogRecord()
    private var logger: Logger {
        let record = log
        return Logger(label: "test") { _ in RecordingLogHandler(record: record) }
    }

    override func setUpWithError() throws {
        var template = Array((FileManager.default.temporaryDirectory.path + "/xd-state-XXXXXX").utf8CString)
        directory = try XCTUnwrap(template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }.map { String(cString: $0) })
    }

    override func tearDownWithError() throws {
        try FileManager.default.removeItem(atPath: directory)
    }

    // MARK: Fixtures

    /// 256 workers leave each a slice of 251 FULLNAT ports: few enough to use them all in a test.
    private let layout = ConnectionStateFile.Layout(workers: 256, connectionsPerWorker: 300, replyEntriesPerWorker: 512,
                                                    templateDirectoryEntriesPerWorker: 64, counterCells: 64, localAddresses: 4)

    private struct Server {
        var service: ServiceKey
        var route: DestinationRoute
        var mac: MACAddress
    }

    private func vip(_ address: String) -> ServiceKey { ServiceKey(proto: .tcp, address: IPAddress(address)!, port: 80) }

    private var servers: [Server] {
        [Server(service: vip("203.0.113.10"), route: DestinationRoute(method: .directRouting, address: IPAddress("198.51.100.21")!, port: 80), mac: realA),
         Server(service: vip("203.0.113.10"), route: DestinationRoute(method: .directRouting, address: IPAddress("198.51.100.22")!, port: 80), mac: realB),
         Server(service: vip("203.0.113.20"), route: DestinationRoute(method: .masquerading, address: IPAddress("198.51.100.11")!, port: 8080), mac: realA),
         Server(service: vip("203.0.113.20"), route: DestinationRoute(method: .masquerading, address: IPAddress("198.51.100.12")!, port: 8080), mac: realB),
         Server(service: vip("203.0.113.30"), route: DestinationRoute(method: .fullNAT, address: IPAddress("198.51.100.13")!, port: 80), mac: realA)]
    }

    /// rr services over `servers`, each server with its cell in `cells` (by route), counted in the file's store.
    private func snapshot(_ file: ConnectionStateFile, cells: [IPAddress: UInt32],
                          local: [String] = ["198.51.100.3"]) -> ForwardingSnapshot {
        var services: [SnapshotService] = []
        for server in servers {
            let destination = SnapshotDestination(weight: 1, mac: server.mac, cell: cells[server.route.address], route: server.route)
            if let index = services.firstIndex(where: { $0.key == server.service }) {
                services[index].destinations.append(destination)
            } else {
                services.append(SnapshotService(
                    key: server.service, policy: ServicePolicy(scheduler: .rr, ipv6: false), destinations: [destination],
                    localAddresses: server.route.method == .fullNAT ? local.map { IPAddress($0)! } : []))
            }
        }
        return ForwardingSnapshot(interfaceMAC: interfaceMAC, services: services, counters: file.counters, mtu: 1500,
                                  sourceAddresses: [IPAddress("198.51.100.2")!])
    }

    private func run(_ engine: inout ForwardingEngine, _ builder: PacketBuilder, now: UInt32) -> (FrameVerdict, [UInt8]) {
        let input = builder.build()
        var buffer = [UInt8](repeating: 0, count: 4096)
        buffer.replaceSubrange(256..<256 + input.count, with: input)
        return buffer.withUnsafeMutableBytes { raw in
            let verdict = engine.process(raw.baseAddress! + 256, length: input.count, headroom: 256, now: now)
            guard case .transmit(let offset, let length) = verdict else { return (verdict, []) }
            let start = 256 + offset
            return (verdict, Array(raw[start..<start + length]))
        }
    }

    private func syn(_ port: UInt16, _ vip: String) -> PacketBuilder { .tcp("198.51.100.1", port, vip, 80, flags: TCPFlags.syn) }
    private func ack(_ port: UInt16, _ vip: String) -> PacketBuilder { .tcp("198.51.100.1", port, vip, 80, flags: TCPFlags.ack) }

    private func expected(_ builder: PacketBuilder, to destination: MACAddress) -> [UInt8] {
        var builder = builder
        builder.source = interfaceMAC
        builder.destination = destination
        builder.ipv4.ttl = 63
        return builder.build()
    }

    private static func macOf(_ frame: [UInt8]) -> MACAddress? { frame.count >= 6 ? MACAddress(bytes: frame[0..<6]) : nil }
    private static func destinationOf(_ frame: [UInt8]) -> IPAddress? { frame.count >= 34 ? IPAddress(bytes: frame[30..<34]) : nil }
    private static func sourcePortOf(_ frame: [UInt8]) -> UInt16 { UInt16(frame[34]) << 8 | UInt16(frame[35]) }

    /// A real server recorded but not configured (as a draining one would be): IPv6, GUE with a checksum.
    private let drainingServer = PersistedRealServer(
        service: ServiceKey(proto: .udp, address: IPAddress("2001:db8::10")!, port: 443),
        route: DestinationRoute(method: .tunnel, address: IPAddress("2001:db8::99")!, port: 4443,
                                tunnel: TunnelParameters(type: .gue, port: 6080, checksum: true)),
        weight: -1, upperThreshold: 1000, lowerThreshold: 800)

    /// The first life of the director: a fresh file, cells recorded, connections opened on worker 1.
    /// Returns what the second life must find.
    private func firstLife() throws -> (recorded: [UInt32: PersistedRealServer], counts: [UInt32: DestinationCounts], fullNATPort: UInt16) {
        let file = try ConnectionStateFile(path: path, layout: layout, logger: logger)
        XCTAssertFalse(file.restored)
        XCTAssertEqual(file.recordedRealServers(), [:])
        var cells: [IPAddress: UInt32] = [:]
        for server in servers {
            let cell = try XCTUnwrap(file.counters.allocate())
            cells[server.route.address] = cell
            file.record(cell: cell, PersistedRealServer(service: server.service, route: server.route, weight: 1))
        }
        let extra = try XCTUnwrap(file.counters.allocate())
        file.record(cell: extra, drainingServer)
        let released = try XCTUnwrap(file.counters.allocate())
        file.record(cell: released, drainingServer)
        file.counters.release(released)
        file.record(cell: released, nil)

        var engine = ForwardingEngine(snapshot: snapshot(file, cells: cells), connectionCapacity: layout.connectionsPerWorker,
                                      counters: WorkerCounterBlock(), state: file.partition(1))
        // rr: the first connection of each service goes to its first server, the second to the second.
        XCTAssertEqual(Self.macOf(run(&engine, syn(39999, "203.0.113.10"), now: 100).1), realA)
        XCTAssertEqual(Self.macOf(run(&engine, syn(40000, "203.0.113.10"), now: 100).1), realB)
        XCTAssertEqual(Self.destinationOf(run(&engine, syn(40001, "203.0.113.20"), now: 100).1), IPAddress("198.51.100.11"))
        XCTAssertEqual(Self.destinationOf(run(&engine, syn(40002, "203.0.113.20"), now: 100).1), IPAddress("198.51.100.12"))
        let (verdict, out) = run(&engine, syn(40003, "203.0.113.30"), now: 100)
        XCTAssertTrue(verdict.isTransmit)
        XCTAssertEqual(engine.connectionCount, 5)
        var counts: [UInt32: DestinationCounts] = [:]
        for cell in cells.values {
            counts[cell] = file.counters.counts(cell)
            XCTAssertEqual(counts[cell], DestinationCounts(inactive: 1), "each server holds one connection in SYN_RECV")
        }
        return (file.recordedRealServers(), counts, Self.sourcePortOf(out))
    }

    func testARestartedEngineResumesEveryConnectionFromTheFile() throws {
        let before = try firstLife()
        XCTAssertEqual(before.recorded.count, 6)

        let file = try ConnectionStateFile(path: path, layout: layout, logger: logger)
        XCTAssertTrue(file.restored)
        XCTAssertEqual(log.warnings, [])
        XCTAssertEqual(file.recordedRealServers(), before.recorded, "every recorded cell comes back, and only those")
        XCTAssertTrue(file.recordedRealServers().values.contains(drainingServer))
        for (cell, counts) in before.counts { XCTAssertEqual(file.counters.counts(cell), counts, "counts survive") }
        var cells: [IPAddress: UInt32] = [:]
        for (cell, server) in file.recordedRealServers() { cells[server.route.address] = cell }

        let snapshot = snapshot(file, cells: cells)
        var owner = ForwardingEngine(snapshot: snapshot, connectionCapacity: layout.connectionsPerWorker,
                                     counters: WorkerCounterBlock(), state: file.partition(1))
        var other = ForwardingEngine(snapshot: snapshot, connectionCapacity: layout.connectionsPerWorker,
                                     counters: WorkerCounterBlock(), state: file.partition(0))
        XCTAssertEqual(owner.connectionCount, 5)
        XCTAssertEqual(other.connectionCount, 0)

        // DR: the established packet goes to the connection's server (B), where a new schedule goes to A.
        XCTAssertEqual(Self.macOf(run(&owner, ack(40000, "203.0.113.10"), now: 110).1), realB)
        XCTAssertEqual(Self.macOf(run(&owner, ack(39999, "203.0.113.10"), now: 110).1), realA)
        XCTAssertEqual(Self.macOf(run(&owner, syn(40010, "203.0.113.10"), now: 110).1), realA, "a fresh rr starts at A")
        XCTAssertEqual(run(&owner, ack(40011, "203.0.113.10"), now: 110).0, .drop(.dropTCPWithoutConnection))
        // An ICMP error about it on another worker: the file's flow server index names its server.
        let reply = PacketBuilder.tcp("203.0.113.10", 80, "198.51.100.1", 40000, flags: TCPFlags.ack)
        let error = PacketBuilder.icmpError("192.0.2.254", "203.0.113.10", type: 3, code: 4, rest: 1400, quoting: reply,
                                            quoteLength: 28)
        XCTAssertEqual(run(&other, error, now: 110).1, expected(error, to: realB))

        // NAT: the client's packet reaches the same server; the server's reply, on another worker, is
        // translated through the reply index found in the file.
        XCTAssertEqual(Self.destinationOf(run(&owner, ack(40002, "203.0.113.20"), now: 110).1), IPAddress("198.51.100.12"))
        let natReply = run(&other, .tcp("198.51.100.12", 8080, "198.51.100.1", 40002, flags: TCPFlags.syn | TCPFlags.ack), now: 110)
        XCTAssertTrue(natReply.0.isTransmit)
        XCTAssertEqual(natReply.1, expected(.tcp("203.0.113.20", 80, "198.51.100.1", 40002, flags: TCPFlags.syn | TCPFlags.ack),
                                            to: clientMAC))

        // FULLNAT: the reply to the local port is translated back, the client keeps its port...
        let port = before.fullNATPort
        let fullNATReply = run(&other, .tcp("198.51.100.13", 80, "198.51.100.3", port, flags: TCPFlags.syn | TCPFlags.ack), now: 110)
        XCTAssertEqual(fullNATReply.1, expected(.tcp("203.0.113.30", 80, "198.51.100.1", 40003, flags: TCPFlags.syn | TCPFlags.ack),
                                                to: clientMAC))
        let (verdict, out) = run(&owner, ack(40003, "203.0.113.30"), now: 110)
        XCTAssertTrue(verdict.isTransmit)
        XCTAssertEqual(out, expected(.tcp("198.51.100.3", port, "198.51.100.13", 80, flags: TCPFlags.ack), to: realA))
        // ... and no new connection gets its port: the other 250 of the worker's 251 go, then none.
        // (Clients on distinct addresses: the flow hash spreads them over the table.)
        func client(_ n: Int) -> PacketBuilder { .tcp("10.1.\(n / 256).\(n % 256)", 40000, "203.0.113.30", 80, flags: TCPFlags.syn) }
        var ports = Set<UInt16>()
        for n in 0..<250 {
            let (verdict, out) = run(&owner, client(n), now: 110)
            XCTAssertTrue(verdict.isTransmit)
            if verdict.isTransmit { ports.insert(Self.sourcePortOf(out)) }
        }
        XCTAssertEqual(ports.count, 250)
        XCTAssertFalse(ports.contains(port), "the restored connection's port is not handed out again")
        XCTAssertEqual(run(&owner, client(250), now: 110).0, .drop(.dropLocalPortsExhausted))
    }

    func testAFULLNATConnectionKeepsItsLocalAddressWhenTheRestartedConfigurationOrdersThemOtherwise() throws {
        let before = try firstLife()
        let file = try ConnectionStateFile(path: path, layout: layout, logger: logger)
        var cells: [IPAddress: UInt32] = [:]
        for (cell, server) in file.recordedRealServers() { cells[server.route.address] = cell }
        // 198.51.100.3 was local address 0; now it is 1.
        var engine = ForwardingEngine(snapshot: snapshot(file, cells: cells, local: ["198.51.100.4", "198.51.100.3"]),
                                      connectionCapacity: layout.connectionsPerWorker, counters: WorkerCounterBlock(),
                                      state: file.partition(1))
        let (verdict, out) = run(&engine, ack(40003, "203.0.113.30"), now: 110)
        XCTAssertTrue(verdict.isTransmit)
        XCTAssertEqual(out, expected(.tcp("198.51.100.3", before.fullNATPort, "198.51.100.13", 80, flags: TCPFlags.ack), to: realA))
        // The next configuration drops 198.51.100.4: the connection follows its address to index 0 again,
        // and a restart after that finds the indices it recorded.
        engine.adopt(snapshot(file, cells: cells, local: ["198.51.100.3"]))
        XCTAssertEqual(run(&engine, ack(40003, "203.0.113.30"), now: 111).1,
                       expected(.tcp("198.51.100.3", before.fullNATPort, "198.51.100.13", 80, flags: TCPFlags.ack), to: realA))
        _ = consume engine
        var again = ForwardingEngine(snapshot: snapshot(file, cells: cells, local: ["198.51.100.3"]),
                                     connectionCapacity: layout.connectionsPerWorker, counters: WorkerCounterBlock(),
                                     state: file.partition(1))
        XCTAssertEqual(run(&again, ack(40003, "203.0.113.30"), now: 112).1,
                       expected(.tcp("198.51.100.3", before.fullNATPort, "198.51.100.13", 80, flags: TCPFlags.ack), to: realA))
    }

    func testAReplyEntryLeftHalfWrittenByADeadWriterIsRetiredOnRestore() throws {
        let layout = ConnectionStateFile.Layout(workers: 2, connectionsPerWorker: 64, counterCells: 16, localAddresses: 2)
        do {
            let file = try ConnectionStateFile(path: path, layout: layout, logger: logger)
            var cells: [IPAddress: UInt32] = [:]
            for server in servers { cells[server.route.address] = file.counters.allocate() }
            var engine = ForwardingEngine(snapshot: snapshot(file, cells: cells), connectionCapacity: 64,
                                          counters: WorkerCounterBlock(), state: file.partition(0))
            XCTAssertTrue(run(&engine, syn(40001, "203.0.113.20"), now: 100).0.isTransmit)
        }
        // The reply index follows the header, the real-server table and the cells, each on a 4096-byte
        // boundary; its one entry in use has sequence 2. Make it odd, as a writer that died mid-write leaves it.
        let replies = 3 * 4096
        let handle = try XCTUnwrap(FileHandle(forUpdatingAtPath: path))
        try handle.seek(toOffset: UInt64(replies))
        let region = try XCTUnwrap(handle.read(upToCount: 2 * 64 * 128))
        let used = (0..<128).filter { region[region.startIndex + $0 * 128] != 0 }
        XCTAssertEqual(used.count, 1)
        let entry = try replies + XCTUnwrap(used.first) * 128
        XCTAssertEqual(region[region.startIndex + entry - replies], 2)
        try handle.seek(toOffset: UInt64(entry))
        try handle.write(contentsOf: Data([3]))
        try handle.close()

        let file = try ConnectionStateFile(path: path, layout: layout, logger: logger)
        XCTAssertTrue(file.restored)
        var cells: [IPAddress: UInt32] = [:]
        for server in servers { cells[server.route.address] = file.counters.allocate() }
        var other = ForwardingEngine(snapshot: snapshot(file, cells: cells), connectionCapacity: 64,
                                     counters: WorkerCounterBlock(), state: file.partition(1))
        XCTAssertEqual(run(&other, .tcp("198.51.100.11", 8080, "198.51.100.1", 40001, flags: TCPFlags.ack), now: 110).0,
                       .drop(.dropNoReplyState), "the torn entry was retired, not read")
        let after = try XCTUnwrap(FileHandle(forReadingAtPath: path))
        try after.seek(toOffset: UInt64(entry))
        XCTAssertEqual(try after.read(upToCount: 1), Data([4]), "its sequence is even again: writers can reuse it")
        try after.close()
    }

    func testRecordedCellsAreNotHandedOutAgainAndReleasedOnesAre() throws {
        let before = try firstLife()
        let file = try ConnectionStateFile(path: path, layout: layout, logger: logger)
        XCTAssertEqual(file.counters.available, layout.counterCells - before.recorded.count)
        var handed = Set<UInt32>()
        while let cell = file.counters.allocate() { handed.insert(cell) }
        XCTAssertEqual(handed.count, layout.counterCells - before.recorded.count)
        XCTAssertTrue(handed.isDisjoint(with: before.recorded.keys))
        let drained = try XCTUnwrap(before.recorded.first { $0.value == drainingServer }?.key)
        file.counters.release(drained)
        file.record(cell: drained, nil)
        XCTAssertEqual(file.counters.allocate(), drained)
    }

    // MARK: Files that cannot be resumed

    private var setAside: [String] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory + "/state")) ?? []
        return names.filter { $0.hasPrefix("xdirector.state.unknown-") }
    }

    /// Makes a file with a recorded server and a connection, then lets it go.
    private func makeUsedFile(_ layout: ConnectionStateFile.Layout) throws {
        let file = try ConnectionStateFile(path: path, layout: layout, logger: logger)
        let cell = try XCTUnwrap(file.counters.allocate())
        file.record(cell: cell, drainingServer)
    }

    /// Opens the file again: it must have been set aside with a warning naming `reason`, and replaced by an empty one.
    private func assertSetAside(_ layout: ConnectionStateFile.Layout, because reason: String,
                                file: StaticString = #filePath, line: UInt = #line) throws {
        do {
            let state = try ConnectionStateFile(path: path, layout: layout, logger: logger)
            XCTAssertFalse(state.restored, file: file, line: line)
            XCTAssertEqual(state.recordedRealServers(), [:], file: file, line: line)
            XCTAssertEqual(state.counters.available, layout.counterCells, file: file, line: line)
            XCTAssertEqual(setAside.count, 1, "the old file is kept aside", file: file, line: line)
            XCTAssertEqual(log.warnings.count, 1, file: file, line: line)
            let warning = log.warnings.first ?? ""
            XCTAssertTrue(warning.contains(reason), "\(warning)", file: file, line: line)
            XCTAssertTrue(warning.contains(setAside.first ?? "?"), "\(warning)", file: file, line: line)
        }
        // The new file is whole: it is resumed next time, without a warning.
        let again = try ConnectionStateFile(path: path, layout: layout, logger: logger)
        XCTAssertTrue(again.restored, file: file, line: line)
        XCTAssertEqual(log.warnings.count, 1, file: file, line: line)
        XCTAssertEqual(setAside.count, 1, file: file, line: line)
    }

    private let small = ConnectionStateFile.Layout(workers: 2, connectionsPerWorker: 64, counterCells: 16, localAddresses: 2)

    private func overwrite(at offset: Int, _ bytes: [UInt8]) throws {
        let handle = try XCTUnwrap(FileHandle(forUpdatingAtPath: path))
        try handle.seek(toOffset: UInt64(offset))
        try handle.write(contentsOf: Data(bytes))
        try handle.close()
    }

    func testAFileOfAnotherLayoutVersionIsSetAside() throws {
        try makeUsedFile(small)
        let version = ConnectionStateFile.layoutVersion + 1
        try overwrite(at: 8, withUnsafeBytes(of: version.bigEndian) { Array($0) })
        try assertSetAside(small, because: "layout version \(version)")
    }

    func testATruncatedFileIsSetAside() throws {
        try makeUsedFile(small)
        let size = try XCTUnwrap(FileManager.default.attributesOfItem(atPath: path)[.size] as? Int)
        XCTAssertEqual(truncate(path, off_t(size / 2)), 0)
        try assertSetAside(small, because: "truncated")
    }

    func testAFileShorterThanItsHeaderIsSetAside() throws {
        try makeUsedFile(small)
        XCTAssertEqual(truncate(path, 100), 0)
        try assertSetAside(small, because: "truncated")
    }

    func testGarbageIsSetAside() throws {
        try FileManager.default.createDirectory(atPath: directory + "/state", withIntermediateDirectories: true)
        var generator = SeededGenerator(seed: 7)
        let garbage = (0..<20000).map { _ in UInt8.random(in: 0...255, using: &generator) }
        XCTAssertTrue(FileManager.default.createFile(atPath: path, contents: Data(garbage)))
        try assertSetAside(small, because: "not a connection state file")
    }

    func testACorruptHeaderIsSetAside() throws {
        try makeUsedFile(small)
        try overwrite(at: 200, [0xFF])
        try assertSetAside(small, because: "checksum")
    }

    func testAFileOfAnotherLayoutIsSetAside() throws {
        try makeUsedFile(small)
        var other = small
        other.workers = 3
        try assertSetAside(other, because: "another layout")
    }

    func testAFileInUseCannotBeMappedTwice() throws {
        let file = try ConnectionStateFile(path: path, layout: small, logger: logger)
        XCTAssertThrowsError(try ConnectionStateFile(path: path, layout: small, logger: logger)) { error in
            XCTAssertTrue("\(error)".contains("in use"), "\(error)")
        }
        XCTAssertEqual(setAside, [])
        withExtendedLifetime(file) {}
    }

    func testTheDirectoryAndFileArePrivate() throws {
        let file = try ConnectionStateFile(path: path, layout: small, logger: logger)
        let attributes = try FileManager.default.attributesOfItem(atPath: path)
        XCTAssertEqual((attributes[.posixPermissions] as? Int).map { $0 & 0o077 }, 0)
        let directoryAttributes = try FileManager.default.attributesOfItem(atPath: directory + "/state")
        XCTAssertEqual(directoryAttributes[.posixPermissions] as? Int, 0o700)
        file.remove()
        XCTAssertFalse(FileManager.default.fileExists(atPath: path))
    }
}
