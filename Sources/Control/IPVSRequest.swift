import Packet

/// How `ipvsadm -L` is to show the tables: which service, which columns, which numbers.
public struct IPVSListOptions: Equatable, Sendable {
    /// `-t|-u SERVICE`: that service alone, without the version line.
    public var service: ServiceKey?
    /// `-n`: addresses and ports as numbers (host names are never looked up; see `IPVSListing`).
    public var numeric: Bool
    /// `--stats`: connections, packets and bytes.
    public var stats: Bool
    /// `--rate`: the same per second.
    public var rate: Bool
    /// `-X/--exact`: whole numbers rather than K, M, G, T.
    public var exact: Bool
    /// `--thresholds`: each real server's `-x`/`-y`.
    public var thresholds: Bool
    /// `--persistent-conn`: each real server's persistent connections.
    public var persistentConnections: Bool
    /// Services and real servers in ipvsadm's order (its default; `--nosort` keeps the order they were added).
    public var sort: Bool
    /// `-c`: the connection table.
    public var connections: Bool
    /// `--timeout`: the `--set` timeouts.
    public var timeouts: Bool

    public init(service: ServiceKey? = nil, numeric: Bool = false, stats: Bool = false, rate: Bool = false,
                exact: Bool = false, thresholds: Bool = false, persistentConnections: Bool = false, sort: Bool = true,
                connections: Bool = false, timeouts: Bool = false) {
        self.service = service
        self.numeric = numeric
        self.stats = stats
        self.rate = rate
        self.exact = exact
        self.thresholds = thresholds
        self.persistentConnections = persistentConnections
        self.sort = sort
        self.connections = connections
        self.timeouts = timeouts
    }
}

/// One `xdirector ipvsadm ARGS...` invocation: a change to the tables, or a question about them.
public enum IPVSRequest: Equatable, Sendable {
    /// `-A -E -D -a -e -d -C -P -Q --set`.
    case change(IPVSCommand)
    /// `-L|-l|--list [-t|-u SERVICE] [-n] [--stats|--rate|--thresholds|--persistent-conn] [-X] [--nosort]`,
    /// `-L -c`, `-L --timeout`; also `ipvsadm` alone.
    case list(IPVSListOptions)
    /// `-S [-n]`: the rules as `ipvsadm-save` writes them.
    case save(numeric: Bool)
    /// `-R`: the commands follow on the client's standard input.
    case restore
    /// `-Z [-t|-u SERVICE]`: zero the counters of one service or all.
    case zero(ServiceKey?)
    /// `-G [-t|-u SERVICE]`: the FULLNAT local addresses.
    case listLocalAddresses(ServiceKey?)
    /// `-h`
    case help
    /// `-v`
    case version

    /// Parses an argument vector (without the program name) as ipvsadm does: the same options, the same
    /// table of which options go with which command, the same conflicts between listing options.
    public init(arguments: [String]) throws(ConfigError) {
        // ipvsadm without arguments lists the table.
        if arguments.isEmpty {
            self = .list(IPVSListOptions())
            return
        }
        var scanner = IPVSArgumentScanner(arguments: arguments, explainsRefusals: true)
        var options: [(spec: IPVSOptionSpec, value: String?)] = []
        var scanError: ConfigError? = nil
        scan: while true {
            do throws(ConfigError) {
                guard let next = try scanner.next() else { break scan }
                options.append(next)
            } catch {
                scanError = error
                break scan
            }
        }

        // The first command named decides which parser has the last word.
        for (spec, _) in options {
            switch spec.role {
            case .command(let kind):
                self = .change(try Self.change(arguments, kind))
                return
            case .request(let kind):
                // ipvsadm answers -h and -v at once, whatever follows.
                if kind == .help || kind == .version {
                    self = kind == .help ? .help : .version
                    return
                }
                if let scanError { throw scanError }
                self = try Self.request(kind, options)
                return
            default:
                continue
            }
        }
        throw scanError ?? .missingCommand
    }

    /// A change command, parsed by `IPVSCommand` (rules files parse the same way); its refusals of the
    /// options that belong to requests are put as ipvsadm puts them.
    private static func change(_ arguments: [String], _ kind: IPVSCommandKind) throws(ConfigError) -> IPVSCommand {
        do throws(ConfigError) {
            return try IPVSCommand(arguments: arguments)
        } catch {
            guard case .unsupportedOption(let display, let note) = error,
                  let spec = IPVSOptionSpec.table.first(where: { $0.display == display }) else { throw error }
            switch spec.role {
            case .listModifier:
                throw .optionNotAllowed(option: display, command: kind.display)
            case .request(let other):
                throw .multipleCommands(kind.display, other.display)
            default:
                throw .unsupportedOption(display, note: spec.reason ?? note)
            }
        }
    }

