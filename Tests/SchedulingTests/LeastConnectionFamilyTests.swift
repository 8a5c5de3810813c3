import Packet
import Scheduling
import XCTest

/// Destinations backed by a real counter store, so tests set IPVS's active/inactive counts directly.
final class CountedDestinations {
    let store = DestinationCounterStore(capacity: 64)
    var list: [SchedulingDestination] = []

    init(_ weights: [Int32]) {
        for (index, weight) in weights.enumerated() {
            let id = store.allocate()!
            list.append(SchedulingDestination(weight: weight, cell: id, counters: store.cell(id),
                                              endpointHash: StableHash.endpoint(.v4(0xC633_640B + UInt32(index)), port: 80)))
        }
    }

    func set(_ index: Int, active: Int32, inactive: Int32 = 0) {
        let cell = store.cell(list[index].cell)
        cell.pointee.active.store(active, ordering: .relaxed)
        cell.pointee.inactive.store(inactive, ordering: .relaxed)
    }

    func pick(_ kind: SchedulerKind, flow: FlowKey = anyFlow, flags: SchedulerFlags = []) -> Int? {
        list.withUnsafeBufferPointer { buffer in
            var state = Scheduler.makeState(kind, destinations: buffer, flags: flags)
            defer { Scheduler.release(&state) }
            return Scheduler.select(kind, state: &state, destinations: buffer, flow: flow)
        }
    }
}

final class LeastConnectionFamilyTests: XCTestCase {
    func testLeastConnectionWeighsActive256TimesInactive() {
        let d = CountedDestinations([1, 1, 1])
        d.set(0, active: 1, inactive: 0)    // 256
        d.set(1, active: 0, inactive: 300)  // 300
        d.set(2, active: 0, inactive: 255)  // 255
        XCTAssertEqual(d.pick(.lc), 2)
        d.set(2, active: 1, inactive: 0)    // tie with 0: first wins
        XCTAssertEqual(d.pick(.lc), 0)
    }

    func testWeightedLeastConnectionDividesByWeight() {
        let d = CountedDestinations([1, 3, 0])
        d.set(0, active: 1)   // 256 / 1
        d.set(1, active: 2)   // 512 / 3
        XCTAssertEqual(d.pick(.wlc), 1)
        d.set(1, active: 3)   // 768 / 3 = 256: tie, first wins
        XCTAssertEqual(d.pick(.wlc), 0)
        // Weight 0 never chosen even when idle.
        d.set(2, active: 0)
        XCTAssertNotEqual(d.pick(.wlc), 2)
    }

    func testShortestExpectedDelayAndNeverQueue() {
        let d = CountedDestinations([1, 2])
        d.set(0, active: 0)
        d.set(1, active: 1)
        // sed: (0+1)/1 = 1 vs (1+1)/2 = 1: tie, first wins.
        XCTAssertEqual(d.pick(.sed), 0)
        d.set(0, active: 1)
        // sed: 2/1 vs 2/2: the second.
        XCTAssertEqual(d.pick(.sed), 1)
        // nq: an idle server wins outright, even the lighter one.
        let idle = CountedDestinations([1, 5])
        idle.set(1, active: 1)
        XCTAssertEqual(idle.pick(.nq), 0)
        XCTAssertEqual(idle.pick(.sed), 1)  // (0+1)/1 > (1+1)/5
        // nq takes the first idle server wherever it stands, and shortest expected delay once none is idle.
        let busy = CountedDestinations([5, 1, 1])
        busy.set(0, active: 1)
        XCTAssertEqual(busy.pick(.nq), 1)
        XCTAssertEqual(busy.pick(.sed), 0)  // (1+1)/5 < (0+1)/1
        busy.set(1, active: 1)
        XCTAssertEqual(busy.pick(.nq), 2)
        busy.set(2, active: 1)
        XCTAssertEqual(busy.pick(.nq), 0)
    }

