import Control
import Packet
import XCTest
@testable import Keepalived

/// The checkers' state machine on a virtual clock: no sockets, no sleeps.
final class HealthStateTests: XCTestCase {
    static let ok = CheckResult(success: true, reason: "connected")
    static let refused = CheckResult(success: false, reason: "connection refused")

    func config(_ body: String) throws -> KeepalivedConfig {
        try KeepalivedParser.parse(body)
    }

    func threeServers(extra: String = "", checker: String = "TCP_CHECK {\nconnect_timeout 2\nretry 2\ndelay_before_retry 1\n}") throws -> KeepalivedConfig {
        try config("""
            global_defs {
                enable_script_security
            }
            virtual_server 192.0.2.10 80 {
                lb_algo rr
                lb_kind DR
                delay_loop 5
                \(extra)
                real_server 198.51.100.11 80 { weight 1
                    \(checker) }
                real_server 198.51.100.12 80 { weight 2
                    \(checker) }
                real_server 198.51.100.13 80 { weight 3
                    \(checker) }
            }
            """)
    }

    func weights(_ table: DirectorConfig) -> [String] {
        table.services[0].reals.map { "\($0.endpoint.address)=\($0.weight)" }
    }

    func testRetryThenDownThenBackUp() throws {
        var state = HealthState(config: try threeServers(), now: 0)
        XCTAssertEqual(state.due(now: 0).count, 3)
        let rs2 = CheckerID(service: 0, real: 1, checker: 0)
        for id in state.due(now: 0) {
            state.started(id)
            XCTAssertEqual(state.record(id, Self.ok, now: 0.01), [])
        }
        XCTAssertEqual(state.due(now: 4.9), [])
        XCTAssertEqual(state.due(now: 5.01).count, 3)
        // rs2 fails: retry 2 means two more tries, delay_before_retry apart, before it is down.
        state.started(rs2)
        XCTAssertEqual(state.record(rs2, Self.refused, now: 5.02), [])
        XCTAssertEqual(state.checkers[rs2]?.nextRun, 6.02)
        XCTAssertEqual(state.record(rs2, Self.refused, now: 6.03), [])
        XCTAssertEqual(state.checkers[rs2]?.nextRun, 7.03)
        XCTAssertEqual(state.record(rs2, Self.refused, now: 7.04),
                       [.realServerDown(service: 0, real: 1, reason: "TCP_CHECK connection refused")])
        XCTAssertEqual(state.checkers[rs2]?.failuresInARow, 3)
        XCTAssertEqual(state.checkers[rs2]?.nextRun, 12.04)
        XCTAssertEqual(weights(state.desired()), ["198.51.100.11=1", "198.51.100.13=3"])
        // One success brings it back at its configured weight.
        XCTAssertEqual(state.record(rs2, Self.ok, now: 12.05), [.realServerUp(service: 0, real: 1, reason: "TCP_CHECK connected")])
        XCTAssertEqual(weights(state.desired()), ["198.51.100.11=1", "198.51.100.12=2", "198.51.100.13=3"])
        XCTAssertEqual(state.checkers[rs2]?.since, 12.05)
    }

    func testASuccessBetweenFailuresResetsTheRetries() throws {
        var state = HealthState(config: try threeServers(), now: 0)
        let rs1 = CheckerID(service: 0, real: 0, checker: 0)
        XCTAssertEqual(state.record(rs1, Self.refused, now: 1), [])
        XCTAssertEqual(state.record(rs1, Self.refused, now: 2), [])
        XCTAssertEqual(state.record(rs1, Self.ok, now: 3), [])
        XCTAssertEqual(state.record(rs1, Self.refused, now: 8), [])
        XCTAssertEqual(state.record(rs1, Self.refused, now: 9), [])
        XCTAssertTrue(state.isAlive(service: 0, real: 0))
    }

