import Packet

/// `sed`: shortest expected delay (`ip_vs_sed.c`): like wlc with overhead `active + 1` (inactive
/// connections ignored), so an idle heavy server beats an idle light one.
public enum ShortestExpectedDelay: SchedulingAlgorithm {
    public static var kind: SchedulerKind { .sed }

    @inlinable
    public static func select(
        state: inout SchedulerState, destinations: UnsafeBufferPointer<SchedulingDestination>, flow: FlowKey
    ) -> Int? {
        LeastOverhead.select(destinations, overhead: { Int64($0.activeConnections) + 1 })
    }
}
