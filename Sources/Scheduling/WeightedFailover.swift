import Packet

/// `fo`: weighted failover (`ip_vs_fo.c`): the usable server with the highest weight (> 0); the first in
/// list order wins a tie. All new connections go there until it is quiesced, overloaded or removed.
public enum WeightedFailover: SchedulingAlgorithm {
    public static var kind: SchedulerKind { .fo }

    @inlinable
    public static func select(
        state: inout SchedulerState, destinations: UnsafeBufferPointer<SchedulingDestination>, flow: FlowKey
    ) -> Int? {
        HighestWeight.select(destinations, where: { _ in true })
    }
}

/// The rule fo and ovf share: among usable servers with weight > 0 that `admits`, the one with the highest
/// weight, the first in list order winning a tie.
@usableFromInline
enum HighestWeight {
    @inlinable @inline(__always)
    static func select(
        _ destinations: UnsafeBufferPointer<SchedulingDestination>, where admits: (SchedulingDestination) -> Bool
    ) -> Int? {
        var highest = -1
        var highestWeight: Int32 = 0
        for index in destinations.indices {
            let destination = destinations[index]
            if destination.weight > highestWeight && destination.acceptsNewConnections && admits(destination) {
                highest = index
                highestWeight = destination.weight
            }
        }
        return highest < 0 ? nil : highest
    }
}
