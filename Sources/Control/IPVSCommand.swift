import Packet
import Scheduling

/// One ipvsadm command, parsed from an argument vector (`xdirector ipvsadm -A -t 192.0.2.10:80 -s rr`) or a
/// rules-file line (what `ipvsadm-save -n` prints). Values are resolved as ipvsadm resolves them: a real
/// server without a port gets the service's; `-a` without `-g`/`-w` gets direct routing and weight 1.
public enum IPVSCommand: Equatable, Sendable, CustomStringConvertible {
    /// `-A -t|-u ADDR:PORT [-s SCHED] [-b FLAGS] [-p [TIMEOUT]] [-M NETMASK] [-o]` (wlc without `-s`)
    case addService(ServiceKey, scheduler: SchedulerKind, options: ServiceOptions = ServiceOptions())
    /// `-E -t|-u ADDR:PORT [-s SCHED] [-b ...] [-p ...] [-M ...] [-o]`: a nil scheduler leaves it as it is;
    /// nil options (none of -b/-p/-M/-o given) leave them as they are, otherwise they replace them all.
    case editService(ServiceKey, scheduler: SchedulerKind?, options: ServiceOptions? = nil)
    /// `-D -t|-u ADDR:PORT`: the service and its real servers.
    case deleteService(ServiceKey)
    /// `-a -t|-u ADDR:PORT -r ADDR[:PORT] [-g] [-w W]`
    case addServer(ServiceKey, RealServerConfig)
    /// `-e -t|-u ADDR:PORT -r ADDR[:PORT] [-g|-i|-m|--fullnat] [--tun-…] [-w W] [-x N] [-y N]`: nil leaves a
    /// field as it is.
    case editServer(ServiceKey, server: L4Endpoint, weight: Int32?, method: ForwardingMethod?, tunnel: TunnelParameters? = nil,
                    upperThreshold: UInt32? = nil, lowerThreshold: UInt32? = nil)
    /// `-d -t|-u ADDR:PORT -r ADDR[:PORT]`
    case deleteServer(ServiceKey, server: L4Endpoint)
    /// `-C`: every service and real server.
    case clear
    /// `-P -t|-u ADDR:PORT -z LADDR`: a FULLNAT local address of the service.
    case addLocalAddress(ServiceKey, IPAddress)
    /// `-Q -t|-u ADDR:PORT -z LADDR`
    case deleteLocalAddress(ServiceKey, IPAddress)
    /// `--set TCP TCPFIN UDP`: connection timeouts in seconds, 0 leaving one as it is.
    case setTimeouts(TimeoutSettings)

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
        var tunnelKind: TunnelType? = nil
        var tunnelPort: UInt16? = nil
        var tunnelChecksum: Bool? = nil
        var localAddress: String? = nil
        var flagNames: [String] = []
        var persistence: UInt32? = nil
        var netmaskText: String? = nil
        var onePacket = false
        var upper: UInt32? = nil
        var lower: UInt32? = nil
        var timeouts: TimeoutSettings? = nil

        func note(_ option: IPVSOptionKind) throws(ConfigError) {
            guard !given.contains(option) else { throw .duplicateOption(option.display) }
            given.append(option)
        }

