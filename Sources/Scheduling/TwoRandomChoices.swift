import Packet

/// `twos`: weighted random twos choice (`ip_vs_twos.c`). Two servers are drawn at random, each with
/// probability proportional to its weight (from `0 ... total weight`, inclusive, as IPVS draws), and the one
/// with the smaller overhead per unit of weight (`active * 256 + inactive`) wins; the first draw wins a tie.
///
/// The random sequence is the state's xorshift64* generator, one per worker and service, seeded by the caller.
public enum TwoRandomChoices: SchedulingAlgorithm {
    public static var kind: SchedulerKind { .twos }

    @inlinable
    public static func select(
        state: inout SchedulerState, destinations: UnsafeBufferPointer<SchedulingDestination>, flow: FlowKey
    ) -> Int? {
        var total: Int64 = 0
        // Where a draw that finds nothing lands (IPVS's initial `choice1`): the last eligible server.
        var last = -1
        for index in destinations.indices where destinations[index].acceptsNewConnections {
            total += Int64(destinations[index].weight)
            last = index
        }
        guard total > 0 else { return nil }
        total += 1
        var first = Int64(nextRandom(&state) % UInt64(total))
        var second = Int64(nextRandom(&state) % UInt64(total))
        var choice1 = -1
        var choice2 = -1
        for index in destinations.indices {
            let destination = destinations[index]
            guard destination.acceptsNewConnections else { continue }
            first -= Int64(destination.weight)
            second -= Int64(destination.weight)
            if first <= 0 && choice1 < 0 { choice1 = index }
            if second <= 0 && choice2 < 0 { choice2 = index }
            if choice1 >= 0 && choice2 >= 0 { break }
        }
        // Both draws are at most the total weight, so both land unless another worker's connections
        // overloaded a server between the two walks.
        if choice1 < 0 { choice1 = last }
        if choice2 < 0 { choice2 = choice1 }
        let one = destinations[choice1], two = destinations[choice2]
        if Int64(two.weight) * one.connectionOverhead > Int64(one.weight) * two.connectionOverhead {
            return choice2
        }
        return choice1
    }

    @inlinable @inline(__always)
    static func nextRandom(_ state: inout SchedulerState) -> UInt64 {
        var x = state.random
        x ^= x >> 12
        x ^= x << 25
        x ^= x >> 27
        state.random = x
        return x &* 0x2545_F491_4F6C_DD1D
    }
}
