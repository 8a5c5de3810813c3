import Control
import Dataplane
import Foundation
import Glibc
import Packet
import XCTest
import XDirectorMetrics

final class MetricsTests: XCTestCase {
    static func statistics() -> DirectorStatistics {
        var first = WorkerCounter.allCases.map { _ in UInt64(0) }
        first[WorkerCounter.rxPackets.rawValue] = 1234
        first[WorkerCounter.activeConnections.rawValue] = 7
        first[WorkerCounter.dropNoService.rawValue] = 3
        var second = WorkerCounter.allCases.map { _ in UInt64(0) }
        second[WorkerCounter.rxPackets.rawValue] = 99
        return DirectorStatistics(
            workers: [.init(queue: 0, core: 1, cpu: 1, zeroCopy: false, counters: first),
                      .init(queue: 1, core: 2, cpu: 2, zeroCopy: false, counters: second)],
            xdp: [1400, 1333, 5, 6, 0, 0, 0, 0, 0, 0])
    }

    static func services(withSecondReal: Bool = true) throws -> [ServiceListing] {
        func endpoint(_ address: String, _ port: UInt16) throws -> L4Endpoint {
            L4Endpoint(address: try XCTUnwrap(IPAddress(address)), port: port)
        }
        var reals = [RealServerListing(endpoint: try endpoint("10.0.0.2", 8080), method: .masquerading, weight: 3,
                                       activeConnections: 4, inactiveConnections: 1, persistentConnections: 2,
                                       stats: TrafficStats(connections: 10, inPackets: 100, outPackets: 90, inBytes: 6400, outBytes: 5760))]
        if withSecondReal {
            reals.append(RealServerListing(endpoint: try endpoint("10.0.0.3", 8080), method: .masquerading, weight: 1,
                                           stats: TrafficStats(connections: 5)))
        }
        return [
            ServiceListing(key: ServiceKey(proto: .tcp, endpoint: try endpoint("192.0.2.10", 80)), scheduler: .rr,
                           stats: TrafficStats(connections: 15, inPackets: 100, outPackets: 90, inBytes: 6400, outBytes: 5760),
                           reals: reals),
            ServiceListing(key: ServiceKey(proto: .udp, endpoint: try endpoint("2001:db8::10", 53)), scheduler: .rr),
        ]
    }

