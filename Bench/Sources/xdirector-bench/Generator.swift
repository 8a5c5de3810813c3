import CXDP
import Glibc
import Foundation

/// What the AF_XDP generator sends.
struct TrafficSpec {
    var proto: FrameTemplate.Proto = .tcp
    var wireSize = 64
    /// Distinct flows cycled through; 0 makes every packet a new flow (a SYN flood for TCP).
    var flows = 1024
    /// Packets per second over all queues; 0 sends as fast as possible.
    var rate = 0
    var seconds = 3.0
    /// Start stamping probes after this many seconds, one every `probeEvery` packets (0: no probes).
    var probeAfter = 0.0
    var probeEvery = 0
    var sourceMAC: [UInt8] = []
    var destinationMAC: [UInt8] = []
    var destination: UInt32 = 0
    var destinationPort: UInt16 = 80

    var template: FrameTemplate {
        FrameTemplate(proto: proto, wireSize: wireSize, sourceMAC: sourceMAC, destinationMAC: destinationMAC,
                      destination: destination, destinationPort: destinationPort)
    }

    /// Flow f goes to queue f mod `queues` (as RSS would keep a flow on one worker); 0: a new flow per packet.
    func flowsPerQueue(_ queues: Int) -> Int { flows > 0 ? max(flows / queues, 1) : 0 }
}

/// One TX-only AF_XDP socket with its own UMEM, on one queue of the generator's interface.
final class TransmitQueue {
    static let frameCount: UInt32 = 4096
    static let frameSize: UInt32 = 2048
    static let ringSize: UInt32 = 2048

    let area: UnsafeMutableRawPointer
    let fill = UnsafeMutablePointer<xsk_ring_prod>.allocate(capacity: 1)
    let completion = UnsafeMutablePointer<xsk_ring_cons>.allocate(capacity: 1)
    let tx = UnsafeMutablePointer<xsk_ring_prod>.allocate(capacity: 1)
    let fd: Int32
    /// Frames not with the kernel, as UMEM offsets (a stack).
    let free: UnsafeMutablePointer<UInt64>
    var freeCount: Int
    private let umem: OpaquePointer
    private let socket: OpaquePointer
    private var areaLength: Int { Int(Self.frameCount * Self.frameSize) }

    init(interface: String, queue: UInt32, template: FrameTemplate) throws {
        let length = Int(Self.frameCount * Self.frameSize)
        let mapped = mmap(nil, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0)
        guard let mapped, mapped != MAP_FAILED else { throw BenchError("cannot map the generator's UMEM") }
        area = mapped
        fill.initialize(to: xsk_ring_prod()); completion.initialize(to: xsk_ring_cons()); tx.initialize(to: xsk_ring_prod())
        var umemConfig = xsk_umem_config(fill_size: Self.ringSize, comp_size: Self.ringSize, frame_size: Self.frameSize,
                                         frame_headroom: 0, flags: 0)
        var createdUmem: OpaquePointer?
        guard xsk_umem__create(&createdUmem, mapped, UInt64(length), fill, completion, &umemConfig) == 0, let createdUmem else {
            throw BenchError("cannot register the generator's UMEM on queue \(queue)")
        }
        umem = createdUmem
        var config = xsk_socket_config()
        config.rx_size = 0
        config.tx_size = Self.ringSize
        config.libxdp_flags = UInt32(XSK_LIBXDP_FLAGS__INHIBIT_PROG_LOAD)
        var createdSocket: OpaquePointer?
        var result: Int32 = -1
        let txRing = tx
        for bind in [UInt16(XDP_ZEROCOPY), UInt16(XDP_COPY)] {
            config.bind_flags = UInt16(XDP_USE_NEED_WAKEUP) | bind
            result = interface.withCString { xsk_socket__create(&createdSocket, $0, queue, createdUmem, nil, txRing, &config) }
            if result == 0 { break }
        }
        guard result == 0, let createdSocket else {
            xsk_umem__delete(createdUmem)
            throw BenchError("cannot create the generator's AF_XDP socket on \(interface) queue \(queue): \(String(cString: strerror(-result)))")
        }
        socket = createdSocket
        fd = xsk_socket__fd(createdSocket)
        free = .allocate(capacity: Int(Self.frameCount))
        freeCount = Int(Self.frameCount)
        template.bytes.withUnsafeBytes { source in
            for frame in 0..<Int(Self.frameCount) {
                let offset = UInt64(frame) * UInt64(Self.frameSize)
                free[frame] = offset
                (mapped + Int(offset)).copyMemory(from: source.baseAddress!, byteCount: source.count)
            }
        }
    }

    deinit {
        xsk_socket__delete(socket)
        xsk_umem__delete(umem)
        munmap(area, areaLength)
        free.deallocate()
        fill.deallocate(); completion.deallocate(); tx.deallocate()
    }

