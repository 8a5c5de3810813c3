import Packet
@testable import Scheduling
import XCTest

/// A full connection table under a SYN flood: spoofed half-open entries make room for real connections,
/// established ones are never evicted, and no flow ever changes real server, tracked or not.
final class FullTableTests: XCTestCase {
    let syn: UInt8 = 0x02, ack: UInt8 = 0x10, rst: UInt8 = 0x04
    typealias Fixture = ConnectionTrackerTests.Fixture

    func flow(_ n: UInt32, proto: UInt8 = IPProtocolNumber.tcp) -> FlowKey {
        FlowKey(source: .v4(0x0A00_0000 + n), sourcePort: UInt16(truncatingIfNeeded: 1024 + n), destination: .v4(0xC000_020A),
                destinationPort: 80, proto: proto)
    }

    /// A spoofed SYN from a 172.16/12 address, never answered.
    func spoofed(_ n: UInt32) -> FlowKey {
        FlowKey(source: .v4(0xAC10_0000 + n), sourcePort: 40000, destination: .v4(0xC000_020A), destinationPort: 80,
                proto: IPProtocolNumber.tcp)
    }

    func destination(_ admission: Admission) -> Int? {
        switch admission {
        case .existing(let d, _), .new(let d, _), .overflow(let d): return d
        case .drop: return nil
        }
    }

    func state(_ f: Fixture, _ key: FlowKey, at now: UInt32) -> ConnectionState? {
        f.tracker.liveConnections(now: now).first { $0.key == key }?.state
    }

    /// Fills a DR service's table of `capacity` with spoofed SYNs at `now` (the last quarter placed by their
    /// stable choice, rederivable).
    func flood(_ f: Fixture, from first: UInt32 = 0, count: Int, at now: UInt32) {
        for n in first..<first + UInt32(count) { _ = f.admit(spoofed(n), syn, at: now) }
    }

    func testALegitimateSYNGetsAnEntryInATableFullOfHalfOpenOnes() throws {
        let f = Fixture([1, 1, 1], policy: ServicePolicy(scheduler: .rr), capacity: 64)
        flood(f, count: 64, at: 0)
        XCTAssertEqual(f.tracker.connectionCount, 64)
        _ = f.tracker.takeFloodCounts()
        // The table is full of half-open entries: more spoofed SYNs churn among the rederivable ones.
        flood(f, from: 1000, count: 200, at: 1)
        XCTAssertEqual(f.tracker.takeFloodCounts().halfOpenEvicted, 200)
        XCTAssertEqual(f.tracker.connectionCount, 64)

        guard case .new(let server, let slot?) = f.admit(flow(1), syn, at: 1) else { return XCTFail("no entry") }
        XCTAssertEqual(f.tracker.takeFloodCounts().halfOpenEvicted, 1)
        XCTAssertEqual(f.admit(flow(1), ack, at: 1), .existing(destination: server, slot: slot))
        XCTAssertEqual(state(f, flow(1), at: 1), .established)
        // Established, it outlives any number of spoofed SYNs.
        flood(f, from: 2000, count: 500, at: 2)
        XCTAssertEqual(f.admit(flow(1), ack, at: 3), .existing(destination: server, slot: slot))
    }

