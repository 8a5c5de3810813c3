import Dataplane
import Packet
import Scheduling
import XCTest
import XDirectorTestSupport

/// Configuration changes under traffic, per-real-server traffic counters and the connection listing,
/// through the engine on fixture frames.
final class LiveChangeEngineTests: XCTestCase {
    private let interfaceMAC = MACAddress("02:aa:00:00:00:01")!
    private let macs = [MACAddress("0e:00:00:00:00:0a")!, MACAddress("0e:00:00:00:00:0b")!, MACAddress("0e:00:00:00:00:0c")!]
    private let counterStore = DestinationCounterStore(capacity: 64)
    private let traffic = DestinationTrafficStore(workers: 2, capacity: 64)
    /// The cells of the three DR servers and of the NAT server.
    private lazy var cells = (0..<4).map { _ in counterStore.allocate()! }

    private func server(_ index: Int) -> SnapshotDestination {
        SnapshotDestination(weight: 1, mac: macs[index], cell: cells[index],
                            endpointHash: StableHash.endpoint(.v4(0xC633_640B + UInt32(index)), port: 80),
                            route: DestinationRoute(method: .directRouting, address: .v4(0xC633_640B + UInt32(index)), port: 80))
    }

    /// A DR service on 203.0.113.10:80 over `scheduled` (and `draining`) servers, a NAT service on
    /// 203.0.113.20:80 to 198.51.100.11:8080.
    private func snapshot(scheduled: [Int] = [0, 1, 2], draining: [Int] = [], persistence: UInt32 = 0) -> ForwardingSnapshot {
        let nat = SnapshotDestination(weight: 1, mac: macs[0], cell: cells[3],
                                      route: DestinationRoute(method: .masquerading, address: IPAddress("198.51.100.11")!, port: 8080))
        return ForwardingSnapshot(interfaceMAC: interfaceMAC, services: [
            SnapshotService(key: ServiceKey(proto: .tcp, address: IPAddress("203.0.113.10")!, port: 80),
                            policy: ServicePolicy(scheduler: .rr, persistenceTimeout: persistence),
                            destinations: scheduled.map(server), draining: draining.map(server)),
            SnapshotService(key: ServiceKey(proto: .tcp, address: IPAddress("203.0.113.20")!, port: 80),
                            policy: ServicePolicy(scheduler: .rr), destinations: [nat]),
        ], counters: counterStore, traffic: traffic)
    }

    private func engine(_ snapshot: ForwardingSnapshot, replies: ReplyIndex? = nil, worker: Int = 0) -> ForwardingEngine {
        ForwardingEngine(snapshot: snapshot, connectionCapacity: 1024, counters: WorkerCounterBlock(), replies: replies,
                         worker: worker)
    }

    /// Runs one frame through the engine: the verdict, the destination MAC afterwards and the frame's length.
    private func send(_ engine: inout ForwardingEngine, _ builder: PacketBuilder) -> (FrameVerdict, MACAddress, Int) {
        var frame = builder.build()
        let verdict = frame.withUnsafeMutableBytes { engine.process($0.baseAddress!, length: $0.count, now: 100) }
        return (verdict, MACAddress(bytes: frame[0..<6])!, frame.count)
    }

    private func dr(_ port: UInt16, _ flags: UInt8, payload: [UInt8] = []) -> PacketBuilder {
        .tcp("198.51.100.1", port, "203.0.113.10", 80, flags: flags, payload: payload)
    }

