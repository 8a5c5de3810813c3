/// Rules files: one ipvsadm command a line, as `ipvsadm-save -n` prints them, so that an IPVS director's
/// saved rules load here unchanged and `save` gives back what `load` read.
public enum RulesFile {
    /// Applies every line of `text`, in order, to an empty configuration. Blank lines and `#` comments are
    /// skipped; the first bad line stops the load. `source` names the file in error messages.
    public static func load(_ text: String, source: String = "rules") throws(RulesFileError) -> DirectorConfig {
        try apply(text, to: DirectorConfig(), source: source)
    }

    /// `load` on a file's bytes: a line that is not UTF-8 is refused with its number, as any bad line is.
    public static func load(bytes: [UInt8], source: String = "rules") throws(RulesFileError) -> DirectorConfig {
        if let text = String(validating: bytes, as: UTF8.self) { return try load(text, source: source) }
        // Lines end as `lines(of:)` ends them (LF, CRLF or CR); the first that is not UTF-8 is named.
        var line = 1, start = 0, index = 0
        while true {
            let atEnd = index == bytes.count
            if atEnd || bytes[index] == UInt8(ascii: "\n") || bytes[index] == UInt8(ascii: "\r") {
                let slice = bytes[start..<index]
                if String(validating: slice, as: UTF8.self) == nil {
                    throw RulesFileError(source: source, line: line,
                                         text: String(decoding: slice, as: UTF8.self).trimmingWhitespace(),
                                         reason: .notText)
                }
                if atEnd { break }
                if bytes[index] == UInt8(ascii: "\r"), index + 1 < bytes.count, bytes[index + 1] == UInt8(ascii: "\n") {
                    index += 1
                }
                line += 1
                start = index + 1
            }
            index += 1
        }
        // Not reached: bytes that are not UTF-8 have a line that is not (line ends are ASCII).
        throw RulesFileError(source: source, line: line, text: "", reason: .notText)
    }

    /// Applies every line of `text`, in order, to `config` (`ipvsadm -R` on a running director): all of
    /// them, or, at the first bad line, none.
    public static func apply(_ text: String, to config: DirectorConfig, source: String = "rules") throws(RulesFileError)
        -> DirectorConfig {
        var config = config
        for (offset, line) in lines(of: text).enumerated() {
            do throws(ConfigError) {
                guard let command = try IPVSCommand.parse(line: line) else { continue }
                try config.apply(command)
            } catch {
                throw RulesFileError(source: source, line: offset + 1,
                                     text: line.trimmingWhitespace(), reason: error)
            }
        }
        return config
    }

    /// The configuration as `ipvsadm-save -n` prints it: each service (`-A`) followed by its real servers
    /// (`-a`) and its FULLNAT local addresses (`-P`), in insertion order, one line each, every line ending in a newline.
    public static func save(_ config: DirectorConfig) -> String {
        var text = ""
        // ipvsadm-save leaves timeouts out; a rules file that set them keeps them, first.
        if let timeouts = config.timeouts { text += IPVSCommand.setTimeouts(timeouts).description + "\n" }
        for service in config.services {
            text += IPVSCommand.addService(service.key, scheduler: service.scheduler, options: service.options)
                .description + "\n"
            for real in service.reals {
                text += IPVSCommand.addServer(service.key, real).description + "\n"
            }
            for address in service.localAddresses {
                text += IPVSCommand.addLocalAddress(service.key, address).description + "\n"
            }
        }
        return text
    }

    /// Lines split at LF, CRLF or CR.
    static func lines(of text: String) -> [Substring] {
        text.split(omittingEmptySubsequences: false) { $0 == "\n" || $0 == "\r\n" || $0 == "\r" }
    }
}

/// A rules file's first bad line: where, what it said, and why it was refused.
public struct RulesFileError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The file's name in messages (`rules` unless the loader was told otherwise).
    public var source: String
    /// 1-based.
    public var line: Int
    /// The line without its surrounding whitespace.
    public var text: String
    public var reason: ConfigError

    public init(source: String = "rules", line: Int, text: String, reason: ConfigError) {
        self.source = source
        self.line = line
        self.text = text
        self.reason = reason
    }

    /// `rules:3: -a -t 192.0.2.10:80 -r 198.51.100.11: Destination already exists`
    public var description: String { "\(source):\(line): \(text): \(reason)" }
}

extension StringProtocol {
    fileprivate func trimmingWhitespace() -> String {
        guard let first = firstIndex(where: { !$0.isWhitespace }),
              let last = lastIndex(where: { !$0.isWhitespace }) else { return "" }
        return String(self[first...last])
    }
}
