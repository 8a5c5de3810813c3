extension PacketBuilder {
    /// The frame's IP packet cut into fragments as a sender's kernel cuts it, each in a frame with this
    /// builder's Ethernet header (and VLAN tag): at most `dataPerFragment` bytes of data each (rounded down to
    /// a multiple of 8), the last taking the rest. IPv4: the header copied into each, DF cleared, MF on all
    /// but the last, the offset, `identification`'s low 16 bits, its checksum recomputed. IPv6: a fragment
    /// header (next header: the packet's, the offset, M, `identification`) after the fixed header.
    public func fragments(dataPerFragment: Int, identification: UInt32) -> [[UInt8]] {
        let frame = build()
        let l2 = Array(frame.prefix(vlanTCI == nil ? 14 : 18))
        let packet = buildIPPacket()
        let isIPv4 = packet[0] >> 4 == 4
        let headerLength = isIPv4 ? Int(packet[0] & 0x0F) * 4 : 40
        let data = Array(packet[headerLength...])
        let step = max(dataPerFragment / 8 * 8, 8)
        var result: [[UInt8]] = []
        for start in stride(from: 0, to: data.count, by: step) {
            let chunk = Array(data[start..<min(start + step, data.count)])
            let more: UInt16 = start + step < data.count ? 1 : 0
            var header = Array(packet.prefix(headerLength))
            if isIPv4 {
                header.writeUInt16(UInt16(headerLength + chunk.count), at: 2)
                header.writeUInt16(UInt16(truncatingIfNeeded: identification), at: 4)
                header.writeUInt16(more << 13 | UInt16(start / 8), at: 6)
                header.writeUInt16(0, at: 10)
                header.writeUInt16(ReferenceChecksum.checksum(header), at: 10)
                result.append(l2 + header + chunk)
            } else {
                let nextHeader = header[6]
                header[6] = 44
                header.writeUInt16(UInt16(8 + chunk.count), at: 4)
                let fragmentHeader = [nextHeader, 0] + bigEndianBytes(UInt16(start / 8) << 3 | more)
                    + bigEndianBytes(identification)
                result.append(l2 + header + fragmentHeader + chunk)
            }
        }
        return result
    }
}
