/// The scheduling algorithms the director implements, by their ipvsadm names (`-s NAME`).
///
/// Adding an algorithm: a case here, one file with a caseless enum conforming to `SchedulingAlgorithm`,
/// and one line in each of the switches in `Scheduler` (the compiler points at them).
public enum SchedulerKind: String, CaseIterable, Sendable {
    /// Round robin.
    case rr
    /// Weighted round robin.
    case wrr
    /// Least connection.
    case lc
    /// Weighted least connection (IPVS's default).
    case wlc
    /// Shortest expected delay.
    case sed
    /// Never queue.
    case nq
    /// Locality-based least connection.
    case lblc
    /// Locality-based least connection with replication.
    case lblcr
    /// Destination hashing.
    case dh
    /// Source hashing.
    case sh
    /// Maglev hashing.
    case mh
    /// Weighted failover.
    case fo
    /// Weighted overflow.
    case ovf
    /// Weighted random twos choice.
    case twos

    /// IPVS's default when `-s` is absent.
    public static let `default` = SchedulerKind.wlc

    /// ipvsadm's name for the algorithm.
    public var name: String { rawValue }

    /// Whether the choice depends only on the flow and the server set (source hashing, Maglev): every director
    /// with the same servers makes the same choice, so any of them can take any packet of a flow.
    public var isConsistentHash: Bool { self == .sh || self == .mh }

    public init?(name: String) { self.init(rawValue: name) }

    /// The `-b` flags the algorithm understands (IPVS refuses the others).
    public var acceptedFlags: SchedulerFlags {
        switch self {
        case .sh, .mh: return [.fallback, .port]
        default: return []
        }
    }

    /// One line for help texts and listings.
    public var summary: String {
        switch self {
        case .rr: return "round robin: each available real server in turn, weight 0 excluded"
        case .wrr: return "weighted round robin: turns in proportion to the weights"
        case .lc: return "least connection: fewest connections (active weigh 256 times inactive)"
        case .wlc: return "weighted least connection: fewest connections per unit of weight"
        case .sed: return "shortest expected delay: fewest (active + 1) per unit of weight"
        case .nq: return "never queue: an idle server if any, else shortest expected delay"
        case .lblc: return "locality-based least connection: same server per destination address unless overloaded"
        case .lblcr: return "locality-based least connection with replication: a server set per destination address"
        case .dh: return "destination hashing: a static table of 256 buckets by destination address"
        case .sh: return "source hashing: a static table of 256 buckets by client address (and port with sh-port)"
        case .mh: return "Maglev hashing: consistent hashing of the client address (and port with mh-port)"
        case .fo: return "weighted failover: the available server with the highest weight"
        case .ovf: return "weighted overflow: the heaviest server whose active connections do not exceed its weight"
        case .twos: return "weighted random twos choice: the less loaded of two random picks by weight"
        }
    }
}

/// `-b|--sched-flags`: IPVS's scheduler flags, stored as IPVS's `IP_VS_SVC_F_SCHED1`/`SCHED2` bits; their
/// names depend on the scheduler (sh-fallback/sh-port for sh, mh-fallback/mh-port for mh).
public struct SchedulerFlags: OptionSet, Sendable, Hashable {
    public let rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }

    /// sh-fallback, mh-fallback (IPVS `IP_VS_SVC_F_SCHED1`): skip an unavailable server to the next one.
    public static let fallback = SchedulerFlags(rawValue: 1)
    /// sh-port, mh-port (IPVS `IP_VS_SVC_F_SCHED2`): hash the client port too.
    public static let port = SchedulerFlags(rawValue: 2)

    /// The flags as ipvsadm spells them for `kind`, in IPVS's bit order: `["sh-fallback", "sh-port"]`; with
    /// no scheduler, IPVS's generic names (`["flag-1", "flag-2"]`).
    public func names(for kind: SchedulerKind?) -> [String] {
        var names: [String] = []
        if contains(.fallback) { names.append(kind.map { "\($0.name)-fallback" } ?? "flag-1") }
        if contains(.port) { names.append(kind.map { "\($0.name)-port" } ?? "flag-2") }
        return names
    }

    /// Parses one flag name (`sh-port`, `mh-fallback`, or IPVS's generic `flag-1`/`flag-2`) and the
    /// scheduler it belongs to (nil for the generic names).
    public static func parse(_ name: String) -> (flag: SchedulerFlags, scheduler: SchedulerKind?)? {
        switch name {
        case "sh-fallback": return (.fallback, .sh)
        case "sh-port": return (.port, .sh)
        case "mh-fallback": return (.fallback, .mh)
        case "mh-port": return (.port, .mh)
        case "flag-1": return (.fallback, nil)
        case "flag-2": return (.port, nil)
        default: return nil
        }
    }
}
