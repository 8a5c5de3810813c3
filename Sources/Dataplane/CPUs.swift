import CXDP
import Glibc

/// The CPUs this process may run on.
public enum CPUs {
    public static func usable() -> [Int] {
        let allowed = (0..<Int(CPU_SETSIZE)).filter { cxdp_cpu_allowed(Int32($0)) != 0 }
        return allowed.isEmpty ? [0] : allowed
    }
}