    func testFailoverTakesHighestWeightThenFailsOver() {
        let d = CountedDestinations([2, 5, 5, 1])
        XCTAssertEqual(d.pick(.fo), 1)
        d.list[1].weight = 0
        XCTAssertEqual(d.pick(.fo), 2)
        d.list[2].isAvailable = false
        XCTAssertEqual(d.pick(.fo), 0)
    }

    func testOverflowMovesOnWhenActiveExceedsWeight() {
        let d = CountedDestinations([3, 2, 3])
        d.set(0, active: 3)
        XCTAssertEqual(d.pick(.ovf), 0)  // 3 active, weight 3: not exceeded; ties with 2, the first wins
        d.set(0, active: 4)
        XCTAssertEqual(d.pick(.ovf), 2)  // the heaviest of the rest, not the next in order
        d.set(2, active: 4)
        XCTAssertEqual(d.pick(.ovf), 1)
        d.set(1, active: 3)
        XCTAssertNil(d.pick(.ovf))
    }

    func testThresholdsSetAndClearOverloadWithHysteresis() {
        let d = CountedDestinations([1, 1])
        let id = d.list[0].cell
        d.store.setThresholds(id, upper: 2, lower: 1)
        let cell = d.store.cell(id)
        cell.pointee.bind(template: false)
        XCTAssertFalse(d.list[0].isOverloaded)
        cell.pointee.bind(template: false)
        XCTAssertTrue(d.list[0].isOverloaded)
        XCTAssertEqual(d.pick(.rr), 1)
        XCTAssertEqual(d.pick(.wlc), 1)
        cell.pointee.unbind(template: false, active: false)  // 1: not below the lower threshold of 1
        XCTAssertTrue(d.list[0].isOverloaded)
        cell.pointee.unbind(template: false, active: false)  // 0
        XCTAssertFalse(d.list[0].isOverloaded)
        // No lower threshold: clears below 3/4 of the upper one.
        d.store.setThresholds(id, upper: 4, lower: 0)
        for _ in 0..<4 { cell.pointee.bind(template: false) }
        XCTAssertTrue(d.list[0].isOverloaded)
        cell.pointee.unbind(template: false, active: false)  // 3: 12 < 12 is false
        XCTAssertTrue(d.list[0].isOverloaded)
        cell.pointee.unbind(template: false, active: false)  // 2
        XCTAssertFalse(d.list[0].isOverloaded)
    }

    func testTwosPrefersLessLoadedAndRespectsWeights() {
        let d = CountedDestinations([1, 1])
        d.set(0, active: 10)
        var chosen = [0, 0]
        d.list.withUnsafeBufferPointer { buffer in
            var state = Scheduler.makeState(.twos, destinations: buffer, seed: 42)
            for _ in 0..<1000 { chosen[Scheduler.select(.twos, state: &state, destinations: buffer, flow: anyFlow)!] += 1 }
        }
        // Both draws must land on the loaded server for it to win. IPVS draws from 0...total inclusive,
        // which favours the first server (2/3 per draw here), so it still wins 4/9 of the time.
        XCTAssertEqual(Double(chosen[0]) / 1000, 4.0 / 9, accuracy: 0.06)
        // Loads compare per unit of weight: 256/1 against 512/3, so the heavier server wins every mixed pair
        // and the light one only its own pairs, (2/5)^2 of the time (draws from 0...4: two of five hit it).
        let weighted = CountedDestinations([1, 3])
        weighted.set(0, active: 1)
        weighted.set(1, active: 2)
        chosen = [0, 0]
        weighted.list.withUnsafeBufferPointer { buffer in
            var state = Scheduler.makeState(.twos, destinations: buffer, seed: 7)
            for _ in 0..<1000 { chosen[Scheduler.select(.twos, state: &state, destinations: buffer, flow: anyFlow)!] += 1 }
        }
        XCTAssertEqual(Double(chosen[0]) / 1000, 4.0 / 25, accuracy: 0.05)
        let zero = CountedDestinations([0, 1])
        XCTAssertEqual(zero.pick(.twos), 1)
        XCTAssertNil(CountedDestinations([0, 0]).pick(.twos))
    }
}
