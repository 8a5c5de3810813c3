import Foundation
import Packet
import Topology
import XCTest

/// UDP datagrams too big for the lab's 1500-byte MTU, fragmented by the client's kernel (and, for NAT, the
/// real servers' echoes fragmented by theirs): every one must arrive whole, through DR and NAT, IPv4 and IPv6.
final class FragmentTests: LabTestCase {
    private let vip4 = Topology.vip4, vip6 = Topology.vip6
    /// 1473 bytes: one byte past a single IPv4 packet (2 fragments); 3000 bytes: 3 fragments.
    private let sizes = [1473, 3000]
    private let count = 100

    override func setUpWithError() throws {
        try super.setUpWithError()
        let lab = try XCTUnwrap(lab)
        // Echoes as long as the request: a NAT reply of 3000 bytes comes back in fragments too.
        for index in 0..<lab.realCount {
            _ = try lab.spawn(lab.real(index), [Self.xdirector, "backend-udp", "--name", "rs\(index + 1)", "--port", "53",
                                                "--echo", "--bind", "\(vip4)", "--bind", "\(vip6)",
                                                "--bind", "\(Topology.realAddress4(index))", "--bind", "\(Topology.realAddress6(index))"])
        }
    }

    private func rules(method: String) -> String {
        var lines: [String] = []
        for vip in ["\(vip4)", "[\(vip6)]"] {
            lines.append("-A -u \(vip):53 -s rr")
            for index in 0..<2 {
                let real = vip.hasPrefix("[") ? "[\(Topology.realAddress6(index))]" : "\(Topology.realAddress4(index))"
                lines.append("-a -u \(vip):53 -r \(real):53 \(method)")
            }
        }
        return lines.joined(separator: "\n")
    }

    /// Sends `count` datagrams of each size to each VIP (each a new flow) and asserts every answer came back
    /// whole, from either real server.
    private func assertDelivered(_ lab: Topology, file: StaticString = #filePath, line: UInt = #line) throws {
        for vip in ["\(vip4)", "\(vip6)"] {
            for size in sizes {
                let lines = try lab.exec(lab.client, [Self.xdirector, "udp-probe", "--address", vip, "--port", "53",
                                                      "--count", "\(count)", "--size", "\(size)", "--expect-echo"],
                                         check: false).split(separator: "\n")
                let answered = lines.filter { $0 == "rs1" || $0 == "rs2" }.count
                XCTAssertEqual(answered, count, "\(size) bytes to \(vip): \(Set(lines))", file: file, line: line)
            }
        }
    }

    /// Asserts no fragment was lost in the director, by any reason.
    private func assertNothingLost(_ stats: DirectorReport, file: StaticString = #filePath, line: UInt = #line) {
        for counter in ["drop_fragment", "drop_fragment_without_first", "drop_fragment_hold_full", "fragment_table_full",
                        "drop_no_service", "drop_no_reply_state", "drop_malformed", "drop_truncated"] {
            XCTAssertEqual(stats.detail(counter), 0, "\(counter)\n\(stats.text)", file: file, line: line)
        }
        XCTAssertEqual(stats.xdp("pass_fragment"), 0, stats.text, file: file, line: line)
    }

    func testDirectRoutingCarriesFragmentedDatagrams() throws {
        let lab = try XCTUnwrap(lab)
        try startDirector(rules: rules(method: "-g"))
        try assertDelivered(lab)
        let stats = try stopDirector()
        // Per family: 100 datagrams of 2 fragments and 100 of 3; the first fragments are scheduled.
        // Each probe holds its sockets open, so each family gives at least `count` distinct flows (the second
        // probe of a family may reuse the first's ports).
        XCTAssertGreaterThanOrEqual(stats.total("new_conns"), UInt64(2 * count), stats.text)
        XCTAssertEqual(stats.detail("fragments_followed"), UInt64(2 * count * (1 + 2)), stats.text)
        XCTAssertEqual(stats.xdp("redirected_fragment"), UInt64(2 * count * (2 + 3)), stats.text)
        assertNothingLost(stats)
    }

    func testMasqueradingCarriesFragmentedDatagramsAndTheirFragmentedReplies() throws {
        let lab = try XCTUnwrap(lab)
        try lab.routeClientThroughDirector()
        try startDirector(rules: rules(method: "-m"))
        try assertDelivered(lab)
        let stats = try stopDirector()
        // Each probe holds its sockets open, so each family gives at least `count` distinct flows (the second
        // probe of a family may reuse the first's ports).
        XCTAssertGreaterThanOrEqual(stats.total("new_conns"), UInt64(2 * count), stats.text)
        // Requests and echoes alike: the later fragments of 2 × 100 datagrams of each size, each way.
        XCTAssertEqual(stats.detail("fragments_followed"), UInt64(2 * 2 * count * (1 + 2)), stats.text)
        XCTAssertEqual(stats.detail("replies_translated"), UInt64(2 * sizes.count * count), stats.text)
        assertNothingLost(stats)
    }
}
