// libFuzzer target: the rules file (ipvsadm-save syntax) on arbitrary text: a configuration or an error
// naming the line, never a trap; what loads saves and loads again to the same configuration.
import Control

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzRulesFile(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    guard let config = try? RulesFile.load(bytes: Array(UnsafeBufferPointer(start: data, count: size))) else { return 0 }
    let saved = RulesFile.save(config)
    guard let again = try? RulesFile.load(saved) else { fatalError("a saved configuration does not load again:\n\(saved)") }
    if RulesFile.save(again) != saved { fatalError("saving is not stable:\n\(saved)") }
    return 0
}
