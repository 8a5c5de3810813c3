import CXDP
import Glibc
import Packet

/// One entry of the kernel's neighbour table (ARP for IPv4, NDP for IPv6).
public struct NeighbourEntry: Equatable, Sendable {
    public var address: IPAddress
    public var mac: MACAddress?
    /// NUD_* state bits.
    public var state: UInt16

    /// The entry has a usable link-layer address (NUD_VALID).
    public var isValid: Bool { state & UInt16(NUD_REACHABLE | NUD_STALE | NUD_DELAY | NUD_PROBE | NUD_PERMANENT | NUD_NOARP) != 0 }
    /// Resolution was tried and nobody answered.
    public var isFailed: Bool { state & UInt16(NUD_FAILED) != 0 }
}

/// The kernel's neighbour table for one interface, through rtnetlink: dump it, ask the kernel to resolve
/// (or re-confirm) an address, and wait for change notifications.
public final class NeighbourTable {
    private let interfaceIndex: Int32
    private let requests: Int32
    private let events: Int32
    private var sequence: UInt32 = 1

    public init(interface: NetworkInterface) throws(DataplaneError) {
        interfaceIndex = Int32(interface.index)
        requests = try Self.openSocket(groups: 0)
        do { events = try Self.openSocket(groups: UInt32(RTMGRP_NEIGH)) } catch {
            Glibc.close(requests)
            throw error
        }
    }

    deinit {
        Glibc.close(requests)
        Glibc.close(events)
    }

    /// Every entry of both families on the interface.
    public func dump() throws(DataplaneError) -> [NeighbourEntry] {
        var entries: [NeighbourEntry] = []
        for family in [UInt8(AF_INET), UInt8(AF_INET6)] {
            let seq = nextSequence()
            let message = Self.message(type: UInt16(RTM_GETNEIGH), flags: UInt16(NLM_F_REQUEST | NLM_F_DUMP), sequence: seq,
                                       family: family, interfaceIndex: interfaceIndex, state: 0, ndmFlags: 0, destination: nil)
            try send(message)
            var done = false
            while !done {
                let reply = try receive(socket: requests)
                done = Self.parse(reply, sequence: seq) { type, payload in
                    if type == UInt16(RTM_NEWNEIGH), let entry = Self.entry(from: payload, interfaceIndex: interfaceIndex) {
                        entries.append(entry)
                    }
                }
            }
        }
        return entries
    }

    /// Asks the kernel to resolve `address` on the interface, or to re-confirm an entry that went stale
    /// (NTF_USE: as if the stack had a packet for it). The answer arrives as a change notification.
    public func resolve(_ address: IPAddress) throws(DataplaneError) {
        let family = address.family == .ipv4 ? UInt8(AF_INET) : UInt8(AF_INET6)
        let message = Self.message(type: UInt16(RTM_NEWNEIGH), flags: UInt16(NLM_F_REQUEST | NLM_F_CREATE | NLM_F_ACK),
                                   sequence: nextSequence(), family: family, interfaceIndex: interfaceIndex,
                                   state: UInt16(NUD_NONE), ndmFlags: UInt8(NTF_USE), destination: address.bytes)
        try send(message)
        let reply = try receive(socket: requests)
        var failure: Int32 = 0
        _ = Self.parse(reply, sequence: nil) { type, payload in
            if type == UInt16(NLMSG_ERROR), payload.count >= 4 {
                failure = payload.withUnsafeBytes { $0.loadUnaligned(as: Int32.self) }
            }
        }
        if failure != 0 { throw DataplaneError("cannot resolve \(address)", errno: failure) }
    }

