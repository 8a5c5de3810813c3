import Control
import Foundation
import Keepalived
import NIOCore
import NIOPosix
import NIOSSL
import Packet
import XCTest
@testable import Health

/// The checkers against servers on the loopback: no privileges needed.
final class CheckRunnerTests: XCTestCase {
    var group: MultiThreadedEventLoopGroup!
    var runner: CheckRunner!

    override func setUp() {
        group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        runner = CheckRunner(group: group)
    }

    override func tearDown() {
        try? group.syncShutdownGracefully()
    }

    /// A server that answers every connection with `response` and closes.
    final class CannedResponse: ChannelInboundHandler, Sendable {
        typealias InboundIn = ByteBuffer
        let response: String
        init(_ response: String) { self.response = response }
        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let buffer = context.channel.allocator.buffer(string: response)
            context.writeAndFlush(NIOAny(buffer)).whenComplete { _ in context.close(promise: nil) }
        }
    }

    func serve(_ response: String) throws -> (Channel, UInt16) {
        let channel = try ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(CannedResponse(response)) }
            }
            .bind(host: "127.0.0.1", port: 0).wait()
        return (channel, UInt16(channel.localAddress!.port!))
    }

    func endpoint(_ port: UInt16) -> L4Endpoint { L4Endpoint(address: IPAddress("127.0.0.1")!, port: port) }

    func testTCPCheckConnectsOrIsRefused() throws {
        let (server, port) = try serve("")
        let up = try runner.run(CheckerDefinition(kind: .tcp, connectTimeout: 2), endpoint: endpoint(port)).wait()
        XCTAssertEqual(up.success, true, up.reason)
        XCTAssertEqual(up.reason, "connected")
        try server.close().wait()
        let down = try runner.run(CheckerDefinition(kind: .tcp, connectTimeout: 2), endpoint: endpoint(port)).wait()
        XCTAssertEqual(down.success, false)
        XCTAssertEqual(down.reason, "connection refused")
    }

    func testHTTPGetChecksStatusAndDigest() throws {
        let (server, port) = try serve("HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\nhello")
        defer { try? server.close().wait() }
        let digest = MD5.hex(Array("hello".utf8))
        XCTAssertEqual(digest, "5d41402abc4b2a76b9719d911017c592")
        let good = HTTPCheck(urls: [HTTPCheck.URL(path: "/", digest: digest), HTTPCheck.URL(path: "/x", statusCodes: [200...200])])
        let ok = try runner.run(CheckerDefinition(kind: .http(good), connectTimeout: 2), endpoint: endpoint(port)).wait()
        XCTAssertTrue(ok.success, ok.reason)
        let wrongDigest = HTTPCheck(urls: [HTTPCheck.URL(path: "/", digest: String(repeating: "0", count: 32))])
        let bad = try runner.run(CheckerDefinition(kind: .http(wrongDigest), connectTimeout: 2), endpoint: endpoint(port)).wait()
        XCTAssertFalse(bad.success)
        XCTAssertTrue(bad.reason.hasPrefix("digest 5d41402abc4b2a76b9719d911017c592 for /"), bad.reason)
        let wrongStatus = HTTPCheck(urls: [HTTPCheck.URL(path: "/", statusCodes: [500...599])])
        let status = try runner.run(CheckerDefinition(kind: .http(wrongStatus), connectTimeout: 2), endpoint: endpoint(port)).wait()
        XCTAssertEqual(status.reason, "HTTP status 200 for /")
    }

    /// SSL_GET against a real TLS server (a certificate made for the test, not verified, as keepalived does):
    /// the status and digest are judged through TLS; a plain-text server fails the handshake.
    func testSSLGetThroughTLS() throws {
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/openssl") else { throw XCTSkip("openssl is not installed") }
        let directory = NSTemporaryDirectory() + "xd-tls-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let openssl = Process()
        openssl.executableURL = URL(fileURLWithPath: "/usr/bin/openssl")
        openssl.arguments = ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1",
                             "-subj", "/CN=rs.example", "-keyout", "\(directory)/key.pem", "-out", "\(directory)/cert.pem"]
        openssl.standardError = FileHandle.nullDevice
        try openssl.run()
        openssl.waitUntilExit()
        XCTAssertEqual(openssl.terminationStatus, 0)
        let context = try NIOSSLContext(configuration: .makeServerConfiguration(
            certificateChain: try NIOSSLCertificate.fromPEMFile("\(directory)/cert.pem").map { .certificate($0) },
            privateKey: .privateKey(try NIOSSLPrivateKey(file: "\(directory)/key.pem", format: .pem))))
        let server = try ServerBootstrap(group: group)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: context))
                    try channel.pipeline.syncOperations.addHandler(CannedResponse("HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\nhello"))
                }
            }
            .bind(host: "127.0.0.1", port: 0).wait()
        defer { try? server.close().wait() }
        let port = UInt16(server.localAddress!.port!)
        let check = HTTPCheck(tls: true, urls: [HTTPCheck.URL(path: "/", statusCodes: [200...200], digest: MD5.hex(Array("hello".utf8)))])
        let up = try runner.run(CheckerDefinition(kind: .http(check), connectTimeout: 3), endpoint: endpoint(port)).wait()
        XCTAssertTrue(up.success, up.reason)
        let wrong = HTTPCheck(tls: true, urls: [HTTPCheck.URL(path: "/", statusCodes: [404...404])])
        let down = try runner.run(CheckerDefinition(kind: .http(wrong), connectTimeout: 3), endpoint: endpoint(port)).wait()
        XCTAssertEqual(down.reason, "HTTP status 200 for /")
        let (plain, plainPort) = try serve("HTTP/1.0 200 OK\r\n\r\n")
        defer { try? plain.close().wait() }
        let handshake = try runner.run(CheckerDefinition(kind: .http(check), connectTimeout: 3), endpoint: endpoint(plainPort)).wait()
        XCTAssertFalse(handshake.success, "a server that speaks no TLS fails SSL_GET: \(handshake.reason)")
    }

    /// A server that never answers: the check ends at its timeout, and others are not held up meanwhile.
    func testSilentServerTimesOutWithoutHoldingUpOthers() throws {
        let silent = try DatagramBootstrap(group: group).bind(host: "127.0.0.1", port: 0).wait()
        defer { try? silent.close().wait() }
        let (server, port) = try serve("")
        defer { try? server.close().wait() }
        let start = Date()
        let udp = CheckerDefinition(kind: .udp(UDPCheck(payload: [1], requireReply: true)), connectTimeout: 1)
        let slow = runner.run(udp, endpoint: endpoint(UInt16(silent.localAddress!.port!)))
        let fast = try runner.run(CheckerDefinition(kind: .tcp, connectTimeout: 1), endpoint: endpoint(port)).wait()
        XCTAssertTrue(fast.success)
        XCTAssertLessThan(Date().timeIntervalSince(start), 0.5)
        let result = try slow.wait()
        XCTAssertFalse(result.success)
        XCTAssertEqual(result.reason, "timed out after 1 s")
        XCTAssertGreaterThanOrEqual(result.latency, 0.9)
    }

    func testUDPCheckWithoutReplyFailsOnPortUnreachable() throws {
        let probe = try DatagramBootstrap(group: group).bind(host: "127.0.0.1", port: 0).wait()
        let port = UInt16(probe.localAddress!.port!)
        try probe.close().wait()
        let result = try runner.run(CheckerDefinition(kind: .udp(UDPCheck(payload: [1])), connectTimeout: 1), endpoint: endpoint(port)).wait()
        XCTAssertFalse(result.success)
        XCTAssertEqual(result.reason, "port unreachable")
    }

    func testMiscCheckExitStatusesAndDynamicWeight() throws {
        func run(_ script: String, dynamic: Bool = false, timeout: Double? = nil) throws -> CheckResult {
            try runner.run(CheckerDefinition(kind: .misc(MiscCheck(path: script, timeout: timeout, dynamic: dynamic))), endpoint: endpoint(1)).wait()
        }
        XCTAssertEqual(try run("exit 0").success, true)
        XCTAssertEqual(try run("exit 1").reason, "exited with status 1")
        XCTAssertEqual(try run("exit 7").success, false, "without misc_dynamic, 7 is a failure")
        let dynamic = try run("exit 7", dynamic: true)
        XCTAssertTrue(dynamic.success)
        XCTAssertEqual(dynamic.weight, 5)
        let slow = try run("sleep 5", timeout: 0.5)
        XCTAssertFalse(slow.success)
        XCTAssertEqual(slow.reason, "timed out")
    }

    /// DNS_CHECK over the loopback against a responder that answers as a resolver does (the query echoed with
    /// QR set and one answer), and one that answers NXDOMAIN.
    func testDNSCheckAgainstAResponder() throws {
        func responder(answers: Bool) throws -> (Int32, UInt16, Thread) {
            let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_addr.s_addr = UInt32(0x7F00_0001).bigEndian
            _ = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
            var length = socklen_t(MemoryLayout<sockaddr_in>.size)
            _ = withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                getsockname(fd, $0, &length) } }
            let thread = Thread {
                var buffer = [UInt8](repeating: 0, count: 512)
                var peer = sockaddr_storage()
                var peerLength = socklen_t(MemoryLayout<sockaddr_storage>.size)
                let count = withUnsafeMutablePointer(to: &peer) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    recvfrom(fd, &buffer, buffer.count, 0, $0, &peerLength) } }
                guard count >= 12 else { return }
                var reply = Array(buffer[0..<count])
                reply[2] = 0x81
                reply[3] = answers ? 0x80 : 0x83  // NOERROR, or NXDOMAIN
                if answers {
                    reply[7] = 1  // one answer: the question's name, A, IN, TTL 60, 192.0.2.1
                    reply += [0xC0, 0x0C, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 1]
                }
                _ = withUnsafePointer(to: &peer) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    sendto(fd, reply, reply.count, 0, $0, peerLength) } }
            }
            thread.start()
            return (fd, UInt16(bigEndian: address.sin_port), thread)
        }
        for (answers, expected) in [(true, true), (false, false)] {
            let (fd, port, _) = try responder(answers: answers)
            defer { close(fd) }
            var dns = DNSCheck()
            dns.type = "A"
            dns.name = "rs.example"
            let result = try runner.run(CheckerDefinition(kind: .dns(dns), connectTimeout: 2), endpoint: endpoint(port)).wait()
            XCTAssertEqual(result.success, expected, result.reason)
            if !answers { XCTAssertEqual(result.reason, "DNS rcode 3") }
        }
    }

    func testDNSQueryAndJudgement() {
        let query = DNSQuery.make(id: 0x1234, name: "example.com", type: 1)
        XCTAssertEqual(query, [0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 7] + Array("example".utf8) + [3] + Array("com".utf8) + [0, 0, 1, 0, 1])
        var reply = query
        reply[2] |= 0x80
        XCTAssertEqual(DNSQuery.judge(reply, id: 0x1234)?.1, "no answer")
        reply[7] = 1
        XCTAssertEqual(DNSQuery.judge(reply, id: 0x1234)?.0, true)
        XCTAssertNil(DNSQuery.judge(reply, id: 0x9999))
        reply[3] = 2
        XCTAssertEqual(DNSQuery.judge(reply, id: 0x1234)?.1, "DNS rcode 2")
    }
}
