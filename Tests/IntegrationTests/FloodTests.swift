import Foundation
import Topology
import XCTest

/// A spoofed SYN flood against a small connection table: connections opened during the flood live on, on
/// their real server, long after it (the director's table is full of the flood's half-open entries).
final class FloodTests: LabTestCase {
    private let port: UInt16 = 7100
    /// `--set`: ESTABLISHED, FIN_WAIT and UDP timeouts, in seconds.
    private let timeout = 5

    override func setUpWithError() throws {
        try super.setUpWithError()
        let lab = try XCTUnwrap(lab)
        for index in 0..<lab.realCount {
            _ = try lab.spawn(lab.real(index), [Self.xdirector, "backend-session", "--name", "rs\(index + 1)", "--port", "\(port)"])
        }
    }

    /// 20 connections opened while 20 000 spoofed SYNs a second fill 4096-connection tables, each asking a
    /// question every 250 ms: all answered, none moved, through the flood and for 3 times the longest timeout
    /// after it, and then tracked as ESTABLISHED connections.
    func testConnectionsOpenedDuringASYNFloodLiveOnTheirServer() throws {
        let lab = try XCTUnwrap(lab)
        let vip = Topology.vip4
        try startDirector(rules: """
            -A -t \(vip):\(port) -s rr
            -a -t \(vip):\(port) -r \(Topology.realAddress4(0)):\(port) -g -w 1
            -a -t \(vip):\(port) -r \(Topology.realAddress4(1)):\(port) -g -w 1
            """, arguments: ["--connections", "4096"])
        try ipvsadm("--set \(timeout) \(timeout) \(timeout)")
        let gateway = try lab.exec(lab.director, ["cat", "/sys/class/net/\(lab.directorInterface)/address"])
            .trimmingCharacters(in: .whitespacesAndNewlines)

        let floodSeconds = 10.0
        let floodOutput = CollectedOutput()
        let floodStart = Date()
        let flood = try lab.spawn(lab.client, [Self.xdirector, "syn-flood", "--interface", lab.clientInterface,
                                               "--gateway-mac", gateway, "--address", "\(vip)", "--port", "\(port)",
                                               "--rate", "20000", "--seconds", "\(floodSeconds)"],
                                  output: floodOutput.pipe)
        // Wait until the flood has filled the tables: its SYNs find no room, or evict each other.
        var full = 0
        for _ in 0..<50 where full == 0 {
            Thread.sleep(forTimeInterval: 0.1)
            full = try counter("half_open_evicted") + counter("connection_table_full")
        }
        XCTAssertGreaterThan(full, 0, "the flood fills the tables")

        let probeSeconds = floodSeconds - Date().timeIntervalSince(floodStart) + 3.0 * Double(timeout) + 1
        let probeOutput = CollectedOutput()
        let probeStart = Date()
        let probe = try lab.spawn(lab.client, [Self.xdirector, "session-probe", "--address", "\(vip)",
                                               "--tcp-port", "\(port)", "--connections", "20", "--flows", "0",
                                               "--seconds", "\(probeSeconds)", "--interval-ms", "250",
                                               "--answer-timeout-ms", "2000"],
                                  output: probeOutput.pipe)
        Topology.wait(flood, seconds: floodSeconds + 10)
        let sent = try XCTUnwrap(floodOutput.text.split(separator: "\n").last { $0.hasPrefix("{") }, floodOutput.text)
        let floodReport = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(sent.utf8)) as? [String: Any])
        XCTAssertGreaterThan((floodReport["sent"] as? Int) ?? 0, 50_000, "\(floodReport)")

        // Shortly before the probe ends (3 times the longest timeout after the flood): tracked, not merely
        // forwarded, the director lists them as ESTABLISHED.
        Thread.sleep(until: probeStart.addingTimeInterval(probeSeconds - 2))
        let client = "\(Topology.clientAddress4):"
        let listing = try ipvsadm("-Lcn")
        let tracked = listing.split(separator: "\n").filter { $0.contains(client) && $0.contains("ESTABLISHED") }

        // A broken connection costs the probe its answer timeout (2 s) once: wait for 20 of them.
        let report = try sessionProbeReport(probe, probeOutput, seconds: probeSeconds + 50)
        XCTAssertEqual(report["broken"] as? Int, 0, "\(report)")
        XCTAssertEqual(report["changed"] as? Int, 0, "\(report)")
        XCTAssertEqual(report["answers"] as? Int, report["questions"] as? Int, "\(report)")
        let servers = try XCTUnwrap(report["tcp_servers"] as? [String])
        XCTAssertEqual(servers.count, 20)
        XCTAssertTrue(servers.allSatisfy { $0 == "rs1" || $0 == "rs2" }, "\(servers)")
        XCTAssertGreaterThan((report["questions"] as? Int) ?? 0, 20 * 4 * 3 * timeout, "they kept asking: \(report)")

        XCTAssertEqual(tracked.count, 20, listing.split(separator: "\n").filter { $0.contains(client) }.joined(separator: "\n"))
        print("flood: \(floodReport); probe: \(report); evicted \(try counter("half_open_evicted")), "
              + "without entry \(try counter("connection_table_full")), mid-flow \(try counter("mid_flow_connections"))")
    }

    /// A worker counter summed over the workers, from `stats --json`.
    private func counter(_ name: String) throws -> Int {
        let stats = try cli("stats", ["--json"])
        XCTAssertEqual(stats.status, 0, stats.error)
        let json = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(stats.output.utf8)) as? [String: Any], stats.output)
        let totals = try XCTUnwrap(json["totals"] as? [String: Any])
        return (totals[name] as? NSNumber)?.intValue ?? -1
    }
}
