import Packet

/// `lc`: least connection, as IPVS's `ip_vs_lc.c`. Among servers with weight > 0 that are usable, the one
/// with the smallest overhead `active * 256 + inactive`; the first in list order wins a tie.
public enum LeastConnection: SchedulingAlgorithm {
    public static var kind: SchedulerKind { .lc }

    @inlinable
    public static func select(
        state: inout SchedulerState, destinations: UnsafeBufferPointer<SchedulingDestination>, flow: FlowKey
    ) -> Int? {
        var least = -1
        var leastOverhead: Int64 = 0
        for index in destinations.indices {
            let destination = destinations[index]
            guard destination.acceptsNewConnections else { continue }
            let overhead = destination.connectionOverhead
            if least < 0 || overhead < leastOverhead {
                least = index
                leastOverhead = overhead
            }
        }
        return least < 0 ? nil : least
    }
}
