import CXDirectorShared
import Dataplane
import Packet
import Scheduling
import XCTest
import XDirectorTestSupport

/// The worker's per-packet logic on fixture frames: connection affinity, scheduling, drops by reason.
final class ForwardingEngineTests: XCTestCase {
    private let interfaceMAC = MACAddress("02:aa:00:00:00:01")!
    private let realA = MACAddress("0e:00:00:00:00:0a")!
    private let realB = MACAddress("0e:00:00:00:00:0b")!
    private let vip = IPAddress("203.0.113.10")!

    private func snapshot(weights: (Int32, Int32) = (3, 1), macs: (MACAddress?, MACAddress?)? = nil) -> ForwardingSnapshot {
        let macs = macs ?? (realA, realB)
        return ForwardingSnapshot(interfaceMAC: interfaceMAC, services: [
            SnapshotService(key: ServiceKey(proto: .tcp, address: vip, port: 80), scheduler: .wrr,
                            destinations: [SnapshotDestination(weight: weights.0, mac: macs.0),
                                           SnapshotDestination(weight: weights.1, mac: macs.1)]),
            SnapshotService(key: ServiceKey(proto: .udp, address: IPAddress("2001:db8:10::10")!, port: 53),
                            scheduler: .rr, destinations: [SnapshotDestination(weight: 1, mac: realB)]),
        ])
    }

    /// Runs one frame through the engine; returns the verdict and the frame's destination MAC afterwards.
    private func send(_ engine: inout ForwardingEngine, _ builder: PacketBuilder, now: UInt32 = 100) -> (FrameVerdict, MACAddress) {
        var frame = builder.build()
        let verdict = frame.withUnsafeMutableBytes { engine.process($0.baseAddress!, length: $0.count, now: now) }
        return (verdict, MACAddress(bytes: frame[0..<6])!)
    }

    private func syn(port: UInt16) -> PacketBuilder { .tcp("198.51.100.1", port, "203.0.113.10", 80, flags: TCPFlags.syn) }
    private func ack(port: UInt16) -> PacketBuilder { .tcp("198.51.100.1", port, "203.0.113.10", 80, flags: TCPFlags.ack) }

    func testNewConnectionsFollowWeightsAndEveryPacketStaysWithItsServer() {
        let counters = WorkerCounterBlock()
        var engine = ForwardingEngine(snapshot: snapshot(), connectionCapacity: 1024, counters: counters)
        var chosen: [UInt16: MACAddress] = [:]
        for port in UInt16(40000)..<40008 {
            let (verdict, mac) = send(&engine, syn(port: port))
            XCTAssertTrue(verdict.isTransmit)
            chosen[port] = mac
        }
        XCTAssertEqual(chosen.values.filter { $0 == realA }.count, 6, "wrr 3:1 over 8 connections")
        XCTAssertEqual(chosen.values.filter { $0 == realB }.count, 2)
        for port in UInt16(40000)..<40008 {
            for _ in 0..<3 {
                let (verdict, mac) = send(&engine, ack(port: port))
                XCTAssertTrue(verdict.isTransmit)
                XCTAssertEqual(mac, chosen[port], "every packet of connection \(port) goes to its real server")
            }
        }
        XCTAssertEqual(counters[.newConnections], 8)
    }

    func testDropsAreCountedByReason() {
        let counters = WorkerCounterBlock()
        var engine = ForwardingEngine(snapshot: snapshot(), connectionCapacity: 1024, counters: counters)
        XCTAssertEqual(send(&engine, ack(port: 41000)).0, .drop(.dropTCPWithoutConnection), "as IPVS: only a SYN is scheduled")
        XCTAssertEqual(send(&engine, .tcp("198.51.100.1", 41001, "203.0.113.10", 81, flags: TCPFlags.syn)).0, .drop(.dropNoService),
                       "not a service (any more), and no translated connection's reply either")
        var truncated = syn(port: 41002).build()
        truncated.removeLast(10)
        let verdict = truncated.withUnsafeMutableBytes { engine.process($0.baseAddress!, length: $0.count, now: 100) }
        XCTAssertEqual(verdict, .drop(.dropTruncated))
        XCTAssertEqual(counters[.newConnections], 0)
    }

