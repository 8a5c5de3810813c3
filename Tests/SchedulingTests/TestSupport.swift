import Packet
import Scheduling

/// Deterministic generator (SplitMix64) so failures reproduce.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// Destinations with the given weights, all available except the indices in `unavailable`.
func destinations(_ weights: [Int32], unavailable: Set<Int> = []) -> [SchedulingDestination] {
    weights.enumerated().map {
        SchedulingDestination(weight: $0.element, isAvailable: !unavailable.contains($0.offset))
    }
}

let anyFlow = FlowKey(
    source: .v4(0xC000_0201), sourcePort: 40000, destination: .v4(0xC633_6401), destinationPort: 80,
    proto: IPProtocolNumber.tcp)

/// `count` selections from `state` over `list`.
func picks(_ kind: SchedulerKind, _ list: [SchedulingDestination], state: inout SchedulerState, count: Int) -> [Int?] {
    list.withUnsafeBufferPointer { buffer in
        (0..<count).map { _ in Scheduler.select(kind, state: &state, destinations: buffer, flow: anyFlow) }
    }
}

/// `count` selections from a fresh state.
func picks(_ kind: SchedulerKind, _ list: [SchedulingDestination], count: Int) -> [Int?] {
    var state = list.withUnsafeBufferPointer { Scheduler.makeState(kind, destinations: $0) }
    return picks(kind, list, state: &state, count: count)
}

func makeState(_ kind: SchedulerKind, _ list: [SchedulingDestination]) -> SchedulerState {
    list.withUnsafeBufferPointer { Scheduler.makeState(kind, destinations: $0) }
}

func changed(_ kind: SchedulerKind, _ state: SchedulerState, _ list: [SchedulingDestination]) -> SchedulerState {
    var state = state
    list.withUnsafeBufferPointer { Scheduler.destinationsChanged(kind, state: &state, destinations: $0) }
    return state
}

/// A random TCP or UDP flow, IPv4 or IPv6.
func randomFlow(_ rng: inout SplitMix64, proto: UInt8? = nil) -> FlowKey {
    let proto = proto ?? (rng.next() & 1 == 0 ? IPProtocolNumber.tcp : IPProtocolNumber.udp)
    let port = UInt16(truncatingIfNeeded: rng.next())
    if rng.next() & 3 == 0 {
        return FlowKey(
            source: .v6(hi: rng.next(), lo: rng.next()), sourcePort: port,
            destination: .v6(hi: 0x2001_0db8_0000_0000, lo: 1), destinationPort: 443, proto: proto)
    }
    return FlowKey(
        source: .v4(UInt32(truncatingIfNeeded: rng.next())), sourcePort: port,
        destination: .v4(0xC633_6401), destinationPort: 80, proto: proto)
}
