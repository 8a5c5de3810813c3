import Foundation
import Packet
import Topology
import XCTest

/// Three directors behind a router running BIRD with ECMP, each announcing the VIP over BGP, a Maglev (mh)
/// service in DR to three real servers: long-lived connections spread over the directors survive the loss
/// of a director, the arrival of a fourth, and a real server leaving.
final class HATests: XCTestCase {
    private var lab: HATopology?
    private var directors: [Int: (Process, CollectedOutput)] = [:]
    private let port: UInt16 = 7000
    private var rules: String {
        """
        -A -t \(HATopology.vip):\(port) -s mh
        -a -t \(HATopology.vip):\(port) -r \(HATopology.realAddress(0)):\(port) -g
        -a -t \(HATopology.vip):\(port) -r \(HATopology.realAddress(1)):\(port) -g
        -a -t \(HATopology.vip):\(port) -r \(HATopology.realAddress(2)):\(port) -g
        """
    }

    override func setUpWithError() throws {
        guard getuid() == 0 else { throw XCTSkip("integration tests need root: network namespaces and XDP") }
        guard FileManager.default.isExecutableFile(atPath: "/usr/sbin/bird") else { throw XCTSkip("BIRD is not installed (tools/setup.sh)") }
        let lab = try HATopology(realCount: 3)
        self.lab = lab
        try lab.startRealServers(executable: LabTestCase.xdirector, port: port)
        for _ in 0..<3 { try startDirector(try lab.addDirector()) }
        XCTAssertTrue(lab.waitForNextHops(3, seconds: 20), "the router has three next hops: \(lab.nextHops())")
    }

    override func tearDown() {
        lab?.teardown()
        lab = nil
    }

    private func startDirector(_ index: Int) throws {
        let lab = try XCTUnwrap(lab)
        let output = CollectedOutput()
        let process = try lab.startDirector(index, executable: LabTestCase.xdirector, rules: rules, output: output.pipe)
        guard output.waitFor("ready", seconds: 30) else { throw TestFailure("director \(index + 1) did not start: \(output.text)") }
        directors[index] = (process, output)
    }

    /// The connections a director tracks, from `ipvsadm -Lcn`: client address:port → real server.
    private func connections(_ index: Int) throws -> [String: String] {
        let lab = try XCTUnwrap(lab)
        let listing = try Topology.run([LabTestCase.xdirector, "ipvsadm", "--socket", lab.controlSocket(index), "-Lcn"])
        var result: [String: String] = [:]
        for line in listing.split(separator: "\n") {
            let fields = line.split(separator: " ")
            guard fields.count >= 6, fields[0] == "TCP", fields[2] == "ESTABLISHED" else { continue }
            result[String(fields[3])] = String(fields[5])
        }
        return result
    }

    private func probe(connections: Int, seconds: Double) throws -> (Process, CollectedOutput) {
        let lab = try XCTUnwrap(lab)
        let output = CollectedOutput()
        let process = try lab.spawn(lab.client, [LabTestCase.xdirector, "session-probe", "--address", "\(HATopology.vip)",
                                                 "--tcp-port", "\(port)", "--connections", "\(connections)", "--flows", "0",
                                                 "--seconds", "\(seconds)", "--interval-ms", "50", "--answer-timeout-ms", "15000"],
                                    output: output.pipe)
        return (process, output)
    }

    private func report(_ process: Process, _ output: CollectedOutput) throws -> [String: Any] {
        try sessionProbeReport(process, output, seconds: 90)
    }

