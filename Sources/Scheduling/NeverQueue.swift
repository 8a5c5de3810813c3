import Packet

/// `nq`: never queue (`ip_vs_nq.c`): the first usable server with weight > 0 and no active connection;
/// when every one is busy, shortest expected delay.
public enum NeverQueue: SchedulingAlgorithm {
    public static var kind: SchedulerKind { .nq }

    @inlinable
    public static func select(
        state: inout SchedulerState, destinations: UnsafeBufferPointer<SchedulingDestination>, flow: FlowKey
    ) -> Int? {
        for index in destinations.indices {
            let destination = destinations[index]
            if destination.acceptsNewConnections && destination.activeConnections == 0 { return index }
        }
        return LeastOverhead.select(destinations, overhead: { Int64($0.activeConnections) + 1 })
    }
}
