@testable import Control
import Foundation
import Packet
import XCTest

final class RouteAnnouncementTests: XCTestCase {
    private let config = try! RulesFile.load("""
        -A -t 203.0.113.10:80 -s mh
        -a -t 203.0.113.10:80 -r 198.51.100.11 -g -w 1
        -a -t 203.0.113.10:80 -r 198.51.100.12 -g -w 0
        -A -u 203.0.113.10:53 -s rr
        -a -u 203.0.113.10:53 -r 198.51.100.12 -g -w 2
        -A -t [2001:db8::10]:443 -s sh
        -a -t [2001:db8::10]:443 -r [2001:db8:1::11] -g -w 1
        -A -t 203.0.113.20:80 -s rr
        """)

    func testAVIPIsAnnouncedWhileOneOfItsServicesHasQuorum() {
        let all = VIPAnnouncement.prefixes(config) { _, real in real.weight > 0 }
        XCTAssertEqual(all, ["2001:db8::10/128", "203.0.113.10/32"], "203.0.113.20 has no real server")
        // 198.51.100.11 unresolved: the UDP service still has 198.51.100.12, so the VIP stays.
        XCTAssertEqual(VIPAnnouncement.prefixes(config) { _, real in
            real.weight > 0 && real.endpoint.address != IPAddress("198.51.100.11")!
        }, ["2001:db8::10/128", "203.0.113.10/32"])
        // Nothing available on 203.0.113.10 any more: withdrawn.
        XCTAssertEqual(VIPAnnouncement.prefixes(config) { service, real in
            real.weight > 0 && service.endpoint.address.family == .ipv6
        }, ["2001:db8::10/128"])
        XCTAssertEqual(VIPAnnouncement.prefixes(config, hasQuorum: { $0.endpoint.port == 80 }) { _, _ in true },
                       ["203.0.113.10/32"], "only the services with their quorum count: the :80 ones")
        XCTAssertEqual(VIPAnnouncement.prefixes(DirectorConfig()) { _, _ in true }, [])
    }

    func testTheIncludeFileIsAcceptedByBIRD() throws {
        let text = VIPAnnouncement.render(["2001:db8::10/128", "203.0.113.10/32"], name: VIPAnnouncement.protocolName(instance: "eth0@blue"))
        XCTAssertTrue(text.contains("protocol static xdirector_eth0_blue_4 {\n    ipv4;\n    route 203.0.113.10/32 blackhole;\n}"), text)
        XCTAssertTrue(text.contains("protocol static xdirector_eth0_blue_6 {\n    ipv6;\n    route 2001:db8::10/128 blackhole;\n}"), text)
        let empty = VIPAnnouncement.render([], name: "xdirector_eth0")
        XCTAssertFalse(empty.contains("route"), empty)
        guard FileManager.default.isExecutableFile(atPath: "/usr/sbin/bird") else { throw XCTSkip("BIRD is not installed") }
        let directory = NSTemporaryDirectory() + "xd-bird-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        for (name, body) in [("full", text), ("empty", empty)] {
            try body.write(toFile: "\(directory)/\(name).vips", atomically: true, encoding: .utf8)
            try "router id 192.0.2.1;\nprotocol device {}\ninclude \"\(directory)/\(name).vips\";\n"
                .write(toFile: "\(directory)/\(name).conf", atomically: true, encoding: .utf8)
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/usr/sbin/bird")
            process.arguments = ["-p", "-c", "\(directory)/\(name).conf"]
            let errors = Pipe()
            process.standardError = errors
            try process.run()
            process.waitUntilExit()
            let message = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            XCTAssertEqual(process.terminationStatus, 0, "bird -p accepts the \(name) file: \(message)\n\(body)")
        }
    }

    func testReplyLinesAreParsed() {
        XCTAssertEqual(BIRDControl.parse("0003 Reconfigured"), .init(code: 3, text: "Reconfigured"))
        XCTAssertEqual(BIRDControl.parse("0002-Reading configuration from /etc/bird.conf"),
                       .init(code: 2, text: "Reading configuration from /etc/bird.conf"))
        XCTAssertEqual(BIRDControl.parse(" continued"), .init(code: nil, text: "continued"))
        XCTAssertEqual(BIRDControl.parse("8002 /etc/bird.conf:3:1 syntax error"), .init(code: 8002, text: "/etc/bird.conf:3:1 syntax error"))
    }

    /// Against a socket that answers as BIRD does: configure succeeds on 0003, and a refusal (9xxx) is
    /// reported with BIRD's words.
    func testConfigureOverASocketThatSpeaksBIRDsProtocol() throws {
        for (answer, accepted) in [("0002-Reading configuration from /x.conf\n0003 Reconfigured\n", true),
                                   ("0002-Reading configuration from /x.conf\n9001 /x.conf:2:7 syntax error\n", false)] {
            let path = NSTemporaryDirectory() + "xd-bird-\(UUID().uuidString.prefix(8)).ctl"
            let listener = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
            var address = try ControlClient.address(path)
            XCTAssertEqual(withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listener, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
            }, 0)
            listen(listener, 1)
            let server = Thread {
                let client = accept(listener, nil, nil)
                _ = ControlClient.writeAll(client, Data("0001 BIRD 2.0.12 ready.\n".utf8))
                var buffer = [UInt8](repeating: 0, count: 256)
                let count = recv(client, &buffer, buffer.count, 0)
                let command = String(decoding: buffer[0..<max(count, 0)], as: UTF8.self)
                _ = ControlClient.writeAll(client, Data((command == "configure\n" ? answer : "9001 unexpected\n").utf8))
                close(client)
            }
            server.start()
            defer { close(listener); unlink(path) }
            if accepted {
                XCTAssertNoThrow(try BIRDControl(socketPath: path).configure())
            } else {
                XCTAssertThrowsError(try BIRDControl(socketPath: path).configure()) { error in
                    XCTAssertTrue("\(error)".contains("syntax error"), "\(error)")
                }
            }
        }
    }
}
