import Control
import Health
import Keepalived
import Logging
import XCTest

/// The monitor's hand-over to the director: a table the director refuses is offered again.
final class HealthMonitorTests: XCTestCase {
    func testARefusedTableIsOfferedAgainASecondLater() throws {
        // A real server without a checker: nothing is probed, the table is the rules.
        let config = try KeepalivedParser.parse("""
            virtual_server 192.0.2.10 80 {
                lb_algo rr
                lb_kind DR
                real_server 198.51.100.11 80 {
                    weight 1
                }
            }
            """)
        let monitor = HealthMonitor(config: config, logger: Logger(label: "test"))
        monitor.reload(config)  // nothing applied yet: the next turn applies the table
        var offered = 0
        var refuse = true
        let apply: (DirectorConfig) throws -> Void = { _ in
            offered += 1
            if refuse { throw ControlError("refused") }
        }
        monitor.tick(apply: apply, expire: { _, _ in })
        XCTAssertEqual(offered, 1)
        XCTAssertNil(monitor.applied, "a refused table is not taken as applied")
        monitor.tick(apply: apply, expire: { _, _ in })
        XCTAssertEqual(offered, 1, "not again within the second")
        refuse = false
        Thread.sleep(forTimeInterval: 1.1)
        monitor.tick(apply: apply, expire: { _, _ in })
        XCTAssertEqual(offered, 2, "offered again")
        XCTAssertEqual(monitor.applied, monitor.state.desired())
        monitor.tick(apply: apply, expire: { _, _ in })
        XCTAssertEqual(offered, 2, "applied: nothing more to do")
    }
}
