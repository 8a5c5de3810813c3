import Control
import Foundation
import Keepalived
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import Packet
import Subprocess
import Synchronization

// The checks themselves, on a swift-nio event loop: TCP connect, HTTP/HTTPS GET, UDP datagram, DNS query,
// and a script through swift-subprocess. Every check is bounded by its timeout (`connect_timeout`, or
// `misc_timeout` for scripts): a scheduled task on the loop ends it, so a black-holed server never holds up
// any other check, and hundreds run at once on one thread.

/// Runs checks; results arrive on the event loop through the future each `run` returns.
public final class CheckRunner: Sendable {
    let group: any EventLoopGroup
    let tls: NIOSSLContext?

    public init(group: any EventLoopGroup) {
        self.group = group
        var configuration = TLSConfiguration.makeClientConfiguration()
        // As keepalived's SSL_GET: the certificate is not verified; the check is about the service answering.
        configuration.certificateVerification = .none
        tls = try? NIOSSLContext(configuration: configuration)
    }

    /// Runs `definition` against the real server at `endpoint`.
    public func run(_ definition: CheckerDefinition, endpoint: L4Endpoint) -> EventLoopFuture<CheckResult> {
        let loop = group.next()
        let target = definition.target(for: endpoint)
        let outcome = CheckOutcome(loop: loop)
        switch definition.kind {
        case .misc(let misc):
            outcome.startTimer(misc.timeout ?? definition.delayLoop, reason: "timed out")
            Self.runScript(misc, outcome: outcome)
            return outcome.future
        default:
            break
        }
        outcome.startTimer(definition.connectTimeout, reason: "timed out after \(Self.seconds(definition.connectTimeout))")
        let remote: SocketAddress
        let local: SocketAddress?
        do {
            remote = try SocketAddress(ipAddress: target.address.description, port: Int(target.port))
            local = try definition.bindTo.map { try SocketAddress(ipAddress: $0.description, port: Int(definition.bindPort ?? 0)) }
                ?? definition.bindPort.map { try SocketAddress(ipAddress: target.address.family == .ipv4 ? "0.0.0.0" : "::", port: Int($0)) }
        } catch {
            outcome.finish(false, "invalid address: \(error)")
            return outcome.future
        }
        switch definition.kind {
        case .tcp:
            connectTCP(loop, remote: remote, local: local, timeout: definition.connectTimeout, outcome: outcome) { _ in }
                .whenSuccess { channel in outcome.finish(true, "connected") }
        case .http(let http):
            checkURLs(http, urls: http.urls[...], loop: loop, remote: remote, local: local, target: target,
                      timeout: definition.connectTimeout, outcome: outcome)
        case .udp(let udp):
            sendDatagram(udp.payload, loop: loop, remote: remote, local: local, target: target, outcome: outcome) { reply in
                guard udp.requireReply else { return (true, "no error") }
                guard let reply else { return nil }
                guard reply.count >= udp.minReplyLength && reply.count <= udp.maxReplyLength else {
                    return (false, "reply of \(reply.count) bytes")
                }
                if let expected = udp.expectedReply, !reply.starts(with: expected) { return (false, "unexpected reply") }
                return (true, "replied")
            }
        case .dns(let dns):
            let id = UInt16.random(in: 0...UInt16.max)
            sendDatagram(DNSQuery.make(id: id, name: dns.name, type: DNSCheck.types[dns.type] ?? 6), loop: loop, remote: remote,
                         local: local, target: target, outcome: outcome) { reply in
                guard let reply else { return nil }
                return DNSQuery.judge(reply, id: id)
            }
        case .misc:
            break
        }
        return outcome.future
    }

    static func seconds(_ value: Double) -> String {
        value == value.rounded() ? "\(Int(value)) s" : "\(value) s"
    }

