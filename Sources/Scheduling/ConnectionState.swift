/// The state of a connection-table entry, with IPVS's TCP states (same order as IPVS's `IP_VS_TCP_S_*`) and
/// one state for every other protocol (IPVS's UDP `NORMAL`, listed as "UDP").
public enum ConnectionState: UInt8, CaseIterable, Sendable {
    /// IPVS `NONE`: created, no packet applied yet.
    case initial = 0
    case established = 1
    case synSent = 2
    case synReceived = 3
    case finWait = 4
    case timeWait = 5
    case close = 6
    case closeWait = 7
    case lastAck = 8
    case listen = 9
    case synAck = 10
    /// Any non-TCP flow: no state machine, only an idle timeout.
    case udp = 11

    /// The name `ipvsadm -Lc` prints.
    public var ipvsName: String {
        switch self {
        case .initial: return "NONE"
        case .established: return "ESTABLISHED"
        case .synSent: return "SYN_SENT"
        case .synReceived: return "SYN_RECV"
        case .finWait: return "FIN_WAIT"
        case .timeWait: return "TIME_WAIT"
        case .close: return "CLOSE"
        case .closeWait: return "CLOSE_WAIT"
        case .lastAck: return "LAST_ACK"
        case .listen: return "LISTEN"
        case .synAck: return "SYNACK"
        case .udp: return "UDP"
        }
    }

    /// Whether IPVS counts a connection in this state as active (ActiveConn) rather than inactive
    /// (InActConn): ESTABLISHED only (IPVS's TCP state transition moves the count on entering and leaving
    /// it). Non-TCP connections are always inactive.
    @inlinable @inline(__always)
    public var isActive: Bool { self == .established }

    /// A TCP connection whose handshake has not completed (what a spoofed SYN leaves behind): NONE,
    /// SYN_SENT, SYN_RECV or SYNACK.
    @inlinable @inline(__always)
    public var isHalfOpen: Bool {
        self == .initial || self == .synSent || self == .synReceived || self == .synAck
    }
}

/// Which way a packet of a connection travels, for the TCP state machine.
public enum ConnectionDirection: UInt8, Sendable {
    /// Client to virtual service (every packet the director sees in DR and TUN modes).
    case input
    /// Real server back to the client through the director (NAT and FULLNAT replies).
    case output
}

/// IPVS's TCP state machine for a director: next state from the current one and a packet's flags.
///
/// IPVS keeps three tables. `input` and `output` serve connections whose replies pass through the director
/// (NAT). `inputOnly` serves connections whose replies bypass it (DR, TUN: IPVS flags them
/// `IP_VS_CONN_F_NOOUTPUT`); there a client FIN moves an established connection to FIN_WAIT, since the
/// server's side is never seen. A connection on `inputOnly` moves to `input`/`output` for good once a reply
/// is seen, as in IPVS.
///
/// The flags pick one event, in this priority: RST, SYN, FIN, ACK. A packet with none of them moves the
/// connection to CLOSE (as IPVS does).
public enum TCPStateMachine {
    /// TCP header flag bits (byte 13 of the header).
    public static let fin: UInt8 = 0x01
    public static let syn: UInt8 = 0x02
    public static let rst: UInt8 = 0x04
    public static let psh: UInt8 = 0x08
    public static let ack: UInt8 = 0x10

    /// ACK without SYN, FIN or RST: the segment that leaves an ESTABLISHED connection as it is (in every
    /// table of `transitions`), so only its timer moves.
    @inlinable @inline(__always)
    public static func isPlainACK(_ flags: UInt8) -> Bool { flags & 0x17 == 0x10 }

    public enum Table: UInt8, Sendable {
        case input = 0
        case output = 1
        case inputOnly = 2
    }

    static let stateCount = 11
    static let eventCount = 4

