import Dataplane
import Packet
import Scheduling
import XCTest
import XDirectorTestSupport

/// ICMP errors about a connection that arrive on another queue than the connection's (a router on the
/// client's path sends them from its own address, so the NIC hashes them elsewhere): the worker there finds
/// the connection's real server in the shared `FlowServerIndex`. Two engines share the director's tables;
/// the connection is made on A, the error arrives on B.
final class ICMPErrorSharingTests: XCTestCase {
    private let interfaceMAC = MACAddress("02:aa:00:00:00:01")!
    /// Each server its own MAC, so an error sent to the wrong server shows in the bytes.
    private func realMAC(_ index: Int) -> MACAddress { MACAddress("0e:00:00:00:00:1\(index)")! }
    private let otherMAC = MACAddress("0e:00:00:00:00:0b")!
    private let director = IPAddress("198.51.100.2")!
    private let router = "192.0.2.254"
    private let counterStore = DestinationCounterStore(capacity: 64)
    /// DR, TUN, NAT, FULLNAT, DR over IPv6 (UDP).
    private lazy var cells = (0..<5).map { _ in counterStore.allocate()! }

    private func server(_ index: Int, _ method: ForwardingMethod, _ address: String, _ port: UInt16,
                        mac: MACAddress? = nil) -> SnapshotDestination {
        let address = IPAddress(address)!
        return SnapshotDestination(weight: 1, mac: mac ?? realMAC(index), cell: cells[index],
                                   endpointHash: StableHash.endpoint(address, port: port),
                                   route: DestinationRoute(method: method, address: address, port: port))
    }

    private func service(_ vip: String, _ destinations: [SnapshotDestination], proto: L4Protocol = .tcp, port: UInt16 = 80,
                         local: [String] = []) -> SnapshotService {
        let address = IPAddress(vip)!
        return SnapshotService(key: ServiceKey(proto: proto, address: address, port: port),
                               policy: ServicePolicy(scheduler: .rr, ipv6: address.family == .ipv6),
                               destinations: destinations, localAddresses: local.map { IPAddress($0)! })
    }

    /// `extra` servers go in front of the DR service's own, so it sits at another index.
    private func snapshot(drServers: [SnapshotDestination]? = nil) -> ForwardingSnapshot {
        ForwardingSnapshot(interfaceMAC: interfaceMAC, services: [
            service("203.0.113.10", drServers ?? [server(0, .directRouting, "198.51.100.10", 80)]),
            service("203.0.113.30", [server(1, .tunnel, "198.51.100.13", 80)]),
            service("203.0.113.20", [server(2, .masquerading, "198.51.100.11", 8080)]),
            service("203.0.113.40", [server(3, .fullNAT, "198.51.100.12", 80)], local: ["198.51.100.3"]),
            service("2001:db8:10::10", [server(4, .directRouting, "2001:db8:20::10", 53)], proto: .udp, port: 53),
        ], counters: counterStore, mtu: 1500, sourceAddresses: [director, IPAddress("2001:db8:1::2")!])
    }

    /// The director's tables the workers share.
    private let replies = ReplyIndex(partitions: 2, entriesPerPartition: 1024)
    private let servers = FlowServerIndex(entries: 4096)
    private let countersA = WorkerCounterBlock(), countersB = WorkerCounterBlock()

    /// Worker 0 (A, counting in `countersA`) or 1 (B, in `countersB`) of a director whose tables it shares.
    private func engine(_ worker: Int, _ snapshot: ForwardingSnapshot) -> ForwardingEngine {
        ForwardingEngine(snapshot: snapshot, connectionCapacity: 1024, counters: worker == 0 ? countersA : countersB,
                         replies: replies, servers: servers, worker: worker)
    }

    /// The verdict and the frame sent (`runFrame`).
    private func run(_ engine: inout ForwardingEngine, _ builder: PacketBuilder) -> (FrameVerdict, [UInt8]) {
        runFrame(&engine, builder.build())
    }

    private func expected(_ builder: PacketBuilder, to destination: MACAddress) -> [UInt8] {
        var builder = builder
        builder.source = interfaceMAC
        builder.destination = destination
        if case .ipv4 = builder.network { builder.ipv4.ttl = 63 } else { builder.ipv6.hopLimit = 63 }
        return builder.build()
    }

    /// "Fragmentation needed" from a router on the client's path, about the service's reply to the client.
    private func fragmentationNeeded(_ vip: String, client port: UInt16 = 40000) -> PacketBuilder {
        let reply = PacketBuilder.tcp(vip, 80, "198.51.100.1", port, flags: TCPFlags.syn | TCPFlags.ack)
        return .icmpError(router, vip, type: 3, code: 4, rest: 1400, quoting: reply, quoteLength: 28)
    }

    private func open(_ engine: inout ForwardingEngine, _ vip: String, client port: UInt16 = 40000) {
        XCTAssertTrue(run(&engine, .tcp("198.51.100.1", port, vip, 80, flags: TCPFlags.syn)).0.isTransmit)
    }

    func testDirectRoutingErrorOnAnotherQueueGoesToTheConnectionsRealServer() {
        var a = engine(0, snapshot()), b = engine(1, snapshot())
        open(&a, "203.0.113.10")
        let error = fragmentationNeeded("203.0.113.10")
        let (verdict, out) = run(&b, error)
        XCTAssertTrue(verdict.isTransmit, "\(verdict)")
        XCTAssertEqual(out, expected(error, to: realMAC(0)), "forwarded as DR forwards: MACs and TTL")
        XCTAssertEqual(countersB[.icmpErrorsForwarded], 1)
        XCTAssertEqual(countersB[.icmpErrorsOfOtherWorkers], 1)

        // On the connection's own queue the worker's own table answers.
        XCTAssertEqual(run(&a, error).1, expected(error, to: realMAC(0)))
        XCTAssertEqual(countersA[.icmpErrorsForwarded], 1)
        XCTAssertEqual(countersA[.icmpErrorsOfOtherWorkers], 0)
    }

