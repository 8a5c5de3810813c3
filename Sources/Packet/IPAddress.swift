/// An IPv4 or IPv6 address, parsed from and printed as text without libc (RFC 5952 form for IPv6).
public enum IPAddress: Hashable, Sendable, CustomStringConvertible {
    /// Host-order value: 192.0.2.1 is 0xC000_0201.
    case v4(UInt32)
    /// Host-order halves: `hi` holds the first eight bytes as written.
    case v6(hi: UInt64, lo: UInt64)

    public enum Family: UInt8, Sendable {
        case ipv4 = 4
        case ipv6 = 6
    }

    public var family: Family {
        if case .v4 = self { return .ipv4 }
        return .ipv6
    }

    /// The address in network byte order: 4 bytes for IPv4, 16 for IPv6.
    public var bytes: [UInt8] {
        switch self {
        case .v4(let value):
            return (0..<4).map { UInt8(truncatingIfNeeded: value >> (24 - 8 * $0)) }
        case .v6(let hi, let lo):
            return (0..<8).map { UInt8(truncatingIfNeeded: hi >> (56 - 8 * $0)) }
                + (0..<8).map { UInt8(truncatingIfNeeded: lo >> (56 - 8 * $0)) }
        }
    }

    /// Builds an address from 4 or 16 network-order bytes.
    public init?<C: Collection>(bytes: C) where C.Element == UInt8 {
        let array = Array(bytes)
        switch array.count {
        case 4:
            self = .v4(array.reduce(0) { $0 << 8 | UInt32($1) })
        case 16:
            let hi = array[0..<8].reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
            let lo = array[8..<16].reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
            self = .v6(hi: hi, lo: lo)
        default:
            return nil
        }
    }

    /// Parses dotted-quad IPv4 or IPv6 text (with `::` and an embedded dotted quad). No zone ids.
    public init?(_ text: String) {
        if text.contains(":") {
            guard let words = Self.parseIPv6(Substring(text)) else { return nil }
            var hi: UInt64 = 0, lo: UInt64 = 0
            for i in 0..<4 { hi = hi << 16 | UInt64(words[i]) }
            for i in 4..<8 { lo = lo << 16 | UInt64(words[i]) }
            self = .v6(hi: hi, lo: lo)
        } else {
            guard let value = Self.parseIPv4(Substring(text)) else { return nil }
            self = .v4(value)
        }
    }

    public var description: String {
        switch self {
        case .v4(let value):
            return (0..<4).map { String((value >> (24 - 8 * $0)) & 0xff) }.joined(separator: ".")
        case .v6(let hi, let lo):
            // RFC 5952 section 5: IPv4-mapped addresses (::ffff:0:0/96) in mixed notation, as inet_ntop does.
            if hi == 0 && lo >> 32 == 0xFFFF {
                return "::ffff:" + IPAddress.v4(UInt32(truncatingIfNeeded: lo)).description
            }
            let words = (0..<4).map { UInt16(truncatingIfNeeded: hi >> (48 - 16 * $0)) }
                + (0..<4).map { UInt16(truncatingIfNeeded: lo >> (48 - 16 * $0)) }
            return Self.formatIPv6(words)
        }
    }

    private static func parseIPv4(_ text: Substring) -> UInt32? {
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 4 else { return nil }
        var value: UInt32 = 0
        for part in parts {
            // Decimal only, no leading zeros (inet_pton refuses octal-looking forms too).
            guard !part.isEmpty, part.count <= 3, part.allSatisfy({ $0.isASCII && $0.isNumber }),
                  part.count == 1 || part.first != "0", let octet = UInt32(part), octet <= 255
            else { return nil }
            value = value << 8 | octet
        }
        return value
    }

    private static func parseIPv6(_ text: Substring) -> [UInt16]? {
        let gaps = text.ranges(of: "::")
        guard gaps.count <= 1 else { return nil }
        let halves = gaps.first.map { [String(text[..<$0.lowerBound]), String(text[$0.upperBound...])] }
            ?? [String(text)]
        func groups(_ part: String, allowTrailingIPv4: Bool) -> [UInt16]? {
            if part.isEmpty { return [] }
            var result: [UInt16] = []
            let fields = part.split(separator: ":", omittingEmptySubsequences: false)
            for (i, field) in fields.enumerated() {
                if field.contains(".") {
                    guard allowTrailingIPv4, i == fields.count - 1, let v4 = parseIPv4(field) else { return nil }
                    result.append(UInt16(v4 >> 16))
                    result.append(UInt16(v4 & 0xffff))
                } else {
                    guard (1...4).contains(field.count), field.allSatisfy({ $0.isHexDigit }),
                          let word = UInt16(field, radix: 16) else { return nil }
                    result.append(word)
                }
            }
            return result
        }
        if halves.count == 1 {
            guard let all = groups(halves[0], allowTrailingIPv4: true), all.count == 8 else { return nil }
            return all
        }
        guard let head = groups(halves[0], allowTrailingIPv4: false),
              let tail = groups(halves[1], allowTrailingIPv4: true),
              head.count + tail.count <= 7 else { return nil }
        return head + Array(repeating: 0, count: 8 - head.count - tail.count) + tail
    }

    private static func formatIPv6(_ words: [UInt16]) -> String {
        // RFC 5952: compress the longest run (the first if tied) of two or more zero words.
        var bestStart = -1, bestLength = 0, runStart = -1
        for i in 0...8 {
            if i < 8 && words[i] == 0 {
                if runStart < 0 { runStart = i }
            } else if runStart >= 0 {
                if i - runStart > bestLength { bestStart = runStart; bestLength = i - runStart }
                runStart = -1
            }
        }
        if bestLength < 2 { return words.map { String($0, radix: 16) }.joined(separator: ":") }
        let head = words[..<bestStart].map { String($0, radix: 16) }.joined(separator: ":")
        let tail = words[(bestStart + bestLength)...].map { String($0, radix: 16) }.joined(separator: ":")
        return head + "::" + tail
    }
}

extension IPAddress {
    /// The flat form, as `FlowKey` holds addresses: host-order halves, an IPv4 address in the low half.
    @inlinable @inline(__always)
    var v6Halves: (hi: UInt64, lo: UInt64) {
        switch self {
        case .v4(let value): return (0, UInt64(value))
        case .v6(let hi, let lo): return (hi, lo)
        }
    }
}
