import Dataplane
import XCTest

/// FULLNAT port allocation: disjoint per worker, never a port still held, bounded when exhausted.
final class LocalPortAllocatorTests: XCTestCase {
    private func indices(_ values: [Int32], _ body: (UnsafeBufferPointer<Int32>) -> Void) {
        values.withUnsafeBufferPointer(body)
    }

    func testWorkersGetDisjointSlicesOfThePortRange() {
        let workers = 3
        var ranges: [ClosedRange<Int>] = []
        for worker in 0..<workers {
            let allocator = LocalPortAllocator(worker: worker, workers: workers, addressCount: 1)
            ranges.append(allocator.firstPort...(allocator.firstPort + allocator.portCount - 1))
        }
        XCTAssertEqual(ranges[0].lowerBound, LocalPortAllocator.lowestPort)
        for (a, b) in zip(ranges, ranges.dropFirst()) { XCTAssertLessThan(a.upperBound, b.lowerBound) }
        XCTAssertLessThanOrEqual(ranges.last!.upperBound, 65535)
    }

    func testAHeldPortIsNeverHandedOutAgainUnderChurn() {
        var allocator = LocalPortAllocator(worker: 1, workers: 2, addressCount: 2)
        // owner slot → (address, port) it holds; a random subset is released and reallocated each round.
        var held: [Int32: (Int, UInt16)] = [:]
        var generator = SystemRandomNumberGenerator()
        var slot: Int32 = 0
        for _ in 0..<40 {
            for _ in 0..<200 {
                slot += 1
                var got: (address: Int, port: UInt16)? = nil
                indices([0, 1]) { addresses in
                    got = allocator.allocate(addresses: addresses, for: slot) { owner, address, port in
                        held[owner].map { $0.0 == address && $0.1 == port } ?? false
                    }
                }
                guard let got else { return XCTFail("no port with \(held.count) of \(2 * allocator.portCount) held") }
                XCTAssertTrue((allocator.firstPort..<allocator.firstPort + allocator.portCount).contains(Int(got.port)))
                XCTAssertFalse(held.values.contains { $0.0 == got.address && $0.1 == got.port },
                               "port \(got.port) on address \(got.address) is still held")
                held[slot] = got
            }
            for owner in held.keys where Bool.random(using: &generator) { held[owner] = nil }
        }
    }

    func testExhaustionIsRefusedNotWrapped() {
        var allocator = LocalPortAllocator(worker: 0, workers: 64, addressCount: 1)
        var ports = Set<UInt16>()
        var refused = 0
        for slot in Int32(0)..<Int32(allocator.portCount + 10) {
            indices([0]) { addresses in
                if let got = allocator.allocate(addresses: addresses, for: slot, isHeld: { _, _, _ in true }) {
                    XCTAssertTrue(ports.insert(got.port).inserted, "port \(got.port) handed out twice")
                } else {
                    refused += 1
                }
            }
        }
        XCTAssertEqual(ports.count, allocator.portCount, "every port of the slice used once")
        XCTAssertEqual(refused, 10)
        // A released port is found again: each call probes a bounded stretch from where the last one
        // stopped, so within a few calls, and no other port is handed out meanwhile.
        let port = ports.randomElement()!
        allocator.release(address: 0, port: port)
        var found: UInt16? = nil
        for _ in 0...(allocator.portCount / LocalPortAllocator.probeLimit + 1) where found == nil {
            indices([0]) { addresses in
                found = allocator.allocate(addresses: addresses, for: 99_999, isHeld: { _, _, _ in true })?.port
            }
        }
        XCTAssertEqual(found, port)
    }
}
