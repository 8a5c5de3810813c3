import Packet

/// `rr`: round robin with IPVS semantics.
///
/// The destinations form a circular list with a head; the state's `cursor` is the destination chosen last
/// (-1: the head, nothing chosen yet). A selection walks forward from the one after the cursor, wrapping
/// around, and takes the first destination that is available and has weight > 0; the cursor itself is
/// examined last, so a single eligible server is chosen again and again. Weights only matter as "zero or
/// not". When nothing is eligible the result is nil and the cursor does not move.
///
/// State: `cursor` only.
public enum RoundRobin: SchedulingAlgorithm {
    public static var kind: SchedulerKind { .rr }

    /// IPVS keeps its pointer on the same server when others come or go (and steps back to the previous
    /// one when the current one is deleted). An index cannot follow a server through a reordering, so the
    /// cursor is kept as is and moved back to the head only when it falls off the end of the new list.
    public static func destinationsChanged(
        state: inout SchedulerState, destinations: UnsafeBufferPointer<SchedulingDestination>
    ) {
        if Int(state.cursor) >= destinations.count { state.cursor = -1 }
    }

    @inlinable @inline(__always)
    public static func select(
        state: inout SchedulerState, destinations: UnsafeBufferPointer<SchedulingDestination>, flow: FlowKey
    ) -> Int? {
        let count = destinations.count
        // A cursor outside this list (a state carried over from a longer one) counts as the head.
        var index = Int(state.cursor)
        if index < 0 || index >= count { index = -1 }
        for _ in 0..<count {
            index += 1
            if index == count { index = 0 }
            if destinations[index].acceptsNewConnections {
                state.cursor = Int32(truncatingIfNeeded: index)
                return index
            }
        }
        return nil
    }
}
