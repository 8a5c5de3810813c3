import Packet
import Scheduling

/// One ipvsadm command, parsed from an argument vector (`xdirector ipvsadm -A -t 192.0.2.10:80 -s rr`) or a
/// rules-file line (what `ipvsadm-save -n` prints). Values are resolved as ipvsadm resolves them: a real
/// server without a port gets the service's; `-a` without `-g`/`-w` gets direct routing and weight 1.
public enum IPVSCommand: Equatable, Sendable, CustomStringConvertible {
    /// `-A -t|-u ADDR:PORT -s SCHED`
    case addService(ServiceKey, scheduler: SchedulerKind)
    /// `-E -t|-u ADDR:PORT [-s SCHED]`: nil leaves the scheduler as it is.
    case editService(ServiceKey, scheduler: SchedulerKind?)
    /// `-D -t|-u ADDR:PORT`: the service and its real servers.
    case deleteService(ServiceKey)
    /// `-a -t|-u ADDR:PORT -r ADDR[:PORT] [-g] [-w W]`
    case addServer(ServiceKey, RealServerConfig)
    /// `-e -t|-u ADDR:PORT -r ADDR[:PORT] [-g|-i|-m|--fullnat] [--tun-…] [-w W]`: nil leaves a field as it is.
    case editServer(ServiceKey, server: Endpoint, weight: Int32?, method: ForwardingMethod?, tunnel: TunnelSettings? = nil)
    /// `-d -t|-u ADDR:PORT -r ADDR[:PORT]`
    case deleteServer(ServiceKey, server: Endpoint)
    /// `-C`: every service and real server.
    case clear
    /// `-P -t|-u ADDR:PORT -z LADDR`: a FULLNAT local address of the service.
    case addLocalAddress(ServiceKey, IPAddress)
    /// `-Q -t|-u ADDR:PORT -z LADDR`
    case deleteLocalAddress(ServiceKey, IPAddress)

    /// Parses one command from ipvsadm arguments (without the program name). Short options may be bundled
    /// (`-At ADDR`) and take their value attached or as the next argument; long options take it as the next
    /// argument or after `=`.
    public init(arguments: [String]) throws(ConfigError) {
        var scanner = IPVSArgumentScanner(arguments: arguments)
        var command: IPVSCommandKind? = nil
        var given: [IPVSOptionKind] = []
        var service: ServiceKey? = nil
        var scheduler: SchedulerKind? = nil
        var real: (address: IPAddress, port: UInt16?)? = nil
        var method: ForwardingMethod? = nil
        var weight: Int32? = nil
        var tunnelKind: TunnelSettings.Kind? = nil
        var tunnelPort: UInt16? = nil
        var tunnelChecksum: Bool? = nil
        var localAddress: String? = nil

        func note(_ option: IPVSOptionKind) throws(ConfigError) {
            guard !given.contains(option) else { throw .duplicateOption(option.display) }
            given.append(option)
        }

        while let (spec, value) = try scanner.next() {
            switch spec.role {
            case .command(let kind):
                if let command { throw .multipleCommands(command.display, kind.display) }
                command = kind
            case .service(let proto):
                try note(.service)
                do throws(EndpointError) {
                    service = ServiceKey(proto: proto, endpoint: try Endpoint(parsing: value ?? ""))
                } catch {
                    throw .invalidServiceAddress(value ?? "", error)
                }
            case .scheduler:
                try note(.scheduler)
                scheduler = try Self.parseScheduler(value ?? "")
            case .realServer:
                try note(.realServer)
                do throws(EndpointError) {
                    real = try Endpoint.parseAddress(value ?? "")
                } catch {
                    throw .invalidRealServerAddress(value ?? "", error)
                }
            case .method(let forwarding):
                try note(.forwardingMethod)
                method = forwarding
            case .weight:
                try note(.weight)
                guard let text = value, let number = Int32(text), RealServerConfig.weightRange.contains(number)
                else { throw .invalidWeight(value ?? "") }
                weight = number
            case .tunnelType:
                try note(.tunnelType)
                guard let kind = TunnelSettings.Kind(rawValue: value ?? "") else {
                    throw .unknownTunnelType(value ?? "")
                }
                tunnelKind = kind
            case .tunnelPort:
                try note(.tunnelPort)
                guard let text = value, let port = UInt16(text), port != 0 else { throw .invalidTunnelPort(value ?? "") }
                tunnelPort = port
            case .tunnelChecksum(let on):
                try note(.tunnelChecksum)
                tunnelChecksum = on
            case .localAddress:
                try note(.localAddress)
                localAddress = value ?? ""
            case .unsupported(let why):
                throw .unsupportedOption(spec.display, note: why)
            }
        }

        guard let command else { throw .missingCommand }
        for option in given where option.use(with: command) == .refused {
            throw .optionNotAllowed(option: option.display, command: command.display)
        }
        for option in IPVSOptionKind.allCases
        where option.use(with: command) == .required && !given.contains(option) {
            throw .missingOption(option: option.display, command: command.display)
        }
        if command == .clear {
            self = .clear
            return
        }
        // Both are present where the command requires them: the loop above has checked.
        guard let service else {
            throw .missingOption(option: IPVSOptionKind.service.display, command: command.display)
        }
        let server = real.map { Endpoint(address: $0.address, port: $0.port ?? service.endpoint.port) }
        func requireServer() throws(ConfigError) -> Endpoint {
            guard let server else {
                throw .missingOption(option: IPVSOptionKind.realServer.display, command: command.display)
            }
            return server
        }

        let tunnel = try Self.tunnelSettings(method: method, kind: tunnelKind, port: tunnelPort,
                                             checksum: tunnelChecksum, editing: command == .editServer)

        switch command {
        case .addService:
            guard let scheduler else { throw .schedulerRequired }
            self = .addService(service, scheduler: scheduler)
        case .editService:
            self = .editService(service, scheduler: scheduler)
        case .deleteService:
            self = .deleteService(service)
        case .addServer:
            let real = RealServerConfig(endpoint: try requireServer(), weight: weight ?? 1,
                                        method: method ?? .directRouting, tunnel: tunnel ?? .ipip)
            self = .addServer(service, real)
        case .editServer:
            self = .editServer(service, server: try requireServer(), weight: weight, method: method, tunnel: tunnel)
        case .deleteServer:
            self = .deleteServer(service, server: try requireServer())
        case .clear:
            self = .clear
        case .addLocalAddress, .deleteLocalAddress:
            guard let address = IPAddress(localAddress ?? ""), address.family == service.endpoint.address.family
            else { throw .invalidLocalAddress(localAddress ?? "") }
            self = command == .addLocalAddress ? .addLocalAddress(service, address) : .deleteLocalAddress(service, address)
        }
        try validate()
    }

