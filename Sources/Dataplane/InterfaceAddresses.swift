import Glibc
import Packet

/// The addresses configured on an interface, as the kernel reports them (getifaddrs).
public enum InterfaceAddresses {
    /// The first global address of each family on `name`: IPv4 first, then IPv6 (link-local skipped).
    public static func primary(of name: String) -> [IPAddress] {
        var list: UnsafeMutablePointer<ifaddrs>? = nil
        guard getifaddrs(&list) == 0 else { return [] }
        defer { freeifaddrs(list) }
        var v4: IPAddress? = nil, v6: IPAddress? = nil
        var cursor = list
        while let entry = cursor {
            cursor = entry.pointee.ifa_next
            guard let address = entry.pointee.ifa_addr, String(cString: entry.pointee.ifa_name) == name else { continue }
            switch Int32(address.pointee.sa_family) {
            case AF_INET where v4 == nil:
                let bytes = address.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { sin in
                    withUnsafeBytes(of: sin.pointee.sin_addr) { Array($0) }
                }
                v4 = IPAddress(bytes: bytes)
            case AF_INET6 where v6 == nil:
                let bytes = address.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { sin6 in
                    withUnsafeBytes(of: sin6.pointee.sin6_addr) { Array($0) }
                }
                if !(bytes[0] == 0xFE && bytes[1] & 0xC0 == 0x80) { v6 = IPAddress(bytes: bytes) }
            default:
                break
            }
        }
        return [v4, v6].compactMap { $0 }
    }
}
