import CXDP

/// The CPUs this process may run on.
public enum CPUs {
    /// glibc's CPU_SETSIZE, the largest CPU number an affinity mask can name.
    static let setSize = 1024

    public static func usable() -> [Int] {
        let allowed = (0..<setSize).filter { cxdp_cpu_allowed(Int32($0)) != 0 }
        return allowed.isEmpty ? [0] : allowed
    }
}
