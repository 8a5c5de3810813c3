import Dataplane
import Packet
import Scheduling
import XCTest
import XDirectorTestSupport

/// Fragmented datagrams through two engines (two workers) sharing the fragment table and the reply index:
/// the first fragment is scheduled on one, the later ones follow it on the other, in either order. Every
/// expected frame is the expected whole datagram (built by `PacketBuilder`, checksums by `ReferenceChecksum`)
/// cut into fragments the same way, compared byte for byte: the first fragment's UDP checksum covers the
/// whole datagram, so the incremental update must give exactly the rewritten datagram's.
final class FragmentEngineTests: XCTestCase {
    private let interfaceMAC = MACAddress("02:aa:00:00:00:01")!
    private let realMAC = MACAddress("0e:00:00:00:00:0a")!
    private let clientMAC = MACAddress("02:00:00:00:00:01")!
    private let client = "198.51.100.1", client6 = "2001:db8:1::1"
    private let payload = (0..<3000).map { UInt8(truncatingIfNeeded: $0 &* 7) }

    private func udpService(_ vip: String, _ route: DestinationRoute) -> SnapshotService {
        SnapshotService(key: ServiceKey(proto: .udp, address: IPAddress(vip)!, port: 53),
                        scheduler: .rr, destinations: [SnapshotDestination(weight: 1, mac: realMAC, route: route)])
    }

    private lazy var snapshot = ForwardingSnapshot(interfaceMAC: interfaceMAC, services: [
        udpService("203.0.113.40", .directRouting),
        udpService("203.0.113.10", DestinationRoute(method: .masquerading, address: IPAddress("198.51.100.11")!, port: 5353)),
        udpService("203.0.113.30", DestinationRoute(method: .tunnel, address: IPAddress("198.51.100.13")!, port: 53)),
        udpService("2001:db8:10::40", .directRouting),
        udpService("2001:db8:10::10", DestinationRoute(method: .masquerading, address: IPAddress("2001:db8:20::11")!, port: 5353)),
        SnapshotService(key: ServiceKey(proto: .udp, address: IPAddress("203.0.113.99")!, port: 53), scheduler: .rr,
                        destinations: [SnapshotDestination(weight: 0, mac: realMAC)]),
        SnapshotService(key: ServiceKey(proto: .udp, address: IPAddress("203.0.113.20")!, port: 53),
                        policy: ServicePolicy(scheduler: .rr),
                        destinations: [SnapshotDestination(weight: 1, mac: realMAC, route: DestinationRoute(
                            method: .fullNAT, address: IPAddress("198.51.100.12")!, port: 53))],
                        localAddresses: [IPAddress("198.51.100.3")!]),
        udpService("203.0.113.31", DestinationRoute(method: .tunnel, address: IPAddress("198.51.100.13")!, port: 53,
                                                    tunnel: TunnelParameters(type: .gue, port: 6080))),
        SnapshotService(key: ServiceKey(proto: .udp, address: IPAddress("203.0.113.41")!, port: 53),
                        policy: ServicePolicy(scheduler: .rr, onePacket: true),
                        destinations: [SnapshotDestination(weight: 1, mac: realMAC)]),
    ], mtu: 1500, sourceAddresses: [IPAddress("198.51.100.2")!])

    private struct Workers: ~Copyable {
        var a: ForwardingEngine
        var b: ForwardingEngine
        let countersA: WorkerCounterBlock
        let countersB: WorkerCounterBlock
    }

    private func workers() -> Workers {
        let replies = ReplyIndex(partitions: 2, entriesPerPartition: 1024)
        let fragments = FragmentTable(partitions: 2, entriesPerPartition: 1024)
        let countersA = WorkerCounterBlock(), countersB = WorkerCounterBlock()
        return Workers(
            a: ForwardingEngine(snapshot: snapshot, connectionCapacity: 1024, counters: countersA, replies: replies,
                                fragments: fragments, worker: 0),
            b: ForwardingEngine(snapshot: snapshot, connectionCapacity: 1024, counters: countersB, replies: replies,
                                fragments: fragments, worker: 1),
            countersA: countersA, countersB: countersB)
    }

    private enum Offer { case fresh, held, heldFinal }

    /// The verdict and the bytes sent for `input` (256 bytes of headroom before it, as AF_XDP gives), processed
    /// as a new frame or offered again after a `.hold`.
    private func run(_ engine: inout ForwardingEngine, _ input: [UInt8], _ offer: Offer = .fresh,
                     now: UInt32 = 100) -> (FrameVerdict, [UInt8]) {
        let headroom = 256
        var buffer = [UInt8](repeating: 0, count: 4096)
        buffer.replaceSubrange(headroom..<headroom + input.count, with: input)
        return buffer.withUnsafeMutableBytes { raw in
            let frame = raw.baseAddress! + headroom
            let verdict = offer == .fresh
                ? engine.process(frame, length: input.count, headroom: headroom, now: now)
                : engine.processHeld(frame, length: input.count, headroom: headroom, now: now, final: offer == .heldFinal)
            guard case .transmit(let offset, let length) = verdict else { return (verdict, []) }
            return (verdict, Array(raw[headroom + offset..<headroom + offset + length]))
        }
    }

