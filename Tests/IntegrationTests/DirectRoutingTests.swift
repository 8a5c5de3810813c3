import Foundation
import Topology
import XCTest

/// Real TCP through the VIPs of a director running in a namespace lab, by direct routing.
final class DirectRoutingTests: LabTestCase {
    func testIPv4AndIPv6ConnectionsSpreadByWeight() throws {
        let lab = try XCTUnwrap(lab)
        try startDirector(rules: """
            -A -t \(Topology.vip4):80 -s wrr
            -a -t \(Topology.vip4):80 -r \(Topology.realAddress4(0)):80 -g -w 3
            -a -t \(Topology.vip4):80 -r \(Topology.realAddress4(1)):80 -g -w 1
            -A -t [\(Topology.vip6)]:80 -s wrr
            -a -t [\(Topology.vip6)]:80 -r [\(Topology.realAddress6(0))]:80 -g -w 1
            -a -t [\(Topology.vip6)]:80 -r [\(Topology.realAddress6(1))]:80 -g -w 2
            """)
        let v4 = try answers(lab, url: "http://\(Topology.vip4)/", count: 40)
        let v6 = try answers(lab, url: "http://[\(Topology.vip6)]/", count: 30)
        XCTAssertEqual(v4.values.reduce(0, +), 40, "every IPv4 connection answered: \(v4)")
        XCTAssertEqual(v6.values.reduce(0, +), 30, "every IPv6 connection answered: \(v6)")
        XCTAssertEqual(Set(v4.keys), ["rs1", "rs2"])
        XCTAssertEqual(Set(v6.keys), ["rs1", "rs2"])
        // Each worker runs its own wrr cycle, so a total may be off the exact share by one per worker.
        XCTAssertEqual(Double(v4["rs1"] ?? 0), 30, accuracy: 3, "IPv4 3:1 split: \(v4)")
        XCTAssertEqual(Double(v6["rs2"] ?? 0), 20, accuracy: 3, "IPv6 1:2 split: \(v6)")

        let stats = try stopDirector()
        // One scheduling decision per connection: no packet of an open connection was scheduled again.
        XCTAssertEqual(stats.total("new_conns"), 70, stats.text)
        XCTAssertEqual(stats.detail("drop_tcp_without_connection"), 0, stats.text)
        XCTAssertEqual(stats.detail("drop_no_destination"), 0, stats.text)
    }

    func testLongTransferStaysOnOneRealServer() throws {
        let lab = try XCTUnwrap(lab)
        try startDirector(rules: """
            -A -t \(Topology.vip4):80 -s rr
            -a -t \(Topology.vip4):80 -r \(Topology.realAddress4(0)):80 -g
            -a -t \(Topology.vip4):80 -r \(Topology.realAddress4(1)):80 -g
            """)
        let size = 40_000_000
        // DR: the data comes straight from the real server; its ACKs go through the director all along,
        // and would be reset by the other server if the director ever sent one there.
        let result = try lab.exec(lab.client, ["curl", "-s", "-m", "60", "-o", "/dev/null", "-D", "-",
                                               "-w", "size=%{size_download}\n", "http://\(Topology.vip4)/bytes/\(size)"], check: false)
        XCTAssertTrue(result.contains("size=\(size)"), "the whole transfer arrived: \(result)")
        XCTAssertTrue(result.contains("X-Real-Server: rs"), result)
        let stats = try stopDirector()
        XCTAssertEqual(stats.total("new_conns"), 1, stats.text)
        XCTAssertGreaterThan(stats.total("rx_packets"), 100, "the transfer's ACKs crossed the director: \(stats.text)")
        XCTAssertEqual(stats.detail("drop_tcp_without_connection"), 0, stats.text)
    }