    private func connectTCP(_ loop: any EventLoop, remote: SocketAddress, local: SocketAddress?, timeout: Double,
                            outcome: CheckOutcome, tls: (host: String?, on: Bool) = (nil, false),
                            pipeline: @escaping @Sendable (Channel) throws -> Void) -> EventLoopFuture<Channel> {
        var bootstrap = ClientBootstrap(group: loop)
            .connectTimeout(.milliseconds(Int64(max(timeout, 0.001) * 1000)))
            .channelOption(.socketOption(.so_reuseaddr), value: 1)
        let context = self.tls
        bootstrap = bootstrap.channelInitializer { channel in
            do {
                if tls.on {
                    guard let context else { throw CheckError("no TLS context") }
                    try channel.pipeline.syncOperations.addHandler(try NIOSSLClientHandler(context: context, serverHostname: tls.host))
                }
                try pipeline(channel)
                return channel.eventLoop.makeSucceededVoidFuture()
            } catch {
                return channel.eventLoop.makeFailedFuture(error)
            }
        }
        if let local { bootstrap = bootstrap.bind(to: local) }
        let future = bootstrap.connect(to: remote)
        future.whenComplete { result in
            switch result {
            case .success(let channel): outcome.adopt(channel)
            case .failure(let error): outcome.finish(false, Self.describe(error))
            }
        }
        return future
    }

    /// Each url on its own connection, one after the other, as keepalived does; all must pass.
    private func checkURLs(_ http: HTTPCheck, urls: ArraySlice<HTTPCheck.URL>, loop: any EventLoop, remote: SocketAddress,
                           local: SocketAddress?, target: L4Endpoint, timeout: Double, outcome: CheckOutcome) {
        guard let url = urls.first else { return outcome.finish(true, "all \(http.urls.count) url\(http.urls.count == 1 ? "" : "s") answered") }
        let host = url.virtualhost ?? http.virtualhost
        let sni = http.sniName.flatMap { $0.isEmpty ? host : $0 }.flatMap { IPAddress($0) == nil ? $0 : nil }
        let keepAlive = http.httpProtocol == "1.1" || http.httpProtocol == "1.0K"
        var head = HTTPRequestHead(version: http.httpProtocol == "1.1" ? .http1_1 : .http1_0, method: .GET, uri: url.path)
        head.headers.add(name: "Host", value: host ?? (target.address.family == .ipv6 ? "[\(target.address)]:\(target.port)" : "\(target.address):\(target.port)"))
        head.headers.add(name: "User-Agent", value: "XDirector/HealthCheck")
        head.headers.add(name: "Connection", value: keepAlive ? "keep-alive" : "close")
        let response = loop.makePromise(of: HTTPAnswer.self)
        let request = head
        connectTCP(loop, remote: remote, local: local, timeout: timeout, outcome: outcome, tls: (sni, http.tls)) { channel in
            try channel.pipeline.syncOperations.addHTTPClientHandlers()
            try channel.pipeline.syncOperations.addHandler(HTTPCheckHandler(request: request, response: response))
        }.whenSuccess { _ in }
        response.futureResult.whenComplete { result in
            switch result {
            case .failure(let error):
                outcome.finish(false, Self.describe(error))
            case .success(let answer):
                let (status, digest) = (answer.status, answer.digest)
                outcome.closeChannel()
                guard url.accepts(status: status) else { return outcome.finish(false, "HTTP status \(status) for \(url.path)") }
                if let expected = url.digest, expected != digest {
                    return outcome.finish(false, "digest \(digest) for \(url.path), expected \(expected)")
                }
                self.checkURLs(http, urls: urls.dropFirst(), loop: loop, remote: remote, local: local, target: target,
                               timeout: timeout, outcome: outcome)
            }
        }
    }

    /// Sends one datagram from a connected socket (so an ICMP port unreachable comes back as an error);
    /// `judge` sees the reply, or nil when the timeout passes without one (nil again: a failure).
    private func sendDatagram(_ payload: [UInt8], loop: any EventLoop, remote: SocketAddress, local: SocketAddress?,
                              target: L4Endpoint, outcome: CheckOutcome,
                              judge: @escaping @Sendable ([UInt8]?) -> (Bool, String)?) {
        let any = target.address.family == .ipv4 ? "0.0.0.0" : "::"
        let bind = local ?? (try? SocketAddress(ipAddress: any, port: 0))
        guard let bind else { return outcome.finish(false, "no local address") }
        outcome.onTimeout = { judge(nil) }
        DatagramBootstrap(group: loop)
            .channelInitializer { channel in
                do {
                    try channel.pipeline.syncOperations.addHandler(DatagramCheckHandler(outcome: outcome, judge: judge))
                    return channel.eventLoop.makeSucceededVoidFuture()
                } catch {
                    return channel.eventLoop.makeFailedFuture(error)
                }
            }
            .bind(to: bind)
            .flatMap { channel in
                outcome.adopt(channel)
                return channel.connect(to: remote).flatMap {
                    var buffer = channel.allocator.buffer(capacity: payload.count)
                    buffer.writeBytes(payload)
                    return channel.writeAndFlush(AddressedEnvelope(remoteAddress: remote, data: buffer))
                }
            }
            .whenFailure { error in outcome.finish(false, Self.describe(error)) }
    }

