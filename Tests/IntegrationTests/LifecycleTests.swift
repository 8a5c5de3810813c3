import Dataplane
import Foundation
import Packet
import Topology
import XCTest

/// The director's own life: clean starts and stops, refusals that leave the machine as it was, a second
/// director kept off a live one's interface, kill -9 and restart, the saved configuration, systemd's protocol.
///
/// The directors here run in one mount namespace held open by a process of the test (`holder`), as on a
/// host where every director shares /sys/fs/bpf: so their pins, and what they leave, can be looked at after
/// they are gone.
final class LifecycleTests: LabTestCase {
    override class var realCount: Int { 2 }

    private let vip = Topology.vip4
    private let port: UInt16 = 7000
    private var holder: Process?
    private var started: [Process] = []
    private var stateFile = ""

    private var rules: String {
        """
        -A -t \(vip):\(port) -s rr
        -a -t \(vip):\(port) -r \(Topology.realAddress4(0)):\(port) -g -w 1
        -a -t \(vip):\(port) -r \(Topology.realAddress4(1)):\(port) -g -w 1
        """
    }

    override func setUpWithError() throws {
        try super.setUpWithError()
        let lab = try XCTUnwrap(lab)
        for index in 0..<lab.realCount {
            _ = try lab.spawn(lab.real(index), [Self.xdirector, "backend-session", "--name", "rs\(index + 1)", "--port", "\(port)"])
        }
        let holder = try lab.spawn(lab.director, ["sleep", "900"])
        self.holder = holder
        // `ip netns exec` enters the namespaces, then executes sleep: until then, nsenter would find the host's.
        let deadline = Date().addingTimeInterval(10)
        while Date() < deadline,
              (try? String(contentsOfFile: "/proc/\(holder.processIdentifier)/comm", encoding: .utf8))?.hasPrefix("sleep") != true {
            usleep(10_000)
        }
        stateFile = NSTemporaryDirectory() + "\(lab.prefix)-state/\(lab.directorInterface).rules"
    }

    override func tearDown() {
        for process in started where process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
        try? FileManager.default.removeItem(atPath: (stateFile as NSString).deletingLastPathComponent)
        super.tearDown()
    }

    // MARK: Running directors in the holder's namespaces

    /// Starts `xdirector run` on the lab's director interface in the holder's mount and network namespaces.
    private func spawnDirector(_ arguments: [String], output: CollectedOutput,
                               environment: [String: String] = [:]) throws -> Process {
        let lab = try XCTUnwrap(lab)
        let holder = try XCTUnwrap(holder)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/nsenter")
        process.arguments = ["--target", "\(holder.processIdentifier)", "--mount", "--net", "--", Self.xdirector, "run",
                             "--interface", lab.directorInterface] + arguments
        process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        process.standardOutput = output.pipe
        process.standardError = output.pipe
        try process.run()
        started.append(process)
        return process
    }

    /// A director with the test's rules, state file and socket, once it says it is ready.
    private func runDirector(_ extra: [String] = [], rules: String? = nil, socket: String? = nil,
                             environment: [String: String] = [:]) throws -> (Process, CollectedOutput) {
        let output = CollectedOutput()
        var arguments = ["--state-file", stateFile, "--socket", socket ?? defaultSocket] + extra
        if let rules { arguments += ["--rules", try writeRules(rules + "\n")] }
        let process = try spawnDirector(arguments, output: output, environment: environment)
        guard output.waitFor("ready", seconds: 30) else { throw TestFailure("the director did not start: \(output.text)") }
        socketPath = socket ?? defaultSocket
        return (process, output)
    }

    private var defaultSocket: String { NSTemporaryDirectory() + "\(lab?.prefix ?? "xd").sock" }

    /// Runs `xdirector run ARGUMENTS` expecting a refusal: its exit status and what it printed.
    private func refusedStart(_ arguments: [String]) throws -> (status: Int32, text: String) {
        let output = CollectedOutput()
        let process = try spawnDirector(["--state-file", stateFile] + arguments, output: output)
        Topology.wait(process, seconds: 30)
        XCTAssertFalse(process.isRunning, "a refused start exits: \(output.text)")
        return (process.terminationStatus, output.text)
    }

