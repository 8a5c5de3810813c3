import CXDP
import CXDirectorShared
import Foundation
import Logging
import Packet
import Synchronization

/// The director's XDP program on one interface: loaded from the object embedded in the binary, its maps
/// pinned under `/sys/fs/bpf/xdirector/<instance>/`, attached to the interface, and detached and unpinned
/// again by `close()` (or `deinit`). Its `director` map names the process that runs it, so the next director
/// knows whether the program on an interface is live or left by one that died.
public final class XDPProgram {
    public enum AttachMode: String, Sendable {
        /// In the driver (`XDP_FLAGS_DRV_MODE`): the fast path, and the only one with zero-copy AF_XDP.
        case native
        /// In the kernel's generic hook (`XDP_FLAGS_SKB_MODE`): works everywhere, copy mode only.
        case generic

        var flags: UInt32 { self == .native ? UInt32(XDP_FLAGS_DRV_MODE) : UInt32(XDP_FLAGS_SKB_MODE) }
    }

    public static let pinRoot = "/sys/fs/bpf/xdirector"

    /// The maps' capacities (`XD_MAX_*` in the shared header).
    public enum Limits {
        public static let services = Int(XD_MAX_SERVICES)
        public static let realServers = Int(XD_MAX_REALS)
        public static let natReals = Int(XD_MAX_NAT_REALS)
        public static let localAddresses = Int(XD_MAX_LOCAL_ADDRS)
        public static let fragmentAddresses = Int(XD_MAX_FRAGMENT_ADDRS)
        public static let queues = Int(XD_MAX_QUEUES)
    }

    public let interface: NetworkInterface
    public private(set) var attachedMode: AttachMode?
    /// Where the maps are pinned, or nil when bpffs is not mounted.
    public private(set) var pinDirectory: String?

    let servicesFD: Int32
    let xsksFD: Int32
    let countersFD: Int32
    let natRealsFD: Int32
    let localAddressesFD: Int32
    let hostAddressesFD: Int32
    let fragmentAddressesFD: Int32
    let realServersFD: Int32
    let directorFD: Int32
    private let programFD: Int32
    /// The `heartbeats` map, mapped: one cache line per queue.
    private let heartbeats: UnsafeMutablePointer<Atomic<UInt64>>
    private let heartbeatBytes: Int
    /// Names the pin directory: the interface, unique per network namespace (`DirectorInstance`).
    public let instance: String
    private var object: OpaquePointer?
    private let logger: Logger

    public init(interface: NetworkInterface, instance: String, logger: Logger) throws(DataplaneError) {
        self.interface = interface
        self.instance = instance
        self.logger = logger
        guard let elf = Data(base64Encoded: EmbeddedBPFObjects.xdirector) else {
            throw DataplaneError("the embedded XDP program is corrupt; rebuild xdirector")
        }
        let opened: OpaquePointer? = elf.withUnsafeBytes { bytes in
            cxdp_object_open_mem(bytes.baseAddress, bytes.count, "xdirector")
        }
        guard let object = opened else { throw DataplaneError("cannot open the XDP program", errno: errno) }
        self.object = object
        let loaded = bpf_object__load(object)
        guard loaded == 0 else {
            bpf_object__close(object)
            throw DataplaneError("the kernel refused the XDP program (needs root with CAP_BPF and CAP_NET_ADMIN)", errno: loaded)
        }
        func fd(ofMap name: String) -> Int32 { bpf_object__find_map_by_name(object, name).map { bpf_map__fd($0) } ?? -1 }
        programFD = bpf_object__find_program_by_name(object, XD_PROG_NAME).map { bpf_program__fd($0) } ?? -1
        servicesFD = fd(ofMap: XD_MAP_SERVICES)
        xsksFD = fd(ofMap: XD_MAP_XSKS)
        countersFD = fd(ofMap: XD_MAP_XDP_COUNTERS)
        natRealsFD = fd(ofMap: XD_MAP_NAT_REALS)
        localAddressesFD = fd(ofMap: XD_MAP_LOCAL_ADDRS)
        hostAddressesFD = fd(ofMap: XD_MAP_HOST_ADDRS)
        fragmentAddressesFD = fd(ofMap: XD_MAP_FRAGMENT_ADDRS)
        realServersFD = fd(ofMap: XD_MAP_REAL_SERVERS)
        directorFD = fd(ofMap: XD_MAP_DIRECTOR)
        let heartbeatsFD = fd(ofMap: XD_MAP_HEARTBEATS)
        let heartbeatBytes = Int(XD_MAX_QUEUES) * MemoryLayout<xd_heartbeat>.stride
        let mapped = heartbeatsFD >= 0 ? mmap(nil, heartbeatBytes, PROT_READ | PROT_WRITE, MAP_SHARED, heartbeatsFD, 0) : MAP_FAILED
        guard programFD >= 0, servicesFD >= 0, xsksFD >= 0, countersFD >= 0, natRealsFD >= 0, localAddressesFD >= 0, hostAddressesFD >= 0,
              fragmentAddressesFD >= 0,
              realServersFD >= 0, directorFD >= 0, let mapped, mapped != MAP_FAILED else {
            bpf_object__close(object)
            self.object = nil
            throw DataplaneError("the embedded XDP program lacks its program or maps; rebuild xdirector")
        }
        heartbeats = mapped.bindMemory(to: Atomic<UInt64>.self, capacity: heartbeatBytes / 8)
        self.heartbeatBytes = heartbeatBytes
    }

