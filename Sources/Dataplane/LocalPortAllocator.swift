/// FULLNAT source ports for one worker. Each worker owns a disjoint slice of 1025...65535 on every local
/// address, so workers never hand out the same (address, port) and need no lock. A port records the
/// connection-table slot that holds it; it is free again once that slot no longer does (the connection
/// expired or the slot was reused), which the caller's `isHeld` tells. Allocation probes a bounded number
/// of ports from a moving cursor, so it never wraps onto a live connection and never spins: when none is
/// free it returns nil, and the caller counts and refuses the connection.
public struct LocalPortAllocator: ~Copyable {
    public static let lowestPort = 1025
    /// Ports examined per allocation before giving up.
    public static let probeLimit = 512

    public let firstPort: Int
    public let portCount: Int
    /// Local addresses (by index) this allocator has ports for; higher indices get none.
    public let addressCount: Int
    /// owners[address * portCount + i]: slot + 1 of the connection holding firstPort + i, 0 when never used.
    private let owners: UnsafeMutablePointer<Int32>
    private let cursors: UnsafeMutablePointer<Int32>
    /// True when `init` allocated the memory (freed in `deinit`); false over a caller's memory.
    private let ownsMemory: Bool

    /// The slice of worker `worker` of `workers`, on `addressCount` local addresses.
    public init(worker: Int, workers: Int, addressCount: Int) {
        let memory = UnsafeMutableRawPointer.allocate(byteCount: Self.byteCount(workers: workers, addressCount: addressCount),
                                                      alignment: 64)
        self.init(worker: worker, workers: workers, addressCount: addressCount, memory: memory, owned: true,
                  restoring: false)
    }

    /// The same slice over `memory`, which the caller provides and keeps valid while the allocator lives:
    /// `byteCount(workers:addressCount:)` bytes, 64-byte aligned, e.g. a shared file mapping that outlives
    /// the process; nothing is freed in `deinit`. `restoring` false: every port starts free (the memory is
    /// zeroed). `restoring` true: the owners and cursors found there (from an allocator of the same
    /// `workers` and `addressCount`) are kept, so ports held by restored connections stay held.
    public init(worker: Int, workers: Int, addressCount: Int, memory: UnsafeMutableRawPointer, restoring: Bool) {
        self.init(worker: worker, workers: workers, addressCount: addressCount, memory: memory, owned: false,
                  restoring: restoring)
    }

    private init(worker: Int, workers: Int, addressCount: Int, memory: UnsafeMutableRawPointer, owned: Bool,
                 restoring: Bool) {
        let share = Self.share(workers: workers)
        firstPort = Self.lowestPort + share * min(max(worker, 0), max(workers, 1) - 1)
        portCount = share
        self.addressCount = addressCount
        ownsMemory = owned
        let cursorBytes = Self.cursorBytes(addressCount)
        if !restoring {
            memory.initializeMemory(as: UInt8.self, repeating: 0,
                                    count: Self.byteCount(workers: workers, addressCount: addressCount))
        }
        cursors = memory.bindMemory(to: Int32.self, capacity: max(addressCount, 1))
        owners = (memory + cursorBytes).bindMemory(to: Int32.self, capacity: max(addressCount * share, 1))
    }

    deinit {
        if ownsMemory { UnsafeMutableRawPointer(cursors).deallocate() }
    }

    private static func share(workers: Int) -> Int { (65536 - lowestPort) / max(workers, 1) }

    private static func cursorBytes(_ addressCount: Int) -> Int { (max(addressCount, 1) * 4 + 63) & ~63 }

    /// The bytes an allocator needs over caller-provided memory: a cursor per address, then 4 bytes per
    /// port of the worker's slice per address (about 256 KiB per address, divided among the workers).
    public static func byteCount(workers: Int, addressCount: Int) -> Int {
        cursorBytes(addressCount) + (max(addressCount * share(workers: workers), 1) * 4 + 63) & ~63
    }

    /// Carries the ports of local addresses that stay across a configuration change: `mapping[new] = old`
    /// index, or -1 for an address that is new.
    public mutating func adopt(from old: borrowing LocalPortAllocator, mapping: UnsafeBufferPointer<Int32>) {
        guard old.portCount == portCount else { return }
        for (new, previous) in mapping.enumerated() where previous >= 0 && Int(previous) < old.addressCount && new < addressCount {
            (owners + new * portCount).update(from: old.owners + Int(previous) * portCount, count: portCount)
            cursors[new] = old.cursors[Int(previous)]
        }
    }

    /// `adopt` within this allocator's own memory: address `new` takes the ports of address `mapping[new]`
    /// (-1: none, all free). Allocates a copy of the ports while it moves them: call it between batches.
    public mutating func remap(mapping: UnsafeBufferPointer<Int32>) {
        let rows = addressCount * portCount
        guard rows > 0 else { return }
        let oldOwners = UnsafeMutablePointer<Int32>.allocate(capacity: rows)
        oldOwners.initialize(from: owners, count: rows)
        let oldCursors = UnsafeMutablePointer<Int32>.allocate(capacity: addressCount)
        oldCursors.initialize(from: cursors, count: addressCount)
        for new in 0..<addressCount {
            let previous = new < mapping.count ? Int(mapping[new]) : -1
            if previous >= 0 && previous < addressCount {
                (owners + new * portCount).update(from: oldOwners + previous * portCount, count: portCount)
                cursors[new] = oldCursors[previous]
            } else {
                (owners + new * portCount).update(repeating: 0, count: portCount)
                cursors[new] = 0
            }
        }
        oldOwners.deallocate()
        oldCursors.deallocate()
    }

    /// A free port on one of `addresses` (indices of local addresses, tried in turn), recorded as held by
    /// `slot`. `isHeld(slot, address, port)` says whether a recorded owner still holds the port.
    @inline(__always)
    public mutating func allocate(addresses: UnsafeBufferPointer<Int32>, for slot: Int32,
                                  isHeld: (Int32, Int, UInt16) -> Bool) -> (address: Int, port: UInt16)? {
        guard !addresses.isEmpty, portCount > 0 else { return nil }
        let perAddress = min(max(Self.probeLimit / addresses.count, 1), portCount)
        for index in addresses {
            let address = Int(index)
            guard address < addressCount else { continue }
            var cursor = Int(cursors[address])
            for _ in 0..<perAddress {
                cursor = cursor + 1 == portCount ? 0 : cursor + 1
                let owner = owners[address * portCount + cursor]
                let port = UInt16(firstPort + cursor)
                if owner == 0 || !isHeld(owner - 1, address, port) {
                    owners[address * portCount + cursor] = slot + 1
                    cursors[address] = Int32(cursor)
                    return (address, port)
                }
            }
            cursors[address] = Int32(cursor)
        }
        return nil
    }

    /// Gives a port back at once (the connection was refused after all).
    @inline(__always)
    public mutating func release(address: Int, port: UInt16) {
        let index = Int(port) - firstPort
        guard address < addressCount, index >= 0, index < portCount else { return }
        owners[address * portCount + index] = 0
    }
}