    func testTheIPv4HeaderChecksumIsCheckedWhereAPacketCreatesState() {
        let counters = WorkerCounterBlock()
        var engine = ForwardingEngine(snapshot: snapshot(), connectionCapacity: 1024, counters: counters)
        func corrupted(_ builder: PacketBuilder) -> [UInt8] {
            var frame = builder.build()
            frame[24] ^= 0x5A
            return frame
        }
        var badSYN = corrupted(syn(port: 43000))
        XCTAssertEqual(badSYN.withUnsafeMutableBytes { engine.process($0.baseAddress!, length: $0.count, now: 100) },
                       .drop(.dropBadIPv4Checksum), "a corrupt SYN opens nothing")
        XCTAssertEqual(engine.connectionCount, 0)
        XCTAssertTrue(send(&engine, syn(port: 43000)).0.isTransmit)
        // Established: forwarded, the checksum updated incrementally, so it stays wrong for the receiver to see.
        var badACK = corrupted(ack(port: 43000))
        XCTAssertTrue(badACK.withUnsafeMutableBytes { engine.process($0.baseAddress!, length: $0.count, now: 100) }.isTransmit)
        XCTAssertNotEqual(ReferenceChecksum.onesComplementSum(Array(badACK[14..<34])), 0xFFFF)
        XCTAssertEqual(counters[.newConnections], 1)
    }

    func testUDPOverIPv6IsForwarded() {
        var engine = ForwardingEngine(snapshot: snapshot(), connectionCapacity: 1024, counters: WorkerCounterBlock())
        let (verdict, mac) = send(&engine, .udp("2001:db8:1::1", 5353, "2001:db8:10::10", 53, payload: [1, 2, 3]))
        XCTAssertTrue(verdict.isTransmit)
        XCTAssertEqual(mac, realB)
    }

    func testUnresolvedAndQuiescedServersGetNoNewConnections() {
        var engine = ForwardingEngine(snapshot: snapshot(macs: (nil, realB)), connectionCapacity: 1024, counters: WorkerCounterBlock())
        for port in UInt16(42000)..<42006 { XCTAssertEqual(send(&engine, syn(port: port)).1, realB) }

        engine.adopt(snapshot(weights: (0, 1)))
        for port in UInt16(43000)..<43004 { XCTAssertEqual(send(&engine, syn(port: port)).1, realB, "weight 0 quiesces") }

        engine.adopt(snapshot(macs: (nil, nil)))
        XCTAssertEqual(send(&engine, syn(port: 44000)).0, .drop(.dropNoDestination))
        XCTAssertEqual(send(&engine, ack(port: 42000)).0, .drop(.dropUnresolvedDestination),
                       "an open connection whose server lost its MAC is dropped, not moved")
    }

    func testAConnectionOutlivesASnapshotChange() {
        var engine = ForwardingEngine(snapshot: snapshot(), connectionCapacity: 1024, counters: WorkerCounterBlock())
        let (_, first) = send(&engine, syn(port: 45000))
        engine.adopt(snapshot(weights: (1, 1)))
        XCTAssertEqual(send(&engine, ack(port: 45000)).1, first)
    }
}

/// The structs the XDP program and Swift share have the layout both sides rely on.
final class SharedLayoutTests: XCTestCase {
    func testSharedStructSizes() {
        XCTAssertEqual(MemoryLayout<xd_service_key>.size, 20)
        XCTAssertEqual(MemoryLayout<xd_service_value>.size, 8)
        XCTAssertEqual(MemoryLayout<xd_service_key>.offset(of: \.port), 16)
        XCTAssertEqual(MemoryLayout<xd_director>.size, 24)
        XCTAssertEqual(MemoryLayout<xd_director>.offset(of: \.grace_ns), 16)
        XCTAssertEqual(MemoryLayout<xd_heartbeat>.stride, 64)
        XCTAssertEqual(Int(XD_XDP_COUNTER_COUNT.rawValue), 13)
    }
}
