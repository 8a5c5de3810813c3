import Foundation

/// Classic pcap files (Ethernet link type) for looking at fixtures in Wireshark or tcpdump.
public enum Pcap {
    /// A whole pcap file holding `frames`, one per microsecond from time 0.
    public static func file(frames: [[UInt8]]) -> [UInt8] {
        // Global header: magic, version 2.4, timezone 0, sigfigs 0, snaplen, LINKTYPE_ETHERNET; little-endian.
        var bytes = littleEndian(UInt32(0xA1B2_C3D4)) + littleEndian(UInt16(2)) + littleEndian(UInt16(4))
        bytes += littleEndian(UInt32(0)) + littleEndian(UInt32(0))
        bytes += littleEndian(UInt32(65535)) + littleEndian(UInt32(1))
        for (index, frame) in frames.enumerated() {
            bytes += littleEndian(UInt32(0)) + littleEndian(UInt32(index))
            bytes += littleEndian(UInt32(frame.count)) + littleEndian(UInt32(frame.count)) + frame
        }
        return bytes
    }

    /// Writes `file(frames:)` to `path`.
    public static func write(frames: [[UInt8]], to path: String) throws {
        try Data(file(frames: frames)).write(to: URL(fileURLWithPath: path))
    }

    private static func littleEndian<T: FixedWidthInteger>(_ value: T) -> [UInt8] {
        (0..<(T.bitWidth / 8)).map { UInt8(truncatingIfNeeded: value >> ($0 * 8)) }
    }
}
