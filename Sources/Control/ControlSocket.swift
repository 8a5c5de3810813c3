import Dataplane
import Foundation
import Glibc

/// The running director's Unix socket: `/run/xdirector/<interface>.sock` by default, owner root, mode 0600.
/// The control thread accepts and answers on it between its other duties (`serve`), one request at a time;
/// a client gets a few seconds to send its request, so a stuck one cannot stall the director.
public final class ControlSocket {
    public static let directory = "/run/xdirector"
    /// A request larger than this is refused (a restore of a few hundred thousand rules fits).
    static let maximumRequest = 64 << 20
    static let clientTimeoutSeconds = 5

    public let path: String
    private var listener: Int32 = -1

    /// `/run/xdirector/<instance>.sock`: the instance name is the interface's, unique per network namespace.
    public static func defaultPath(interface: String) -> String {
        "\(directory)/\(DirectorInstance.name(interface: interface)).sock"
    }

    /// Binds and listens. Refuses a path where another director answers, and anything at the path that is
    /// not a socket (a file or a link is never deleted); replaces a socket nobody answers (a director that died).
    public init(path: String) throws {
        self.path = path
        var address = try ControlClient.address(path)
        let parent = (path as NSString).deletingLastPathComponent
        if !parent.isEmpty { try Self.makeDirectory(parent) }
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
        guard bound == 0, listen(fd, 16) == 0 else {
            let reason = String(cString: strerror(errno))
            Glibc.close(fd)
            throw ControlError("cannot listen on \(path): \(reason)")
        }
        chmod(path, 0o600)
        listener = fd
    }

    deinit { close() }

    /// Creates `path` and its missing parents (mode 0755), with the reason when it cannot.
    private static func makeDirectory(_ path: String) throws {
        var info = stat()
        if stat(path, &info) == 0 {
            guard info.st_mode & S_IFMT == S_IFDIR else { throw ControlError("cannot use \(path) for the control socket: not a directory") }
            return
        }
        let parent = (path as NSString).deletingLastPathComponent
        if !parent.isEmpty && parent != path { try makeDirectory(parent) }
        guard mkdir(path, 0o755) == 0 || errno == EEXIST else {
            throw ControlError("cannot create \(path) for the control socket: \(String(cString: strerror(errno)))")
        }
    }

    /// The listening descriptor, for poll().
    public var descriptor: Int32 { listener }

    /// Answers every client waiting now, each with `handle`; returns without waiting when none is.
    public func serve(_ handle: (ControlRequest) -> ControlResponse) {
        guard listener >= 0 else { return }
        while true {
            // The accepted socket does not inherit O_NONBLOCK: reads below block, bounded by the timeouts.
            let client = accept(listener, nil, nil)
            guard client >= 0 else { return }
            _ = fcntl(client, F_SETFD, FD_CLOEXEC)
            defer { Glibc.close(client) }
            var timeout = timeval(tv_sec: Self.clientTimeoutSeconds, tv_usec: 0)
            setsockopt(client, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
            setsockopt(client, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
            let response: ControlResponse
            if let data = ControlClient.readAll(client, limit: Self.maximumRequest) {
                if let request = try? JSONDecoder().decode(ControlRequest.self, from: data) {
                    response = handle(request)
                } else {
                    response = .failure("xdirector: the request is not one this director understands", status: 2)
                }
            } else {
                response = .failure("xdirector: the request was cut short or too large", status: 2)
            }
            if let encoded = try? JSONEncoder().encode(response) { ControlClient.writeAll(client, encoded) }
        }
    }

    public func close() {
        guard listener >= 0 else { return }
        Glibc.close(listener)
        listener = -1
        unlink(path)
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
