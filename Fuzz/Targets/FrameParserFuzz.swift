// libFuzzer target: the frame parser on arbitrary bytes. It must never trap nor read outside the frame
// (AddressSanitizer watches the copy, which is exactly `size` bytes long).
import Packet

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzFrameParser(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let frame = UnsafeMutableRawPointer.allocate(byteCount: max(size, 1), alignment: 8)
    defer { frame.deallocate() }
    frame.copyMemory(from: data, byteCount: size)
    var parsed = ParsedFrame()
    for verifying in [true, false] {
        let status = FrameParser.parse(UnsafeRawPointer(frame), length: size, into: &parsed, verifyingIPv4Checksum: verifying)
        if status == .ok { _ = FrameParser.ipv4HeaderIsValid(UnsafeRawPointer(frame), parsed: parsed) }
    }
    return 0
}
