import Control
import Foundation
import Packet
import Scheduling

// keepalived.conf → `KeepalivedConfig`. Keywords mean what keepalived 2.2's check parser makes of them;
// blocks that are keepalived's job alone (VRRP, global settings) are skipped with one line each; any other
// keyword XDirector does not run is refused by name with its file and line, never silently dropped.

public enum KeepalivedParser {
    /// Reads `path` (and what it includes) from `files`.
    public static func load(path: String, files: KeepalivedFiles = .system) throws(KeepalivedConfigError) -> KeepalivedConfig {
        try parse(KeepalivedSyntax.parse(path: path, files: files))
    }

    /// Parses one file's text (includes are read from `files`).
    public static func parse(_ text: String, file: String = "keepalived.conf",
                             files: KeepalivedFiles = .memory([:])) throws(KeepalivedConfigError) -> KeepalivedConfig {
        let combined = KeepalivedFiles(read: { $0 == file ? text : files.read($0) }, expand: files.expand)
        return try parse(KeepalivedSyntax.parse(path: file, files: combined))
    }

    /// Top-level blocks keepalived runs itself, with what they are for.
    static let leftToKeepalived: [String: String] = [
        "global_defs": "keepalived's global settings (mail, router id, scripts)",
        "vrrp_instance": "VRRP", "vrrp_sync_group": "VRRP", "vrrp_script": "VRRP", "vrrp_track_process": "VRRP",
        "vrrp_track_file": "VRRP", "track_file": "VRRP", "garp_group": "VRRP", "static_ipaddress": "VRRP",
        "static_routes": "VRRP", "static_rules": "VRRP", "linkbeat_interfaces": "VRRP", "bfd_instance": "BFD",
    ]

    static func parse(_ statements: [KeepalivedStatement]) throws(KeepalivedConfigError) -> KeepalivedConfig {
        var result = KeepalivedConfig()
        var groups: [String: (keys: [L4Endpoint], location: SourceLocation)] = [:]
        for statement in statements where statement.keyword == "virtual_server_group" {
            guard statement.arguments.count == 1, let block = statement.block else {
                throw KeepalivedConfigError(statement.location, "virtual_server_group needs a name and a block")
            }
            guard groups[statement.arguments[0]] == nil else {
                throw KeepalivedConfigError(statement.location, "virtual_server_group \(statement.arguments[0]) defined twice")
            }
            groups[statement.arguments[0]] = (try groupMembers(block), statement.location)
        }
        for statement in statements {
            switch statement.keyword {
            case "virtual_server_group":
                continue
            case "virtual_server":
                try virtualServer(statement, groups: groups, into: &result)
            default:
                if let job = leftToKeepalived[statement.keyword] {
                    let name = statement.arguments.first.map { " \($0)" } ?? ""
                    result.skipped.append("\(statement.location): skipped \(statement.keyword)\(name): \(job), keepalived's job")
                } else {
                    throw unsupported(statement)
                }
            }
        }
        try checkScriptSecurity(statements)
        return result
    }

    /// keepalived runs no script as root unless `global_defs` says `enable_script_security`, and refuses a
    /// file that configures one without it (`keepalived -t`: "SECURITY VIOLATION"); so does XDirector, which
    /// runs its scripts (MISC_CHECK, notify, quorum) as root: a `script_user` other than root is refused.
    static func checkScriptSecurity(_ statements: [KeepalivedStatement]) throws(KeepalivedConfigError) {
        let globals = statements.filter { $0.keyword == "global_defs" }.flatMap { $0.block ?? [] }
        if let user = globals.first(where: { $0.keyword == "script_user" }), user.arguments.first != "root" {
            throw KeepalivedConfigError(user.location, "'script_user \(user.arguments.joined(separator: " "))' is not supported by "
                + "XDirector: its scripts run as root (script_user root, with enable_script_security)")
        }
        guard !globals.contains(where: { $0.keyword == "enable_script_security" }) else { return }
        func firstScript(_ statements: [KeepalivedStatement]) -> KeepalivedStatement? {
            for statement in statements {
                if ["misc_path", "notify_up", "notify_down", "quorum_up", "quorum_down"].contains(statement.keyword) { return statement }
                if let found = statement.block.flatMap(firstScript) { return found }
            }
            return nil
        }
        if let script = firstScript(statements.filter { $0.keyword == "virtual_server" }) {
            throw KeepalivedConfigError(script.location, "'\(script.keyword)' runs a script as root, but script security is not "
                + "enabled: add enable_script_security to global_defs (keepalived refuses such a file too)")
        }
    }

