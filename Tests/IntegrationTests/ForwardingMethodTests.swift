import Foundation
import Packet
import Topology
import XCTest

/// Real TCP and UDP through the VIPs with each forwarding method other than DR, IPv4 and IPv6, on a
/// director whose veth has 2 queues (so NAT replies often arrive on another queue than their requests).
final class ForwardingMethodTests: LabTestCase {
    private let vip4 = Topology.vip4, vip6 = Topology.vip6

    override func setUpWithError() throws {
        try super.setUpWithError()
        let lab = try XCTUnwrap(lab)
        // UDP answers leave from the address the datagram came to: the VIP (DR/TUN) or the RIP (NAT).
        for index in 0..<lab.realCount {
            _ = try lab.spawn(lab.real(index), [Self.xdirector, "backend-udp", "--name", "rs\(index + 1)", "--port", "53",
                                                "--bind", "\(vip4)", "--bind", "\(vip6)",
                                                "--bind", "\(Topology.realAddress4(index))", "--bind", "\(Topology.realAddress6(index))"])
        }
    }

    /// Services for both families, TCP :80 and UDP :53, each with both real servers reached by `method`.
    private func rules(method: String, port: UInt16 = 80, udpPort: UInt16 = 53, mixed: Bool = false,
                       extra: String = "") -> String {
        var lines: [String] = []
        for (vip, family) in [("\(vip4)", 4), ("[\(vip6)]", 6)] {
            for (flag, servicePort, realPort) in [("-t", UInt16(80), port), ("-u", UInt16(53), udpPort)] {
                lines.append("-A \(flag) \(vip):\(servicePort) -s rr")
                for index in 0..<2 {
                    // mixed: an IPv4 service tunnels to the IPv6 real server address and the other way round.
                    let realFamily = mixed ? (family == 4 ? 6 : 4) : family
                    let real = realFamily == 4 ? "\(Topology.realAddress4(index))" : "[\(Topology.realAddress6(index))]"
                    lines.append("-a \(flag) \(vip):\(servicePort) -r \(real):\(realPort) \(method)")
                }
            }
        }
        return (lines + [extra]).joined(separator: "\n")
    }

    /// Asserts every TCP and UDP request to both VIPs was answered, by both real servers.
    private func assertServed(_ lab: Topology, count: Int = 10, file: StaticString = #filePath, line: UInt = #line) throws {
        for url in ["http://\(vip4)/", "http://[\(vip6)]/"] {
            let tally = try answers(lab, url: url, count: count)
            XCTAssertEqual(tally["rs1", default: 0] + tally["rs2", default: 0], count, "\(url): \(tally)", file: file, line: line)
            XCTAssertEqual(Set(tally.keys), ["rs1", "rs2"], "\(url): \(tally)", file: file, line: line)
        }
        for vip in ["\(vip4)", "\(vip6)"] {
            let lines = try lab.exec(lab.client, [Self.xdirector, "udp-probe", "--address", vip, "--port", "53",
                                                  "--count", "\(count)"], check: false).split(separator: "\n")
            XCTAssertEqual(lines.filter { $0 == "rs1" || $0 == "rs2" }.count, count, "UDP \(vip): \(lines)", file: file, line: line)
        }
    }

    private func assertLargeTransfer(_ lab: Topology, url: String, size: Int = 4_000_000) throws {
        let result = try lab.exec(lab.client, ["curl", "-sg", "-m", "60", "-o", "/dev/null", "-w", "size=%{size_download}\n",
                                               "\(url)bytes/\(size)"], check: false)
        XCTAssertTrue(result.contains("size=\(size)"), "the whole transfer arrived through \(url): \(result)")
    }

    func testTunnellingIPIPBothFamilies() throws {
        let lab = try XCTUnwrap(lab)
        try lab.attachDecapsulation()
        try startDirector(rules: rules(method: "-i"))
        try assertServed(lab)
        try assertLargeTransfer(lab, url: "http://\(vip4)/")
        let stats = try stopDirector()
        XCTAssertEqual(stats.total("new_conns"), 41, stats.text)  // 10 HTTP + 10 UDP per family, one transfer
        XCTAssertEqual(stats.detail("drop_no_source_address"), 0, stats.text)
    }

    func testTunnellingGUEAndGRE() throws {
        let lab = try XCTUnwrap(lab)
        try lab.attachDecapsulation()
        try startDirector(rules: rules(method: "-i --tun-type gue --tun-port \(Topology.guePort) --tun-csum")
                          .replacingOccurrences(of: "\(Topology.realAddress4(1)):80 -i --tun-type gue --tun-port 6080 --tun-csum",
                                                with: "\(Topology.realAddress4(1)):80 -i --tun-type gre --tun-csum")
                          .replacingOccurrences(of: "[\(Topology.realAddress6(1))]:80 -i --tun-type gue --tun-port 6080 --tun-csum",
                                                with: "[\(Topology.realAddress6(1))]:80 -i --tun-type gre"))
        try assertServed(lab)
        _ = try stopDirector()
    }