    private func stop(_ process: Process, signal: Int32 = SIGTERM) {
        kill(process.processIdentifier, signal)
        Topology.wait(process, seconds: 20)
    }

    /// What the interface and bpffs show of directors: the `ip -d link` line (XDP program and mode), and
    /// the pins under /sys/fs/bpf/xdirector in the holder's mount namespace.
    private func traces() throws -> (link: String, pins: String) {
        let lab = try XCTUnwrap(lab)
        let link = try lab.exec(lab.director, ["ip", "-d", "link", "show", lab.directorInterface])
            .split(separator: "\n").filter { $0.contains("xdp") || $0.contains("prog/") }.joined(separator: "\n")
        let pins = try Topology.run(["nsenter", "--target", "\(try XCTUnwrap(holder).processIdentifier)", "--mount",
                                     "find", "/sys/fs/bpf", "-path", "*xdirector*"], check: false)
        return (link, pins)
    }

    private func probe(seconds: Double, connections: Int = 6, answerTimeoutMs: Int = 1000) throws -> (Process, CollectedOutput) {
        let lab = try XCTUnwrap(lab)
        let output = CollectedOutput()
        let process = try lab.spawn(lab.client, [Self.xdirector, "session-probe", "--address", "\(vip)", "--tcp-port", "\(port)",
                                                 "--connections", "\(connections)", "--flows", "0", "--seconds", "\(seconds)",
                                                 "--interval-ms", "50", "--answer-timeout-ms", "\(answerTimeoutMs)"],
                                    output: output.pipe)
        return (process, output)
    }

    private func report(_ process: Process, _ output: CollectedOutput) throws -> [String: Any] {
        try sessionProbeReport(process, output, seconds: 60)
    }

    // MARK: Tests

    /// Start and stop 20 times in a row: after every stop the interface has no program, bpffs no pins, and
    /// the socket file is gone; every stop exits 0.
    func testStartStopCyclesLeaveNothingBehind() throws {
        for cycle in 1...20 {
            let (director, output) = try runDirector(rules: rules)
            let running = try traces()
            XCTAssertTrue(running.link.contains("xdp"), "cycle \(cycle): attached")
            XCTAssertFalse(running.link.contains("xdpgeneric"), "cycle \(cycle): attached natively: \(running.link)")
            XCTAssertTrue(output.text.contains("(native)"), "cycle \(cycle): attached natively: \(output.text)")
            XCTAssertTrue(running.pins.contains("/services"), "cycle \(cycle): pinned: \(running.pins)")
            stop(director)
            XCTAssertFalse(director.isRunning, "cycle \(cycle): stopped")
            XCTAssertEqual(director.terminationStatus, 0, "cycle \(cycle): \(output.text)")
            let (link, pins) = try traces()
            XCTAssertEqual(link, "", "cycle \(cycle): no program left on the interface")
            XCTAssertEqual(pins, "", "cycle \(cycle): no pins left")
            XCTAssertFalse(FileManager.default.fileExists(atPath: defaultSocket), "cycle \(cycle): no socket file left")
            XCTAssertFalse(output.text.contains("failed"), "cycle \(cycle): \(output.text)")
            if testRun?.failureCount ?? 0 > 0 { break }
        }
    }

