import Packet
import Scheduling

// The director's configuration as operators state it: services and their real servers, in the terms of
// ipvsadm. `DirectorConfig.apply(_:)` is the one place where commands change it, and it refuses what IPVS
// would refuse, with IPVS's words where IPVS has them.

extension ForwardingMethod {
    /// The ipvsadm option that selects this method, as `ipvsadm-save` prints it.
    public var option: String {
        switch self {
        case .directRouting: return "-g"
        case .tunnel: return "-i"
        case .masquerading: return "-m"
        case .fullNAT: return "--fullnat"
        }
    }
}

extension TunnelType {
    /// The name `--tun-type` takes and `ipvsadm-save` prints.
    public var name: String {
        switch self {
        case .ipip: return "ipip"
        case .gue: return "gue"
        case .gre: return "gre"
        }
    }

    /// The type `--tun-type NAME` names.
    public init?(name: String) {
        guard let type = TunnelType.allCases.first(where: { $0.name == name }) else { return nil }
        self = type
    }
}

/// The encapsulation of a tunnelled real server (`--tun-type`, `--tun-port`, `--tun-csum`) as ipvsadm
/// states it.
extension TunnelParameters {
    public static let ipip = TunnelParameters(type: .ipip)

    /// The options after `-i` as ipvsadm-save prints them: none for plain IPIP.
    public var arguments: [String] {
        guard type != .ipip else { return [] }
        return ["--tun-type", type.name] + (type == .gue ? ["--tun-port", String(port)] : [])
            + (checksum ? ["--tun-csum"] : [])
    }
}

/// A real server of a service.
public struct RealServerConfig: Equatable, Sendable {
    public var endpoint: L4Endpoint
    /// 0...65535, as in IPVS; 0 takes the server out of scheduling without dropping its connections.
    public var weight: Int32
    public var method: ForwardingMethod
    /// How a tunnelled (`-i`) real server is reached; `.ipip` for the other methods.
    public var tunnel: TunnelParameters
    /// `-x`: no new connections once it holds this many (active + inactive); 0 = no limit.
    public var upperThreshold: UInt32
    /// `-y`: new connections again below this many; 0 = below three quarters of the upper threshold.
    public var lowerThreshold: UInt32

    public init(endpoint: L4Endpoint, weight: Int32 = 1, method: ForwardingMethod = .directRouting,
                tunnel: TunnelParameters = .ipip, upperThreshold: UInt32 = 0, lowerThreshold: UInt32 = 0) {
        self.endpoint = endpoint
        self.weight = weight
        self.method = method
        self.tunnel = tunnel
        self.upperThreshold = upperThreshold
        self.lowerThreshold = lowerThreshold
    }

    /// The weights IPVS accepts.
    public static let weightRange: ClosedRange<Int32> = 0...65535
    /// The thresholds ipvsadm accepts.
    public static let thresholdRange: ClosedRange<UInt32> = 0...UInt32(Int32.max)
}

/// A service's scheduling options besides the scheduler: `-b`, `-p`, `-M`, `-o`.
public struct ServiceOptions: Equatable, Sendable {
    /// `-b`: only sh and mh take flags.
    public var schedulerFlags: SchedulerFlags
    /// `-p [timeout]`: seconds; nil when the service is not persistent.
    public var persistence: UInt32?
    /// `-M`: the prefix length of the client addresses that share a persistence template (nil: the whole
    /// address). ipvsadm writes a dotted mask for IPv4 and a length for IPv6.
    public var netmask: Int?
    /// `-o`: one-packet scheduling (UDP).
    public var onePacket: Bool

    public init(schedulerFlags: SchedulerFlags = [], persistence: UInt32? = nil, netmask: Int? = nil,
                onePacket: Bool = false) {
        self.schedulerFlags = schedulerFlags
        self.persistence = persistence
        self.netmask = netmask
        self.onePacket = onePacket
    }