    /// 300 long-lived connections spread by ECMP over three directors; kill -9 one: its route is withdrawn
    /// within a second, and every connection continues (those of the dead director on the survivors, by
    /// the same Maglev choice) with no reset. Then a fourth director joins, the first is stopped (SIGTERM),
    /// a real server leaves every director, and the third is stopped: the fourth takes its new connections
    /// on the same real servers.
    func testConnectionsSurviveADirectorsLossAFourthDirectorAndARealServerLeaving() throws {
        let lab = try XCTUnwrap(lab)
        let (probe, probeOutput) = try probe(connections: 300, seconds: 22)
        var spread: [Int] = []
        XCTAssertTrue(try waitUntil(seconds: 10) {
            spread = try (0..<3).map { try connections($0).count }
            return spread.reduce(0, +) >= 300
        }, "the connections are open: \(spread)")
        XCTAssertTrue(spread.allSatisfy { $0 > 30 }, "ECMP spreads the connections over the three directors: \(spread)")
        let before = try (0..<3).reduce(into: [String: String]()) { all, index in all.merge(try connections(index)) { $1 } }

        // kill -9 the second director: withdrawn by its route guard, its flows move to the others.
        let (victim, _) = try XCTUnwrap(directors[1])
        kill(victim.processIdentifier, SIGKILL)
        let killed = Date()
        XCTAssertTrue(lab.waitForNextHops(2, seconds: 5), "withdrawn: \(lab.nextHops())")
        let withdrawal = Date().timeIntervalSince(killed)
        print("route of the killed director withdrawn at the router after \(Int(withdrawal * 1000)) ms")
        XCTAssertLessThan(withdrawal, 2, "withdrawn within the documented time")
        XCTAssertFalse(lab.nextHops().contains(HATopology.directorAddress(1)))
        usleep(3_000_000)
        let survivors = try [0, 2].reduce(into: [String: String]()) { all, index in all.merge(try connections(index)) { $1 } }
        let moved = before.filter { survivors[$0.key] != nil && survivors[$0.key] != $0.value }
        XCTAssertTrue(moved.isEmpty, "every director agrees on every flow's real server: \(moved.prefix(5))")
        XCTAssertGreaterThanOrEqual(survivors.count, 295, "the dead director's connections now live on the survivors")

        // A fourth director: announced once serving.
        let fourth = try lab.addDirector()
        try startDirector(fourth)
        XCTAssertTrue(lab.waitForNextHops(3, seconds: 15), "the fourth director is announced: \(lab.nextHops())")
        XCTAssertTrue(lab.nextHops().contains(HATopology.directorAddress(fourth)))
        usleep(2_000_000)

        // SIGTERM the first director: withdrawn before its program is detached; its flows move on.
        let (first, _) = try XCTUnwrap(directors[0])
        first.terminate()
        XCTAssertTrue(lab.waitForNextHops(2, seconds: 5), "withdrawn on SIGTERM: \(lab.nextHops())")
        Topology.wait(first, seconds: 10)
        XCTAssertEqual(first.terminationStatus, 0)
        usleep(2_000_000)

        // rs3 leaves every director: its connections drain, new ones avoid it, the others stay put.
        for index in [2, fourth] {
            _ = try Topology.run([LabTestCase.xdirector, "ipvsadm", "--socket", lab.controlSocket(index), "-d", "-t",
                                  "\(HATopology.vip):\(port)", "-r", "\(HATopology.realAddress(2)):\(port)"])
        }
        let summary = try report(probe, probeOutput)
        XCTAssertEqual(summary["reset"] as? Int, 0, "no connection is reset: \(summary)")
        XCTAssertEqual(summary["broken"] as? Int, 0, "no connection breaks: \(summary)")
        XCTAssertEqual(summary["changed"] as? Int, 0, "no connection changes real server: \(summary)")
        XCTAssertEqual(summary["answers"] as? Int, summary["questions"] as? Int, "every question is answered")
        // New connections after the removal avoid rs3; and the directors agree on them too: stop the third
        // director, and every connection it held goes on, on the same real server, on the fourth.
        let (fresh, freshOutput) = try self.probe(connections: 60, seconds: 6)
        usleep(1_500_000)
        // Only the new probe's connections: the first probe's, closed by now, may still be listed.
        let third = try connections(2).filter { before[$0.key] == nil && survivors[$0.key] == nil }
        XCTAssertFalse(third.isEmpty, "ECMP gave the third director some of the new connections")
        let (thirdDirector, _) = try XCTUnwrap(directors[2])
        thirdDirector.terminate()
        XCTAssertTrue(lab.waitForNextHops(1, seconds: 5), "only the fourth director is left: \(lab.nextHops())")
        usleep(1_500_000)
        let fourthHolds = try connections(fourth)
        let disagreements = third.filter { fourthHolds[$0.key] != $0.value }
        XCTAssertTrue(disagreements.isEmpty, "the fourth director picks the same real servers: \(disagreements.prefix(5))")
        let freshSummary = try report(fresh, freshOutput)
        let servers = freshSummary["tcp_servers"] as? [String] ?? []
        XCTAssertEqual(servers.count, 60)
        XCTAssertFalse(servers.contains("rs3"), "new connections avoid the removed real server: \(servers)")
        XCTAssertEqual(freshSummary["broken"] as? Int, 0, "\(freshSummary)")
        XCTAssertEqual(freshSummary["changed"] as? Int, 0, "\(freshSummary)")
    }
}
