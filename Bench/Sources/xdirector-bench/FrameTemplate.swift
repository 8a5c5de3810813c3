/// The generator's frames: Ethernet + IPv4 + TCP or UDP, built once per UMEM frame; per packet only the
/// source address and port, the TCP flags, an optional probe and the two checksums change. Checksums are
/// finished from sums precomputed over the fixed fields (RFC 1071 sums are additive over 16-bit words).
struct FrameTemplate {
    enum Proto: String, CaseIterable { case tcp, udp }

    static let ipOffset = 14
    static let sourceAddressOffset = 26
    static let sourcePortOffset = 34
    static let probeLength = 16

    let proto: Proto
    /// Frame bytes without the FCS (a "64-byte" frame on the wire is 60 bytes here).
    let length: Int
    let bytes: [UInt8]
    let payloadOffset: Int
    /// Sums over the fixed fields, finished per packet (here and by the live-frames generator's program).
    let ipBaseSum: UInt32
    let l4BaseSum: UInt32
    var l4ChecksumOffset: Int { proto == .tcp ? 50 : 40 }
    var canProbe: Bool { length - payloadOffset >= Self.probeLength }

    /// `wireSize` includes the 4-byte FCS, as frame sizes are quoted in this field (64 ... 1518).
    init(proto: Proto, wireSize: Int, sourceMAC: [UInt8], destinationMAC: [UInt8], destination: UInt32, destinationPort: UInt16) {
        self.proto = proto
        let l4Length = proto == .tcp ? 20 : 8
        payloadOffset = 14 + 20 + l4Length
        length = max(wireSize - 4, payloadOffset)
        var frame = [UInt8](repeating: 0, count: length)
        frame.replaceSubrange(0..<6, with: destinationMAC)
        frame.replaceSubrange(6..<12, with: sourceMAC)
        frame[12] = 0x08; frame[13] = 0x00
        let ipLength = length - 14
        frame[14] = 0x45
        frame[16] = UInt8(ipLength >> 8); frame[17] = UInt8(ipLength & 0xFF)
        frame[20] = 0x40  // DF
        frame[22] = 64
        frame[23] = proto == .tcp ? 6 : 17
        for i in 0..<4 { frame[30 + i] = UInt8(truncatingIfNeeded: destination >> (24 - 8 * i)) }
        frame[36] = UInt8(destinationPort >> 8); frame[37] = UInt8(destinationPort & 0xFF)
        let segmentLength = ipLength - 20
        if proto == .tcp {
            frame[38 + 4] = 0x12; frame[38 + 5] = 0x34  // sequence number: anything fixed
            frame[46] = 5 << 4                           // data offset 5 words; flags per packet
            frame[48] = 0xFF; frame[49] = 0xFF           // window
        } else {
            frame[38] = UInt8(segmentLength >> 8); frame[39] = UInt8(segmentLength & 0xFF)
        }
        bytes = frame
        ipBaseSum = Self.sum(frame[14..<34])
        // Pseudo-header (source address added per packet) + the segment with checksum, source port and flags 0.
        l4BaseSum = Self.sum(frame[30..<34]) &+ UInt32(proto == .tcp ? 6 : 17) &+ UInt32(segmentLength) &+ Self.sum(frame[34...])
    }

    private static func sum(_ bytes: ArraySlice<UInt8>) -> UInt32 {
        var total: UInt32 = 0
        var index = bytes.startIndex
        while index + 1 < bytes.endIndex {
            total &+= UInt32(bytes[index]) << 8 | UInt32(bytes[index + 1])
            index += 2
        }
        if index < bytes.endIndex { total &+= UInt32(bytes[index]) << 8 }
        return total
    }

    @inline(__always)
    private static func finish(_ sum: UInt32) -> UInt16 {
        var folded = sum
        while folded > 0xFFFF { folded = (folded & 0xFFFF) &+ (folded >> 16) }
        return ~UInt16(truncatingIfNeeded: folded)
    }

    @inline(__always)
    private static func store16(_ frame: UnsafeMutableRawPointer, _ offset: Int, _ value: UInt16) {
        frame.storeBytes(of: value.bigEndian, toByteOffset: offset, as: UInt16.self)
    }

    /// Rewrites the per-packet fields of a frame that holds this template. `probe` is a CLOCK_MONOTONIC
    /// stamp (0: no probe; the magic is cleared so a reused frame is not mistaken for one).
    @inline(__always)
    func stamp(_ frame: UnsafeMutableRawPointer, source: UInt32, sourcePort: UInt16, syn: Bool, probe: UInt64) {
        frame.storeBytes(of: source.bigEndian, toByteOffset: Self.sourceAddressOffset, as: UInt32.self)
        Self.store16(frame, Self.sourcePortOffset, sourcePort)
        let addressSum = (source >> 16) &+ (source & 0xFFFF)
        Self.store16(frame, 24, Self.finish(ipBaseSum &+ addressSum))
        var l4 = l4BaseSum &+ addressSum &+ UInt32(sourcePort)
        if proto == .tcp {
            let flags: UInt8 = syn ? 0x02 : 0x10
            frame.storeBytes(of: flags, toByteOffset: 47, as: UInt8.self)
            l4 &+= UInt32(flags)
        }
        if canProbe {
            let magic = probe == 0 ? 0 : BenchBPF.probeMagic
            frame.storeBytes(of: magic, toByteOffset: payloadOffset, as: UInt32.self)
            frame.storeBytes(of: probe, toByteOffset: payloadOffset + 8, as: UInt64.self)
            // The fields are stored little-endian; sum them as the big-endian words they are on the wire.
            l4 &+= Self.wordSum(UInt64(magic)) &+ Self.wordSum(probe)
        }
        var checksum = Self.finish(l4)
        if proto == .udp && checksum == 0 { checksum = 0xFFFF }
        Self.store16(frame, l4ChecksumOffset, checksum)
    }

    /// Sum of the 16-bit wire words of a little-endian stored value.
    @inline(__always)
    private static func wordSum(_ value: UInt64) -> UInt32 {
        let swapped = value.byteSwapped  // wire order, read as a big-endian number
        return UInt32(truncatingIfNeeded: swapped >> 48) &+ UInt32(truncatingIfNeeded: (swapped >> 32) & 0xFFFF)
            &+ UInt32(truncatingIfNeeded: (swapped >> 16) & 0xFFFF) &+ UInt32(truncatingIfNeeded: swapped & 0xFFFF)
    }
}
