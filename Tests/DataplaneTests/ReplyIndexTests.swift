import Dataplane
import Foundation
import Packet
import Synchronization
import XCTest

/// The shared index of NAT/FULLNAT replies: per-worker partitions, found from any worker, expiring with
/// their connection, and read whole while their owner rewrites them.
final class ReplyIndexTests: XCTestCase {
    private func reply(_ clientPort: UInt16) -> FlowKey {
        FlowKey(source: IPAddress("198.51.100.11")!, sourcePort: 8080, destination: IPAddress("198.51.100.1")!,
                destinationPort: clientPort, proto: IPProtocolNumber.tcp)
    }

    private func translation(_ clientPort: UInt16) -> ReplyTranslation {
        ReplyTranslation(source: L4Endpoint(address: IPAddress("203.0.113.10")!, port: 80),
                         client: L4Endpoint(address: IPAddress("198.51.100.1")!, port: clientPort),
                         clientMAC: 0x0200_0000_0001, fullNAT: false)
    }

    func testEntriesAreFoundFromEveryPartitionUntilTheyExpire() throws {
        let index = ReplyIndex(partitions: 3, entriesPerPartition: 64)
        let owner = index.view(partition: 2), other = index.view(partition: 0)
        let entry = try XCTUnwrap(owner.insert(reply(40000), translation(40000), expires: 110, now: 100))
        var partition = -1
        XCTAssertEqual(other.lookup(reply(40000), now: 105, partition: &partition), translation(40000))
        XCTAssertEqual(partition, 2)
        XCTAssertNil(other.lookup(reply(40001), now: 105, partition: &partition), "another client port")
        XCTAssertNil(other.lookup(reply(40000), now: 110, partition: &partition), "expired")
        owner.refresh(entry, expires: 200)
        XCTAssertNotNil(other.lookup(reply(40000), now: 150, partition: &partition))
        owner.retire(entry)
        XCTAssertNil(other.lookup(reply(40000), now: 150, partition: &partition), "retired with its connection")
    }

    func testExpiredEntriesAreReusedAndLiveOnesNeverOverwritten() throws {
        let index = ReplyIndex(partitions: 1, entriesPerPartition: 64)
        let view = index.view(partition: 0)
        var inserted = 0
        for port in UInt16(1)...2000 where view.insert(reply(port), translation(port), expires: 1000, now: 100) != nil {
            inserted += 1
        }
        XCTAssertEqual(inserted, 64, "a full partition refuses rather than evicting live entries")
        var partition = 0
        let live = (UInt16(1)...2000).filter { view.lookup(reply($0), now: 100, partition: &partition) != nil }
        XCTAssertEqual(live.count, 64)
        for port in live { XCTAssertEqual(view.lookup(reply(port), now: 100, partition: &partition), translation(port)) }
        // Once they have expired, their entries take new connections.
        XCTAssertNotNil(view.insert(reply(5000), translation(5000), expires: 3000, now: 2000))
    }

    func testAReaderSeesAnEntryWholeWhileItsOwnerRewritesIt() throws {
        let index = ReplyIndex(partitions: 2, entriesPerPartition: 64)
        let reader = index.view(partition: 1)
        let key = reply(40000)
        // Write n has every field derived from n; a read mixing two writes breaks the relation.
        @Sendable func version(_ n: UInt16) -> ReplyTranslation {
            ReplyTranslation(source: L4Endpoint(address: .v6(hi: UInt64(n), lo: ~UInt64(n)), port: n),
                             client: L4Endpoint(address: .v6(hi: ~UInt64(n), lo: UInt64(n) << 8), port: n),
                             clientMAC: UInt64(n), fullNAT: n & 1 == 0)
        }
        let key6 = FlowKey(source: .v6(hi: 1, lo: 2), sourcePort: 8080, destination: .v6(hi: 3, lo: 4),
                           destinationPort: key.dstPort, proto: IPProtocolNumber.tcp)
        _ = index.view(partition: 0).insert(key6, version(1), expires: 1000, now: 100)
        let stop = StopFlag()
        let thread = Thread {
            let writer = index.view(partition: 0)  // the owner's own view, on its own thread
            var n: UInt16 = 1
            while !stop.value.load(ordering: .relaxed) {
                n = n == 60000 ? 1 : n + 1
                _ = writer.insert(key6, version(n), expires: 1000, now: 100)
            }
        }
        thread.start()
        defer { stop.value.store(true, ordering: .relaxed) }
        let deadline = Date().addingTimeInterval(0.5)
        var reads = 0
        var partition = 0
        while Date() < deadline {
            if let found = reader.lookup(key6, now: 100, partition: &partition) {
                XCTAssertEqual(found, version(found.source.port), "a torn read")
                reads += 1
            }
        }
        XCTAssertGreaterThan(reads, 0)
    }
}

private final class StopFlag: @unchecked Sendable {
    let value = Atomic(false)
}
