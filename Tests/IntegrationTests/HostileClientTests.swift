import Foundation
import Packet
import Topology
import XCTest

/// Clients that never send, or send a byte at a time, by the hundred: on the control socket and on the
/// metrics port they delay no other client, no scrape and no signal.
final class HostileClientTests: LabTestCase {
    override class var realCount: Int { 1 }

    private let port: UInt16 = 7000
    private let metricsPort: UInt16 = 9469

    /// 200 idle clients on the control socket and 200 on the metrics port, and one dripping a byte at a
    /// time on each: `ipvsadm -Ln` answers within 1 s, a scrape within 1 s, SIGHUP is acknowledged within
    /// 1 s, and SIGTERM stops the director within 1 s.
    func testIdleAndSlowClientsDelayNothing() throws {
        let lab = try XCTUnwrap(lab)
        try startDirector(rules: """
            -A -t \(Topology.vip4):\(port) -s rr
            -a -t \(Topology.vip4):\(port) -r \(Topology.realAddress4(0)):\(port) -g -w 1
            """, arguments: ["--metrics", "127.0.0.1:\(metricsPort)"])
        let socket = try XCTUnwrap(socketPath)
        var held: [Int32] = []
        defer { for fd in held { close(fd) } }
        for _ in 0..<200 { held.append(try Self.connect(unix: socket)) }
        let metricsPort = metricsPort
        held += try Self.inNetworkNamespace(lab.director) {
            try (0..<200).map { _ in try Self.connect(loopbackPort: metricsPort) }
        }
        // A request sent a byte at a time, every 200 ms, on each endpoint.
        let drippers = [try Self.connect(unix: socket)]
            + (try Self.inNetworkNamespace(lab.director) { [try Self.connect(loopbackPort: metricsPort)] })
        held += drippers
        let dripping = DispatchSemaphore(value: 0)
        let drip = Thread {
            let bytes = Array(#"{"command":"ipvsadm","arguments":["-Ln"],"input":""}"#.utf8)
            for byte in bytes {
                for fd in drippers { _ = withUnsafePointer(to: byte) { send(fd, $0, 1, Int32(MSG_NOSIGNAL)) } }
                if dripping.wait(timeout: .now() + .milliseconds(200)) == .success { return }
            }
        }
        drip.start()
        defer { dripping.signal() }
        Thread.sleep(forTimeInterval: 0.5)

        var start = Date()
        let listing = try ipvsadm("-Ln")
        XCTAssertLessThan(Date().timeIntervalSince(start), 1, "ipvsadm -Ln answers within 1 s")
        XCTAssertTrue(listing.contains("\(Topology.vip4):\(port)"), listing)

        start = Date()
        let scrape = try lab.exec(lab.director, ["curl", "-s", "-m", "5", "http://127.0.0.1:\(metricsPort)/metrics"])
        XCTAssertLessThan(Date().timeIntervalSince(start), 1, "a scrape answers within 1 s")
        XCTAssertTrue(scrape.contains("xdirector_worker_rx_packets_total"), scrape)

        let output = try XCTUnwrap(directorOutput)
        let director = try XCTUnwrap(self.director)
        start = Date()
        kill(director.processIdentifier, SIGHUP)
        XCTAssertTrue(output.waitFor("reloaded", seconds: 5), output.text)
        XCTAssertLessThan(Date().timeIntervalSince(start), 1, "SIGHUP is acknowledged within 1 s")

        start = Date()
        kill(director.processIdentifier, SIGTERM)
        Topology.wait(director, seconds: 10)
        XCTAssertFalse(director.isRunning)
        XCTAssertLessThan(Date().timeIntervalSince(start), 1, "SIGTERM stops the director within 1 s")
        XCTAssertEqual(director.terminationStatus, 0, output.text)
    }

    /// A worker that stops taking frames (the director stopped with SIGSTOP) while a flood arrives: its
    /// socket's RX ring overflows, and every frame the program redirected is either received by a worker or
    /// counted lost by the kernel (`drop_socket_rx_ring_full`, `drop_socket_rx`), among the drops.
    func testFramesLostOnAFullReceiveRingAreCounted() throws {
        let lab = try XCTUnwrap(lab)
        try startDirector(rules: """
            -A -u \(Topology.vip4):\(port) -s rr
            -a -u \(Topology.vip4):\(port) -r \(Topology.realAddress4(0)):\(port) -g -w 1
            """)
        let director = try XCTUnwrap(self.director)
        func reading() throws -> (totals: [String: Any], xdp: [String: Any]) {
            let stats = try cli("stats", ["--json"])
            XCTAssertEqual(stats.status, 0, stats.error)
            let json = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(stats.output.utf8)) as? [String: Any], stats.output)
            return (try XCTUnwrap(json["totals"] as? [String: Any]), try XCTUnwrap(json["xdp"] as? [String: Any]))
        }
        func number(_ object: [String: Any], _ key: String) -> Int { (object[key] as? NSNumber)?.intValue ?? -1 }
        let before = try reading()
        XCTAssertEqual(number(before.totals, "drop_socket_rx_ring_full"), 0)

