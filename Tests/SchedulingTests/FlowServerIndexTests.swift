import Packet
import Scheduling
import XCTest

private func flow(_ n: UInt32, port: UInt16 = 40000) -> FlowKey {
    FlowKey(source: .v4(0x0A00_0000 | n), sourcePort: port, destination: .v4(0xCB00_710A), destinationPort: 80,
            proto: IPProtocolNumber.tcp)
}

/// The table every worker consults for the real server of an ICMP error's connection.
final class FlowServerIndexTests: XCTestCase {
    private let hashA: UInt64 = 0x1234_5678_9ABC_DEF0
    private let hashB: UInt64 = 0xFEDC_BA98_7654_3210

    func testARecordedFlowIsFoundWithItsCellAndOnlyItsServerPassesTheCheck() throws {
        let index = FlowServerIndex(entries: 1000)
        defer { withExtendedLifetime(index) {} }  // the view does not keep the index
        XCTAssertEqual(index.entries, 1024)
        let view = index.view
        XCTAssertNil(view.lookup(flow(1)), "an empty table names no server")
        view.record(flow(1), cell: 7, endpointHash: hashA)
        let found = try XCTUnwrap(view.lookup(flow(1)))
        XCTAssertEqual(found.cell, 7)
        XCTAssertTrue(found.isHeld(byEndpoint: hashA))
        XCTAssertFalse(found.isHeld(byEndpoint: hashB), "cell 7 given to another server is refused")
        XCTAssertNil(view.lookup(flow(1, port: 40001)), "another client port is another flow")
        // The largest cell a state file can have fits.
        let largest = UInt32(FlowServerIndex.cellLimit - 1)
        view.record(flow(2), cell: largest, endpointHash: hashB)
        XCTAssertEqual(view.lookup(flow(2))?.cell, largest)
        XCTAssertEqual(view.lookup(flow(1))?.cell, 7, "each flow keeps its own word")
    }

    func testANewerConnectionOfTheFlowReplacesTheOlderAndAServerWithoutACellIsNotRecorded() {
        let index = FlowServerIndex(entries: 64)
        defer { withExtendedLifetime(index) {} }  // the view does not keep the index
        let view = index.view
        view.record(flow(1), cell: 3, endpointHash: hashA)
        view.record(flow(1), cell: 4, endpointHash: hashB)
        XCTAssertEqual(view.lookup(flow(1))?.cell, 4)
        view.record(flow(2), cell: SchedulingDestination.noCell, endpointHash: hashA)
        XCTAssertNil(view.lookup(flow(2)))
    }

    func testAFlowSharingAnotherFlowsWordIsNotGivenThatFlowsServer() throws {
        let index = FlowServerIndex(entries: 64)
        defer { withExtendedLifetime(index) {} }  // the view does not keep the index
        let view = index.view
        let first = flow(1)
        // Another flow placed in the same word (same low hash bits): its fingerprint differs.
        let second = try XCTUnwrap((UInt32(2)..<100_000).lazy.map { flow($0) }.first {
            $0.flowHash & 63 == first.flowHash & 63
        })
        view.record(first, cell: 5, endpointHash: hashA)
        XCTAssertNil(view.lookup(second), "the word is the first flow's")
        view.record(second, cell: 6, endpointHash: hashB)
        XCTAssertEqual(view.lookup(second)?.cell, 6)
        XCTAssertNil(view.lookup(first), "overwritten: the first flow's errors are no longer found, never misdirected")
    }

    func testFingerprintsKeepStrangersOutOfAFullTable() {
        // Every word of a small table filled, then a million flows never recorded looked up: none may pass.
        let index = FlowServerIndex(entries: 64)
        defer { withExtendedLifetime(index) {} }  // the view does not keep the index
        let view = index.view
        for n in UInt32(0)..<4096 { view.record(flow(n), cell: n & 0xFF, endpointHash: hashA) }
        var falseHits = 0
        for n in UInt32(100_000)..<1_100_000 where view.lookup(flow(n)) != nil { falseHits += 1 }
        XCTAssertEqual(falseHits, 0, "a 32-bit fingerprint: expect about 0.0002 false matches per million")
    }

    func testATableOverProvidedMemoryResumesItsWords() {
        let bytes = FlowServerIndex.byteCount(entries: 100)
        XCTAssertEqual(bytes, 128 * 8)
        let memory = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 64)
        defer { memory.deallocate() }
        memory.initializeMemory(as: UInt8.self, repeating: 0xA5, count: bytes)
        do {
            let fresh = FlowServerIndex(entries: 100, memory: memory, restoring: false)
            XCTAssertNil(fresh.view.lookup(flow(1)), "fresh: empty whatever the memory held")
            fresh.view.record(flow(1), cell: 9, endpointHash: hashA)
        }
        let resumed = FlowServerIndex(entries: 100, memory: memory, restoring: true)
        XCTAssertEqual(resumed.view.lookup(flow(1))?.cell, 9)
        XCTAssertNil(resumed.view.lookup(flow(2)))
    }
}
