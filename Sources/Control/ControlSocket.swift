import Dataplane
import Foundation
import Glibc
import NIOCore
import NIOPosix
import Synchronization

/// The running director's Unix socket: `/run/xdirector/<interface>.sock` by default, owner root, mode 0600.
///
/// A swift-nio event loop thread of its own accepts the clients and reads their requests, each within a
/// deadline and a size bound, so no client (slow, idle, or one of many) holds up another or the control loop.
/// A complete request waits in a queue the control thread drains on each turn (`serve`): only the control
/// thread touches the director, so handlers need no locks. The answer is written back on the event loop.
public final class ControlSocket: @unchecked Sendable {
    public static let directory = "/run/xdirector"
    /// A request larger than this is refused (a restore of a few hundred thousand rules fits).
    static let maximumRequest = 64 << 20
    /// How long a client has to send its whole request (from its connection), and to take its answer.
    static let requestDeadline = TimeAmount.seconds(5)
    static let answerDeadline = TimeAmount.seconds(30)
    /// Connections held at once; more are closed at once (each costs a descriptor and its buffer).
    static let maximumConnections = 1024

    public let path: String
    private var listener: Int32 = -1
    private var group: MultiThreadedEventLoopGroup?
    private var channel: Channel?
    /// Complete requests for the control thread, each with the promise its connection answers from; once
    /// `closing`, a request is refused at once instead.
    private let pending = Mutex<(closing: Bool, queue: [(ControlRequest, EventLoopPromise<ControlResponse>)])>((false, []))
    private static let stopping = ControlResponse.failure("xdirector: the director is stopping", status: 1)
    private let connections = Atomic<Int>(0)

    /// `/run/xdirector/<instance>.sock`: the instance name is the interface's, unique per network namespace.
    public static func defaultPath(interface: String) -> String {
        "\(directory)/\(DirectorInstance.name(interface: interface)).sock"
    }

    /// Binds, listens and starts accepting on the event loop. Refuses a path where another director answers,
    /// and anything at the path that is not a socket (a file or a link is never deleted); replaces a socket
    /// nobody answers (a director that died).
    public init(path: String) throws {
        self.path = path
        var address = try ControlClient.address(path)
        let parent = (path as NSString).deletingLastPathComponent
        if !parent.isEmpty, let failure = Directories.make(parent, mode: 0o755) {
            throw ControlError("cannot create \(failure.directory) for the control socket: \(String(cString: strerror(failure.errno)))")
        }
        var existing = stat()
        if lstat(path, &existing) == 0 {
            guard existing.st_mode & S_IFMT == S_IFSOCK else {
                throw ControlError("\(path) exists and is not a socket: refusing to replace it (choose another --socket)")
            }
            if (try? ControlClient.connect(path: path)).map({ Glibc.close($0); return true }) == true {
                throw ControlError("\(path): another director is serving this socket")
            }
            unlink(path)
        }
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
        guard fd >= 0 else { throw ControlError("cannot create the control socket: \(String(cString: strerror(errno)))") }
        // Mode 0600 from the start: no moment where another user could connect.
        let previousMask = umask(0o177)
        defer { umask(previousMask) }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard bound == 0, listen(fd, 256) == 0 else {
            let reason = String(cString: strerror(errno))
            Glibc.close(fd)
            throw ControlError("cannot listen on \(path): \(reason)")
        }
        chmod(path, 0o600)
        listener = fd
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        do {
            channel = try ServerBootstrap(group: group)
                .serverChannelOption(.backlog, value: 256)
                .childChannelOption(.allowRemoteHalfClosure, value: true)
                .childChannelInitializer { [weak self] channel in
                    guard let self else { return channel.close() }
                    return self.admit(channel)
                }
                .withBoundSocket(fd).wait()
            self.group = group
        } catch {
            try? group.syncShutdownGracefully()
            Glibc.close(fd)
            listener = -1
            unlink(path)
            throw ControlError("cannot serve \(path): \(error)")
        }
    }

    deinit { close() }