    /// (12 flows: the flood's first three quarters were scheduled, not rederivable, and stay until their
    /// SYN_RECV timeout; a flow beyond the last quarter would stay untracked, on its server, until then.)
    func testAFlowWhoseHalfOpenEntryWasEvictedKeepsItsServer() throws {
        let f = Fixture([1, 1, 1], policy: ServicePolicy(scheduler: .rr), capacity: 64)
        flood(f, count: 64, at: 0)
        var servers: [UInt32: Int] = [:]
        for n: UInt32 in 1...12 {
            guard case .new(let server, _) = f.admit(flow(n), syn, at: 1) else { return XCTFail("no entry for \(n)") }
            servers[n] = server
        }
        // The flood goes on before the handshakes complete: most of those half-open entries are evicted.
        flood(f, from: 1000, count: 1000, at: 1)
        let survivors = f.tracker.liveConnections(now: 1).filter { $0.key.source.description.hasPrefix("10.") }.count
        XCTAssertLessThan(survivors, 12)
        _ = f.tracker.takeFloodCounts()
        // Each segment goes to the flow's server, tracked or not; a flow still without entry (no evictable entry
        // was found near it) gets one at a later segment.
        for now: UInt32 in 1...4 {
            for n: UInt32 in 1...12 {
                let admission = f.admit(flow(n), ack, at: now)
                XCTAssertEqual(destination(admission), servers[n], "flow \(n) at \(now): \(admission)")
            }
        }
        for n: UInt32 in 1...12 {
            guard case .existing = f.admit(flow(n), ack, at: 5) else { return XCTFail("flow \(n) has no entry") }
            XCTAssertEqual(state(f, flow(n), at: 5), .established)
        }
        // Exactly the flows that lost their entry were given one again mid-flow.
        XCTAssertEqual(f.tracker.takeFloodCounts().midFlowConnections, 12 - survivors)
    }

    func testEstablishedEntriesAreNeverEvicted() throws {
        let f = Fixture([1, 1, 1], policy: ServicePolicy(scheduler: .rr), capacity: 64)
        var slots: [UInt32: Admission] = [:]
        for n: UInt32 in 0..<64 {
            _ = f.admit(flow(n), syn, at: 0)
            slots[n] = f.admit(flow(n), ack, at: 0)
        }
        XCTAssertEqual(f.tracker.connectionCount, 64)
        for n: UInt32 in 0..<1000 {
            guard case .overflow = f.admit(spoofed(n), syn, at: 1) else { return XCTFail("spoofed SYN \(n) got an entry") }
        }
        XCTAssertEqual(f.tracker.takeFloodCounts().halfOpenEvicted, 0)
        for n: UInt32 in 0..<64 { XCTAssertEqual(f.admit(flow(n), ack, at: 2), slots[n], "flow \(n)") }
    }

    /// The case: flows admitted while the table is full of live entries stay alive past the last
    /// failed insert plus the timeouts, and get their entries, on the same server, once there is room.
    func testAnUntrackedFlowGetsItsEntryOnTheSameServerOnceThereIsRoom() throws {
        let timeouts = ConnectionTimeouts(tcpEstablished: 20, tcpFin: 20, udp: 20)
        let f = Fixture([1, 1, 1], policy: ServicePolicy(scheduler: .rr), capacity: 64, timeouts: timeouts)
        for n: UInt32 in 100..<164 {
            _ = f.admit(flow(n), syn, at: 0)
            _ = f.admit(flow(n), ack, at: 0)
        }
        var servers: [UInt32: Int] = [:]
        for n: UInt32 in 1...8 {
            guard case .overflow(let server) = f.admit(flow(n), syn, at: 0) else { return XCTFail("flow \(n) got an entry") }
            servers[n] = server
        }
        // Untracked while the table stays full, every segment to the same server.
        for now: UInt32 in 1..<20 {
            for n: UInt32 in 1...8 { XCTAssertEqual(f.admit(flow(n), ack, at: now), .overflow(destination: servers[n]!)) }
        }
        // At 20 the others have expired: each untracked flow gets its entry at its next segment, same server.
        for n: UInt32 in 1...8 {
            guard case .new(let server, _?) = f.admit(flow(n), ack, at: 20) else { return XCTFail("flow \(n) not tracked") }
            XCTAssertEqual(server, servers[n])
            XCTAssertEqual(state(f, flow(n), at: 20), .established)
        }
        XCTAssertEqual(f.tracker.takeFloodCounts().midFlowConnections, 8)
        // Tracked now: they live on with their own timer, long after the last failed insert.
        for now: UInt32 in stride(from: 30, through: 300, by: 10) {
            for n: UInt32 in 1...8 {
                guard case .existing(let server, _) = f.admit(flow(n), ack, at: now) else { return XCTFail("flow \(n) at \(now)") }
                XCTAssertEqual(server, servers[n])
            }
        }
    }