    static func unsupported(_ statement: KeepalivedStatement, in context: String? = nil) -> KeepalivedConfigError {
        KeepalivedConfigError(statement.location, "'\(statement.keyword)'\(context.map { " in \($0)" } ?? "") is not supported by XDirector")
    }

    // MARK: - Groups

    static func groupMembers(_ block: [KeepalivedStatement]) throws(KeepalivedConfigError) -> [L4Endpoint] {
        var members: [L4Endpoint] = []
        for line in block {
            if line.keyword == "fwmark" { throw KeepalivedConfigError(line.location, "'fwmark' in virtual_server_group is not supported by XDirector") }
            guard line.block == nil, line.arguments.count == 1, let port = UInt16(line.arguments[0]) else {
                throw KeepalivedConfigError(line.location, "virtual_server_group entry '\(([line.keyword] + line.arguments).joined(separator: " "))': expected ADDRESS[-LAST] PORT")
            }
            for address in try addressRange(line.keyword, line.location) {
                members.append(L4Endpoint(address: address, port: port))
            }
        }
        return members
    }

    /// `192.0.2.1`, or a range of the last byte (IPv4) or group (IPv6): `192.0.2.1-10`, `2001:db8::1-a`.
    static func addressRange(_ text: String, _ location: SourceLocation) throws(KeepalivedConfigError) -> [IPAddress] {
        let parts = text.split(separator: "-", maxSplits: 1).map(String.init)
        guard let first = IPAddress(parts[0]) else { throw KeepalivedConfigError(location, "invalid address '\(text)'") }
        guard parts.count == 2 else { return [first] }
        var bytes = first.bytes
        if first.family == .ipv4 {
            guard let last = UInt8(parts[1]), last >= bytes[3] else { throw KeepalivedConfigError(location, "invalid address range '\(text)'") }
            return (bytes[3]...last).compactMap { byte in bytes[3] = byte; return IPAddress(bytes: bytes) }
        }
        let start = UInt16(bytes[14]) << 8 | UInt16(bytes[15])
        guard let last = UInt16(parts[1], radix: 16), last >= start else { throw KeepalivedConfigError(location, "invalid address range '\(text)'") }
        return (start...last).compactMap { value in
            bytes[14] = UInt8(value >> 8)
            bytes[15] = UInt8(value & 0xff)
            return IPAddress(bytes: bytes)
        }
    }

    // MARK: - Virtual servers

    /// Options a checker inherits from its real server, and a real server from its virtual server.
    struct Inherited {
        var delayLoop: Double?
        var connectTimeout: Double?
        var retry: Int?
        var delayBeforeRetry: Double?
        var warmup: Double?
        var alpha: Bool?
        var inhibitOnFailure = false
        var virtualhost: String?
    }

