import Packet
@testable import Scheduling
import XCTest

/// `wrr` against IPVS's weighted round robin. The expected sequences were worked out by hand from IPVS's
/// algorithm (di = gcd, mw = max - (di - 1), cw starts at mw and drops by di each time the walk passes the
/// list head); the comments show the passes.
final class WeightedRoundRobinTests: XCTestCase {
    func cycle(_ pattern: [Int], times: Int) -> [Int?] {
        Array((0..<times).map { _ in pattern.map { Optional($0) } }.joined())
    }

    func testInitialState() {
        XCTAssertEqual(makeState(.wrr, destinations([3, 2, 1])),
                       SchedulerState(cursor: -1, currentWeight: 3, maxWeight: 3, weightStep: 1))
        XCTAssertEqual(makeState(.wrr, destinations([2, 4, 6])),
                       SchedulerState(cursor: -1, currentWeight: 5, maxWeight: 5, weightStep: 2))
        XCTAssertEqual(makeState(.wrr, destinations([0, 6, 9])),
                       SchedulerState(cursor: -1, currentWeight: 7, maxWeight: 7, weightStep: 3))
        XCTAssertEqual(makeState(.wrr, destinations([0, 0])),
                       SchedulerState(cursor: -1, currentWeight: 0, maxWeight: 0, weightStep: 1))
        XCTAssertEqual(makeState(.wrr, []),
                       SchedulerState(cursor: -1, currentWeight: 0, maxWeight: 0, weightStep: 1))
        // Availability does not enter the weight arithmetic.
        XCTAssertEqual(makeState(.wrr, destinations([4, 2], unavailable: [0])), makeState(.wrr, destinations([4, 2])))
    }

    func testSingleServer() {
        XCTAssertEqual(picks(.wrr, destinations([1]), count: 4), [0, 0, 0, 0])
        XCTAssertEqual(picks(.wrr, destinations([7]), count: 3), [0, 0, 0])
    }

    func testEqualWeights() {
        XCTAssertEqual(picks(.wrr, destinations([1, 1, 1]), count: 7), [0, 1, 2, 0, 1, 2, 0])
    }

    func testThreeTwoOne() {
        // cw=3: 0 | cw=2: 0 1 | cw=1: 0 1 2 | cw=3 again
        XCTAssertEqual(picks(.wrr, destinations([3, 2, 1]), count: 12), cycle([0, 0, 1, 0, 1, 2], times: 2))
    }

    func testFourThreeTwo() {
        // cw=4: 0 | cw=3: 0 1 | cw=2: 0 1 2 | cw=1: 0 1 2
        XCTAssertEqual(picks(.wrr, destinations([4, 3, 2]), count: 18), cycle([0, 0, 1, 0, 1, 2, 0, 1, 2], times: 2))
    }

    func testFiveOne() {
        // cw=5,4,3,2: 0 | cw=1: 0 1
        XCTAssertEqual(picks(.wrr, destinations([5, 1]), count: 12), cycle([0, 0, 0, 0, 0, 1], times: 2))
    }

    func testCommonDivisor() {
        // di=2, mw=5: cw=5: 2 | cw=3: 1 2 | cw=1: 0 1 2
        XCTAssertEqual(picks(.wrr, destinations([2, 4, 6]), count: 12), cycle([2, 1, 2, 0, 1, 2], times: 2))
    }

    func testWeightZeroIsNeverChosen() {
        // mw=2: cw=2: 1 | cw=1: 1 2
        XCTAssertEqual(picks(.wrr, destinations([0, 2, 1]), count: 9), cycle([1, 1, 2], times: 3))
    }

    func testAllZeroOrEmptyGivesNilAndKeepsState() {
        var state = makeState(.wrr, destinations([0, 0]))
        XCTAssertEqual(picks(.wrr, destinations([0, 0]), state: &state, count: 3), [nil, nil, nil])
        XCTAssertEqual(state, makeState(.wrr, destinations([0, 0])))
        XCTAssertEqual(picks(.wrr, [], count: 2), [nil, nil])
    }

