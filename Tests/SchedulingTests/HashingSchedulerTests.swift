import Packet
import Scheduling
import XCTest

final class HashingSchedulerTests: XCTestCase {
    func flow(_ client: UInt32, port: UInt16 = 40000) -> FlowKey {
        FlowKey(source: .v4(client), sourcePort: port, destination: .v4(0xC000_020A), destinationPort: 80,
                proto: IPProtocolNumber.tcp)
    }

    func testSourceHashingBucketsAndHash() {
        let d = CountedDestinations([2, 1])
        // IPVS: buckets 0,1 -> first server, 2 -> second, and so on; hash_32(addr, 8) picks the bucket.
        for client: UInt32 in [1, 0x0A00_0001, 0xC0A8_0101, 0xFFFF_FFFF] {
            let bucket = Int((client &* 0x61C8_8647) >> 24)
            XCTAssertEqual(d.pick(.sh, flow: flow(client)), bucket % 3 < 2 ? 0 : 1, "client \(client)")
        }
        // Same client, any port: same server; with sh-port the port takes part.
        XCTAssertEqual(d.pick(.sh, flow: flow(7, port: 1)), d.pick(.sh, flow: flow(7, port: 2)))
        let bucket = Int(((UInt32(3) &+ 7) &* 0x61C8_8647) >> 24)
        XCTAssertEqual(d.pick(.sh, flow: flow(7, port: 3), flags: .port), bucket % 3 < 2 ? 0 : 1)
    }

    func testSourceHashingFallback() {
        let d = CountedDestinations([1, 1])
        let client = (0..<1000).map { UInt32($0) }.first { d.pick(.sh, flow: flow($0)) == 0 }!
        // The bucket still names server 0, now unusable: no server, unless sh-fallback.
        d.list[0].isAvailable = false
        XCTAssertNil(d.pick(.sh, flow: flow(client)))
        XCTAssertEqual(d.pick(.sh, flow: flow(client), flags: .fallback), 1)
    }

    func testDestinationHashing() {
        let d = CountedDestinations([1, 1, 1])
        // The destination address alone picks the bucket, `address * 2654435761` mod 256, buckets in turn.
        for (client, address): (UInt32, UInt32) in [(1, 0xC000_020A), (1, 0xC000_020B), (7, 0xFFFF_FFFF), (9, 2)] {
            let key = FlowKey(source: .v4(client), sourcePort: 40000, destination: .v4(address), destinationPort: 80,
                              proto: IPProtocolNumber.tcp)
            let bucket = Int((address &* 2_654_435_761) & 0xFF)
            XCTAssertEqual(d.pick(.dh, flow: key), bucket % 3, "address \(address)")
        }
    }

    func testMaglevTableIsIdenticalAcrossInstancesAndBalanced() {
        let a = CountedDestinations([1, 1, 1, 1, 1])
        let b = CountedDestinations([1, 1, 1, 1, 1])
        let tableA = a.list.withUnsafeBufferPointer { MaglevHashing.lookupTable($0) }
        let tableB = b.list.withUnsafeBufferPointer { MaglevHashing.lookupTable($0) }
        XCTAssertEqual(MaglevHashing.tableSize, 4093)
        XCTAssertEqual(tableA, tableB)
        var share = [Int](repeating: 0, count: 5)
        for entry in tableA { share[Int(entry)] += 1 }
        for count in share { XCTAssertEqual(Double(count), 4093.0 / 5, accuracy: 4093.0 / 5 * 0.1) }
        // Weights: 2:1 gives about twice the entries.
        let weighted = CountedDestinations([2, 1])
        let tableW = weighted.list.withUnsafeBufferPointer { MaglevHashing.lookupTable($0) }
        let first = tableW.filter { $0 == 0 }.count
        XCTAssertEqual(Double(first) / Double(MaglevHashing.tableSize), 2.0 / 3, accuracy: 0.05)
    }

    func testMaglevRemovingOneOfNMovesAboutOneNth() {
        let n = 10
        let all = CountedDestinations([Int32](repeating: 1, count: n))
        var fewer = all.list
        fewer.remove(at: 3)
        let before = all.list.withUnsafeBufferPointer { MaglevHashing.lookupTable($0) }
        let after = fewer.withUnsafeBufferPointer { MaglevHashing.lookupTable($0) }
        var moved = 0
        for index in 0..<MaglevHashing.tableSize {
            let old = all.list[Int(before[index])].cell
            let new = fewer[Int(after[index])].cell
            if old != new { moved += 1 }
        }
        // Entries of the removed server must move (1/N); Maglev moves only a little more.
        XCTAssertLessThan(Double(moved) / Double(MaglevHashing.tableSize), 1.0 / Double(n) * 1.6)
        XCTAssertGreaterThanOrEqual(Double(moved) / Double(MaglevHashing.tableSize), 1.0 / Double(n) * 0.8)
    }

    func testMaglevFallback() {
        let d = CountedDestinations([1, 1])
        let key = flow(99)
        let home = d.pick(.mh, flow: key)!
        d.list[home].isAvailable = false
        XCTAssertNil(d.pick(.mh, flow: key))
        XCTAssertEqual(d.pick(.mh, flow: key, flags: .fallback), 1 - home)
    }

    func testLocalityReplicationGrowsAndExpiresItsSet() {
        let d = CountedDestinations([1, 1, 1])
        var state = d.list.withUnsafeBufferPointer { Scheduler.makeState(.lblcr, destinations: $0) }
        defer { Scheduler.release(&state) }
        func pick(at now: UInt32) -> Int? {
            d.list.withUnsafeBufferPointer {
                Scheduler.select(.lblcr, state: &state, destinations: $0, flow: flow(1), now: now)
            }
        }
        XCTAssertEqual(pick(at: 10), 0)
        d.set(0, active: 2)  // overloaded in lblc's sense: server 1 joins the set
        XCTAssertEqual(pick(at: 20), 1)
        d.set(0, active: 0, inactive: 10)
        d.set(1, active: 1)
        // The set's least loaded member: 0, although wlc over every server would take the idle 2.
        XCTAssertEqual(pick(at: 30), 0)
        // The set expires: its most loaded member with weight (0; the quiesced 1 does not count) leaves, yet
        // it serves this once, as the least loaded member picked before.
        d.list[1].weight = 0
        let expired = 20 + LocalityTable.setExpiration + 1
        XCTAssertEqual(pick(at: expired), 0)
        // Left with the quiesced 1 only, the set takes a new server by wlc.
        XCTAssertEqual(pick(at: expired + 1), 2)
    }

    func testLocalityBasedKeepsServerPerDestination() {
        let d = CountedDestinations([1, 1])
        d.list.withUnsafeBufferPointer { buffer in
            for kind in [SchedulerKind.lblc, .lblcr] {
                var state = Scheduler.makeState(kind, destinations: buffer)
                defer { Scheduler.release(&state) }
                let first = Scheduler.select(kind, state: &state, destinations: buffer, flow: flow(1), now: 10)
                XCTAssertEqual(first, 0)
                d.set(0, active: 0, inactive: 50)  // wlc would now pick 1, the table keeps 0
                XCTAssertEqual(Scheduler.select(kind, state: &state, destinations: buffer, flow: flow(2), now: 11), 0, "\(kind)")
                // Overloaded in lblc's sense: more active than weight while another is under half.
                d.set(0, active: 5)
                XCTAssertEqual(Scheduler.select(kind, state: &state, destinations: buffer, flow: flow(3), now: 12), 1, "\(kind)")
                d.set(0, active: 0, inactive: 0)
            }
        }
    }
}