    func testTunnellingAcrossAddressFamilies() throws {
        let lab = try XCTUnwrap(lab)
        try lab.attachDecapsulation()
        try startDirector(rules: rules(method: "-i", mixed: true))
        try assertServed(lab)
        _ = try stopDirector()
    }

    func testTunnellingToARealServerBehindAGateway() throws {
        let lab = try XCTUnwrap(lab)
        try lab.attachDecapsulation()
        // rs2 is also 192.0.2.12, which the director reaches through a route via rs2's on-link address:
        // the tunnel goes to 192.0.2.12, the frame to the gateway's MAC.
        let remote = "192.0.2.12"
        try lab.exec(lab.real(1), ["ip", "addr", "add", "\(remote)/32", "dev", "lo"])  // not answerable by ARP (arp_ignore=1)
        try lab.exec(lab.director, ["ip", "route", "add", "\(remote)/32", "via", "\(Topology.realAddress4(1))"])
        try startDirector(rules: """
            -A -t \(vip4):80 -s rr
            -a -t \(vip4):80 -r \(remote):80 -i
            """)
        let tally = try answers(lab, url: "http://\(vip4)/", count: 6)
        XCTAssertEqual(tally, ["rs2": 6], "every connection tunnelled to 192.0.2.12 through its gateway: \(tally)")
        _ = try stopDirector()
        XCTAssertTrue(directorOutput?.text.contains("(gateway \(Topology.realAddress4(1)))") ?? false,
                      directorOutput?.text ?? "")
    }

    func testTunnelledPacketTooBigForTheMTUGetsFragmentationNeeded() throws {
        let lab = try XCTUnwrap(lab)
        try lab.attachDecapsulation()
        try startDirector(rules: rules(method: "-i"))
        // 1472 bytes of UDP with DF fill a 1500-byte MTU; the 20-byte outer header would not fit.
        _ = try lab.exec(lab.client, [Self.xdirector, "udp-probe", "--address", "\(vip4)", "--port", "53", "--count", "1",
                                      "--size", "1472", "--dont-fragment"], check: false)
        _ = try lab.exec(lab.client, [Self.xdirector, "udp-probe", "--address", "\(vip6)", "--port", "53", "--count", "1",
                                      "--size", "1452", "--dont-fragment"], check: false)
        // The client's kernel accepted the errors: it now knows the path MTU through the tunnel.
        let route4 = try lab.exec(lab.client, ["ip", "route", "get", "\(vip4)"])
        let route6 = try lab.exec(lab.client, ["ip", "-6", "route", "get", "\(vip6)"])
        XCTAssertTrue(route4.contains("mtu 1480"), route4)
        XCTAssertTrue(route6.contains("mtu 1460"), route6)
        // A smaller datagram still gets through.
        let answer = try lab.exec(lab.client, [Self.xdirector, "udp-probe", "--address", "\(vip4)", "--port", "53",
                                               "--count", "1", "--size", "1400", "--dont-fragment"])
        XCTAssertTrue(answer.hasPrefix("rs"), answer)
        let stats = try stopDirector()
        XCTAssertEqual(stats.detail("icmp_too_big_sent"), 2, stats.text)
    }

    func testMasqueradingRepliesAreTranslatedOnEveryQueue() throws {
        let lab = try XCTUnwrap(lab)
        try lab.routeClientThroughDirector()
        // NAT may change the port: the real servers' HTTP also listens on 8080.
        for index in 0..<lab.realCount {
            _ = try lab.spawn(lab.real(index), [Self.xdirector, "backend-http", "--name", "rs\(index + 1)", "--port", "8080"])
        }
        try startDirector(rules: rules(method: "-m", port: 8080))
        try assertServed(lab, count: 20)
        try assertLargeTransfer(lab, url: "http://[\(vip6)]/")
        let stats = try stopDirector()
        XCTAssertGreaterThan(stats.detail("replies_translated"), 100, stats.text)
        XCTAssertGreaterThan(stats.detail("replies_of_other_workers"), 0,
                             "some replies arrived on the other queue and found their connection: \(stats.text)")
        XCTAssertEqual(stats.detail("drop_no_reply_state"), 0, stats.text)
        XCTAssertGreaterThan(stats.xdp("redirected_reply"), 0, stats.text)
    }

    func testFullNATRepliesToLocalAddresses() throws {
        let lab = try XCTUnwrap(lab)
        try lab.addLocalAddresses()
        let localAddresses = """
            -P -t \(vip4):80 -z \(Topology.localAddress4)
            -P -u \(vip4):53 -z \(Topology.localAddress4)
            -P -t [\(vip6)]:80 -z \(Topology.localAddress6)
            -P -u [\(vip6)]:53 -z \(Topology.localAddress6)
            """
        try startDirector(rules: rules(method: "--fullnat", extra: localAddresses))
        try assertServed(lab, count: 20)
        try assertLargeTransfer(lab, url: "http://\(vip4)/")
        let stats = try stopDirector()
        XCTAssertGreaterThan(stats.detail("replies_translated"), 100, stats.text)
        XCTAssertEqual(stats.detail("drop_no_reply_state"), 0, stats.text)
        XCTAssertEqual(stats.detail("drop_local_ports_exhausted"), 0, stats.text)
    }
}
