import CXDP
import Glibc

/// Sizes of one queue's UMEM and rings. Every frame is either with the kernel (fill/RX/TX/completion) or
/// being processed, so the fill ring holds them all and a returned frame always finds room.
public struct XSKConfiguration: Codable, Sendable {
    public var frameCount: UInt32 = 4096
    /// 4096: one frame per page, so the 256 bytes of XDP headroom before each packet stay ours to
    /// prepend tunnel headers into, in place.
    public var frameSize: UInt32 = 4096
    public var rxRingSize: UInt32 = 2048
    public var txRingSize: UInt32 = 2048
    public var completionRingSize: UInt32 = 2048
    /// Try zero-copy first (real NICs); fall back to copy mode (veth, generic XDP) when the driver refuses.
    public var allowZeroCopy = true

    public init() {}
    var fillRingSize: UInt32 { frameCount }

    /// What the kernel keeps before each received packet in a frame (`XDP_PACKET_HEADROOM`).
    public static let kernelHeadroom = 256
    /// An Ethernet header with one 802.1Q tag: what a frame carries beyond the MTU.
    public static let linkHeaderBytes = 14 + 4

    /// The largest frame a UMEM frame receives whole: the kernel drops a longer one (`rx_dropped`).
    public var largestFrame: Int { Int(frameSize) - Self.kernelHeadroom }

    /// The largest interface MTU whose frames (a VLAN tag included) fit a UMEM frame: 3822 for 4096-byte frames.
    public var largestMTU: Int { largestFrame - Self.linkHeaderBytes }
}

/// One queue's UMEM, its four rings and its AF_XDP socket, created through libxdp without letting libxdp
/// load a program of its own (the director attaches `xdirector_xdp`). Owned by one worker thread.
public final class XSKQueue {
    public let queue: UInt32
    public let zeroCopy: Bool
    public let configuration: XSKConfiguration
    let area: UnsafeMutableRawPointer
    let fill: UnsafeMutablePointer<xsk_ring_prod>
    let completion: UnsafeMutablePointer<xsk_ring_cons>
    let rx: UnsafeMutablePointer<xsk_ring_cons>
    let tx: UnsafeMutablePointer<xsk_ring_prod>
    public let fd: Int32
    private let areaLength: Int
    private let umem: OpaquePointer
    private let socket: OpaquePointer

    /// Attempts 50 ms apart while the queue is busy: 3 s in all.
    static let busyRetries = 60