    func testUntrackedDatagramFlowsKeepTheirServerWhenTracked() throws {
        let timeouts = ConnectionTimeouts(udp: 20)
        let f = Fixture([1, 1, 1], policy: ServicePolicy(scheduler: .rr), capacity: 64, timeouts: timeouts)
        for n: UInt32 in 100..<164 { _ = f.admit(flow(n, proto: IPProtocolNumber.udp), 0, at: 0) }
        var servers: [UInt32: Int] = [:]
        for n: UInt32 in 1...12 {
            guard case .overflow(let server) = f.admit(flow(n, proto: IPProtocolNumber.udp), 0, at: 0) else {
                return XCTFail("flow \(n) got an entry")
            }
            servers[n] = server
        }
        for n: UInt32 in 1...12 {
            XCTAssertEqual(f.admit(flow(n, proto: IPProtocolNumber.udp), 0, at: 10), .overflow(destination: servers[n]!))
        }
        // At 20 the others have expired and are reclaimed: below three quarters, where a new flow is scheduled,
        // the untracked ones still get their stable choice.
        f.tracker.sweep(now: 20, limit: 1 << 20)
        XCTAssertEqual(f.tracker.connectionCount, 0)
        for n: UInt32 in 1...12 {
            let admission = f.admit(flow(n, proto: IPProtocolNumber.udp), 0, at: 20)
            guard case .new(let server, _?) = admission else { return XCTFail("flow \(n): \(admission)") }
            XCTAssertEqual(server, servers[n], "flow \(n)")
        }
    }

    func testHalfOpenEntriesAboveThreeQuartersGetTheShortTimeout() throws {
        let f = Fixture([1, 1], policy: ServicePolicy(scheduler: .rr), capacity: 64)
        for n: UInt32 in 0..<64 { _ = f.admit(flow(n), syn, at: 10) }
        let entries = Dictionary(uniqueKeysWithValues: f.tracker.liveConnections(now: 10).map { ($0.key, $0) })
        for n: UInt32 in 0..<48 {
            XCTAssertEqual(entries[flow(n)]?.expires, 10 + 60, "flow \(n): SYN_RECV's own timeout below 3/4")
        }
        for n: UInt32 in 48..<64 {
            XCTAssertEqual(entries[flow(n)]?.expires, 10 + ConnectionTable.rederivableHalfOpenTimeout, "flow \(n)")
        }
        // Its ACK makes it ESTABLISHED with the usual timeout.
        _ = f.admit(flow(60), ack, at: 11)
        XCTAssertEqual(f.tracker.liveConnections(now: 11).first { $0.key == flow(60) }?.expires, 11 + 900)
    }

    func testServicesKeepingMoreThanTheEntryAreNeitherRederivableNorEvicted() throws {
        for policy in [ServicePolicy(scheduler: .rr, seesReplies: true), ServicePolicy(scheduler: .rr, persistenceTimeout: 300)] {
            let f = Fixture([1, 1], policy: policy, capacity: 64)
            for n: UInt32 in 0..<64 { _ = f.admit(flow(n), syn, at: 0) }
            XCTAssertTrue(f.tracker.liveConnections(now: 0).allSatisfy { $0.expires == 60 }, "\(policy)")
            guard case .overflow = f.admit(flow(100), syn, at: 1) else { return XCTFail("\(policy): an entry was evicted") }
            XCTAssertEqual(f.tracker.takeFloodCounts().halfOpenEvicted, 0)
        }
    }

    func testAStrayResetOpensNothing() throws {
        let f = Fixture([1, 1], policy: ServicePolicy(scheduler: .rr), capacity: 64)
        XCTAssertEqual(f.admit(flow(1), rst, at: 0), .drop(.noConnection))
        XCTAssertEqual(f.admit(flow(1), ack, at: 0), .drop(.noConnection), "no flow can be untracked yet")
        for n: UInt32 in 100..<164 {
            _ = f.admit(flow(n), syn, at: 0)
            _ = f.admit(flow(n), ack, at: 0)
        }
        guard case .overflow(let server) = f.admit(flow(1), syn, at: 0) else { return XCTFail() }
        XCTAssertEqual(f.admit(flow(1), rst, at: 1), .overflow(destination: server))
        XCTAssertEqual(f.tracker.connectionCount, 64)
    }
}

