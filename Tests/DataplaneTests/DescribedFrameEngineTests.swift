import CXDirectorShared
import Dataplane
import Packet
import Scheduling
import XCTest
import XDirectorTestSupport

/// Frames the XDP program described (`FrameMetadata`) skip the engine's parse and service look-up: they must
/// come out exactly as the same frames parsed in full, and a description that does not fit its frame must
/// never be trusted.
final class DescribedFrameEngineTests: XCTestCase {
    private let interfaceMAC = MACAddress("02:aa:00:00:00:01")!
    private let realMAC = MACAddress("0e:00:00:00:00:0a")!
    private let client = "198.51.100.1", real = "198.51.100.11"

    private func destination(_ method: ForwardingMethod, _ address: String, _ port: UInt16) -> SnapshotDestination {
        SnapshotDestination(weight: 1, mac: realMAC, route: DestinationRoute(method: method, address: IPAddress(address)!, port: port))
    }

    /// Services 0 (NAT), 1 (DR), 2 (IPv6 UDP, DR), 3 (FULLNAT), 4 (tunnel), 5 (IPv4 UDP, NAT), 6 (IPv6 TCP,
    /// DR): the program's map indices.
    private func snapshot() -> ForwardingSnapshot {
        ForwardingSnapshot(interfaceMAC: interfaceMAC, services: [
            SnapshotService(key: ServiceKey(proto: .tcp, address: IPAddress("203.0.113.10")!, port: 80),
                            policy: ServicePolicy(scheduler: .rr, seesReplies: true),
                            destinations: [destination(.masquerading, real, 8080)]),
            SnapshotService(key: ServiceKey(proto: .tcp, address: IPAddress("203.0.113.20")!, port: 80),
                            policy: ServicePolicy(scheduler: .rr),
                            destinations: [destination(.directRouting, "198.51.100.12", 80),
                                           destination(.directRouting, "198.51.100.13", 80)]),
            SnapshotService(key: ServiceKey(proto: .udp, address: IPAddress("2001:db8:10::10")!, port: 53),
                            policy: ServicePolicy(scheduler: .rr, ipv6: true),
                            destinations: [destination(.directRouting, "2001:db8:20::1", 53)]),
            SnapshotService(key: ServiceKey(proto: .tcp, address: IPAddress("203.0.113.30")!, port: 80),
                            policy: ServicePolicy(scheduler: .rr, seesReplies: true),
                            destinations: [destination(.fullNAT, "198.51.100.14", 80)],
                            localAddresses: [IPAddress("198.51.100.3")!]),
            SnapshotService(key: ServiceKey(proto: .tcp, address: IPAddress("203.0.113.40")!, port: 80),
                            policy: ServicePolicy(scheduler: .rr),
                            destinations: [destination(.tunnel, "198.51.100.15", 80)]),
            SnapshotService(key: ServiceKey(proto: .udp, address: IPAddress("203.0.113.50")!, port: 53),
                            policy: ServicePolicy(scheduler: .rr, seesReplies: true),
                            destinations: [destination(.masquerading, "198.51.100.16", 5353)]),
            SnapshotService(key: ServiceKey(proto: .tcp, address: IPAddress("2001:db8:10::60")!, port: 80),
                            policy: ServicePolicy(scheduler: .rr, ipv6: true),
                            destinations: [destination(.directRouting, "2001:db8:20::6", 80)]),
        ], mtu: 1500, sourceAddresses: [IPAddress("198.51.100.2")!])
    }

    private enum Description {
        case none
        /// What the program writes for the frame: service `index`, or nil for a reply.
        case program(service: Int?)
        /// Sixteen bytes as given.
        case raw([UInt8])
    }

