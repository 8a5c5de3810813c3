import CXDirectorShared
import Packet

/// A real server's value in the `real_servers` map, in the project's types: what the workers' snapshot has.
public struct RealServerEntry: Equatable, Sendable {
    public var weight: Int32
    public var method: ForwardingMethod
    /// Written only for `.tunnel` (0 otherwise, as the header says).
    public var tunnel: TunnelType
    /// Removed from the configuration; its connections still reach it until they end.
    public var draining: Bool
    public var upperThreshold: UInt32
    public var lowerThreshold: UInt32

    public init(weight: Int32, method: ForwardingMethod, tunnel: TunnelType = .ipip, draining: Bool = false,
                upperThreshold: UInt32 = 0, lowerThreshold: UInt32 = 0) {
        self.weight = weight; self.method = method; self.tunnel = tunnel; self.draining = draining
        self.upperThreshold = upperThreshold; self.lowerThreshold = lowerThreshold
    }
}

/// An address whose IP fragments the program steers to the workers (the `fragment_addrs` map): a later
/// fragment carries no ports, so the program can only go by address and protocol.
public struct FragmentAddress: Hashable, Sendable {
    public enum Role: UInt8, Sendable {
        /// A VIP of a service of the protocol: fragments to it (`XD_FRAGMENT_TO_SERVICE`).
        case toService = 1
        /// A NAT real server: fragments from it, its replies (`XD_FRAGMENT_FROM_NAT_REAL`).
        case fromNATReal = 2
    }

    public var address: IPAddress
    public var proto: L4Protocol
    public var role: Role

    public init(address: IPAddress, proto: L4Protocol, role: Role) {
        self.address = address; self.proto = proto; self.role = role
    }
}

/// The kernel's formats of the XDP maps' keys and values (`xdirector_shared.h`): byte order and family tags,
/// encoded here once. `XDPProgram`'s typed map API and the tests use it; nothing else builds these structs.
public enum XDPMapFormat {
    /// `xd_service_key`: also the key of `nat_reals` (a NAT real server's RIP:RPORT/proto).
    public static func serviceKey(_ service: ServiceKey) -> xd_service_key {
        var key = xd_service_key()
        withUnsafeMutableBytes(of: &key.addr) { copy(service.endpoint.address, into: $0) }
        key.port = service.endpoint.port.bigEndian
        key.proto = service.proto.number
        key.family = family(service.endpoint.address)
        return key
    }

    public static func realKey(_ service: ServiceKey, _ server: L4Endpoint) -> xd_real_key {
        var key = xd_real_key()
        key.service = serviceKey(service)
        withUnsafeMutableBytes(of: &key.addr) { copy(server.address, into: $0) }
        key.port = server.port.bigEndian
        key.family = family(server.address)
        return key
    }

    public static func realValue(_ entry: RealServerEntry) -> xd_real_value {
        xd_real_value(weight: UInt32(max(entry.weight, 0)), method: entry.method.rawValue,
                      tunnel: entry.method == .tunnel ? entry.tunnel.rawValue : 0,
                      flags: UInt16(entry.draining ? XD_REAL_F_DRAINING : XD_REAL_F_NONE),
                      upper_threshold: entry.upperThreshold, lower_threshold: entry.lowerThreshold)
    }

    public static func localAddressKey(_ address: IPAddress) -> xd_local_addr_key {
        var key = xd_local_addr_key()
        withUnsafeMutableBytes(of: &key.addr) { copy(address, into: $0) }
        key.family = family(address)
        return key
    }

    public static func fragmentKey(_ entry: FragmentAddress) -> xd_fragment_key {
        var key = xd_fragment_key()
        withUnsafeMutableBytes(of: &key.addr) { copy(entry.address, into: $0) }
        key.proto = entry.proto.number
        key.family = family(entry.address)
        key.role = entry.role == .toService ? UInt8(XD_FRAGMENT_TO_SERVICE) : UInt8(XD_FRAGMENT_FROM_NAT_REAL)
        return key
    }

    /// `XD_FAMILY_IPV4` or `XD_FAMILY_IPV6`.
    static func family(_ address: IPAddress) -> UInt8 {
        address.family == .ipv4 ? UInt8(XD_FAMILY_IPV4) : UInt8(XD_FAMILY_IPV6)
    }

    /// Network order, IPv4 in the first four bytes, the rest zero.
    private static func copy(_ address: IPAddress, into raw: UnsafeMutableRawBufferPointer) {
        for (index, byte) in address.bytes.enumerated() { raw[index] = byte }
    }
}
