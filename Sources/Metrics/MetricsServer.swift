import Foundation
import Synchronization

/// Why the metrics endpoint cannot listen.
public struct MetricsServerError: Error, CustomStringConvertible {
    public let description: String

    init(_ message: String, errno code: Int32? = nil) {
        description = code.map { "\(message): \(String(cString: strerror($0)))" } ?? message
    }
}

/// `run --metrics HOST:PORT`: serves `GET /metrics` over HTTP/1.1 on a thread of its own, one connection at a
/// time, every connection closed after its answer. Scrapes are rare and small, so a blocking loop is enough;
/// what keeps a slow or hostile client from holding it is the bound on the request's size and on the time
/// to receive it.
public final class MetricsServer: @unchecked Sendable {
    /// The bound port (the kernel's choice when asked for port 0).
    public private(set) var boundPort: UInt16

    static let maximumRequestBytes = 8192
    static let requestTimeoutMilliseconds: Int32 = 2000
    /// How often the loop looks at `stopRequested` while no one connects.
    static let acceptPollMilliseconds: Int32 = 200

    private let exporter: MetricsExporter
    private let listener: Int32
    private let stopRequested = Atomic<Bool>(false)
    private var thread: pthread_t?

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
        guard bind(fd, address.pointee.ai_addr, address.pointee.ai_addrlen) == 0, listen(fd, 16) == 0 else {
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
        close(listener)
    }

    /// Starts serving on a thread of its own.
    public func start() throws {
        guard thread == nil else { return }
        stopRequested.store(false, ordering: .relaxed)
        var handle = pthread_t()
        let context = Unmanaged.passRetained(self).toOpaque()
        let result = pthread_create(&handle, nil, { context in
            let server = Unmanaged<MetricsServer>.fromOpaque(context!).takeRetainedValue()
            server.serve()
            return nil
        }, context)
        guard result == 0 else {
            Unmanaged<MetricsServer>.fromOpaque(context).release()
            throw MetricsServerError("cannot start the metrics thread", errno: result)
        }
        thread = handle
    }

    /// Asks the loop to end and waits for it: at most one accept poll, or one request's timeout.
    public func stop() {
        stopRequested.store(true, ordering: .relaxed)
        if let thread { pthread_join(thread, nil) }
        thread = nil
    }

    private func serve() {
        while !stopRequested.load(ordering: .relaxed) {
            var waiting = pollfd(fd: listener, events: Int16(POLLIN), revents: 0)
            guard poll(&waiting, 1, Self.acceptPollMilliseconds) > 0 else { continue }
            let client = accept(listener, nil, nil)
            guard client >= 0 else {
                // Out of descriptors (EMFILE) leaves the listener readable: pause rather than spin.
                if errno != EINTR && errno != EAGAIN && errno != ECONNABORTED { usleep(50_000) }
                continue
            }
            _ = fcntl(client, F_SETFD, FD_CLOEXEC)
            answer(client)
            Self.closeGracefully(client)
        }
    }

    private func answer(_ client: Int32) {
        var timeout = timeval(tv_sec: Int(Self.requestTimeoutMilliseconds / 1000), tv_usec: 0)
        setsockopt(client, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        let response: [UInt8]
        switch Self.readRequestHead(client) {
        case .complete(let head):
            response = Self.respond(to: head, metrics: { self.exporter.render() })
        case .tooLarge:
            response = Self.response(status: "431 Request Header Fields Too Large", body: "request too large\n")
        case .incomplete:
            return  // timed out or closed: nothing worth answering
        }
        Self.writeAll(client, response)
    }

    /// Closes after the client has seen the answer: closing with unread input (a request cut short by the
    /// size bound) would reset the connection and could discard the answer in flight. Bounded in time and bytes.
    static func closeGracefully(_ fd: Int32) {
        shutdown(fd, Int32(SHUT_WR))
        var discard = [UInt8](repeating: 0, count: 4096)
        let deadline = ContinuousClock.now + .milliseconds(500)
        for _ in 0..<64 {
            var waiting = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard ContinuousClock.now < deadline, poll(&waiting, 1, 100) > 0 else { break }
            let count = discard.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            guard count > 0 else { break }
        }
        close(fd)
    }

    // MARK: Reading the request

    enum RequestHead: Equatable {
        case complete(String)
        case tooLarge
        case incomplete
    }

    /// Reads until the blank line that ends the head, within `maximumRequestBytes` and one overall deadline
    /// (a client sending a byte at a time cannot stretch it).
    static func readRequestHead(_ fd: Int32) -> RequestHead {
        var received: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 2048)
        let deadline = ContinuousClock.now + .milliseconds(Int(requestTimeoutMilliseconds))
        while received.count < maximumRequestBytes {
            let left = ContinuousClock.now.duration(to: deadline)
            guard left > .zero else { return .incomplete }
            var waiting = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let milliseconds = Int32(clamping: left.components.seconds * 1000 + left.components.attoseconds / 1_000_000_000_000_000 + 1)
            let ready = poll(&waiting, 1, milliseconds)
            if ready < 0 && errno == EINTR { continue }
            guard ready > 0 else { return .incomplete }
            let count = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, min($0.count, maximumRequestBytes - received.count), 0) }
            if count < 0 && errno == EINTR { continue }
            guard count > 0 else { return .incomplete }
            received += chunk[..<count]
            if let end = headEnd(received) {
                return .complete(String(decoding: received[..<end], as: UTF8.self))
            }
        }
        return .tooLarge
    }

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

    /// Writes everything, or gives up at the send timeout (`SO_SNDTIMEO`) or when the client goes away.
    static func writeAll(_ fd: Int32, _ bytes: [UInt8]) {
        var offset = 0
        while offset < bytes.count {
            let sent = bytes.withUnsafeBytes { send(fd, $0.baseAddress! + offset, $0.count - offset, Int32(MSG_NOSIGNAL)) }
            if sent < 0 && errno == EINTR { continue }
            guard sent > 0 else { return }
            offset += sent
        }
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