    /// `builder` as the director sends it: new MACs, one hop less.
    private func forwarded(_ builder: PacketBuilder, to mac: MACAddress) -> PacketBuilder {
        var builder = builder
        builder.source = interfaceMAC
        builder.destination = mac
        if case .ipv4 = builder.network { builder.ipv4.ttl = 63 } else { builder.ipv6.hopLimit = 63 }
        return builder
    }

    /// The first fragment on worker A, the others on worker B: each rewritten as the whole datagram would be.
    private func assertFollowed(_ sent: PacketBuilder, _ expected: PacketBuilder, id: UInt32, dataPerFragment: Int = 1480,
                                file: StaticString = #filePath, line: UInt = #line) {
        var w = workers()
        let input = sent.fragments(dataPerFragment: dataPerFragment, identification: id)
        let output = expected.fragments(dataPerFragment: dataPerFragment, identification: id)
        XCTAssertGreaterThan(input.count, 2, file: file, line: line)
        for (index, fragment) in input.enumerated() {
            let (verdict, out) = index == 0 ? run(&w.a, fragment) : run(&w.b, fragment)
            XCTAssertTrue(verdict.isTransmit, "fragment \(index): \(verdict)", file: file, line: line)
            XCTAssertEqual(out, output[index], "fragment \(index)\n\(HexDump.format(out))\nexpected\n\(HexDump.format(output[index]))",
                           file: file, line: line)
        }
        XCTAssertEqual(w.countersA[.newConnections], 1, file: file, line: line)
        XCTAssertEqual(w.countersB[.fragmentsFollowed], UInt64(input.count - 1), file: file, line: line)
        XCTAssertEqual(w.countersB[.newConnections], 0, "later fragments make no connection", file: file, line: line)
    }

    func testDirectRoutedFragmentsFollowTheirFirstOnAnotherWorker() {
        let v4 = PacketBuilder.udp(client, 40000, "203.0.113.40", 53, payload: payload)
        assertFollowed(v4, forwarded(v4, to: realMAC), id: 0x4242)
        let v6 = PacketBuilder.udp(client6, 40000, "2001:db8:10::40", 53, payload: payload)
        assertFollowed(v6, forwarded(v6, to: realMAC), id: 0x8000_0001)
    }

    /// A one-packet service (`-o`) keeps no connection: the record is made from the server the first went to.
    func testFragmentsOfAOnePacketServiceFollowTheirFirst() {
        let v4 = PacketBuilder.udp(client, 40000, "203.0.113.41", 53, payload: payload)
        assertFollowed(v4, forwarded(v4, to: realMAC), id: 0x4243)
    }

    func testTranslatedFragmentsChangeOnlyTheirAddressesAndTheFirstItsPortsAndChecksum() {
        assertFollowed(.udp(client, 40000, "203.0.113.10", 53, payload: payload),
                       forwarded(.udp(client, 40000, "198.51.100.11", 5353, payload: payload), to: realMAC), id: 7)
        assertFollowed(.udp(client6, 40000, "2001:db8:10::10", 53, payload: payload),
                       forwarded(.udp(client6, 40000, "2001:db8:20::11", 5353, payload: payload), to: realMAC), id: 0xffff_ffff)
    }

    /// The real server's fragmented reply: its first fragment finds the reply index by its ports, on any worker;
    /// the later ones follow it on another.
    func testFragmentedRepliesOfANATConnectionAreTranslatedBack() {
        for (vip, real, client) in [("203.0.113.10", "198.51.100.11", client), ("2001:db8:10::10", "2001:db8:20::11", client6)] {
            var w = workers()
            XCTAssertTrue(run(&w.a, PacketBuilder.udp(client, 40000, vip, 53, payload: [1]).build()).0.isTransmit)
            let reply = PacketBuilder.udp(real, 5353, client, 40000, payload: payload).fragments(dataPerFragment: 1232, identification: 99)
            let expected = forwarded(.udp(vip, 53, client, 40000, payload: payload), to: clientMAC)
                .fragments(dataPerFragment: 1232, identification: 99)
            for (index, fragment) in reply.enumerated() {
                // First on B, the rest on A: whoever owns the connection does not matter.
                let (verdict, out) = index == 0 ? run(&w.b, fragment) : run(&w.a, fragment)
                XCTAssertTrue(verdict.isTransmit, "\(vip) reply fragment \(index): \(verdict)")
                XCTAssertEqual(out, expected[index], "\(vip) reply fragment \(index)")
            }
            XCTAssertEqual(w.countersB[.repliesTranslated], 1)
            XCTAssertEqual(w.countersA[.fragmentsFollowed], UInt64(reply.count - 1))
        }
    }

