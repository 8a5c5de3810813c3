import Foundation
import Packet
import Topology
import XCTest

/// Health checking in a lab: three real servers serving HTTP on 8080 and UDP on 7001, a director run from a
/// keepalived.conf, real servers stopped and restarted under traffic.
final class HealthCheckTests: LabTestCase {
    override class var realCount: Int { 3 }

    private let vip = Topology.vip4
    private let httpPort: UInt16 = 8080
    private let udpPort: UInt16 = 7001
    /// Each real server's HTTP server on `httpPort`, to stop and start.
    private var http: [Process?] = []

    override func setUpWithError() throws {
        try super.setUpWithError()
        let lab = try XCTUnwrap(lab)
        for index in 0..<lab.realCount {
            http.append(try startHTTP(index))
            _ = try lab.spawn(lab.real(index), [Self.xdirector, "backend-udp", "--name", "rs\(index + 1)",
                                                "--port", "\(udpPort)", "--bind", "\(vip)"])
        }
        addTeardownBlock { [self] in for process in http { process?.terminate() } }
    }

    private func real(_ index: Int) -> String { "\(Topology.realAddress4(index))" }

    private func startHTTP(_ index: Int) throws -> Process {
        let lab = try XCTUnwrap(lab)
        let output = CollectedOutput()
        let process = try lab.spawn(lab.real(index), [Self.xdirector, "backend-http", "--name", "rs\(index + 1)", "--port", "\(httpPort)"],
                                    output: output.pipe)
        XCTAssertTrue(output.waitFor("listening", seconds: 10))
        return process
    }

    private func stopHTTP(_ index: Int) {
        guard let process = http[index] else { return }
        process.terminate()
        Topology.wait(process, seconds: 5)
        http[index] = nil
    }

    private func writeKeepalived(_ text: String) throws -> String {
        let path = NSTemporaryDirectory() + "\(lab?.prefix ?? "xd")-\(UUID().uuidString).keepalived.conf"
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        addTeardownBlock { try? FileManager.default.removeItem(atPath: path) }
        return path
    }

    private func startDirector(keepalived path: String, arguments: [String] = []) throws {
        try startDirector(configuration: ["--keepalived", path], arguments: arguments)
    }

