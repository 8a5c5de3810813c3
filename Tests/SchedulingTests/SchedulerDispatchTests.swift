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

    /// `Scheduler.select`'s switch and `Scheduler.algorithm` name the same type for every kind: both pick the
    /// same servers while each pick adds an active connection, so the loads, and the picks, keep moving.
    func testDispatchMatchesTheConcreteTypes() {
        var rng = SplitMix64(seed: 11)
        let flows = (0..<60).map { _ in randomFlow(&rng) }
        for kind in SchedulerKind.allCases {
            let d = CountedDestinations([3, 0, 2, 5, 1, 4])
            d.list[2].isAvailable = false
            d.set(0, active: 2, inactive: 5)
            d.set(3, active: 6)
            d.set(4, active: 0, inactive: 9)
            let type = Scheduler.algorithm(kind)
            d.list.withUnsafeBufferPointer { buffer in
                var viaEnum = Scheduler.makeState(kind, destinations: buffer, flags: kind.acceptedFlags, seed: 5)
                var direct = type.makeState(destinations: buffer)
                direct.flags = kind.acceptedFlags
                direct.random = 5
                defer { Scheduler.release(&viaEnum); Scheduler.release(&direct) }
                for (n, flow) in flows.enumerated() {
                    direct.clock = UInt32(n)
                    let picked = Scheduler.select(kind, state: &viaEnum, destinations: buffer, flow: flow, now: UInt32(n))
                    XCTAssertEqual(picked, type.select(state: &direct, destinations: buffer, flow: flow), "\(kind)")
                    if let picked { d.store.cell(buffer[picked].cell).pointee.active.add(1, ordering: .relaxed) }
                }
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
