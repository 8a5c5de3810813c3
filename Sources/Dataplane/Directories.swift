import Foundation
import Glibc

/// Directories for the director's files (control socket, state files), made with their missing parents.
public enum Directories {
    /// Makes `path` and its missing parents with `mode`; an existing directory is left as it is. On failure:
    /// the directory that could not be made (or exists and is not one) and the reason (an errno value).
    public static func make(_ path: String, mode: mode_t) -> (directory: String, errno: Int32)? {
        var info = stat()
        if stat(path, &info) == 0 { return info.st_mode & S_IFMT == S_IFDIR ? nil : (path, ENOTDIR) }
        let parent = (path as NSString).deletingLastPathComponent
        if !parent.isEmpty && parent != path, let failure = make(parent, mode: mode) { return failure }
        guard mkdir(path, mode) == 0 || errno == EEXIST else { return (path, errno) }
        return nil
    }
}