    /// Takes back the frames the kernel has sent; returns how many.
    @inline(__always)
    func reclaim() -> Int {
        var index: UInt32 = 0
        let done = xsk_ring_cons__peek(completion, Self.ringSize, &index)
        for i in 0..<done {
            free[freeCount] = xsk_ring_cons__comp_addr(completion, index &+ i)!.pointee
            freeCount += 1
        }
        if done > 0 { xsk_ring_cons__release(completion, done) }
        return Int(done)
    }

    @inline(__always)
    func kick() {
        if xsk_ring_prod__needs_wakeup(tx) != 0 { _ = sendto(fd, nil, 0, Int32(MSG_DONTWAIT), nil, 0) }
    }
}

/// The AF_XDP transmit-only generator: one thread drives a socket per queue, flow f always on queue
/// f mod Q (so every flow reaches one worker, as RSS would arrange), at a fixed rate or as fast as it can.
struct AFXDPGenerator {
    static let batch = 64

    let interface: String
    let queues: Int
    let spec: TrafficSpec
    let statsPath: String

    func run() throws {
        let template = spec.template
        let sockets = try (0..<queues).map { try TransmitQueue(interface: interface, queue: UInt32($0), template: template) }
        var signals = StopSignals()
        let start = monotonicNanoseconds()
        let end = start &+ UInt64(spec.seconds * 1e9)
        let probeStart = start &+ UInt64(spec.probeAfter * 1e9)
        let flowsPerQueue = spec.flowsPerQueue(queues)
        var counters = [UInt64](repeating: 0, count: queues)  // packets handed to each socket
        var completed: UInt64 = 0
        var sentTotal: UInt64 = 0
        var tokens = 0.0
        var last = start
        var nextReport = start
        while true {
            let now = monotonicNanoseconds()
            if now >= end { break }
            if spec.rate > 0 {
                tokens = min(tokens + Double(now &- last) * 1e-9 * Double(spec.rate), Double(Self.batch * queues * 4))
                last = now
            }
            if now >= nextReport {
                StatsFile.write(statsPath, [completed, sentTotal])
                nextReport = now &+ 20_000_000
                if signals.wait(milliseconds: 0) { break }
            }
            for (q, socket) in sockets.enumerated() {
                completed &+= UInt64(socket.reclaim())
                var want = min(Self.batch, socket.freeCount)
                if spec.rate > 0 { want = min(want, Int(tokens)) }
                guard want > 0 else { socket.kick(); continue }
                var index: UInt32 = 0
                let reserved = Int(xsk_ring_prod__reserve(socket.tx, UInt32(want), &index))
                for i in 0..<reserved {
                    socket.freeCount -= 1
                    let address = socket.free[socket.freeCount]
                    let k = counters[q]
                    counters[q] = k &+ 1
                    let flow: UInt64, syn: Bool
                    if flowsPerQueue > 0 {
                        flow = (k % UInt64(flowsPerQueue)) &* UInt64(queues) &+ UInt64(q)
                        syn = k < UInt64(flowsPerQueue)
                    } else {
                        flow = k &* UInt64(queues) &+ UInt64(q)
                        syn = true
                    }
                    let probe = spec.probeEvery > 0 && now >= probeStart && k % UInt64(spec.probeEvery) == 0
                    template.stamp(socket.area + Int(address),
                                   source: 0x0A00_0000 | UInt32(truncatingIfNeeded: (flow >> 14) & 0xFF_FFFF),
                                   sourcePort: UInt16(1024 + (flow & 0x3FFF)), syn: syn,
                                   probe: probe ? monotonicNanoseconds() : 0)
                    let descriptor = xsk_ring_prod__tx_desc(socket.tx, index &+ UInt32(i))!
                    descriptor.pointee.addr = address
                    descriptor.pointee.len = UInt32(template.length)
                    descriptor.pointee.options = 0
                }
                if reserved > 0 {
                    xsk_ring_prod__submit(socket.tx, UInt32(reserved))
                    sentTotal &+= UInt64(reserved)
                    tokens -= Double(reserved)
                }
                socket.kick()
            }
        }
        // Let the last frames go out, so the count of what was offered is complete.
        for _ in 0..<250 {
            var pending = false
            for socket in sockets {
                completed &+= UInt64(socket.reclaim())
                // Unconditionally: the kernel completes the last batch only on a later transmit call.
                if socket.freeCount < Int(TransmitQueue.frameCount) { pending = true; _ = sendto(socket.fd, nil, 0, Int32(MSG_DONTWAIT), nil, 0) }
            }
            if !pending { break }
            usleep(2000)
        }
        StatsFile.write(statsPath, [completed, sentTotal])
    }
}

