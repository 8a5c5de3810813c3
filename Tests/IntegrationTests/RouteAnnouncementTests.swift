import Foundation
import Packet
import Topology
import XCTest

/// The director announces its VIPs through a real BIRD, peering over BGP with a BIRD on the client's side
/// (standing for the router): announced once serving, withdrawn when no real server can take connections,
/// withdrawn within a second of a kill -9 (by the route guard), and withdrawn before the program is detached
/// on SIGTERM.
final class RouteAnnouncementTests: LabTestCase {
    private var scratch = ""
    private var routerSocket: String { scratch + "/router.ctl" }
    private var directorBIRDSocket: String { scratch + "/director.ctl" }
    private var include: String { scratch + "/vips.bird" }

    override func setUpWithError() throws {
        try super.setUpWithError()
        guard FileManager.default.isExecutableFile(atPath: "/usr/sbin/bird") else { throw XCTSkip("BIRD is not installed (tools/setup.sh)") }
        let lab = try XCTUnwrap(lab)
        scratch = NSTemporaryDirectory() + "\(lab.prefix)-bird"
        try FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: true)
        addTeardownBlock { [scratch] in try? FileManager.default.removeItem(atPath: scratch) }
        let client = Topology.clientAddress4, director = Topology.directorAddress4
        try """
            router id \(client);
            protocol device {}
            protocol bgp director {
                local \(client) as 65000;
                neighbor \(director) as 65001;
                connect delay time 1; connect retry time 1; hold time 3;
                ipv4 { import all; export none; };
            }
            """.write(toFile: scratch + "/router.conf", atomically: true, encoding: .utf8)
        // As an operator would: the include file exists (empty) before BIRD starts; the director fills it.
        try "".write(toFile: include, atomically: true, encoding: .utf8)
        try """
            router id \(director);
            protocol device {}
            include "\(include)";
            protocol bgp upstream {
                local \(director) as 65001;
                neighbor \(client) as 65000;
                connect delay time 1; connect retry time 1; hold time 3;
                ipv4 { import none; export where proto ~ "xdirector_*_4"; };
            }
            """.write(toFile: scratch + "/director.conf", atomically: true, encoding: .utf8)
        let routerOutput = CollectedOutput(), directorOutput = CollectedOutput()
        _ = try lab.spawn(lab.client, ["bird", "-f", "-c", scratch + "/router.conf", "-s", routerSocket], output: routerOutput.pipe)
        _ = try lab.spawn(lab.director, ["bird", "-f", "-c", scratch + "/director.conf", "-s", directorBIRDSocket],
                          output: directorOutput.pipe)
        XCTAssertTrue(waitUntil(seconds: 15) { (try? self.birdc(self.routerSocket, "show protocols director"))?.contains("Established") == true },
                      "the BGP session comes up: \((try? birdc(routerSocket, "show protocols all director")) ?? "") "
                      + "router: \(routerOutput.text) director: \(directorOutput.text)")
    }

    private func birdc(_ socket: String, _ command: String) throws -> String {
        try Topology.run(["birdc", "-s", socket] + command.split(separator: " ").map(String.init), check: false)
    }

    /// Whether the router has a route to the VIP from the director.
    private func routerHasVIP() -> Bool {
        ((try? birdc(routerSocket, "show route \(Topology.vip4)/32")) ?? "").contains("\(Topology.vip4)/32")
    }

    private var rules: String {
        """
        -A -t \(Topology.vip4):80 -s mh
        -a -t \(Topology.vip4):80 -r \(Topology.realAddress4(0)):80 -g
        -a -t \(Topology.vip4):80 -r \(Topology.realAddress4(1)):80 -g
        """
    }

    func testVIPsAreAnnouncedWhileServedAndWithdrawnWhenNotOrWhenTheDirectorDies() throws {
        let lab = try XCTUnwrap(lab)
        XCTAssertFalse(routerHasVIP())
        try startDirector(rules: rules, arguments: ["--bird-socket", directorBIRDSocket, "--bird-include", include])
        XCTAssertTrue(waitUntil(seconds: 5, routerHasVIP), "announced once serving: \((try? birdc(routerSocket, "show route")) ?? "")")

        // No real server can take a connection: withdrawn; one back: announced again.
        try ipvsadm("-e -t \(Topology.vip4):80 -r \(Topology.realAddress4(0)):80 -g -w 0")
        try ipvsadm("-e -t \(Topology.vip4):80 -r \(Topology.realAddress4(1)):80 -g -w 0")
        XCTAssertTrue(waitUntil(seconds: 5) { !self.routerHasVIP() }, "withdrawn without an available real server")
        try ipvsadm("-e -t \(Topology.vip4):80 -r \(Topology.realAddress4(1)):80 -g -w 1")
        XCTAssertTrue(waitUntil(seconds: 5, routerHasVIP), "announced again")

        // kill -9: the guard withdraws at once.
        let director = try XCTUnwrap(self.director)
        kill(director.processIdentifier, SIGKILL)
        let killed = Date()
        XCTAssertTrue(waitUntil(seconds: 5) { !self.routerHasVIP() }, "withdrawn after kill -9")
        let withdrawal = Date().timeIntervalSince(killed)
        print("route withdrawn at the router \(Int(withdrawal * 1000)) ms after kill -9")
        XCTAssertLessThan(withdrawal, 1.5, "the guard withdraws within a second or so (took \(withdrawal) s)")
        XCTAssertTrue(try lab.exec(lab.director, ["ip", "link", "show", lab.directorInterface]).contains("xdp"),
                      "meanwhile the dead director's program holds the queues")
        Topology.wait(director, seconds: 5)
    }

    /// With health checks, a VIP is announced while its service holds keepalived's quorum: a real server
    /// failing below it withdraws the route; back above it, the route returns.
    func testAVIPIsWithdrawnWhenItsServiceLosesQuorum() throws {
        let lab = try XCTUnwrap(lab)
        let keepalived = scratch + "/keepalived.conf"
        try """
            virtual_server \(Topology.vip4) 80 {
                delay_loop 1
                lb_algo mh
                lb_kind DR
                protocol TCP
                quorum 2
                real_server \(Topology.realAddress4(0)) 80 {
                    TCP_CHECK {
                        connect_timeout 1
                        retry 0
                    }
                }
                real_server \(Topology.realAddress4(1)) 80 {
                    TCP_CHECK {
                        connect_timeout 1
                        retry 0
                    }
                }
            }
            """.write(toFile: keepalived, atomically: true, encoding: .utf8)
        let output = CollectedOutput()
        socketPath = scratch + "/director.sock"
        director = try lab.spawn(lab.director, [Self.xdirector, "run", "--interface", lab.directorInterface, "--keepalived", keepalived,
                                                "--socket", scratch + "/director.sock", "--bird-socket", directorBIRDSocket,
                                                "--bird-include", include], output: output.pipe)
        XCTAssertTrue(output.waitFor("ready", seconds: 30), output.text)
        XCTAssertTrue(waitUntil(seconds: 5, routerHasVIP), "announced with its quorum")
        try lab.exec(lab.real(1), ["pkill", "-f", "backend-http --name rs2"])
        XCTAssertTrue(waitUntil(seconds: 6) { !self.routerHasVIP() }, "withdrawn once the quorum is lost: \(output.text)")
        _ = try lab.spawn(lab.real(1), [Self.xdirector, "backend-http", "--name", "rs2", "--port", "80"])
        XCTAssertTrue(waitUntil(seconds: 6, routerHasVIP), "announced again with its quorum back")
    }

    func testSIGTERMWithdrawsBeforeTheProgramIsDetached() throws {
        let lab = try XCTUnwrap(lab)
        try startDirector(rules: rules, arguments: ["--bird-socket", directorBIRDSocket, "--bird-include", include, "--drain", "2"])
        XCTAssertTrue(waitUntil(seconds: 5, routerHasVIP))
        let director = try XCTUnwrap(self.director)
        director.terminate()
        XCTAssertTrue(waitUntil(seconds: 1.5) { !self.routerHasVIP() }, "withdrawn first")
        XCTAssertTrue(director.isRunning, "still draining")
        XCTAssertTrue(try lab.exec(lab.director, ["ip", "link", "show", lab.directorInterface]).contains("xdp"),
                      "the program is still attached when the route is gone")
        Topology.wait(director, seconds: 10)
        XCTAssertEqual(director.terminationStatus, 0)
        XCTAssertFalse(try lab.exec(lab.director, ["ip", "link", "show", lab.directorInterface]).contains("xdp"))
        XCTAssertFalse(routerHasVIP())
    }
}
