import Dataplane
import Glibc

/// Files replaced whole, so a reader (a restarted director, BIRD) sees the previous text or the new one,
/// never a mixture, even after a crash or a power cut: write a temporary file, sync, rename, sync the directory.
enum AtomicFile {
    /// Replaces `path` with `bytes`: written to `<path>.tmp-<pid>` in the same directory (made with mode 0700
    /// when missing), synced, renamed over `path`, and the directory synced. On failure the previous file is
    /// left as it was and the temporary file removed. Only one thread of a process may replace a given path.
    static func replace(_ path: String, with bytes: [UInt8], mode: mode_t = 0o600) throws(ControlError) {
        let directory = Self.parent(of: path)
        try Self.makeDirectory(directory)

        let temporary = "\(path).tmp-\(getpid())"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, mode)
        guard fd >= 0 else { throw Self.failure("cannot create", temporary) }
        var failed: ControlError? = nil
        // fchmod: the mode is `mode` whatever the umask, and also when a stale temporary file was reused.
        if fchmod(fd, mode) != 0 {
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


    /// The directory `path` lies in: "." for a bare name, "/" for a file at the root.
    static func parent(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        let parent = String(path[..<slash])
        return parent.isEmpty ? "/" : parent
    }

    /// Creates `directory` (and missing parents) with mode 0700; an existing one is left as it is.
    static func makeDirectory(_ directory: String) throws(ControlError) {
        guard let failure = Directories.make(directory, mode: 0o700) else { return }
        throw ControlError("cannot create the directory \(failure.directory): \(String(cString: strerror(failure.errno)))")
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