    /// The tunnel options as ipvsadm checks them: only with `-i` (or, editing, without a method: the
    /// server's own must then be `-i`, which `apply` checks), `--tun-port` exactly with gue.
    static func tunnelSettings(method: ForwardingMethod?, kind: TunnelSettings.Kind?, port: UInt16?, checksum: Bool?,
                               editing: Bool) throws(ConfigError) -> TunnelSettings? {
        guard kind != nil || port != nil || checksum != nil else {
            return method == .tunnel ? .ipip : nil
        }
        if method != .tunnel && !(editing && method == nil) {
            throw .tunnelOptionWithoutTunnel(kind != nil ? "--tun-type" : port != nil ? "--tun-port" : "--tun-csum")
        }
        let resolved = kind ?? .ipip
        if resolved == .gue && port == nil { throw .tunnelPortRequired }
        if resolved != .gue && port != nil { throw .tunnelOptionWithoutTunnel("--tun-port") }
        return TunnelSettings(kind: resolved, port: port ?? 0, checksum: checksum ?? false)
    }

    /// Parses one rules-file line: words split at whitespace, a word starting with `#` ends the line.
    /// Returns nil for a blank or comment-only line.
    public static func parse(line: some StringProtocol) throws(ConfigError) -> IPVSCommand? {
        let words = words(of: line)
        return words.isEmpty ? nil : try IPVSCommand(arguments: words)
    }

    /// The words of a rules-file line, comments left out.
    public static func words(of line: some StringProtocol) -> [String] {
        var words: [String] = []
        for word in line.split(whereSeparator: \.isWhitespace) {
            if word.hasPrefix("#") { break }
            words.append(String(word))
        }
        return words
    }

    /// The command as `ipvsadm-save -n` writes it; parsing these arguments gives the command back.
    public var arguments: [String] {
        switch self {
        case .addService(let key, let scheduler):
            return ["-A"] + key.arguments + ["-s", scheduler.name]
        case .editService(let key, let scheduler):
            return ["-E"] + key.arguments + (scheduler.map { ["-s", $0.name] } ?? [])
        case .deleteService(let key):
            return ["-D"] + key.arguments
        case .addServer(let key, let real):
            return ["-a"] + key.arguments + ["-r", real.endpoint.description, real.method.option]
                + (real.method == .tunnel ? real.tunnel.arguments : []) + ["-w", String(real.weight)]
        case .editServer(let key, let server, let weight, let method, let tunnel):
            return ["-e"] + key.arguments + ["-r", server.description]
                + (method.map { [$0.option] } ?? []) + (tunnel?.arguments ?? [])
                + (weight.map { ["-w", String($0)] } ?? [])
        case .deleteServer(let key, let server):
            return ["-d"] + key.arguments + ["-r", server.description]
        case .clear:
            return ["-C"]
        case .addLocalAddress(let key, let address):
            return ["-P"] + key.arguments + ["-z", address.description]
        case .deleteLocalAddress(let key, let address):
            return ["-Q"] + key.arguments + ["-z", address.description]
        }
    }

    /// `-a -t 192.0.2.10:80 -r 198.51.100.11:80 -g -w 3`
    public var description: String { arguments.joined(separator: " ") }

