import Packet
import Scheduling
import XCTest

/// `rr` against IPVS's round robin: continue after the last chosen server, skip weight 0 and unavailable.
final class RoundRobinTests: XCTestCase {
    func testEqualWeightsCycleInListOrder() {
        XCTAssertEqual(picks(.rr, destinations([1, 1, 1]), count: 7), [0, 1, 2, 0, 1, 2, 0])
    }

    func testWeightMagnitudeIsIgnored() {
        XCTAssertEqual(picks(.rr, destinations([5, 1, 3]), count: 6), [0, 1, 2, 0, 1, 2])
    }

    func testWeightZeroIsSkipped() {
        XCTAssertEqual(picks(.rr, destinations([1, 0, 1]), count: 4), [0, 2, 0, 2])
        XCTAssertEqual(picks(.rr, destinations([0, 0, 4]), count: 3), [2, 2, 2])
    }

    func testUnavailableIsSkipped() {
        XCTAssertEqual(picks(.rr, destinations([3, 1, 2], unavailable: [1]), count: 4), [0, 2, 0, 2])
        XCTAssertEqual(picks(.rr, destinations([1, 1, 1, 1], unavailable: [0, 3]), count: 4), [1, 2, 1, 2])
    }

    func testSingleServerIsChosenAgain() {
        XCTAssertEqual(picks(.rr, destinations([1]), count: 3), [0, 0, 0])
    }

    func testNothingEligibleGivesNil() {
        XCTAssertEqual(picks(.rr, destinations([0, 0, 0]), count: 3), [nil, nil, nil])
        XCTAssertEqual(picks(.rr, destinations([2, 2], unavailable: [0, 1]), count: 2), [nil, nil])
        XCTAssertEqual(picks(.rr, [], count: 2), [nil, nil])
    }

    func testContinuesAfterLastChosenWhenAvailabilityChanges() {
        var state = makeState(.rr, destinations([1, 1, 1, 1]))
        XCTAssertEqual(picks(.rr, destinations([1, 1, 1, 1]), state: &state, count: 2), [0, 1])
        // Server 2 becomes unavailable: the walk continues after 1 and skips it.
        let degraded = destinations([1, 1, 1, 1], unavailable: [2])
        XCTAssertEqual(picks(.rr, degraded, state: &state, count: 4), [3, 0, 1, 3])
    }

    func testFailureKeepsThePosition() {
        var state = makeState(.rr, destinations([1, 1, 1]))
        XCTAssertEqual(picks(.rr, destinations([1, 1, 1]), state: &state, count: 1), [0])
        XCTAssertEqual(picks(.rr, destinations([1, 1, 1], unavailable: [0, 1, 2]), state: &state, count: 2), [nil, nil])
        XCTAssertEqual(state.cursor, 0)
        XCTAssertEqual(picks(.rr, destinations([1, 1, 1]), state: &state, count: 2), [1, 2])
    }

    func testDestinationsChangedKeepsCursorInRange() {
        var state = makeState(.rr, destinations([1, 1, 1, 1]))
        _ = picks(.rr, destinations([1, 1, 1, 1]), state: &state, count: 3)
        XCTAssertEqual(changed(.rr, state, destinations([1, 1, 1, 1, 1])).cursor, 2)
        state = changed(.rr, state, destinations([1, 1]))
        XCTAssertEqual(state.cursor, -1)
        XCTAssertEqual(picks(.rr, destinations([1, 1]), state: &state, count: 3), [0, 1, 0])
    }

    func testStaleCursorIsTreatedAsHead() {
        var state = SchedulerState(cursor: 9)
        XCTAssertEqual(picks(.rr, destinations([1, 1]), state: &state, count: 2), [0, 1])
        state = SchedulerState(cursor: -7)
        XCTAssertEqual(picks(.rr, destinations([1, 1]), state: &state, count: 1), [0])
    }

    func testProportionsAreEqualAmongEligible() {
        let list = destinations([1, 0, 7, 3, 1], unavailable: [4])
        let picks = picks(.rr, list, count: 3000)
        let counts = (0..<5).map { index in picks.filter { $0 == index }.count }
        XCTAssertEqual(counts, [1000, 0, 1000, 1000, 0])
    }
}