    /// The persistence timeouts ipvsadm accepts (1 second to 31 days).
    public static let persistenceRange: ClosedRange<UInt32> = 1...(31 * 86400)
}

/// `--set tcp tcpfin udp`: the idle timeouts of established TCP, closing TCP and UDP, in seconds.
public struct TimeoutSettings: Equatable, Sendable {
    public var tcp: UInt32
    public var tcpFin: UInt32
    public var udp: UInt32

    public init(tcp: UInt32 = 900, tcpFin: UInt32 = 120, udp: UInt32 = 300) {
        self.tcp = tcp
        self.tcpFin = tcpFin
        self.udp = udp
    }

    /// As IPVS: a 0 leaves that timeout as it is.
    public func merged(into current: TimeoutSettings) -> TimeoutSettings {
        TimeoutSettings(tcp: tcp == 0 ? current.tcp : tcp, tcpFin: tcpFin == 0 ? current.tcpFin : tcpFin,
                        udp: udp == 0 ? current.udp : udp)
    }

    /// The connection table's timeouts: these three, IPVS's defaults for the other states.
    public var connectionTimeouts: ConnectionTimeouts {
        ConnectionTimeouts(tcpEstablished: tcp, tcpFin: tcpFin, udp: udp)
    }

    /// The values ipvsadm accepts (0 = unchanged, up to 31 days).
    public static let range: ClosedRange<UInt32> = 0...(31 * 86400)
}

/// A virtual service and its real servers, in the order they were added.
public struct ServiceConfig: Equatable, Sendable {
    public var proto: L4Protocol
    public var endpoint: L4Endpoint
    public var scheduler: SchedulerKind
    public var options: ServiceOptions
    public var reals: [RealServerConfig]
    /// FULLNAT's source addresses towards the real servers (`-P -z`), in the order they were added.
    public var localAddresses: [IPAddress]

    public init(proto: L4Protocol, endpoint: L4Endpoint, scheduler: SchedulerKind, options: ServiceOptions = .init(),
                reals: [RealServerConfig] = [], localAddresses: [IPAddress] = []) {
        self.proto = proto
        self.endpoint = endpoint
        self.scheduler = scheduler
        self.options = options
        self.reals = reals
        self.localAddresses = localAddresses
    }

    /// What the data plane needs of the service's options.
    public var policy: ServicePolicy {
        ServicePolicy(scheduler: scheduler, flags: options.schedulerFlags, persistenceTimeout: options.persistence ?? 0,
                      netmaskPrefix: options.netmask, ipv6: endpoint.address.family == .ipv6,
                      onePacket: options.onePacket)
    }

    public var key: ServiceKey { ServiceKey(proto: proto, endpoint: endpoint) }

    /// The index of the real server at `endpoint`, if the service has one.
    public func realIndex(of endpoint: L4Endpoint) -> Int? {
        reals.firstIndex { $0.endpoint == endpoint }
    }
}

/// Everything the director serves, in the order services were added.
public struct DirectorConfig: Equatable, Sendable {
    public var services: [ServiceConfig]
    /// `--set`: nil until a command sets them (IPVS's defaults apply).
    public var timeouts: TimeoutSettings?

    public init() {
        services = []
    }

    public init(services: [ServiceConfig], timeouts: TimeoutSettings? = nil) {
        self.services = services
        self.timeouts = timeouts
    }

    /// The connection timeouts in force.
    public var connectionTimeouts: ConnectionTimeouts { (timeouts ?? TimeoutSettings()).connectionTimeouts }

    /// The index of the service `key` names, if there is one.
    public func serviceIndex(of key: ServiceKey) -> Int? {
        services.firstIndex { $0.proto == key.proto && $0.endpoint == key.endpoint }
    }

    /// The service `key` names, if there is one.
    public func service(_ key: ServiceKey) -> ServiceConfig? {
        serviceIndex(of: key).map { services[$0] }
    }