    static func virtualServer(_ statement: KeepalivedStatement, groups: [String: (keys: [L4Endpoint], location: SourceLocation)],
                              into result: inout KeepalivedConfig) throws(KeepalivedConfigError) {
        let location = statement.location
        guard let block = statement.block else { throw KeepalivedConfigError(location, "virtual_server needs a block") }
        var endpoints: [L4Endpoint]
        var name: String
        switch statement.arguments.count {
        case 2 where statement.arguments[0] == "group":
            guard let group = groups[statement.arguments[1]] else {
                throw KeepalivedConfigError(location, "virtual_server_group \(statement.arguments[1]) is not defined")
            }
            endpoints = group.keys
            name = "group \(statement.arguments[1])"
        case 2 where statement.arguments[0] == "fwmark":
            throw KeepalivedConfigError(location, "'virtual_server fwmark' is not supported by XDirector")
        case 2:
            guard let address = IPAddress(statement.arguments[0]) else {
                throw KeepalivedConfigError(location, "invalid virtual server address '\(statement.arguments[0])'")
            }
            guard let port = UInt16(statement.arguments[1]) else {
                throw KeepalivedConfigError(location, "invalid virtual server port '\(statement.arguments[1])'")
            }
            endpoints = [L4Endpoint(address: address, port: port)]
            name = endpoints[0].description
        default:
            throw KeepalivedConfigError(location, "virtual_server needs ADDRESS PORT, or group NAME")
        }

        var proto = L4Protocol.tcp
        var scheduler = SchedulerKind(name: "wlc")!
        var options = ServiceOptions()
        var method = ForwardingMethod.masquerading  // keepalived's default lvs_method is NAT
        var tunnel = TunnelParameters.ipip
        var inherited = Inherited()
        var service = HealthService(name: name, keys: [])
        var realStatements: [KeepalivedStatement] = []
        var sorry: (KeepalivedStatement, L4Endpoint)? = nil
        var sorryMethod: (ForwardingMethod, TunnelParameters)? = nil
        var sorryInhibit = false
        var granularity: (String, SourceLocation)? = nil
        var flags: [(String, SourceLocation)] = []

        for line in block {
            let arguments = line.arguments
            switch line.keyword {
            case "real_server": realStatements.append(line)
            case "protocol":
                switch try single(line).uppercased() {
                case "TCP": proto = .tcp
                case "UDP": proto = .udp
                default: throw KeepalivedConfigError(line.location, "protocol \(arguments[0]) is not supported by XDirector (TCP or UDP)")
                }
            case "lb_algo", "lvs_sched":
                let text = try single(line)
                guard let kind = SchedulerKind(name: text) else {
                    throw KeepalivedConfigError(line.location, "unknown scheduler '\(text)' (supported: \(SchedulerKind.allCases.map(\.name).joined(separator: ", ")))")
                }
                scheduler = kind
            case "lb_kind", "lvs_method":
                (method, tunnel) = try forwarding(line)
            case "persistence_timeout":
                let text = try single(line)
                guard let seconds = UInt32(text), ServiceOptions.persistenceRange.contains(seconds) else {
                    throw KeepalivedConfigError(line.location, "invalid persistence_timeout '\(text)'")
                }
                options.persistence = seconds
            case "persistence_granularity": granularity = (try single(line), line.location)
            case "ops", "hashed", "sh-port", "sh-fallback", "mh-port", "mh-fallback", "flag-1", "flag-2":
                flags.append((line.keyword, line.location))
            case "delay_loop": inherited.delayLoop = try seconds(line)
            case "connect_timeout": inherited.connectTimeout = try seconds(line)
            case "retry": inherited.retry = try count(line)
            case "delay_before_retry": inherited.delayBeforeRetry = try seconds(line)
            case "warmup": inherited.warmup = try seconds(line)
            case "alpha": inherited.alpha = try flag(line)
            case "omega": service.omega = try flag(line)
            case "inhibit_on_failure": inherited.inhibitOnFailure = try flag(line)
            case "virtualhost": inherited.virtualhost = try single(line)
            case "quorum": service.quorum = try count(line, minimum: 1)
            case "hysteresis": service.hysteresis = try count(line)
            case "quorum_up": service.quorumUp = try script(line)
            case "quorum_down": service.quorumDown = try script(line)
            case "sorry_server":
                guard arguments.count == 2, let address = IPAddress(arguments[0]), let port = UInt16(arguments[1]) else {
                    throw KeepalivedConfigError(line.location, "sorry_server needs ADDRESS PORT")
                }
                sorry = (line, L4Endpoint(address: address, port: port))
            case "sorry_server_inhibit": sorryInhibit = try flag(line)
            case "sorry_server_lvs_method": sorryMethod = try forwarding(line)
            case "ip_family":
                guard ["inet", "inet6"].contains(try single(line)) else { throw KeepalivedConfigError(line.location, "ip_family is inet or inet6") }
            case "smtp_alert", "snmp_name":
                result.skipped.append("\(line.location): skipped \(line.keyword): keepalived's alerting")
            default:
                throw unsupported(line, in: "virtual_server")
            }
        }

        for (flag, location) in flags {
            switch flag {
            case "ops":
                guard proto == .udp else { throw KeepalivedConfigError(location, "ops (one-packet scheduling) applies to UDP services only") }
                options.onePacket = true
            case "hashed": break
            case "sh-port", "mh-port", "flag-2": options.schedulerFlags.insert(.port)
            default: options.schedulerFlags.insert(.fallback)
            }
        }
        if let (text, location) = granularity {
            guard options.persistence != nil else {
                throw KeepalivedConfigError(location, "persistence_granularity needs persistence_timeout")
            }
            guard let prefix = prefixLength(text, ipv6: endpoints.first?.address.family == .ipv6) else {
                throw KeepalivedConfigError(location, "invalid persistence_granularity '\(text)'")
            }
            options.netmask = prefix
        }

        service.keys = endpoints.map { ServiceKey(proto: proto, endpoint: $0) }
        service.name += "/\(proto.rawValue)"
        var reals: [HealthRealServer] = []
        for line in realStatements {
            let real = try realServer(line, method: method, tunnel: tunnel, inherited: inherited, serviceEndpoint: endpoints.first)
            guard !reals.contains(where: { $0.endpoint == real.endpoint }) else {
                throw KeepalivedConfigError(line.location, "real_server \(real.endpoint) is given twice")
            }
            reals.append(real)
        }
        service.reals = reals
        if let (line, endpoint) = sorry {
            let (sorryForwarding, sorryTunnel) = sorryMethod ?? (method, tunnel)
            var config = RealServerConfig(endpoint: endpoint, weight: 1, method: sorryForwarding,
                                          tunnel: sorryForwarding == .tunnel ? sorryTunnel : .ipip)
            if sorryForwarding.keepsPort && endpoint.port == 0, let port = endpoints.first?.port { config.endpoint.port = port }
            service.sorryServer = SorryServer(config: config, inhibit: sorryInhibit)
            _ = line
        }

        // The services as IPVS takes them, refused in ipvsadm's words with this block's line.
        for key in service.keys {
            var commands: [IPVSCommand] = [.addService(key, scheduler: scheduler, options: options)]
            for real in reals { commands.append(.addServer(key, real.config)) }
            if let sorryServer = service.sorryServer, sorryServer.inhibit {
                var idle = sorryServer.config
                idle.weight = 0
                commands.append(.addServer(key, idle))
            }
            for command in commands {
                do throws(ConfigError) {
                    try result.director.apply(command)
                } catch {
                    throw KeepalivedConfigError(location, "\(key): \(error)")
                }
            }
        }
        result.services.append(service)
    }