    /// Runs the built xdirector with `arguments` on this host, returning its status, output and error.
    private func run(_ arguments: [String]) throws -> CLIResult {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: Self.xdirector)
        process.arguments = arguments
        let stdout = Pipe(), stderr = Pipe()
        process.standardOutput = stdout
        process.standardError = stderr
        try process.run()
        let out = stdout.fileHandleForReading.readDataToEndOfFile(), err = stderr.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return CLIResult(status: process.terminationStatus, output: String(decoding: out, as: UTF8.self),
                         error: String(decoding: err, as: UTF8.self))
    }

    /// `ipvsadm -Ln`, or "" when it cannot be had.
    private func listing() -> String { (try? ipvsadm("-Ln")) ?? "" }

    /// A real server's weight in `ipvsadm -Ln`.
    private func weight(of server: String) -> Int? {
        for line in listing().split(separator: "\n") {
            let words = line.split(separator: " ")
            if words.count >= 4, words[0] == "->", words[1] == server { return Int(words[3]) }
        }
        return nil
    }

    private var configuration: String {
        """
        ! keepalived drives VRRP from the same file
        global_defs {
            router_id LAB
            enable_script_security
            notification_email {
                ops@example.com
            }
        }
        vrrp_instance VI_1 {
            state MASTER
            interface eth0
            virtual_router_id 51
            priority 100
            virtual_ipaddress {
                \(vip)
            }
        }
        virtual_server_group web {
            \(vip) \(httpPort)
        }
        virtual_server group web {
            delay_loop 1
            lb_algo rr
            lb_kind DR
            protocol TCP
            real_server \(real(0)) \(httpPort) {
                weight 1
                HTTP_GET {
                    url {
                        path /
                        status_code 200
                    }
                    connect_timeout 1
                    retry 1
                    delay_before_retry 1
                }
                MISC_CHECK {
                    misc_path "exit 0"
                }
            }
            real_server \(real(1)) \(httpPort) {
                weight 1
                HTTP_GET {
                    url {
                        path /
                    }
                    connect_timeout 1
                    retry 1
                    delay_before_retry 1
                }
            }
            real_server \(real(2)) \(httpPort) {
                weight 1
                HTTP_GET {
                    url {
                        path /
                    }
                    connect_timeout 1
                    retry 1
                    delay_before_retry 1
                }
            }
        }
        virtual_server \(vip) \(udpPort) {
            delay_loop 1
            lb_algo rr
            lb_kind DR
            protocol UDP
            real_server \(real(0)) \(udpPort) {
                TCP_CHECK {
                    connect_port \(httpPort)
                    connect_timeout 1
                    retry 1
                    delay_before_retry 1
                }
            }
            real_server \(real(1)) \(udpPort) {
                TCP_CHECK {
                    connect_port \(httpPort)
                    connect_timeout 1
                    retry 1
                    delay_before_retry 1
                }
            }
            real_server \(real(2)) \(udpPort) {
                TCP_CHECK {
                    connect_port \(httpPort)
                    connect_timeout 1
                    retry 1
                    delay_before_retry 1
                }
            }
        }
        """
    }

    /// rs2's HTTP server stops: within delay_loop + retry × (connect_timeout + delay_before_retry) + 1 s it is
    /// out of both services, new requests all succeed elsewhere and its UDP flows move at their next
    /// datagram; restarted, it is back and gets its share. check-config prints what ipvsadm -S shows.
    func testFailedServerLeavesAndComesBack() throws {
        let lab = try XCTUnwrap(lab)
        let path = try writeKeepalived(configuration)
        let checked = try run(["check-config", "--keepalived", path])
        XCTAssertEqual(checked.status, 0, checked.error)
        XCTAssertTrue(checked.error.contains("skipped vrrp_instance VI_1"), checked.error)
        try startDirector(keepalived: path)
        XCTAssertEqual(try ipvsadm("-S -n"), checked.output, "check-config prints the services the running director shows")
        usleep(1_500_000)
        let health = try cli("health", [])
        XCTAssertEqual(health.output.components(separatedBy: "HTTP_GET   up").count - 1, 3, health.output)

        let probeOutput = CollectedOutput()
        let probe = try lab.spawn(lab.client, [Self.xdirector, "session-probe", "--address", "\(vip)", "--tcp-port", "0",
                                               "--udp-port", "\(udpPort)", "--connections", "0", "--flows", "6",
                                               "--seconds", "9", "--interval-ms", "100"], output: probeOutput.pipe)
        usleep(1_500_000)
        stopHTTP(1)
        let bound = 1.0 + 1 * (1.0 + 1.0) + 1
        let removed = try elapsedUntil(seconds: bound + 3) {
            let listing = try ipvsadm("-Ln")
            return !listing.contains("\(real(1)):\(httpPort)") && !listing.contains("\(real(1)):\(udpPort)")
        }
        let elapsed = try XCTUnwrap(removed, "rs2 leaves both services: \(listing())")
        XCTAssertLessThanOrEqual(elapsed, bound + 0.3, "within delay_loop + retry × (connect_timeout + delay_before_retry) + 1 s")
        let tally = try answers(lab, url: "http://\(vip):\(httpPort)/", count: 100)
        XCTAssertEqual(tally.values.reduce(0, +), 100)
        XCTAssertEqual(Set(tally.keys), ["rs1", "rs3"], "\(tally)")
        let down = try cli("health", [])
        XCTAssertTrue(down.output.contains("\(real(1)):\(httpPort)  DOWN, removed"), down.output)
        XCTAssertTrue(down.output.contains("connection refused"), down.output)
        XCTAssertTrue(directorOutput?.text.contains("real server \(real(1)):\(httpPort) of group web/tcp is down (removed): HTTP_GET connection refused") == true,
                      directorOutput?.text ?? "")

        Topology.wait(probe, seconds: 20)
        let report = try XCTUnwrap(probeOutput.text.split(separator: "\n").last { $0.hasPrefix("{") }, probeOutput.text)
        let summary = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(report.utf8)) as? [String: Any])
        let servers = try XCTUnwrap(summary["udp_servers"] as? [String])
        XCTAssertFalse(servers.contains("rs2"), "every UDP flow left rs2: \(report)")
        XCTAssertGreaterThanOrEqual(summary["changed"] as? Int ?? 0, 1, "the flows on rs2 moved: \(report)")
        let questions = try XCTUnwrap(summary["questions"] as? Int), answered = try XCTUnwrap(summary["answers"] as? Int)
        XCTAssertGreaterThanOrEqual(answered, questions - 1, "a moved flow is answered at its next datagram: \(report)")

        http[1] = try startHTTP(1)
        let back = try elapsedUntil(seconds: 5) { try ipvsadm("-Ln").contains("\(real(1)):\(httpPort)") }
        XCTAssertNotNil(back, "rs2 is back: \(listing())")
        let again = try answers(lab, url: "http://\(vip):\(httpPort)/", count: 30)
        XCTAssertEqual(again["rs2"], 10, "rs2 gets its share again: \(again)")
    }

    /// misc_dynamic sets the weight the script returns; with every real server down the sorry server
    /// answers, and it leaves when one comes back.
    /// NAT real servers answer the director's own health checks from the address their replies to clients
    /// come from: the program leaves those answers (addressed to the host) to the kernel, so the checks see
    /// them, while the clients' replies are still translated.
    func testNATRealServersAreCheckedAndServed() throws {
        let lab = try XCTUnwrap(lab)
        try lab.routeClientThroughDirector()
        let events = NSTemporaryDirectory() + "\(lab.prefix)-events"
        addTeardownBlock { try? FileManager.default.removeItem(atPath: events) }
        let path = try writeKeepalived("""
            global_defs {
                enable_script_security
            }
            virtual_server \(vip) 80 {
                delay_loop 1
                lb_algo rr
                lb_kind NAT
                protocol TCP
                real_server \(real(0)) \(httpPort) {
                    TCP_CHECK {
                        connect_timeout 1
                        retry 0
                    }
                }
                real_server \(real(1)) \(httpPort) {
                    notify_up "echo up >> \(events)"
                    notify_down "echo down >> \(events)"
                    HTTP_GET {
                        url {
                            path /
                            status_code 200
                        }
                        connect_timeout 1
                        retry 0
                    }
                }
            }
            """)
        try startDirector(keepalived: path, arguments: ["--metrics", "127.0.0.1:9469"])
        usleep(3_500_000)  // three rounds of checks
        let listing = self.listing()
        XCTAssertTrue(listing.contains("\(real(0)):\(httpPort)") && listing.contains("\(real(1)):\(httpPort)"),
                      "both NAT real servers pass their checks: \(listing)\n\((try? cli("health", [])).map { $0.output } ?? "")")
        XCTAssertEqual(try answers(lab, url: "http://\(vip)/", count: 10), ["rs1": 5, "rs2": 5], "translated both ways")
        stopHTTP(1)
        XCTAssertNotNil(elapsedUntil(seconds: 4) { !self.listing().contains("\(real(1)):\(httpPort)") }, "a failed NAT server leaves")
        XCTAssertNotNil(elapsedUntil(seconds: 3) { (try? String(contentsOfFile: events, encoding: .utf8))?.contains("down") == true },
                        "notify_down ran: \((try? String(contentsOfFile: events, encoding: .utf8)) ?? "(nothing)")")
        usleep(1_200_000)  // the metrics reading is at most a second old
        let scrape = try lab.exec(lab.director, ["curl", "-s", "-m", "2", "http://127.0.0.1:9469/metrics"])
        let rs2Up = scrape.split(separator: "\n").filter { $0.hasPrefix("xdirector_health_real_up{") && $0.contains("real=\"\(real(1))\",real_port=\"\(httpPort)\"") }
        XCTAssertEqual(rs2Up.count, 1, scrape)
        XCTAssertTrue(rs2Up.first?.hasSuffix(" 0") == true, "the endpoint shows rs2 down: \(rs2Up)")
        XCTAssertTrue(scrape.contains("xdirector_health_check_latency_seconds{"), "check latencies are exported")
        XCTAssertEqual(try answers(lab, url: "http://\(vip)/", count: 4), ["rs1": 4])
        let stats = try stopDirector()
        XCTAssertEqual(stats.detail("drop_no_reply_state"), 0, "no answer to a health check was taken for a reply: \(stats.text)")
        XCTAssertGreaterThan(stats.detail("replies_translated"), 40, stats.text)
    }

    func testDynamicWeightAndSorryServer() throws {
        let lab = try XCTUnwrap(lab)
        let weightFile = NSTemporaryDirectory() + "\(lab.prefix)-weight"
        try "7".write(toFile: weightFile, atomically: true, encoding: .utf8)
        addTeardownBlock { try? FileManager.default.removeItem(atPath: weightFile) }
        let path = try writeKeepalived("""
            global_defs {
                enable_script_security
            }
            virtual_server \(vip) \(httpPort) {
                delay_loop 1
                lb_algo wrr
                lb_kind DR
                sorry_server \(real(2)) \(httpPort)
                real_server \(real(0)) \(httpPort) {
                    weight 1
                    MISC_CHECK {
                        misc_path "exit $(cat \(weightFile))"
                        misc_dynamic
                    }
                }
                real_server \(real(1)) \(httpPort) {
                    weight 2
                    TCP_CHECK {
                        connect_timeout 1
                        retry 0
                    }
                }
            }
            """)
        try startDirector(keepalived: path)
        let dynamic = elapsedUntil(seconds: 4) { weight(of: "\(real(0)):\(httpPort)") == 5 }
        XCTAssertNotNil(dynamic, "exit 7 sets weight 5: \(listing())")

        try "1".write(toFile: weightFile, atomically: true, encoding: .utf8)
        stopHTTP(1)
        let sorry = try elapsedUntil(seconds: 5) {
            let listing = try ipvsadm("-Ln")
            return listing.contains("\(real(2)):\(httpPort)") && !listing.contains("\(real(0)):\(httpPort)") && !listing.contains("\(real(1)):\(httpPort)")
        }
        XCTAssertNotNil(sorry, "the sorry server alone: \(listing())")
        XCTAssertEqual(try answers(lab, url: "http://\(vip):\(httpPort)/", count: 5), ["rs3": 5])

        http[1] = try startHTTP(1)
        let left = try elapsedUntil(seconds: 4) { !(try ipvsadm("-Ln").contains("\(real(2)):\(httpPort)")) }
        XCTAssertNotNil(left, "the sorry server leaves: \(listing())")
        XCTAssertEqual(try answers(lab, url: "http://\(vip):\(httpPort)/", count: 5), ["rs2": 5])

        // SIGHUP rereads the file as keepalived's reload does; a file it refuses leaves the running one.
        let text = try String(contentsOfFile: path, encoding: .utf8)
        try text.replacingOccurrences(of: "weight 2", with: "weight 4").write(toFile: path, atomically: true, encoding: .utf8)
        kill(try XCTUnwrap(director).processIdentifier, SIGHUP)
        XCTAssertNotNil(elapsedUntil(seconds: 3) { weight(of: "\(real(1)):\(httpPort)") == 4 }, "reloaded: \(listing())")
        try (text + "\nbogus_block {\n}\n").write(toFile: path, atomically: true, encoding: .utf8)
        kill(try XCTUnwrap(director).processIdentifier, SIGHUP)
        XCTAssertTrue(directorOutput?.waitFor("'bogus_block' is not supported by XDirector", seconds: 3) == true, directorOutput?.text ?? "")
        XCTAssertEqual(weight(of: "\(real(1)):\(httpPort)"), 4)
    }

    /// rs1 black-holed (its interface down: its checks can only time out) does not slow the checks of the
    /// others: rs2, stopped at the same moment, leaves within its own bound.
    func testBlackHoledServerDoesNotSlowTheOthers() throws {
        let lab = try XCTUnwrap(lab)
        func server(_ index: Int, timeout: Int) -> String {
            """
                real_server \(real(index)) \(httpPort) {
                    HTTP_GET {
                        url {
                            path /
                        }
                        connect_timeout \(timeout)
                        retry 1
                        delay_before_retry 1
                    }
                }
            """
        }
        let path = try writeKeepalived("""
            virtual_server \(vip) \(httpPort) {
                delay_loop 1
                lb_algo rr
                lb_kind DR
            \(server(0, timeout: 5))
            \(server(1, timeout: 1))
            \(server(2, timeout: 1))
            }
            """)
        try startDirector(keepalived: path)
        usleep(1_500_000)
        _ = try lab.exec(lab.real(0), ["ip", "link", "set", "dev", "\(lab.prefix)r0", "down"])
        stopHTTP(1)
        let bound = 1.0 + 1 * (1.0 + 1.0) + 1
        let removed = elapsedUntil(seconds: bound + 3) { !listing().contains("\(real(1)):\(httpPort)") }
        let elapsed = try XCTUnwrap(removed, "rs2 leaves: \(listing())")
        XCTAssertLessThanOrEqual(elapsed, bound + 0.3, "rs2's checks are not held up by rs1's timeouts")
        XCTAssertTrue(listing().contains("\(real(0)):\(httpPort)"), "rs1's checks are still waiting on their 5 s timeouts")
        let black = elapsedUntil(seconds: 15) { !listing().contains("\(real(0)):\(httpPort)") }
        XCTAssertNotNil(black, "rs1 leaves once its checks time out: \(listing())")
        let health = try cli("health", [])
        XCTAssertTrue(health.output.contains("timed out after 5 s") || health.output.contains("no route to host"), health.output)
        XCTAssertEqual(try answers(lab, url: "http://\(vip):\(httpPort)/", count: 6), ["rs3": 6])
    }
}