    /// A second director on the interface a live one serves is refused, whatever its queues; the first keeps
    /// its pins, its socket and every connection.
    func testSecondDirectorIsRefusedAndTheFirstKeepsServing() throws {
        let (first, _) = try runDirector(rules: rules)
        let before = try traces()
        XCTAssertTrue(before.pins.contains("/services") && before.link.contains("xdp"), "\(before)")
        let (probe, probeOutput) = try probe(seconds: 5)
        usleep(1_000_000)
        for queues in ["1", "0-1"] {
            let (status, text) = try refusedStart(["--queues", queues, "--socket", NSTemporaryDirectory() + "\(lab!.prefix)-2.sock",
                                                   "--rules", try writeRules(rules + "\n")])
            XCTAssertNotEqual(status, 0, text)
            XCTAssertTrue(text.contains("served by a running director (pid \(first.processIdentifier))"), text)
        }
        let sameSocket = try refusedStart(["--socket", defaultSocket, "--queues", "1"])
        XCTAssertNotEqual(sameSocket.status, 0, sameSocket.text)
        let summary = try report(probe, probeOutput)
        XCTAssertEqual(summary["broken"] as? Int, 0, "the first director's connections carry on: \(summary)")
        XCTAssertEqual(summary["answers"] as? Int, summary["questions"] as? Int, "\(summary)")
        XCTAssertTrue(first.isRunning)
        let after = try traces()
        XCTAssertEqual(after.link, before.link, "the first director's program stays")
        XCTAssertEqual(after.pins, before.pins, "the first director's pins stay")
        XCTAssertTrue(try ipvsadm("-Ln").contains("\(Topology.realAddress4(1)):\(port)"), "the first director still answers")
    }

    /// Each refusal exits non-zero with its reason and leaves the interface, bpffs and the files named exactly
    /// as they were.
    func testRefusalsLeaveTheMachineAsItWas() throws {
        let lab = try XCTUnwrap(lab)
        let rulesPath = try writeRules(rules + "\n")
        let scratch = NSTemporaryDirectory() + "\(lab.prefix)-scratch"
        try FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(atPath: scratch) }
        let regular = scratch + "/regular"
        try "keep me\n".write(toFile: regular, atomically: true, encoding: .utf8)
        let link = scratch + "/link"
        try FileManager.default.createSymbolicLink(atPath: link, withDestinationPath: regular)
        let served = scratch + "/served.sock"
        let listener = try unixListener(path: served)
        defer { close(listener) }
        let badRules = try writeRules("-A -t \(vip):\(port) -s rr\n-a -t \(vip):\(port) -r 198.51.100.300 -g\n")
        let clean = try traces()
        XCTAssertEqual(clean.link, "")

        let cases: [(String, [String], String)] = [
            ("a regular file as the socket", ["--rules", rulesPath, "--socket", regular], "not a socket"),
            ("a symbolic link as the socket", ["--rules", rulesPath, "--socket", link], "not a socket"),
            ("a socket another process serves", ["--rules", rulesPath, "--socket", served], "another director is serving"),
            ("a socket path that cannot be made", ["--rules", rulesPath, "--socket", "/proc/nope/x.sock"], "cannot create /proc/nope"),
            ("a socket path too long", ["--rules", rulesPath, "--socket", scratch + "/" + String(repeating: "s", count: 120) + ".sock"], "too long"),
            ("a directory as the socket", ["--rules", rulesPath, "--socket", scratch], "not a socket"),
            ("bad rules", ["--rules", badRules, "--socket", defaultSocket], ":2:"),
            ("a queue that does not exist", ["--rules", rulesPath, "--socket", defaultSocket, "--queues", "5"], "queue"),
            ("a core that does not exist", ["--rules", rulesPath, "--socket", defaultSocket, "--cores", "900,901"], "core"),
        ]
        for (name, arguments, words) in cases {
            let (status, text) = try refusedStart(arguments)
            XCTAssertNotEqual(status, 0, "\(name): \(text)")
            XCTAssertTrue(text.contains(words), "\(name): the reason is given: \(text)")
            XCTAssertFalse(text.contains("NSCocoaErrorDomain") || text.contains("Error Domain"), "\(name): a plain reason: \(text)")
            let now = try traces()
            XCTAssertEqual(now.link, clean.link, "\(name): the interface is as it was")
            XCTAssertEqual(now.pins, clean.pins, "\(name): no pins")
        }
        XCTAssertEqual(try String(contentsOfFile: regular, encoding: .utf8), "keep me\n", "the regular file is intact")
        XCTAssertEqual(try FileManager.default.destinationOfSymbolicLink(atPath: link), regular, "the link is intact")
        XCTAssertFalse(FileManager.default.fileExists(atPath: defaultSocket), "no socket file is left by a refused start")