    deinit {
        close()
        munmap(UnsafeMutableRawPointer(heartbeats), heartbeatBytes)
    }

    /// What the program decides for one frame received on `queue` (BPF_PROG_RUN: nothing is sent), for
    /// tests and diagnostics: `XDP_PASS`, `XDP_DROP` or `XDP_REDIRECT`. The counters count it.
    public func run(frame: [UInt8], queue: UInt32 = 0) throws(DataplaneError) -> UInt32 {
        try runShowingMetadata(frame: frame, queue: queue).action
    }

    /// As `run`, with the XDP metadata the program put in front of the frame (empty when none).
    public func runShowingMetadata(frame: [UInt8], queue: UInt32 = 0) throws(DataplaneError) -> (action: UInt32, metadata: [UInt8]) {
        var action: UInt32 = 0
        var out = [UInt8](repeating: 0, count: frame.count + 256)
        var outSize = UInt32(out.count), metaSize: UInt32 = 0
        let result = frame.withUnsafeBytes { bytes in
            out.withUnsafeMutableBytes { buffer in
                cxdp_xdp_test_run(programFD, bytes.baseAddress, UInt32(bytes.count), Int32(interface.index), queue, &action,
                                  buffer.baseAddress, &outSize, &metaSize)
            }
        }
        guard result == 0 else { throw DataplaneError("cannot run the XDP program on a frame", errno: result) }
        return (action, Array(out.prefix(Int(min(metaSize, outSize)))))
    }

    /// Records this process as the program's owner and how long frames of a queue whose worker stopped
    /// beating are held (`--restart-grace`), before the program is attached.
    public func setOwner(_ owner: ProcessIdentity, restartGrace seconds: Double) throws(DataplaneError) {
        var key: UInt32 = 0
        var value = xd_director(pid: UInt32(owner.pid), flags: 0, start_time: owner.startTime,
                                grace_ns: UInt64(max(seconds, 0) * 1e9))
        let result = bpf_map_update_elem(directorFD, &key, &value, UInt64(BPF_ANY))
        guard result == 0 else { throw DataplaneError("cannot record the director in the XDP program", errno: result) }
    }

    /// Where queue `queue`'s worker writes its heartbeat (CLOCK_MONOTONIC nanoseconds), shared with the
    /// program. Valid while this object lives.
    public func heartbeat(queue: UInt32) -> UnsafeMutablePointer<Atomic<UInt64>> {
        precondition(queue < XD_MAX_QUEUES, "queue out of range")
        return heartbeats + Int(queue) * (MemoryLayout<xd_heartbeat>.stride / 8)
    }


    /// Attaches the program to the interface, atomically in place of `replacing` (the program of a director
    /// that died, found by `AttachedProgram.inspect`), so no frame meets the kernel between the two; otherwise
    /// only where no program is attached.
    public func attach(mode: AttachMode, replacing stale: AttachedProgram? = nil) throws(DataplaneError) {
        let ifindex = Int32(interface.index)
        if let stale {
            let expected = bpf_prog_get_fd_by_id(stale.id)
            guard expected >= 0 else { throw DataplaneError("cannot take over XDP program \(stale.id) on \(interface.name)", errno: -errno) }
            defer { Glibc.close(expected) }
            let result = cxdp_xdp_attach(ifindex, programFD, stale.mode.flags, expected)
            guard result == 0 else { throw DataplaneError("cannot replace XDP program \(stale.id) on \(interface.name)", errno: result) }
            attachedMode = stale.mode
            return
        }
        // Never falls back to generic mode by itself: generic XDP is slow and copy mode only, and a driver
        // that refuses native XDP may refuse it for a reason (an MTU too large) that generic mode would
        // only hide. The operator chooses it with `--xdp-mode generic`.
        let result = cxdp_xdp_attach(ifindex, programFD, mode.flags | UInt32(XDP_FLAGS_UPDATE_IF_NOEXIST), -1)
        guard result == 0 else {
            if mode == .native {
                let reason = String(cString: strerror(abs(result)))
                throw DataplaneError("cannot attach XDP to \(interface.name) in native mode: \(reason) (errno \(abs(result))); "
                    + "if its driver lacks native XDP, start with --xdp-mode generic (the kernel's generic hook: slower, copy mode only)")
            }
            throw DataplaneError("cannot attach XDP to \(interface.name)", errno: result)
        }
        attachedMode = mode
    }