    func testInhibitOnFailureKeepsTheServerAtWeightZero() throws {
        var state = HealthState(config: try threeServers(extra: "inhibit_on_failure", checker: "TCP_CHECK { retry 0 }"), now: 0)
        _ = state.record(CheckerID(service: 0, real: 2, checker: 0), Self.refused, now: 1)
        XCTAssertEqual(weights(state.desired()), ["198.51.100.11=1", "198.51.100.12=2", "198.51.100.13=0"])
    }

    func testWarmupSpreadsTheFirstChecksAndAlphaStartsDown() throws {
        let config = try threeServers(checker: "TCP_CHECK {\nwarmup 10\nalpha\n}")
        var state = HealthState(config: config, now: 100, random: { $0 / 2 })
        XCTAssertEqual(state.due(now: 104.9), [])
        XCTAssertEqual(state.due(now: 105).count, 3)
        // alpha: down until the first success; none alive yet, so the quorum (1) is lost from the start.
        XCTAssertEqual(state.desired().services[0].reals, [])
        XCTAssertEqual(state.quorumUp, [false])
        let events = state.record(CheckerID(service: 0, real: 0, checker: 0), Self.ok, now: 105.1)
        XCTAssertEqual(events, [.realServerUp(service: 0, real: 0, reason: "TCP_CHECK connected"), .quorumGained(service: 0, liveWeight: 1)])
        XCTAssertEqual(weights(state.desired()), ["198.51.100.11=1"])
    }

    func testSorryServerTakesOverWhenNoneIsUpAndLeavesWhenOneIs() throws {
        var state = HealthState(config: try threeServers(extra: "sorry_server 198.51.100.99 80", checker: "TCP_CHECK { retry 0 }"), now: 0)
        for real in 0..<2 { _ = state.record(CheckerID(service: 0, real: real, checker: 0), Self.refused, now: 1) }
        XCTAssertEqual(weights(state.desired()), ["198.51.100.13=3"])
        XCTAssertEqual(state.record(CheckerID(service: 0, real: 2, checker: 0), Self.refused, now: 2),
                       [.realServerDown(service: 0, real: 2, reason: "TCP_CHECK connection refused"), .quorumLost(service: 0, liveWeight: 0)])
        XCTAssertEqual(weights(state.desired()), ["198.51.100.99=1"])
        XCTAssertEqual(state.record(CheckerID(service: 0, real: 1, checker: 0), Self.ok, now: 3),
                       [.realServerUp(service: 0, real: 1, reason: "TCP_CHECK connected"), .quorumGained(service: 0, liveWeight: 2)])
        XCTAssertEqual(weights(state.desired()), ["198.51.100.12=2"])
    }

    /// quorum 4, hysteresis 1: lost below 3, gained again at 5; between, the sorry server or the real
    /// servers stay as they are.
    func testQuorumWithHysteresis() throws {
        var state = HealthState(config: try threeServers(extra: "quorum 4\nhysteresis 1\nsorry_server 198.51.100.99 80", checker: "TCP_CHECK { retry 0 }"), now: 0)
        let (rs1, rs2, rs3) = (CheckerID(service: 0, real: 0, checker: 0), CheckerID(service: 0, real: 1, checker: 0), CheckerID(service: 0, real: 2, checker: 0))
        XCTAssertEqual(state.quorumUp, [true])
        XCTAssertEqual(state.record(rs3, Self.refused, now: 1), [.realServerDown(service: 0, real: 2, reason: "TCP_CHECK connection refused")])
        XCTAssertEqual(state.quorumUp, [true], "3 is not below 4 - 1")
        XCTAssertEqual(weights(state.desired()), ["198.51.100.11=1", "198.51.100.12=2"])
        XCTAssertEqual(state.record(rs1, Self.refused, now: 2).last, .quorumLost(service: 0, liveWeight: 2))
        XCTAssertEqual(weights(state.desired()), ["198.51.100.99=1"])
        XCTAssertEqual(state.record(rs1, Self.ok, now: 3).last, .realServerUp(service: 0, real: 0, reason: "TCP_CHECK connected"))
        XCTAssertEqual(state.quorumUp, [false], "5 is needed: 4 + 1")
        XCTAssertEqual(weights(state.desired()), ["198.51.100.99=1"])
        XCTAssertEqual(state.record(rs3, Self.ok, now: 4).last, .quorumGained(service: 0, liveWeight: 6))
        XCTAssertEqual(weights(state.desired()), ["198.51.100.11=1", "198.51.100.12=2", "198.51.100.13=3"])
        _ = rs2
    }

