import Foundation

// keepalived.conf as keepalived reads it: words separated by blanks, `#` and `!` comments, `"quoted words"`,
// blocks in braces, `include GLOB` anywhere (relative to the including file's directory). This file turns the
// text into statements with their file and line; `KeepalivedParser` gives them their meaning.

/// Where a word was written: the file and its line (from 1).
public struct SourceLocation: Equatable, Sendable, CustomStringConvertible {
    public var file: String
    public var line: Int

    public init(file: String, line: Int) {
        self.file = file
        self.line = line
    }

    public var description: String { "\(file):\(line)" }
}

/// Why a keepalived.conf was refused: the file and line, and what is wrong there.
public struct KeepalivedConfigError: Error, Equatable, Sendable, CustomStringConvertible {
    public var location: SourceLocation
    public var message: String

    public init(_ location: SourceLocation, _ message: String) {
        self.location = location
        self.message = message
    }

    public var description: String { "\(location): \(message)" }
}

/// One keyword with its arguments and, when it opens one, its block.
public struct KeepalivedStatement: Equatable, Sendable {
    public var keyword: String
    public var arguments: [String]
    public var block: [KeepalivedStatement]?
    public var location: SourceLocation

    public init(keyword: String, arguments: [String] = [], block: [KeepalivedStatement]? = nil, location: SourceLocation) {
        self.keyword = keyword
        self.arguments = arguments
        self.block = block
        self.location = location
    }
}

/// Reads the files a configuration names: the real file system, or a dictionary in tests.
public struct KeepalivedFiles: Sendable {
    /// The text of a file, or nil when it cannot be read.
    public var read: @Sendable (String) -> String?
    /// The files a pattern of `include` names, sorted (glob(3)).
    public var expand: @Sendable (String) -> [String]

    public init(read: @escaping @Sendable (String) -> String?, expand: @escaping @Sendable (String) -> [String]) {
        self.read = read
        self.expand = expand
    }

    /// The machine's files.
    public static let system = KeepalivedFiles(
        read: { try? String(contentsOfFile: $0, encoding: .utf8) },
        expand: { pattern in
            var matches = glob_t()
            defer { globfree(&matches) }
            guard glob(pattern, 0, nil, &matches) == 0 else { return [] }
            return (0..<Int(matches.gl_pathc)).compactMap { matches.gl_pathv[$0].map { String(cString: $0) } }.sorted()
        })

    /// Files held in memory (`include` patterns match names exactly, or `*` as the last path component).
    public static func memory(_ files: [String: String]) -> KeepalivedFiles {
        KeepalivedFiles(read: { files[$0] }, expand: { pattern in
            if pattern.hasSuffix("/*") {
                let directory = String(pattern.dropLast(1))
                return files.keys.filter { $0.hasPrefix(directory) && !$0.dropFirst(directory.count).contains("/") }.sorted()
            }
            return files[pattern] == nil ? [] : [pattern]
        })
    }
}

enum KeepalivedSyntax {
    struct Token: Equatable {
        var text: String
        var quoted: Bool
        var location: SourceLocation
        var isOpen: Bool { !quoted && text == "{" }
        var isClose: Bool { !quoted && text == "}" }
    }

    /// The statements of `path` with every `include` expanded in place.
    static func parse(path: String, files: KeepalivedFiles, depth: Int = 0) throws(KeepalivedConfigError) -> [KeepalivedStatement] {
        guard let text = files.read(path) else {
            throw KeepalivedConfigError(SourceLocation(file: path, line: 0), "cannot read the file")
        }
        let lines = tokenize(text, file: path)
        var position = (line: 0, token: 0)
        return try block(lines, &position, closing: nil, files: files, depth: depth)
    }

    /// Splits each line into words: `{` and `}` stand alone, `#` and `!` start a comment, `"…"` is one word.
    static func tokenize(_ text: String, file: String) -> [[Token]] {
        var result: [[Token]] = []
        for (index, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let location = SourceLocation(file: file, line: index + 1)
            var tokens: [Token] = []
            var current = ""
            var quoted = false, inQuotes = false
            func flush() {
                if !current.isEmpty || quoted { tokens.append(Token(text: current, quoted: quoted, location: location)) }
                current = ""
                quoted = false
            }
            scan: for character in line {
                if inQuotes {
                    if character == "\"" { inQuotes = false; flush() } else { current.append(character) }
                    continue
                }
                switch character {
                case "\"":
                    flush()
                    inQuotes = true
                    quoted = true
                case " ", "\t", "\r":
                    flush()
                case "{", "}":
                    flush()
                    tokens.append(Token(text: String(character), quoted: false, location: location))
                case "#", "!" where current.isEmpty:
                    break scan
                default:
                    current.append(character)
                }
            }
            if inQuotes { quoted = true }
            flush()
            result.append(tokens)
        }
        return result
    }

    private static func block(_ lines: [[Token]], _ position: inout (line: Int, token: Int), closing: Token?,
                              files: KeepalivedFiles, depth: Int) throws(KeepalivedConfigError) -> [KeepalivedStatement] {
        var statements: [KeepalivedStatement] = []
        while position.line < lines.count {
            let line = lines[position.line]
            guard position.token < line.count else {
                position = (position.line + 1, 0)
                continue
            }
            let first = line[position.token]
            if first.isClose {
                guard closing != nil else { throw KeepalivedConfigError(first.location, "'}' without a block to close") }
                position.token += 1
                return statements
            }
            if first.isOpen { throw KeepalivedConfigError(first.location, "'{' without a keyword") }
            // The keyword's arguments run to the end of the line or to its '{'.
            var arguments: [String] = []
            var index = position.token + 1
            while index < line.count && !line[index].isOpen && !line[index].isClose {
                arguments.append(line[index].text)
                index += 1
            }
            var opens = index < line.count && line[index].isOpen
            if opens {
                position = (position.line, index + 1)
            } else if index < line.count {
                position = (position.line, index)  // a '}' closing the enclosing block on the same line
            } else {
                // A '{' alone at the start of the next non-empty line opens this keyword's block too.
                var next = position.line + 1
                while next < lines.count && lines[next].isEmpty { next += 1 }
                if next < lines.count, lines[next].first?.isOpen == true, !isLeaf(first.text) {
                    opens = true
                    position = (next, 1)
                } else {
                    position = (position.line + 1, 0)
                }
            }
            if first.text == "include" && !first.quoted {
                guard let pattern = arguments.first else { throw KeepalivedConfigError(first.location, "include needs a file name") }
                guard depth < 8 else { throw KeepalivedConfigError(first.location, "include nested too deeply") }
                let directory = (first.location.file as NSString).deletingLastPathComponent
                let resolved = pattern.hasPrefix("/") || directory.isEmpty ? pattern : directory + "/" + pattern
                let matches = files.expand(resolved)
                for file in matches {
                    statements += try parse(path: file, files: files, depth: depth + 1)
                }
                continue
            }
            var statement = KeepalivedStatement(keyword: first.text, arguments: arguments, location: first.location)
            if opens {
                statement.block = try block(lines, &position, closing: first, files: files, depth: depth)
            }
            statements.append(statement)
        }
        if let closing { throw KeepalivedConfigError(closing.location, "'\(closing.text)' block is not closed") }
        return statements
    }

    /// Keywords that never take a block, so a '{' on the next line cannot be theirs.
    private static func isLeaf(_ keyword: String) -> Bool {
        ["path", "status_code", "digest", "weight", "delay_loop", "connect_timeout", "retry"].contains(keyword)
    }
}
