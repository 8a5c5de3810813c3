import Packet
import Scheduling
import XCTest

final class SchedulerDispatchTests: XCTestCase {
    func testEveryKindIsRegisteredWithItsOwnType() {
        for kind in SchedulerKind.allCases {
            XCTAssertEqual(Scheduler.algorithm(kind).kind, kind)
        }
    }

    func testNamesRoundTrip() {
        for kind in SchedulerKind.allCases {
            XCTAssertEqual(SchedulerKind(name: kind.name), kind)
            XCTAssertFalse(kind.summary.isEmpty)
        }
        XCTAssertEqual(SchedulerKind(name: "wrr"), .wrr)
        XCTAssertNil(SchedulerKind(name: "WRR"))
        XCTAssertNil(SchedulerKind(name: "bogus"))
    }

    func testDispatchMatchesTheConcreteTypes() {
        let list = destinations([3, 0, 2, 5], unavailable: [2])
        list.withUnsafeBufferPointer { buffer in
            var viaEnum = Scheduler.makeState(.wrr, destinations: buffer)
            var direct = WeightedRoundRobin.makeState(destinations: buffer)
            for _ in 0..<40 {
                XCTAssertEqual(
                    Scheduler.select(.wrr, state: &viaEnum, destinations: buffer, flow: anyFlow),
                    WeightedRoundRobin.select(state: &direct, destinations: buffer, flow: anyFlow))
                XCTAssertEqual(viaEnum, direct)
            }
            var rrEnum = Scheduler.makeState(.rr, destinations: buffer)
            var rrDirect = RoundRobin.makeState(destinations: buffer)
            for _ in 0..<10 {
                XCTAssertEqual(
                    Scheduler.select(.rr, state: &rrEnum, destinations: buffer, flow: anyFlow),
                    RoundRobin.select(state: &rrDirect, destinations: buffer, flow: anyFlow))
            }
        }
    }

    func testStatesAndDestinationsAreTrivial() {
        XCTAssertTrue(_isPOD(SchedulerState.self))
        XCTAssertTrue(_isPOD(SchedulingDestination.self))
        XCTAssertTrue(_isPOD(ServicePolicy.self))
        XCTAssertTrue(_isPOD(Admission.self))
        // Small enough that a service's destinations share few cache lines.
        XCTAssertLessThanOrEqual(MemoryLayout<SchedulingDestination>.stride, 32)
        XCTAssertLessThanOrEqual(MemoryLayout<SchedulerState>.stride, 56)
    }
}
