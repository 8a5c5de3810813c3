import Packet

/// One entry of a locality table (lblc, lblcr): a destination address and the server(s) serving it.
@usableFromInline
struct LocalityEntry {
    @usableFromInline var addressHi: UInt64
    @usableFromInline var addressLo: UInt64
    @usableFromInline var family: UInt8
    @usableFromInline var memberCount: UInt8
    /// Last selection through the entry (IPVS `lastuse`).
    @usableFromInline var lastUse: UInt32
    /// Last change of the server set (IPVS `set.lastmod`, lblcr).
    @usableFromInline var lastModified: UInt32
    /// Destination indices; lblc uses the first only.
    @usableFromInline var members: (Int32, Int32, Int32, Int32, Int32, Int32, Int32, Int32)

    @usableFromInline
    init(addressHi: UInt64, addressLo: UInt64, family: UInt8, memberCount: UInt8, lastUse: UInt32,
         lastModified: UInt32, members: (Int32, Int32, Int32, Int32, Int32, Int32, Int32, Int32)) {
        self.addressHi = addressHi
        self.addressLo = addressLo
        self.family = family
        self.memberCount = memberCount
        self.lastUse = lastUse
        self.lastModified = lastModified
        self.members = members
    }
}

/// The per-worker tables of lblc and lblcr. IPVS keys them by the packet's destination address, which for
/// an address:port service is the virtual address itself, so a service needs few entries: each table holds
/// `capacity` entries and replaces the least recently used when full. An entry unused for `expiration`
/// seconds (IPVS's default `lblc_expiration`, 24 hours) is forgotten. A change of the service's server list
/// clears the table (IPVS keeps entries pointing at servers that stay; here they would point at indices).
/// Each worker keeps its own tables.
public enum LocalityTable {
    public static let capacity = 64
    public static let expiration: UInt32 = 24 * 60 * 60
    /// lblcr: a server set with more than one member drops its most loaded one when unchanged this long.
    public static let setExpiration: UInt32 = 24 * 60 * 60
    /// lblcr: the most servers in one set.
    public static let maxMembers = 8

    static func make() -> SchedulerState {
        var state = SchedulerState()
        let entries = UnsafeMutablePointer<LocalityEntry>.allocate(capacity: capacity)
        state.storage = UnsafeMutableRawPointer(entries)
        state.storageCount = 0
        return state
    }

    static func clear(_ state: inout SchedulerState) {
        if state.storage == nil { state = make() }
        state.storageCount = 0
    }

    /// The live entry for the flow's destination address, its last use updated, or nil.
    @inlinable
    static func find(_ state: inout SchedulerState, _ flow: FlowKey) -> UnsafeMutablePointer<LocalityEntry>? {
        guard let raw = state.storage else { return nil }
        let entries = raw.assumingMemoryBound(to: LocalityEntry.self)
        for index in 0..<Int(state.storageCount) {
            let entry = entries + index
            if entry.pointee.addressLo == flow.dstLo && entry.pointee.addressHi == flow.dstHi
                && entry.pointee.family == flow.family {
                if Int32(bitPattern: state.clock &- entry.pointee.lastUse) >= Int32(bitPattern: expiration) {
                    return nil
                }
                entry.pointee.lastUse = state.clock
                return entry
            }
        }
        return nil
    }

    /// An entry for the flow's destination address holding `member` alone: the existing one (expired), a
    /// free one, or the least recently used.
    @inlinable
    static func insert(_ state: inout SchedulerState, _ flow: FlowKey, member: Int) {
        guard let raw = state.storage else { return }
        let entries = raw.assumingMemoryBound(to: LocalityEntry.self)
        var target = -1
        var oldest = -1
        for index in 0..<Int(state.storageCount) {
            let entry = entries[index]
            if entry.addressLo == flow.dstLo && entry.addressHi == flow.dstHi && entry.family == flow.family {
                target = index
                break
            }
            if oldest < 0 || Int32(bitPattern: entry.lastUse &- entries[oldest].lastUse) < 0 { oldest = index }
        }
        if target < 0 {
            if Int(state.storageCount) < capacity {
                target = Int(state.storageCount)
                state.storageCount += 1
            } else {
                target = max(oldest, 0)
            }
        }
        let m = Int32(member)
        (entries + target).initialize(to: LocalityEntry(
            addressHi: flow.dstHi, addressLo: flow.dstLo, family: flow.family, memberCount: 1,
            lastUse: state.clock, lastModified: state.clock, members: (m, m, m, m, m, m, m, m)))
    }

    /// IPVS's lblc/lblcr `is_overloaded`: more active connections than its weight while some server of the
    /// service is under half its weight.
    @inlinable
    static func isOverloaded(_ index: Int, _ destinations: UnsafeBufferPointer<SchedulingDestination>) -> Bool {
        let destination = destinations[index]
        guard destination.activeConnections > destination.weight else { return false }
        for other in destinations where Int64(other.activeConnections) * 2 < Int64(other.weight) { return true }
        return false
    }