    /// Sets up a new connection on the event loop, or closes it when too many are held.
    private func admit(_ channel: Channel) -> EventLoopFuture<Void> {
        guard connections.wrappingAdd(1, ordering: .relaxed).newValue <= Self.maximumConnections else {
            connections.wrappingSubtract(1, ordering: .relaxed)
            return channel.close()
        }
        channel.closeFuture.whenComplete { [weak self] _ in self?.connections.wrappingSubtract(1, ordering: .relaxed) }
        let handler = ControlConnectionHandler(limit: Self.maximumRequest, deadline: Self.requestDeadline,
                                               answerDeadline: Self.answerDeadline) { [weak self] request, promise in
            let queued = self?.pending.withLock { pending in
                if !pending.closing { pending.queue.append((request, promise)) }
                return !pending.closing
            }
            if queued != true { promise.succeed(Self.stopping) }
        }
        do {
            try channel.pipeline.syncOperations.addHandler(handler)
            return channel.eventLoop.makeSucceededVoidFuture()
        } catch {
            return channel.eventLoop.makeFailedFuture(error)
        }
    }

    /// Answers every complete request waiting now, each with `handle`, on the calling (control) thread;
    /// never waits for a client.
    public func serve(_ handle: (ControlRequest) -> ControlResponse) {
        let waiting = pending.withLock { pending in
            defer { pending.queue.removeAll() }
            return pending.queue
        }
        for (request, promise) in waiting { promise.succeed(handle(request)) }
    }

    /// Stops accepting, answers requests still waiting with a refusal, closes every connection and ends
    /// the event loop's thread; removes the socket file.
    public func close() {
        guard listener >= 0 else { return }
        listener = -1
        try? channel?.close().wait()
        channel = nil
        let waiting = pending.withLock { pending in
            pending.closing = true
            defer { pending.queue.removeAll() }
            return pending.queue
        }
        for (_, promise) in waiting { promise.succeed(Self.stopping) }
        try? group?.syncShutdownGracefully()
        group = nil
        unlink(path)
    }
}

/// One control connection on the event loop: gathers the request until the client shuts its write side,
/// within `limit` bytes and a deadline counted from the connection; hands it on, then writes the answer
/// and closes.
final class ControlConnectionHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let limit: Int
    private let deadline: TimeAmount
    private let answerDeadline: TimeAmount
    private let submit: (ControlRequest, EventLoopPromise<ControlResponse>) -> Void
    private var received: ByteBuffer?
    private var timer: Scheduled<Void>?
    private var done = false

    init(limit: Int, deadline: TimeAmount, answerDeadline: TimeAmount,
         submit: @escaping (ControlRequest, EventLoopPromise<ControlResponse>) -> Void) {
        self.limit = limit
        self.deadline = deadline
        self.answerDeadline = answerDeadline
        self.submit = submit
    }

    func handlerAdded(context: ChannelHandlerContext) {
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        timer = context.eventLoop.scheduleTask(in: deadline) {
            let (handler, context) = bound.value
            handler.finish(context, .failure("xdirector: the request was cut short or too large", status: 2))
        }
    }

    func handlerRemoved(context: ChannelHandlerContext) { timer?.cancel() }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !done else { return }
        var chunk = unwrapInboundIn(data)
        if received == nil { received = context.channel.allocator.buffer(capacity: chunk.readableBytes) }
        received!.writeBuffer(&chunk)
        if received!.readableBytes > limit {
            finish(context, .failure("xdirector: the request was cut short or too large", status: 2))
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        guard let event = event as? ChannelEvent, event == .inputClosed, !done else {
            return context.fireUserInboundEventTriggered(event)
        }
        timer?.cancel()
        let bytes = received.map { Data($0.readableBytesView) } ?? Data()
        guard let request = try? JSONDecoder().decode(ControlRequest.self, from: bytes) else {
            return finish(context, .failure("xdirector: the request is not one this director understands", status: 2))
        }
        done = true
        received = nil
        let promise = context.eventLoop.makePromise(of: ControlResponse.self)
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        promise.futureResult.whenSuccess { response in
            let (handler, context) = bound.value
            handler.write(context, response)
        }
        submit(request, promise)
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        context.close(promise: nil)
    }

    /// Answers without the control thread (a refusal) and closes.
    private func finish(_ context: ChannelHandlerContext, _ response: ControlResponse) {
        guard !done else { return }
        done = true
        received = nil
        timer?.cancel()
        write(context, response)
    }

    /// Writes the answer and closes once it is out, or after `answerDeadline` when the client does not take it.
    private func write(_ context: ChannelHandlerContext, _ response: ControlResponse) {
        guard context.channel.isActive else { return }
        let encoded = (try? JSONEncoder().encode(response)) ?? Data()
        var buffer = context.channel.allocator.buffer(capacity: encoded.count)
        buffer.writeBytes(encoded)
        let channel = context.channel
        let giveUp = context.eventLoop.scheduleTask(in: answerDeadline) { channel.close(promise: nil) }
        context.writeAndFlush(wrapOutboundOut(buffer)).whenComplete { _ in
            giveUp.cancel()
            channel.close(promise: nil)
        }
    }
}