    /// The next state after a packet with `flags` arrives in `state`. Non-TCP states are returned unchanged.
    @inlinable
    public static func next(_ state: ConnectionState, flags: UInt8, table: Table) -> ConnectionState {
        let event: Int
        if flags & rst != 0 {
            event = 3
        } else if flags & syn != 0 {
            event = 0
        } else if flags & fin != 0 {
            event = 1
        } else if flags & ack != 0 {
            event = 2
        } else {
            return state == .udp ? .udp : .close
        }
        let current = Int(state.rawValue)
        if current >= 11 { return state }
        return transitions[(Int(table.rawValue) &* 4 &+ event) &* 11 &+ current]
    }

    /// Rows per table: SYN, FIN, ACK, RST; columns: the current state in `ConnectionState` order
    /// NONE, ES, SYN_SENT, SYN_RECV, FIN_WAIT, TIME_WAIT, CLOSE, CLOSE_WAIT, LAST_ACK, LISTEN, SYNACK.
    /// Values are IPVS's default (not "secure_tcp") tables. NONE never appears as a next state.
    /// A literal of constants, so the array is laid out at compile time: no lazy initialisation per lookup.
    @usableFromInline
    static let transitions: [ConnectionState] = [
        // input        NONE ES    SS    SR    FW    TW    CL    CW    LA    LI    SA
        /* SYN */      .sSR, .sES, .sES, .sSR, .sSR, .sSR, .sSR, .sSR, .sSR, .sSR, .sSR,
        /* FIN */      .sCL, .sCW, .sSS, .sTW, .sTW, .sTW, .sCL, .sCW, .sLA, .sLI, .sTW,
        /* ACK */      .sES, .sES, .sSS, .sES, .sFW, .sTW, .sCL, .sCW, .sCL, .sLI, .sES,
        /* RST */      .sCL, .sCL, .sCL, .sSR, .sCL, .sCL, .sCL, .sCL, .sLA, .sLI, .sSR,
        // output       NONE ES    SS    SR    FW    TW    CL    CW    LA    LI    SA
        /* SYN */      .sSS, .sES, .sSS, .sSR, .sSS, .sSS, .sSS, .sSS, .sSS, .sLI, .sSR,
        /* FIN */      .sTW, .sFW, .sSS, .sTW, .sFW, .sTW, .sCL, .sTW, .sLA, .sLI, .sTW,
        /* ACK */      .sES, .sES, .sSS, .sES, .sFW, .sTW, .sCL, .sCW, .sLA, .sES, .sES,
        /* RST */      .sCL, .sCL, .sSS, .sCL, .sCL, .sTW, .sCL, .sCL, .sCL, .sCL, .sCL,
        // inputOnly    NONE ES    SS    SR    FW    TW    CL    CW    LA    LI    SA
        /* SYN */      .sSR, .sES, .sES, .sSR, .sSR, .sSR, .sSR, .sSR, .sSR, .sSR, .sSR,
        /* FIN */      .sCL, .sFW, .sSS, .sTW, .sFW, .sTW, .sCL, .sCW, .sLA, .sLI, .sTW,
        /* ACK */      .sES, .sES, .sSS, .sES, .sFW, .sTW, .sCL, .sCW, .sCL, .sLI, .sES,
        /* RST */      .sCL, .sCL, .sCL, .sSR, .sCL, .sCL, .sCL, .sCL, .sLA, .sLI, .sCL,
    ]
}

/// IPVS's short state names, for the transition table.
private extension ConnectionState {
    static var sES: ConnectionState { .established }
    static var sSS: ConnectionState { .synSent }
    static var sSR: ConnectionState { .synReceived }
    static var sFW: ConnectionState { .finWait }
    static var sTW: ConnectionState { .timeWait }
    static var sCL: ConnectionState { .close }
    static var sCW: ConnectionState { .closeWait }
    static var sLA: ConnectionState { .lastAck }
    static var sLI: ConnectionState { .listen }
    static var sSA: ConnectionState { .synAck }
}