    /// Applies one ipvsadm command, as IPVS would: all of it or, when it throws, none of it.
    public mutating func apply(_ command: IPVSCommand) throws(ConfigError) {
        try command.validate()
        switch command {
        case .addService(let key, let scheduler, let options):
            guard serviceIndex(of: key) == nil else { throw .serviceExists(key) }
            services.append(ServiceConfig(proto: key.proto, endpoint: key.endpoint, scheduler: scheduler,
                                          options: options))

        case .editService(let key, let scheduler, let options):
            guard let s = serviceIndex(of: key) else { throw .noSuchService(key) }
            let newScheduler = scheduler ?? services[s].scheduler
            let newOptions = options ?? services[s].options
            try IPVSCommand.checkOptions(newOptions, scheduler: newScheduler, of: key)
            services[s].scheduler = newScheduler
            services[s].options = newOptions

        case .deleteService(let key):
            guard let s = serviceIndex(of: key) else { throw .noSuchService(key) }
            services.remove(at: s)

        case .addServer(let key, let real):
            guard let s = serviceIndex(of: key) else { throw .noSuchService(key) }
            guard services[s].realIndex(of: real.endpoint) == nil else {
                throw .destinationExists(key, real.endpoint)
            }
            services[s].reals.append(real)

        case .editServer(let key, let server, let weight, let method, let tunnel, let upper, let lower):
            guard let s = serviceIndex(of: key) else { throw .noSuchService(key) }
            guard let r = services[s].realIndex(of: server) else { throw .noSuchDestination(key, server) }
            var real = services[s].reals[r]
            if let weight { real.weight = weight }
            if let method { real.method = method }
            if let tunnel { real.tunnel = tunnel }
            if let upper { real.upperThreshold = upper }
            if let lower { real.lowerThreshold = lower }
            try IPVSCommand.checkReal(real.endpoint, method: real.method, of: key)
            services[s].reals[r] = real

        case .deleteServer(let key, let server):
            guard let s = serviceIndex(of: key) else { throw .noSuchService(key) }
            guard let r = services[s].realIndex(of: server) else { throw .noSuchDestination(key, server) }
            services[s].reals.remove(at: r)

        case .addLocalAddress(let key, let address):
            guard let s = serviceIndex(of: key) else { throw .noSuchService(key) }
            guard !services[s].localAddresses.contains(address) else { throw .localAddressExists(key, address) }
            services[s].localAddresses.append(address)

        case .deleteLocalAddress(let key, let address):
            guard let s = serviceIndex(of: key) else { throw .noSuchService(key) }
            guard let l = services[s].localAddresses.firstIndex(of: address) else {
                throw .noSuchLocalAddress(key, address)
            }
            services[s].localAddresses.remove(at: l)

        case .clear:
            services.removeAll()

        case .setTimeouts(let settings):
            timeouts = settings.merged(into: timeouts ?? TimeoutSettings())
        }
    }
}