    func testMiscDynamicSetsTheWeightTheScriptReturns() throws {
        var state = HealthState(config: try threeServers(checker: "MISC_CHECK { misc_path /bin/check\nmisc_dynamic }"), now: 0)
        let rs1 = CheckerID(service: 0, real: 0, checker: 0)
        XCTAssertEqual(state.record(rs1, CheckResult(success: true, reason: "exited with status 7", weight: 5), now: 1),
                       [.weightChanged(service: 0, real: 0, weight: 5)])
        XCTAssertEqual(weights(state.desired()), ["198.51.100.11=5", "198.51.100.12=2", "198.51.100.13=3"])
        // Exit 0: the configured weight again. Exit 1 (retry 0 for MISC_CHECK): down.
        XCTAssertEqual(state.record(rs1, CheckResult(success: true, reason: "exited with status 0"), now: 2),
                       [.weightChanged(service: 0, real: 0, weight: 1)])
        XCTAssertEqual(state.record(rs1, CheckResult(success: false, reason: "exited with status 1"), now: 3),
                       [.realServerDown(service: 0, real: 0, reason: "MISC_CHECK exited with status 1")])
    }

    func testEveryCheckerOfAServerMustBeUp() throws {
        let config = try self.config("""
            virtual_server 192.0.2.10 80 {
                lb_kind DR
                real_server 198.51.100.11 80 {
                    TCP_CHECK { retry 0 }
                    HTTP_GET { url { path / } retry 0 }
                }
            }
            """)
        var state = HealthState(config: config, now: 0)
        XCTAssertEqual(state.record(CheckerID(service: 0, real: 0, checker: 1), CheckResult(success: false, reason: "HTTP status 500"), now: 1),
                       [.realServerDown(service: 0, real: 0, reason: "HTTP_GET HTTP status 500"), .quorumLost(service: 0, liveWeight: 0)])
        XCTAssertEqual(state.record(CheckerID(service: 0, real: 0, checker: 0), Self.ok, now: 2), [])
        XCTAssertFalse(state.isAlive(service: 0, real: 0))
    }

    func testAReloadKeepsTheStateOfUnchangedCheckers() throws {
        let first = try threeServers(checker: "TCP_CHECK { retry 0 }")
        var state = HealthState(config: first, now: 0)
        _ = state.record(CheckerID(service: 0, real: 1, checker: 0), Self.refused, now: 1)
        let second = try threeServers(checker: "TCP_CHECK { retry 0 }")
        let reloaded = HealthState(config: second, now: 2, previous: state)
        XCTAssertFalse(reloaded.isAlive(service: 0, real: 1))
        XCTAssertEqual(weights(reloaded.desired()), ["198.51.100.11=1", "198.51.100.13=3"])
        let changed = try threeServers(checker: "TCP_CHECK { retry 1 }")
        XCTAssertTrue(HealthState(config: changed, now: 2, previous: state).isAlive(service: 0, real: 1))
    }

    func testAGroupSharesItsServersHealth() throws {
        let config = try self.config("""
            virtual_server_group g {
                192.0.2.10 80
                192.0.2.11 80
            }
            virtual_server group g {
                lb_kind DR
                real_server 198.51.100.11 80 { TCP_CHECK { retry 0 } }
                real_server 198.51.100.12 80 { TCP_CHECK { retry 0 } }
            }
            """)
        var state = HealthState(config: config, now: 0)
        _ = state.record(CheckerID(service: 0, real: 0, checker: 0), Self.refused, now: 1)
        XCTAssertEqual(state.desired().services.map { $0.reals.map(\.endpoint.description) },
                       [["198.51.100.12:80"], ["198.51.100.12:80"]])
    }
}
