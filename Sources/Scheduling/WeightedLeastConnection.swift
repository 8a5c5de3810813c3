import Packet

/// `wlc`: weighted least connection, IPVS's default (`ip_vs_wlc.c`). The usable server with weight > 0
/// whose overhead (`active * 256 + inactive`) per unit of weight is smallest, compared by cross
/// multiplication; the first in list order wins a tie.
public enum WeightedLeastConnection: SchedulingAlgorithm {
    public static var kind: SchedulerKind { .wlc }

    @inlinable
    public static func select(
        state: inout SchedulerState, destinations: UnsafeBufferPointer<SchedulingDestination>, flow: FlowKey
    ) -> Int? {
        LeastOverhead.select(destinations, overhead: { $0.connectionOverhead })
    }
}

/// The weighted comparison wlc, sed and lblc share: the first eligible server, replaced by each later one
/// with `least.overhead * d.weight > d.overhead * least.weight`.
@usableFromInline
enum LeastOverhead {
    /// `a` carries less connection overhead per unit of weight than `b`, by cross multiplication.
    @inlinable @inline(__always)
    static func lighter(_ a: SchedulingDestination, than b: SchedulingDestination) -> Bool {
        a.connectionOverhead * Int64(b.weight) < b.connectionOverhead * Int64(a.weight)
    }

    @inlinable @inline(__always)
    static func select(
        _ destinations: UnsafeBufferPointer<SchedulingDestination>,
        overhead: (SchedulingDestination) -> Int64
    ) -> Int? {
        var least = -1
        var leastOverhead: Int64 = 0
        var leastWeight: Int64 = 0
        for index in destinations.indices {
            let destination = destinations[index]
            guard destination.acceptsNewConnections else { continue }
            let cost = overhead(destination)
            let weight = Int64(destination.weight)
            if least < 0 || leastOverhead * weight > cost * leastWeight {
                least = index
                leastOverhead = cost
                leastWeight = weight
            }
        }
        return least < 0 ? nil : least
    }
}
