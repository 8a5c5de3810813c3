import CXDirectorShared
import Packet

/// The XDP program's description of a frame it redirects (`struct xd_frame_meta`, in the metadata area just
/// before the frame): a whole TCP or UDP packet its checks found consistent, where its headers are, and
/// its service's index in the snapshot (or none: a reply). With it the worker skips its parse and its
/// service look-up: work the program has already done for the frame.
public enum FrameMetadata {
    /// Bytes before the frame.
    public static let size = MemoryLayout<xd_frame_meta>.size

    /// The description in front of the frame of `length` bytes at `frame` (which has at least `size` bytes
    /// of headroom), if its seal matches the frame; it is cleared on the way, so it is taken once.
    @inline(__always)
    static func take(_ frame: UnsafeMutableRawPointer, length: Int) -> xd_frame_meta? {
        let meta = frame - size
        let service = meta.load(as: UInt32.self)
        let lengths = meta.load(fromByteOffset: 4, as: UInt32.self)
        let kind = meta.load(fromByteOffset: 8, as: UInt32.self)
        let seal = meta.load(fromByteOffset: 12, as: UInt32.self)
        guard seal == xd_frame_meta_seal(service, lengths, kind, UInt32(truncatingIfNeeded: length)) else { return nil }
        meta.storeBytes(of: 0, toByteOffset: 12, as: UInt32.self)
        return xd_frame_meta(service: service, packet_length: UInt16(truncatingIfNeeded: lengths),
                             l3: UInt8(truncatingIfNeeded: lengths >> 16), l4: UInt8(truncatingIfNeeded: lengths >> 24),
                             proto: UInt8(truncatingIfNeeded: kind), family: UInt8(truncatingIfNeeded: kind >> 8),
                             pad: 0, seal: seal)
    }

    /// Writes what the program writes for the frame of `length` bytes at `frame` (whose headroom holds at
    /// least `size` bytes) when it steers it to service `service` (nil: as a reply): the parser's checks, the
    /// same fields. For the engine benchmark and tests, which play the kernel; returns false, writing
    /// nothing, where the program gives no description (not a whole, consistent TCP or UDP packet; an IPv6
    /// packet with a fragment header, atomic ones included, which the program steers as a fragment).
    public static func describe(_ frame: UnsafeMutableRawPointer, length: Int, service: Int?) -> Bool {
        var parsed = ParsedFrame()
        guard FrameParser.parse(UnsafeRawPointer(frame), length: length, into: &parsed, verifyingIPv4Checksum: false) == .ok,
              !parsed.isICMPError, parsed.isIPv4 || parsed.l4Offset == parsed.l3Offset &+ 40 else { return false }
        let serviceWord = service.map { UInt32($0) } ?? XD_META_NO_SERVICE
        let lengths = UInt32(parsed.ipPacketLength) | UInt32(parsed.l3Offset) << 16 | UInt32(parsed.l4Offset) << 24
        let kind = UInt32(parsed.key.proto) | UInt32(parsed.key.family) << 8
        let meta = frame - size
        meta.storeBytes(of: serviceWord, as: UInt32.self)
        meta.storeBytes(of: lengths, toByteOffset: 4, as: UInt32.self)
        meta.storeBytes(of: kind, toByteOffset: 8, as: UInt32.self)
        meta.storeBytes(of: xd_frame_meta_seal(serviceWord, lengths, kind, UInt32(truncatingIfNeeded: length)),
                        toByteOffset: 12, as: UInt32.self)
        return true
    }
}