    /// A new choice by weighted least connection, remembered for the flow's destination address alone.
    @inlinable
    static func schedule(_ state: inout SchedulerState, _ flow: FlowKey,
                         _ destinations: UnsafeBufferPointer<SchedulingDestination>) -> Int? {
        guard let chosen = LeastOverhead.select(destinations, overhead: { $0.connectionOverhead }) else { return nil }
        insert(&state, flow, member: chosen)
        return chosen
    }

    @inlinable
    static func member(_ entry: UnsafeMutablePointer<LocalityEntry>, _ slot: Int) -> Int {
        withUnsafeBytes(of: entry.pointee.members) { Int($0.load(fromByteOffset: slot * 4, as: Int32.self)) }
    }

    @inlinable
    static func setMember(_ entry: UnsafeMutablePointer<LocalityEntry>, _ slot: Int, _ value: Int) {
        withUnsafeMutableBytes(of: &entry.pointee.members) {
            $0.storeBytes(of: Int32(value), toByteOffset: slot * 4, as: Int32.self)
        }
    }
}

/// lblc and lblcr keep their locality table the same way: made empty, emptied when the server list changes.
public protocol LocalityScheduling: SchedulingAlgorithm {}

extension LocalityScheduling {
    public static func makeState(destinations: UnsafeBufferPointer<SchedulingDestination>) -> SchedulerState {
        LocalityTable.make()
    }

    public static func destinationsChanged(
        state: inout SchedulerState, destinations: UnsafeBufferPointer<SchedulingDestination>
    ) {
        LocalityTable.clear(&state)
    }
}

/// `lblc`: locality-based least connection (`ip_vs_lblc.c`): the server last chosen for the packet's
/// destination address, while it is available, has weight and is not overloaded in lblc's sense (more active
/// connections than its weight while another server is under half its weight); otherwise a new choice by
/// weighted least connection, remembered for that address.
public enum LocalityBasedLeastConnection: LocalityScheduling {
    public static var kind: SchedulerKind { .lblc }

    @inlinable
    public static func select(
        state: inout SchedulerState, destinations: UnsafeBufferPointer<SchedulingDestination>, flow: FlowKey
    ) -> Int? {
        if let entry = LocalityTable.find(&state, flow) {
            let index = LocalityTable.member(entry, 0)
            if index >= 0 && index < destinations.count && destinations[index].isAvailable
                && destinations[index].weight > 0 && !LocalityTable.isOverloaded(index, destinations) {
                return index
            }
        }
        return LocalityTable.schedule(&state, flow, destinations)
    }
}

/// `lblcr`: locality-based least connection with replication (`ip_vs_lblcr.c`): each destination address
/// has a set of servers; the set's least loaded usable member (overhead per weight) serves unless it is
/// overloaded in lblc's sense, in which case a server chosen by weighted least connection joins the set
/// (up to `LocalityTable.maxMembers`). A set of several members unchanged for `setExpiration` drops its
/// most loaded member with weight; as in IPVS, the least loaded one, picked before, serves even when it is
/// the one dropped.
///
/// Unlike IPVS, which puts a new member at the head of the set, members are kept in the order they joined
/// (and the last takes a dropped member's place): the order only breaks ties between equally loaded members.
public enum LocalityBasedReplication: LocalityScheduling {
    public static var kind: SchedulerKind { .lblcr }

    @inlinable
    public static func select(
        state: inout SchedulerState, destinations: UnsafeBufferPointer<SchedulingDestination>, flow: FlowKey
    ) -> Int? {
        guard let entry = LocalityTable.find(&state, flow) else { return LocalityTable.schedule(&state, flow, destinations) }
        // IPVS `ip_vs_dest_set_min` (usable members) and `ip_vs_dest_set_max` (members with weight).
        var least = -1, most = -1, mostSlot = -1
        for slot in 0..<Int(entry.pointee.memberCount) {
            let index = LocalityTable.member(entry, slot)
            guard index >= 0 && index < destinations.count else { continue }
            let d = destinations[index]
            if d.weight > 0 && (most < 0 || LeastOverhead.lighter(destinations[most], than: d)) {
                most = index
                mostSlot = slot
            }
            if d.acceptsNewConnections && (least < 0 || LeastOverhead.lighter(d, than: destinations[least])) {
                least = index
            }
        }
        if entry.pointee.memberCount > 1 && mostSlot >= 0
            && Int32(bitPattern: state.clock &- entry.pointee.lastModified) > Int32(bitPattern: LocalityTable.setExpiration) {
            let last = Int(entry.pointee.memberCount) - 1
            LocalityTable.setMember(entry, mostSlot, LocalityTable.member(entry, last))
            entry.pointee.memberCount -= 1
            entry.pointee.lastModified = state.clock
        }
        if least >= 0 && !LocalityTable.isOverloaded(least, destinations) { return least }
        guard let chosen = LeastOverhead.select(destinations, overhead: { $0.connectionOverhead }) else { return nil }
        var present = false
        for slot in 0..<Int(entry.pointee.memberCount) where LocalityTable.member(entry, slot) == chosen { present = true }
        if !present && Int(entry.pointee.memberCount) < LocalityTable.maxMembers {
            LocalityTable.setMember(entry, Int(entry.pointee.memberCount), chosen)
            entry.pointee.memberCount += 1
            entry.pointee.lastModified = state.clock
        }
        return chosen
    }
}