    /// Detaches the program if it is still ours, so a program someone else attached since is left alone.
    public func detach() {
        guard let mode = attachedMode else { return }
        let result = cxdp_xdp_detach(Int32(interface.index), mode.flags, programFD)
        if result != 0 { logger.warning("detaching XDP from \(interface.name) failed: \(String(cString: strerror(-result)))") }
        attachedMode = nil
    }

    /// Lets go of the program without detaching or unpinning it, for a director that hands over to its
    /// successor (an upgrade): the program holds the queues' frames as after a crash, and the next director
    /// takes it over.
    public func leaveAttached() {
        attachedMode = nil
        pinDirectory = nil
        if let object { bpf_object__close(object) }
        object = nil
    }

    /// Detaches, unpins and unloads. Safe to call more than once.
    public func close() {
        detach()
        unpinMaps()
        if let object { bpf_object__close(object) }
        object = nil
    }

    // MARK: Maps
    // Typed: the project's own types in, the kernel's formats (`XDPMapFormat`) written here and nowhere else.

    /// Steers a virtual service's packets to the workers; `index` is its position in the snapshot.
    public func setService(_ service: ServiceKey, index: Int) throws(DataplaneError) {
        var key = XDPMapFormat.serviceKey(service)
        var value = xd_service_value(index: UInt32(index), flags: UInt32(XD_SVC_F_NONE))
        try update(servicesFD, &key, &value, "cannot add virtual service \(service) to the XDP map")
    }

    /// Removes a virtual service: its packets go to the kernel again. An entry already gone is no failure.
    public func removeService(_ service: ServiceKey) throws(DataplaneError) {
        var key = XDPMapFormat.serviceKey(service)
        try delete(servicesFD, &key, "cannot remove virtual service \(service) from the XDP map")
    }

    /// Records a real server as the workers have it (not read by the program: for `bpftool map dump`).
    public func setRealServer(_ server: L4Endpoint, of service: ServiceKey, _ entry: RealServerEntry) throws(DataplaneError) {
        var key = XDPMapFormat.realKey(service, server)
        var value = XDPMapFormat.realValue(entry)
        try update(realServersFD, &key, &value, "cannot add real server \(server) of \(service) to the XDP map")
    }

    public func removeRealServer(_ server: L4Endpoint, of service: ServiceKey) throws(DataplaneError) {
        var key = XDPMapFormat.realKey(service, server)
        try delete(realServersFD, &key, "cannot remove real server \(server) of \(service) from the XDP map")
    }

    /// Steers the replies of a NAT real server (source RIP:RPORT/proto, written as a service key) to the workers.
    public func setNATReal(_ real: ServiceKey) throws(DataplaneError) {
        var key = XDPMapFormat.serviceKey(real), value: UInt32 = 0
        try update(natRealsFD, &key, &value, "cannot add NAT real server \(real.endpoint) to the XDP map")
    }

    /// Stops steering a NAT real server's packets (it left the configuration).
    public func removeNATReal(_ real: ServiceKey) throws(DataplaneError) {
        var key = XDPMapFormat.serviceKey(real)
        try delete(natRealsFD, &key, "cannot remove NAT real server \(real.endpoint) from the XDP map")
    }

    /// Steers packets to a FULLNAT local address (the real servers' replies) to the workers.
    public func setLocalAddress(_ address: IPAddress) throws(DataplaneError) {
        var key = XDPMapFormat.localAddressKey(address), value: UInt32 = 0
        try update(localAddressesFD, &key, &value, "cannot add local address \(address) to the XDP map")
    }

    /// Stops steering packets to a local address (no service uses it any more).
    public func removeLocalAddress(_ address: IPAddress) throws(DataplaneError) {
        var key = XDPMapFormat.localAddressKey(address)
        try delete(localAddressesFD, &key, "cannot remove local address \(address) from the XDP map")
    }

    /// Steers the IP fragments of an address (to a VIP, from a NAT real server) to the workers.
    public func setFragmentAddress(_ entry: FragmentAddress) throws(DataplaneError) {
        var key = XDPMapFormat.fragmentKey(entry), value: UInt32 = 0
        try update(fragmentAddressesFD, &key, &value, "cannot add fragment address \(entry.address) to the XDP map")
    }

    /// Stops steering an address's fragments (no service or NAT real server of its protocol has it any more).
    public func removeFragmentAddress(_ entry: FragmentAddress) throws(DataplaneError) {
        var key = XDPMapFormat.fragmentKey(entry)
        try delete(fragmentAddressesFD, &key, "cannot remove fragment address \(entry.address) from the XDP map")
    }

