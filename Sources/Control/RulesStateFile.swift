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
            try AtomicFile.replace(path, with: Array(Self.render(configuration).utf8))
        } catch {
            throw ControlError("cannot save the running configuration to \(path): \(error)")
        }
    }

    /// The saved configuration, or nil when there is no file. Throws `ControlError` when the file cannot be
    /// read, and `RulesFileError` (which names the file and the line) when a line is refused.
    public func load() throws -> DirectorConfig? {
        guard let bytes = try AtomicFile.read(path) else { return nil }
        return try RulesFile.load(bytes: bytes, source: path)
    }
}
