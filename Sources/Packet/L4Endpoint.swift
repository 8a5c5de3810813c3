/// An address and a TCP/UDP port: what a translation writes into a packet, and what configuration names
/// (`Control` parses it in ipvsadm's syntax, `IPVSEndpoint.swift`).
public struct L4Endpoint: Hashable, Sendable, CustomStringConvertible {
    public var address: IPAddress
    /// Host order.
    public var port: UInt16

    public init(address: IPAddress, port: UInt16) {
        self.address = address
        self.port = port
    }

    /// `192.0.2.1:80` or `[2001:db8::1]:80`, as ipvsadm prints them.
    public var description: String {
        switch address.family {
        case .ipv4: return "\(address):\(port)"
        case .ipv6: return "[\(address)]:\(port)"
        }
    }
}
