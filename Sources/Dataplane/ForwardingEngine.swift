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
    private var connections: ConnectionTable
    private var schedulerStates: UnsafeMutableBufferPointer<SchedulerState>
    private var parsed = ParsedFrame()
    private let counters: CounterWriter

    public init(snapshot: ForwardingSnapshot, connectionCapacity: Int, counters: WorkerCounterBlock) {
        self.snapshot = snapshot
        view = snapshot.view
        connections = ConnectionTable(capacity: connectionCapacity)
        schedulerStates = Self.makeStates(for: snapshot.view)
        self.counters = counters.writer
    }

    deinit { schedulerStates.deallocate() }

    /// Switches to a new configuration. Scheduler positions restart (IPVS does the same when a service's
    /// destinations change); connections keep their real servers.
    public mutating func adopt(_ next: ForwardingSnapshot) {
        let states = Self.makeStates(for: next.view)
        schedulerStates.deallocate()
        schedulerStates = states
        snapshot = next
        view = next.view
    }

    /// Decides and applies the fate of one frame of `length` bytes at `frame`. `now` is in seconds.
    @inline(__always)
    public mutating func process(_ frame: UnsafeMutableRawPointer, length: Int, now: UInt32) -> FrameVerdict {
        let status = FrameParser.parse(UnsafeRawPointer(frame), length: length, into: &parsed)
        guard status == .ok else { return .drop(Self.dropReason(for: status)) }
        guard let service = view.service(for: parsed.key) else { return .drop(.dropNoService) }

        let destination: Int
        if let slot = connections.find(parsed.key, now: now),
           Int(connections.destination(at: slot)) < view.destinations.count {
            destination = Int(connections.destination(at: slot))
            connections.update(at: slot, tcpFlags: parsed.tcpFlags, now: now)
        } else {
            // As IPVS: only a SYN opens a TCP connection; a stray segment is not scheduled.
            if parsed.key.proto == IPProtocolNumber.tcp && parsed.tcpFlags & 0x17 != 0x02 {  // SYN without ACK/FIN/RST
                return .drop(.dropTCPWithoutConnection)
            }
            guard let chosen = Scheduler.select(view.services[service].scheduler, state: &schedulerStates[service],
                                                destinations: view.destinations(of: service), flow: parsed.key)
            else { return .drop(.dropNoDestination) }
            destination = Int(view.services[service].first) + chosen
            if connections.insert(parsed.key, service: UInt32(service), destination: UInt32(destination),
                                  tcpFlags: parsed.tcpFlags, now: now) == nil {
                counters.add(.connectionTableFull)
            }
            counters.add(.newConnections)
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

    private static func makeStates(for view: SnapshotView) -> UnsafeMutableBufferPointer<SchedulerState> {
        let states = UnsafeMutableBufferPointer<SchedulerState>.allocate(capacity: max(view.services.count, 1))
        for index in 0..<view.services.count {
            states.initializeElement(at: index, to: Scheduler.makeState(view.services[index].scheduler,
                                                                         destinations: view.destinations(of: index)))
        }
        return states
    }
}
