import Packet

// Every option ipvsadm knows, so that an operator's command is either understood, refused as "not supported
// yet" by name, or refused as unknown. One table; the parser looks options up here and nowhere else.

/// The commands this version implements.
enum IPVSCommandKind: Sendable {
    case addService, editService, deleteService, addServer, editServer, deleteServer, clear, setTimeouts
    case addLocalAddress, deleteLocalAddress

    /// `-A/--add-service`, for messages.
    var display: String {
        switch self {
        case .addService: return "-A/--add-service"
        case .editService: return "-E/--edit-service"
        case .deleteService: return "-D/--delete-service"
        case .addServer: return "-a/--add-server"
        case .editServer: return "-e/--edit-server"
        case .deleteServer: return "-d/--delete-server"
        case .clear: return "-C/--clear"
        case .addLocalAddress: return "-P/--add-laddr"
        case .deleteLocalAddress: return "-Q/--del-laddr"
        case .setTimeouts: return "--set"
        }
    }
}

/// The commands that read rather than change the tables (`-L`, `-S`, ...): served by a running director,
/// never taken from a rules file.
enum IPVSRequestKind: Sendable {
    case list, save, restore, zero, getLocalAddresses, help, version

    var display: String {
        switch self {
        case .list: return "-L/--list"
        case .save: return "-S/--save"
        case .restore: return "-R/--restore"
        case .zero: return "-Z/--zero"
        case .getLocalAddresses: return "-G/--get-laddr"
        case .help: return "-h/--help"
        case .version: return "-v/--version"
        }
    }
}

/// The options that shape a listing (`-n`, `--stats`, ...).
enum IPVSListModifier: Sendable {
    case numeric, connection, timeout, stats, rate, thresholds, persistentConnections, sort, nosort, exact

    var display: String {
        switch self {
        case .numeric: return "-n/--numeric"
        case .connection: return "-c/--connection"
        case .timeout: return "--timeout"
        case .stats: return "--stats"
        case .rate: return "--rate"
        case .thresholds: return "--thresholds"
        case .persistentConnections: return "--persistent-conn"
        case .sort: return "--sort"
        case .nosort: return "--nosort"
        case .exact: return "-X/--exact"
        }
    }
}

/// The options (other than commands) this version implements, each with the commands that take it.
enum IPVSOptionKind: Sendable, CaseIterable {
    case service, scheduler, realServer, forwardingMethod, weight, tunnelType, tunnelPort, tunnelChecksum
    case localAddress
    case schedulerFlags, persistent, netmask, onePacket, upperThreshold, lowerThreshold

    var display: String {
        switch self {
        case .schedulerFlags: return "-b/--sched-flags"
        case .persistent: return "-p/--persistent"
        case .netmask: return "-M/--netmask"
        case .onePacket: return "-o/--ops"
        case .upperThreshold: return "-x/--u-threshold"
        case .lowerThreshold: return "-y/--l-threshold"
        case .service: return "-t/--tcp-service or -u/--udp-service"
        case .scheduler: return "-s/--scheduler"
        case .realServer: return "-r/--real-server"
        case .forwardingMethod: return "-g/--gatewaying"
        case .weight: return "-w/--weight"
        case .tunnelType: return "--tun-type"
        case .tunnelPort: return "--tun-port"
        case .tunnelChecksum: return "--tun-nocsum or --tun-csum"
        case .localAddress: return "-z/--laddr"
        }
    }

    enum Use { case required, optional, refused }

    /// As ipvsadm's table of commands and options has it.
    func use(with command: IPVSCommandKind) -> Use {
        switch (self, command) {
        case (_, .clear), (_, .setTimeouts):
            return .refused
        case (.scheduler, .addService), (.scheduler, .editService),
             (.schedulerFlags, .addService), (.schedulerFlags, .editService),
             (.persistent, .addService), (.persistent, .editService),
             (.netmask, .addService), (.netmask, .editService),
             (.onePacket, .addService), (.onePacket, .editService):
            return .optional
        case (.scheduler, _), (.schedulerFlags, _), (.persistent, _), (.netmask, _), (.onePacket, _):
            return .refused
        case (.upperThreshold, .addServer), (.upperThreshold, .editServer),
             (.lowerThreshold, .addServer), (.lowerThreshold, .editServer):
            return .optional
        case (.upperThreshold, _), (.lowerThreshold, _):
            return .refused
        case (.service, _):
            return .required
        case (.realServer, .addServer), (.realServer, .editServer), (.realServer, .deleteServer):
            return .required
        case (.realServer, _):
            return .refused
        case (.forwardingMethod, .addServer), (.forwardingMethod, .editServer),
             (.weight, .addServer), (.weight, .editServer),
             (.tunnelType, .addServer), (.tunnelType, .editServer),
             (.tunnelPort, .addServer), (.tunnelPort, .editServer),
             (.tunnelChecksum, .addServer), (.tunnelChecksum, .editServer):
            return .optional
        case (.forwardingMethod, _), (.weight, _), (.tunnelType, _), (.tunnelPort, _), (.tunnelChecksum, _):
            return .refused
        case (.localAddress, .addLocalAddress), (.localAddress, .deleteLocalAddress):
            return .required
        case (.localAddress, _):
            return .refused
        }
    }
}