    func testUnavailableServerIsSkippedInsideTheWeightTest() {
        // mw stays 3 (server 0 still counts): cw=3: - | cw=2: 1 | cw=1: 1 2 | ...
        XCTAssertEqual(picks(.wrr, destinations([3, 2, 1], unavailable: [0]), count: 9), cycle([1, 1, 2], times: 3))
    }

    func testAllUnavailableGivesNilThenResumes() {
        // From the head: every pass down to cw=1 finds nothing, cw wraps to mw and the walk gives up at the head.
        var state = makeState(.wrr, destinations([3, 2]))
        XCTAssertEqual(picks(.wrr, destinations([3, 2], unavailable: [0, 1]), state: &state, count: 2), [nil, nil])
        XCTAssertEqual(state, SchedulerState(cursor: -1, currentWeight: 3, maxWeight: 3, weightStep: 1))
        XCTAssertEqual(picks(.wrr, destinations([3, 2]), state: &state, count: 3), [0, 0, 1])

        // From mid-list with cw=1: cw wraps to mw (restarted), the passes go down to cw=1 again and the walk
        // gives up at `stop`, the server it started from.
        state = makeState(.wrr, destinations([3, 2]))
        XCTAssertEqual(picks(.wrr, destinations([3, 2]), state: &state, count: 4), [0, 0, 1, 0])
        XCTAssertEqual(state, SchedulerState(cursor: 0, currentWeight: 1, maxWeight: 3, weightStep: 1))
        XCTAssertEqual(picks(.wrr, destinations([3, 2], unavailable: [0, 1]), state: &state, count: 2), [nil, nil])
        XCTAssertEqual(state, SchedulerState(cursor: 0, currentWeight: 1, maxWeight: 3, weightStep: 1))
        // Resumes after server 0 with cw=1: 1, then cw wraps to 3: 0, then cw=2: 0.
        XCTAssertEqual(picks(.wrr, destinations([3, 2]), state: &state, count: 3), [1, 0, 0])
    }

    func testHugeUnavailableWeightsStayCheap() {
        // Walked literally this is about 65535 passes per selection; the skip makes it a few.
        let list = destinations([65535, 65535, 1], unavailable: [0, 1])
        var state = makeState(.wrr, list)
        var reference = state
        for _ in 0..<2000 {
            let got = list.withUnsafeBufferPointer {
                WeightedRoundRobin.select(state: &state, destinations: $0, flow: anyFlow)
            }
            XCTAssertEqual(got, 2)
        }
        // And the same answers and state as the literal walk, for a few steps.
        var fast = reference
        for _ in 0..<5 {
            let expected = referenceSelect(state: &reference, list)
            let got = list.withUnsafeBufferPointer {
                WeightedRoundRobin.select(state: &fast, destinations: $0, flow: anyFlow)
            }
            XCTAssertEqual(got, expected)
            XCTAssertEqual(fast, reference)
        }
    }

    func testLongRunProportionsEqualWeights() {
        let weightSets: [[Int32]] = [[1], [1, 1, 1], [3, 2, 1], [4, 3, 2], [5, 1], [2, 4, 6], [0, 2, 1],
                                     [10, 20, 30, 40], [100, 1], [7, 0, 7, 3]]
        for weights in weightSets {
            let divisor = weights.filter { $0 > 0 }.reduce(Int32(0)) { WeightedRoundRobin.gcd($0, $1) }
            let cycleLength = Int(weights.reduce(0, +) / divisor)
            let picks = picks(.wrr, destinations(weights), count: cycleLength * 10)
            for (index, weight) in weights.enumerated() {
                XCTAssertEqual(picks.filter { $0 == index }.count, Int(weight / divisor) * 10, "\(weights)")
            }
        }
    }

