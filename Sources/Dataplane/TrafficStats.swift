/// Traffic through one real server (or a whole service, or the director): IPVS's `Conns`, `InPkts`,
/// `OutPkts`, `InBytes`, `OutBytes`. "In" is client to real server, "out" real server to client (seen only
/// where replies come back through the director: NAT and FULLNAT).
public struct TrafficStats: Equatable, Sendable {
    public var connections: UInt64
    public var inPackets: UInt64
    public var outPackets: UInt64
    public var inBytes: UInt64
    public var outBytes: UInt64

    public init(connections: UInt64 = 0, inPackets: UInt64 = 0, outPackets: UInt64 = 0, inBytes: UInt64 = 0,
                outBytes: UInt64 = 0) {
        self.connections = connections
        self.inPackets = inPackets
        self.outPackets = outPackets
        self.inBytes = inBytes
        self.outBytes = outBytes
    }

    public static let zero = TrafficStats()

    public static func + (a: TrafficStats, b: TrafficStats) -> TrafficStats {
        TrafficStats(connections: a.connections &+ b.connections, inPackets: a.inPackets &+ b.inPackets,
                     outPackets: a.outPackets &+ b.outPackets, inBytes: a.inBytes &+ b.inBytes,
                     outBytes: a.outBytes &+ b.outBytes)
    }

    public static func += (a: inout TrafficStats, b: TrafficStats) { a = a + b }

    /// What was counted since `baseline` (a reading taken earlier, e.g. at `ipvsadm -Z`); never below 0.
    public func since(_ baseline: TrafficStats) -> TrafficStats {
        func minus(_ x: UInt64, _ y: UInt64) -> UInt64 { x >= y ? x - y : 0 }
        return TrafficStats(connections: minus(connections, baseline.connections),
                            inPackets: minus(inPackets, baseline.inPackets),
                            outPackets: minus(outPackets, baseline.outPackets),
                            inBytes: minus(inBytes, baseline.inBytes), outBytes: minus(outBytes, baseline.outBytes))
    }
}
