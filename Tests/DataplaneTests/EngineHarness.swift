import Dataplane

/// Runs `input` through `engine` as a worker's frame: in a UMEM-sized buffer with AF_XDP's 256 bytes of
/// headroom before it. `before` may write into the buffer (the headroom: XDP metadata) before the engine
/// runs, `after` may read it afterwards; both get the buffer and the frame's offset in it. Returns the
/// verdict and the frame sent (the `length` bytes from `offset` the verdict names; empty when none).
func runFrame(_ engine: inout ForwardingEngine, _ input: [UInt8], now: UInt32 = 100,
              before: (UnsafeMutableRawBufferPointer, Int) -> Void = { _, _ in },
              after: (UnsafeMutableRawBufferPointer, Int) -> Void = { _, _ in }) -> (FrameVerdict, [UInt8]) {
    let headroom = 256
    var buffer = [UInt8](repeating: 0, count: 4096)
    buffer.replaceSubrange(headroom..<headroom + input.count, with: input)
    return buffer.withUnsafeMutableBytes { raw in
        before(raw, headroom)
        let verdict = engine.process(raw.baseAddress! + headroom, length: input.count, headroom: headroom, now: now)
        after(raw, headroom)
        guard case .transmit(let offset, let length) = verdict else { return (verdict, []) }
        return (verdict, Array(raw[headroom + offset..<headroom + offset + length]))
    }
}
