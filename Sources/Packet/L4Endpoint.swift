/// An address and a TCP/UDP port, as a translation writes them into a packet. (`Control` has its own
/// `Endpoint` for configuration, where the port may be absent.)
public struct L4Endpoint: Hashable, Sendable {
    public var address: IPAddress
    /// Host order.
    public var port: UInt16

    public init(address: IPAddress, port: UInt16) {
        self.address = address
        self.port = port
    }
}
