import Foundation
import Topology
import XCTest

/// Crafted frames (python3-scapy, from the client's namespace on a raw socket) through a director whose veth
/// has 2 queues, by direct routing: ICMP errors about live connections reach the connections' real servers
/// whichever queue they arrive on, and a mix of malformed frames sent while legitimate HTTP and UDP run
/// costs no legitimate request, leaves the director up, and shows in the counters under its reasons.
final class MalformedTrafficTests: LabTestCase {
    private let vip = Topology.vip4
    /// Frames of each malformed kind; ICMP errors sent about the open connections.
    private let framesPerKind = 150, icmpErrors = 300

    override func setUpWithError() throws {
        try super.setUpWithError()
        let lab = try XCTUnwrap(lab)
        for index in 0..<lab.realCount {
            _ = try lab.spawn(lab.real(index), [Self.xdirector, "backend-udp", "--name", "rs\(index + 1)", "--port", "53",
                                                "--bind", "\(vip)"])
        }
    }

    func testICMPErrorsFindTheirConnectionsAndMalformedFramesAreCountedWhileTrafficIsServed() throws {
        let lab = try XCTUnwrap(lab)
        guard FileManager.default.isExecutableFile(atPath: Self.python),
              (try? Topology.run([Self.python, "-c", "import scapy"])) != nil else {
            throw XCTSkip("needs python3-scapy (tools/setup.sh installs it)")
        }
        try startDirector(rules: """
            -A -t \(vip):80 -s rr
            -a -t \(vip):80 -r \(Topology.realAddress4(0)):80 -g
            -a -t \(vip):80 -r \(Topology.realAddress4(1)):80 -g
            -A -u \(vip):53 -s rr
            -a -u \(vip):53 -r \(Topology.realAddress4(0)):53 -g
            -a -u \(vip):53 -r \(Topology.realAddress4(1)):53 -g
            """)
        let script = NSTemporaryDirectory() + "\(lab.prefix)-frames.py"
        try Self.script.write(toFile: script, atomically: true, encoding: .utf8)
        addTeardownBlock { try? FileManager.default.removeItem(atPath: script) }
        let mac = try lab.exec(lab.director, ["cat", "/sys/class/net/\(lab.directorInterface)/address"])
            .trimmingCharacters(in: .whitespacesAndNewlines)
        let sender = [Self.python, script, "--interface", "\(lab.prefix)c0", "--mac", mac, "--vip", "\(vip)",
                      "--vip6", "\(Topology.vip6)", "--client", "\(Topology.clientAddress4)",
                      "--client6", "\(Topology.clientAddress6)", "--director", "\(Topology.directorAddress4)",
                      "--director6", "\(Topology.directorAddress6)"]

        // 1. ICMP errors about DR connections, from third addresses, so they land on both queues.
        let before = try reading()
        let snmpBefore = try destinationUnreachables(lab)
        let icmp = try lab.exec(lab.client, sender + ["icmp", "--count", "\(icmpErrors)"])
        XCTAssertTrue(icmp.contains("\"sent\": \(icmpErrors)"), icmp)
        let icmpDone = try reading(until: { $0.totals("icmp_errors_forwarded") - before.totals("icmp_errors_forwarded") >= icmpErrors })
        XCTAssertEqual(icmpDone.totals("icmp_errors_forwarded") - before.totals("icmp_errors_forwarded"), icmpErrors,
                       "every error reached its connection's real server: \(icmpDone.totals)")
        XCTAssertGreaterThan(icmpDone.totals("icmp_errors_of_other_workers"), 0,
                             "errors on the other queue than their connection's were found in the shared index")
        XCTAssertEqual(icmpDone.totals("drop_icmp_without_connection"), before.totals("drop_icmp_without_connection"))
        // And the real servers' kernels received them (on a DR server the error arrives as the router sent it).
        XCTAssertEqual(try destinationUnreachables(lab) - snmpBefore, icmpErrors, "Icmp InDestUnreachs on the real servers")

        // 2. The malformed mix while legitimate HTTP and UDP run, then legitimate traffic again.
        let mixOutput = CollectedOutput()
        let mix = try lab.spawn(lab.client, sender + ["mix", "--count", "\(framesPerKind)"], output: mixOutput.pipe)
        XCTAssertTrue(mixOutput.waitFor("sending", seconds: 30), mixOutput.text)
        let http = try answers(lab, url: "http://\(vip)/", count: 40)
        let udp = try lab.exec(lab.client, [Self.xdirector, "udp-probe", "--address", "\(vip)", "--port", "53", "--count", "40"])
        Topology.wait(mix, seconds: 40)
        XCTAssertFalse(mix.isRunning, "the sender finished")
        XCTAssertEqual(mix.terminationStatus, 0, mixOutput.text)
        let sent = try XCTUnwrap(mixOutput.text.split(separator: "\n").last { $0.hasPrefix("{") }, mixOutput.text)
        let kinds = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(sent.utf8)) as? [String: Int], String(sent))
        let after = try answers(lab, url: "http://\(vip)/", count: 10)
        let udpAfter = try lab.exec(lab.client, [Self.xdirector, "udp-probe", "--address", "\(vip)", "--port", "53", "--count", "10"])

        XCTAssertEqual(http["rs1", default: 0] + http["rs2", default: 0], 40, "every HTTP request during the mix: \(http)")
        XCTAssertEqual(after["rs1", default: 0] + after["rs2", default: 0], 10, "every HTTP request after it: \(after)")
        for (lines, count) in [(udp, 40), (udpAfter, 10)] {
            XCTAssertEqual(lines.split(separator: "\n").filter { $0 == "rs1" || $0 == "rs2" }.count, count, "UDP: \(lines)")
        }
        XCTAssertTrue(try XCTUnwrap(director).isRunning, "the director is up")

        // The kernel's share (passed by the program) and the workers' drops, each under its reason. Nothing
        // legitimate drops for these reasons, so the workers' counts are exact.
        let counts = try reading()
        // A kind the sender no longer sends (renamed, dropped) fails here rather than count as nothing.
        func kind(_ name: String) -> Int {
            guard let sent = kinds[name], sent > 0 else { XCTFail("the sender sent no '\(name)': \(kinds)"); return 0 }
            return sent
        }
        func worker(_ name: String) -> Int { counts.totals(name) - icmpDone.totals(name) }
        func program(_ name: String) -> Int { counts.xdp(name) - icmpDone.xdp(name) }
        let report = "sent \(kinds)\nworkers \(counts.totals)\nprogram \(counts.xdp)"
        XCTAssertGreaterThanOrEqual(program("pass_malformed"),
                                    kind("truncated_ip_header") + kind("truncated_tcp_header") + kind("bad_ihl_or_version"), report)
        XCTAssertGreaterThanOrEqual(program("pass_other_l4"),
                                    kind("ipv6_extension_headers") + kind("icmp_quoting_no_ip_header")
                                        + kind("icmp_quoting_a_bad_ihl") + kind("icmp_quoting_gre"), report)
        XCTAssertGreaterThanOrEqual(program("pass_fragment"), kind("fragments_to_the_director"), report)
        XCTAssertEqual(worker("drop_malformed"), kind("ip_length_below_header") + kind("tcp_offset_below_header")
                           + kind("udp_length_beyond_datagram") + kind("icmp_with_bad_checksum"), report)
        XCTAssertEqual(worker("drop_truncated"), kind("ip_length_beyond_frame") + kind("icmp_quoting_4_tcp_bytes"), report)
        XCTAssertEqual(worker("drop_bad_ipv4_checksum"), kind("syn_with_bad_ipv4_checksum"), report)
        XCTAssertEqual(worker("drop_icmp_without_connection"), kind("icmp_about_no_connection"), report)
        XCTAssertGreaterThanOrEqual(worker("drop_tcp_without_connection"),
                                    kind("ipv4_options") + kind("odd_tcp_flags") + kind("vlan_tagged"), report)

        let stats = try stopDirector()
        XCTAssertEqual(director?.terminationStatus, 0, stats.text)
        XCTAssertGreaterThan(stats.detail("drop_malformed"), 0, "the exit table lists the drops: \(stats.text)")
    }

    // MARK: Readings

    private struct Reading {
        let totals: [String: Int]
        let xdp: [String: Int]
        func totals(_ name: String) -> Int { totals[name] ?? 0 }
        func xdp(_ name: String) -> Int { xdp[name] ?? 0 }
    }

    /// `xdirector stats --json`, read again (every 100 ms, for at most 5 s) until `done` holds.
    private func reading(until done: (Reading) -> Bool = { _ in true }) throws -> Reading {
        let deadline = Date().addingTimeInterval(5)
        while true {
            let stats = try cli("stats", ["--json"])
            XCTAssertEqual(stats.status, 0, stats.error)
            let json = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(stats.output.utf8)) as? [String: Any], stats.output)
            func numbers(_ key: String) throws -> [String: Int] {
                try XCTUnwrap(json[key] as? [String: Any], stats.output).compactMapValues { ($0 as? NSNumber)?.intValue }
            }
            let reading = Reading(totals: try numbers("totals"), xdp: try numbers("xdp"))
            if done(reading) || Date() > deadline { return reading }
            usleep(100_000)
        }
    }

    /// The real servers' kernels' count of ICMP destination-unreachable messages received, summed.
    private func destinationUnreachables(_ lab: Topology) throws -> Int {
        var total = 0
        for index in 0..<lab.realCount {
            let lines = try lab.exec(lab.real(index), ["cat", "/proc/net/snmp"]).split(separator: "\n")
                .filter { $0.hasPrefix("Icmp:") }.map { $0.split(separator: " ") }
            let header = try XCTUnwrap(lines.first), values = try XCTUnwrap(lines.dropFirst().first)
            let column = try XCTUnwrap(header.firstIndex(of: "InDestUnreachs"))
            total += try XCTUnwrap(Int(values[column]))
        }
        return total
    }

    // MARK: The frames

    /// Debian's python3, where python3-scapy installs (not a pyenv or venv python first on PATH).
    static let python = "/usr/bin/python3"

    /// `icmp`: opens 16 TCP connections to VIP:80 and sends ICMP "fragmentation needed" errors about them, as
    /// a router on the client's path would (outer source: a different address of the lab's subnet each,
    /// quoting the real server's reply VIP:80 → client:port), then prints {"sent": N}. `mix`: sends
    /// `--count` frames of each malformed kind and prints {kind: frames sent}.
    static let script = #"""
        import argparse, json, random, socket, sys, time
        from scapy.all import (Dot1Q, Ether, ICMP, IP, IPOption_NOP, IPOption_RR, IPv6, IPv6ExtHdrDestOpt,
                               IPv6ExtHdrFragment, IPv6ExtHdrHopByHop, IPv6ExtHdrRouting, Raw, TCP, UDP, fragment, get_if_hwaddr, sendp)

        parser = argparse.ArgumentParser()
        parser.add_argument("mode", choices=["icmp", "mix"])
        for name in ["interface", "mac", "vip", "vip6", "client", "client6", "director", "director6"]:
            parser.add_argument("--" + name, required=True)
        parser.add_argument("--count", type=int, required=True)
        a = parser.parse_args()
        rng = random.Random(16)
        # Explicit: scapy leaves a zero source MAC on frames it cannot route (raw payloads), which a bridge drops.
        source_mac = get_if_hwaddr(a.interface)

        def checksum(data):
            if len(data) % 2:
                data += b"\0"
            total = sum(int.from_bytes(data[i:i + 2], "big") for i in range(0, len(data), 2))
            while total >> 16:
                total = (total & 0xFFFF) + (total >> 16)
            return ~total & 0xFFFF

        def icmp_error(quote, type=3, code=4, rest=1400, good=True):
            """An ICMPv4 error message, built by hand so every byte is as intended."""
            body = bytes([type, code, 0, 0]) + rest.to_bytes(4, "big") + quote
            value = checksum(body) ^ (0 if good else 0x5A5A)
            return body[:2] + value.to_bytes(2, "big") + body[4:]

        def ether(**fields):
            return Ether(src=source_mac, dst=a.mac, **fields)

        def frame(payload, ethertype=None):
            return (ether() if ethertype is None else ether(type=ethertype)) / payload

        def client_port():
            return rng.randrange(1024, 2048)  # never an ephemeral port of the legitimate clients

        def to_vip(**fields):
            return IP(src=a.client, dst=a.vip, **fields)

        def reply_quote(port, tcp_bytes=8):
            """The start of the real server's reply VIP:80 -> client:port, as an ICMP error quotes it."""
            return bytes(IP(src=a.vip, dst=a.client, ttl=63) / TCP(sport=80, dport=port, flags="SA"))[:20 + tcp_bytes]

        def corrupt_ip_checksum(packet):
            data = bytearray(bytes(packet))
            data[10] ^= 0xFF
            return Raw(bytes(data))

        if a.mode == "icmp":
            connections = [socket.create_connection((a.vip, 80), timeout=5) for _ in range(16)]
            ports = [c.getsockname()[1] for c in connections]
            frames = [frame(IP(src="198.51.100.%d" % (100 + i % 150), dst=a.vip, proto=1)
                            / Raw(icmp_error(reply_quote(ports[i % len(ports)]))))
                      for i in range(a.count)]
            sendp(frames, iface=a.interface, verbose=False)
            time.sleep(0.5)  # the connections outlive their errors
            for c in connections:
                c.close()
            print(json.dumps({"sent": a.count, "ports": ports}))
            sys.exit(0)

        n = a.count
        kinds = {
            # Passed by the program (the kernel drops or answers them).
            "truncated_ip_header": [frame(Raw(bytes(to_vip() / TCP(dport=80))[:12]), ethertype=0x0800) for _ in range(n)],
            "truncated_tcp_header": [frame(to_vip(proto=6) / Raw(b"\x9c\x40")) for _ in range(n)],
            "bad_ihl_or_version": [frame(to_vip(ihl=i % 5) if i % 2 else to_vip(version=5)) / TCP(sport=client_port(), dport=80)
                                   for i in range(n)],
            "ipv6_extension_headers": [frame(IPv6(src=a.client6, dst=a.vip6) / header / TCP(sport=client_port(), dport=80, flags="A"))
                                       for header in [IPv6ExtHdrHopByHop(), IPv6ExtHdrDestOpt(), IPv6ExtHdrRouting()]
                                       for _ in range(n // 3)],
            "fragments_to_the_director": [frame(f) for _ in range(n // 4)
                                          for f in fragment(IP(src=a.client, dst=a.director) / UDP(sport=client_port(), dport=9)
                                                            / Raw(b"f" * 64), fragsize=32)]
                                         + [frame(IPv6(src=a.client6, dst=a.director6) / IPv6ExtHdrFragment(m=1, id=rng.randrange(1 << 32))
                                                  / UDP(sport=client_port(), dport=9) / Raw(b"f" * 16)) for _ in range(n // 2)],
            "icmp_quoting_no_ip_header": [frame(IP(src="192.0.2.1", dst=a.vip, proto=1) / Raw(icmp_error(rng.randbytes(8))))
                                          for _ in range(n)],
            "icmp_quoting_a_bad_ihl": [frame(IP(src="192.0.2.1", dst=a.vip, proto=1)
                                             / Raw(icmp_error(b"\x4f" + reply_quote(client_port())[1:]))) for _ in range(n)],
            "icmp_quoting_gre": [frame(IP(src="192.0.2.1", dst=a.vip, proto=1)
                                       / Raw(icmp_error(bytes(IP(src=a.vip, dst=a.client, proto=47) / Raw(rng.randbytes(8))))))
                                 for _ in range(n)],
            # Redirected to a worker, which drops them under their reason.
            "ip_length_below_header": [frame(to_vip(len=16) / TCP(sport=client_port(), dport=80, flags="A")) for _ in range(n)],
            "ip_length_beyond_frame": [frame(to_vip(len=1000) / TCP(sport=client_port(), dport=80, flags="A")) for _ in range(n)],
            "tcp_offset_below_header": [frame(to_vip() / TCP(sport=client_port(), dport=80, flags="A", dataofs=2)) for _ in range(n)],
            "udp_length_beyond_datagram": [frame(to_vip() / UDP(sport=client_port(), dport=53, len=200) / Raw(b"u" * 8))
                                           for _ in range(n)],
            "syn_with_bad_ipv4_checksum": [frame(corrupt_ip_checksum(to_vip() / TCP(sport=client_port(), dport=80, flags="S")),
                                                 ethertype=0x0800) for _ in range(n)],
            "ipv4_options": [frame(to_vip(options=[IPOption_RR()] if i % 2 else [IPOption_NOP()] * 4)
                                   / TCP(sport=client_port(), dport=80, flags="A")) for i in range(n)],
            "odd_tcp_flags": [frame(to_vip() / TCP(sport=client_port(), dport=80, flags=["F", "", "FPU", "SF", "SR", "R"][i % 6]))
                              for i in range(n)],
            "vlan_tagged": [ether() / Dot1Q(vlan=7) / to_vip() / TCP(sport=client_port(), dport=80, flags="A")
                            for _ in range(n)],
            "icmp_about_no_connection": [frame(IP(src="192.0.2.1", dst=a.vip, proto=1) / Raw(icmp_error(reply_quote(client_port()))))
                                         for _ in range(n)],
            "icmp_with_bad_checksum": [frame(IP(src="192.0.2.1", dst=a.vip, proto=1)
                                             / Raw(icmp_error(reply_quote(client_port()), good=False))) for _ in range(n)],
            "icmp_quoting_4_tcp_bytes": [frame(IP(src="192.0.2.1", dst=a.vip, proto=1) / Raw(icmp_error(reply_quote(client_port(), 4))))
                                         for _ in range(n)],
            # Not asserted: what becomes of them depends on work under way (fragments to a VIP) or on the
            # veth (a second tag).
            "fragments_to_the_vip": [frame(f) for _ in range(n // 4)
                                     for f in fragment(to_vip() / UDP(sport=client_port(), dport=9) / Raw(b"f" * 64), fragsize=32)],
            "double_vlan_tagged": [ether() / Dot1Q(vlan=7) / Dot1Q(vlan=8) / to_vip() / TCP(sport=client_port(), dport=80, flags="A")
                                   for _ in range(n // 2)],
        }
        # Interleaved and spread over a few seconds, so every kind meets the legitimate traffic.
        frames = [f for list in kinds.values() for f in list]
        rng.shuffle(frames)
        print("sending", flush=True)
        for start in range(0, len(frames), 50):
            sendp(frames[start:start + 50], iface=a.interface, verbose=False)
            time.sleep(0.05)
        print(json.dumps({name: len(list) for name, list in kinds.items()}))
        """#
}
