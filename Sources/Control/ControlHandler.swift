import Packet
import Foundation

/// Answers the control socket's requests, on the control thread (so the director's state needs no lock):
/// ipvsadm commands and listings, statistics readings, and moving a worker to another core.
public struct ControlHandler {
    let director: Director
    let portNames: PortNames

    public init(director: Director, portNames: PortNames = .system) {
        self.director = director
        self.portNames = portNames
    }

    public func handle(_ request: ControlRequest) -> ControlResponse {
        switch request.command {
        case "ipvsadm":
            return ipvsadm(request.arguments, input: request.input ?? "")
        case "statistics":
            do {
                return ControlResponse(output: try director.statistics().encoded())
            } catch {
                return .failure("xdirector: cannot encode the statistics: \(error)")
            }
        case "pin":
            guard request.arguments.count == 2, let queue = UInt32(request.arguments[0]), let core = Int(request.arguments[1]) else {
                return .failure("xdirector: pin needs a queue and a core", status: 2)
            }
            do {
                try director.pin(queue: queue, core: core)
                return ControlResponse()
            } catch {
                return .failure("xdirector: \(error)")
            }
        default:
            return .failure("xdirector: this director does not know the request '\(request.command)'", status: 2)
        }
    }

    /// One ipvsadm invocation: a change applied whole or refused with the running configuration untouched,
    /// or a listing.
    func ipvsadm(_ arguments: [String], input: String) -> ControlResponse {
        var parsed: IPVSRequest? = nil
        do throws(ConfigError) {
            let request = try IPVSRequest(arguments: arguments)
            parsed = request
            switch request {
            case .change(let command):
                return apply(request) { try director.apply([command]) }
            case .list(let options):
                return ControlResponse(output: try IPVSListing.render(director.listing(connections: options.connections),
                                                                      options: options, names: portNames))
            case .save:
                // Always numeric, so that what is saved restores here and on IPVS alike.
                return ControlResponse(output: RulesFile.save(director.configuration))
            case .restore:
                return apply(request) {
                    try director.reload(try RulesFile.apply(input, to: director.configuration, source: "stdin"))
                }
            case .zero(let service):
                return apply(request) { try director.zeroCounters(service: service) }
            case .listLocalAddresses(let service):
                return ControlResponse(output: try IPVSListing.renderLocalAddresses(director.listing(connections: false),
                                                                                    service: service))
            case .help:
                return ControlResponse(output: IPVSListing.usage)
            case .version:
                return ControlResponse(output: IPVSListing.version)
            }
        } catch {
            return .failure(IPVSRequest.message(for: error, request: parsed),
                            status: IPVSRequest.exitStatus(for: error, request: parsed))
        }
    }

    /// Runs a change; its refusal is worded and numbered as ipvsadm's (the director's own checks, such as a
    /// FULLNAT server without a local address, exit 2 like ipvsadm's own refusals).
    private func apply(_ request: IPVSRequest, _ change: () throws -> Void) -> ControlResponse {
        do {
            try change()
            return ControlResponse()
        } catch let error as ConfigError {
            return .failure(IPVSRequest.message(for: error, request: request),
                            status: IPVSRequest.exitStatus(for: error, request: request))
        } catch let error as RulesFileError {
            return .failure("\(error)", status: IPVSRequest.exitStatus(for: error.reason, request: request))
        } catch {
            return .failure("\(error)", status: 2)
        }
    }
}

extension PortNames {
    /// Port names from the system's services database (/etc/services), as ipvsadm prints them without -n.
    /// Only the control thread lists, so getservbyport's static buffer is safe here.
    public static let system = PortNames { port, proto in
        guard let entry = getservbyport(Int32(port.bigEndian), proto.rawValue), let name = entry.pointee.s_name else {
            return nil
        }
        return String(cString: name)
    }
}
