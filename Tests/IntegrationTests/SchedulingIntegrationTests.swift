import Foundation
import Topology
import XCTest

/// Scheduling behaviour end to end: real TCP through a director in a namespace lab. Needs root; each test
/// builds its own lab and removes it in tearDown, also when the test fails.
final class SchedulingIntegrationTests: LabTestCase {
    private var twoReals: String {
        """
        -a -t \(Topology.vip4):80 -r \(Topology.realAddress4(0)):80 -g -w 1
        -a -t \(Topology.vip4):80 -r \(Topology.realAddress4(1)):80 -g -w 1
        """
    }

    func testSourceHashingKeepsAClientOnOneServer() throws {
        let lab = try XCTUnwrap(lab)
        try startDirector(rules: "-A -t \(Topology.vip4):80 -s sh\n" + twoReals)
        let tally = try answers(lab, count: 20)
        XCTAssertEqual(tally.values.reduce(0, +), 20, "every connection answered: \(tally)")
        XCTAssertEqual(tally.count, 1, "one client address, one server, whichever worker took the SYN: \(tally)")
        let stats = try stopDirector()
        XCTAssertEqual(stats.total("new_conns"), 20, stats.text)
    }

    func testPersistenceKeepsAClientOnOneServerAcrossConnections() throws {
        let lab = try XCTUnwrap(lab)
        // rr alone alternates (see DirectRoutingTests); -p pins the client to its first server.
        try startDirector(rules: "-A -t \(Topology.vip4):80 -s rr -p 60\n" + twoReals)
        let tally = try answers(lab, count: 20)
        XCTAssertEqual(tally.values.reduce(0, +), 20, "every connection answered: \(tally)")
        XCTAssertEqual(tally.count, 1, "a persistent client stays on one server: \(tally)")
        _ = try stopDirector()
    }

    func testWeightZeroLetsAnOpenConnectionFinishWhileNewOnesGoElsewhere() throws {
        let lab = try XCTUnwrap(lab)
        try startDirector(rules: """
            -A -t \(Topology.vip4):80 -s wlc
            -a -t \(Topology.vip4):80 -r \(Topology.realAddress4(0)):80 -g -w 1
            -a -t \(Topology.vip4):80 -r \(Topology.realAddress4(1)):80 -g -w 0
            """)
        // A slow download from rs1 (the only server with weight), open across the reload: the server paces it
        // (about 4 s), since a client-side rate limit may read in bursts.
        let size = 6_000_000
        let download = CollectedOutput()
        let transfer = try lab.spawn(lab.client, ["curl", "-s", "-m", "60", "-o", "/dev/null",
                                                  "-D", "-", "-w", "size=%{size_download}\n",
                                                  "http://\(Topology.vip4)/slow/\(size)"], output: download.pipe)
        addTeardownBlock { if transfer.isRunning { transfer.terminate() } }
        usleep(1_000_000)  // about a quarter of it, at the limited rate
        XCTAssertTrue(transfer.isRunning, "the download is under way: \(download.text)")

        // Quiesce rs1, bring in rs2, and reload with SIGHUP.
        try rewriteRules("""
            -A -t \(Topology.vip4):80 -s wlc
            -a -t \(Topology.vip4):80 -r \(Topology.realAddress4(0)):80 -g -w 0
            -a -t \(Topology.vip4):80 -r \(Topology.realAddress4(1)):80 -g -w 1
            """)
        kill(try XCTUnwrap(director).processIdentifier, SIGHUP)
        XCTAssertTrue(directorOutput?.waitFor("reloaded", seconds: 10) ?? false, directorOutput?.text ?? "")
        XCTAssertTrue(transfer.isRunning, "the download is still open after the reload")

        let tally = try answers(lab, count: 10)
        XCTAssertEqual(tally, ["rs2": 10], "new connections avoid the quiesced server")

        Topology.wait(transfer, seconds: 30)
        XCTAssertFalse(transfer.isRunning)
        XCTAssertTrue(download.text.contains("X-Real-Server: rs1"), download.text)
        XCTAssertTrue(download.text.contains("size=\(size)"), "the open connection finished on rs1: \(download.text)")

        // A bad file is refused whole and the running rules stay.
        try rewriteRules("-A -t \(Topology.vip4):80 -s wlc\n-a -t \(Topology.vip4):80 -r 198.51.100.300:80 -g\n")
        kill(try XCTUnwrap(director).processIdentifier, SIGHUP)
        XCTAssertTrue(directorOutput?.waitFor("refused", seconds: 10) ?? false, directorOutput?.text ?? "")
        XCTAssertEqual(try answers(lab, count: 4), ["rs2": 4])

        let stats = try stopDirector()
        XCTAssertEqual(stats.detail("drop_tcp_without_connection"), 0, stats.text)
    }

    /// `count` requests to the IPv4 VIP, one TCP connection each, tallied by answering real server.
    private func answers(_ lab: Topology, count: Int) throws -> [String: Int] {
        try answers(lab, url: "http://\(Topology.vip4)/", count: count)
    }
}
