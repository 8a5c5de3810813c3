/// Hex dumps and byte-exact frame comparison for readable test failures.
public enum HexDump {
    /// `offset  16 bytes in hex  |ASCII|`, one line per 16 bytes. Offsets in `highlight` get a `^^`
    /// marker on the line below.
    public static func format(_ bytes: [UInt8], highlight: Set<Int> = []) -> String {
        var lines: [String] = []
        var lineStart = 0
        while lineStart < bytes.count {
            let lineEnd = min(lineStart + 16, bytes.count)
            var hex = ""
            var marks = ""
            var ascii = ""
            for index in lineStart..<lineEnd {
                hex += hexByte(bytes[index]) + " "
                marks += highlight.contains(index) ? "^^ " : "   "
                let printable = bytes[index] >= 0x20 && bytes[index] < 0x7F
                ascii.append(printable ? Character(Unicode.Scalar(bytes[index])) : ".")
                if index - lineStart == 7 { hex += " "; marks += " " }
            }
            let offset = String(lineStart, radix: 16)
            let prefix = String(repeating: "0", count: max(0, 4 - offset.count)) + offset + "  "
            let width = 16 * 3 + 1
            lines.append(prefix + hex + String(repeating: " ", count: max(0, width - hex.count)) + " |" + ascii + "|")
            if marks.contains("^") {
                lines.append(String(repeating: " ", count: prefix.count) + marks)
            }
            lineStart = lineEnd
        }
        if lines.isEmpty { lines.append("(empty)") }
        return lines.joined(separator: "\n")
    }

    /// Bytes as continuous hex, `0a1b2c…`.
    public static func compact(_ bytes: [UInt8]) -> String {
        bytes.map(hexByte).joined()
    }

    /// Parses continuous hex (whitespace allowed), the inverse of `compact`. Traps on bad text: test data.
    public static func bytes(_ text: String) -> [UInt8] {
        let digits = text.filter { !$0.isWhitespace }
        precondition(digits.count % 2 == 0, "odd number of hex digits")
        var result: [UInt8] = []
        var index = digits.startIndex
        while index < digits.endIndex {
            let next = digits.index(index, offsetBy: 2)
            guard let byte = UInt8(digits[index..<next], radix: 16) else {
                preconditionFailure("bad hex \(digits[index..<next])")
            }
            result.append(byte)
            index = next
        }
        return result
    }

    static func hexByte(_ byte: UInt8) -> String {
        byte < 16 ? "0" + String(byte, radix: 16) : String(byte, radix: 16)
    }
}

/// Nil when `actual` equals `expected`; otherwise a report with the differing offsets and the input,
/// expected and actual frames in hex (differences marked in the last two). Use as
/// `if let report = frameMismatch(...) { XCTFail(report) }`.
public func frameMismatch(input: [UInt8], expected: [UInt8], actual: [UInt8]) -> String? {
    guard expected != actual else { return nil }
    var differing = Set<Int>()
    for index in 0..<max(expected.count, actual.count)
    where index >= expected.count || index >= actual.count || expected[index] != actual[index] {
        differing.insert(index)
    }
    let listed = differing.sorted().prefix(32).map { "0x" + String($0, radix: 16) }.joined(separator: ", ")
    return """
        frame mismatch: expected \(expected.count) bytes, got \(actual.count); differing offsets: \(listed)\
        \(differing.count > 32 ? ", …" : "")
        input:
        \(HexDump.format(input))
        expected:
        \(HexDump.format(expected, highlight: differing))
        actual:
        \(HexDump.format(actual, highlight: differing))
        """
}