    /// Where the kernel would send a packet for `address`: the gateway of its route, or the address itself
    /// when it is on-link; and whether that route leaves through this interface. nil when there is no route.
    public func nextHop(for address: IPAddress) throws(DataplaneError) -> (address: IPAddress, sameInterface: Bool)? {
        let family = address.family == .ipv4 ? UInt8(AF_INET) : UInt8(AF_INET6)
        let bytes = address.bytes
        // struct rtmsg: family, dst_len, src_len, tos, table, protocol, scope, type, flags (u32).
        var body: [UInt8] = [family, UInt8(bytes.count * 8), 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
        body += Self.attribute(type: UInt16(RTA_DST.rawValue), value: bytes)
        let seq = nextSequence()
        try send(Self.header(type: UInt16(RTM_GETROUTE), flags: UInt16(NLM_F_REQUEST), sequence: seq, body: body))
        let reply = try receive(socket: requests)
        var gateway: IPAddress? = nil
        var outputInterface: Int32? = nil
        var found = false
        _ = Self.parse(reply, sequence: seq) { type, payload in
            guard type == UInt16(RTM_NEWROUTE), payload.count >= 12 else { return }
            found = true
            Self.attributes(in: Array(payload), from: 12) { kind, value in
                if kind == UInt16(RTA_GATEWAY.rawValue) { gateway = IPAddress(bytes: value) }
                if kind == UInt16(RTA_OIF.rawValue), value.count == 4 {
                    outputInterface = value.withUnsafeBytes { $0.loadUnaligned(as: Int32.self) }
                }
            }
        }
        guard found else { return nil }
        return (gateway ?? address, outputInterface.map { $0 == interfaceIndex } ?? true)
    }

    /// Waits up to `milliseconds` for a change notification; true when the table changed (drained).
    public func waitForChange(milliseconds: Int32) -> Bool {
        var descriptor = pollfd(fd: events, events: Int16(POLLIN), revents: 0)
        guard poll(&descriptor, 1, milliseconds) > 0 else { return false }
        var buffer = [UInt8](repeating: 0, count: 65536)
        while recv(events, &buffer, buffer.count, Int32(MSG_DONTWAIT)) > 0 {}
        return true
    }

    // MARK: Netlink plumbing

    private func nextSequence() -> UInt32 {
        sequence &+= 1
        return sequence
    }

    private static func openSocket(groups: UInt32) throws(DataplaneError) -> Int32 {
        let fd = socket(AF_NETLINK, Int32(SOCK_RAW.rawValue) | Int32(SOCK_CLOEXEC.rawValue), NETLINK_ROUTE)
        guard fd >= 0 else { throw DataplaneError("cannot open a netlink socket", errno: errno) }
        var address = sockaddr_nl()
        address.nl_family = sa_family_t(AF_NETLINK)
        address.nl_groups = groups
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_nl>.size)) }
        }
        guard bound == 0 else {
            let code = errno
            Glibc.close(fd)
            throw DataplaneError("cannot bind a netlink socket", errno: code)
        }
        return fd
    }

    private func send(_ message: [UInt8]) throws(DataplaneError) {
        guard Glibc.send(requests, message, message.count, 0) == message.count else {
            throw DataplaneError("netlink send failed", errno: errno)
        }
    }

    private func receive(socket fd: Int32) throws(DataplaneError) -> [UInt8] {
        var descriptor = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        guard poll(&descriptor, 1, 2000) > 0 else { throw DataplaneError("netlink did not answer within 2 s") }
        var buffer = [UInt8](repeating: 0, count: 65536)
        let count = recv(fd, &buffer, buffer.count, 0)
        guard count > 0 else { throw DataplaneError("netlink receive failed", errno: errno) }
        return Array(buffer[0..<count])
    }

    /// Builds an RTM_*NEIGH message: nlmsghdr, ndmsg, and an NDA_DST attribute when `destination` is given.
    static func message(type: UInt16, flags: UInt16, sequence: UInt32, family: UInt8, interfaceIndex: Int32,
                        state: UInt16, ndmFlags: UInt8, destination: [UInt8]?) -> [UInt8] {
        var body: [UInt8] = [family, 0, 0, 0]
        body += withUnsafeBytes(of: interfaceIndex) { Array($0) }
        body += withUnsafeBytes(of: state) { Array($0) }
        body += [ndmFlags, 0]  // ndm_flags, ndm_type
        if let destination { body += attribute(type: UInt16(NDA_DST), value: destination) }
        return header(type: type, flags: flags, sequence: sequence, body: body)
    }

    /// A netlink attribute, padded to 4 bytes.
    static func attribute(type: UInt16, value: [UInt8]) -> [UInt8] {
        withUnsafeBytes(of: UInt16(4 + value.count)) { Array($0) } + withUnsafeBytes(of: type) { Array($0) }
            + value + [UInt8](repeating: 0, count: (4 - value.count % 4) % 4)
    }

    /// `body` behind an nlmsghdr.
    static func header(type: UInt16, flags: UInt16, sequence: UInt32, body: [UInt8]) -> [UInt8] {
        var header: [UInt8] = []
        header += withUnsafeBytes(of: UInt32(16 + body.count)) { Array($0) }
        header += withUnsafeBytes(of: type) { Array($0) } + withUnsafeBytes(of: flags) { Array($0) }
        header += withUnsafeBytes(of: sequence) { Array($0) } + withUnsafeBytes(of: UInt32(0)) { Array($0) }
        return header + body
    }

    /// Calls `visit` with each attribute (type, value) of `bytes` from `offset` on.
    static func attributes(in bytes: [UInt8], from offset: Int, _ visit: (UInt16, ArraySlice<UInt8>) -> Void) {
        var offset = offset
        while offset + 4 <= bytes.count {
            let (length, type) = bytes.withUnsafeBytes { (Int($0.loadUnaligned(fromByteOffset: offset, as: UInt16.self)),
                                                           $0.loadUnaligned(fromByteOffset: offset + 2, as: UInt16.self)) }
            guard length >= 4, offset + length <= bytes.count else { return }
            visit(type, bytes[(offset + 4)..<(offset + length)])
            offset += (length + 3) & ~3
        }
    }

    /// Walks the netlink messages in `buffer`, handing each one's type and payload to `visit`. Returns true
    /// when the dump (or the request) is complete: NLMSG_DONE, an error, or a message that is not multipart.
    static func parse(_ buffer: [UInt8], sequence: UInt32?, visit: (UInt16, ArraySlice<UInt8>) -> Void) -> Bool {
        var offset = 0
        var finished = false
        while offset + 16 <= buffer.count {
            let (length, type, flags, seq) = buffer.withUnsafeBytes { raw in
                (Int(raw.loadUnaligned(fromByteOffset: offset, as: UInt32.self)),
                 raw.loadUnaligned(fromByteOffset: offset + 4, as: UInt16.self),
                 raw.loadUnaligned(fromByteOffset: offset + 6, as: UInt16.self),
                 raw.loadUnaligned(fromByteOffset: offset + 8, as: UInt32.self))
            }
            guard length >= 16, offset + length <= buffer.count else { return true }
            if sequence == nil || sequence == seq {
                if type == UInt16(NLMSG_DONE) || type == UInt16(NLMSG_ERROR) || flags & UInt16(NLM_F_MULTI) == 0 { finished = true }
                visit(type, buffer[(offset + 16)..<(offset + length)])
            }
            offset += (length + 3) & ~3
        }
        return finished
    }

    /// Decodes an RTM_NEWNEIGH payload (ndmsg + attributes) for the interface, or nil for another one.
    static func entry(from payload: ArraySlice<UInt8>, interfaceIndex: Int32) -> NeighbourEntry? {
        let bytes = Array(payload)
        guard bytes.count >= 12 else { return nil }
        let (index, state) = bytes.withUnsafeBytes { ($0.loadUnaligned(fromByteOffset: 4, as: Int32.self),
                                                     $0.loadUnaligned(fromByteOffset: 8, as: UInt16.self)) }
        guard index == interfaceIndex else { return nil }
        var address: IPAddress?
        var mac: MACAddress?
        attributes(in: bytes, from: 12) { type, value in
            if type == UInt16(NDA_DST) { address = IPAddress(bytes: value) }
            if type == UInt16(NDA_LLADDR) { mac = MACAddress(bytes: value) }
        }
        guard let address else { return nil }
        return NeighbourEntry(address: address, mac: mac, state: state)
    }
}