    func testTrafficOutsideTheServicesReachesTheKernel() throws {
        let lab = try XCTUnwrap(lab)
        try startDirector(rules: """
            -A -t \(Topology.vip4):80 -s rr
            -a -t \(Topology.vip4):80 -r \(Topology.realAddress4(0)):80 -g
            """)
        _ = try lab.spawn(lab.director, [Self.xdirector, "backend-http", "--name", "director-kernel", "--port", "8080"])
        for target in ["\(Topology.directorAddress4)", "\(Topology.vip4)", "\(Topology.directorAddress6)"] {
            XCTAssertNoThrow(try lab.exec(lab.client, ["ping", "-c", "1", "-W", "2", target]), "ping \(target)")
        }
        var answer = ""
        for _ in 0..<20 where answer.isEmpty {  // the kernel-side server may still be starting
            answer = try lab.exec(lab.client, ["curl", "-s", "-m", "2", "http://\(Topology.vip4):8080/"], check: false)
            if answer.isEmpty { usleep(100_000) }
        }
        XCTAssertEqual(answer, "director-kernel\n", "another port of the VIP is the kernel's")
        XCTAssertEqual(try lab.exec(lab.client, ["curl", "-s", "-m", "5", "http://\(Topology.vip4)/"], check: false), "rs1\n")

        let stats = try stopDirector()
        XCTAssertGreaterThan(stats.xdp("pass_not_service"), 0, stats.text)
        XCTAssertGreaterThan(stats.xdp("pass_other_l4"), 0, "ICMP went to the kernel: \(stats.text)")
        XCTAssertGreaterThan(stats.xdp("redirected"), 0, stats.text)
    }

    func testMapsArePinnedAndStoppingDetachesTheProgram() throws {
        let lab = try XCTUnwrap(lab)
        try startDirector(rules: """
            -A -t \(Topology.vip4):80 -s rr
            -a -t \(Topology.vip4):80 -r \(Topology.realAddress4(0)):80 -g
            """)
        let pins = pinDirectory
        XCTAssertTrue(try lab.exec(lab.director, ["ip", "link", "show", lab.directorInterface]).contains("xdp"))
        // `ip netns exec` gave the director a mount namespace of its own: look at its bpffs from inside.
        let pid = try XCTUnwrap(director).processIdentifier
        let dump = try Topology.run(["nsenter", "--target", "\(pid)", "--mount", "--net",
                                     "bpftool", "map", "dump", "pinned", "\(pins)/services"])
        XCTAssertTrue(dump.contains("\"addr\": [203,0,113,10,0,") && dump.contains("\"proto\": 6"), "the VIP 203.0.113.10 is in the pinned services map: \(dump)")
        _ = try stopDirector()
        XCTAssertEqual(director?.terminationStatus, 0)
        XCTAssertFalse(try lab.exec(lab.director, ["ip", "link", "show", lab.directorInterface]).contains("xdp"),
                       "the program is detached")
    }

    func testMalformedRulesAreRefusedWithTheirLineAndNothingIsAttached() throws {
        let lab = try XCTUnwrap(lab)
        let path = try writeRules("-A -t \(Topology.vip4):80 -s rr\n-a -t \(Topology.vip4):80 -r 198.51.100.300:80 -g\n")
        let output = CollectedOutput()
        let process = try lab.spawn(lab.director, [Self.xdirector, "run", "--interface", lab.directorInterface, "--rules", path],
                                    output: output.pipe)
        Topology.wait(process, seconds: 20)
        XCTAssertFalse(process.isRunning)
        XCTAssertNotEqual(process.terminationStatus, 0)
        XCTAssertTrue(output.text.contains(":2:"), "the error names line 2: \(output.text)")
        XCTAssertFalse(try lab.exec(lab.director, ["ip", "link", "show", lab.directorInterface]).contains("xdp"))
    }
}

struct TestFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// The counters `xdirector run` prints when it stops.
struct DirectorReport {
    let text: String

    private var lines: [[Substring]] { text.split(separator: "\n").map { $0.split(separator: " ") } }

    /// A column of the per-queue table (as `run` prints it on exit), summed over the queues' rows.
    func total(_ column: String) -> UInt64 {
        guard let header = lines.first(where: { $0.first == "queue" && $0.dropFirst().first == "core" }),
              let index = header.firstIndex(where: { $0 == column }) else { return 0 }
        return lines.filter { $0.count == header.count && $0.first.map { UInt64($0) != nil } == true }
            .compactMap { UInt64($0[index]) }.reduce(0, +)
    }

    /// A counter of the sections below the table (drops by reason, other events), its total over queues;
    /// 0 when absent (only non-zero counters are listed).
    func detail(_ name: String) -> UInt64 {
        let sections = lines.prefix { $0.first != "xdp" }
        return sections.first { $0.first.map(String.init) == name }?.last.flatMap { UInt64($0) } ?? 0
    }

    /// One of the XDP program's counters.
    func xdp(_ name: String) -> UInt64 {
        let section = lines.drop { !($0.first == "xdp" && $0.dropFirst().first == "program") }
        return section.first { $0.first.map(String.init) == name }?.last.flatMap { UInt64($0) } ?? 0
    }
}
