import Foundation
import Topology
import XCTest

/// Scheduling behaviour end to end: real TCP through a director in a namespace lab. Needs root; each test
/// builds its own lab and removes it in tearDown, also when the test fails.
final class SchedulingIntegrationTests: XCTestCase {
    private var lab: Topology?
    private var director: Process?
    private var directorOutput: CollectedOutput?
    private var rulesPath: String?

    override func setUpWithError() throws {
        guard getuid() == 0 else { throw XCTSkip("integration tests need root: network namespaces and XDP") }
        let lab = try Topology(realCount: 2, directorQueues: 2)
        self.lab = lab
        for index in 0..<lab.realCount {
            _ = try lab.spawn(lab.real(index), [DirectRoutingTests.xdirector, "backend-http", "--name", "rs\(index + 1)",
                                                "--port", "80"])
        }
    }

    override func tearDown() {
        if let director, director.isRunning { director.terminate(); Topology.wait(director, seconds: 10) }
        lab?.teardown()
        lab = nil
        if let rulesPath { try? FileManager.default.removeItem(atPath: rulesPath) }
    }

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
        // A slow download from rs1 (the only server with weight), open across the reload.
        let size = 6_000_000
        let download = CollectedOutput()
        let transfer = try lab.spawn(lab.client, ["curl", "-s", "-m", "60", "--limit-rate", "1500K", "-o", "/dev/null",
                                                  "-D", "-", "-w", "size=%{size_download}\n",
                                                  "http://\(Topology.vip4)/bytes/\(size)"], output: download.pipe)
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

    // MARK: Helpers

    private func startDirector(rules: String) throws {
        let lab = try XCTUnwrap(lab)
        let path = NSTemporaryDirectory() + "\(lab.prefix)-\(UUID().uuidString).rules"
        rulesPath = path
        try (rules + "\n").write(toFile: path, atomically: true, encoding: .utf8)
        let output = CollectedOutput()
        director = try lab.spawn(lab.director, [DirectRoutingTests.xdirector, "run", "--interface", lab.directorInterface,
                                                "--rules", path], output: output.pipe)
        directorOutput = output
        guard output.waitFor("ready", seconds: 30) else { throw TestFailure("the director did not start: \(output.text)") }
    }

    private func rewriteRules(_ rules: String) throws {
        try (rules + "\n").write(toFile: try XCTUnwrap(rulesPath), atomically: true, encoding: .utf8)
    }

    private func stopDirector() throws -> DirectorReport {
        let director = try XCTUnwrap(director)
        director.terminate()
        Topology.wait(director, seconds: 15)
        XCTAssertFalse(director.isRunning, "the director stops on SIGTERM")
        return DirectorReport(text: directorOutput?.text ?? "")
    }

    /// `count` requests to the IPv4 VIP, one TCP connection each, tallied by answering real server.
    private func answers(_ lab: Topology, count: Int) throws -> [String: Int] {
        var tally: [String: Int] = [:]
        for _ in 0..<count {
            let body = try lab.exec(lab.client, ["curl", "-s", "-m", "5", "http://\(Topology.vip4)/"], check: false)
                .trimmingCharacters(in: .whitespacesAndNewlines)
            tally[body.isEmpty ? "(none)" : body, default: 0] += 1
        }
        return tally
    }
}
