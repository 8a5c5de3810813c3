import Packet
import Scheduling
import XCTest

/// Connections name their real server by its counter cell: configuration changes move, remove and drain
/// servers without renumbering (walking) the connection table.
final class ConnectionIdentityTests: XCTestCase {
    let syn: UInt8 = 0x02, ack: UInt8 = 0x10

    func client(_ n: UInt32, port: UInt16 = 40000) -> FlowKey {
        FlowKey(source: .v4(0x0A00_0000 + n), sourcePort: port, destination: .v4(0xC000_020A), destinationPort: 80,
                proto: IPProtocolNumber.tcp)
    }

    /// One service over `scheduled` servers, followed by `draining` servers outside its range, as a snapshot
    /// lays them out. Servers are picked from a fixed pool, so each keeps its cell across publications.
    final class Fixture {
        let pool: CountedDestinations
        var policy: ServicePolicy
        var tracker: ConnectionTracker
        private var policyBuffer = UnsafeMutableBufferPointer<ServicePolicy>.allocate(capacity: 1)
        private var destinationBuffer = UnsafeMutableBufferPointer<SchedulingDestination>.allocate(capacity: 0)
        /// The pool indices of the published destinations, by destination index.
        private(set) var published: [Int] = []

        init(servers: Int, policy: ServicePolicy, capacity: Int = 1024, counted: Bool = true) {
            pool = CountedDestinations(Array(repeating: 1, count: servers))
            self.policy = policy
            tracker = ConnectionTracker(capacity: capacity, counters: counted ? pool.store : nil)
            publish(scheduled: Array(0..<servers))
        }

        deinit { policyBuffer.deallocate(); destinationBuffer.deallocate() }

        func publish(scheduled: [Int], draining: [Int] = [], withoutCells: Bool = false) {
            let old = (policyBuffer, destinationBuffer)
            published = scheduled + draining
            var list = published.map { pool.list[$0] }
            if withoutCells { for index in list.indices { list[index].cell = SchedulingDestination.noCell } }
            destinationBuffer = .allocate(capacity: max(list.count, 1))
            _ = destinationBuffer.initialize(from: list)
            policy.first = 0
            policy.count = Int32(scheduled.count)
            policyBuffer = .allocate(capacity: 1)
            policyBuffer[0] = policy
            tracker.adopt(services: UnsafeBufferPointer(policyBuffer),
                          destinations: UnsafeBufferPointer(rebasing: destinationBuffer[0..<list.count]))
            old.0.deallocate(); old.1.deallocate()
        }

        func admit(_ key: FlowKey, _ flags: UInt8, at now: UInt32) -> Admission {
            tracker.admit(key, tcpFlags: flags, service: 0, now: now)
        }

        /// The pool server an admission went to.
        func server(_ admission: Admission) -> Int? {
            switch admission {
            case .existing(let d, _), .new(let d, _), .overflow(let d): return published[d]
            case .drop: return nil
            }
        }

        func counts(ofServer server: Int) -> DestinationCounts { pool.store.counts(pool.list[server].cell) }
    }

    func testRemovingAServerMidServiceKeepsEveryOtherConnectionWithoutAWalk() {
        // 2^18 slots: a walk of the table would be the cost to avoid.
        let f = Fixture(servers: 5, policy: ServicePolicy(scheduler: .rr), capacity: 1 << 17)
        var placed: [UInt32: Int] = [:]
        for n: UInt32 in 1...200 {
            placed[n] = f.server(f.admit(client(n), syn, at: 0))
            _ = f.admit(client(n), ack, at: 0)
        }
        XCTAssertEqual(f.counts(ofServer: 2), DestinationCounts(active: 40))
        f.publish(scheduled: [0, 1, 3, 4])
        // The adopt touched no entry: the removed server's connections are still counted until reclaimed.
        XCTAssertEqual(f.counts(ofServer: 2), DestinationCounts(active: 40))
        XCTAssertEqual(f.tracker.connectionCount, 200)
        for n: UInt32 in 1...200 where placed[n] != 2 {
            let admission = f.admit(client(n), ack, at: 1)
            guard case .existing = admission else { return XCTFail("connection \(n) lost") }
            XCTAssertEqual(f.server(admission), placed[n], "connection \(n) moved")
            XCTAssertEqual(f.tracker.find(client(n), now: 1).map { f.published[$0.destination] }, placed[n])
        }
        let gone = placed.first { $0.value == 2 }!.key
        XCTAssertNil(f.tracker.find(client(gone), now: 1))
        XCTAssertEqual(f.admit(client(gone), ack, at: 1), .drop(.destinationRemoved))
        XCTAssertEqual(f.counts(ofServer: 2), DestinationCounts(active: 39))
        // A SYN on a removed server's connection is scheduled afresh.
        let again = placed.filter { $0.value == 2 }.map(\.key).sorted()[1]
        XCTAssertNotEqual(f.server(f.admit(client(again), syn, at: 1)), 2)
        // The sweep reclaims the rest, so the cell's counts fall to zero (what ends a drain).
        f.tracker.sweep(now: 2, limit: 1 << 20)
        XCTAssertEqual(f.counts(ofServer: 2), DestinationCounts())
        XCTAssertEqual(f.tracker.connectionCount, 161)
        for server in [0, 1, 3, 4] { XCTAssertEqual(f.counts(ofServer: server).active, 40) }
    }