    /// Tunnelled: each fragment is encapsulated as it is (the real server reassembles after decapsulation),
    /// the outer header taking the inner identification (no DF).
    func testTunnelledFragmentsAreEncapsulatedAsTheyAre() {
        var w = workers()
        let sent = PacketBuilder.udp(client, 40000, "203.0.113.30", 53, payload: payload)
        let input = sent.fragments(dataPerFragment: 1400, identification: 0x5151)
        let inner = forwarded(sent, to: realMAC).fragments(dataPerFragment: 1400, identification: 0x5151)
        for (index, fragment) in input.enumerated() {
            let (verdict, out) = index == 0 ? run(&w.a, fragment) : run(&w.b, fragment)
            guard case .transmit(let offset, _) = verdict else { return XCTFail("fragment \(index): \(verdict)") }
            XCTAssertEqual(offset, -20)
            var outer = PacketBuilder.ip("198.51.100.2", "198.51.100.13", proto: 4, payload: Array(inner[index][14...]))
            outer.ipv4.identification = 0x5151
            outer.ipv4.dontFragment = false
            outer.ipv4.ttl = 63
            outer.source = interfaceMAC
            outer.destination = realMAC
            XCTAssertEqual(out, outer.build(), "fragment \(index)")
        }
    }

    /// GUE: the outer UDP source port comes from the flow hash; a later fragment has no ports of its own but
    /// takes its first's, so the whole datagram travels as one flow through the network.
    func testTunnelledFragmentsOfADatagramShareTheirFlowHash() {
        var w = workers()
        let input = PacketBuilder.udp(client, 40000, "203.0.113.31", 53, payload: payload)
            .fragments(dataPerFragment: 1400, identification: 0x5152)
        var ports: [UInt16] = []
        for (index, fragment) in input.enumerated() {
            let (verdict, out) = index == 0 ? run(&w.a, fragment) : run(&w.b, fragment)
            guard case .transmit(let offset, _) = verdict else { return XCTFail("fragment \(index): \(verdict)") }
            XCTAssertEqual(offset, -32, "IPv4, UDP and GUE headers")
            XCTAssertEqual(Array(out[36..<38]), [0x17, 0xc0], "to the GUE port")
            ports.append(UInt16(out[34]) << 8 | UInt16(out[35]))
        }
        XCTAssertEqual(Set(ports).count, 1, "\(ports)")
        // The port a whole datagram of the same flow gets, and not a constant: another flow gets another.
        func wholePort(client port: UInt16) -> UInt16? {
            var fresh = workers()
            let (verdict, out) = run(&fresh.a, PacketBuilder.udp(client, port, "203.0.113.31", 53, payload: [1, 2, 3]).build())
            guard verdict.isTransmit else { return nil }
            return UInt16(out[34]) << 8 | UInt16(out[35])
        }
        XCTAssertEqual(wholePort(client: 40000), ports.first, "the flow's own port")
        XCTAssertNotEqual(wholePort(client: 40001), ports.first, "another flow's port differs")
    }

    /// FULLNAT: the first fragment takes a local address and port; the later ones get the same addresses, and
    /// the real server's fragmented reply comes back to the client.
    func testFullNATFragmentsBothWays() {
        var w = workers()
        let input = PacketBuilder.udp(client, 40000, "203.0.113.20", 53, payload: payload)
            .fragments(dataPerFragment: 1480, identification: 21)
        let (verdict, first) = run(&w.a, input[0])
        XCTAssertTrue(verdict.isTransmit)
        let port = UInt16(first[34]) << 8 | UInt16(first[35])
        let expected = forwarded(.udp("198.51.100.3", port, "198.51.100.12", 53, payload: payload), to: realMAC)
            .fragments(dataPerFragment: 1480, identification: 21)
        XCTAssertEqual(first, expected[0])
        for index in 1..<input.count { XCTAssertEqual(run(&w.b, input[index]).1, expected[index], "fragment \(index)") }

        let reply = PacketBuilder.udp("198.51.100.12", 53, "198.51.100.3", port, payload: payload)
            .fragments(dataPerFragment: 1480, identification: 22)
        let back = forwarded(.udp("203.0.113.20", 53, client, 40000, payload: payload), to: clientMAC)
            .fragments(dataPerFragment: 1480, identification: 22)
        for index in reply.indices.reversed() {  // last first: held until the first comes
            let (verdict, out) = index == 0 ? run(&w.a, reply[index]) : run(&w.b, reply[index])
            if index > 0 { XCTAssertEqual(verdict, .hold) } else { XCTAssertEqual(out, back[0]) }
        }
        for index in 1..<reply.count { XCTAssertEqual(run(&w.b, reply[index], .held).1, back[index], "reply fragment \(index)") }
    }

