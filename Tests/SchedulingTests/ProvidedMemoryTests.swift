import Packet
@testable import Scheduling
import XCTest

private let syn = TCPStateMachine.syn
private let ack = TCPStateMachine.ack

private func flow(_ n: UInt32, proto: UInt8 = IPProtocolNumber.tcp) -> FlowKey {
    FlowKey(source: .v4(0x0A00_0000 | n), sourcePort: 1234, destination: .v4(0xC633_6401), destinationPort: 80,
            proto: proto)
}

/// Memory a test hands to a table, freed at the end of the test.
private final class TestMemory {
    let base: UnsafeMutableRawPointer
    let bytes: Int
    init(bytes: Int, fill: UInt8 = 0xA5) {
        self.bytes = bytes
        base = .allocate(byteCount: bytes, alignment: 64)
        // Not zero: a table that relied on zeroed memory, or left bytes uninitialised, would show it.
        base.initializeMemory(as: UInt8.self, repeating: fill, count: bytes)
    }
    deinit { base.deallocate() }
}

/// Tables laid over memory the caller provides, and resumed from it by a later table: what lets a
/// restarted director keep its connections.
final class ProvidedMemoryTests: XCTestCase {
    func testAConnectionTableResumedFromItsMemoryFindsEveryLiveEntry() throws {
        let capacity = 100
        let memory = TestMemory(bytes: ConnectionTable.byteCount(capacity: capacity))
        let cells = TestMemory(bytes: DestinationCounterStore.byteCount(capacity: 8))
        var counters: DestinationCounterStore? = DestinationCounterStore(capacity: 8, memory: cells.base, restoring: false)
        let cell = try XCTUnwrap(counters?.allocate())

        var expected: [(FlowKey, Int, ConnectionEntry)] = []
        var shortLived: [FlowKey] = []
        var sweepCursor = 0
        var count = 0
        do {
            var table = ConnectionTable(capacity: capacity, counters: counters, memory: memory.base, restoring: false)
            XCTAssertEqual(table.count, 0, "fresh memory: an empty table, whatever the bytes held")
            // Long-lived: established connections (input-only table, SYN then ACK), inserted at 1000.
            for n in UInt32(1)...20 {
                let key = flow(n)
                let slot = try XCTUnwrap(table.insert(key, service: 1, destination: n % 3, tcpFlags: syn, now: 1000,
                                                      cell: cell))
                table.update(at: slot, tcpFlags: ack, now: 1000)
                expected.append((key, slot, try XCTUnwrap(table.entry(at: slot))))
            }
            // Short-lived: SYN_RECV (60 s) at 1000: live at 1010, gone from 1060.
            for n in UInt32(100)...104 {
                let key = flow(n)
                _ = try XCTUnwrap(table.insert(key, service: 2, destination: 0, tcpFlags: syn, now: 1000, cell: cell))
                shortLived.append(key)
            }
            // Expired before the restart: inserted at 100, held (not yet swept) but no longer live.
            for n in UInt32(200)...202 {
                _ = try XCTUnwrap(table.insert(flow(n), service: 2, destination: 0, tcpFlags: syn, now: 100, cell: cell))
            }
            table.sweep(now: 100, limit: 5)  // moves the cursor, reclaims nothing yet
            sweepCursor = table.sweepCursor
            count = table.count
            XCTAssertEqual(count, 28)
        }
        XCTAssertNotEqual(sweepCursor, 0)
        let before = try XCTUnwrap(counters?.counts(cell))
        XCTAssertEqual(before, DestinationCounts(active: 20, inactive: 8))
        // The counter store is resumed from its memory too (as the state file does).
        counters = DestinationCounterStore(capacity: 8, memory: cells.base, restoring: true, taken: [cell])
        XCTAssertEqual(counters?.counts(cell), before, "counts kept")

        var table = ConnectionTable(capacity: capacity, counters: counters, memory: memory.base, restoring: true)
        XCTAssertEqual(table.count, count, "recounted from the tags")
        XCTAssertEqual(table.sweepCursor, sweepCursor, "the sweep goes on where it was")
        for (key, slot, entry) in expected {
            XCTAssertEqual(table.find(key, now: 1010), slot)
            XCTAssertEqual(table.entry(at: slot), entry)
            XCTAssertEqual(table.state(at: slot), .established)
            XCTAssertEqual(table.cell(at: slot), cell)
        }
        for key in shortLived { XCTAssertNotNil(table.find(key, now: 1010)) }
        for n in UInt32(200)...202 { XCTAssertNil(table.find(flow(n), now: 1010), "expired before the restart") }
        XCTAssertNil(table.find(flow(999), now: 1010))

        // Expired entries still expire, and are uncounted when reclaimed.
        for key in shortLived { XCTAssertNil(table.find(key, now: 1060)) }
        XCTAssertEqual(table.sweep(now: 1060, limit: table.slotCount), 8)
        XCTAssertEqual(table.count, 20)
        XCTAssertEqual(counters?.counts(cell), DestinationCounts(active: 20, inactive: 0))
        // New connections go in beside the restored ones.
        XCTAssertNotNil(table.insert(flow(300), service: 1, destination: 0, tcpFlags: syn, now: 1060, cell: cell))
        XCTAssertEqual(table.count, 21)
        for (key, slot, _) in expected { XCTAssertEqual(table.find(key, now: 1060), slot) }
    }