/// Why an ipvsadm command was refused: its syntax, its values, or the state it would change.
public enum ConfigError: Error, Equatable, Sendable, CustomStringConvertible {
    // Syntax.
    /// The line is not UTF-8 text (a rules file is).
    case notText
    /// No command option (`-A`, `-E`, `-D`, `-a`, `-e`, `-d`, `-C`) was given.
    case missingCommand
    /// Two commands in one argument vector (the options as the operator wrote them).
    case multipleCommands(String, String)
    /// An option ipvsadm does not have.
    case unknownOption(String)
    /// An ipvsadm option or command this version does not implement yet; the note says what to use instead.
    case unsupportedOption(String, note: String?)
    /// An option that takes a value came last, or before another option.
    case missingValue(String)
    /// A value attached (`--gatewaying=x`) to an option that takes none.
    case unexpectedValue(String)
    /// A word that is neither an option nor an option's value.
    case unexpectedArgument(String)
    /// An option (or one of a group such as `-t`/`-u`) given twice.
    case duplicateOption(String)
    /// An option the command does not take, e.g. `-w` with `-A`.
    case optionNotAllowed(option: String, command: String)
    /// An option the command needs, e.g. `-r` with `-a`.
    case missingOption(option: String, command: String)
    /// Two options of which the command takes only one, e.g. `-c` and `-t` with `-L`.
    case conflictingOptions(option: String, other: String, command: String)
    /// Listing options that do not go together, e.g. `-c` with `--stats` (ipvsadm's words).
    case listOptionsConflict
    /// A scheduler name IPVS does not know.
    case unknownScheduler(String)
    /// A weight that is not an integer in 0...65535.
    case invalidWeight(String)
    /// A `-b` flag ipvsadm does not know.
    case unknownSchedulerFlag(String)
    /// A `-b` flag the scheduler does not take (IPVS refuses sh-* flags for other schedulers, and so on).
    case schedulerFlagNotAllowed(flag: String, scheduler: SchedulerKind)
    /// A `-p` timeout outside 1 second ... 31 days.
    case invalidPersistence(String)
    /// A `-M` value that is not a contiguous IPv4 netmask or an IPv6 prefix length (0...128).
    case invalidNetmask(String)
    /// `-M` without `-p`: the mask only groups clients for persistence.
    case netmaskWithoutPersistence
    /// `-o` on a TCP service: one-packet scheduling is for UDP.
    case onePacketNeedsUDP
    /// An `-x`/`-y` value that is not an integer in 0...2^31-1.
    case invalidThreshold(String)
    /// A `--set` value that is not an integer in 0...2678400.
    case invalidTimeout(String)
    /// A `-t`/`-u` value that is not a numeric address with a port.
    case invalidServiceAddress(String, EndpointError)
    /// A `-r` value that is not a numeric address with an optional port.
    case invalidRealServerAddress(String, EndpointError)

    // Meaning.
    /// A real server of the other address family than its service (only tunnelling can mix them).
    case familyMismatch(real: L4Endpoint, service: ServiceKey)
    /// A real server port other than the service's with a method that cannot change the port.
    case portMismatch(real: L4Endpoint, service: ServiceKey, method: ForwardingMethod)
    /// `--tun-type`, `--tun-port` or `--tun-csum` without `-i`, or `--tun-port` with another type than gue.
    case tunnelOptionWithoutTunnel(String)
    /// `--tun-type gue` without `--tun-port`.
    case tunnelPortRequired
    /// A `--tun-type` other than ipip, gue, gre.
    case unknownTunnelType(String)
    /// A `--tun-port` that is not a port number 1...65535.
    case invalidTunnelPort(String)
    /// A `-z` value that is not a numeric address, or not of the service's family.
    case invalidLocalAddress(String)

    // State, in IPVS's words.
    case serviceExists(ServiceKey)
    case noSuchService(ServiceKey)
    case destinationExists(ServiceKey, L4Endpoint)
    case noSuchDestination(ServiceKey, L4Endpoint)
    case localAddressExists(ServiceKey, IPAddress)
    case noSuchLocalAddress(ServiceKey, IPAddress)