    func testReorderedServersKeepTheirConnectionsAndListings() {
        let f = Fixture(servers: 4, policy: ServicePolicy(scheduler: .rr))
        var placed: [UInt32: Int] = [:]
        for n: UInt32 in 1...8 { placed[n] = f.server(f.admit(client(n), syn, at: 0)) }
        f.publish(scheduled: [3, 1, 2, 0])
        for n: UInt32 in 1...8 { XCTAssertEqual(f.server(f.admit(client(n), ack, at: 1)), placed[n]) }
        let listed = f.tracker.liveConnections(now: 1)
        XCTAssertEqual(listed.count, 8)
        for entry in listed {
            XCTAssertEqual(f.published[Int(entry.destination)], placed[UInt32(truncatingIfNeeded: entry.key.srcLo) - 0x0A00_0000])
        }
    }

    func testDrainingServerKeepsItsConnectionsAndGetsNoNewOnes() {
        let f = Fixture(servers: 3, policy: ServicePolicy(scheduler: .rr))
        var placed: [UInt32: Int] = [:]
        for n: UInt32 in 1...9 {
            placed[n] = f.server(f.admit(client(n), syn, at: 0))
            _ = f.admit(client(n), ack, at: 0)
        }
        f.publish(scheduled: [0, 2], draining: [1])
        for n: UInt32 in 1...9 {
            let admission = f.admit(client(n), ack, at: 1)
            guard case .existing = admission else { return XCTFail("connection \(n) lost") }
            XCTAssertEqual(f.server(admission), placed[n])
        }
        for n: UInt32 in 100..<130 { XCTAssertNotEqual(f.server(f.admit(client(n), syn, at: 1)), 1) }
        XCTAssertEqual(f.counts(ofServer: 1), DestinationCounts(active: 3))
        // Listed with the service it was placed in, at its draining index.
        let draining = f.tracker.liveConnections(now: 1).filter { f.published[Int($0.destination)] == 1 }
        XCTAssertEqual(draining.count, 3)
        XCTAssertTrue(draining.allSatisfy { $0.service == 0 && $0.destination == 2 })
        // The sweep leaves draining connections alone.
        f.tracker.sweep(now: 2, limit: 1 << 20)
        XCTAssertEqual(f.counts(ofServer: 1), DestinationCounts(active: 3))
        // Dropped for good (its counts reached zero, or the operator insisted): expired at the next packet.
        f.publish(scheduled: [0, 2])
        let onOne = placed.first { $0.value == 1 }!.key
        XCTAssertEqual(f.admit(client(onOne), ack, at: 3), .drop(.destinationRemoved))
    }

    func testTemplateOnADrainingServerIsNotUsed() {
        let f = Fixture(servers: 3, policy: ServicePolicy(scheduler: .rr, persistenceTimeout: 300))
        let first = f.server(f.admit(client(1, port: 1000), syn, at: 0))!
        XCTAssertEqual(f.server(f.admit(client(1, port: 1001), syn, at: 0)), first, "persistence")
        f.publish(scheduled: (0..<3).filter { $0 != first }, draining: [first])
        XCTAssertEqual(f.server(f.admit(client(1, port: 1000), ack, at: 1)), first, "the connection stays")
        let next = f.server(f.admit(client(1, port: 1002), syn, at: 1))
        XCTAssertNotNil(next)
        XCTAssertNotEqual(next, first, "a new connection does not follow the template to a draining server")
        XCTAssertEqual(f.server(f.admit(client(1, port: 1003), syn, at: 1)), next, "the new template holds")
    }

    func testEntriesWithoutACellKeepTheirIndex() {
        let f = Fixture(servers: 3, policy: ServicePolicy(scheduler: .rr), counted: false)
        f.publish(scheduled: [0, 1, 2], withoutCells: true)
        for n: UInt32 in 1...3 { XCTAssertEqual(f.server(f.admit(client(n), syn, at: 0)), Int(n - 1)) }
        f.publish(scheduled: [0, 1], withoutCells: true)
        guard case .existing(1, _) = f.admit(client(2), ack, at: 1) else { return XCTFail("index kept") }
        XCTAssertEqual(f.admit(client(3), ack, at: 1), .drop(.destinationRemoved), "index out of range")
    }

    func testCellsIdentifyServersEvenWithoutACounterStore() {
        let f = Fixture(servers: 3, policy: ServicePolicy(scheduler: .rr), counted: false)
        for n: UInt32 in 1...3 { XCTAssertEqual(f.server(f.admit(client(n), syn, at: 0)), Int(n - 1)) }
        f.publish(scheduled: [2, 0])
        XCTAssertEqual(f.server(f.admit(client(1), ack, at: 1)), 0)
        XCTAssertEqual(f.server(f.admit(client(3), ack, at: 1)), 2)
        XCTAssertEqual(f.admit(client(2), ack, at: 1), .drop(.destinationRemoved))
    }
}