        kill(director.processIdentifier, SIGSTOP)
        // 8000 datagrams, each from a new port, so both queues get more than their 2048-entry RX ring holds.
        try lab.exec(lab.client, ["bash", "-c", "for i in $(seq 8000); do echo x > /dev/udp/\(Topology.vip4)/\(port); done"])
        Thread.sleep(forTimeInterval: 0.5)
        kill(director.processIdentifier, SIGCONT)

        // The workers drain their rings and the socket statistics are read once a second: wait (bounded) until
        // the counts settle rather than for a fixed time.
        var after = try reading()
        var redirected = 0, received = 0, ringFull = 0, lost = 0
        for _ in 0..<50 {
            after = try reading()
            redirected = number(after.xdp, "redirected") - number(before.xdp, "redirected")
            received = number(after.totals, "rx_packets") - number(before.totals, "rx_packets")
            ringFull = number(after.totals, "drop_socket_rx_ring_full")
            lost = ringFull + number(after.totals, "drop_socket_rx")
            if ringFull > 0 && received + lost == redirected { break }
            Thread.sleep(forTimeInterval: 0.2)
        }
        XCTAssertGreaterThan(ringFull, 0, "the RX rings overflowed: \(after.totals)")
        XCTAssertEqual(received + lost, redirected, "every redirected frame is received or counted lost: \(after)")
        XCTAssertGreaterThanOrEqual(number(after.totals, "drops"), lost, "the losses are among the drops")
        let report = try stopDirector()
        XCTAssertTrue(report.text.contains("drop_socket_rx_ring_full"), "the exit table lists them: \(report.text)")
    }

    // MARK: Clients

    static func connect(unix path: String) throws -> Int32 {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (index, byte) in path.utf8.enumerated() { raw[index] = byte }
        }
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard fd >= 0, result == 0 else {
            close(fd)
            throw TestFailure("cannot connect to \(path): \(String(cString: strerror(errno)))")
        }
        return fd
    }

    static func connect(loopbackPort port: UInt16) throws -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = port.bigEndian
        address.sin_addr.s_addr = UInt32(0x7f00_0001).bigEndian
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard fd >= 0, result == 0 else {
            close(fd)
            throw TestFailure("cannot connect to 127.0.0.1:\(port): \(String(cString: strerror(errno)))")
        }
        return fd
    }

    /// Runs `body` on a thread of its own moved into the named network namespace (`setns` moves only the
    /// calling thread): the sockets it makes belong to that namespace.
    static func inNetworkNamespace(_ name: String, _ body: @escaping @Sendable () throws -> [Int32]) throws -> [Int32] {
        final class Outcome: @unchecked Sendable { var result: Result<[Int32], Error> = .success([]) }
        let outcome = Outcome()
        let done = DispatchSemaphore(value: 0)
        let thread = Thread {
            defer { done.signal() }
            let namespace = open("/run/netns/\(name)", O_RDONLY | O_CLOEXEC)
            defer { close(namespace) }
            // Glibc's setns(2), which Swift's Glibc module does not export.
            typealias SetNamespace = @convention(c) (Int32, Int32) -> Int32
            let setns = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "setns").map { unsafeBitCast($0, to: SetNamespace.self) }
            guard namespace >= 0, let setns, setns(namespace, 0x4000_0000 /* CLONE_NEWNET */) == 0 else {
                outcome.result = .failure(TestFailure("cannot enter network namespace \(name): \(String(cString: strerror(errno)))"))
                return
            }
            outcome.result = Result { try body() }
        }
        thread.start()
        done.wait()
        return try outcome.result.get()
    }
}