    public init(interface: NetworkInterface, queue: UInt32, configuration: XSKConfiguration = .init()) throws(DataplaneError) {
        self.queue = queue
        self.configuration = configuration
        areaLength = Int(configuration.frameCount) * Int(configuration.frameSize)
        let mapped = mmap(nil, areaLength, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0)
        guard let mapped, mapped != MAP_FAILED else { throw DataplaneError("cannot map the UMEM of queue \(queue)", errno: errno) }
        area = mapped
        fill = .allocate(capacity: 1); fill.initialize(to: xsk_ring_prod())
        completion = .allocate(capacity: 1); completion.initialize(to: xsk_ring_cons())
        rx = .allocate(capacity: 1); rx.initialize(to: xsk_ring_cons())
        tx = .allocate(capacity: 1); tx.initialize(to: xsk_ring_prod())

        var umemConfig = xsk_umem_config()
        umemConfig.fill_size = configuration.fillRingSize
        umemConfig.comp_size = configuration.completionRingSize
        umemConfig.frame_size = configuration.frameSize
        umemConfig.frame_headroom = 0
        umemConfig.flags = 0
        var createdUmem: OpaquePointer?
        let umemResult = xsk_umem__create(&createdUmem, mapped, UInt64(areaLength), fill, completion, &umemConfig)
        guard umemResult == 0, let createdUmem else {
            Self.release(area: mapped, length: areaLength, rings: (fill, completion, rx, tx))
            throw DataplaneError("cannot register the UMEM of queue \(queue)", errno: umemResult)
        }
        umem = createdUmem

        var socketConfig = xsk_socket_config()
        socketConfig.rx_size = configuration.rxRingSize
        socketConfig.tx_size = configuration.txRingSize
        socketConfig.libxdp_flags = UInt32(XSK_LIBXDP_FLAGS__INHIBIT_PROG_LOAD)
        var createdSocket: OpaquePointer?
        var result: Int32 = -EOPNOTSUPP
        var usedZeroCopy = false
        let (rxRing, txRing) = (rx, tx)
        // A director that was just killed leaves its sockets to be released by the kernel a moment later:
        // the queue is busy until then, so EBUSY is retried for a bounded time.
        for attempt in 0...Self.busyRetries {
            for zeroCopy in configuration.allowZeroCopy ? [true, false] : [false] {
                socketConfig.bind_flags = UInt16(XDP_USE_NEED_WAKEUP) | UInt16(zeroCopy ? XDP_ZEROCOPY : XDP_COPY)
                result = interface.name.withCString { xsk_socket__create(&createdSocket, $0, queue, createdUmem, rxRing, txRing, &socketConfig) }
                if result == 0 { usedZeroCopy = zeroCopy; break }
            }
            guard result == -EBUSY && attempt < Self.busyRetries else { break }
            usleep(50_000)
        }
        guard result == 0, let createdSocket else {
            xsk_umem__delete(createdUmem)
            Self.release(area: mapped, length: areaLength, rings: (fill, completion, rx, tx))
            throw DataplaneError("cannot create the AF_XDP socket of \(interface.name) queue \(queue)", errno: result)
        }
        socket = createdSocket
        fd = xsk_socket__fd(createdSocket)
        zeroCopy = usedZeroCopy

        // Hand every frame to the kernel for receiving.
        var index: UInt32 = 0
        let reserved = xsk_ring_prod__reserve(fill, configuration.frameCount, &index)
        for frame in 0..<reserved {
            xsk_ring_prod__fill_addr(fill, index &+ frame).pointee = UInt64(frame) * UInt64(configuration.frameSize)
        }
        xsk_ring_prod__submit(fill, reserved)
    }

    /// The rings as the worker's `RingLoop` drives them.
    public var rings: XSKRings {
        XSKRings(fill: fill, completion: completion, rx: rx, tx: tx, area: area, fd: fd, frameSize: configuration.frameSize)
    }

    /// The kernel's counts for this socket (`getsockopt(SOL_XDP, XDP_STATISTICS)`): frames it could not
    /// deliver. A system call: read once a second or on request, never per batch. Nil when the kernel
    /// answers nothing.
    public func statistics() -> XSKSocketStatistics? {
        var raw = xdp_statistics()
        var length = socklen_t(MemoryLayout<xdp_statistics>.size)
        guard getsockopt(fd, SOL_XDP, XDP_STATISTICS, &raw, &length) == 0 else { return nil }
        // An older kernel fills only the first three fields (and says so in `length`): the rest stay 0.
        return XSKSocketStatistics(rxDropped: raw.rx_dropped, rxInvalidDescriptors: raw.rx_invalid_descs,
                                   txInvalidDescriptors: raw.tx_invalid_descs, rxRingFull: raw.rx_ring_full,
                                   fillRingEmpty: raw.rx_fill_ring_empty_descs, txRingEmpty: raw.tx_ring_empty_descs)
    }

    deinit {
        xsk_socket__delete(socket)
        xsk_umem__delete(umem)
        Self.release(area: area, length: areaLength, rings: (fill, completion, rx, tx))
    }

    private static func release(
        area: UnsafeMutableRawPointer, length: Int,
        rings: (UnsafeMutablePointer<xsk_ring_prod>, UnsafeMutablePointer<xsk_ring_cons>,
                UnsafeMutablePointer<xsk_ring_cons>, UnsafeMutablePointer<xsk_ring_prod>)
    ) {
        munmap(area, length)
        rings.0.deallocate(); rings.1.deallocate(); rings.2.deallocate(); rings.3.deallocate()
    }
}
