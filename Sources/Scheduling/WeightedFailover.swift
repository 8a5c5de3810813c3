import Packet

/// `fo`: weighted failover (`ip_vs_fo.c`): the usable server with the highest weight (> 0); the first in
/// list order wins a tie. All new connections go there until it is quiesced, overloaded or removed.
public enum WeightedFailover: SchedulingAlgorithm {
    public static var kind: SchedulerKind { .fo }

    @inlinable
    public static func select(
        state: inout SchedulerState, destinations: UnsafeBufferPointer<SchedulingDestination>, flow: FlowKey
    ) -> Int? {
        var highest = -1
        var highestWeight: Int32 = 0
        for index in destinations.indices {
            let destination = destinations[index]
            if destination.acceptsNewConnections && destination.weight > highestWeight {
                highest = index
                highestWeight = destination.weight
            }
        }
        return highest < 0 ? nil : highest
    }
}