    func testDestinationsChangedFollowsIPVS() {
        // After 0, 0 on [3,2,1]: cw=2, cursor 0.
        var state = makeState(.wrr, destinations([3, 2, 1]))
        _ = picks(.wrr, destinations([3, 2, 1]), state: &state, count: 2)
        XCTAssertEqual(state, SchedulerState(cursor: 0, currentWeight: 2, maxWeight: 3, weightStep: 1))
        // Re-weighted to [4,3,2]: back to the head, cw kept (in range, step 1).
        state = changed(.wrr, state, destinations([4, 3, 2]))
        XCTAssertEqual(state, SchedulerState(cursor: -1, currentWeight: 2, maxWeight: 4, weightStep: 1))
        XCTAssertEqual(picks(.wrr, destinations([4, 3, 2]), state: &state, count: 7), [0, 1, 2, 0, 1, 2, 0])
        // cw above the new mw: reset to mw.
        XCTAssertEqual(changed(.wrr, SchedulerState(cursor: 1, currentWeight: 9, maxWeight: 9, weightStep: 1),
                               destinations([2, 1])),
                       SchedulerState(cursor: -1, currentWeight: 2, maxWeight: 2, weightStep: 1))
        // Step above 1: cw rounded down onto the step grid, plus one.
        XCTAssertEqual(changed(.wrr, SchedulerState(cursor: 2, currentWeight: 3, maxWeight: 5, weightStep: 2),
                               destinations([4, 8])),
                       SchedulerState(cursor: -1, currentWeight: 1, maxWeight: 5, weightStep: 4))
        // All weights to 0: mw 0, nothing selectable.
        XCTAssertEqual(changed(.wrr, SchedulerState(cursor: 0, currentWeight: 1, maxWeight: 3, weightStep: 1),
                               destinations([0, 0])),
                       SchedulerState(cursor: -1, currentWeight: 0, maxWeight: 0, weightStep: 1))
    }

    /// The optimised selection against a literal pass-by-pass walk, on random weights, availability flips
    /// and weight changes; results and the whole state must agree at every step.
    func testMatchesLiteralWalk() {
        var rng = SplitMix64(seed: 0x5EED_0001)
        let weightChoices: [Int32] = [0, 1, 2, 3, 4, 5, 6, 8, 9, 12, 40, 100]
        for _ in 0..<300 {
            let size = Int(rng.next() % 7)
            let factor = Int32([1, 1, 2, 3][Int(rng.next() % 4)])
            var list = (0..<size).map { _ in
                SchedulingDestination(weight: weightChoices[Int(rng.next() % UInt64(weightChoices.count))] * factor,
                                      isAvailable: rng.next() % 4 != 0)
            }
            var fast = makeState(.wrr, list)
            var reference = fast
            for step in 0..<150 {
                if !list.isEmpty && rng.next() % 10 == 0 {
                    let index = Int(rng.next() % UInt64(list.count))
                    if rng.next() & 1 == 0 {
                        list[index].isAvailable.toggle()  // like IPVS's overload flag: no state change
                    } else {
                        list[index].weight = weightChoices[Int(rng.next() % UInt64(weightChoices.count))]
                        fast = changed(.wrr, fast, list)
                        reference = fast
                    }
                }
                let expected = referenceSelect(state: &reference, list)
                let got = list.withUnsafeBufferPointer {
                    WeightedRoundRobin.select(state: &fast, destinations: $0, flow: anyFlow)
                }
                XCTAssertEqual(got, expected, "\(list) step \(step)")
                XCTAssertEqual(fast, reference, "\(list) step \(step)")
                if got != expected || fast != reference { return }
            }
        }
    }
}

/// IPVS's wrr selection walked literally, one pass at a time (the list head is index -1).
func referenceSelect(state: inout SchedulerState, _ list: [SchedulingDestination]) -> Int? {
    if state.maxWeight == 0 { return nil }
    let last = Int(state.cursor)
    var position = last
    var stop: Int?
    var lastPass = false
    var restarted = false
    while true {
        for index in (position + 1)..<max(position + 1, list.count) {
            if list[index].isAvailable && list[index].weight >= state.currentWeight {
                state.cursor = Int32(index)
                return index
            }
            if index == stop {
                state.cursor = Int32(index)
                return nil
            }
        }
        position = -1
        state.currentWeight -= state.weightStep
        if state.currentWeight <= 0 {
            state.currentWeight = state.maxWeight
            if lastPass || last == -1 {
                state.cursor = -1
                return nil
            }
            restarted = true
        }
        lastPass = state.currentWeight <= state.weightStep
        if lastPass && restarted && last != -1 { stop = last }
    }
}
