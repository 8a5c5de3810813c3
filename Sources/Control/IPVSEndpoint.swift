import Packet

// The text form of addresses in ipvsadm arguments: `192.0.2.1:80`, `[2001:db8::1]:80`, and for real
// servers also `192.0.2.1`, `[2001:db8::1]` or `2001:db8::1` without a port. Numeric only: host and service
// names would make a rules file's meaning depend on the resolver at load time.

/// Why a piece of text is not an address with a port.
public enum EndpointError: Error, Equatable, Sendable, CustomStringConvertible {
    case empty
    /// `[2001:db8::1` without its `]`.
    case unclosedBracket
    /// Something other than `:PORT` after `]`.
    case textAfterBracket(String)
    /// Brackets around something that is not an IPv6 address.
    case notIPv6InBrackets(String)
    case invalidIPv4(String)
    case invalidIPv6(String)
    /// A name where a numeric address must be.
    case hostName(String)
    case invalidAddress(String)
    /// Nothing before the `:` of `ADDRESS:PORT`.
    case missingAddress
    /// Nothing after the `:` of `ADDRESS:PORT`.
    case missingPort
    /// A service name such as `http` where a port number must be.
    case portName(String)
    case invalidPort(String)
    case portOutOfRange(String)
    case zeroPort
    /// No port where one is needed; `ipv6` adds how to write one.
    case noPort(ipv6: Bool)

    public var description: String {
        switch self {
        case .empty:
            return "empty address"
        case .unclosedBracket:
            return "missing ']' after the IPv6 address"
        case .textAfterBracket(let rest):
            return "expected ':PORT' after ']', found '\(rest)'"
        case .notIPv6InBrackets(let text):
            return "'\(text)' in brackets is not an IPv6 address"
        case .invalidIPv4(let text):
            return "'\(text)' is not an IPv4 address"
        case .invalidIPv6(let text):
            return "'\(text)' is not an IPv6 address (write an IPv6 address with a port as [ADDRESS]:PORT)"
        case .hostName(let text):
            return "'\(text)' is not a numeric address (host names are not supported yet)"
        case .invalidAddress(let text):
            return "'\(text)' is not an IP address"
        case .missingAddress:
            return "no address before ':'"
        case .missingPort:
            return "no port after ':'"
        case .portName(let text):
            return "port '\(text)' is not a number (service names are not supported yet)"
        case .invalidPort(let text):
            return "'\(text)' is not a port number"
        case .portOutOfRange(let text):
            return "port \(text) is out of range (1-65535)"
        case .zeroPort:
            return "port 0 is not allowed"
        case .noPort(let ipv6):
            return "no port given" + (ipv6 ? " (write an IPv6 address with a port as [ADDRESS]:PORT)" : "")
        }
    }
}

extension L4Endpoint {
    /// Parses `ADDRESS:PORT` or `[IPV6]:PORT`; the port is required and may not be 0.
    public init(parsing text: String) throws(EndpointError) {
        let (address, port) = try Self.parseAddress(text)
        guard let port else { throw .noPort(ipv6: address.family == .ipv6) }
        self.init(address: address, port: port)
    }

    /// The inverse of `description`: nil for text `init(parsing:)` refuses.
    public init?(_ description: String) {
        do throws(EndpointError) {
            try self.init(parsing: description)
        } catch {
            return nil
        }
    }

    /// Parses an address with an optional port: `192.0.2.1[:PORT]`, `[IPV6][:PORT]`, or a bare IPv6 address
    /// (which cannot carry a port: `2001:db8::1:80` is an address).
    public static func parseAddress(_ text: String) throws(EndpointError) -> (IPAddress, UInt16?) {
        guard !text.isEmpty else { throw .empty }

        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]") else { throw .unclosedBracket }
            let inner = String(text[text.index(after: text.startIndex)..<close])
            let rest = text[text.index(after: close)...]
            guard let address = IPAddress(inner), address.family == .ipv6 else {
                throw .notIPv6InBrackets(inner)
            }
            if rest.isEmpty { return (address, nil) }
            guard rest.first == ":" else { throw .textAfterBracket(String(rest)) }
            return (address, try parsePort(rest.dropFirst()))
        }

        let colons = text.count(where: { $0 == ":" })
        if colons > 1 {
            guard let address = IPAddress(text) else { throw .invalidIPv6(text) }
            return (address, nil)
        }

        let host: Substring
        var port: UInt16? = nil
        if let colon = text.firstIndex(of: ":") {
            host = text[..<colon]
            guard !host.isEmpty else { throw .missingAddress }
            port = try parsePort(text[text.index(after: colon)...])
        } else {
            host = text[...]
        }
        if let address = IPAddress(String(host)) { return (address, port) }
        if host.allSatisfy({ $0 == "." || $0.isASCII && $0.isNumber }) { throw .invalidIPv4(String(host)) }
        if host.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-" || $0 == ".") }) {
            throw .hostName(String(host))
        }
        throw .invalidAddress(String(host))
    }

    /// A decimal port in 1...65535.
    static func parsePort(_ text: Substring) throws(EndpointError) -> UInt16 {
        guard !text.isEmpty else { throw .missingPort }
        guard text.allSatisfy({ $0.isASCII && $0.isNumber }) else {
            if text.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-") }),
               text.contains(where: \.isLetter) {
                throw .portName(String(text))
            }
            throw .invalidPort(String(text))
        }
        let digits = text.drop { $0 == "0" }
        guard digits.count <= 5, let value = UInt32(digits.isEmpty ? "0" : String(digits)), value <= 65535 else {
            throw .portOutOfRange(String(text))
        }
        guard value != 0 else { throw .zeroPort }
        return UInt16(value)
    }
}