    func testDirectRoutingCountsConnectionsAndInboundTraffic() {
        var e = engine(snapshot())
        let (verdict, mac, synLength) = send(&e, dr(40000, TCPFlags.syn))
        XCTAssertTrue(verdict.isTransmit)
        let cell = cells[macs.firstIndex(of: mac)!]
        let (_, _, ackLength) = send(&e, dr(40000, TCPFlags.ack, payload: Array(repeating: 7, count: 100)))
        _ = send(&e, dr(40000, TCPFlags.ack))
        // Dropped frames count nothing: a segment of no connection.
        XCTAssertEqual(send(&e, dr(40001, TCPFlags.ack)).0, .drop(.dropTCPWithoutConnection))
        let expected = TrafficStats(connections: 1, inPackets: 3, inBytes: UInt64(2 * synLength + ackLength))
        XCTAssertEqual(traffic.totals(cell), expected)
        XCTAssertEqual(traffic.worker(0, cell), expected)
        XCTAssertEqual(traffic.worker(1, cell), .zero)
        for other in cells where other != cell { XCTAssertEqual(traffic.totals(other), .zero) }
    }

    func testMasqueradingCountsTheReplyOnTheServerOfItsConnection() throws {
        let replies = ReplyIndex(partitions: 2, entriesPerPartition: 1024)
        let s = snapshot()
        var a = engine(s, replies: replies, worker: 0)
        var b = engine(s, replies: replies, worker: 1)
        let (verdict, _, requestLength) = send(&a, .tcp("198.51.100.1", 40000, "203.0.113.20", 80, flags: TCPFlags.syn))
        XCTAssertTrue(verdict.isTransmit)
        let reply = PacketBuilder.tcp("198.51.100.11", 8080, "198.51.100.1", 40000, flags: TCPFlags.syn | TCPFlags.ack,
                                      payload: [1, 2, 3])
        let (replyVerdict, _, replyLength) = send(&b, reply)
        XCTAssertTrue(replyVerdict.isTransmit)
        XCTAssertEqual(traffic.totals(cells[3]), TrafficStats(connections: 1, inPackets: 1, outPackets: 1,
                                                             inBytes: UInt64(requestLength), outBytes: UInt64(replyLength)))
        XCTAssertEqual(traffic.worker(1, cells[3]), TrafficStats(outPackets: 1, outBytes: UInt64(replyLength)),
                       "the worker that translated the reply counted it")
    }

    func testICMPErrorsOfAConnectionCountAsItsTraffic() throws {
        var e = engine(snapshot())
        // NAT: the real server reports a problem with a packet we sent it; it goes back to the client.
        _ = send(&e, .tcp("198.51.100.1", 40000, "203.0.113.20", 80, flags: TCPFlags.syn))
        let sent = PacketBuilder.tcp("198.51.100.1", 40000, "198.51.100.11", 8080, flags: TCPFlags.syn)
        let fromServer = PacketBuilder.icmpError("198.51.100.11", "198.51.100.1", type: 3, code: 3, quoting: sent, quoteLength: 28)
        let (outVerdict, _, outLength) = send(&e, fromServer)
        XCTAssertTrue(outVerdict.isTransmit)
        XCTAssertEqual(traffic.totals(cells[3]).outPackets, 1)
        XCTAssertEqual(traffic.totals(cells[3]).outBytes, UInt64(outLength))
        // DR: the client reports a problem with a reply (from the VIP); it goes to the connection's server.
        let (_, mac, synLength) = send(&e, dr(40001, TCPFlags.syn))
        let reply = PacketBuilder.tcp("203.0.113.10", 80, "198.51.100.1", 40001, flags: TCPFlags.syn | TCPFlags.ack)
        let fromClient = PacketBuilder.icmpError("198.51.100.1", "203.0.113.10", type: 3, code: 3, quoting: reply, quoteLength: 28)
        let (inVerdict, inMAC, inLength) = send(&e, fromClient)
        XCTAssertTrue(inVerdict.isTransmit)
        XCTAssertEqual(inMAC, mac)
        let cell = cells[macs.firstIndex(of: mac)!]
        XCTAssertEqual(traffic.totals(cell), TrafficStats(connections: 1, inPackets: 2, inBytes: UInt64(synLength + inLength)))
    }