    /// The checks that need nothing but the command itself (the parser makes only commands that pass them;
    /// `DirectorConfig.apply` checks commands built in code too).
    func validate() throws(ConfigError) {
        switch self {
        case .clear:
            return
        case .addService(let key, _), .editService(let key, _), .deleteService(let key):
            try Self.checkService(key)
        case .addServer(let key, let real):
            try Self.checkService(key)
            try Self.checkReal(real.endpoint, method: real.method, of: key)
            try Self.checkWeight(real.weight)
        case .editServer(let key, let server, let weight, let method, _):
            try Self.checkService(key)
            try Self.checkRealAddress(server, of: key, mixedFamilyAllowed: true)
            if let method { try Self.checkReal(server, method: method, of: key) }
            if let weight { try Self.checkWeight(weight) }
        case .deleteServer(let key, let server):
            try Self.checkService(key)
            try Self.checkRealAddress(server, of: key, mixedFamilyAllowed: true)
        case .addLocalAddress(let key, let address), .deleteLocalAddress(let key, let address):
            try Self.checkService(key)
            guard address.family == key.endpoint.address.family else {
                throw .invalidLocalAddress(address.description)
            }
        }
    }

    static func checkService(_ key: ServiceKey) throws(ConfigError) {
        guard key.endpoint.port != 0 else { throw .invalidServiceAddress(key.endpoint.description, .zeroPort) }
    }

    static func checkRealAddress(_ server: Endpoint, of key: ServiceKey,
                                 mixedFamilyAllowed: Bool = false) throws(ConfigError) {
        guard server.port != 0 else { throw .invalidRealServerAddress(server.description, .zeroPort) }
        guard mixedFamilyAllowed || server.address.family == key.endpoint.address.family else {
            throw .familyMismatch(real: server, service: key)
        }
    }

    /// A real server reached with `method`: its family, and its port where the method cannot change it.
    static func checkReal(_ server: Endpoint, method: ForwardingMethod, of key: ServiceKey) throws(ConfigError) {
        try checkRealAddress(server, of: key, mixedFamilyAllowed: method.mixesFamilies)
        guard !method.keepsPort || server.port == key.endpoint.port else {
            throw .portMismatch(real: server, service: key, method: method)
        }
    }

    static func checkWeight(_ weight: Int32) throws(ConfigError) {
        guard RealServerConfig.weightRange.contains(weight) else { throw .invalidWeight(String(weight)) }
    }

    static func parseScheduler(_ name: String) throws(ConfigError) -> SchedulerKind {
        if let kind = SchedulerKind(name: name) { return kind }
        if IPVSSchedulerNames.all.contains(name) { throw .unsupportedScheduler(name) }
        throw .unknownScheduler(name)
    }
}

/// Walks ipvsadm arguments option by option, as ipvsadm's option parser does: bundled short options
/// (`-At`), short values attached or separate (`-w3`, `-w 3`), long values separate or after `=`.
struct IPVSArgumentScanner {
    let arguments: [String]
    private var index = 0
    /// What is left of a bundle of short options.
    private var bundle: Substring = ""

    init(arguments: [String]) {
        self.arguments = arguments
    }

    /// The next option and its value (nil for options that take none); nil at the end.
    mutating func next() throws(ConfigError) -> (IPVSOptionSpec, String?)? {
        if let letter = bundle.popFirst() {
            guard let spec = IPVSOptionSpec.find(short: letter) else { throw .unknownOption("-\(letter)") }
            if case .unsupported(let why) = spec.role { throw .unsupportedOption(spec.display, note: why) }
            guard spec.takesValue else { return (spec, nil) }
            if !bundle.isEmpty {
                defer { bundle = "" }
                return (spec, String(bundle))
            }
            return (spec, try nextValue(for: spec))
        }
        guard index < arguments.count else { return nil }
        let argument = arguments[index]
        index += 1
        guard argument.hasPrefix("-"), argument != "-" else { throw .unexpectedArgument(argument) }
        if argument == "--" {
            // Everything after "--" would be a positional argument, and no command takes one.
            if index < arguments.count { throw .unexpectedArgument(arguments[index]) }
            return nil
        }
        if argument.hasPrefix("--") {
            let body = argument.dropFirst(2)
            let equals = body.firstIndex(of: "=")
            let name = String(body[..<(equals ?? body.endIndex)])
            let attached = equals.map { String(body[body.index(after: $0)...]) }
            guard let spec = IPVSOptionSpec.find(long: name) else { throw .unknownOption("--\(name)") }
            if case .unsupported(let why) = spec.role { throw .unsupportedOption(spec.display, note: why) }
            guard spec.takesValue else {
                if attached != nil { throw .unexpectedValue(spec.display) }
                return (spec, nil)
            }
            if let attached { return (spec, attached) }
            return (spec, try nextValue(for: spec))
        }
        bundle = argument.dropFirst()
        return try next()
    }

    /// The next argument as a value, unless there is none or it is an option (`-w -1` is a value).
    private mutating func nextValue(for spec: IPVSOptionSpec) throws(ConfigError) -> String {
        guard index < arguments.count else { throw .missingValue(spec.display) }
        let candidate = arguments[index]
        if candidate.hasPrefix("-"), candidate.count > 1,
           !candidate.dropFirst().first!.isNumber {
            throw .missingValue(spec.display)
        }
        index += 1
        return candidate
    }
}