    func testExporterText() throws {
        let text = MetricsExporter.render(statistics: Self.statistics(), services: try Self.services())
        let lines = Set(text.split(separator: "\n").map(String.init))
        for expected in [
            #"xdirector_worker_rx_packets_total{queue="0",core="1"} 1234"#,
            #"xdirector_worker_rx_packets_total{queue="1",core="2"} 99"#,
            #"xdirector_worker_drop_no_service_total{queue="0",core="1"} 3"#,
            #"xdirector_worker_drop_no_service_total{queue="1",core="2"} 0"#,
            #"xdirector_worker_active_connections{queue="0",core="1"} 7.0"#,
            "# TYPE xdirector_worker_rx_packets_total counter",
            "# TYPE xdirector_worker_active_connections gauge",
            "xdirector_xdp_rx_total 1400",
            "xdirector_xdp_pass_not_service_total 6",
            #"xdirector_service_connections_total{protocol="tcp",vip="192.0.2.10",port="80"} 15"#,
            #"xdirector_service_in_bytes_total{protocol="tcp",vip="192.0.2.10",port="80"} 6400"#,
            #"xdirector_service_out_packets_total{protocol="udp",vip="2001:db8::10",port="53"} 0"#,
            #"xdirector_real_out_bytes_total{protocol="tcp",vip="192.0.2.10",port="80",real="10.0.0.2",real_port="8080"} 5760"#,
            #"xdirector_real_connections_total{protocol="tcp",vip="192.0.2.10",port="80",real="10.0.0.3",real_port="8080"} 5"#,
            #"xdirector_real_active_connections{protocol="tcp",vip="192.0.2.10",port="80",real="10.0.0.2",real_port="8080"} 4.0"#,
            #"xdirector_real_inactive_connections{protocol="tcp",vip="192.0.2.10",port="80",real="10.0.0.2",real_port="8080"} 1.0"#,
            #"xdirector_real_persistent_connections{protocol="tcp",vip="192.0.2.10",port="80",real="10.0.0.2",real_port="8080"} 2.0"#,
            #"xdirector_real_weight{protocol="tcp",vip="192.0.2.10",port="80",real="10.0.0.2",real_port="8080"} 3.0"#,
            "# TYPE xdirector_real_weight gauge",
        ] {
            XCTAssertTrue(lines.contains(expected), "missing \(expected) in\n\(text)")
        }
        // Every sample line is `name{labels} value` or `name value`.
        for line in lines where !line.hasPrefix("#") {
            XCTAssertNotNil(line.range(of: #"^[a-z0-9_]+(\{[^}]*\})? [0-9.e+]+$"#, options: .regularExpression), line)
        }
    }

    func testRemovedRealServerDisappears() throws {
        let services = LockedServices(try Self.services())
        let exporter = MetricsExporter { (Self.statistics(), services.value) }
        XCTAssertTrue(exporter.render().contains(#"real="10.0.0.3""#))
        services.value = try Self.services(withSecondReal: false)
        let text = exporter.render()
        XCTAssertFalse(text.contains(#"real="10.0.0.3""#), text)
        XCTAssertTrue(text.contains(#"real="10.0.0.2""#))
    }

    func testParseAddress() throws {
        XCTAssertTrue(try MetricsServer.parseAddress("127.0.0.1:9100") == ("127.0.0.1", 9100))
        XCTAssertTrue(try MetricsServer.parseAddress("[::1]:9100") == ("::1", 9100))
        XCTAssertTrue(try MetricsServer.parseAddress("[2001:db8::1]:0") == ("2001:db8::1", 0))
        XCTAssertTrue(try MetricsServer.parseAddress("localhost:80") == ("localhost", 80))
        XCTAssertTrue(try MetricsServer.parseAddress(":9100") == ("", 9100))
        for bad in ["127.0.0.1", "127.0.0.1:", "127.0.0.1:65536", "127.0.0.1:-1", "::1:9100", "[::1]9100", "[::1]",
                    "[10.0.0.1]:80", "host:+80", "host:８０"] {
            XCTAssertThrowsError(try MetricsServer.parseAddress(bad), bad)
        }
    }

    func testServerAnswersGETAndNotFound() throws {
        let exporter = MetricsExporter { (Self.statistics(), []) }
        let server = try MetricsServer(host: "127.0.0.1", port: 0, exporter: exporter)
        XCTAssertNotEqual(server.boundPort, 0)
        try server.start()
        defer { server.stop() }

        let metrics = try httpExchange(port: server.boundPort, request: "GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n")
        XCTAssertTrue(metrics.hasPrefix("HTTP/1.1 200 OK\r\n"), metrics)
        XCTAssertTrue(metrics.contains("\r\nContent-Type: text/plain; version=0.0.4"), metrics)
        XCTAssertTrue(metrics.contains("\r\nConnection: close\r\n"))
        let parts = metrics.components(separatedBy: "\r\n\r\n")
        XCTAssertEqual(parts.count, 2)
        XCTAssertTrue(parts[1].contains(#"xdirector_worker_rx_packets_total{queue="0",core="1"} 1234"#), parts[1])
        XCTAssertTrue(parts[0].contains("Content-Length: \(parts[1].utf8.count)\r\n"), parts[0])

        let other = try httpExchange(port: server.boundPort, request: "GET /other HTTP/1.1\r\n\r\n")
        XCTAssertTrue(other.hasPrefix("HTTP/1.1 404 Not Found\r\n"), other)
        let post = try httpExchange(port: server.boundPort, request: "POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
        XCTAssertTrue(post.hasPrefix("HTTP/1.1 405 "), post)
        let garbage = try httpExchange(port: server.boundPort, request: "hello\r\n\r\n")
        XCTAssertTrue(garbage.hasPrefix("HTTP/1.1 400 "), garbage)
        let huge = try httpExchange(port: server.boundPort,
                                    request: "GET /metrics HTTP/1.1\r\nX: " + String(repeating: "a", count: 20000) + "\r\n\r\n")
        XCTAssertTrue(huge.hasPrefix("HTTP/1.1 431 "), huge)
    }

    func testSilentClientDoesNotBlockTheNextOne() throws {
        let server = try MetricsServer(host: "::1", port: 0, exporter: MetricsExporter { (Self.statistics(), []) })
        try server.start()
        defer { server.stop() }
        // Connects and says nothing: the server gives up on it after its request timeout.
        let silent = try connect(port: server.boundPort, family: AF_INET6)
        defer { close(silent) }
        let start = ContinuousClock.now
        let answer = try httpExchange(port: server.boundPort, request: "GET /metrics HTTP/1.0\r\n\r\n", family: AF_INET6)
        XCTAssertTrue(answer.hasPrefix("HTTP/1.1 200 OK"), answer)
        XCTAssertLessThan(ContinuousClock.now - start, .seconds(4))
    }

    /// 200 connections that never send, and one sending a byte every 100 ms: a scrape still answers at once.
    func testManyIdleClientsDelayNoScrape() throws {
        let server = try MetricsServer(host: "127.0.0.1", port: 0, exporter: MetricsExporter { (Self.statistics(), []) })
        try server.start()
        defer { server.stop() }
        let idle = try (0..<200).map { _ in try connect(port: server.boundPort) }
        defer { for fd in idle { close(fd) } }
        let dripping = try connect(port: server.boundPort)
        defer { close(dripping) }
        for byte in "GET /met".utf8 {
            _ = withUnsafePointer(to: byte) { send(dripping, $0, 1, Int32(MSG_NOSIGNAL)) }
            let start = ContinuousClock.now
            let answer = try httpExchange(port: server.boundPort, request: "GET /metrics HTTP/1.1\r\n\r\n")
            XCTAssertTrue(answer.hasPrefix("HTTP/1.1 200 OK"), answer)
            XCTAssertLessThan(ContinuousClock.now - start, .seconds(1))
            usleep(100_000)
        }
    }

    func testStopEndsTheThread() throws {
        let server = try MetricsServer(host: "127.0.0.1", port: 0, exporter: MetricsExporter { (Self.statistics(), []) })
        try server.start()
        let start = ContinuousClock.now
        server.stop()
        XCTAssertLessThan(ContinuousClock.now - start, .seconds(2))
        XCTAssertThrowsError(try MetricsServer(host: "192.0.2.1", port: 0, exporter: MetricsExporter { (Self.statistics(), []) }),
                             "an address that is not ours cannot be bound")
    }

    // MARK: A minimal client over a real socket, every wait bounded.

    func connect(port: UInt16, family: Int32 = AF_INET) throws -> Int32 {
        let fd = socket(family, Int32(SOCK_STREAM.rawValue), 0)
        XCTAssertGreaterThanOrEqual(fd, 0)
        var timeout = timeval(tv_sec: 5, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        let result: Int32
        if family == AF_INET6 {
            var address = sockaddr_in6()
            address.sin6_family = sa_family_t(AF_INET6)
            address.sin6_port = port.bigEndian
            address.sin6_addr = in6addr_loopback
            result = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in6>.size)) }
            }
        } else {
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_port = port.bigEndian
            address.sin_addr.s_addr = UInt32(0x7f00_0001).bigEndian
            result = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
        }
        guard result == 0 else {
            close(fd)
            throw NSError(domain: "connect", code: Int(errno))
        }
        return fd
    }

    /// Sends a request and reads until the server closes (it always does), within the 5 s socket timeouts.
    func httpExchange(port: UInt16, request: String, family: Int32 = AF_INET) throws -> String {
        let fd = try connect(port: port, family: family)
        defer { close(fd) }
        let bytes = Array(request.utf8)
        var offset = 0
        while offset < bytes.count {
            let sent = bytes.withUnsafeBytes { send(fd, $0.baseAddress! + offset, $0.count - offset, Int32(MSG_NOSIGNAL)) }
            // The server may answer (431) and close before reading everything.
            guard sent > 0 else { break }
            offset += sent
        }
        var response: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        for _ in 0..<10_000 {
            let count = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            guard count > 0 else { break }
            response += chunk[..<count]
        }
        return String(decoding: response, as: UTF8.self)
    }
}

/// The provider's services, changed by the test between scrapes.
final class LockedServices: @unchecked Sendable {
    private let lock = NSLock()
    private var services: [ServiceListing]

    init(_ services: [ServiceListing]) { self.services = services }

    var value: [ServiceListing] {
        get { lock.withLock { services } }
        set { lock.withLock { services = newValue } }
    }
}
