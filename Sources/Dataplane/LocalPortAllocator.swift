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
    private let addressCount: Int
    /// owners[address * portCount + i]: slot + 1 of the connection holding firstPort + i, 0 when never used.
    private let owners: UnsafeMutablePointer<Int32>
    private let cursors: UnsafeMutablePointer<Int32>

    /// The slice of worker `worker` of `workers`, on `addressCount` local addresses.
    public init(worker: Int, workers: Int, addressCount: Int) {
        let total = 65536 - Self.lowestPort
        let share = total / max(workers, 1)
        firstPort = Self.lowestPort + share * min(max(worker, 0), max(workers, 1) - 1)
        portCount = share
        self.addressCount = addressCount
        owners = .allocate(capacity: max(addressCount * share, 1))
        owners.initialize(repeating: 0, count: max(addressCount * share, 1))
        cursors = .allocate(capacity: max(addressCount, 1))
        cursors.initialize(repeating: 0, count: max(addressCount, 1))
    }

    deinit {
        owners.deallocate()
        cursors.deallocate()
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