    /// IPv4 fragments that no longer fit once encapsulated (no DF: the director does not fragment) are dropped,
    /// the first counted as such, the later ones as following a dropped first.
    func testFragmentsTooBigForTheTunnelAreDroppedAndCounted() {
        var w = workers()
        let input = PacketBuilder.udp(client, 40000, "203.0.113.30", 53, payload: payload)
            .fragments(dataPerFragment: 1480, identification: 3)
        XCTAssertEqual(run(&w.a, input[0]).0, .drop(.dropFragmentationNeeded))
        XCTAssertEqual(run(&w.b, input[1]).0, .drop(.dropFragment), "its first was dropped: the datagram is lost")
    }

    func testALaterFragmentBeforeItsFirstIsHeldThenSent() {
        var w = workers()
        let sent = PacketBuilder.udp(client, 40000, "203.0.113.10", 53, payload: payload)
        let input = sent.fragments(dataPerFragment: 1480, identification: 11)
        let expected = forwarded(.udp(client, 40000, "198.51.100.11", 5353, payload: payload), to: realMAC)
            .fragments(dataPerFragment: 1480, identification: 11)
        XCTAssertEqual(run(&w.b, input[2]).0, .hold, "its first is unknown yet")
        XCTAssertEqual(run(&w.b, input[2], .held).0, .hold, "still unknown")
        XCTAssertEqual(run(&w.a, input[0]).1, expected[0])
        let (verdict, out) = run(&w.b, input[2], .held)
        XCTAssertTrue(verdict.isTransmit)
        XCTAssertEqual(out, expected[2])
    }

    func testALaterFragmentWhoseFirstNeverComesIsDroppedWhenItsTimeIsUp() {
        var w = workers()
        let input = PacketBuilder.udp(client, 40000, "203.0.113.40", 53, payload: payload)
            .fragments(dataPerFragment: 1480, identification: 12)
        XCTAssertEqual(run(&w.b, input[1]).0, .hold)
        XCTAssertEqual(run(&w.b, input[1], .heldFinal).0, .drop(.dropFragmentWithoutFirst))
        // Another datagram with the same identification from another client is another datagram.
        var w2 = workers()
        XCTAssertTrue(run(&w2.a, input[0]).0.isTransmit)
        let other = PacketBuilder.udp("198.51.100.7", 40000, "203.0.113.40", 53, payload: payload)
            .fragments(dataPerFragment: 1480, identification: 12)
        XCTAssertEqual(run(&w2.b, other[1]).0, .hold)
    }

    /// A first fragment that could not be forwarded (no real server takes it) takes its datagram with it: the
    /// later fragments are dropped at once, not held.
    func testLaterFragmentsOfADroppedFirstAreDroppedAtOnce() {
        var w = workers()
        let input = PacketBuilder.udp(client, 40000, "203.0.113.99", 53, payload: payload)
            .fragments(dataPerFragment: 1480, identification: 13)
        XCTAssertEqual(run(&w.a, input[0]).0, .drop(.dropNoDestination))
        XCTAssertEqual(run(&w.b, input[1]).0, .drop(.dropFragment))
    }

    /// The record lives seconds: a datagram identification is reused once the sender wraps.
    func testTheFirstFragmentsRecordExpires() {
        var w = workers()
        let input = PacketBuilder.udp(client, 40000, "203.0.113.40", 53, payload: payload)
            .fragments(dataPerFragment: 1480, identification: 14)
        XCTAssertTrue(run(&w.a, input[0], now: 100).0.isTransmit)
        XCTAssertTrue(run(&w.b, input[1], now: 100 + FragmentTable.lifetime - 1).0.isTransmit)
        XCTAssertEqual(run(&w.b, input[2], now: 100 + FragmentTable.lifetime).0, .hold)
    }

    /// A first fragment whose IPv4 header is corrupt makes no record (its addresses cannot be trusted).
    func testAFirstFragmentWithABadHeaderChecksumMakesNoRecord() {
        var w = workers()
        var input = PacketBuilder.udp(client, 40000, "203.0.113.40", 53, payload: payload)
            .fragments(dataPerFragment: 1480, identification: 15)
        input[0][24] ^= 0xff
        XCTAssertEqual(run(&w.a, input[0]).0, .drop(.dropBadIPv4Checksum))
        XCTAssertEqual(run(&w.b, input[1]).0, .hold)
    }
}