    static func realServer(_ statement: KeepalivedStatement, method: ForwardingMethod, tunnel: TunnelParameters,
                           inherited vsInherited: Inherited, serviceEndpoint: L4Endpoint?) throws(KeepalivedConfigError) -> HealthRealServer {
        let arguments = statement.arguments
        guard (1...2).contains(arguments.count), let address = IPAddress(arguments[0]) else {
            throw KeepalivedConfigError(statement.location, "real_server needs ADDRESS PORT")
        }
        var port: UInt16 = serviceEndpoint?.port ?? 0
        if arguments.count == 2 {
            guard let given = UInt16(arguments[1]) else { throw KeepalivedConfigError(statement.location, "invalid real server port '\(arguments[1])'") }
            port = given
        }
        var config = RealServerConfig(endpoint: L4Endpoint(address: address, port: port), weight: 1, method: method,
                                      tunnel: method == .tunnel ? tunnel : .ipip)
        var inherited = vsInherited
        var real = HealthRealServer(config: config)
        var checkerStatements: [KeepalivedStatement] = []
        for line in statement.block ?? [] {
            switch line.keyword {
            case "weight":
                let text = try single(line)
                guard let weight = Int32(text), RealServerConfig.weightRange.contains(weight) else {
                    throw KeepalivedConfigError(line.location, "Real server weight \(text) is outside range 0-65535")
                }
                config.weight = weight
            case "lvs_method":
                let (m, t) = try forwarding(line)
                config.method = m
                config.tunnel = m == .tunnel ? t : .ipip
            case "uthreshold", "lthreshold":
                let text = try single(line)
                guard let value = UInt32(text), RealServerConfig.thresholdRange.contains(value) else {
                    throw KeepalivedConfigError(line.location, "invalid \(line.keyword) '\(text)'")
                }
                if line.keyword == "uthreshold" { config.upperThreshold = value } else { config.lowerThreshold = value }
            case "inhibit_on_failure": inherited.inhibitOnFailure = try flag(line)
            case "notify_up": real.notifyUp = try script(line)
            case "notify_down": real.notifyDown = try script(line)
            case "alpha": inherited.alpha = try flag(line)
            case "retry": inherited.retry = try count(line)
            case "delay_before_retry": inherited.delayBeforeRetry = try seconds(line)
            case "warmup": inherited.warmup = try seconds(line)
            case "connect_timeout": inherited.connectTimeout = try seconds(line)
            case "delay_loop": inherited.delayLoop = try seconds(line)
            case "virtualhost": inherited.virtualhost = try single(line)
            case "smtp_alert", "snmp_name": break
            case "TCP_CHECK", "HTTP_GET", "SSL_GET", "MISC_CHECK", "UDP_CHECK", "DNS_CHECK":
                checkerStatements.append(line)
            default:
                throw unsupported(line, in: "real_server")
            }
        }
        real.config = config
        real.endpoint = config.endpoint
        real.inhibitOnFailure = inherited.inhibitOnFailure
        real.checkers = try checkerStatements.map { (line) throws(KeepalivedConfigError) in try checker(line, inherited: inherited) }
        return real
    }

