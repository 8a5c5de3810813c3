import Foundation
import NIOCore
import NIOPosix
import Synchronization

/// Why the metrics endpoint cannot listen.
public struct MetricsServerError: Error, CustomStringConvertible {
    public let description: String

    init(_ message: String, errno code: Int32? = nil) {
        description = code.map { "\(message): \(String(cString: strerror($0)))" } ?? message
    }
}

/// `run --metrics HOST:PORT`: serves `GET /metrics` over HTTP/1.1 on a swift-nio event loop thread of its
/// own, every connection closed after its answer. Each connection has its own deadline and size bound for
/// its request, and the loop never waits for one client: a slow, idle or hostile client (or hundreds of
/// them) delays no scrape. The answer is the control loop's latest reading, rendered on the event loop.
public final class MetricsServer: @unchecked Sendable {
    /// The bound port (the kernel's choice when asked for port 0).
    public private(set) var boundPort: UInt16

    static let maximumRequestBytes = 8192
    static let requestTimeoutMilliseconds: Int64 = 2000
    /// How long an answered connection may keep sending before it is closed (its unread input discarded).
    static let lingerMilliseconds: Int64 = 500
    /// Connections held at once; more are closed at once.
    static let maximumConnections = 1024

    private let exporter: MetricsExporter
    /// The listening socket until `start` hands it to the event loop.
    private var listener: Int32
    private var group: MultiThreadedEventLoopGroup?
    private var channel: Channel?
    private let connections = Atomic<Int>(0)

    public init(host: String, port: UInt16, exporter: MetricsExporter) throws {
        self.exporter = exporter
        var hints = addrinfo()
        hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var found: UnsafeMutablePointer<addrinfo>?
        let status = getaddrinfo(host.isEmpty ? nil : host, String(port), &hints, &found)
        guard status == 0, let address = found else {
            throw MetricsServerError("cannot resolve \(host): \(String(cString: gai_strerror(status)))")
        }
        defer { freeaddrinfo(found) }

        let fd = socket(address.pointee.ai_family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw MetricsServerError("cannot create the metrics socket", errno: errno) }
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        guard bind(fd, address.pointee.ai_addr, address.pointee.ai_addrlen) == 0, listen(fd, 256) == 0 else {
            let code = errno
            close(fd)
            throw MetricsServerError("cannot listen on \(Self.format(host: host, port: port))", errno: code)
        }
        var bound = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let named = withUnsafeMutablePointer(to: &bound) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        guard named == 0 else {
            let code = errno
            close(fd)
            throw MetricsServerError("cannot read the metrics socket's address", errno: code)
        }
        // sin_port and sin6_port sit at the same offset, in network order.
        boundPort = withUnsafeBytes(of: &bound) { UInt16(bigEndian: $0.load(fromByteOffset: 2, as: UInt16.self)) }
        listener = fd
    }

    deinit {
        stop()
        if listener >= 0 { close(listener) }
    }

    /// Starts serving on an event loop thread of its own.
    public func start() throws {
        guard group == nil, listener >= 0 else { return }
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let exporter = exporter
        do {
            channel = try ServerBootstrap(group: group)
                .serverChannelOption(.backlog, value: 256)
                .childChannelOption(.allowRemoteHalfClosure, value: true)
                .childChannelInitializer { [weak self] channel in
                    guard let self,
                          self.connections.wrappingAdd(1, ordering: .relaxed).newValue <= Self.maximumConnections else {
                        self?.connections.wrappingSubtract(1, ordering: .relaxed)
                        return channel.close()
                    }
                    channel.closeFuture.whenComplete { [weak self] _ in self?.connections.wrappingSubtract(1, ordering: .relaxed) }
                    do {
                        try channel.pipeline.syncOperations.addHandler(MetricsConnectionHandler(render: { exporter.render() }))
                        return channel.eventLoop.makeSucceededVoidFuture()
                    } catch {
                        return channel.eventLoop.makeFailedFuture(error)
                    }
                }
                .withBoundSocket(listener).wait()
        } catch {
            try? group.syncShutdownGracefully()
            throw MetricsServerError("cannot serve the metrics: \(error)")
        }
        // The event loop owns the descriptor now and closes it.
        listener = -1
        self.group = group
    }

    /// Stops accepting, closes every connection and ends the event loop's thread.
    public func stop() {
        try? channel?.close().wait()
        channel = nil
        try? group?.syncShutdownGracefully()
        group = nil
    }

    // MARK: Reading the request

    /// Where the head ends (before "\r\n\r\n", or "\n\n" from lenient clients).
    static func headEnd(_ bytes: [UInt8]) -> Int? {
        var index = 0
        while index + 1 < bytes.count {
            if bytes[index] == 0x0A {
                if bytes[index + 1] == 0x0A { return index }
                if bytes[index + 1] == 0x0D, index + 2 < bytes.count, bytes[index + 2] == 0x0A { return index }
            }
            index += 1
        }
        return nil
    }

    // MARK: Answering