    /// A process that died between an entry's store and its tag's: the restored table goes by the entry, so
    /// an insert it finished writing is found (and its slot readable) and a removal it began is gone.
    func testARestoreRepairsAnEntryAndATagThatDisagree() throws {
        let memory = TestMemory(bytes: ConnectionTable.byteCount(capacity: 64))
        var inserted = 0, removed = 0
        do {
            var table = ConnectionTable(capacity: 64, memory: memory.base, restoring: false)
            inserted = try XCTUnwrap(table.insert(flow(1), service: 1, destination: 0, tcpFlags: syn, now: 1000))
            removed = try XCTUnwrap(table.insert(flow(2), service: 1, destination: 0, tcpFlags: syn, now: 1000))
            table.tags[inserted] = 0  // the insert's entry written, not yet its tag
            table.entries[removed].flags &= ~ConnectionTable.occupiedFlag  // the removal's first store only
        }
        let table = ConnectionTable(capacity: 64, memory: memory.base, restoring: true)
        XCTAssertEqual(table.count, 1)
        XCTAssertEqual(table.find(flow(1), now: 1010), inserted)
        XCTAssertEqual(table.state(at: inserted), .synReceived)
        XCTAssertNil(table.find(flow(2), now: 1010))
        XCTAssertFalse(table.isOccupied(removed))
    }

    func testAFreshTableOverUsedMemoryIsEmpty() throws {
        let memory = TestMemory(bytes: ConnectionTable.byteCount(capacity: 64))
        do {
            var table = ConnectionTable(capacity: 64, memory: memory.base, restoring: false)
            _ = try XCTUnwrap(table.insert(flow(1), service: 0, destination: 0, tcpFlags: syn, now: 10))
        }
        let table = ConnectionTable(capacity: 64, memory: memory.base, restoring: false)
        XCTAssertEqual(table.count, 0)
        XCTAssertNil(table.find(flow(1), now: 10))
    }

    func testASharedFlowTableResumedFromItsMemoryKeepsItsEntriesAndRetiresAHalfWrittenOne() throws {
        let bytes = SharedFlowTable.byteCount(partitions: 2, entriesPerPartition: 64)
        XCTAssertEqual(bytes, 2 * 64 * 128)
        let memory = TestMemory(bytes: bytes)
        let record = SharedFlowRecord(words: SIMD8(1, 2, 3, 4, 5, 6, 7, 8), small: 9, flags: 1)
        var torn = 0
        do {
            let table = SharedFlowTable(partitions: 2, entriesPerPartition: 64, memory: memory.base, restoring: false)
            let writer = table.view(partition: 1)
            _ = try XCTUnwrap(writer.insert(flow(1), record, expires: 200, now: 100))
            let index = try XCTUnwrap(writer.insert(flow(2), record, expires: 200, now: 100))
            torn = (1 * 64 + Int(index)) * 128
        }
        // The writer died between the two halves of its seqlock: the sequence word stays odd.
        let sequence = memory.base.load(fromByteOffset: torn, as: UInt64.self)
        memory.base.storeBytes(of: sequence | 1, toByteOffset: torn, as: UInt64.self)

        let table = SharedFlowTable(partitions: 2, entriesPerPartition: 64, memory: memory.base, restoring: true)
        var partition = -1
        XCTAssertEqual(table.view(partition: 0).lookup(flow(1), now: 150, partition: &partition), record)
        XCTAssertEqual(partition, 1)
        XCTAssertNil(table.view(partition: 0).lookup(flow(2), now: 150, partition: &partition), "retired")
        XCTAssertEqual(memory.base.load(fromByteOffset: torn, as: UInt64.self) & 1, 0, "the sequence is even again")
        XCTAssertNotNil(table.view(partition: 1).insert(flow(2), record, expires: 300, now: 150))
        XCTAssertEqual(table.view(partition: 0).lookup(flow(2), now: 150, partition: &partition), record)
        XCTAssertNil(table.view(partition: 0).lookup(flow(1), now: 200, partition: &partition), "expiry kept")
    }

    func testACounterStoreResumedFromItsMemoryKeepsCountsAndTakenCells() throws {
        let memory = TestMemory(bytes: DestinationCounterStore.byteCount(capacity: 4))
        var taken: [UInt32] = []
        do {
            let store = DestinationCounterStore(capacity: 4, memory: memory.base, restoring: false)
            taken = [try XCTUnwrap(store.allocate()), try XCTUnwrap(store.allocate())]
            store.cell(taken[0]).pointee.bind(template: false)
            store.cell(taken[1]).pointee.bind(template: true)
            store.setThresholds(taken[1], upper: 10, lower: 5)
        }
        let store = DestinationCounterStore(capacity: 4, memory: memory.base, restoring: true, taken: Set(taken))
        XCTAssertEqual(store.counts(taken[0]), DestinationCounts(inactive: 1))
        XCTAssertEqual(store.counts(taken[1]), DestinationCounts(persistent: 1))
        XCTAssertEqual(store.cell(taken[1]).pointee.upperThreshold.load(ordering: .relaxed), 10)
        XCTAssertEqual(store.available, 2)
        let handed = [store.allocate(), store.allocate()]
        XCTAssertEqual(Set(handed.compactMap { $0 }).intersection(taken), [], "taken cells are not handed out")
        XCTAssertNil(store.allocate())
        XCTAssertEqual(store.counts(taken[0]), DestinationCounts(inactive: 1), "still counted")
        store.release(taken[0])
        XCTAssertEqual(store.allocate(), taken[0], "a released cell is free again")
    }
}