        // A program that is not a director's: refused, and left where it is.
        try lab.attachDecapsulation(lab.director, interface: lab.directorInterface)
        let foreign = try traces()
        XCTAssertTrue(foreign.link.contains("xdp"), foreign.link)
        let (status, text) = try refusedStart(["--rules", rulesPath, "--socket", defaultSocket])
        XCTAssertNotEqual(status, 0, text)
        XCTAssertTrue(text.contains("not a director's"), text)
        XCTAssertEqual(try traces().link, foreign.link, "the foreign program stays")
        XCTAssertEqual(try traces().pins, clean.pins)
        try lab.exec(lab.director, ["ip", "link", "set", "dev", lab.directorInterface, "xdp", "off"])
    }

    /// An interface whose MTU makes frames larger than a UMEM frame: refused before anything is attached,
    /// with the reason and the largest MTU that works; at that MTU the director starts (natively).
    func testMTUTooLargeForAFrameIsRefused() throws {
        let lab = try XCTUnwrap(lab)
        let rulesPath = try writeRules(rules + "\n")
        func mtu() throws -> String {
            try lab.exec(lab.director, ["cat", "/sys/class/net/\(lab.directorInterface)/mtu"])
                .trimmingCharacters(in: .whitespacesAndNewlines)
        }
        let original = try mtu()
        addTeardownBlock { _ = try? lab.exec(lab.director, ["ip", "link", "set", "dev", lab.directorInterface, "mtu", original]) }
        let clean = try traces()
        try lab.exec(lab.director, ["ip", "link", "set", "dev", lab.directorInterface, "mtu", "9000"])
        let (status, text) = try refusedStart(["--rules", rulesPath, "--socket", defaultSocket])
        XCTAssertNotEqual(status, 0, text)
        XCTAssertTrue(text.contains("MTU 9000"), "the reason: \(text)")
        XCTAssertTrue(text.contains("largest MTU that works is 3822"), "the MTU that works: \(text)")
        XCTAssertEqual(try traces().link, clean.link, "nothing attached")
        XCTAssertEqual(try traces().pins, clean.pins, "no pins")
        XCTAssertEqual(try mtu(), "9000", "the interface is as it was")
        XCTAssertFalse(FileManager.default.fileExists(atPath: defaultSocket), "no socket file")

        try lab.exec(lab.director, ["ip", "link", "set", "dev", lab.directorInterface, "mtu", "3822"])
        let (director, output) = try runDirector(rules: rules)
        XCTAssertFalse(try traces().link.contains("xdpgeneric"), "attached natively")
        stop(director)
        XCTAssertEqual(director.terminationStatus, 0, output.text)
    }

    /// Changes made at run time survive kill -9: the next director, started without --rules on the same
    /// interface, takes over what the dead one left (program, pins, socket file), says so, and restores the
    /// saved configuration; `-S -n` is the same as before the kill.
    func testRuntimeChangesSurviveKillAndRestartWithoutRules() throws {
        let (first, _) = try runDirector(rules: rules)
        try ipvsadm("-a -t \(vip):\(port) -r \(Topology.realAddress4(2)):\(port) -g -w 3")
        try ipvsadm("-e -t \(vip):\(port) -r \(Topology.realAddress4(0)):\(port) -g -w 5")
        try ipvsadm("-d -t \(vip):\(port) -r \(Topology.realAddress4(1)):\(port)")
        try ipvsadm("-A -u \(vip):53 -s sh")
        try ipvsadm("-a -u \(vip):53 -r \(Topology.realAddress4(1)):53 -m")
        let saved = try ipvsadm("-S -n")
        stop(first, signal: SIGKILL)
        XCTAssertTrue(try traces().link.contains("xdp"), "kill -9 leaves the program attached (holding the queues)")
        XCTAssertTrue(FileManager.default.fileExists(atPath: defaultSocket), "and its socket file")

        let (second, output) = try runDirector()
        XCTAssertTrue(output.text.contains("taking over"), output.text)
        XCTAssertTrue(output.text.contains("restored the running configuration from \(stateFile)"), output.text)
        XCTAssertEqual(try ipvsadm("-S -n"), saved)
        stop(second)
        XCTAssertEqual(second.terminationStatus, 0)
        XCTAssertEqual(try traces().link, "", "the second director leaves the interface clean")
        XCTAssertEqual(try traces().pins, "")
    }

    /// kill -9 under traffic, then a restart with the same rules; then a hand-over (SIGUSR2, as for an
    /// upgrade) and another start. Long-lived TCP connections through DR, NAT and FULLNAT services ask a
    /// line every 50 ms throughout: none is reset or broken, none changes real server, every question is
    /// answered, and none waits much longer than the outage (TCP's retransmission backoff is the slack);
    /// UDP flows keep their real servers.
    func testConnectionsSurviveKillAndHandOverDRNATFullNAT() throws {
        let lab = try XCTUnwrap(lab)
        try lab.addLocalAddresses()
        // NAT for IPv6 only: the real servers route the client's IPv6 address through the director, and
        // answer IPv4 (DR, FULLNAT) directly or to the local address.
        for index in 0..<lab.realCount {
            try lab.exec(lab.real(index), ["ip", "-6", "route", "add", "\(Topology.clientAddress6)/128", "via", "\(Topology.directorAddress6)"])
        }
        let (rs1, rs2) = (Topology.realAddress4(0), Topology.realAddress4(1))
        let (rs1v6, rs2v6) = (Topology.realAddress6(0), Topology.realAddress6(1))
        try assertConnectionsSurviveRestarts(rules: """
            -A -t \(vip):7000 -s rr
            -a -t \(vip):7000 -r \(rs1):7000 -g
            -a -t \(vip):7000 -r \(rs2):7000 -g
            -A -t [\(Topology.vip6)]:7002 -s rr
            -a -t [\(Topology.vip6)]:7002 -r [\(rs1v6)]:7002 -m
            -a -t [\(Topology.vip6)]:7002 -r [\(rs2v6)]:7002 -m
            -A -t \(vip):7003 -s rr
            -a -t \(vip):7003 -r \(rs1):7003 --fullnat
            -a -t \(vip):7003 -r \(rs2):7003 --fullnat
            -P -t \(vip):7003 -z \(Topology.localAddress4)
            -A -u \(vip):7004 -s rr
            -a -u \(vip):7004 -r \(rs1):7004 -g
            -a -u \(vip):7004 -r \(rs2):7004 -g
            """, probes: [("DR", "\(vip)", 7000, 7004), ("NAT", "\(Topology.vip6)", 7002, 0), ("FULLNAT", "\(vip)", 7003, 0)])
    }

    /// The same through tunnelling (IPIP to one real server, GRE to the other), in a lab of its own: the
    /// labs' decapsulator refuses untunnelled packets to the VIP, so DR cannot share it.
    func testConnectionsSurviveKillAndHandOverTUN() throws {
        let lab = try XCTUnwrap(lab)
        try lab.attachDecapsulation()
        try assertConnectionsSurviveRestarts(rules: """
            -A -t \(vip):7001 -s rr
            -a -t \(vip):7001 -r \(Topology.realAddress4(0)):7001 -i
            -a -t \(vip):7001 -r \(Topology.realAddress4(1)):7001 -i --tun-type gre
            """, probes: [("TUN", "\(vip)", 7001, 0)])
    }

    /// Runs `probes` (name, VIP, TCP port, UDP port or 0) against a director with `rules` while it is killed
    /// (SIGKILL) and restarted, then handed over (SIGUSR2) and started again.
    private func assertConnectionsSurviveRestarts(rules: String, probes specs: [(String, String, Int, Int)]) throws {
        let lab = try XCTUnwrap(lab)
        for index in 0..<lab.realCount {
            for port in Set(specs.map(\.2)).subtracting([Int(port)]) {
                _ = try lab.spawn(lab.real(index), [Self.xdirector, "backend-session", "--name", "rs\(index + 1)", "--port", "\(port)"])
            }
            for port in Set(specs.map(\.3)).subtracting([0]) {
                _ = try lab.spawn(lab.real(index), [Self.xdirector, "backend-udp", "--name", "rs\(index + 1)", "--port", "\(port)",
                                                    "--bind", "\(vip)"])
            }
        }
        var (director, directorOutput) = try runDirector(rules: rules)
        let probes = try specs.map { name, address, tcp, udp in
            let output = CollectedOutput()
            let process = try lab.spawn(lab.client, [Self.xdirector, "session-probe", "--address", address, "--tcp-port", "\(tcp)",
                                                     "--udp-port", "\(udp)", "--connections", "4", "--flows", "4",
                                                     "--seconds", "14", "--interval-ms", "50", "--answer-timeout-ms", "15000"],
                                        output: output.pipe)
            return (name, process, output)
        }
        var outages: [Double] = []
        let begin = Date()
        var events: [String] = []
        for stopSignal in [SIGKILL, SIGUSR2] {
            usleep(2_000_000)
            let down = Date()
            events.append("signal \(stopSignal) at \(Int(down.timeIntervalSince(begin) * 1000)) ms")
            kill(director.processIdentifier, stopSignal)
            Topology.wait(director, seconds: 20)
            if stopSignal == SIGKILL {
                XCTAssertEqual(director.terminationReason, .uncaughtSignal)
            } else {
                XCTAssertEqual(director.terminationStatus, 75, "a hand-over exits 75 (EX_TEMPFAIL) for systemd to restart it")
            }
            XCTAssertTrue(try traces().link.contains("xdp"), "the program stays attached, holding the queues")
            // Restarted at once: the kernel may still be releasing the dead one's sockets (EBUSY is retried).
            events.append("stopped: \(directorOutput.text.suffix(1500))")
            (director, directorOutput) = try runDirector(rules: rules)
            outages.append(Date().timeIntervalSince(down))
            events.append("ready at \(Int(Date().timeIntervalSince(begin) * 1000)) ms")
            XCTAssertTrue(directorOutput.text.contains("taking over"), directorOutput.text)
            XCTAssertTrue(directorOutput.text.contains("resuming the connections"), directorOutput.text)
        }
        for (name, process, output) in probes {
            let summary = try report(process, output)
            XCTAssertEqual(summary["reset"] as? Int, 0, "\(name): no connection is reset: \(summary)")
            XCTAssertEqual(summary["broken"] as? Int, 0, "\(name): no connection breaks: \(summary)")
            XCTAssertEqual(summary["changed"] as? Int, 0, "\(name): no connection or flow changes real server: \(summary)")
            let tcpServers = summary["tcp_servers"] as? [String] ?? []
            XCTAssertEqual(Set(tcpServers), ["rs1", "rs2"], "\(name): both real servers hold connections: \(summary)")
            if specs.first(where: { $0.0 == name })?.3 == 0 {  // UDP datagrams sent during an outage are lost, as on any restart
                XCTAssertEqual(summary["answers"] as? Int, summary["questions"] as? Int, "\(name): every question is answered: \(summary)")
            }
            let longest = Double(try XCTUnwrap(summary["longest_wait_ms"] as? Int)) / 1000
            XCTAssertLessThan(longest, 2 * (outages.max() ?? 0) + 1.5,
                              "\(name): no question waits much longer than the outage (\(outages) s): \(summary) \(events)")
        }
        stop(director)
        XCTAssertEqual(director.terminationStatus, 0)
        XCTAssertFalse(FileManager.default.fileExists(atPath: connectionStatePath), "a clean stop removes the connection state")
        if testRun?.failureCount ?? 0 > 0 { print(directorOutput.text) }
    }

    /// After kill -9 the program holds the services' frames (dropped: a new connection times out instead of
    /// being reset by the director's kernel, which holds the VIP) for the restart grace after the workers'
    /// last heartbeat, then hands them to the kernel (which refuses the connection at once).
    func testFramesAreHeldForTheRestartGraceThenGoToTheKernel() throws {
        let lab = try XCTUnwrap(lab)
        let (director, _) = try runDirector(["--restart-grace", "3"], rules: rules)
        func curlStatus() throws -> String {
            try lab.exec(lab.client, ["sh", "-c", "curl -s -m 1 http://\(vip):\(port)/ >/dev/null; echo $?"], check: false)
                .trimmingCharacters(in: .whitespacesAndNewlines)
        }
        stop(director, signal: SIGKILL)
        let killed = Date()
        XCTAssertEqual(try curlStatus(), "28", "within the grace the SYN is held: curl times out rather than being refused")
        XCTAssertLessThan(Date().timeIntervalSince(killed), 2.5, "the check ran inside the grace")
        usleep(UInt32(max(0, 3.5 - Date().timeIntervalSince(killed)) * 1_000_000))
        XCTAssertEqual(try curlStatus(), "7", "after the grace the kernel has the frames and refuses the connection")
        let counters = try Topology.run(["nsenter", "--target", "\(try XCTUnwrap(holder).processIdentifier)", "--mount",
                                         "bpftool", "-j", "map", "dump", "pinned", "\(pinDirectory)/xdp_counters"])
        // Summed over CPUs, by the map's index of the counter (`XDPProgram.counterNames`, from the header).
        let entries = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(counters.utf8)) as? [[String: Any]], counters)
        func counter(_ name: String) throws -> Int {
            let index = try XCTUnwrap(XDPProgram.counterNames.firstIndex(of: name), name)
            return entries.compactMap { $0["formatted"] as? [String: Any] }.filter { $0["key"] as? Int == index }
                .flatMap { ($0["values"] as? [[String: Any]]) ?? [] }.compactMap { $0["value"] as? Int }.reduce(0, +)
        }
        XCTAssertGreaterThan(try counter("held_no_worker"), 0, "held frames are counted: \(counters)")
        XCTAssertGreaterThan(try counter("pass_no_socket"), 0, "frames after the grace pass to the kernel, counted: \(counters)")
    }

    /// `--drain 4`: on SIGTERM no new connection is taken while the open ones carry on, then the director
    /// stops as usual, leaving the interface clean.
    func testDrainTakesNoNewConnectionsThenStops() throws {
        let lab = try XCTUnwrap(lab)
        let (director, output) = try runDirector(["--drain", "4"], rules: rules)
        let (probe, probeOutput) = try probe(seconds: 2.5)
        usleep(500_000)
        kill(director.processIdentifier, SIGTERM)
        XCTAssertTrue(output.waitFor("draining", seconds: 5), output.text)
        let attempt = try lab.exec(lab.client, ["sh", "-c", "curl -s -m 1 http://\(vip):\(port)/ >/dev/null; echo $?"], check: false)
        XCTAssertEqual(attempt.trimmingCharacters(in: .whitespacesAndNewlines), "28",
                       "a new connection is not taken while draining (its SYN gets no answer)")
        let summary = try report(probe, probeOutput)
        XCTAssertEqual(summary["broken"] as? Int, 0, "open connections carry on while draining: \(summary)")
        XCTAssertEqual(summary["answers"] as? Int, summary["questions"] as? Int, "\(summary)")
        XCTAssertTrue(director.isRunning, "still draining")
        Topology.wait(director, seconds: 10)
        XCTAssertEqual(director.terminationStatus, 0, output.text)
        XCTAssertEqual(try traces().link, "")
        XCTAssertEqual(try traces().pins, "")
    }

    /// Without --socket the socket is named after the interface and the network namespace, so directors on
    /// same-named interfaces of two namespaces never collide; `xdirector ipvsadm` in the namespace finds it.
    func testDefaultSocketIsUniquePerNetworkNamespace() throws {
        let lab = try XCTUnwrap(lab)
        let output = CollectedOutput()
        let director = try spawnDirector(["--state-file", stateFile, "--rules", try writeRules(rules + "\n")], output: output)
        XCTAssertTrue(output.waitFor("ready", seconds: 30), output.text)
        let expected = "/run/xdirector/\(directorInstance).sock"
        XCTAssertTrue(output.text.contains("control socket \(expected)"), output.text)
        XCTAssertTrue(try lab.exec(lab.director, [Self.xdirector, "ipvsadm", "-Ln"]).contains("\(vip):\(port)"),
                      "found as the only director of the namespace")
        XCTAssertTrue(try lab.exec(lab.director, [Self.xdirector, "ipvsadm", "--interface", lab.directorInterface, "-Ln"])
                        .contains("\(vip):\(port)"), "found by its interface")
        stop(director)
        XCTAssertFalse(FileManager.default.fileExists(atPath: expected))
    }

    private var connectionStatePath: String { "/dev/shm/xdirector/\(directorInstance).connections" }

    /// A connection state file of another layout is set aside with a log line saying why, and the director
    /// starts with no connections.
    func testUnknownConnectionStateIsSetAside() throws {
        try FileManager.default.createDirectory(atPath: "/dev/shm/xdirector", withIntermediateDirectories: true)
        var garbage = Data("XDCSTATE".utf8)
        garbage.append(contentsOf: [0, 0, 0, 99] + [UInt8](repeating: 0x5a, count: 8000))
        try garbage.write(to: URL(fileURLWithPath: connectionStatePath))
        let (director, output) = try runDirector(rules: rules)
        XCTAssertTrue(output.text.contains("set aside"), output.text)
        XCTAssertFalse(output.text.contains("resuming"), output.text)
        let aside = try FileManager.default.contentsOfDirectory(atPath: "/dev/shm/xdirector")
            .filter { $0.hasPrefix("\(directorInstance).connections.unknown-") }
        XCTAssertEqual(aside.count, 1, "the unknown file is kept aside")
        let (probe, probeOutput) = try probe(seconds: 1)
        let summary = try report(probe, probeOutput)
        XCTAssertEqual(summary["answers"] as? Int, summary["questions"] as? Int, "the director serves: \(summary)")
        stop(director)
        XCTAssertEqual(director.terminationStatus, 0)
    }

    /// Under systemd: READY=1 once serving, WATCHDOG=1 from the control loop, STOPPING=1 on SIGTERM.
    func testSystemdNotificationsReadyWatchdogStopping() throws {
        let path = NSTemporaryDirectory() + "\(lab!.prefix)-notify.sock"
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
        XCTAssertGreaterThanOrEqual(fd, 0)
        defer { close(fd); unlink(path) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in for (i, byte) in path.utf8.enumerated() { raw[i] = byte } }
        XCTAssertEqual(withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }, 0)
        var timeout = timeval(tv_sec: 5, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        func receive() -> String {
            var buffer = [UInt8](repeating: 0, count: 4096)
            let count = recv(fd, &buffer, buffer.count, 0)
            return count > 0 ? String(decoding: buffer[0..<count], as: UTF8.self) : ""
        }
        let (director, output) = try runDirector(rules: rules, environment: ["NOTIFY_SOCKET": path, "WATCHDOG_USEC": "400000"])
        var messages = [receive()]
        XCTAssertTrue(messages[0].contains("READY=1"), "\(messages) \(output.text)")
        for _ in 0..<3 { messages.append(receive()) }
        XCTAssertTrue(messages.dropFirst().allSatisfy { $0 == "WATCHDOG=1" }, "the control loop feeds the watchdog: \(messages)")
        kill(director.processIdentifier, SIGTERM)
        var last = ""
        for _ in 0..<20 where !last.contains("STOPPING=1") { last = receive() }
        XCTAssertTrue(last.contains("STOPPING=1"), last)
        Topology.wait(director, seconds: 20)
        XCTAssertEqual(director.terminationStatus, 0)
    }
}

/// A listening Unix stream socket at `path`: stands for a socket another process serves.
private func unixListener(path: String) throws -> Int32 {
    let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
    var address = sockaddr_un()
    address.sun_family = sa_family_t(AF_UNIX)
    withUnsafeMutableBytes(of: &address.sun_path) { raw in for (i, byte) in path.utf8.enumerated() { raw[i] = byte } }
    let bound = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
    }
    guard fd >= 0, bound == 0, listen(fd, 4) == 0 else { throw TestFailure("cannot listen on \(path)") }
    return fd
}
