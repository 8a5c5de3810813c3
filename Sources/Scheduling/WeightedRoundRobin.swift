import Packet

/// `wrr`: weighted round robin with the semantics of IPVS's current `ip_vs_wrr.c`.
///
/// With `di` the gcd of the positive weights (1 if none) and `mw = max weight - (di - 1)`, the scheduler walks
/// the circular destination list in passes. A pass accepts a destination when it is available and
/// `weight >= cw`; each time the walk passes the list head, `cw` drops by `di`, and when it drops to 0 or
/// below it starts again at `mw`. So the first pass takes only the heaviest servers, the last (cw <= di) takes
/// every server with weight > 0, and over one full cycle server `i` is chosen `weight[i] / di` times.
/// `mw` is lowered by `di - 1` so that the last pass has `cw == 1`; the sequence is the same as with
/// `mw = max` because every weight is a multiple of `di`.
///
/// Unavailable destinations are skipped inside the weight test, exactly where IPVS tests
/// `IP_VS_DEST_F_OVERLOAD`; they still count for `di` and `mw`. The walk gives up (nil) when a whole cycle
/// of passes found nothing: `mw == 0` (every weight 0, or no destinations) fails at once without moving
/// anything; otherwise it stops after every destination was checked with `cw <= di`, leaving the cursor where
/// the walk stopped and `cw` where IPVS leaves it.
///
/// State: `cursor` (IPVS `cl`, -1 for the list head), `currentWeight` (`cw`), `maxWeight` (`mw`),
/// `weightStep` (`di`).
///
/// One liberty, invisible in the results: passes from the list head that cannot find anything
/// (`cw` above every available server's weight) are skipped arithmetically instead of walked, so a service
/// whose heavy servers are unavailable costs O(destinations) per selection rather than
/// O(destinations * max weight). The tests check this against a literal pass-by-pass walk.
public enum WeightedRoundRobin: SchedulingAlgorithm {
    public static var kind: SchedulerKind { .wrr }

    public static func makeState(destinations: UnsafeBufferPointer<SchedulingDestination>) -> SchedulerState {
        let (step, maxWeight) = weightParameters(destinations)
        return SchedulerState(cursor: -1, currentWeight: maxWeight, maxWeight: maxWeight, weightStep: step)
    }

    /// As IPVS on any destination change: the cursor goes back to the list head, `di` and `mw` are
    /// recomputed, and `cw` is kept when still in range, rounded onto the new step grid (plus one, so the
    /// pass in progress is not repeated) when the step is above 1.
    public static func destinationsChanged(
        state: inout SchedulerState, destinations: UnsafeBufferPointer<SchedulingDestination>
    ) {
        let (step, maxWeight) = weightParameters(destinations)
        state.cursor = -1
        state.weightStep = step
        state.maxWeight = maxWeight
        if state.currentWeight > maxWeight || state.currentWeight == 0 {
            state.currentWeight = maxWeight
        } else if step > 1 {
            state.currentWeight = (state.currentWeight / step) * step + 1
        }
    }

    /// (`di`, `mw`): the gcd of the positive weights (1 when there are none) and `max weight - (di - 1)`.
    static func weightParameters(_ destinations: UnsafeBufferPointer<SchedulingDestination>) -> (Int32, Int32) {
        var divisor: Int32 = 0
        var maximum: Int32 = 0
        for destination in destinations where destination.weight > 0 {
            divisor = divisor == 0 ? destination.weight : gcd(divisor, destination.weight)
            maximum = max(maximum, destination.weight)
        }
        if divisor == 0 { divisor = 1 }
        return (divisor, maximum - (divisor - 1))
    }

    static func gcd(_ a: Int32, _ b: Int32) -> Int32 {
        var (a, b) = (a, b)
        while b != 0 { (a, b) = (b, a % b) }
        return a
    }

    @inlinable @inline(__always)
    public static func select(
        state: inout SchedulerState, destinations: UnsafeBufferPointer<SchedulingDestination>, flow: FlowKey
    ) -> Int? {
        // Most selections: the destination after the cursor passes the current pass's test, the walk's
        // first step, decided here without setting the walk up.
        let cursor = Int(state.cursor)
        let next = cursor >= 0 && cursor < destinations.count ? cursor &+ 1 : 0
        if state.maxWeight > 0 && next < destinations.count {
            let destination = destinations[next]
            if destination.weight >= state.currentWeight && destination.isUsable {
                state.cursor = Int32(truncatingIfNeeded: next)
                return next
            }
        }
        return walk(state: &state, destinations: destinations)
    }

    /// The whole selection (see the type's notes).
    @usableFromInline @inline(never)
    static func walk(state: inout SchedulerState, destinations: UnsafeBufferPointer<SchedulingDestination>) -> Int? {
        let maxWeight = state.maxWeight
        if maxWeight <= 0 { return nil }
        let step = max(state.weightStep, 1)
        let count = destinations.count
        // Where this selection started (IPVS `last`); -1 is the list head.
        var start = Int(state.cursor)
        if start < 0 || start >= count { start = -1 }
        var cw = state.currentWeight
        var position = start
        // The destination at which the walk gives up, once it is known (IPVS `stop`).
        var stop = -1
        var lastPass = false
        var restarted = false
        // The largest weight among available destinations, computed only after a full pass found nothing.
        var heaviestAvailable: Int32 = -1

        while true {
            if position == -1 && stop == -1 && heaviestAvailable >= 0 {
                // Skip passes from the head that cannot succeed (cw above every available weight), as long
                // as the one after them is not yet a last pass (cw stays > di, so nothing else changes).
                let fruitless = cw - heaviestAvailable
                let aboveLastPass = cw - 2 &* step
                if fruitless > 0 && aboveLastPass > 0 {
                    let passes = min((fruitless + step - 1) / step, (aboveLastPass + step - 1) / step)
                    cw -= passes &* step
                }
            }
            var index = position + 1
            while index < count {
                let destination = destinations[index]
                if destination.isUsable && destination.weight >= cw {
                    state.cursor = Int32(truncatingIfNeeded: index)
                    state.currentWeight = cw
                    return index
                }
                if index == stop {
                    state.cursor = Int32(truncatingIfNeeded: index)
                    state.currentWeight = cw
                    return nil
                }
                index += 1
            }
            if position == -1 && heaviestAvailable < 0 {
                heaviestAvailable = 0
                for destination in destinations where destination.isUsable {
                    heaviestAvailable = max(heaviestAvailable, destination.weight)
                }
            }
            position = -1
            cw -= step
            if cw <= 0 {
                cw = maxWeight
                // Every destination was checked with cw <= di (a last pass, or one walk of the whole list).
                if lastPass || start == -1 {
                    state.cursor = -1
                    state.currentWeight = cw
                    return nil
                }
                restarted = true
            }
            lastPass = cw <= step
            if lastPass && restarted && start != -1 {
                // The walk began mid-list with cw <= di: check the destinations up to `start` once more.
                stop = start
            }
        }
    }
}