        while let (spec, value) = try scanner.next() {
            switch spec.role {
            case .command(let kind):
                if let command { throw .multipleCommands(command.display, kind.display) }
                command = kind
                if kind == .setTimeouts {
                    let values = [value ?? ""] + (try scanner.values(2, for: spec))
                    let numbers = try values.map { (text: String) throws(ConfigError) -> UInt32 in
                        guard let number = UInt32(text), TimeoutSettings.range.contains(number) else {
                            throw .invalidTimeout(text)
                        }
                        return number
                    }
                    timeouts = TimeoutSettings(tcp: numbers[0], tcpFin: numbers[1], udp: numbers[2])
                }
            case .schedulerFlags:
                try note(.schedulerFlags)
                flagNames = (value ?? "").split(separator: ",").map(String.init)
                if flagNames.isEmpty { throw .unknownSchedulerFlag(value ?? "") }
            case .persistent:
                try note(.persistent)
                if let value {
                    guard let number = UInt32(value), ServiceOptions.persistenceRange.contains(number) else {
                        throw .invalidPersistence(value)
                    }
                    persistence = number
                } else {
                    persistence = ServicePolicy.defaultPersistence
                }
            case .netmask:
                try note(.netmask)
                netmaskText = value ?? ""
            case .onePacket:
                try note(.onePacket)
                onePacket = true
            case .upperThreshold, .lowerThreshold:
                let isUpper: Bool
                if case .upperThreshold = spec.role { isUpper = true } else { isUpper = false }
                try note(isUpper ? .upperThreshold : .lowerThreshold)
                guard let text = value, let number = UInt32(text), RealServerConfig.thresholdRange.contains(number)
                else { throw .invalidThreshold(value ?? "") }
                if isUpper { upper = number } else { lower = number }
            case .service(let proto):
                try note(.service)
                do throws(EndpointError) {
                    service = ServiceKey(proto: proto, endpoint: try L4Endpoint(parsing: value ?? ""))
                } catch {
                    throw .invalidServiceAddress(value ?? "", error)
                }
            case .scheduler:
                try note(.scheduler)
                scheduler = try Self.parseScheduler(value ?? "")
            case .realServer:
                try note(.realServer)
                do throws(EndpointError) {
                    real = try L4Endpoint.parseAddress(value ?? "")
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
                guard let kind = TunnelType(name: value ?? "") else {
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
            case .request, .listModifier:
                // Served by a running director (`IPVSRequest`), never a change nor a rules-file line.
                throw .unsupportedOption(spec.display, note: spec.rulesNote)
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
        // The commands without a service are done here; the switch below sees only those with one.
        let serviceCommand: ServiceCommand
        switch command {
        case .clear:
            self = .clear
            return
        case .setTimeouts:
            guard let timeouts else { throw .missingCommand }  // read with the command itself
            self = .setTimeouts(timeouts)
            return
        case .addService: serviceCommand = .addService
        case .editService: serviceCommand = .editService
        case .deleteService: serviceCommand = .deleteService
        case .addServer: serviceCommand = .addServer
        case .editServer: serviceCommand = .editServer
        case .deleteServer: serviceCommand = .deleteServer
        case .addLocalAddress: serviceCommand = .addLocalAddress
        case .deleteLocalAddress: serviceCommand = .deleteLocalAddress
        }
        // Both are present where the command requires them: the loop above has checked.
        guard let service else {
            throw .missingOption(option: IPVSOptionKind.service.display, command: command.display)
        }
        let server = real.map { L4Endpoint(address: $0.address, port: $0.port ?? service.endpoint.port) }
        func requireServer() throws(ConfigError) -> L4Endpoint {
            guard let server else {
                throw .missingOption(option: IPVSOptionKind.realServer.display, command: command.display)
            }
            return server
        }

        let tunnel = try Self.tunnelSettings(method: method, kind: tunnelKind, port: tunnelPort,
                                             checksum: tunnelChecksum, editing: serviceCommand == .editServer)
        let serviceOptionsGiven = given.contains(.schedulerFlags) || given.contains(.persistent)
            || given.contains(.netmask) || given.contains(.onePacket)
        var options = ServiceOptions(persistence: persistence, onePacket: onePacket)
        if let netmaskText { options.netmask = try Self.parseNetmask(netmaskText, of: service) }
        for name in flagNames {
            guard let (flag, owner) = SchedulerFlags.parse(name) else { throw .unknownSchedulerFlag(name) }
            // -E without -s: the service's scheduler is checked when the command is applied.
            if let owner, let target = scheduler ?? (serviceCommand == .addService ? SchedulerKind.default : nil),
               owner != target {
                throw .schedulerFlagNotAllowed(flag: name, scheduler: target)
            }
            options.schedulerFlags.insert(flag)
        }

        switch serviceCommand {
        case .addService:
            self = .addService(service, scheduler: scheduler ?? .default, options: options)
        case .editService:
            self = .editService(service, scheduler: scheduler, options: serviceOptionsGiven ? options : nil)
        case .deleteService:
            self = .deleteService(service)
        case .addServer:
            let real = RealServerConfig(endpoint: try requireServer(), weight: weight ?? 1,
                                        method: method ?? .directRouting, tunnel: tunnel ?? .ipip,
                                        upperThreshold: upper ?? 0, lowerThreshold: lower ?? 0)
            self = .addServer(service, real)
        case .editServer:
            self = .editServer(service, server: try requireServer(), weight: weight, method: method, tunnel: tunnel,
                               upperThreshold: upper, lowerThreshold: lower)
        case .deleteServer:
            self = .deleteServer(service, server: try requireServer())
        case .addLocalAddress, .deleteLocalAddress:
            guard let address = IPAddress(localAddress ?? ""), address.family == service.endpoint.address.family
            else { throw .invalidLocalAddress(localAddress ?? "") }
            self = serviceCommand == .addLocalAddress ? .addLocalAddress(service, address) : .deleteLocalAddress(service, address)
        }
        try validate()
    }

    /// The tunnel options as ipvsadm checks them: only with `-i` (or, editing, without a method: the
    /// server's own must then be `-i`, which `apply` checks), `--tun-port` exactly with gue.
    static func tunnelSettings(method: ForwardingMethod?, kind: TunnelType?, port: UInt16?, checksum: Bool?,
                               editing: Bool) throws(ConfigError) -> TunnelParameters? {
        guard kind != nil || port != nil || checksum != nil else {
            return method == .tunnel ? .ipip : nil
        }
        if method != .tunnel && !(editing && method == nil) {
            throw .tunnelOptionWithoutTunnel(kind != nil ? "--tun-type" : port != nil ? "--tun-port" : "--tun-csum")
        }
        let resolved = kind ?? .ipip
        if resolved == .gue && port == nil { throw .tunnelPortRequired }
        if resolved != .gue && port != nil { throw .tunnelOptionWithoutTunnel("--tun-port") }
        return TunnelParameters(type: resolved, port: port ?? 0, checksum: checksum ?? false)
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
        case .addService(let key, let scheduler, let options):
            return ["-A"] + key.arguments + ["-s", scheduler.name] + Self.arguments(options, scheduler, key)
        case .editService(let key, let scheduler, let options):
            return ["-E"] + key.arguments + (scheduler.map { ["-s", $0.name] } ?? [])
                + (options.map { Self.arguments($0, scheduler, key) } ?? [])
        case .deleteService(let key):
            return ["-D"] + key.arguments
        case .addServer(let key, let real):
            return ["-a"] + key.arguments + ["-r", real.endpoint.description, real.method.option]
                + (real.method == .tunnel ? real.tunnel.arguments : []) + ["-w", String(real.weight)]
                + (real.upperThreshold != 0 ? ["-x", String(real.upperThreshold)] : [])
                + (real.lowerThreshold != 0 ? ["-y", String(real.lowerThreshold)] : [])
        case .editServer(let key, let server, let weight, let method, let tunnel, let upper, let lower):
            return ["-e"] + key.arguments + ["-r", server.description]
                + (method.map { [$0.option] } ?? []) + (tunnel?.arguments ?? [])
                + (weight.map { ["-w", String($0)] } ?? [])
                + (upper.map { ["-x", String($0)] } ?? []) + (lower.map { ["-y", String($0)] } ?? [])
        case .deleteServer(let key, let server):
            return ["-d"] + key.arguments + ["-r", server.description]
        case .clear:
            return ["-C"]
        case .addLocalAddress(let key, let address):
            return ["-P"] + key.arguments + ["-z", address.description]
        case .deleteLocalAddress(let key, let address):
            return ["-Q"] + key.arguments + ["-z", address.description]
        case .setTimeouts(let t):
            return ["--set", String(t.tcp), String(t.tcpFin), String(t.udp)]
        }
    }

    /// Service options in `ipvsadm-save`'s order: `-b FLAGS`, `-p TIMEOUT`, `-M MASK` (dotted for IPv4, a
    /// length for IPv6, only when persistent and narrower than the whole address), `-o`.
    static func arguments(_ options: ServiceOptions, _ scheduler: SchedulerKind?, _ key: ServiceKey) -> [String] {
        var words: [String] = []
        if !options.schedulerFlags.isEmpty {
            words += ["-b", options.schedulerFlags.names(for: scheduler).joined(separator: ",")]
        }
        if let persistence = options.persistence {
            words += ["-p", String(persistence)]
            let ipv4 = key.endpoint.address.family == .ipv4
            if let prefix = options.netmask, prefix != (ipv4 ? 32 : 128) {
                if ipv4 {
                    let mask = UInt32(truncatingIfNeeded: ServicePolicy.mask(prefix: prefix, ipv6: false).1)
                    words += ["-M", IPAddress.v4(mask).description]
                } else {
                    words += ["-M", String(prefix)]
                }
            }
        }
        if options.onePacket { words.append("-o") }
        return words
    }

    /// `-M`: a contiguous dotted netmask for an IPv4 service, a prefix length (0...128) for an IPv6 one.
    static func parseNetmask(_ text: String, of key: ServiceKey) throws(ConfigError) -> Int {
        if key.endpoint.address.family == .ipv6 {
            guard let prefix = Int(text), (0...128).contains(prefix) else { throw .invalidNetmask(text) }
            return prefix
        }
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 4 else { throw .invalidNetmask(text) }
        var mask: UInt32 = 0
        for part in parts {
            guard let byte = UInt8(part) else { throw .invalidNetmask(text) }
            mask = mask << 8 | UInt32(byte)
        }
        let ones = (~mask).leadingZeroBitCount
        guard mask == (ones == 0 ? 0 : UInt32.max << UInt32(32 - ones)) else { throw .invalidNetmask(text) }
        return ones
    }

    /// The checks on a service's options that need the scheduler and the protocol.
    static func checkOptions(_ options: ServiceOptions, scheduler: SchedulerKind, of key: ServiceKey) throws(ConfigError) {
        let stray = options.schedulerFlags.subtracting(scheduler.acceptedFlags)
        if !stray.isEmpty {
            throw .schedulerFlagNotAllowed(flag: stray.names(for: nil)[0], scheduler: scheduler)
        }
        if options.netmask != nil && options.persistence == nil { throw .netmaskWithoutPersistence }
        if let persistence = options.persistence, !ServiceOptions.persistenceRange.contains(persistence) {
            throw .invalidPersistence(String(persistence))
        }
        if options.onePacket && key.proto != .udp { throw .onePacketNeedsUDP }
    }

    /// `-a -t 192.0.2.10:80 -r 198.51.100.11:80 -g -w 3`
    public var description: String { arguments.joined(separator: " ") }

    /// The checks that need nothing but the command itself (the parser makes only commands that pass them;
    /// `DirectorConfig.apply` checks commands built in code too).
    func validate() throws(ConfigError) {
        switch self {
        case .clear:
            return
        case .setTimeouts(let t):
            for value in [t.tcp, t.tcpFin, t.udp] where !TimeoutSettings.range.contains(value) {
                throw .invalidTimeout(String(value))
            }
        case .addService(let key, let scheduler, let options):
            try Self.checkService(key)
            try Self.checkOptions(options, scheduler: scheduler, of: key)
        case .editService(let key, let scheduler, let options):
            try Self.checkService(key)
            if let scheduler, let options { try Self.checkOptions(options, scheduler: scheduler, of: key) }
        case .deleteService(let key):
            try Self.checkService(key)
        case .addServer(let key, let real):
            try Self.checkService(key)
            try Self.checkReal(real.endpoint, method: real.method, of: key)
            try Self.checkWeight(real.weight)
        case .editServer(let key, let server, let weight, let method, _, _, _):
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

    static func checkRealAddress(_ server: L4Endpoint, of key: ServiceKey,
                                 mixedFamilyAllowed: Bool = false) throws(ConfigError) {
        guard server.port != 0 else { throw .invalidRealServerAddress(server.description, .zeroPort) }
        guard mixedFamilyAllowed || server.address.family == key.endpoint.address.family else {
            throw .familyMismatch(real: server, service: key)
        }
    }

    /// A real server reached with `method`: its family, and its port where the method cannot change it.
    static func checkReal(_ server: L4Endpoint, method: ForwardingMethod, of key: ServiceKey) throws(ConfigError) {
        try checkRealAddress(server, of: key, mixedFamilyAllowed: method.mixesFamilies)
        guard !method.keepsPort || server.port == key.endpoint.port else {
            throw .portMismatch(real: server, service: key, method: method)
        }
    }

    static func checkWeight(_ weight: Int32) throws(ConfigError) {
        guard RealServerConfig.weightRange.contains(weight) else { throw .invalidWeight(String(weight)) }
    }

    static func parseScheduler(_ name: String) throws(ConfigError) -> SchedulerKind {
        if name.isEmpty { throw .missingValue(IPVSOptionKind.scheduler.display) }
        if let kind = SchedulerKind(name: name) { return kind }
        throw .unknownScheduler(name)
    }
}

/// Walks ipvsadm arguments option by option, as ipvsadm's option parser does: bundled short options
/// (`-At`), short values attached or separate (`-w3`, `-w 3`), long values separate or after `=`.
struct IPVSArgumentScanner {
    let arguments: [String]
    /// Refusals of unsupported options give the operator's reason (`IPVSOptionSpec.reason`), not the
    /// rules-file note.
    let explainsRefusals: Bool
    private var index = 0
    /// What is left of a bundle of short options.
    private var bundle: Substring = ""

    init(arguments: [String], explainsRefusals: Bool = false) {
        self.arguments = arguments
        self.explainsRefusals = explainsRefusals
    }

    private func refusal(_ spec: IPVSOptionSpec, _ note: String?) -> ConfigError {
        .unsupportedOption(spec.display, note: explainsRefusals ? spec.reason ?? note : note)
    }

    /// The next option and its value (nil for options that take none); nil at the end.
    mutating func next() throws(ConfigError) -> (IPVSOptionSpec, String?)? {
        if let letter = bundle.popFirst() {
            guard let spec = IPVSOptionSpec.find(short: letter) else { throw .unknownOption("-\(letter)") }
            if case .unsupported(let why) = spec.role { throw refusal(spec, why) }
            guard spec.takesValue else { return (spec, nil) }
            if !bundle.isEmpty {
                defer { bundle = "" }
                return (spec, String(bundle))
            }
            if spec.optionalValue { return (spec, optionalValue()) }
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
            if case .unsupported(let why) = spec.role { throw refusal(spec, why) }
            guard spec.takesValue else {
                if attached != nil { throw .unexpectedValue(spec.display) }
                return (spec, nil)
            }
            if let attached { return (spec, attached) }
            if spec.optionalValue { return (spec, optionalValue()) }
            return (spec, try nextValue(for: spec))
        }
        bundle = argument.dropFirst()
        return try next()
    }

    /// The next argument when it is a number (an optional value such as `-p`'s), else nil.
    private mutating func optionalValue() -> String? {
        guard index < arguments.count, let first = arguments[index].first, first.isNumber else { return nil }
        index += 1
        return arguments[index - 1]
    }

    /// `count` more values for an option that takes several (`--set TCP TCPFIN UDP`).
    mutating func values(_ count: Int, for spec: IPVSOptionSpec) throws(ConfigError) -> [String] {
        var result: [String] = []
        for _ in 0..<count { result.append(try nextValue(for: spec)) }
        return result
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

/// The ipvsadm commands that name a service: what `IPVSCommand.init` builds once `-C` and `--set` are done.
private enum ServiceCommand {
    case addService, editService, deleteService, addServer, editServer, deleteServer, addLocalAddress, deleteLocalAddress
}
