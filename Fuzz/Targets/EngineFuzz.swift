// libFuzzer target: the per-packet engine on arbitrary bytes, through every forwarding method (DR, the three
// tunnels, NAT, FULLNAT) and both families, with the 256 bytes of headroom a UMEM frame gives. Half the inputs
// come described as the XDP program describes frames (`FrameMetadata`; the service named by the input's
// length, so also a wrong one, or none: a reply), a quarter with a description forged from the input's last
// bytes and sealed as the program seals (any offsets, lengths, protocol, family, service), so the path for
// described frames meets them too. Any trap, or a read or write outside the frame's buffer
// (AddressSanitizer), is a finding. The engine keeps its connections across inputs, as a worker does across
// packets.
import CXDirectorShared
import Dataplane
import Packet
import Scheduling

private let mac = MACAddress("02:aa:00:00:00:01")!
private let realMAC = MACAddress("0e:00:00:00:00:0a")!

private func service(_ proto: L4Protocol, _ vip: String, _ port: UInt16, _ method: ForwardingMethod,
                     tunnel: TunnelParameters = TunnelParameters(type: .ipip), real: String, local: [String] = []) -> SnapshotService {
    let key = ServiceKey(proto: proto, address: IPAddress(vip)!, port: port)
    let route = DestinationRoute(method: method, address: IPAddress(real)!, port: port, tunnel: tunnel)
    return SnapshotService(key: key, policy: ServicePolicy(scheduler: .rr, ipv6: key.endpoint.address.family == .ipv6),
                           destinations: [SnapshotDestination(weight: 1, mac: realMAC, route: route),
                                          SnapshotDestination(weight: 2, mac: realMAC, route: route)],
                           localAddresses: local.map { IPAddress($0)! })
}

nonisolated(unsafe) private var engine = ForwardingEngine(
    snapshot: ForwardingSnapshot(interfaceMAC: mac, services: [
        service(.tcp, "203.0.113.10", 80, .directRouting, real: "192.0.2.1"),
        service(.udp, "203.0.113.10", 53, .tunnel, real: "192.0.2.2"),
        service(.tcp, "203.0.113.11", 80, .tunnel, tunnel: TunnelParameters(type: .gue, port: 6080), real: "2001:db8::2"),
        service(.udp, "2001:db8:10::10", 53, .tunnel, tunnel: TunnelParameters(type: .gre, checksum: true), real: "192.0.2.3"),
        service(.tcp, "203.0.113.12", 80, .masquerading, real: "192.0.2.4"),
        service(.tcp, "2001:db8:10::12", 80, .masquerading, real: "2001:db8::4"),
        service(.tcp, "203.0.113.13", 80, .fullNAT, real: "192.0.2.5", local: ["198.51.100.200"]),
        service(.udp, "2001:db8:10::13", 53, .fullNAT, real: "2001:db8::5", local: ["2001:db8:20::200"]),
    ], mtu: 1500, sourceAddresses: [IPAddress("198.51.100.250")!, IPAddress("2001:db8:20::250")!]),
    connectionCapacity: 4096, counters: WorkerCounterBlock())
nonisolated(unsafe) private var clock: UInt32 = 100

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzEngine(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    guard size <= 3840 else { return -1 }  // a UMEM frame's room after the kernel's headroom
    let headroom = 256
    let buffer = UnsafeMutableRawPointer.allocate(byteCount: headroom + max(size, 1), alignment: 64)
    defer { buffer.deallocate() }
    buffer.initializeMemory(as: UInt8.self, repeating: 0, count: headroom)
    (buffer + headroom).copyMemory(from: data, byteCount: size)
    clock &+= UInt32(size & 3)
    if size & 4 == 0 {
        let named = size >> 3 & 15
        _ = FrameMetadata.describe(buffer + headroom, length: size, service: named < 9 ? named : nil)
    } else if size & 2 == 0 && size >= 8 {
        let tail = data + size - 8
        let service = UInt32(tail[0] % 12) &- 2  // 0xFFFF_FFFE, XD_META_NO_SERVICE, 0...9
        let lengths = UInt32(tail[1]) | UInt32(tail[2]) << 8 | UInt32(tail[3]) << 16 | UInt32(tail[4]) << 24
        let kind = UInt32(tail[5]) | UInt32(tail[6]) << 8
        let seal = xd_frame_meta_seal(service, lengths, kind, UInt32(size))
        let meta = buffer + headroom - FrameMetadata.size
        for (offset, word) in [service, lengths, kind, seal].enumerated() {
            meta.storeBytes(of: word, toByteOffset: offset * 4, as: UInt32.self)
        }
    }
    // A later fragment before its first is held: offered again as the ring loop would (untouched meanwhile).
    if engine.process(buffer + headroom, length: size, headroom: headroom, now: clock) == .hold {
        _ = engine.processHeld(buffer + headroom, length: size, headroom: headroom, now: clock, final: size & 1 == 1)
    }
    if size & 0xff == 0x7f { engine.sweep(now: clock, limit: 64) }
    return 0
}
