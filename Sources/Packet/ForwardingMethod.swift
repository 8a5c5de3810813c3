/// How packets reach a real server, chosen per real server as with ipvsadm; from the rules parser to the
/// snapshot and the XDP maps. The raw values are the shared header's `XD_METHOD_*` (a test checks them).
public enum ForwardingMethod: UInt8, CaseIterable, Sendable {
    /// Direct routing (`-g`, `--gatewaying`): the frame goes to the real server's MAC, the IP packet untouched.
    case directRouting = 0
    /// Tunnelling (`-i`, `--ipip`): the packet is encapsulated (IPIP, GUE or GRE) towards the real server.
    case tunnel = 1
    /// Masquerading (`-m`): destination rewritten to the real server; its replies come back through us.
    case masquerading = 2
    /// Full NAT (`--fullnat`): source and destination rewritten; the source is one of the service's local
    /// addresses (`-P`) with a port the director allocates, so replies come back to us by routing alone.
    case fullNAT = 3

    /// Whether the real server must listen on the service's port (the packet's port is never rewritten).
    public var keepsPort: Bool {
        switch self {
        case .directRouting, .tunnel: return true
        case .masquerading, .fullNAT: return false
        }
    }

    /// Whether the real server may be of the other address family than the service (only an outer header
    /// of the real server's family can carry it).
    public var mixesFamilies: Bool { self == .tunnel }

    /// Whether the real server's replies come back through the director.
    public var translates: Bool { self == .masquerading || self == .fullNAT }
}
