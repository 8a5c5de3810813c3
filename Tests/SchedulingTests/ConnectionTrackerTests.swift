import Packet
import Scheduling
import XCTest

final class ConnectionTrackerTests: XCTestCase {
    let syn: UInt8 = 0x02, ack: UInt8 = 0x10, fin: UInt8 = 0x11, rst: UInt8 = 0x04

    func client(_ n: UInt32, port: UInt16 = 40000, proto: UInt8 = IPProtocolNumber.tcp) -> FlowKey {
        FlowKey(source: .v4(0x0A00_0000 + n), sourcePort: port, destination: .v4(0xC000_020A), destinationPort: 80,
                proto: proto)
    }

    /// A tracker over one service with `weights`, plus the buffers it reads (kept alive by the test).
    final class Fixture {
        let servers: CountedDestinations
        var policies: [ServicePolicy]
        var tracker: ConnectionTracker
        var policyBuffer: UnsafeMutableBufferPointer<ServicePolicy>
        var destinationBuffer: UnsafeMutableBufferPointer<SchedulingDestination>

        init(_ weights: [Int32], policy: ServicePolicy, capacity: Int = 1024, timeouts: ConnectionTimeouts = .init(),
             directory: SharedFlowTableView? = nil) {
            servers = CountedDestinations(weights)
            var p = policy
            p.first = 0
            p.count = Int32(weights.count)
            policies = [p]
            tracker = ConnectionTracker(capacity: capacity, counters: servers.store, timeouts: timeouts,
                                        directory: directory)
            policyBuffer = .allocate(capacity: 1)
            destinationBuffer = .allocate(capacity: 0)
            publish()
        }

        deinit { policyBuffer.deallocate(); destinationBuffer.deallocate() }

        /// Re-publishes `servers.list` and `policies` as a new snapshot would.
        func publish() {
            let old = (policyBuffer, destinationBuffer)
            policyBuffer = .allocate(capacity: policies.count)
            _ = policyBuffer.initialize(from: policies)
            destinationBuffer = .allocate(capacity: max(servers.list.count, 1))
            _ = destinationBuffer.initialize(from: servers.list)
            policies[0].count = Int32(servers.list.count)
            policyBuffer[0].count = Int32(servers.list.count)
            tracker.adopt(services: UnsafeBufferPointer(policyBuffer),
                          destinations: UnsafeBufferPointer(rebasing: destinationBuffer[0..<servers.list.count]))
            old.0.deallocate(); old.1.deallocate()
        }

        func admit(_ key: FlowKey, _ flags: UInt8, at now: UInt32) -> Admission {
            tracker.admit(key, tcpFlags: flags, service: 0, now: now)
        }

        func counts(_ index: Int) -> DestinationCounts { servers.store.counts(servers.list[index].cell) }
    }

    func destination(_ admission: Admission) -> Int? {
        switch admission {
        case .existing(let d, _), .new(let d, _), .overflow(let d): return d
        case .drop: return nil
        }
    }

    func testCountsFollowTCPStatesAcrossTheConnection() {
        let f = Fixture([1], policy: ServicePolicy(scheduler: .wlc))
        guard case .new(0, let slot?) = f.admit(client(1), syn, at: 0) else { return XCTFail() }
        XCTAssertEqual(f.counts(0), DestinationCounts(active: 0, inactive: 1))
        XCTAssertEqual(f.admit(client(1), ack, at: 1), .existing(destination: 0, slot: slot))
        XCTAssertEqual(f.counts(0), DestinationCounts(active: 1, inactive: 0))
        _ = f.admit(client(1), fin, at: 2)  // input-only: ESTABLISHED -> FIN_WAIT
        XCTAssertEqual(f.counts(0), DestinationCounts(active: 0, inactive: 1))
        // FIN_WAIT lasts tcpFin (120 s); the sweep then uncounts it.
        f.tracker.sweep(now: 2 + 120, limit: 1 << 20)
        XCTAssertEqual(f.counts(0), DestinationCounts())
    }

