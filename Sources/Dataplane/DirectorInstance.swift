import Foundation
import Glibc

/// Names one director: the interface it serves, made unique per network namespace, so two directors on
/// interfaces of the same name in two namespaces never share a control socket, a state file or pins.
/// In the host's namespace (that of PID 1) the name is the interface's (`eth0`); elsewhere it carries the
/// namespace: its `ip netns` name when it has one (`eth0@blue`), else its inode (`eth0@net4026532845`).
public enum DirectorInstance {
    public static func name(interface: String) -> String {
        guard let own = namespaceInode(of: "/proc/self/ns/net"), own != namespaceInode(of: "/proc/1/ns/net") else {
            return interface
        }
        let named = (try? FileManager.default.contentsOfDirectory(atPath: "/run/netns"))?.sorted()
            .first { namespaceInode(of: "/run/netns/\($0)") == own }
        return "\(interface)@\(named ?? "net\(own)")"
    }

    private static func namespaceInode(of path: String) -> UInt64? {
        var info = stat()
        return stat(path, &info) == 0 ? UInt64(info.st_ino) : nil
    }
}

/// A process as the kernel knows it: its id and its start time, which together name it even after the id
/// is reused by another process.
public struct ProcessIdentity: Equatable, Sendable {
    public var pid: Int32
    /// Clock ticks after boot (`/proc/PID/stat` field 22).
    public var startTime: UInt64

    public init(pid: Int32, startTime: UInt64) {
        self.pid = pid
        self.startTime = startTime
    }

    /// This process.
    public static var current: ProcessIdentity {
        ProcessIdentity(pid: getpid(), startTime: startTime(of: getpid()) ?? 0)
    }

    /// Whether the process still runs (a zombie does not count: it serves nothing).
    public var isAlive: Bool {
        guard pid > 0, let fields = Self.statFields(of: pid) else { return false }
        return fields.state != "Z" && fields.startTime == startTime
    }

    static func startTime(of pid: Int32) -> UInt64? { statFields(of: pid)?.startTime }

    /// State (field 3) and start time (field 22) of `/proc/PID/stat`; the command name (field 2) may hold
    /// spaces and parentheses, so fields are counted after its last ')'.
    private static func statFields(of pid: Int32) -> (state: Character, startTime: UInt64)? {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let close = text.lastIndex(of: ")") else { return nil }
        let fields = text[text.index(after: close)...].split(separator: " ")
        // fields[0] is field 3 (state); field 22 is fields[19].
        guard fields.count > 19, let state = fields[0].first, let start = UInt64(fields[19]) else { return nil }
        return (state, start)
    }
}