/// One entry of ipvsadm's option table.
struct IPVSOptionSpec: Sendable {
    enum Role: Sendable {
        case command(IPVSCommandKind)
        /// A command served by a running director (`-L`, `-S`, `-Z`, ...), refused in rules files.
        case request(IPVSRequestKind)
        /// A listing option (`-n`, `--stats`, ...), refused in rules files.
        case listModifier(IPVSListModifier)
        case service(L4Protocol)
        case scheduler
        case realServer
        case method(ForwardingMethod)
        case weight
        case tunnelType
        case tunnelPort
        /// `--tun-csum` (true) or `--tun-nocsum` (false).
        case tunnelChecksum(Bool)
        case localAddress
        case schedulerFlags
        case persistent
        case netmask
        case onePacket
        case upperThreshold
        case lowerThreshold
        /// Known to ipvsadm, not implemented here yet; the note says what to do instead.
        case unsupported(note: String?)
    }

    let short: Character?
    let long: String
    let takesValue: Bool
    let role: Role
    /// The value may be left out (`-p [timeout]`): the next argument is taken only when it is a number.
    var optionalValue = false
    /// Why an `.unsupported` option is refused, for operators at the command line (rules files keep the
    /// role's own note).
    var reason: String? = nil
    /// The note a rules file gives for a `.request` or `.listModifier` option.
    var rulesNote: String? = nil

    /// `-w/--weight` or `--pe`.
    var display: String { short.map { "-\($0)/--\(long)" } ?? "--\(long)" }

    static func find(short: Character) -> IPVSOptionSpec? { table.first { $0.short == short } }
    static func find(long: String) -> IPVSOptionSpec? { table.first { $0.long == long } }

    private static let needsSocket = "listings need the control socket of a running director"
    private static let noSync = "connection synchronisation between directors is not supported"
    private static let noFwmark = "firewall-mark services are not supported; use -t or -u"

