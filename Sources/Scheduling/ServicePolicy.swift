import Packet

/// What the data plane needs to know about one virtual service to place its connections: a trivial struct
/// in the snapshot's flat buffers. The service's real servers are `destinations[first ..< first + count]`
/// of the same snapshot.
public struct ServicePolicy: Sendable, Equatable {
    public var scheduler: SchedulerKind
    /// `-b`.
    public var flags: SchedulerFlags
    /// `-p`: seconds a client stays with its server after its last connection; 0 = not persistent.
    public var persistenceTimeout: UInt32
    /// `-M`, as a mask over `FlowKey`'s address halves: the client addresses that share a template.
    public var netmaskHi: UInt64
    public var netmaskLo: UInt64
    /// `-o`: UDP datagrams are scheduled one by one and leave no connection behind.
    public var onePacket: Bool
    /// Replies pass through the director (NAT, FULLNAT): TCP follows IPVS's input/output tables.
    public var seesReplies: Bool
    public var first: Int32
    public var count: Int32

    /// IPVS's default persistence timeout, `-p` without a value.
    public static let defaultPersistence: UInt32 = 300

    /// `netmaskPrefix`: the prefix length of `-M` (32 or 128, all bits, when absent); `ipv6` picks the family.
    public init(scheduler: SchedulerKind = .default, flags: SchedulerFlags = [], persistenceTimeout: UInt32 = 0,
                netmaskPrefix: Int? = nil, ipv6: Bool = false, onePacket: Bool = false, seesReplies: Bool = false,
                first: Int32 = 0, count: Int32 = 0) {
        self.scheduler = scheduler
        self.flags = flags
        self.persistenceTimeout = persistenceTimeout
        (netmaskHi, netmaskLo) = Self.mask(prefix: netmaskPrefix ?? (ipv6 ? 128 : 32), ipv6: ipv6)
        self.onePacket = onePacket
        self.seesReplies = seesReplies
        self.first = first
        self.count = count
    }

    /// The address-half masks of a prefix, IPv4 addresses living in the low 32 bits of `lo`.
    public static func mask(prefix: Int, ipv6: Bool) -> (UInt64, UInt64) {
        if !ipv6 {
            let bits = min(max(prefix, 0), 32)
            return (0, bits == 0 ? 0 : (UInt64(0xFFFF_FFFF) << UInt64(32 - bits)) & 0xFFFF_FFFF)
        }
        let bits = min(max(prefix, 0), 128)
        let hi: UInt64 = bits >= 64 ? ~0 : (bits == 0 ? 0 : ~0 << UInt64(64 - bits))
        let lo: UInt64 = bits <= 64 ? 0 : (bits == 128 ? ~0 : ~0 << UInt64(128 - bits))
        return (hi, lo)
    }
}

/// What `ConnectionTracker.admit` decided for a packet. Trivial: the engine switches over it per packet.
public enum Admission: Equatable, Sendable {
    /// A packet of a tracked connection: `destination` indexes the snapshot's destinations, `slot` the
    /// connection table (stable while the connection lives).
    case existing(destination: Int, slot: Int)
    /// A new connection to `destination`; `slot` is the table slot now (re)used by it, nil when it is not
    /// tracked (one-packet scheduling).
    case new(destination: Int, slot: Int?)
    /// Forwarded without state because the connection table is full: `destination` is the flow's stable
    /// choice, so every packet of the flow takes the same way while the server set stays, and the entry its
    /// flow gets once there is room names it too (see `ConnectionTracker`).
    case overflow(destination: Int)
    case drop(AdmissionDrop)
}

public enum AdmissionDrop: UInt8, Sendable {
    /// No real server can take a new connection (none, all quiesced, unavailable or overloaded).
    case noDestination
    /// A TCP segment other than a SYN without a connection (as IPVS, which schedules only SYNs).
    case noConnection
    /// A non-SYN segment of a connection whose real server was removed: the connection is expired
    /// (IPVS `expire_nodest_conn`) so the client's next SYN gets a live server.
    case destinationRemoved
}
