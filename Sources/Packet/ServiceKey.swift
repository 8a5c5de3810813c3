/// The transport protocol of a virtual service (`-t` or `-u`).
public enum L4Protocol: String, CaseIterable, Sendable {
    case tcp
    case udp

    /// The IP protocol number: 6 for TCP, 17 for UDP.
    public var number: UInt8 {
        switch self {
        case .tcp: return IPProtocolNumber.tcp
        case .udp: return IPProtocolNumber.udp
        }
    }

    /// The protocol of IP protocol number `number`; nil for anything but TCP and UDP.
    public init?(number: UInt8) {
        switch number {
        case IPProtocolNumber.tcp: self = .tcp
        case IPProtocolNumber.udp: self = .udp
        default: return nil
        }
    }

    /// The ipvsadm option that names a service of this protocol.
    public var option: String {
        switch self {
        case .tcp: return "-t"
        case .udp: return "-u"
        }
    }
}

/// Identifies a virtual service: protocol, address and port (what `-t`/`-u` name). The one service key of
/// the project: configuration, snapshots, the connection state file and the XDP maps' typed API take it.
public struct ServiceKey: Hashable, Sendable, CustomStringConvertible {
    public var proto: L4Protocol
    public var endpoint: L4Endpoint

    public init(proto: L4Protocol, endpoint: L4Endpoint) {
        self.proto = proto
        self.endpoint = endpoint
    }

    public init(proto: L4Protocol, address: IPAddress, port: UInt16) {
        self.init(proto: proto, endpoint: L4Endpoint(address: address, port: port))
    }

    /// The service as ipvsadm arguments: `["-t", "192.0.2.10:80"]`.
    public var arguments: [String] { [proto.option, endpoint.description] }

    /// `-t 192.0.2.10:80`.
    public var description: String { arguments.joined(separator: " ") }
}
