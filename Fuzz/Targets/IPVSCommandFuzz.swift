// libFuzzer target: the ipvsadm command parser (a command line, split into words as the shell would, and
// the request parser that reads listings) on arbitrary text: it answers a command or an error, never traps.
import Control

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzIPVSCommand(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let text = String(decoding: UnsafeBufferPointer(start: data, count: size), as: UTF8.self)
    let words = IPVSCommand.words(of: text)
    _ = try? IPVSCommand(arguments: words)
    _ = try? IPVSRequest(arguments: words)
    _ = try? IPVSCommand.parse(line: text)
    return 0
}