    // MARK: - Checkers

    static func checker(_ statement: KeepalivedStatement, inherited: Inherited) throws(KeepalivedConfigError) -> CheckerDefinition {
        var kind: CheckerDefinition.Kind
        var defaultRetry = 1
        var defaultDelayBeforeRetry: Double? = 1
        switch statement.keyword {
        case "TCP_CHECK": kind = .tcp
        case "HTTP_GET", "SSL_GET":
            kind = .http(HTTPCheck(tls: statement.keyword == "SSL_GET", virtualhost: inherited.virtualhost))
            defaultDelayBeforeRetry = 3
        case "MISC_CHECK":
            kind = .misc(MiscCheck(path: ""))
            defaultRetry = 0
        case "UDP_CHECK": kind = .udp(UDPCheck())
        default:
            kind = .dns(DNSCheck())
            defaultRetry = 3
            defaultDelayBeforeRetry = nil  // the delay loop
        }
        var checker = CheckerDefinition(kind: kind, location: statement.location)
        var retry: Int? = nil, delayBeforeRetry: Double? = nil, delayLoop: Double? = nil
        var connectTimeout: Double? = nil, warmup: Double? = nil, alpha: Bool? = nil
        for line in statement.block ?? [] {
            switch line.keyword {
            case "connect_ip":
                guard let address = IPAddress(try single(line)) else { throw KeepalivedConfigError(line.location, "invalid connect_ip '\(line.arguments[0])'") }
                checker.connectIP = address
            case "connect_port": checker.connectPort = try port(line)
            case "bindto":
                guard let address = IPAddress(try single(line)) else { throw KeepalivedConfigError(line.location, "invalid bindto '\(line.arguments[0])'") }
                checker.bindTo = address
            case "bind_port": checker.bindPort = try port(line)
            case "connect_timeout": connectTimeout = try seconds(line)
            case "retry", "nb_get_retry": retry = try count(line)
            case "delay_before_retry": delayBeforeRetry = try seconds(line)
            case "delay_loop": delayLoop = try seconds(line)
            case "warmup": warmup = try seconds(line)
            case "alpha": alpha = try flag(line)
            case "log_all_failures": _ = try flag(line)
            default:
                try checkerOption(line, &checker.kind, statement.keyword)
            }
        }
        checker.retry = retry ?? inherited.retry ?? defaultRetry
        checker.delayLoop = delayLoop ?? inherited.delayLoop ?? 60
        checker.connectTimeout = connectTimeout ?? inherited.connectTimeout ?? 5
        checker.delayBeforeRetry = delayBeforeRetry ?? inherited.delayBeforeRetry ?? defaultDelayBeforeRetry ?? checker.delayLoop
        checker.warmup = warmup ?? inherited.warmup ?? 0
        checker.alpha = alpha ?? inherited.alpha ?? false
        switch checker.kind {
        case .misc(let misc) where misc.path.isEmpty:
            throw KeepalivedConfigError(statement.location, "MISC_CHECK needs misc_path")
        case .http(let http) where http.urls.isEmpty:
            throw KeepalivedConfigError(statement.location, "\(statement.keyword) needs at least one url")
        default: break
        }
        return checker
    }