    /// Processes `frame` with 256 bytes of headroom before it (AF_XDP's), preceded by `description`; returns
    /// the verdict, the frame sent (empty when none) and the 16 bytes before the frame afterwards.
    private func run(_ engine: inout ForwardingEngine, _ input: [UInt8], _ description: Description)
        -> (FrameVerdict, [UInt8], [UInt8]) {
        var left: [UInt8] = []
        let (verdict, sent) = runFrame(&engine, input, before: { raw, headroom in
            switch description {
            case .none: break
            case .program(let service):
                XCTAssertTrue(FrameMetadata.describe(raw.baseAddress! + headroom, length: input.count, service: service),
                              "the program describes it")
            case .raw(let bytes):
                for (offset, byte) in bytes.enumerated() { raw[headroom - FrameMetadata.size + offset] = byte }
            }
        }, after: { raw, headroom in left = Array(raw[headroom - FrameMetadata.size..<headroom]) })
        return (verdict, sent, left)
    }

    private func framesDescribed(_ engine: inout ForwardingEngine, _ counters: WorkerCounterBlock) -> UInt64 {
        engine.sweep(now: 100, limit: 0)  // the count reaches the counter block between batches
        return counters[.framesDescribed]
    }

    func testDescribedFramesComeOutExactlyAsParsedOnes() {
        let describedCounters = WorkerCounterBlock(), parsedCounters = WorkerCounterBlock()
        var described = ForwardingEngine(snapshot: snapshot(), connectionCapacity: 1024, counters: describedCounters)
        var parsed = ForwardingEngine(snapshot: snapshot(), connectionCapacity: 1024, counters: parsedCounters)
        var traffic: [(String, [UInt8], Int?)] = []
        for port in UInt16(40000)..<40003 {
            for (service, vip) in [(0, "203.0.113.10"), (1, "203.0.113.20"), (3, "203.0.113.30"), (4, "203.0.113.40")] {
                traffic.append(("SYN to service \(service)", PacketBuilder.tcp(client, port, vip, 80, flags: TCPFlags.syn).build(), service))
                traffic.append(("data to service \(service)",
                                PacketBuilder.tcp(client, port, vip, 80, flags: TCPFlags.ack | TCPFlags.psh,
                                                  payload: Array("GET / HTTP/1.0\r\n\r\n".utf8)).build(), service))
            }
            traffic.append(("NAT reply", PacketBuilder.tcp(real, 8080, client, port, flags: TCPFlags.syn | TCPFlags.ack).build(), nil))
            traffic.append(("IPv6 datagram", PacketBuilder.udp("2001:db8:1::1", port, "2001:db8:10::10", 53, payload: [1, 2, 3]).build(), 2))
            traffic.append(("FIN to service 1", PacketBuilder.tcp(client, port, "203.0.113.20", 80, flags: TCPFlags.fin | TCPFlags.ack).build(), 1))
            var tagged = PacketBuilder.tcp(client, port &+ 100, "203.0.113.20", 80, flags: TCPFlags.syn)
            tagged.vlanTCI = 42
            traffic.append(("SYN behind a VLAN tag", tagged.build(), 1))
            var options = PacketBuilder.tcp(client, port &+ 200, "203.0.113.10", 80, flags: TCPFlags.syn)
            options.ipv4.options = [1, 1, 1, 0]
            traffic.append(("SYN with IPv4 options, NAT", options.build(), 0))
            traffic.append(("IPv4 datagram, NAT", PacketBuilder.udp(client, port, "203.0.113.50", 53, payload: [7, 7]).build(), 5))
            traffic.append(("IPv6 SYN", PacketBuilder.tcp("2001:db8:1::1", port, "2001:db8:10::60", 80, flags: TCPFlags.syn).build(), 6))
            traffic.append(("IPv6 ACK", PacketBuilder.tcp("2001:db8:1::1", port, "2001:db8:10::60", 80, flags: TCPFlags.ack).build(), 6))
        }
        for (name, frame, service) in traffic {
            let (verdictA, outA, left) = run(&described, frame, .program(service: service))
            let (verdictB, outB, _) = run(&parsed, frame, .none)
            XCTAssertEqual(verdictA, verdictB, name)
            XCTAssertTrue(verdictA.isTransmit, name)
            XCTAssertEqual(outA, outB, "\(name): the same bytes out")
            if case .transmit(let offset, _) = verdictA, offset == 0 {
                XCTAssertEqual(Array(left[12..<16]), [0, 0, 0, 0], "\(name): the description is taken once (its seal cleared)")
            }
        }
        XCTAssertEqual(framesDescribed(&described, describedCounters), UInt64(traffic.count))
        XCTAssertEqual(describedCounters[.describedServiceMismatches], 0)
        XCTAssertEqual(framesDescribed(&parsed, parsedCounters), 0)
        XCTAssertEqual(describedCounters[.newConnections], parsedCounters[.newConnections])
        XCTAssertEqual(describedCounters[.repliesTranslated], 3)
    }