    /// `/bin/sh -c misc_path`, as keepalived runs it: 0 up, 1 down; with misc_dynamic 2–255 up with weight
    /// status − 2. Killed at its timeout.
    private static func runScript(_ misc: MiscCheck, outcome: CheckOutcome) {
        Task {
            do {
                let result = try await Subprocess.run(.path("/bin/sh"), arguments: ["-c", misc.path], input: .none,
                                                      output: .discarded, error: .discarded) { execution in
                    outcome.onTimeout = {
                        // Decided before the kill: the script's end, which the kill brings, must not report first.
                        outcome.finish(false, "timed out")
                        try? execution.send(signal: .kill, toProcessGroup: false)
                        return (false, "timed out")
                    }
                }
                switch result.terminationStatus {
                case .exited(0): outcome.finish(true, "exited with status 0")
                case .exited(let code) where misc.dynamic && code >= 2 && code <= 255:
                    outcome.finish(true, "exited with status \(code)", weight: Int32(code) - 2)
                case .exited(let code): outcome.finish(false, "exited with status \(code)")
                case .signaled(let signal): outcome.finish(false, "killed by signal \(signal)")
                }
            } catch {
                outcome.finish(false, "cannot run: \(error)")
            }
        }
    }

    static func describe(_ error: any Error) -> String {
        if let error = error as? NIOConnectionError, let first = error.connectionErrors.first {
            return describe(first.error)
        }
        if let error = error as? IOError { return Self.errnoName(error.errnoCode) }
        if let error = error as? ChannelError {
            switch error {
            case .connectTimeout: return "connect timed out"
            case .eof, .ioOnClosedChannel, .alreadyClosed: return "connection closed"
            default: return "\(error)"
            }
        }
        if let error = error as? CheckError { return error.message }
        if let error = error as? NIOSSLError { return "TLS: \(error)" }
        return "\(error)"
    }

    static func errnoName(_ code: Int32) -> String {
        switch code {
        case ECONNREFUSED: return "connection refused"
        case EHOSTUNREACH: return "no route to host"
        case ENETUNREACH: return "network unreachable"
        case ETIMEDOUT: return "timed out"
        case ECONNRESET: return "connection reset"
        default: return String(cString: strerror(code))
        }
    }
}

struct HTTPAnswer: Sendable {
    var status: Int
    var digest: String
}

struct CheckError: Error {
    var message: String
    init(_ message: String) { self.message = message }
}

/// One check's result, given once: by the check, its timeout, or a failure, whichever comes first; the
/// channel is closed and the timer cancelled then.
final class CheckOutcome: @unchecked Sendable {
    private let promise: EventLoopPromise<CheckResult>
    private let loop: any EventLoop
    private let start = NIODeadline.now()
    private struct State {
        var done = false
        var channel: Channel?
        var timer: Scheduled<Void>?
        var onTimeout: (@Sendable () -> (Bool, String)?)?
    }
    private let state = Mutex(State())

    init(loop: any EventLoop) {
        self.loop = loop
        promise = loop.makePromise(of: CheckResult.self)
    }

    var future: EventLoopFuture<CheckResult> { promise.futureResult }

    /// What the timeout means (e.g. a UDP check without require_reply: no ICMP error is a success).
    var onTimeout: (@Sendable () -> (Bool, String)?)? {
        get { state.withLock { $0.onTimeout } }
        set { state.withLock { $0.onTimeout = newValue } }
    }

    func startTimer(_ seconds: Double, reason: String) {
        let timer = loop.scheduleTask(in: .nanoseconds(Int64(max(seconds, 0.001) * 1e9))) { [self] in
            let verdict = onTimeout?()
            finish(verdict?.0 ?? false, verdict?.1 ?? reason)
        }
        state.withLock { $0.timer = timer }
    }