    func testTunnelErrorOnAnotherQueueIsEncapsulatedToTheRealServer() {
        var a = engine(0, snapshot()), b = engine(1, snapshot())
        open(&a, "203.0.113.30")
        let error = fragmentationNeeded("203.0.113.30")
        let (verdict, out) = run(&b, error)
        guard case .transmit(let offset, _) = verdict else { return XCTFail("not transmitted: \(verdict)") }
        XCTAssertEqual(offset, -20)
        var inner = error
        inner.ipv4.ttl = 63
        var outer = PacketBuilder.ip("198.51.100.2", "198.51.100.13", proto: 4, payload: inner.buildIPPacket())
        outer.ipv4.identification = 0
        XCTAssertEqual(out, expected(outer, to: realMAC(1)))
        XCTAssertEqual(countersB[.icmpErrorsOfOtherWorkers], 1)
    }

    func testMasqueradingErrorOnAnotherQueueIsTranslatedForTheRealServer() {
        var a = engine(0, snapshot()), b = engine(1, snapshot())
        open(&a, "203.0.113.20")
        let (verdict, out) = run(&b, fragmentationNeeded("203.0.113.20"))
        XCTAssertTrue(verdict.isTransmit, "\(verdict)")
        // To the real server, quoting its own reply as it sent it (from RIP:8080).
        let reply = PacketBuilder.tcp("198.51.100.11", 8080, "198.51.100.1", 40000, flags: TCPFlags.syn | TCPFlags.ack)
        let translated = PacketBuilder.icmpError(router, "198.51.100.11", type: 3, code: 4, rest: 1400, quoting: reply,
                                                 quoteLength: 28)
        XCTAssertEqual(out, expected(translated, to: realMAC(2)))
        XCTAssertEqual(countersB[.icmpErrorsOfOtherWorkers], 1)
    }

    func testIPv6PacketTooBigOnAnotherQueueGoesToTheRealServer() {
        var a = engine(0, snapshot()), b = engine(1, snapshot())
        XCTAssertTrue(run(&a, .udp("2001:db8:1::100", 5353, "2001:db8:10::10", 53, payload: [1])).0.isTransmit)
        let reply = PacketBuilder.udp("2001:db8:10::10", 53, "2001:db8:1::100", 5353, payload: [1])
        let error = PacketBuilder.icmpError("2001:db8:ff::1", "2001:db8:10::10", type: 2, rest: 1280, quoting: reply)
        let (verdict, out) = run(&b, error)
        XCTAssertTrue(verdict.isTransmit, "\(verdict)")
        XCTAssertEqual(out, expected(error, to: realMAC(4)))
        XCTAssertEqual(countersB[.icmpErrorsOfOtherWorkers], 1)
    }

    func testFullNATAndUnknownFlowsOnAnotherQueueAreDroppedAndCounted() {
        var a = engine(0, snapshot()), b = engine(1, snapshot())
        // FULLNAT: the error needs the connection's local port, which only its own worker holds.
        open(&a, "203.0.113.40")
        XCTAssertEqual(run(&b, fragmentationNeeded("203.0.113.40")).0, .drop(.dropICMPWithoutConnection))
        // A client port no connection has, on a service that has connections.
        open(&a, "203.0.113.10")
        XCTAssertEqual(run(&b, fragmentationNeeded("203.0.113.10", client: 40001)).0, .drop(.dropICMPWithoutConnection))
        // (The worker's ring loop counts a dropped frame under the verdict's reason.)
        XCTAssertEqual(countersB[.icmpErrorsForwarded], 0)
        XCTAssertEqual(countersB[.icmpErrorsOfOtherWorkers], 0)
    }

    func testTheServerIsFollowedByItsCellAndACellGivenToAnotherServerIsRefused() {
        var a = engine(0, snapshot()), b = engine(1, snapshot())
        open(&a, "203.0.113.10")
        let error = fragmentationNeeded("203.0.113.10")

        // A newcomer placed in front of the server: the cell follows it to its new index.
        let newcomer = SnapshotDestination(weight: 1, mac: otherMAC, cell: counterStore.allocate()!, endpointHash: 42,
                                           route: DestinationRoute(method: .directRouting, address: IPAddress("198.51.100.9")!, port: 80))
        b.adopt(snapshot(drServers: [newcomer, server(0, .directRouting, "198.51.100.10", 80)]))
        XCTAssertEqual(run(&b, error).1, expected(error, to: realMAC(0)))

        // The server left and its cell now names another server: the error does not go there.
        let impostor = SnapshotDestination(weight: 1, mac: otherMAC, cell: cells[0],
                                           endpointHash: StableHash.endpoint(IPAddress("198.51.100.99")!, port: 80),
                                           route: DestinationRoute(method: .directRouting, address: IPAddress("198.51.100.99")!, port: 80))
        b.adopt(snapshot(drServers: [impostor]))
        XCTAssertEqual(run(&b, error).0, .drop(.dropICMPWithoutConnection))
        XCTAssertEqual(countersB[.icmpErrorsOfOtherWorkers], 1)
    }
}
