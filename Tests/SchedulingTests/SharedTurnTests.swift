import Packet
import Scheduling
import XCTest

/// rr and wrr follow the weights over the whole director: workers (one tracker each) sharing a counter store
/// give the director's n-th new connection the n-th choice of the one sequence, whichever worker takes it.
final class SharedTurnTests: XCTestCase {
    private func run(_ kind: SchedulerKind, weights: [Int32], workers: Int, connections: Int) -> (sequence: [Int], alone: [Int]) {
        let servers = CountedDestinations(weights)
        let policies = UnsafeMutableBufferPointer<ServicePolicy>.allocate(capacity: 1)
        policies[0] = ServicePolicy(scheduler: kind, first: 0, count: Int32(weights.count))
        let list = UnsafeMutableBufferPointer<SchedulingDestination>.allocate(capacity: weights.count)
        _ = list.initialize(from: servers.list)
        defer { policies.deallocate(); list.deallocate() }
        final class Worker {
            var tracker: ConnectionTracker
            init(_ tracker: consuming ConnectionTracker) { self.tracker = tracker }
        }
        var trackers: [Worker] = []
        for worker in 0..<workers {
            var tracker = ConnectionTracker(capacity: 4096, counters: servers.store, seed: UInt64(worker + 1))
            tracker.adopt(services: UnsafeBufferPointer(policies), destinations: UnsafeBufferPointer(list))
            trackers.append(Worker(tracker))
        }
        var rng = SplitMix64(seed: 7)
        var sequence: [Int] = []
        for n in 0..<connections {
            // Connections land on workers at random, as RSS spreads them over queues.
            let worker = Int(rng.next() % UInt64(workers))
            let key = FlowKey(source: .v4(0x0A00_0000 + UInt32(n)), sourcePort: 40000, destination: .v4(0xC000_020A),
                              destinationPort: 80, proto: IPProtocolNumber.tcp)
            switch trackers[worker].tracker.admit(key, tcpFlags: 0x02, service: 0, now: 100) {
            case .new(let destination, _): sequence.append(destination)
            default: XCTFail("connection \(n) not scheduled")
            }
        }
        let alone = picks(kind, destinations(weights), count: connections).map { $0 ?? -1 }
        return (sequence, alone)
    }

    func testWeightedRoundRobinIsExactAcrossTwoAndFourWorkers() {
        for workers in [2, 4] {
            let (sequence, alone) = run(.wrr, weights: [2, 1], workers: workers, connections: 300)
            XCTAssertEqual(sequence, alone, "\(workers) workers: the director's sequence is one worker's")
            XCTAssertEqual(sequence.filter { $0 == 0 }.count, 200, "2:1 over \(workers) workers")
            let (uneven, reference) = run(.wrr, weights: [5, 3, 1, 0], workers: workers, connections: 900)
            XCTAssertEqual(uneven, reference)
            XCTAssertEqual([0, 1, 2, 3].map { server in uneven.filter { $0 == server }.count }, [500, 300, 100, 0])
        }
    }

    func testRoundRobinIsExactAcrossTwoAndFourWorkers() {
        for workers in [2, 4] {
            let (sequence, alone) = run(.rr, weights: [1, 1], workers: workers, connections: 12)
            XCTAssertEqual(sequence, alone)
            XCTAssertEqual(sequence.filter { $0 == 0 }.count, 6, "the demo's rr service answers 6:6, not 7:5")
            let (three, reference) = run(.rr, weights: [1, 1, 1], workers: workers, connections: 300)
            XCTAssertEqual(three, reference)
        }
    }
}
