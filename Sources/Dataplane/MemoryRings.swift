import CXDP
import Glibc

/// A queue's UMEM and four rings in plain memory, laid out as the kernel maps them (producer, consumer and
/// flags words, then the descriptors) and read through the same `xsk_ring_prod`/`xsk_ring_cons` structs, so
/// `RingLoop` runs over them exactly as over a socket's rings, without root and without a syscall. The
/// methods under "The kernel's side" play the kernel: they take frames from the fill ring and deliver them
/// on RX, and take transmitted frames from TX back through the completion ring.
///
/// Ownership: one thread drives both sides (a test, or the engine benchmark).
public final class MemoryRings {
    public let frameCount: UInt32
    public let frameSize: UInt32
    /// The kernel's headroom before each received frame (XDP's 256 bytes in copy mode).
    public let headroom: Int
    public let rings: XSKRings
    private let ringSize: UInt32
    /// Producer, consumer and flags words of each ring, a cache line apart, then its descriptors.
    private let ringMemory: [UnsafeMutableRawPointer]
    private let areaLength: Int

    /// Rings of `ringSize` (a power of two) over `frameCount` chunks of `frameSize`; every chunk starts on
    /// the fill ring, as `XSKQueue` leaves it.
    public init(frameCount: UInt32 = 4096, frameSize: UInt32 = 4096, ringSize: UInt32 = 2048, headroom: Int = 256) {
        precondition(ringSize.nonzeroBitCount == 1 && frameCount.nonzeroBitCount == 1 && frameSize.nonzeroBitCount == 1)
        self.frameCount = frameCount
        self.frameSize = frameSize
        self.ringSize = ringSize
        self.headroom = headroom
        areaLength = Int(frameCount) * Int(frameSize)
        let area = UnsafeMutableRawPointer.allocate(byteCount: areaLength, alignment: 4096)
        area.initializeMemory(as: UInt8.self, repeating: 0, count: areaLength)
        // The fill ring holds every frame (as `XSKConfiguration.fillRingSize`); the others `ringSize`.
        let sizes: [UInt32] = [frameCount, ringSize, ringSize, ringSize]
        let descriptorBytes = [8, 8, MemoryLayout<xdp_desc>.stride, MemoryLayout<xdp_desc>.stride]
        var memory: [UnsafeMutableRawPointer] = []
        for (size, bytes) in zip(sizes, descriptorBytes) {
            let length = 192 + Int(size) * bytes
            let block = UnsafeMutableRawPointer.allocate(byteCount: length, alignment: 64)
            block.initializeMemory(as: UInt8.self, repeating: 0, count: length)
            memory.append(block)
        }
        ringMemory = memory
        let fill = UnsafeMutablePointer<xsk_ring_prod>.allocate(capacity: 1)
        let completion = UnsafeMutablePointer<xsk_ring_cons>.allocate(capacity: 1)
        let rx = UnsafeMutablePointer<xsk_ring_cons>.allocate(capacity: 1)
        let tx = UnsafeMutablePointer<xsk_ring_prod>.allocate(capacity: 1)
        fill.initialize(to: Self.producer(memory[0], size: sizes[0]))
        completion.initialize(to: Self.consumer(memory[1], size: sizes[1]))
        rx.initialize(to: Self.consumer(memory[2], size: sizes[2]))
        tx.initialize(to: Self.producer(memory[3], size: sizes[3]))
        rings = XSKRings(fill: fill, completion: completion, rx: rx, tx: tx, area: area, fd: -1, frameSize: frameSize)
        var index: UInt32 = 0
        let reserved = xsk_ring_prod__reserve(fill, frameCount, &index)
        for frame in 0..<reserved {
            xsk_ring_prod__fill_addr(fill, index &+ frame).pointee = UInt64(frame) * UInt64(frameSize)
        }
        xsk_ring_prod__submit(fill, reserved)
    }

    deinit {
        rings.area.deallocate()
        for block in ringMemory { block.deallocate() }
        rings.fill.deallocate(); rings.completion.deallocate(); rings.rx.deallocate(); rings.tx.deallocate()
    }

    private static func words(_ block: UnsafeMutableRawPointer) -> (UnsafeMutablePointer<UInt32>, UnsafeMutablePointer<UInt32>, UnsafeMutablePointer<UInt32>) {
        (block.assumingMemoryBound(to: UInt32.self), (block + 64).assumingMemoryBound(to: UInt32.self),
         (block + 128).assumingMemoryBound(to: UInt32.self))
    }

    /// As `xsk_socket__create` sets up a ring the application produces into.
    private static func producer(_ block: UnsafeMutableRawPointer, size: UInt32) -> xsk_ring_prod {
        let (producer, consumer, flags) = words(block)
        var ring = xsk_ring_prod()
        ring.mask = size - 1; ring.size = size
        ring.producer = producer; ring.consumer = consumer; ring.flags = flags; ring.ring = block + 192
        ring.cached_prod = producer.pointee
        ring.cached_cons = consumer.pointee &+ size
        return ring
    }

