import Glibc
import Packet

/// The addresses configured on an interface, as the kernel reports them (getifaddrs).
public enum InterfaceAddresses {
    /// The first global address of each family on `name`: IPv4 first, then IPv6 (link-local skipped).
    public static func primary(of name: String) -> [IPAddress] {
        let addresses = all(of: name)
        let v4 = addresses.first { $0.family == .ipv4 }
        let v6 = addresses.first { $0.family == .ipv6 && !isLinkLocal($0) }
        return [v4, v6].compactMap { $0 }
    }

    /// Every address on `name`, in the kernel's order, both families, link-local included.
    public static func all(of name: String) -> [IPAddress] {
        var list: UnsafeMutablePointer<ifaddrs>? = nil
        guard getifaddrs(&list) == 0 else { return [] }
        defer { freeifaddrs(list) }
        var addresses: [IPAddress] = []
        var cursor = list
        while let entry = cursor {
            cursor = entry.pointee.ifa_next
            guard let address = entry.pointee.ifa_addr, String(cString: entry.pointee.ifa_name) == name else { continue }
            switch Int32(address.pointee.sa_family) {
            case AF_INET:
                let bytes = address.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { sin in
                    withUnsafeBytes(of: sin.pointee.sin_addr) { Array($0) }
                }
                IPAddress(bytes: bytes).map { addresses.append($0) }
            case AF_INET6:
                let bytes = address.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { sin6 in
                    withUnsafeBytes(of: sin6.pointee.sin6_addr) { Array($0) }
                }
                IPAddress(bytes: bytes).map { addresses.append($0) }
            default:
                break
            }
        }
        return addresses
    }

    private static func isLinkLocal(_ address: IPAddress) -> Bool {
        let bytes = address.bytes
        return bytes[0] == 0xFE && bytes[1] & 0xC0 == 0x80
    }
}