    /// A request command and its options, checked against ipvsadm's table.
    private static func request(_ kind: IPVSRequestKind,
                                _ options: [(spec: IPVSOptionSpec, value: String?)]) throws(ConfigError) -> IPVSRequest {
        var seenCommand = false
        var service: ServiceKey? = nil
        var modifiers: [IPVSListModifier] = []
        for (spec, value) in options {
            switch spec.role {
            case .command(let other):
                throw .multipleCommands(kind.display, other.display)
            case .request(let other):
                if seenCommand { throw .multipleCommands(kind.display, other.display) }
                seenCommand = true
            case .service(let proto):
                guard service == nil else { throw .duplicateOption(IPVSOptionKind.service.display) }
                do throws(EndpointError) {
                    service = ServiceKey(proto: proto, endpoint: try L4Endpoint(parsing: value ?? ""))
                } catch {
                    throw .invalidServiceAddress(value ?? "", error)
                }
            case .listModifier(let modifier):
                guard !modifiers.contains(modifier) else { throw .duplicateOption(modifier.display) }
                modifiers.append(modifier)
            default:
                throw .optionNotAllowed(option: spec.display, command: kind.display)
            }
        }

        func refuseModifiers(except allowed: [IPVSListModifier] = []) throws(ConfigError) {
            if let stray = modifiers.first(where: { !allowed.contains($0) }) {
                throw .optionNotAllowed(option: stray.display, command: kind.display)
            }
        }
        func refuseService() throws(ConfigError) {
            if service != nil { throw .optionNotAllowed(option: IPVSOptionKind.service.display, command: kind.display) }
        }

        switch kind {
        case .list:
            return .list(try listOptions(service: service, modifiers))
        case .save:
            try refuseService()
            try refuseModifiers(except: [.numeric])
            return .save(numeric: modifiers.contains(.numeric))
        case .restore:
            try refuseService()
            try refuseModifiers()
            return .restore
        case .zero:
            try refuseModifiers()
            return .zero(service)
        case .getLocalAddresses:
            // Addresses are always numeric here; -n is accepted as with -L.
            try refuseModifiers(except: [.numeric])
            return .listLocalAddresses(service)
        case .help, .version:
            // Answered before the options are looked at.
            return kind == .help ? .help : .version
        }
    }

    /// `-L`'s options: `-c`, a service and `--timeout` exclude each other; connections and timeouts have
    /// no statistics columns.
    private static func listOptions(service: ServiceKey?,
                                    _ modifiers: [IPVSListModifier]) throws(ConfigError) -> IPVSListOptions {
        let has = { (modifier: IPVSListModifier) in modifiers.contains(modifier) }
        // ipvsadm names the later of two exclusive options first, in the order of its option table.
        var exclusive: [String] = []
        if has(.connection) { exclusive.append(IPVSListModifier.connection.display) }
        if service != nil { exclusive.append(IPVSOptionKind.service.display) }
        if has(.timeout) { exclusive.append(IPVSListModifier.timeout.display) }
        if exclusive.count > 1 {
            throw .conflictingOptions(option: exclusive[1], other: exclusive[0], command: IPVSRequestKind.list.display)
        }
        if (has(.connection) || has(.timeout)) && (has(.stats) || has(.rate) || has(.thresholds))
            || has(.timeout) && has(.persistentConnections) {
            throw .listOptionsConflict
        }
        // --sort is ipvsadm's default, kept for compatibility.
        return IPVSListOptions(service: service, numeric: has(.numeric), stats: has(.stats), rate: has(.rate),
                               exact: has(.exact), thresholds: has(.thresholds),
                               persistentConnections: has(.persistentConnections), sort: !has(.nosort),
                               connections: has(.connection), timeouts: has(.timeout))
    }
}

extension IPVSRequest {
    /// The line ipvsadm prints for `error`: its option parser's words for an unknown option, and IPVS's
    /// "Service not defined" where a real server's or local address's service is missing (IPVS says
    /// "No such service" only of services themselves). `request` is nil when the arguments did not parse.
    public static func message(for error: ConfigError, request: IPVSRequest? = nil) -> String {
        switch (error, request) {
        case (.unknownOption(let option), _):
            return "\(option): unknown option"
        case (.noSuchService, .change(let command)?):
            switch command {
            case .addServer, .editServer, .deleteServer, .addLocalAddress, .deleteLocalAddress:
                return "Service not defined"
            default:
                return error.description
            }
        default:
            return error.description
        }
    }

    /// ipvsadm's exit status for `error`: 2 for what ipvsadm itself refuses (its `fail(2, ...)`), 255 for
    /// what its option parser refuses and for what IPVS refuses (ipvsadm returns -1 from `main`), and 1 for
    /// a listing of a service that does not exist.
    public static func exitStatus(for error: ConfigError, request: IPVSRequest? = nil) -> Int32 {
        switch error {
        case .unknownOption, .missingValue, .unexpectedValue, .missingCommand:
            // Its option parser's refusals, and no command first ("Try `ipvsadm -h'..."): exit(-1).
            return 255
        case .noSuchService:
            if case .list? = request { return 1 }
            return 255
        case .serviceExists, .destinationExists, .noSuchDestination, .localAddressExists, .noSuchLocalAddress,
             .unknownScheduler, .schedulerFlagNotAllowed, .familyMismatch:
            return 255
        default:
            return 2
        }
    }
}