    /// The options of one checker kind.
    static func checkerOption(_ line: KeepalivedStatement, _ kind: inout CheckerDefinition.Kind, _ name: String) throws(KeepalivedConfigError) {
        switch kind {
        case .http(var http):
            switch line.keyword {
            case "url":
                guard let block = line.block else { throw KeepalivedConfigError(line.location, "url needs a block") }
                var url = HTTPCheck.URL()
                var hasPath = false
                for option in block {
                    switch option.keyword {
                    case "path": url.path = try single(option); hasPath = true
                    case "status_code":
                        guard !option.arguments.isEmpty else { throw KeepalivedConfigError(option.location, "status_code needs a value") }
                        for text in option.arguments {
                            let bounds = text.split(separator: "-").compactMap { Int($0) }
                            guard (1...2).contains(bounds.count), bounds.allSatisfy({ (100...599).contains($0) }), bounds.first! <= bounds.last! else {
                                throw KeepalivedConfigError(option.location, "invalid status_code '\(text)'")
                            }
                            url.statusCodes.append(bounds.first!...bounds.last!)
                        }
                    case "digest":
                        let text = try single(option).lowercased()
                        guard text.count == 32, text.allSatisfy(\.isHexDigit) else {
                            throw KeepalivedConfigError(option.location, "invalid digest '\(text)': expected 32 hex digits (MD5)")
                        }
                        url.digest = text
                    case "virtualhost": url.virtualhost = try single(option)
                    default: throw unsupported(option, in: "url")
                    }
                }
                guard hasPath else { throw KeepalivedConfigError(line.location, "url needs a path") }
                http.urls.append(url)
            case "virtualhost": http.virtualhost = try single(line)
            case "http_protocol":
                let text = try single(line)
                guard ["1.0", "1.1", "1.0C", "1.0K"].contains(text) else { throw KeepalivedConfigError(line.location, "invalid http_protocol '\(text)'") }
                http.httpProtocol = text
            case "enable_sni" where http.tls: if http.sniName == nil { http.sniName = "" }
            case "sni_name" where http.tls: http.sniName = try single(line)
            case "tls_compliant": _ = try flag(line)
            default: throw unsupported(line, in: name)
            }
            kind = .http(http)
        case .misc(var misc):
            switch line.keyword {
            case "misc_path": misc.path = try script(line)
            case "misc_timeout": misc.timeout = try seconds(line)
            case "misc_dynamic": misc.dynamic = try flag(line)
            default: throw unsupported(line, in: name)
            }
            kind = .misc(misc)
        case .udp(var udp):
            switch line.keyword {
            case "payload": udp.payload = try hex(line)
            case "require_reply":
                udp.requireReply = true
                if !line.arguments.isEmpty { udp.expectedReply = try hex(line) }
            case "min_reply_length": udp.minReplyLength = try count(line)
            case "max_reply_length": udp.maxReplyLength = try count(line)
            default: throw unsupported(line, in: name)
            }
            kind = .udp(udp)
        case .dns(var dns):
            switch line.keyword {
            case "type":
                let text = try single(line).uppercased()
                guard DNSCheck.types[text] != nil else { throw KeepalivedConfigError(line.location, "unknown DNS type '\(text)'") }
                dns.type = text
            case "name": dns.name = try single(line)
            default: throw unsupported(line, in: name)
            }
            kind = .dns(dns)
        case .tcp:
            throw unsupported(line, in: name)
        }
    }

    // MARK: - Values

    static func forwarding(_ line: KeepalivedStatement) throws(KeepalivedConfigError) -> (ForwardingMethod, TunnelParameters) {
        guard let kind = line.arguments.first else { throw KeepalivedConfigError(line.location, "\(line.keyword) needs NAT, DR or TUN") }
        let method: ForwardingMethod
        switch kind {
        case "NAT": method = .masquerading
        case "DR": method = .directRouting
        case "TUN": method = .tunnel
        default: throw KeepalivedConfigError(line.location, "unknown [\(kind)] routing method")
        }
        var tunnel = TunnelParameters.ipip
        var index = 1
        let rest = line.arguments
        guard method == .tunnel || rest.count == 1 else { throw KeepalivedConfigError(line.location, "\(kind) takes no options") }
        while index < rest.count {
            switch rest[index] {
            case "type":
                guard index + 1 < rest.count, let type = TunnelType(name: rest[index + 1]) else {
                    throw KeepalivedConfigError(line.location, "tunnel type must be ipip, gue or gre")
                }
                tunnel.type = type
                index += 2
            case "port":
                guard index + 1 < rest.count, let port = UInt16(rest[index + 1]), port > 0 else {
                    throw KeepalivedConfigError(line.location, "invalid gue tunnel port")
                }
                tunnel.port = port
                index += 2
            case "csum": tunnel.checksum = true; index += 1
            case "nocsum": tunnel.checksum = false; index += 1
            case "remcsum": throw KeepalivedConfigError(line.location, "'remcsum' is not supported by XDirector")
            default: throw KeepalivedConfigError(line.location, "Invalid tunnel option \(rest[index])")
            }
        }
        guard (tunnel.type == .gue) == (tunnel.port != 0) else {
            throw KeepalivedConfigError(line.location, "gue tunnels require port, otherwise cannot have port")
        }
        guard !(tunnel.type == .ipip && tunnel.checksum) else {
            throw KeepalivedConfigError(line.location, "ipip tunnels do not support checksum option")
        }
        return (method, tunnel)
    }