/// The live-frames generator: `bench_gen.bpf.c` run by BPF_PROG_RUN with BPF_F_TEST_XDP_LIVE_FRAMES, which
/// sends XDP frames into the interface with no socket buffer and no copy per packet (several times the AF_XDP
/// generator's rate in copy mode). One thread per queue, pinned to CPU q: veth hands an XDP frame to the
/// peer's queue of the sending CPU. As fast as possible, or paced (`spec.rate`): each thread sends what its
/// share of the rate owes since its start, in calls of at most `pacedBurst` packets, and sleeps 50 µs when it
/// is ahead, so bursts stay far below a forwarder's RX ring. Probes use the AF_XDP generator.
struct LiveFramesGenerator {
    /// Packets per BPF_PROG_RUN call: tens of milliseconds at the rates seen here.
    static let packetsPerCall: Int32 = 1 << 16
    /// Paced: the most packets one call sends (a burst the forwarder's 2048-frame RX ring absorbs).
    static let pacedBurst = 256

    let interface: String
    let queues: Int
    let spec: TrafficSpec
    let statsPath: String

    func run() throws {
        let template = spec.template
        let interfaceIndex = Int32(if_nametoindex(interface))
        guard interfaceIndex > 0 else { throw BenchError("no interface \(interface)") }
        let program = try LoadedProgram(base64: EmbeddedBPFObjects.bench_gen, program: "xdirector_bench_gen")
        let flowsPerQueue = spec.flowsPerQueue(queues)
        var config: [UInt32] = [UInt32(flowsPerQueue), UInt32(queues), template.ipBaseSum, template.l4BaseSum,
                                template.proto == .tcp ? 1 : 0]
        var key: UInt32 = 0
        guard bpf_map_update_elem(program.mapFD("gen_config"), &key, &config, UInt64(BPF_ANY)) == 0 else {
            throw BenchError("cannot configure the live-frames generator")
        }
        let fd = program.programFD, frame = template.bytes
        // One packet first: a kernel without live frames refuses here, before any thread starts.
        let first = Self.send(fd, frame: frame, interfaceIndex: interfaceIndex, count: 1)
        guard first == 0 else { throw BenchError("BPF_PROG_RUN with live frames refused: \(String(cString: strerror(errno)))") }

        var signals = StopSignals()
        let end = monotonicNanoseconds() &+ UInt64(spec.seconds * 1e9)
        let cpus = max(Int(ProcessInfo.processInfo.activeProcessorCount), 1)
        let finished = DispatchSemaphore(value: 0)
        for queue in 0..<queues {
            let perQueueRate = Double(spec.rate) / Double(queues)
            Thread {
                _ = cxdp_pin_thread_to_cpu(Int32(queue % cpus))
                let start = monotonicNanoseconds()
                var sent = 0
                while true {
                    let now = monotonicNanoseconds()
                    if now >= end { break }
                    var count = Self.packetsPerCall
                    if perQueueRate > 0 {
                        let owed = Int(Double(now &- start) * 1e-9 * perQueueRate) - sent
                        guard owed > 0 else { usleep(50); continue }
                        count = Int32(min(owed, Self.pacedBurst))
                    }
                    if Self.send(fd, frame: frame, interfaceIndex: interfaceIndex, count: count) != 0 { break }
                    sent += Int(count)
                }
                finished.signal()
            }.start()
        }
        let sent = { AttachedProgram.perCPU(fd: program.mapFD("gen_sent"), keys: 0..<1)[0] }
        while monotonicNanoseconds() < end {
            StatsFile.write(statsPath, [sent(), sent()])
            if signals.wait(milliseconds: 20) { return }
        }
        for _ in 0..<queues { finished.wait() }
        StatsFile.write(statsPath, [sent(), sent()])
    }

    /// Runs the generator's program `count` times on copies of `frame` arriving on `interfaceIndex`; its
    /// XDP_TX sends each copy out of that interface. 0 or -1 (errno set).
    static func send(_ fd: Int32, frame: [UInt8], interfaceIndex: Int32, count: Int32) -> Int32 {
        var context = xdp_md()
        context.data_end = UInt32(frame.count)
        context.ingress_ifindex = UInt32(interfaceIndex)
        return frame.withUnsafeBytes { bytes in
            withUnsafePointer(to: &context) { contextPointer in
                var options = bpf_test_run_opts()
                options.sz = MemoryLayout<bpf_test_run_opts>.size
                options.data_in = bytes.baseAddress
                options.data_size_in = UInt32(bytes.count)
                options.ctx_in = UnsafeRawPointer(contextPointer)
                options.ctx_size_in = UInt32(MemoryLayout<xdp_md>.size)
                options.`repeat` = count
                options.flags = UInt32(BPF_F_TEST_XDP_LIVE_FRAMES)
                return bpf_prog_test_run_opts(fd, &options)
            }
        }
    }
}
