import Dataplane
import Packet
import Scheduling
import XCTest
import XDirectorTestSupport

/// NAT, FULLNAT, tunnelling and ICMP through the engine on fixture frames. Every expected frame is built
/// independently with `PacketBuilder` (its checksums by `ReferenceChecksum`) and compared byte for byte.
final class TranslationEngineTests: XCTestCase {
    private let interfaceMAC = MACAddress("02:aa:00:00:00:01")!
    private let realMAC = MACAddress("0e:00:00:00:00:0a")!
    /// PacketBuilder's default source MAC: the client's (or its router's) side.
    private let clientMAC = MACAddress("02:00:00:00:00:01")!
    private let director = IPAddress("198.51.100.2")!

    private func route(_ kind: ForwardingMethod, _ address: String, _ port: UInt16) -> SnapshotDestination {
        SnapshotDestination(weight: 1, mac: realMAC, route: DestinationRoute(method: kind, address: IPAddress(address)!, port: port))
    }

    private func service(_ vip: String, _ destination: SnapshotDestination, local: [String] = []) -> SnapshotService {
        SnapshotService(key: ServiceKey(proto: .tcp, address: IPAddress(vip)!, port: 80),
                        policy: ServicePolicy(scheduler: .rr, ipv6: false), destinations: [destination],
                        localAddresses: local.map { IPAddress($0)! })
    }

    private lazy var snapshot = ForwardingSnapshot(interfaceMAC: interfaceMAC, services: [
        service("203.0.113.10", route(.masquerading, "198.51.100.11", 8080)),
        service("203.0.113.20", route(.fullNAT, "198.51.100.12", 80), local: ["198.51.100.3"]),
        service("203.0.113.21", route(.fullNAT, "198.51.100.12", 80), local: ["198.51.100.3"]),
        service("203.0.113.30", route(.tunnel, "198.51.100.13", 80)),
    ], mtu: 1500, sourceAddresses: [director])

    /// The verdict and the frame sent (`runFrame`).
    private func run(_ engine: inout ForwardingEngine, _ builder: PacketBuilder) -> (FrameVerdict, [UInt8]) {
        runFrame(&engine, builder.build())
    }

    private func expected(_ builder: PacketBuilder, ttl: UInt8 = 63, from source: MACAddress, to destination: MACAddress) -> [UInt8] {
        var builder = builder
        builder.source = source
        builder.destination = destination
        if case .ipv4 = builder.network { builder.ipv4.ttl = ttl } else { builder.ipv6.hopLimit = ttl }
        return builder.build()
    }

    func testMasqueradingRewritesTheRequestAndAnotherWorkerTranslatesTheReply() throws {
        let replies = ReplyIndex(partitions: 2, entriesPerPartition: 1024)
        let countersB = WorkerCounterBlock()
        var a = ForwardingEngine(snapshot: snapshot, connectionCapacity: 1024, counters: WorkerCounterBlock(), replies: replies, worker: 0)
        var b = ForwardingEngine(snapshot: snapshot, connectionCapacity: 1024, counters: countersB, replies: replies, worker: 1)

        let request = PacketBuilder.tcp("198.51.100.1", 40000, "203.0.113.10", 80, flags: TCPFlags.syn, payload: [1, 2, 3])
        let (verdict, out) = run(&a, request)
        XCTAssertTrue(verdict.isTransmit)
        XCTAssertEqual(out, expected(.tcp("198.51.100.1", 40000, "198.51.100.11", 8080, flags: TCPFlags.syn, payload: [1, 2, 3]),
                                     from: interfaceMAC, to: realMAC))

        let reply = PacketBuilder.tcp("198.51.100.11", 8080, "198.51.100.1", 40000, flags: TCPFlags.syn | TCPFlags.ack)
        let (replyVerdict, back) = run(&b, reply)
        XCTAssertTrue(replyVerdict.isTransmit)
        XCTAssertEqual(back, expected(.tcp("203.0.113.10", 80, "198.51.100.1", 40000, flags: TCPFlags.syn | TCPFlags.ack),
                                      from: interfaceMAC, to: clientMAC))
        XCTAssertEqual(countersB[.repliesOfOtherWorkers], 1, "the reply was another worker's connection")

        // A reply of no connection (another client port) is not translated.
        XCTAssertEqual(run(&b, .tcp("198.51.100.11", 8080, "198.51.100.1", 40001)).0, .drop(.dropNoReplyState))
        // From the server's address but another port, or another address: no server of this configuration sent it
        // (the program steered it for a configuration since replaced).
        XCTAssertEqual(run(&b, .tcp("198.51.100.11", 8081, "198.51.100.1", 40001)).0, .drop(.dropNoService))
        XCTAssertEqual(run(&b, .tcp("198.51.100.12", 8080, "198.51.100.1", 40001)).0, .drop(.dropNoService))
        XCTAssertEqual(run(&b, .tcp("198.51.100.12", 80, "198.51.100.1", 40001)).0, .drop(.dropNoReplyState),
                       "a FULLNAT server's endpoint, found among the others")
    }

