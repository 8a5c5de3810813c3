@testable import Control
import Dataplane
import XCTest

/// `run --queues/--cores`: the initial queue → core map and what it refuses.
final class QueuePlanTests: XCTestCase {
    func testListsParse() throws {
        XCTAssertEqual(try QueuePlan.parseList("0-3,6,8-9"), [0, 1, 2, 3, 6, 8, 9])
        for bad in ["", "3-1", "a", "1,,2", "-1", "1-"] {
            XCTAssertThrowsError(try QueuePlan.parseList(bad), bad)
        }
    }

    func testDefaultsGiveQueueIItsIthUsableCore() throws {
        let usable = CPUs.usable()
        let plan = try QueuePlan(queues: nil, cores: nil, interfaceQueueCount: 2)
        XCTAssertEqual(plan.assignments.map(\.queue), [0, 1])
        XCTAssertEqual(plan.assignments.map(\.core), [usable[0], usable[1 % usable.count]])
    }

    func testRefusesMissingQueuesAndCoresAndACoreGivenTwice() throws {
        let usable = CPUs.usable()
        func refusal(_ queues: [Int]?, _ cores: [Int]?) -> String {
            do {
                _ = try QueuePlan(queues: queues, cores: cores, interfaceQueueCount: 4)
                return "accepted"
            } catch {
                return error.description
            }
        }
        XCTAssertTrue(refusal([5], nil).contains("queue 5 does not exist"))
        XCTAssertTrue(refusal([0, 0], nil).contains("listed twice"))
        XCTAssertTrue(refusal([0], [4096]).contains("core 4096 does not exist"))
        XCTAssertTrue(refusal([0, 1], [usable[0]]).contains("lists 1 core for 2 queues"))
        if usable.count >= 1 {
            XCTAssertTrue(refusal([0, 1], [usable[0], usable[0]]).contains("two queues"))
        }
        let plan = try QueuePlan(queues: [1], cores: [usable.last!], interfaceQueueCount: 4)
        XCTAssertEqual(plan.assignments, [QueuePlan.Assignment(queue: 1, core: usable.last!)])
    }
}