    /// The whole response to a request head: the metrics for `GET /metrics` (a query string is ignored),
    /// headers alone for `HEAD`, 404 for another path, 405 for another method.
    static func respond(to head: String, metrics: () -> String) -> [UInt8] {
        // Split on bytes: as a Character, "\r\n" is one grapheme and matches neither "\r" nor "\n".
        let firstLine = head.utf8.split(separator: UInt8(ascii: "\n"), maxSplits: 1).first ?? []
        let requestLine = String(decoding: firstLine, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        let parts = requestLine.split(separator: " ")
        guard parts.count == 3, parts[2].hasPrefix("HTTP/1.") else {
            return response(status: "400 Bad Request", body: "bad request\n")
        }
        let method = parts[0]
        let path = parts[1].split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
        guard method == "GET" || method == "HEAD" else {
            return response(status: "405 Method Not Allowed", body: "method not allowed\n", extraHeaders: ["Allow: GET, HEAD"])
        }
        guard path == "/metrics" else {
            return response(status: "404 Not Found", body: "not found; the metrics are at /metrics\n", headOnly: method == "HEAD")
        }
        return response(status: "200 OK", body: metrics(), contentType: "text/plain; version=0.0.4; charset=utf-8",
                        headOnly: method == "HEAD")
    }

    static func response(status: String, body: String, contentType: String = "text/plain; charset=utf-8",
                         extraHeaders: [String] = [], headOnly: Bool = false) -> [UInt8] {
        let bodyBytes = Array(body.utf8)
        let headers = ["HTTP/1.1 \(status)", "Content-Type: \(contentType)", "Content-Length: \(bodyBytes.count)",
                       "Connection: close"] + extraHeaders
        return Array((headers.joined(separator: "\r\n") + "\r\n\r\n").utf8) + (headOnly ? [] : bodyBytes)
    }

    // MARK: Addresses

    /// `HOST:PORT`, `[IPV6]:PORT`, or `:PORT` (every address).
    public static func parseAddress(_ text: String) throws -> (String, UInt16) {
        let host: Substring
        let portText: Substring
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]"), text[close...].hasPrefix("]:") else {
                throw MetricsServerError("\(text): expected [IPV6]:PORT")
            }
            host = text[text.index(after: text.startIndex)..<close]
            portText = text[text.index(close, offsetBy: 2)...]
            guard host.contains(":") else { throw MetricsServerError("\(text): brackets are for IPv6 addresses") }
        } else {
            guard let colon = text.lastIndex(of: ":") else { throw MetricsServerError("\(text): expected HOST:PORT") }
            host = text[..<colon]
            portText = text[text.index(after: colon)...]
            guard !host.contains(":") else { throw MetricsServerError("\(text): write an IPv6 address as [ADDRESS]:PORT") }
        }
        guard !portText.isEmpty, portText.allSatisfy(\.isASCII), portText.allSatisfy(\.isNumber), let port = UInt16(portText) else {
            throw MetricsServerError("\(text): the port must be a number from 0 to 65535")
        }
        return (String(host), port)
    }

    static func format(host: String, port: UInt16) -> String {
        host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
    }
}

/// One metrics connection on the event loop: gathers the request head within `maximumRequestBytes` and one
/// deadline from the connection (a client sending a byte at a time cannot stretch it), answers, shuts its
/// write side, and closes once the client has closed too or `lingerMilliseconds` later: closing with unread
/// input (a request cut short by the size bound) would reset the connection and could discard the answer.
final class MetricsConnectionHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let render: () -> String
    private var received: [UInt8] = []
    private var answered = false
    private var written = false
    private var inputClosed = false
    private var timer: Scheduled<Void>?

    init(render: @escaping () -> String) { self.render = render }

    func handlerAdded(context: ChannelHandlerContext) {
        let channel = context.channel
        // No complete head in time: nothing worth answering.
        timer = context.eventLoop.scheduleTask(in: .milliseconds(MetricsServer.requestTimeoutMilliseconds)) {
            channel.close(promise: nil)
        }
    }

    func handlerRemoved(context: ChannelHandlerContext) { timer?.cancel() }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !answered else { return }  // unread input after the answer: discarded
        let chunk = unwrapInboundIn(data)
        received += chunk.readableBytesView.prefix(MetricsServer.maximumRequestBytes - received.count)
        if let end = MetricsServer.headEnd(received) {
            let head = String(decoding: received[..<end], as: UTF8.self)
            answer(context, MetricsServer.respond(to: head, metrics: render))
        } else if received.count >= MetricsServer.maximumRequestBytes {
            answer(context, MetricsServer.response(status: "431 Request Header Fields Too Large", body: "request too large\n"))
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, event == .inputClosed {
            // The client is done: before an answer there is nothing to answer; once the answer is out,
            // nothing to wait for; while it is on its way, it closes when written.
            inputClosed = true
            if !answered || written { context.close(promise: nil) }
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        context.close(promise: nil)
    }

    private func answer(_ context: ChannelHandlerContext, _ response: [UInt8]) {
        answered = true
        received = []
        timer?.cancel()
        let channel = context.channel
        timer = context.eventLoop.scheduleTask(in: .milliseconds(MetricsServer.requestTimeoutMilliseconds + MetricsServer.lingerMilliseconds)) {
            channel.close(promise: nil)
        }
        var buffer = context.channel.allocator.buffer(capacity: response.count)
        buffer.writeBytes(response)
        let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
        context.writeAndFlush(wrapOutboundOut(buffer)).whenComplete { result in
            let handler = bound.value
            handler.written = true
            guard case .success = result, !handler.inputClosed else { return channel.close(promise: nil) }
            channel.close(mode: .output, promise: nil)
        }
    }
}