    func testICMPErrorFromTheRealServerIsTranslatedWithItsQuote() throws {
        var engine = ForwardingEngine(snapshot: snapshot, connectionCapacity: 1024, counters: WorkerCounterBlock())
        _ = run(&engine, .tcp("198.51.100.1", 40000, "203.0.113.10", 80, flags: TCPFlags.syn))
        // The real server reports a problem with the packet we sent it (quoted as sent: client → RIP:8080).
        var sent = PacketBuilder.tcp("198.51.100.1", 40000, "198.51.100.11", 8080, flags: TCPFlags.syn)
        sent.ipv4.ttl = 63
        let error = PacketBuilder.icmpError("198.51.100.11", "198.51.100.1", type: 3, code: 3, quoting: sent, quoteLength: 28)
        var original = PacketBuilder.tcp("198.51.100.1", 40000, "203.0.113.10", 80, flags: TCPFlags.syn)
        original.ipv4.ttl = 63
        // Only the quoted headers' first 8 TCP bytes travel (28 bytes), so the quoted TCP checksum is not in it.
        let translated = PacketBuilder.icmpError("203.0.113.10", "198.51.100.1", type: 3, code: 3, quoting: original,
                                                 quoteLength: 28)
        let (verdict, out) = run(&engine, error)
        XCTAssertTrue(verdict.isTransmit)
        XCTAssertEqual(out, expected(translated, from: interfaceMAC, to: clientMAC))
    }

    func testFullNATUsesALocalAddressAndPortAndTranslatesTheReplyBack() throws {
        let counters = WorkerCounterBlock()
        var engine = ForwardingEngine(snapshot: snapshot, connectionCapacity: 1024, counters: counters)
        let (verdict, out) = run(&engine, .tcp("198.51.100.1", 40000, "203.0.113.20", 80, flags: TCPFlags.syn))
        XCTAssertTrue(verdict.isTransmit)
        let port = UInt16(out[34]) << 8 | UInt16(out[35])
        XCTAssertGreaterThanOrEqual(port, UInt16(LocalPortAllocator.lowestPort))
        XCTAssertEqual(out, expected(.tcp("198.51.100.3", port, "198.51.100.12", 80, flags: TCPFlags.syn),
                                     from: interfaceMAC, to: realMAC))
        let (replyVerdict, back) = run(&engine, .tcp("198.51.100.12", 80, "198.51.100.3", port, flags: TCPFlags.syn | TCPFlags.ack))
        XCTAssertTrue(replyVerdict.isTransmit)
        XCTAssertEqual(back, expected(.tcp("203.0.113.20", 80, "198.51.100.1", 40000, flags: TCPFlags.syn | TCPFlags.ack),
                                      from: interfaceMAC, to: clientMAC))
    }

    func testServicesSharingALocalAddressNeverShareAPort() {
        // Both services reach 198.51.100.12:80 from 198.51.100.3: a port given to one cannot go to the other,
        // or two connections would share one tuple at the real server.
        var engine = ForwardingEngine(snapshot: snapshot, connectionCapacity: 4096, counters: WorkerCounterBlock())
        var seen = Set<[UInt8]>()
        for port in UInt16(20000)..<20600 {
            let vip = port % 2 == 0 ? "203.0.113.20" : "203.0.113.21"
            let (verdict, out) = run(&engine, .tcp("198.51.100.1", port, vip, 80, flags: TCPFlags.syn))
            XCTAssertTrue(verdict.isTransmit)
            let sourceAndPort = Array(out[26..<30]) + Array(out[34..<36])
            XCTAssertTrue(seen.insert(sourceAndPort).inserted, "local address and port \(sourceAndPort) handed out twice")
        }
    }

    func testTunnellingPrependsTheOuterHeaderInTheHeadroom() {
        var engine = ForwardingEngine(snapshot: snapshot, connectionCapacity: 1024, counters: WorkerCounterBlock())
        let (verdict, out) = run(&engine, .tcp("198.51.100.1", 40000, "203.0.113.30", 80, flags: TCPFlags.syn))
        guard case .transmit(let offset, _) = verdict else { return XCTFail("not transmitted: \(verdict)") }
        XCTAssertEqual(offset, -20, "an IPv4 header in front, nothing moved")
        var inner = PacketBuilder.tcp("198.51.100.1", 40000, "203.0.113.30", 80, flags: TCPFlags.syn)
        inner.ipv4.ttl = 63
        var outer = PacketBuilder.ip("198.51.100.2", "198.51.100.13", proto: 4, payload: inner.buildIPPacket())
        outer.ipv4.identification = 0
        XCTAssertEqual(out, expected(outer, from: interfaceMAC, to: realMAC))
    }

    func testTooBigForTheTunnelIsAnsweredWithFragmentationNeeded() {
        let counters = WorkerCounterBlock()
        var engine = ForwardingEngine(snapshot: snapshot, connectionCapacity: 1024, counters: counters)
        // 1500 bytes of IP with DF: no room for the 20-byte outer header under an MTU of 1500.
        let big = PacketBuilder.tcp("198.51.100.1", 40000, "203.0.113.30", 80, flags: TCPFlags.syn,
                                    payload: [UInt8](repeating: 7, count: 1460))
        let (verdict, out) = run(&engine, big)
        XCTAssertTrue(verdict.isTransmit)
        XCTAssertEqual(counters[.icmpTooBigSent], 1)
        var quoted = big
        quoted.ipv4.ttl = 64
        let error = PacketBuilder.icmpError("198.51.100.2", "198.51.100.1", type: 3, code: 4, rest: 1480, quoting: quoted,
                                            quoteLength: 576 - 28)
        var reference = error
        reference.ipv4.tos = 0xC0
        reference.ipv4.identification = 0
        reference.ipv4.dontFragment = false
        XCTAssertEqual(out, expected(reference, ttl: 64, from: interfaceMAC, to: clientMAC))
    }
}