    func testStrayTCPIsDroppedAndUDPIsTracked() {
        let f = Fixture([1], policy: ServicePolicy(scheduler: .rr))
        XCTAssertEqual(f.admit(client(1), ack, at: 0), .drop(.noConnection))
        guard case .new(0, _?) = f.admit(client(2, proto: IPProtocolNumber.udp), 0, at: 0) else { return XCTFail() }
        guard case .existing = f.admit(client(2, proto: IPProtocolNumber.udp), 0, at: 299) else { return XCTFail() }
        guard case .new = f.admit(client(2, proto: IPProtocolNumber.udp), 0, at: 299 + 300) else { return XCTFail() }
    }

    /// Behind ECMP: a mid-flow segment of a flow this director never saw is scheduled, for a consistent-hash
    /// service, to the server its SYN got on another director (the same servers), and tracked from then on;
    /// a RST opens nothing; other schedulers drop it as IPVS does.
    func testConsistentHashServicesPickUpFlowsMidWay() {
        for scheduler in [SchedulerKind.mh, .sh] {
            let first = Fixture([1, 1, 1, 1, 1], policy: ServicePolicy(scheduler: scheduler))
            let second = Fixture([1, 1, 1, 1, 1], policy: ServicePolicy(scheduler: scheduler))
            var spread = Set<Int>()
            for n in 0..<200 {
                let key = client(UInt32(n) * 7919, port: UInt16(20000 + n))
                guard let original = destination(first.admit(key, syn, at: 0)) else { return XCTFail("\(scheduler)") }
                spread.insert(original)
                XCTAssertEqual(second.admit(key, rst, at: 1), .drop(.noConnection), "\(scheduler): a RST opens nothing")
                guard case .new(let taken, let slot?) = second.admit(key, ack, at: 1) else { return XCTFail("\(scheduler)") }
                XCTAssertEqual(taken, original, "\(scheduler): the other director picks the flow's server")
                XCTAssertEqual(second.admit(key, ack | 0x08, at: 2), .existing(destination: original, slot: slot))
            }
            XCTAssertEqual(spread.count, 5, "\(scheduler): flows spread over every server")
            XCTAssertEqual((0..<5).map { second.counts($0).active }.reduce(0, +), 200,
                           "\(scheduler): the picked-up flows count as established")
        }
        let roundRobin = Fixture([1, 1], policy: ServicePolicy(scheduler: .rr))
        XCTAssertEqual(roundRobin.admit(client(1), ack, at: 0), .drop(.noConnection), "rr keeps IPVS's rule")
    }

    func testTimeoutsFromSet() {
        let f = Fixture([1], policy: ServicePolicy(scheduler: .rr),
                        timeouts: ConnectionTimeouts(tcpEstablished: 50, tcpFin: 5, udp: 7))
        _ = f.admit(client(1), syn, at: 0)
        _ = f.admit(client(1), ack, at: 1)
        guard case .existing = f.admit(client(1), ack, at: 50) else { return XCTFail() }
        XCTAssertEqual(f.admit(client(1), ack, at: 100), .drop(.noConnection))
        _ = f.admit(client(3, proto: IPProtocolNumber.udp), 0, at: 0)
        guard case .new = f.admit(client(3, proto: IPProtocolNumber.udp), 0, at: 7) else { return XCTFail() }
    }

    func testSYNReusingATimeWaitOrFinWaitPortIsRescheduled() {
        let f = Fixture([1, 1], policy: ServicePolicy(scheduler: .rr))
        XCTAssertEqual(destination(f.admit(client(1), syn, at: 0)), 0)
        _ = f.admit(client(1), ack, at: 0)
        _ = f.admit(client(1), fin, at: 1)  // FIN_WAIT (director sees one side)
        guard case .new(1, _?) = f.admit(client(1), syn, at: 2) else { return XCTFail("not rescheduled") }
        XCTAssertEqual(f.counts(0), DestinationCounts())
        XCTAssertEqual(f.counts(1), DestinationCounts(active: 0, inactive: 1))
    }