    static let table: [IPVSOptionSpec] = [
        // Commands.
        .init(short: "A", long: "add-service", takesValue: false, role: .command(.addService)),
        .init(short: "E", long: "edit-service", takesValue: false, role: .command(.editService)),
        .init(short: "D", long: "delete-service", takesValue: false, role: .command(.deleteService)),
        .init(short: "C", long: "clear", takesValue: false, role: .command(.clear)),
        .init(short: "a", long: "add-server", takesValue: false, role: .command(.addServer)),
        .init(short: "e", long: "edit-server", takesValue: false, role: .command(.editServer)),
        .init(short: "d", long: "delete-server", takesValue: false, role: .command(.deleteServer)),
        .init(short: "P", long: "add-laddr", takesValue: false, role: .command(.addLocalAddress)),
        .init(short: "Q", long: "del-laddr", takesValue: false, role: .command(.deleteLocalAddress)),
        .init(short: "G", long: "get-laddr", takesValue: false, role: .request(.getLocalAddresses), rulesNote: needsSocket),
        .init(short: "R", long: "restore", takesValue: false, role: .request(.restore)),
        .init(short: "S", long: "save", takesValue: false, role: .request(.save)),
        .init(short: "L", long: "list", takesValue: false, role: .request(.list)),
        .init(short: "l", long: "list", takesValue: false, role: .request(.list)),
        .init(short: "Z", long: "zero", takesValue: false, role: .request(.zero)),
        .init(short: nil, long: "set", takesValue: true, role: .command(.setTimeouts)),
        .init(short: nil, long: "start-daemon", takesValue: true, role: .unsupported(note: nil), reason: noSync),
        .init(short: nil, long: "stop-daemon", takesValue: true, role: .unsupported(note: nil), reason: noSync),
        .init(short: "h", long: "help", takesValue: false, role: .request(.help)),
        .init(short: "v", long: "version", takesValue: false, role: .request(.version)),
        // Services.
        .init(short: "t", long: "tcp-service", takesValue: true, role: .service(.tcp)),
        .init(short: "u", long: "udp-service", takesValue: true, role: .service(.udp)),
        .init(short: "f", long: "fwmark-service", takesValue: true, role: .unsupported(note: nil), reason: noFwmark),
        .init(short: "6", long: "ipv6", takesValue: false, role: .unsupported(note: nil), reason: noFwmark),
        .init(short: "s", long: "scheduler", takesValue: true, role: .scheduler),
        .init(short: "b", long: "sched-flags", takesValue: true, role: .schedulerFlags),
        .init(short: "p", long: "persistent", takesValue: true, role: .persistent, optionalValue: true),
        .init(short: "M", long: "netmask", takesValue: true, role: .netmask),
        .init(short: nil, long: "pe", takesValue: true, role: .unsupported(note: nil),
              reason: "persistence engines are not supported"),
        .init(short: "o", long: "ops", takesValue: false, role: .onePacket),
        // Real servers.
        .init(short: "r", long: "real-server", takesValue: true, role: .realServer),
        .init(short: "g", long: "gatewaying", takesValue: false, role: .method(.directRouting)),
        .init(short: "i", long: "ipip", takesValue: false, role: .method(.tunnel)),
        .init(short: "m", long: "masquerading", takesValue: false, role: .method(.masquerading)),
        .init(short: nil, long: "fullnat", takesValue: false, role: .method(.fullNAT)),
        .init(short: nil, long: "tun-type", takesValue: true, role: .tunnelType),
        .init(short: nil, long: "tun-port", takesValue: true, role: .tunnelPort),
        .init(short: nil, long: "tun-nocsum", takesValue: false, role: .tunnelChecksum(false)),
        .init(short: nil, long: "tun-csum", takesValue: false, role: .tunnelChecksum(true)),
        .init(short: nil, long: "tun-remcsum", takesValue: false, role: .unsupported(note: nil),
              reason: "remote checksum offload is not supported; use --tun-csum or --tun-nocsum"),
        .init(short: "w", long: "weight", takesValue: true, role: .weight),
        .init(short: "z", long: "laddr", takesValue: true, role: .localAddress),
        .init(short: "x", long: "u-threshold", takesValue: true, role: .upperThreshold),
        .init(short: "y", long: "l-threshold", takesValue: true, role: .lowerThreshold),
        // Listing and connection synchronisation.
        .init(short: "n", long: "numeric", takesValue: false, role: .listModifier(.numeric)),
        .init(short: "c", long: "connection", takesValue: false, role: .listModifier(.connection)),
        .init(short: "X", long: "exact", takesValue: false, role: .listModifier(.exact)),
        .init(short: nil, long: "timeout", takesValue: false, role: .listModifier(.timeout)),
        .init(short: nil, long: "daemon", takesValue: false, role: .unsupported(note: nil), reason: noSync),
        .init(short: nil, long: "stats", takesValue: false, role: .listModifier(.stats)),
        .init(short: nil, long: "rate", takesValue: false, role: .listModifier(.rate)),
        .init(short: nil, long: "thresholds", takesValue: false, role: .listModifier(.thresholds)),
        .init(short: nil, long: "persistent-conn", takesValue: false, role: .listModifier(.persistentConnections)),
        .init(short: nil, long: "sort", takesValue: false, role: .listModifier(.sort)),
        .init(short: nil, long: "nosort", takesValue: false, role: .listModifier(.nosort)),
        .init(short: nil, long: "tun-info", takesValue: false, role: .unsupported(note: nil),
              reason: "listings do not show tunnel settings; -S does"),
        .init(short: nil, long: "mcast-interface", takesValue: true, role: .unsupported(note: nil), reason: noSync),
        .init(short: nil, long: "mcast-group", takesValue: true, role: .unsupported(note: nil), reason: noSync),
        .init(short: nil, long: "mcast-port", takesValue: true, role: .unsupported(note: nil), reason: noSync),
        .init(short: nil, long: "mcast-ttl", takesValue: true, role: .unsupported(note: nil), reason: noSync),
        .init(short: nil, long: "syncid", takesValue: true, role: .unsupported(note: nil), reason: noSync),
        .init(short: nil, long: "sync-maxlen", takesValue: true, role: .unsupported(note: nil), reason: noSync),
    ]
}