    static func single(_ line: KeepalivedStatement) throws(KeepalivedConfigError) -> String {
        guard line.arguments.count == 1, line.block == nil else {
            throw KeepalivedConfigError(line.location, "\(line.keyword) takes one value")
        }
        return line.arguments[0]
    }

    /// A keyword alone means on; keepalived also takes a following true/false, yes/no, on/off.
    static func flag(_ line: KeepalivedStatement) throws(KeepalivedConfigError) -> Bool {
        guard let value = line.arguments.first else { return true }
        switch value.lowercased() {
        case "true", "yes", "on": return true
        case "false", "no", "off": return false
        default: throw KeepalivedConfigError(line.location, "invalid \(line.keyword) value '\(value)'")
        }
    }

    static func seconds(_ line: KeepalivedStatement) throws(KeepalivedConfigError) -> Double {
        let text = try single(line)
        guard let value = Double(text), value >= 0, value <= 31 * 86400 else {
            throw KeepalivedConfigError(line.location, "invalid \(line.keyword) '\(text)': expected seconds")
        }
        return value
    }

    static func count(_ line: KeepalivedStatement, minimum: Int = 0) throws(KeepalivedConfigError) -> Int {
        let text = try single(line)
        guard let value = Int(text), value >= minimum, value <= Int(Int32.max) else {
            throw KeepalivedConfigError(line.location, "invalid \(line.keyword) '\(text)'")
        }
        return value
    }

    static func port(_ line: KeepalivedStatement) throws(KeepalivedConfigError) -> UInt16 {
        let text = try single(line)
        guard let value = UInt16(text), value > 0 else { throw KeepalivedConfigError(line.location, "invalid \(line.keyword) '\(text)'") }
        return value
    }

    /// A script with its arguments: one quoted word, or the words as written.
    static func script(_ line: KeepalivedStatement) throws(KeepalivedConfigError) -> String {
        guard !line.arguments.isEmpty, line.block == nil else { throw KeepalivedConfigError(line.location, "\(line.keyword) needs a command") }
        return line.arguments.joined(separator: " ")
    }

    static func hex(_ line: KeepalivedStatement) throws(KeepalivedConfigError) -> [UInt8] {
        let text = line.arguments.joined()
        let digits = Array(text.hasPrefix("0x") ? String(text.dropFirst(2)) : text)
        guard digits.count % 2 == 0, !digits.isEmpty else { throw KeepalivedConfigError(line.location, "invalid hex '\(text)'") }
        var bytes: [UInt8] = []
        for index in stride(from: 0, to: digits.count, by: 2) {
            guard let byte = UInt8(String(digits[index...index + 1]), radix: 16) else {
                throw KeepalivedConfigError(line.location, "invalid hex '\(text)'")
            }
            bytes.append(byte)
        }
        return bytes
    }

    /// A dotted IPv4 netmask or a prefix length.
    static func prefixLength(_ text: String, ipv6: Bool) -> Int? {
        if let length = Int(text) { return (0...(ipv6 ? 128 : 32)).contains(length) ? length : nil }
        guard !ipv6, let mask = IPAddress(text), mask.family == .ipv4 else { return nil }
        let value = mask.bytes.reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
        let length = value.nonzeroBitCount
        return value == (length == 0 ? 0 : ~UInt32(0) << (32 - length)) ? length : nil
    }
}