    func testWeightZeroQuiescesButExistingConnectionsContinue() {
        let f = Fixture([1, 1], policy: ServicePolicy(scheduler: .rr))
        guard case .new(0, let slot?) = f.admit(client(1), syn, at: 0) else { return XCTFail() }
        _ = f.admit(client(1), ack, at: 0)
        f.servers.list[0].weight = 0
        f.publish()
        XCTAssertEqual(f.admit(client(1), ack, at: 1), .existing(destination: 0, slot: slot))
        for n: UInt32 in 2...5 { XCTAssertEqual(destination(f.admit(client(n), syn, at: 1)), 1) }
    }

    func testRemovedServerExpiresConnectionAtNextPacket() {
        let f = Fixture([1, 1], policy: ServicePolicy(scheduler: .rr))
        XCTAssertEqual(destination(f.admit(client(1), syn, at: 0)), 0)
        XCTAssertEqual(destination(f.admit(client(2), syn, at: 0)), 1)
        _ = f.admit(client(1), ack, at: 0)
        _ = f.admit(client(2), ack, at: 0)
        // Remove server 0: server 1 becomes index 0 and keeps its connection and counts.
        f.servers.list.remove(at: 0)
        f.publish()
        guard case .existing(0, _) = f.admit(client(2), ack, at: 1) else { return XCTFail("survivor lost") }
        XCTAssertEqual(f.admit(client(1), ack, at: 1), .drop(.destinationRemoved))
        guard case .new(0, _) = f.admit(client(1), syn, at: 2) else { return XCTFail("not rescheduled") }
        XCTAssertEqual(f.counts(0), DestinationCounts(active: 1, inactive: 1))
    }

    func testReorderedServersKeepTheirConnections() {
        let f = Fixture([1, 1], policy: ServicePolicy(scheduler: .rr))
        XCTAssertEqual(destination(f.admit(client(1), syn, at: 0)), 0)
        XCTAssertEqual(destination(f.admit(client(2), syn, at: 0)), 1)
        // Same servers, other order: each connection follows its server to the new index.
        f.servers.list.swapAt(0, 1)
        f.publish()
        XCTAssertEqual(destination(f.admit(client(1), ack, at: 1)), 1)
        XCTAssertEqual(destination(f.admit(client(2), ack, at: 1)), 0)
    }

    func testPersistenceKeepsClientAndNetmaskGroupsClients() {
        let policy = ServicePolicy(scheduler: .rr, persistenceTimeout: 300, netmaskPrefix: 24)
        let f = Fixture([1, 1, 1], policy: policy)
        let first = destination(f.admit(client(1, port: 1000), syn, at: 0))
        // Other connections of the same client, and of its /24, go to the same server.
        XCTAssertEqual(destination(f.admit(client(1, port: 1001), syn, at: 1)), first)
        XCTAssertEqual(destination(f.admit(client(200, port: 1), syn, at: 2)), first)
        XCTAssertEqual(f.tracker.liveTemplates(now: 2).count, 1)
        XCTAssertEqual(f.counts(first!).persistent, 1)
        // The template outlives its connections until the timeout after the last packet.
        XCTAssertEqual(destination(f.admit(client(1, port: 1002), syn, at: 2 + 299)), first)
        XCTAssertEqual(f.tracker.liveTemplates(now: 2 + 299 + 300).count, 0)
    }