    func adopt(_ channel: Channel) {
        let done = state.withLock { state -> Bool in
            if !state.done { state.channel = channel }
            return state.done
        }
        if done { channel.close(promise: nil) }
    }

    func closeChannel() {
        let channel = state.withLock { state -> Channel? in
            defer { state.channel = nil }
            return state.channel
        }
        channel?.close(promise: nil)
    }

    func finish(_ success: Bool, _ reason: String, weight: Int32? = nil) {
        let taken = state.withLock { state -> (Channel?, Scheduled<Void>?)? in
            guard !state.done else { return nil }
            state.done = true
            defer { state.channel = nil; state.timer = nil; state.onTimeout = nil }
            return (state.channel, state.timer)
        }
        guard let (channel, timer) = taken else { return }
        timer?.cancel()
        channel?.close(promise: nil)
        let latency = Double((NIODeadline.now() - start).nanoseconds) / 1e9
        promise.succeed(CheckResult(success: success, reason: reason, latency: latency, weight: weight))
    }
}

/// Sends the request once the connection is up and collects the status and the body's MD5.
final class HTTPCheckHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundOut = HTTPClientRequestPart

    private let request: HTTPRequestHead
    private let response: EventLoopPromise<HTTPAnswer>
    private var status: Int?
    private var md5 = MD5()
    private var completed = false

    init(request: HTTPRequestHead, response: EventLoopPromise<HTTPAnswer>) {
        self.request = request
        self.response = response
    }

    func channelActive(context: ChannelHandlerContext) {
        context.write(wrapOutboundOut(.head(request)), promise: nil)
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head): status = Int(head.status.code)
        case .body(let buffer): md5.update(buffer.readableBytesView)
        case .end:
            complete(status.map { .success(HTTPAnswer(status: $0, digest: md5.finish())) } ?? .failure(CheckError("no HTTP response")))
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        complete(.failure(CheckError(status == nil ? "connection closed before a response" : "connection closed mid-response")))
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        complete(.failure(error))
        context.close(promise: nil)
    }

    private func complete(_ result: Result<HTTPAnswer, any Error>) {
        guard !completed else { return }
        completed = true
        response.completeWith(result)
    }
}

/// Takes a UDP or DNS check's reply, or its ICMP error.
final class DatagramCheckHandler: ChannelInboundHandler {
    typealias InboundIn = AddressedEnvelope<ByteBuffer>

    private let outcome: CheckOutcome
    private let judge: @Sendable ([UInt8]?) -> (Bool, String)?

    init(outcome: CheckOutcome, judge: @escaping @Sendable ([UInt8]?) -> (Bool, String)?) {
        self.outcome = outcome
        self.judge = judge
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let envelope = unwrapInboundIn(data)
        guard let (success, reason) = judge(Array(envelope.data.readableBytesView)) else { return }
        outcome.finish(success, reason)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        let reason = CheckRunner.describe(error)
        outcome.finish(false, reason == "connection refused" ? "port unreachable" : reason)
    }
}

/// A DNS query and the judgement of its answer (DNS_CHECK: the same id, a response, NOERROR, an answer).
enum DNSQuery {
    static func make(id: UInt16, name: String, type: UInt16) -> [UInt8] {
        var bytes: [UInt8] = [UInt8(id >> 8), UInt8(id & 0xff), 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]
        for label in name.split(separator: ".") where !label.isEmpty {
            let utf8 = Array(label.utf8.prefix(63))
            bytes.append(UInt8(utf8.count))
            bytes += utf8
        }
        bytes += [0, UInt8(type >> 8), UInt8(type & 0xff), 0, 1]
        return bytes
    }

    /// nil: not the reply to this query (ignored).
    static func judge(_ reply: [UInt8], id: UInt16) -> (Bool, String)? {
        guard reply.count >= 12, UInt16(reply[0]) << 8 | UInt16(reply[1]) == id, reply[2] & 0x80 != 0 else { return nil }
        let rcode = reply[3] & 0x0f
        guard rcode == 0 else { return (false, "DNS rcode \(rcode)") }
        let answers = UInt16(reply[6]) << 8 | UInt16(reply[7])
        return answers > 0 ? (true, "\(answers) answer\(answers == 1 ? "" : "s")") : (false, "no answer")
    }
}
