import Foundation
import Glibc

/// The running configuration kept on disk, so that a restarted director serves what it served before.
///
/// The director saves it after every accepted change (a reload, an `xdirector ipvsadm` change, a restore)
/// and, started without `--rules`, loads it. The text is what `xdirector ipvsadm -S -n` prints
/// (`RulesFile.save`: `--set` first when timeouts were set, then each `-A` with its `-a` and `-P` lines),
/// after one `#` line saying what the file is; `RulesFile.load` reads it back, so an operator can also
/// restore it on an IPVS director with `ipvsadm -R` (after dropping the xdirector-only `--fullnat` and `-P`
/// lines) or edit it by hand.
///
/// A save replaces the file atomically: the text goes to `<path>.tmp-<pid>` in the same directory, is
/// synced, renamed over `path`, and the directory is synced, so after a crash or a power cut the file holds
/// either the previous configuration or the new one, never a mixture. Only the control thread saves, so the
/// temporary file's name (one per process) cannot collide.
public struct RulesStateFile: Sendable {
    /// Where the state files live by default (systemd's `StateDirectory=xdirector`).
    public static let directory = "/var/lib/xdirector"
    /// The file's first line.
    public static let header = "# xdirector running configuration (ipvsadm-save -n syntax), saved after every accepted change"

    public let path: String

    public init(path: String) {
        self.path = path
    }

    /// `/var/lib/xdirector/<instance>.rules`; the instance is the served interface's name.
    public static func defaultPath(instance: String) -> String { "\(directory)/\(instance).rules" }

    /// The file's text for `configuration`: the header line, then `RulesFile.save`'s text.
    public static func render(_ configuration: DirectorConfig) -> String {
        header + "\n" + RulesFile.save(configuration)
    }

    /// Replaces the file with `configuration`, atomically. Creates the directory (mode 0700) when it is
    /// missing; the file gets mode 0600. On failure the previous file is left as it was, the temporary file
    /// is removed, and the error names the path and the system's reason. (Only a failure to sync the directory
    /// comes after the rename: the new file is then in place but may not survive a power cut.)
    public func save(_ configuration: DirectorConfig) throws(ControlError) {
        do {
            try replace(with: Array(Self.render(configuration).utf8))
        } catch {
            throw ControlError("cannot save the running configuration to \(path): \(error)")
        }
    }

    private func replace(with bytes: [UInt8]) throws(ControlError) {
        let directory = Self.parent(of: path)
        try Self.makeDirectory(directory)

        let temporary = "\(path).tmp-\(getpid())"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0o600)
        guard fd >= 0 else { throw Self.failure("cannot create", temporary) }
        var failed: ControlError? = nil
        // fchmod: the mode is 0600 whatever the umask, and also when a stale temporary file was reused.
        if fchmod(fd, 0o600) != 0 {
            failed = Self.failure("cannot set the mode of", temporary)
        } else if !Self.writeAll(fd, bytes) {
            failed = Self.failure("cannot write", temporary)
        } else if fsync(fd) != 0 {
            failed = Self.failure("cannot sync", temporary)
        }
        if close(fd) != 0 && failed == nil { failed = Self.failure("cannot close", temporary) }
        if failed == nil && rename(temporary, path) != 0 {
            failed = Self.failure("cannot rename \(temporary) to", path)
        }
        if let failed {
            unlink(temporary)
            throw failed
        }
        // The rename is durable only once the directory is synced.
        let directoryFD = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard directoryFD >= 0 else { throw Self.failure("cannot open the directory", directory) }
        defer { close(directoryFD) }
        guard fsync(directoryFD) == 0 else { throw Self.failure("cannot sync the directory", directory) }
    }

    /// The saved configuration, or nil when there is no file. Throws `ControlError` when the file cannot be
    /// read, and `RulesFileError` (which names the file and the line) when a line is refused.
    public func load() throws -> DirectorConfig? {
        guard let bytes = try Self.read(path) else { return nil }
        guard let text = String(validating: bytes, as: UTF8.self) else {
            throw ControlError("\(path): not a rules file (the text is not UTF-8)")
        }
        return try RulesFile.load(text, source: path)
    }

    // MARK: - System calls

    /// The directory `path` lies in: "." for a bare name, "/" for a file at the root.
    static func parent(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        let parent = String(path[..<slash])
        return parent.isEmpty ? "/" : parent
    }

    /// Creates `directory` (and missing parents) with mode 0700; an existing one is left as it is.
    static func makeDirectory(_ directory: String) throws(ControlError) {
        if mkdir(directory, 0o700) == 0 || errno == EEXIST { return }
        guard errno == ENOENT, directory != "/", directory != "." else {
            throw failure("cannot create the directory", directory)
        }
        try makeDirectory(parent(of: directory))
        guard mkdir(directory, 0o700) == 0 || errno == EEXIST else {
            throw failure("cannot create the directory", directory)
        }
    }

    /// The file's bytes; nil when it does not exist.
    static func read(_ path: String) throws(ControlError) -> [UInt8]? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            if errno == ENOENT { return nil }
            throw failure("cannot open", path)
        }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let count = buffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            if count == 0 { return bytes }
            if count < 0 {
                if errno == EINTR { continue }
                throw failure("cannot read", path)
            }
            bytes += buffer[0..<count]
        }
    }

    /// Writes every byte, retrying short writes and interruptions; false on an error (errno says which).
    static func writeAll(_ fd: Int32, _ bytes: [UInt8]) -> Bool {
        bytes.withUnsafeBytes { raw in
            var offset = 0
            while offset < raw.count {
                let written = write(fd, raw.baseAddress! + offset, raw.count - offset)
                if written < 0 {
                    if errno == EINTR { continue }
                    return false
                }
                offset += written
            }
            return true
        }
    }

    /// `cannot write /var/lib/xdirector/eth0.rules.tmp-42: No space left on device`, from the current errno.
    static func failure(_ what: String, _ path: String) -> ControlError {
        ControlError("\(what) \(path): \(String(cString: strerror(errno)))")
    }
}