    func testPacketsOfAPersistentConnectionKeepItsTemplate() {
        let f = Fixture([1, 1, 1], policy: ServicePolicy(scheduler: .rr, persistenceTimeout: 300))
        XCTAssertEqual(destination(f.admit(client(1, port: 1), syn, at: 0)), 0)
        guard case .existing(_, let slot) = f.admit(client(1, port: 1), ack, at: 0) else { return XCTFail("not tracked") }
        // A reply in the same second as a client packet must not stand in for it.
        f.tracker.observeReply(slot: slot, tcpFlags: ack, now: 250)
        XCTAssertEqual(destination(f.admit(client(1, port: 1), ack, at: 250)), 0)
        XCTAssertEqual(destination(f.admit(client(1, port: 1), ack, at: 250)), 0)
        // The template now lives until 250 + 300: a new connection of the client at 500 still goes to 0.
        XCTAssertEqual(destination(f.admit(client(1, port: 2), syn, at: 500)), 0)
        XCTAssertEqual(f.tracker.liveTemplates(now: 500).first?.expires, 800)
    }

    func testWorkersAgreeOnAPersistentClientsServer() throws {
        // Two workers (their own scheduler positions) sharing one template directory.
        let directory = SharedFlowTable(partitions: 2, entriesPerPartition: 64)
        let policy = ServicePolicy(scheduler: .rr, persistenceTimeout: 300)
        let a = Fixture([1, 1, 1], policy: policy, directory: directory.view(partition: 0))
        let b = Fixture([1, 1, 1], policy: policy, directory: directory.view(partition: 1))
        _ = b.admit(client(9, port: 1), syn, at: 0)  // b's round robin moves on: its next own choice is 1
        XCTAssertEqual(destination(a.admit(client(1, port: 1000), syn, at: 1)), 0)
        let held = b.counts(0).persistent
        XCTAssertEqual(destination(b.admit(client(1, port: 1001), syn, at: 2)), 0, "b follows a's template")
        XCTAssertEqual(b.counts(0).persistent, held + 1, "b holds its own counted copy")
        // a's template alone keeps the client on 0 for the timeout after its last use.
        XCTAssertEqual(destination(b.admit(client(1, port: 1002), syn, at: 2 + 299)), 0)
    }

    func testQuiescentTemplateExpires() {
        let f = Fixture([1, 1], policy: ServicePolicy(scheduler: .rr, persistenceTimeout: 300))
        XCTAssertEqual(destination(f.admit(client(1, port: 1), syn, at: 0)), 0)
        f.servers.list[0].weight = 0
        f.publish()
        XCTAssertEqual(destination(f.admit(client(1, port: 2), syn, at: 1)), 1)
    }

    func testOnePacketUDPLeavesNoConnection() {
        let f = Fixture([1, 1], policy: ServicePolicy(scheduler: .rr, onePacket: true))
        let udp = client(1, proto: IPProtocolNumber.udp)
        XCTAssertEqual(f.admit(udp, 0, at: 0), .new(destination: 0, slot: nil))
        XCTAssertEqual(f.admit(udp, 0, at: 0), .new(destination: 1, slot: nil))
        XCTAssertEqual(f.tracker.connectionCount, 0)
    }

    func testFullTableForwardsByHashingAndNeverEvictsLiveConnections() {
        let f = Fixture([1, 1, 1], policy: ServicePolicy(scheduler: .rr), capacity: 8)
        var slots: [Int] = []
        for n: UInt32 in 0..<8 {
            guard case .new(_, let slot?) = f.admit(client(n), syn, at: 0) else { return XCTFail("\(n)") }
            slots.append(slot)
            _ = f.admit(client(n), ack, at: 0)  // established: never evicted
        }
        guard case .overflow(let d) = f.admit(client(100), syn, at: 0) else { return XCTFail("not overflow") }
        // Later packets of the untracked flow take the same way.
        XCTAssertEqual(f.admit(client(100), ack, at: 1), .overflow(destination: d))
        // Tracked ones keep their slots.
        for n: UInt32 in 0..<8 {
            guard case .existing(_, let slot) = f.admit(client(n), ack, at: 1) else { return XCTFail() }
            XCTAssertEqual(slot, slots[Int(n)])
        }
    }

    func testNoServerDrops() {
        let f = Fixture([0, 0], policy: ServicePolicy(scheduler: .wlc))
        XCTAssertEqual(f.admit(client(1), syn, at: 0), .drop(.noDestination))
    }
}
