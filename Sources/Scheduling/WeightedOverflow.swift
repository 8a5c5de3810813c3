import Packet

/// `ovf`: weighted overflow (`ip_vs_ovf.c`): the usable server with the highest weight among those whose
/// active connections do not exceed their weight; the first in list order wins a tie. A server overflows
/// to the next one once it holds more active connections than its weight.
public enum WeightedOverflow: SchedulingAlgorithm {
    public static var kind: SchedulerKind { .ovf }

    @inlinable
    public static func select(
        state: inout SchedulerState, destinations: UnsafeBufferPointer<SchedulingDestination>, flow: FlowKey
    ) -> Int? {
        HighestWeight.select(destinations, where: { $0.activeConnections <= $0.weight })
    }
}