final class ConnectionTableEvictionTests: XCTestCase {
    func tcp(_ n: UInt32) -> FlowKey {
        FlowKey(source: .v4(0x0A00_0000 | n), sourcePort: 1234, destination: .v4(0xC633_6401), destinationPort: 80,
                proto: IPProtocolNumber.tcp)
    }

    func testOnlyRederivableHalfOpenEntriesAreEvicted() throws {
        var table = ConnectionTable(capacity: 4)
        let a = try XCTUnwrap(table.insert(tcp(1), service: 0, destination: 1, tcpFlags: 0x02, now: 0, rederivable: true))
        let b = try XCTUnwrap(table.insert(tcp(2), service: 0, destination: 2, tcpFlags: 0x02, now: 1, rederivable: true))
        _ = try XCTUnwrap(table.insert(tcp(3), service: 0, destination: 3, tcpFlags: 0x02, now: 0))
        _ = try XCTUnwrap(table.insert(tcp(4), service: 0, destination: 4, tcpFlags: 0x02, now: 0))
        XCTAssertTrue(table.isRederivable(at: a))
        table.update(at: b, tcpFlags: 0x10, now: 1)  // ESTABLISHED: no longer half-open
        let newcomer = try XCTUnwrap(table.insert(tcp(5), service: 0, destination: 5, tcpFlags: 0x02, now: 2))
        XCTAssertEqual(table.takeEvictions(), 1)
        XCTAssertNil(table.find(tcp(1), now: 2), "the half-open rederivable entry made room")
        for n: UInt32 in 2...4 { XCTAssertNotNil(table.find(tcp(n), now: 2), "flow \(n)") }
        XCTAssertEqual(table.find(tcp(5), now: 2), newcomer)
        XCTAssertNil(table.insert(tcp(6), service: 0, destination: 6, tcpFlags: 0x02, now: 2))
        XCTAssertEqual(table.takeEvictions(), 0)
        XCTAssertEqual(table.count, 4)
    }

    /// A window holding only live entries: the newcomer can only go there, in place of the rederivable half-open
    /// entry nearest expiry.
    func testAFullWindowEvictsItsHalfOpenEntryNearestExpiry() throws {
        var table = ConnectionTable(capacity: 32)
        XCTAssertEqual(table.slotCount, 64)
        // 33 flows whose home is slot 0: the first 32 fill slots 0 ..< 32, the whole window of the last.
        let homeZero = (0..<UInt32(1_000_000)).lazy.map { self.tcp($0) }.filter { Int($0.flowHash) & 63 == 0 }
        let flows = Array(homeZero.prefix(33))
        XCTAssertEqual(flows.count, 33)
        for (index, flow) in flows.prefix(32).enumerated() {
            // Flow 7 was inserted earliest of the rederivable ones; the even ones are not rederivable.
            let now = index == 7 ? 8 : 10
            _ = try XCTUnwrap(table.insert(flow, service: 0, destination: 1, tcpFlags: 0x02, now: UInt32(now),
                                           rederivable: index % 2 == 1))
        }
        XCTAssertEqual(table.count, 32)
        let slot = try XCTUnwrap(table.insert(flows[32], service: 0, destination: 2, tcpFlags: 0x02, now: 10))
        XCTAssertLessThan(slot, 32)
        XCTAssertNil(table.find(flows[7], now: 10), "the half-open entry nearest expiry made room")
        for index in 0..<32 where index != 7 { XCTAssertNotNil(table.find(flows[index], now: 10), "flow \(index)") }
        XCTAssertEqual(table.find(flows[32], now: 10), slot)
    }
}