    public var description: String {
        switch self {
        case .notText:
            return "not UTF-8 text"
        case .missingCommand:
            return "no command given (one of -A, -E, -D, -a, -e, -d, -C)"
        case .multipleCommands(let first, let second):
            return "more than one command given: \(first) and \(second)"
        case .unknownOption(let option):
            return "unknown option \(option)"
        case .unsupportedOption(let option, let note):
            return "\(option) is not supported yet" + (note.map { " (\($0))" } ?? "")
        case .missingValue(let option):
            return "\(option) needs a value"
        case .unexpectedValue(let option):
            return "\(option) takes no value"
        case .unexpectedArgument(let argument):
            return "unexpected argument '\(argument)'"
        case .duplicateOption(let option):
            return "\(option) given more than once"
        case .optionNotAllowed(let option, let command):
            return "\(option) is not allowed with \(command)"
        case .missingOption(let option, let command):
            return "\(command) needs \(option)"
        case .conflictingOptions(let option, let other, let command):
            return "The option '\(option)' conflicts with the '\(other)' option in the '\(command)' command"
        case .listOptionsConflict:
            return "options conflicts in the list command"
        case .unknownScheduler(let name):
            return "unknown scheduler '\(name)' (supported: \(Self.supportedSchedulers))"
        case .invalidWeight(let text):
            return "invalid weight '\(text)': expected an integer from 0 to 65535"
        case .unknownSchedulerFlag(let name):
            return "unknown scheduler flag '\(name)' (sh-fallback, sh-port, mh-fallback, mh-port)"
        case .schedulerFlagNotAllowed(let flag, let scheduler):
            return "scheduler flag '\(flag)' does not apply to scheduler \(scheduler.name)"
        case .invalidPersistence(let text):
            return "invalid persistence timeout '\(text)': expected seconds from 1 to 2678400"
        case .invalidNetmask(let text):
            return "invalid netmask '\(text)': expected a dotted IPv4 netmask or an IPv6 prefix length"
        case .netmaskWithoutPersistence:
            return "-M/--netmask needs -p/--persistent"
        case .onePacketNeedsUDP:
            return "-o/--ops (one-packet scheduling) applies to UDP services only"
        case .invalidThreshold(let text):
            return "invalid threshold '\(text)': expected an integer from 0 to 2147483647"
        case .invalidTimeout(let text):
            return "invalid timeout '\(text)': expected seconds from 0 (unchanged) to 2678400"
        case .invalidServiceAddress(let text, let reason):
            return "invalid service address '\(text)': \(reason)"
        case .invalidRealServerAddress(let text, let reason):
            return "invalid real server address '\(text)': \(reason)"
        case .familyMismatch(let real, let service):
            return "real server \(real.address) is \(Self.familyName(real.address)) but service "
                + "\(service.endpoint) is \(Self.familyName(service.endpoint.address)); only tunnelling (-i) "
                + "can mix address families"
        case .portMismatch(let real, let service, let method):
            return "real server port \(real.port) differs from the service port \(service.endpoint.port): "
                + "\(Self.methodName(method)) (\(method.option)) cannot change the port; "
                + "omit the port or use \(service.endpoint.port)"
        case .tunnelOptionWithoutTunnel(let option):
            return option == "--tun-port"
                ? "--tun-port is only for -i/--ipip with --tun-type gue"
                : "\(option) is only for tunnelled real servers (-i/--ipip)"
        case .tunnelPortRequired:
            return "--tun-type gue needs --tun-port"
        case .unknownTunnelType(let name):
            return "unknown tunnel type '\(name)' (ipip, gue or gre)"
        case .invalidTunnelPort(let text):
            return "invalid tunnel port '\(text)': expected an integer from 1 to 65535"
        case .invalidLocalAddress(let text):
            return "invalid local address '\(text)': expected a numeric address of the service's family"
        case .localAddressExists:
            return "Local address already exists"
        case .noSuchLocalAddress:
            return "No such local address"
        case .serviceExists:
            return "Service already exists"
        case .noSuchService:
            return "No such service"
        case .destinationExists:
            return "Destination already exists"
        case .noSuchDestination:
            return "No such destination"
        }
    }

    static var supportedSchedulers: String {
        SchedulerKind.allCases.map(\.name).joined(separator: ", ")
    }

    private static func familyName(_ address: IPAddress) -> String {
        address.family == .ipv4 ? "IPv4" : "IPv6"
    }

    private static func methodName(_ method: ForwardingMethod) -> String {
        switch method {
        case .directRouting: return "direct routing"
        case .tunnel: return "tunnelling"
        case .masquerading: return "masquerading"
        case .fullNAT: return "full NAT"
        }
    }
}