    /// Records one of the host's own addresses: a NAT real server's packets to it are the host's (health
    /// checks), left to the kernel.
    public func setHostAddress(_ address: IPAddress) throws(DataplaneError) {
        var key = XDPMapFormat.localAddressKey(address), value: UInt32 = 0
        try update(hostAddressesFD, &key, &value, "cannot add host address \(address) to the XDP map")
    }

    public func removeHostAddress(_ address: IPAddress) throws(DataplaneError) {
        var key = XDPMapFormat.localAddressKey(address)
        try delete(hostAddressesFD, &key, "cannot remove host address \(address) from the XDP map")
    }

    private func update<Key, Value>(_ fd: Int32, _ key: inout Key, _ value: inout Value, _ message: @autoclosure () -> String)
        throws(DataplaneError) {
        let result = bpf_map_update_elem(fd, &key, &value, UInt64(BPF_ANY))
        guard result == 0 else { throw DataplaneError(message(), errno: result) }
    }

    private func delete<Key>(_ fd: Int32, _ key: inout Key, _ message: @autoclosure () -> String) throws(DataplaneError) {
        let result = bpf_map_delete_elem(fd, &key)
        guard result == 0 || result == -ENOENT else { throw DataplaneError(message(), errno: result) }
    }

    public func registerSocket(queue: UInt32, fd: Int32) throws(DataplaneError) {
        var queue = queue, fd = fd
        let result = bpf_map_update_elem(xsksFD, &queue, &fd, UInt64(BPF_ANY))
        guard result == 0 else { throw DataplaneError("cannot register the AF_XDP socket of queue \(queue)", errno: result) }
    }

    /// The names of the program's counters, in their order (`XD_XDP_COUNTERS` in the shared header).
    public static let counterNames: [String] = (0..<UInt32(XD_XDP_COUNTER_COUNT.rawValue)).map {
        String(cString: xd_xdp_counter_name($0))
    }

    /// The program's counters, summed over CPUs, in the order of `counterNames`.
    public func counters() -> [UInt64] {
        let cpus = Int(max(libbpf_num_possible_cpus(), 1))
        var perCPU = [UInt64](repeating: 0, count: cpus)
        return (0..<Int(XD_XDP_COUNTER_COUNT.rawValue)).map { index in
            var key = UInt32(index)
            guard bpf_map_lookup_elem(countersFD, &key, &perCPU) == 0 else { return 0 }
            return perCPU.reduce(0, &+)
        }
    }

    // MARK: Pinning

    private static let pinnedMaps = [XD_MAP_SERVICES, XD_MAP_NAT_REALS, XD_MAP_LOCAL_ADDRS, XD_MAP_REAL_SERVERS, XD_MAP_XSKS,
                                     XD_MAP_XDP_COUNTERS, XD_MAP_DIRECTOR, XD_MAP_HEARTBEATS, XD_MAP_HOST_ADDRS,
                                     XD_MAP_FRAGMENT_ADDRS]

    /// Pins the maps under `pinRoot/<instance>/`, replacing the pins of a director that died (the caller
    /// has checked that no live director owns the interface: `AttachedProgram.inspect`).
    public func pin() {
        guard let object else { return }
        // `ip netns exec` remounts /sys without bpffs: mount an instance for this mount namespace then.
        if !Self.isBPFFS("/sys/fs/bpf") && mount("bpf", "/sys/fs/bpf", "bpf", 0, "mode=0700") == 0 {
            logger.info("mounted bpffs at /sys/fs/bpf")
        }
        guard Self.isBPFFS("/sys/fs/bpf") else {
            logger.warning("bpffs is not mounted at /sys/fs/bpf; maps are not pinned (run tools/setup.sh)")
            return
        }
        let directory = "\(Self.pinRoot)/\(instance)"
        try? FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        for name in Self.pinnedMaps {
            let path = "\(directory)/\(name)"
            unlink(path)  // a stale pin from a director that died
            if let map = bpf_object__find_map_by_name(object, name), bpf_map__pin(map, path) != 0 {
                logger.warning("cannot pin map \(name) at \(path)")
            }
        }
        pinDirectory = directory
    }

    private func unpinMaps() {
        guard let directory = pinDirectory else { return }
        for name in Self.pinnedMaps { unlink("\(directory)/\(name)") }
        rmdir(directory)
        rmdir(Self.pinRoot)  // only succeeds when no other interface is served
        pinDirectory = nil
    }

    private static func isBPFFS(_ path: String) -> Bool {
        var fs = statfs()
        return statfs(path, &fs) == 0 && fs.f_type == 0xCAFE4A11  // BPF_FS_MAGIC
    }
}