    func testADescriptionThatDoesNotFitItsFrameIsNotTrusted() {
        let counters = WorkerCounterBlock(), referenceCounters = WorkerCounterBlock()
        var engine = ForwardingEngine(snapshot: snapshot(), connectionCapacity: 1024, counters: counters)
        var reference = ForwardingEngine(snapshot: snapshot(), connectionCapacity: 1024, counters: referenceCounters)
        let syn = PacketBuilder.tcp(client, 41000, "203.0.113.20", 80, flags: TCPFlags.syn).build()
        let (expectedVerdict, expected, _) = run(&reference, syn, .none)
        XCTAssertTrue(expectedVerdict.isTransmit)

        // What the program would write, then one byte changed: the seal no longer matches, the frame is parsed.
        var written = [UInt8](repeating: 0, count: FrameMetadata.size) + syn
        _ = written.withUnsafeMutableBytes { FrameMetadata.describe($0.baseAddress! + FrameMetadata.size, length: syn.count, service: 1) }
        var tampered = Array(written.prefix(FrameMetadata.size))
        tampered[6] ^= 0x04  // the IP header's offset
        var (verdict, out, _) = run(&engine, syn, .raw(tampered))
        XCTAssertEqual(verdict, expectedVerdict)
        XCTAssertEqual(out, expected)
        XCTAssertEqual(framesDescribed(&engine, counters), 0, "a broken seal: parsed in full")

        // A service index another configuration gave (a reload between the program's map and this snapshot),
        // or none at all: the look-up decides, the frame still reaches its own service.
        for named in [0, 4, 99] {
            var reference = ForwardingEngine(snapshot: snapshot(), connectionCapacity: 1024, counters: WorkerCounterBlock())
            let (_, expected, _) = run(&reference, syn, .none)
            let counters = WorkerCounterBlock()
            var engine = ForwardingEngine(snapshot: snapshot(), connectionCapacity: 1024, counters: counters)
            (verdict, out, _) = run(&engine, syn, .program(service: named))
            XCTAssertTrue(verdict.isTransmit, "named \(named)")
            XCTAssertEqual(out, expected, "named \(named): forwarded by service 1")
            XCTAssertEqual(counters[.describedServiceMismatches], 1, "named \(named): counted")
        }

        // Sealed, but its offsets point past the frame: never read from, the frame is parsed instead.
        for (l3, l4, packetLength) in [(14, 250, 40), (14, 30, 40), (200, 220, 40), (14, 34, 4000)] as [(UInt32, UInt32, UInt32)] {
            let service: UInt32 = 1
            let lengths = packetLength | l3 << 16 | l4 << 24
            let kind = UInt32(IPProtocolNumber.tcp) | UInt32(XD_FAMILY_IPV4) << 8
            let seal = xd_frame_meta_seal(service, lengths, kind, UInt32(syn.count))
            var forged: [UInt8] = []
            for word in [service, lengths, kind, seal] { withUnsafeBytes(of: word.littleEndian) { forged += $0 } }
            let counters = WorkerCounterBlock()
            var engine = ForwardingEngine(snapshot: snapshot(), connectionCapacity: 1024, counters: counters)
            (verdict, out, _) = run(&engine, syn, .raw(forged))
            XCTAssertEqual(out, expected, "l3 \(l3), l4 \(l4), length \(packetLength)")
            XCTAssertEqual(framesDescribed(&engine, counters), 0, "l3 \(l3), l4 \(l4), length \(packetLength)")
        }
    }
}