    /// As `xsk_socket__create` sets up a ring the application consumes from.
    private static func consumer(_ block: UnsafeMutableRawPointer, size: UInt32) -> xsk_ring_cons {
        let (producer, consumer, flags) = words(block)
        var ring = xsk_ring_cons()
        ring.mask = size - 1; ring.size = size
        ring.producer = producer; ring.consumer = consumer; ring.flags = flags; ring.ring = block + 192
        ring.cached_prod = producer.pointee
        ring.cached_cons = consumer.pointee
        return ring
    }

    // MARK: The kernel's side

    /// Frames the kernel may receive into: on the fill ring, not yet taken.
    public var fillLevel: UInt32 { rings.fill.pointee.producer.pointee &- rings.fill.pointee.consumer.pointee }
    /// Frames delivered on RX that the application has not released.
    public var rxLevel: UInt32 { rings.rx.pointee.producer.pointee &- rings.rx.pointee.consumer.pointee }
    /// Frames submitted on TX that the kernel has not taken.
    public var txLevel: UInt32 { rings.tx.pointee.producer.pointee &- rings.tx.pointee.consumer.pointee }
    /// Completions the application has not reclaimed.
    public var completionLevel: UInt32 {
        rings.completion.pointee.producer.pointee &- rings.completion.pointee.consumer.pointee
    }

    /// Sets or clears `XDP_RING_NEED_WAKEUP` on the fill and TX rings (the application then calls
    /// `recvfrom`/`sendto`, which fail on this socket-less queue and are counted).
    public func setNeedsWakeup(_ needed: Bool) {
        let flag = needed ? UInt32(XDP_RING_NEED_WAKEUP) : 0
        rings.fill.pointee.flags.pointee = flag
        rings.tx.pointee.flags.pointee = flag
    }

    /// Receives up to `count` frames as the kernel does: takes a chunk from the fill ring, lets `write` put a
    /// frame `headroom` bytes into it and return its length, and delivers it on RX. Stops early when the
    /// fill ring is empty or RX full; returns how many were delivered.
    @inline(__always)
    public func receive(count: Int, _ write: (_ frame: UnsafeMutableRawPointer, _ index: Int) -> Int) -> Int {
        let fill = rings.fill.pointee, rx = rings.rx.pointee
        let fillConsumer = fill.consumer.pointee, fillProducer = fill.producer.pointee
        let rxProducer = rx.producer.pointee, rxConsumer = rx.consumer.pointee
        let available = min(Int(fillProducer &- fillConsumer), Int(rx.size &- (rxProducer &- rxConsumer)), count)
        let addresses = fill.ring.assumingMemoryBound(to: UInt64.self)
        let descriptors = rx.ring.assumingMemoryBound(to: xdp_desc.self)
        // Aligned chunks, as the kernel takes them: any address within a chunk stands for the chunk (a frame
        // the worker drops goes back to the fill ring at the address RX gave it, past the headroom).
        let chunkStart = ~UInt64(frameSize - 1)
        for i in 0..<max(available, 0) {
            let chunk = addresses[Int((fillConsumer &+ UInt32(i)) & fill.mask)] & chunkStart
            let address = chunk &+ UInt64(headroom)
            let length = write(rings.area + Int(address), i)
            descriptors[Int((rxProducer &+ UInt32(i)) & rx.mask)] = xdp_desc(addr: address, len: UInt32(length), options: 0)
        }
        guard available > 0 else { return 0 }
        fill.consumer.pointee = fillConsumer &+ UInt32(available)
        rx.producer.pointee = rxProducer &+ UInt32(available)
        return available
    }

    /// Sends every frame on TX as the kernel does: hands each to `sent` (frame, length) and returns its
    /// address on the completion ring. Returns how many it took.
    @inline(__always)
    @discardableResult
    public func transmit(_ sent: (_ frame: UnsafeMutableRawPointer, _ length: Int) -> Void = { _, _ in }) -> Int {
        let tx = rings.tx.pointee, completion = rings.completion.pointee
        let txConsumer = tx.consumer.pointee, txProducer = tx.producer.pointee
        let completionProducer = completion.producer.pointee
        let room = Int(completion.size &- (completionProducer &- completion.consumer.pointee))
        let count = min(Int(txProducer &- txConsumer), room)
        let descriptors = tx.ring.assumingMemoryBound(to: xdp_desc.self)
        let addresses = completion.ring.assumingMemoryBound(to: UInt64.self)
        for i in 0..<max(count, 0) {
            let descriptor = descriptors[Int((txConsumer &+ UInt32(i)) & tx.mask)]
            sent(rings.area + Int(descriptor.addr), Int(descriptor.len))
            addresses[Int((completionProducer &+ UInt32(i)) & completion.mask)] = descriptor.addr
        }
        guard count > 0 else { return 0 }
        tx.consumer.pointee = txConsumer &+ UInt32(count)
        completion.producer.pointee = completionProducer &+ UInt32(count)
        return count
    }
}