    /// Opens `count` connections (SYN, ACK) from ports 41000...; returns each port's server MAC.
    private func open(_ e: inout ForwardingEngine, count: Int) -> [UInt16: MACAddress] {
        var chosen: [UInt16: MACAddress] = [:]
        for port in UInt16(41000)..<41000 + UInt16(count) {
            let (verdict, mac, _) = send(&e, dr(port, TCPFlags.syn))
            XCTAssertTrue(verdict.isTransmit)
            XCTAssertTrue(send(&e, dr(port, TCPFlags.ack)).0.isTransmit)
            chosen[port] = mac
        }
        return chosen
    }

    func testRemovingOneOfThreeServersKeepsTheOtherConnectionsOnTheirServers() {
        var e = engine(snapshot())
        let chosen = open(&e, count: 30)
        XCTAssertEqual(Set(chosen.values).count, 3)
        e.adopt(snapshot(scheduled: [0, 2]))
        for (port, mac) in chosen.sorted(by: { $0.key < $1.key }) {
            let (verdict, now, _) = send(&e, dr(port, TCPFlags.ack))
            if mac == macs[1] {
                XCTAssertEqual(verdict, .drop(.dropTCPWithoutConnection), "the removed server's connection ends")
            } else {
                XCTAssertTrue(verdict.isTransmit)
                XCTAssertEqual(now, mac, "connection \(port) stays on its server")
            }
        }
        // And back: server 1 returns in the middle, the others keep their connections.
        e.adopt(snapshot(scheduled: [2, 1, 0]))
        for (port, mac) in chosen where mac != macs[1] { XCTAssertEqual(send(&e, dr(port, TCPFlags.ack)).1, mac) }
    }

    func testADrainingServerStillReceivesItsConnectionsFrames() {
        var e = engine(snapshot())
        let chosen = open(&e, count: 9)
        e.adopt(snapshot(scheduled: [0, 2], draining: [1]))
        for (port, mac) in chosen {
            let (verdict, now, _) = send(&e, dr(port, TCPFlags.ack))
            XCTAssertTrue(verdict.isTransmit)
            XCTAssertEqual(now, mac)
        }
        for port in UInt16(42000)..<42020 {
            let (verdict, mac, _) = send(&e, dr(port, TCPFlags.syn))
            XCTAssertTrue(verdict.isTransmit)
            XCTAssertNotEqual(mac, macs[1], "nothing new to a draining server")
        }
        XCTAssertEqual(traffic.totals(cells[1]).inPackets, 3 * 2 + 3, "its connections' frames are still counted")
        XCTAssertEqual(counterStore.counts(cells[1]).active, 3)
    }

    func testListConnections() {
        var e = engine(snapshot(persistence: 300))
        let (_, mac, _) = send(&e, dr(40000, TCPFlags.syn))
        _ = send(&e, dr(40000, TCPFlags.ack))
        let index = macs.firstIndex(of: mac)!
        let server = L4Endpoint(address: .v4(0xC633_640B + UInt32(index)), port: 80)
        let vip = L4Endpoint(address: IPAddress("203.0.113.10")!, port: 80)
        let records = e.listConnections(now: 101)
        XCTAssertEqual(records.count, 2)
        let connection = records.first { !$0.isTemplate }
        XCTAssertEqual(connection?.client, L4Endpoint(address: IPAddress("198.51.100.1")!, port: 40000))
        XCTAssertEqual(connection?.virtual, vip)
        XCTAssertEqual(connection?.destination, server)
        XCTAssertEqual(connection?.state, .established)
        XCTAssertEqual(connection?.proto, IPProtocolNumber.tcp)
        XCTAssertEqual(connection?.expiresIn, ConnectionTimeouts().tcpEstablished - 1)
        let template = records.first { $0.isTemplate }
        XCTAssertEqual(template?.client, L4Endpoint(address: IPAddress("198.51.100.1")!, port: 0))
        XCTAssertEqual(template?.virtual, vip)
        XCTAssertEqual(template?.destination, server)
        XCTAssertEqual(template?.expiresIn, 299)
        // A removed server's connections are not listed.
        e.adopt(snapshot(scheduled: [0, 1, 2].filter { $0 != index }, persistence: 300))
        XCTAssertEqual(e.listConnections(now: 101), [])
    }
}