/// The CLI's side of the control socket.
public enum ControlClient {
    /// Sends `request` to the director at `path` and waits (at most `timeout` seconds) for its answer.
    public static func send(_ request: ControlRequest, path: String, timeout: Int = 30) throws -> ControlResponse {
        let fd = try connect(path: path)
        defer { Glibc.close(fd) }
        var limit = timeval(tv_sec: timeout, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &limit, socklen_t(MemoryLayout<timeval>.size))
        guard writeAll(fd, try JSONEncoder().encode(request)) else {
            throw ControlError("\(path): the director did not take the request: \(String(cString: strerror(errno)))")
        }
        shutdown(fd, Int32(SHUT_WR))
        guard let answer = readAll(fd, limit: 256 << 20) else {
            throw ControlError("\(path): no answer from the director: \(String(cString: strerror(errno)))")
        }
        do {
            return try JSONDecoder().decode(ControlResponse.self, from: answer)
        } catch {
            throw ControlError("\(path): the director's answer is not readable")
        }
    }

    /// The socket of the one director running when `path` is nil: refuses when there are none or several.
    public static func resolve(path: String?, interface: String?) throws -> String {
        if let path { return path }
        if let interface { return ControlSocket.defaultPath(interface: interface) }
        if let environment = ProcessInfo.processInfo.environment["XDIRECTOR_SOCKET"], !environment.isEmpty {
            return environment
        }
        // Directors of this network namespace only: elsewhere theirs are named `<interface>@<namespace>`.
        let namespace = DirectorInstance.name(interface: "")
        let names = ((try? FileManager.default.contentsOfDirectory(atPath: ControlSocket.directory)) ?? [])
            .filter { name in
                guard name.hasSuffix(".sock") else { return false }
                let stem = name.dropLast(".sock".count)
                return (stem.firstIndex(of: "@").map { String(stem[$0...]) } ?? "") == namespace
            }
            .sorted()
        guard names.count == 1 else {
            throw ControlError(names.isEmpty
                ? "no running director found in \(ControlSocket.directory) (is `xdirector run` running?)"
                : "several directors are running (\(names.joined(separator: ", "))): choose one with --interface or --socket")
        }
        return "\(ControlSocket.directory)/\(names[0])"
    }

    static func connect(path: String) throws -> Int32 {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw ControlError("cannot create a socket: \(String(cString: strerror(errno)))") }
        var address = try address(path)
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard connected == 0 else {
            let reason = String(cString: strerror(errno))
            Glibc.close(fd)
            throw ControlError("cannot reach the director at \(path): \(reason)")
        }
        return fd
    }

    static func address(_ path: String) throws -> sockaddr_un {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else {
            throw ControlError("socket path too long: \(path)")
        }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (i, byte) in bytes.enumerated() { raw[i] = byte }
        }
        return address
    }

    /// Reads until end of file; nil on error or when more than `limit` bytes come.
    static func readAll(_ fd: Int32, limit: Int) -> Data? {
        var data = Data()
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let count = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if count == 0 { return data }
            if count < 0 {
                if errno == EINTR { continue }
                return nil
            }
            data.append(contentsOf: buffer[0..<count])
            if data.count > limit { return nil }
        }
    }

    @discardableResult
    static func writeAll(_ fd: Int32, _ data: Data) -> Bool {
        data.withUnsafeBytes { raw in
            var offset = 0
            while offset < raw.count {
                let written = Glibc.send(fd, raw.baseAddress! + offset, raw.count - offset, Int32(MSG_NOSIGNAL))
                if written < 0 {
                    if errno == EINTR { continue }
                    return false
                }
                offset += written
            }
            return true
        }
    }
}
