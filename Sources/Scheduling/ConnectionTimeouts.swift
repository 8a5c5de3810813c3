/// Idle timeouts in seconds, one per connection state; IPVS's defaults. Every packet of a connection restarts
/// its timer with the timeout of the state the packet leaves it in.
///
/// `ipvsadm --set TCP TCPFIN UDP` sets `tcpEstablished`, `tcpFin` and `udp` (IPVS changes exactly those
/// three). The others are IPVS's fixed per-state values, settable here for tests and tuning.
public struct ConnectionTimeouts: Sendable, Equatable {
    /// ESTABLISHED (ipvsadm "tcp"), default 900.
    public var tcpEstablished: UInt32
    /// FIN_WAIT (ipvsadm "tcpfin"), default 120.
    public var tcpFin: UInt32
    /// Every non-TCP flow (ipvsadm "udp"), default 300.
    public var udp: UInt32
    /// NONE, default 2.
    public var tcpInitial: UInt32
    /// SYN_SENT, default 120.
    public var tcpSynSent: UInt32
    /// SYN_RECV, default 60.
    public var tcpSynReceived: UInt32
    /// TIME_WAIT, default 120.
    public var tcpTimeWait: UInt32
    /// CLOSE, default 10 (what an RST usually leads to).
    public var tcpClose: UInt32
    /// CLOSE_WAIT, default 60.
    public var tcpCloseWait: UInt32
    /// LAST_ACK, default 30.
    public var tcpLastAck: UInt32
    /// LISTEN, default 120.
    public var tcpListen: UInt32
    /// SYNACK, default 120.
    public var tcpSynAck: UInt32

    /// Timeouts must be below 2^31 seconds (the table compares times with wrap-around arithmetic).
    public static let maximum: UInt32 = 1 << 30

    public init(
        tcpEstablished: UInt32 = 900, tcpFin: UInt32 = 120, udp: UInt32 = 300,
        tcpInitial: UInt32 = 2, tcpSynSent: UInt32 = 120, tcpSynReceived: UInt32 = 60,
        tcpTimeWait: UInt32 = 120, tcpClose: UInt32 = 10, tcpCloseWait: UInt32 = 60,
        tcpLastAck: UInt32 = 30, tcpListen: UInt32 = 120, tcpSynAck: UInt32 = 120
    ) {
        self.tcpEstablished = tcpEstablished
        self.tcpFin = tcpFin
        self.udp = udp
        self.tcpInitial = tcpInitial
        self.tcpSynSent = tcpSynSent
        self.tcpSynReceived = tcpSynReceived
        self.tcpTimeWait = tcpTimeWait
        self.tcpClose = tcpClose
        self.tcpCloseWait = tcpCloseWait
        self.tcpLastAck = tcpLastAck
        self.tcpListen = tcpListen
        self.tcpSynAck = tcpSynAck
    }

    /// The longest any TCP state lasts: how long a TCP flow may stay idle and still be alive. (Field by field:
    /// a full table asks for it per failed insert, and `allCases` would allocate.)
    public var longestTCP: UInt32 {
        max(max(max(tcpEstablished, tcpFin), max(tcpInitial, tcpSynSent)),
            max(max(tcpSynReceived, tcpTimeWait), max(tcpClose, tcpCloseWait)),
            max(max(tcpLastAck, tcpListen), tcpSynAck))
    }

    /// The timeout for a connection left in `state`.
    public func seconds(for state: ConnectionState) -> UInt32 {
        switch state {
        case .initial: return tcpInitial
        case .established: return tcpEstablished
        case .synSent: return tcpSynSent
        case .synReceived: return tcpSynReceived
        case .finWait: return tcpFin
        case .timeWait: return tcpTimeWait
        case .close: return tcpClose
        case .closeWait: return tcpCloseWait
        case .lastAck: return tcpLastAck
        case .listen: return tcpListen
        case .synAck: return tcpSynAck
        case .udp: return udp
        }
    }
}
