import Packet
import Scheduling

/// What happens to one frame.
public enum FrameVerdict: Equatable, Sendable {
    /// Rewritten in place; send it from the same frame.
    case transmit
    /// Dropped, counted under the reason.
    case drop(WorkerCounter)
}

/// The per-packet logic of one worker, apart from rings and syscalls so it runs on fixture frames in
/// tests: parse, find or create the connection, schedule, rewrite in place. One per worker, never shared.
public struct ForwardingEngine: ~Copyable {
    private var snapshot: ForwardingSnapshot
    private var view: SnapshotView
    private var tracker: ConnectionTracker
    private var parsed = ParsedFrame()
    private let counters: CounterWriter

    public init(snapshot: ForwardingSnapshot, connectionCapacity: Int, counters: WorkerCounterBlock) {
        self.snapshot = snapshot
        view = snapshot.view
        tracker = ConnectionTracker(capacity: connectionCapacity, counters: snapshot.counters,
                                    timeouts: snapshot.timeouts,
                                    seed: UInt64(UInt(bitPattern: ObjectIdentifier(counters).hashValue)) | 1)
        tracker.adopt(services: snapshot.view.policies, destinations: snapshot.view.destinations)
        self.counters = counters.writer
    }

    /// Switches to a new configuration: connections follow their real servers to their new indices, those
    /// whose server is gone expire at their next packet (see `ConnectionTracker.adopt`).
    public mutating func adopt(_ next: ForwardingSnapshot) {
        tracker.adopt(services: next.view.policies, destinations: next.view.destinations)
        if tracker.timeouts != next.timeouts { tracker.timeouts = next.timeouts }
        snapshot = next
        view = next.view
    }

    /// Reclaims expired connections, a bounded number of slots at a time; call between batches.
    public mutating func sweep(now: UInt32, limit: Int = 1024) {
        tracker.sweep(now: now, limit: limit)
    }

    /// Decides and applies the fate of one frame of `length` bytes at `frame`. `now` is in seconds.
    @inline(__always)
    public mutating func process(_ frame: UnsafeMutableRawPointer, length: Int, now: UInt32) -> FrameVerdict {
        let status = FrameParser.parse(UnsafeRawPointer(frame), length: length, into: &parsed)
        guard status == .ok else { return .drop(Self.dropReason(for: status)) }
        guard let service = view.service(for: parsed.key) else { return .drop(.dropNoService) }

        let destination: Int
        switch tracker.admit(parsed.key, tcpFlags: parsed.tcpFlags, service: service, now: now) {
        case .existing(let chosen, _):
            destination = chosen
        case .new(let chosen, _):
            destination = chosen
            counters.add(.newConnections)
        case .overflow(let chosen):
            destination = chosen
            counters.add(.connectionTableFull)
        case .drop(.noDestination):
            return .drop(.dropNoDestination)
        case .drop(.noConnection), .drop(.destinationRemoved):
            return .drop(.dropTCPWithoutConnection)
        }

        let mac = view.macs[destination]
        guard mac != 0 else { return .drop(.dropUnresolvedDestination) }
        switch DirectRouting.rewrite(frame, parsed: parsed, source: view.interfaceMAC, destination: MACAddress(value: mac)) {
        case .transmit: return .transmit
        case .hopLimitExceeded: return .drop(.dropHopLimitExceeded)
        }
    }

    @inline(__always)
    private static func dropReason(for status: ParseStatus) -> WorkerCounter {
        switch status {
        case .ok, .truncated: return .dropTruncated
        case .notIP: return .dropNotIP
        case .fragment: return .dropFragment
        case .unsupportedProtocol: return .dropUnsupportedProtocol
        case .malformed: return .dropMalformed
        case .badIPv4Checksum: return .dropBadIPv4Checksum
        }
    }
}
