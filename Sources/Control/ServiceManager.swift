import Packet
import Foundation
import Glibc

/// systemd's notification protocol (`sd_notify(3)`), spoken by hand: each notification is one datagram of
/// `KEY=VALUE` lines sent to the AF_UNIX socket named by `$NOTIFY_SOCKET`. `run` uses it when systemd starts
/// it as a `Type=notify` service: `READY=1` once the data plane serves, `STATUS=…` for `systemctl status`,
/// `WATCHDOG=1` every `watchdogInterval` seconds from the control loop, `STOPPING=1` when it begins to stop.
///
/// Notifications never block (`MSG_DONTWAIT`) and their errors are ignored: a director must not stall or
/// stop because its service manager is slow or gone. Each notification opens its own close-on-exec socket,
/// as libsystemd does, so the notifier holds no descriptor and may be copied and shared freely.
public struct SystemdNotifier: Sendable {
    /// `$NOTIFY_SOCKET` as systemd gave it: an absolute path, or `@name` for Linux's abstract namespace.
    public let socket: String
    /// How often to send `WATCHDOG=1`, in seconds: half of `$WATCHDOG_USEC`, as `sd_watchdog_enabled(3)`
    /// recommends; nil when systemd watches nothing, or watches another process (`$WATCHDOG_PID`).
    public let watchdogInterval: Double?

    private let address: sockaddr_un
    private let addressLength: socklen_t

    /// Reads `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID` from `environment`. Nil when `NOTIFY_SOCKET`
    /// is unset or empty, or names something this notifier cannot reach (neither an absolute path nor `@`,
    /// such as systemd's `vsock:` addresses, or longer than a socket address holds).
    public init?(environment: [String: String] = ProcessInfo.processInfo.environment) {
        guard let socket = environment["NOTIFY_SOCKET"], !socket.isEmpty,
              let (address, length) = Self.address(socket) else { return nil }
        self.socket = socket
        self.address = address
        self.addressLength = length
        self.watchdogInterval = Self.watchdogInterval(environment: environment, pid: getpid())
    }

    /// Sends `state`: one or more `KEY=VALUE` lines, e.g. `READY=1`, `STOPPING=1`, `STATUS=serving 3 queues`,
    /// `WATCHDOG=1`, `MAINPID=4242`. Returns whether the datagram left, for callers that care (most do not).
    @discardableResult
    public func notify(_ state: String) -> Bool {
        let fd = Glibc.socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var address = address
        let bytes = Array(state.utf8)
        let sent = withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { target in
                bytes.withUnsafeBytes { raw in
                    sendto(fd, raw.baseAddress, raw.count, Int32(MSG_DONTWAIT) | Int32(MSG_NOSIGNAL), target, addressLength)
                }
            }
        }
        return sent == bytes.count
    }

    /// `READY=1`, with a status line when one is given: the service has started.
    @discardableResult
    public func ready(status: String? = nil) -> Bool {
        notify("READY=1" + (status.map { "\nSTATUS=\(Self.oneLine($0))" } ?? ""))
    }

    /// `STOPPING=1`, with a status line when one is given: the service is stopping (draining, detaching).
    @discardableResult
    public func stopping(status: String? = nil) -> Bool {
        notify("STOPPING=1" + (status.map { "\nSTATUS=\(Self.oneLine($0))" } ?? ""))
    }

    /// `STATUS=…`: the line `systemctl status` shows.
    @discardableResult
    public func status(_ text: String) -> Bool { notify("STATUS=\(Self.oneLine(text))") }

    /// `WATCHDOG=1`: the service is alive; due every `watchdogInterval` seconds when that is set.
    @discardableResult
    public func watchdog() -> Bool { notify("WATCHDOG=1") }

    /// The watchdog interval `environment` asks of process `pid`: half of `WATCHDOG_USEC` (a positive
    /// integer of microseconds), only when `WATCHDOG_PID` is absent or equals `pid`.
    public static func watchdogInterval(environment: [String: String], pid: pid_t) -> Double? {
        guard let text = environment["WATCHDOG_USEC"], let microseconds = UInt64(text), microseconds > 0 else {
            return nil
        }
        if let owner = environment["WATCHDOG_PID"], !owner.isEmpty {
            guard let owner = pid_t(owner), owner == pid else { return nil }
        }
        return Double(microseconds) / 2_000_000
    }

    /// The socket address of `NOTIFY_SOCKET` and its length: for `@name`, a NUL then the name, the length
    /// covering exactly that (abstract names are not NUL-terminated); for a path, the path and its NUL.
    static func address(_ socket: String) -> (sockaddr_un, socklen_t)? {
        var bytes = Array(socket.utf8)
        let abstract = bytes.first == UInt8(ascii: "@")
        guard abstract || bytes.first == UInt8(ascii: "/") else { return nil }
        if abstract { bytes[0] = 0 }
        var address = sockaddr_un()
        let capacity = MemoryLayout.size(ofValue: address.sun_path)
        // A path needs room for its NUL; an abstract name may fill the field.
        guard bytes.count + (abstract ? 0 : 1) <= capacity, bytes.count > 1 else { return nil }
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (i, byte) in bytes.enumerated() { raw[i] = byte }
        }
        let offset = MemoryLayout<sockaddr_un>.offset(of: \sockaddr_un.sun_path)!
        return (address, socklen_t(offset + bytes.count + (abstract ? 0 : 1)))
    }

    /// A status is one line: a newline would start another assignment.
    private static func oneLine(_ text: String) -> String {
        String(text.map { $0.isNewline ? " " : $0 })
    }
}
