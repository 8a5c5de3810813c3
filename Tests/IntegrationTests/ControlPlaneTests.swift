import Foundation
import Packet
import Topology
import XCTest

/// The running director driven through its control socket, as an operator would: ipvsadm commands while
/// traffic flows, listings against the pinned maps, statistics against what was sent, and moving a worker.
final class ControlPlaneTests: LabTestCase {
    override class var realCount: Int { 3 }

    private let vip = Topology.vip4
    private let tcpPort: UInt16 = 7000
    private let udpPort: UInt16 = 7001

    override func setUpWithError() throws {
        try super.setUpWithError()
        let lab = try XCTUnwrap(lab)
        for index in 0..<lab.realCount {
            _ = try lab.spawn(lab.real(index), [Self.xdirector, "backend-session", "--name", "rs\(index + 1)",
                                                "--port", "\(tcpPort)"])
            _ = try lab.spawn(lab.real(index), [Self.xdirector, "backend-udp", "--name", "rs\(index + 1)",
                                                "--port", "\(udpPort)", "--bind", "\(vip)"])
        }
    }

    private func real(_ index: Int) -> String { "\(Topology.realAddress4(index))" }

    /// Add and remove real servers, change weights and schedulers, while long-lived TCP connections and UDP
    /// flows keep asking: every question is answered and no connection changes server, the removed server's
    /// included (it drains).
    func testLiveChangesUnderTrafficLoseNothingAndKeepEveryConnection() throws {
        let lab = try XCTUnwrap(lab)
        try startDirector(rules: """
            -A -t \(vip):\(tcpPort) -s rr
            -a -t \(vip):\(tcpPort) -r \(real(0)):\(tcpPort) -g -w 1
            -a -t \(vip):\(tcpPort) -r \(real(1)):\(tcpPort) -g -w 1
            -A -u \(vip):\(udpPort) -s rr
            -a -u \(vip):\(udpPort) -r \(real(0)):\(udpPort) -g -w 1
            -a -u \(vip):\(udpPort) -r \(real(1)):\(udpPort) -g -w 1
            """)
        let output = CollectedOutput()
        let probe = try lab.spawn(lab.client, [Self.xdirector, "session-probe", "--address", "\(vip)",
                                               "--tcp-port", "\(tcpPort)", "--udp-port", "\(udpPort)",
                                               "--connections", "6", "--flows", "6", "--seconds", "6",
                                               "--interval-ms", "10"], output: output.pipe)
        usleep(1_000_000)
        let script = [
            "-a -t \(vip):\(tcpPort) -r \(real(2)):\(tcpPort) -g -w 2",
            "-e -t \(vip):\(tcpPort) -r \(real(0)):\(tcpPort) -g -w 3",
            "-E -t \(vip):\(tcpPort) -s wlc",
            "-d -t \(vip):\(tcpPort) -r \(real(1)):\(tcpPort)",
            "-a -u \(vip):\(udpPort) -r \(real(2)):\(udpPort) -g -w 1",
            "-E -u \(vip):\(udpPort) -s sh",
            "-d -u \(vip):\(udpPort) -r \(real(0)):\(udpPort)",
            "-e -u \(vip):\(udpPort) -r \(real(1)):\(udpPort) -g -w 5",
            "-A -t \(vip):7002 -s wrr",
            "-a -t \(vip):7002 -r \(real(0)):7002 -g",
            "-D -t \(vip):7002",
        ]
        for command in script {
            try ipvsadm(command)
            usleep(300_000)
        }
        Topology.wait(probe, seconds: 20)
        XCTAssertFalse(probe.isRunning, "the probe ends by itself")
        let report = try XCTUnwrap(output.text.split(separator: "\n").last { $0.hasPrefix("{") }, output.text)
        let summary = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(report.utf8)) as? [String: Any])
        let questions = try XCTUnwrap(summary["questions"] as? Int), answers = try XCTUnwrap(summary["answers"] as? Int)
        XCTAssertGreaterThan(questions, 500, report.description)
        XCTAssertEqual(answers, questions, "every question through the VIP is answered: \(report)")
        XCTAssertEqual(summary["changed"] as? Int, 0, "no connection or flow changes real server: \(report)")
        XCTAssertEqual(summary["broken"] as? Int, 0, "no TCP connection breaks: \(report)")
        let tcpServers = try XCTUnwrap(summary["tcp_servers"] as? [String])
        XCTAssertTrue(tcpServers.contains("rs2"), "some connections were on rs2 before it was removed: \(report)")

        // The removed server drains: it is no longer listed and gets no new connection.
        let listing = try ipvsadm("-Ln -t \(vip):\(tcpPort)")
        XCTAssertFalse(listing.contains("\(real(1)):\(tcpPort)"), listing)
        XCTAssertTrue(listing.contains("\(real(2)):\(tcpPort)"), listing)
        XCTAssertTrue(listing.contains("wlc"), listing)
        XCTAssertFalse(try ipvsadm("-Ln").contains(":7002"), "the service added and deleted is gone")
        let fresh = CollectedOutput()
        let later = try lab.spawn(lab.client, [Self.xdirector, "session-probe", "--address", "\(vip)",
                                               "--tcp-port", "\(tcpPort)", "--connections", "8", "--flows", "0",
                                               "--seconds", "0.5"], output: fresh.pipe)
        Topology.wait(later, seconds: 15)
        XCTAssertFalse(fresh.text.contains("\"rs2\""), "new connections avoid the removed server: \(fresh.text)")
        XCTAssertTrue(fresh.text.contains("\"answers\""), fresh.text)
    }

    /// A refused change says why, exits non-zero, and leaves the running configuration exactly as it was.
    func testRefusedChangesLeaveTheConfigurationIntact() throws {
        try startDirector(rules: """
            -A -t \(vip):\(tcpPort) -s rr
            -a -t \(vip):\(tcpPort) -r \(real(0)):\(tcpPort) -g -w 1
            """)
        let before = try ipvsadm("-S -n")
        for (arguments, words) in [
            ("-A -t \(vip):\(tcpPort) -s rr", "exists"),
            ("-a -t \(vip):9999 -r \(real(1)) -g", "service"),
            ("-a -t \(vip):\(tcpPort) -r \(real(1)):8080 -g", "port"),
            ("-a -t \(vip):\(tcpPort) -r \(real(1)) --fullnat", "local address"),
            ("-E -t \(vip):\(tcpPort) -s nosuch", "scheduler"),
            ("--bogus", "bogus"),
        ] {
            let result = try cli("ipvsadm", arguments.split(separator: " ").map(String.init))
            XCTAssertNotEqual(result.status, 0, arguments)
            XCTAssertTrue(result.error.lowercased().contains(words), "\(arguments): \(result.error)")
        }
        // A restore with a bad line applies none of its lines.
        let restore = try cli("ipvsadm", ["-R"], input: "-a -t \(vip):\(tcpPort) -r \(real(1)):\(tcpPort) -g\n-a -t 1.2.3.4:1 -r \(real(2)) -g\n")
        XCTAssertNotEqual(restore.status, 0)
        XCTAssertTrue(restore.error.contains("2"), "the bad line is named: \(restore.error)")
        XCTAssertEqual(try ipvsadm("-S -n"), before, "the running configuration is untouched")
    }

    /// Save, clear, restore: the same rules, byte for byte; the pinned maps agree with the listing.
    func testSaveRestoreRoundTripAndMapsAgreeWithTheListing() throws {
        let lab = try XCTUnwrap(lab)
        try startDirector(rules: """
            -A -t \(vip):\(tcpPort) -s wrr -p 300
            -a -t \(vip):\(tcpPort) -r \(real(0)):\(tcpPort) -g -w 3
            -a -t \(vip):\(tcpPort) -r \(real(1)):\(tcpPort) -g -w 1 -x 100 -y 50
            -A -u \(vip):\(udpPort) -s mh -b mh-port
            -a -u \(vip):\(udpPort) -r \(real(2)):\(udpPort) -g -w 2
            """)
        try ipvsadm("-a -u \(vip):\(udpPort) -r \(real(0)):\(udpPort) -g -w 4")
        let saved = try ipvsadm("-S -n")
        try ipvsadm("-C")
        XCTAssertEqual(try ipvsadm("-S -n"), "")
        try ipvsadm("-R", input: saved)
        XCTAssertEqual(try ipvsadm("-S -n"), saved, "save → clear → restore → save is byte-identical")

        let listing = try ipvsadm("-Ln")
        let services = try dump("services"), reals = try dump("real_servers")
        XCTAssertEqual(services.count, 2, "two services in the map: \(services)")
        XCTAssertEqual(reals.count, 4, "four real servers in the map: \(reals)")
        // Every real server line of -Ln is in the map with its weight and method, and nothing else is.
        var listed = 0
        var service = ""
        for line in listing.split(separator: "\n") {
            let words = line.split(separator: " ", omittingEmptySubsequences: true).map(String.init)
            if words.first == "TCP" || words.first == "UDP" { service = words[1] }
            guard words.first == "->", words.count >= 4, let weight = Int(words[3]) else { continue }
            listed += 1
            let match = reals.first { entry in
                entry.service == service && entry.real == words[1] && entry.weight == weight && words[2] == "Route" && entry.method == 0
            }
            XCTAssertNotNil(match, "\(line) is in the real_servers map: \(reals)")
        }
        XCTAssertEqual(listed, reals.count, listing)
        for entry in services {
            let proto = (entry.key["proto"] as? NSNumber)?.intValue == 17 ? "UDP" : "TCP"
            XCTAssertTrue(listing.contains("\(proto)  \(entry.service)"), "\(entry.service) listed: \(listing)")
        }
        _ = lab
    }

    /// `stats --json` counts exactly what the client sent, per worker and in total, and the service's
    /// `--stats` agree.
    func testStatisticsCountWhatTheClientSent() throws {
        let lab = try XCTUnwrap(lab)
        try startDirector(rules: """
            -A -u \(vip):\(udpPort) -s rr
            -a -u \(vip):\(udpPort) -r \(real(0)):\(udpPort) -g -w 1
            -a -u \(vip):\(udpPort) -r \(real(1)):\(udpPort) -g -w 1
            """)
        let count = 40
        let answers = try lab.exec(lab.client, [Self.xdirector, "udp-probe", "--address", "\(vip)", "--port", "\(udpPort)",
                                                "--count", "\(count)", "--size", "100"])
        XCTAssertFalse(answers.contains("(none)"), answers)
        let stats = try cli("stats", ["--json"])
        XCTAssertEqual(stats.status, 0, stats.error)
        let reading = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(stats.output.utf8)) as? [String: Any], stats.output)
        let totals = try XCTUnwrap(reading["totals"] as? [String: Any], stats.output)
        XCTAssertEqual((totals["rx_packets"] as? NSNumber)?.intValue, count, stats.output)
        XCTAssertEqual((totals["tx_packets"] as? NSNumber)?.intValue, count, stats.output)
        XCTAssertEqual((totals["new_connections"] as? NSNumber)?.intValue, count, stats.output)
        // The program's description (XDP metadata) reaches the workers in copy mode: none is parsed again.
        XCTAssertEqual((totals["frames_described"] as? NSNumber)?.intValue, count, stats.output)
        let workers = try XCTUnwrap(reading["workers"] as? [[String: Any]])
        XCTAssertEqual(workers.count, 2)
        let xdp = try XCTUnwrap(reading["xdp"] as? [String: Any])
        XCTAssertEqual((xdp["redirected"] as? NSNumber)?.intValue, count, stats.output)
        // 100 bytes of payload + 8 UDP + 20 IPv4 + 14 Ethernet per datagram.
        let listing = try ipvsadm("-Ln --stats --exact")
        let serviceLine = try XCTUnwrap(listing.split(separator: "\n").first { $0.hasPrefix("UDP") }, listing)
        let columns = serviceLine.split(separator: " ").map(String.init)
        XCTAssertEqual(columns[2], "\(count)", "Conns: \(listing)")
        XCTAssertEqual(columns[3], "\(count)", "InPkts: \(listing)")
        XCTAssertEqual(columns[5], "\(count * 142)", "InBytes: \(listing)")
        try ipvsadm("-Z")
        let zeroed = try ipvsadm("-Ln --stats --exact")
        let zeroLine = try XCTUnwrap(zeroed.split(separator: "\n").first { $0.hasPrefix("UDP") })
        XCTAssertEqual(zeroLine.split(separator: " ")[3], "0", "-Z zeroes the counters: \(zeroed)")
    }

    /// `pin` moves a running worker; the kernel shows it on the new core. Refused: a core that does not exist,
    /// and one another worker runs on.
    func testPinMovesARunningWorker() throws {
        let cores = ProcessInfo.processInfo.activeProcessorCount
        guard cores >= 2 else { throw XCTSkip("needs two cores") }
        try startDirector(rules: "-A -u \(vip):\(udpPort) -s rr\n-a -u \(vip):\(udpPort) -r \(real(0)):\(udpPort) -g",
                          arguments: ["--queues", "0", "--cores", "0"])
        let queues = try cli("queues", [])
        XCTAssertEqual(queues.status, 0, queues.error)
        XCTAssertTrue(queues.output.contains("copy"), queues.output)
        let pid = try XCTUnwrap(director).processIdentifier
        let task = try XCTUnwrap(try FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task").first { tid in
            (try? String(contentsOfFile: "/proc/\(pid)/task/\(tid)/comm", encoding: .utf8))?.hasPrefix("xd-q0") == true
        }, "the worker thread of queue 0")
        XCTAssertEqual(try processor(pid, task), 0)
        let moved = try cli("pin", ["--queue", "0", "--core", "1"])
        XCTAssertEqual(moved.status, 0, moved.error)
        let deadline = Date().addingTimeInterval(3)
        while try processor(pid, task) != 1 && Date() < deadline { usleep(50_000) }
        XCTAssertEqual(try processor(pid, task), 1, "the worker runs on core 1")
        let affinity = try String(contentsOfFile: "/proc/\(pid)/task/\(task)/status", encoding: .utf8)
        XCTAssertTrue(affinity.contains("Cpus_allowed_list:\t1\n"), affinity)
        XCTAssertTrue(try cli("queues", []).output.split(separator: "\n").contains { $0.split(separator: " ").prefix(2) == ["0", "1"] },
                      "queues shows queue 0 on core 1")
        let missing = try cli("pin", ["--queue", "0", "--core", "\(cores + 7)"])
        XCTAssertNotEqual(missing.status, 0)
        XCTAssertTrue(missing.error.contains("does not exist"), missing.error)
        let unknownQueue = try cli("pin", ["--queue", "5", "--core", "0"])
        XCTAssertNotEqual(unknownQueue.status, 0)
    }

    /// The CPU a thread last ran on: field 39 of /proc/<pid>/task/<tid>/stat.
    private func processor(_ pid: Int32, _ task: String) throws -> Int {
        let stat = try String(contentsOfFile: "/proc/\(pid)/task/\(task)/stat", encoding: .utf8)
        // The command name (field 2) may hold spaces: count from the closing parenthesis.
        let rest = stat[stat.index(after: try XCTUnwrap(stat.lastIndex(of: ")")))...].split(separator: " ")
        return try XCTUnwrap(Int(rest[36]))
    }

    /// A pinned map's entries, as bpftool shows them from inside the director's mount namespace.
    private func dump(_ map: String) throws -> [MapEntry] {
        let lab = try XCTUnwrap(lab)
        let pid = try XCTUnwrap(director).processIdentifier
        let text = try Topology.run(["nsenter", "--target", "\(pid)", "--mount", "--net", "bpftool", "-j", "map", "dump",
                                     "pinned", "\(pinDirectory)/\(map)"])
        let entries = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(text.utf8)) as? [[String: Any]], text)
        return try entries.map { entry in
            let formatted = try XCTUnwrap(entry["formatted"] as? [String: Any], text)
            let key = try XCTUnwrap(formatted["key"] as? [String: Any], text)
            let value = try XCTUnwrap(formatted["value"] as? [String: Any], text)
            return MapEntry(key: key, value: value)
        }
    }
}

/// A formatted bpftool map entry.
private struct MapEntry {
    let key: [String: Any]
    let value: [String: Any]

    /// `-Ln`'s service column for a `services` key, or the service of a `real_servers` key.
    var service: String { Self.endpoint(key["service"] as? [String: Any] ?? key) }
    /// `-Ln`'s real server column for a `real_servers` key.
    var real: String { Self.endpoint(key) }
    var weight: Int { (value["weight"] as? NSNumber)?.intValue ?? -1 }
    var method: Int { (value["method"] as? NSNumber)?.intValue ?? -1 }

    static func endpoint(_ key: [String: Any]) -> String {
        let bytes = (key["addr"] as? [NSNumber] ?? []).map(\.uint8Value)
        let port = UInt16(bigEndian: UInt16((key["port"] as? NSNumber)?.intValue ?? 0))
        if (key["family"] as? NSNumber)?.intValue == 4 {
            return bytes.prefix(4).map(String.init).joined(separator: ".") + ":\(port)"
        }
        let address = IPAddress(bytes: bytes) ?? .v4(0)
        return "[\(address)]:\(port)"
    }
}
