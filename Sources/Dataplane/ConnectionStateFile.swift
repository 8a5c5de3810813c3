import Glibc
import Logging
import Packet
import Scheduling

/// The connection state of one director instance in one file that outlives the process (under /dev/shm,
/// mapped `MAP_SHARED`), so a director restarted with the same layout (after kill -9, a crash or an
/// upgrade) maps it again and resumes every connection: each worker's connection and persistence-template
/// tables, its per-connection translation data and FULLNAT ports, the shared reply index (NAT, FULLNAT),
/// the shared template directory, the shared flow server index (ICMP errors), the per-real-server counter
/// cells, and which real server holds each cell.
/// Expiry times are in `CLOCK_MONOTONIC_COARSE` seconds, system-wide, so they stay valid across processes
/// (not across a reboot, which also empties /dev/shm).
///
/// ## The file
/// Regions, each starting on a 4096-byte boundary (so 64-byte aligned), in this order:
/// 1. The header (4096 bytes); every multi-byte field big-endian:
///    - 0: magic `XDCSTATE` (8 bytes); 8: layout version (u32, `layoutVersion`); 12: header bytes (u32, 4096);
///    - 16: checksum (u64, FNV-1a 64 of the 4096 header bytes with this field zero);
///    - 24: file bytes (u64); 32...80: the `Layout`, a u64 each: workers, connections per worker, templates
///      per worker, reply entries per worker, template-directory entries per worker, counter cells, local
///      addresses; 88: creation time (u64, Unix seconds, informative);
///    - 96: number of struct-layout values (u32), 104...: the values (i64 each): sizes, strides, alignments
///      and field offsets of every Swift struct the file holds as it is in memory (`ConnectionTable`'s entry,
///      `FlowKey`, `ConnectionState`'s representation, `DestinationCounterCell`, the engine's per-slot data),
///      so a build that lays them out differently treats the file as another layout.
/// 2. The real-server table: one 64-byte record per counter cell naming the real server that holds it, or
///    empty (see `PersistedRealServer`, encoded field by field).
/// 3. The counter cells (`DestinationCounterStore`).
/// 4. The reply index (`SharedFlowTable`, a partition per worker).
/// 5. The template directory (`SharedFlowTable`, a partition per worker).
/// 6. The flow server index (`FlowServerIndex`, `Layout.serverIndexEntries` words, shared by all workers).
/// 7. Per worker, in worker order: its connection table, its template table (`ConnectionTable`s), its
///    per-slot translation data, its FULLNAT port allocator, and the list of local addresses its ports and
///    slots are indexed by (a u32 count in a 64-byte line, then 32 bytes per address: family, then the
///    address as two big-endian u64 halves at 8 and 16).
///
/// A new file is made under a temporary name, sized with `ftruncate`, initialised (empty tables) and given
/// its header, then renamed into place: the real name never holds a half-made file. An existing file whose
/// header names another layout or version, or that is truncated or corrupt, is renamed aside and replaced by
/// a fresh one. The file is locked (`flock`) while mapped, so a second director cannot map it too.
///
/// ## Wiring a director to it
/// 1. Open it before building any snapshot: `ConnectionStateFile(path:layout:logger:)`, e.g.
///    `/dev/shm/xdirector/<interface>.state`, with the workers and capacities the director will run.
/// 2. Use `counters` as the director's counter store (snapshots must carry it: a restored engine counts in
///    it). When `restored`, give every configured real server found in `recordedRealServers()` its
///    recorded cell (match on service key and real address/port), rather than `counters.allocate()`; the
///    recorded cells are already taken, so `allocate` never hands them out. Recorded servers that are no
///    longer configured hold connections: treat them as draining with their recorded route, weight and
///    thresholds, and release their cells once they count nothing, as for any draining server.
/// 3. Each time a cell is given to a real server, or its settings (route, weight, thresholds) change, call
///    `record(cell:_:)` with the server; when a cell is released (`counters.release`), call
///    `record(cell:nil)`. A cell recorded but never released stays taken after a restart.
/// 4. Give worker `w` `partition(w)` (`Worker.init(state:)`); the file's `replies`, `templates` and
///    `servers` replace the ones the director made before. Keep the file object while any worker or engine
///    runs (they also hold it).
/// 5. When `restored` is false the file is new and empty (the first start, another layout, or a file set
///    aside with a warning): start as before, allocating cells afresh and recording them.
/// On a clean stop that should not resume connections (an operator's choice), `remove()` the file.
public final class ConnectionStateFile: @unchecked Sendable {
    /// Where directors keep their connection state: tmpfs, so it outlives the process but not a reboot.
    public static let directory = "/dev/shm/xdirector"

    /// `/dev/shm/xdirector/<instance>.connections` (the instance: the interface, unique per network namespace).
    public static func defaultPath(instance: String) -> String { "\(directory)/\(instance).connections" }

    /// Bump whenever anything the file holds changes meaning or layout (the header, a record, a table).
    /// 2: connection entries carry an occupied flag, which lookups read instead of the tags.
    /// 3: the flow server index.
    /// 4: flow keys hold ports, protocol and family as one word, which the flow hash (every table's
    /// placement) mixes whole.
    public static let layoutVersion: UInt32 = 4
    /// `XDCSTATE`.
    static let magic: UInt64 = 0x5844_4353_5441_5445
    static let headerBytes = 4096
    static let regionAlignment = 4096
    /// Byte offsets of header fields.
    enum HeaderField {
        static let magic = 0, version = 8, headerBytes = 12, checksum = 16, fileBytes = 24, layout = 32
        static let created = 88, layoutValueCount = 96, layoutValues = 104
    }

    /// What the file is sized for. A file is resumed only by a director with the same layout.
    public struct Layout: Equatable, Sendable {
        /// Workers (partitions): 1 ... 256.
        public var workers: Int
        /// Each worker's connection capacity (`ForwardingEngine`'s `connectionCapacity`).
        public var connectionsPerWorker: Int
        /// Each worker's persistence-template table capacity.
        public var templatesPerWorker: Int
        /// Each worker's partition of the reply index (rounded up to a power of two).
        public var replyEntriesPerWorker: Int
        /// Each worker's partition of the template directory (rounded up to a power of two).
        public var templateDirectoryEntriesPerWorker: Int
        /// Counter cells: the most real servers (configured and draining) at once.
        public var counterCells: Int
        /// The most FULLNAT local addresses the director uses (all services together): each worker keeps
        /// FULLNAT ports for this many, whatever the configuration says, so the file's size does not follow
        /// the configuration (a port table is about 256 KiB per address, shared out among the workers). A
        /// configuration with more must be refused by the director: addresses past this many get no ports.
        public var localAddresses: Int

        /// The defaults follow the director's sizes: a reply entry per connection, a quarter as many
        /// templates (`ConnectionTracker.defaultTemplateCapacity`) and directory entries, 65536 cells, 16
        /// local addresses.
        public init(workers: Int, connectionsPerWorker: Int, templatesPerWorker: Int? = nil,
                    replyEntriesPerWorker: Int? = nil, templateDirectoryEntriesPerWorker: Int? = nil,
                    counterCells: Int = 65536, localAddresses: Int = 16) {
            self.workers = workers
            self.connectionsPerWorker = connectionsPerWorker
            self.templatesPerWorker = templatesPerWorker ?? ConnectionTracker.defaultTemplateCapacity(for: connectionsPerWorker)
            self.replyEntriesPerWorker = replyEntriesPerWorker ?? connectionsPerWorker
            self.templateDirectoryEntriesPerWorker = templateDirectoryEntriesPerWorker ?? max(connectionsPerWorker / 4, 64)
            self.counterCells = counterCells
            self.localAddresses = localAddresses
        }

        /// Entries of the flow server index: four per connection the workers can hold, so a connection's
        /// word is rarely overwritten by a newer connection's while it lives (see `FlowServerIndex`).
        public var serverIndexEntries: Int { workers * connectionsPerWorker * 4 }

        var fields: [Int] {
            [workers, connectionsPerWorker, templatesPerWorker, replyEntriesPerWorker, templateDirectoryEntriesPerWorker,
             counterCells, localAddresses]
        }

        func validate() throws(DataplaneError) {
            func check(_ ok: Bool, _ what: String) throws(DataplaneError) {
                if !ok { throw DataplaneError("connection state layout: \(what)") }
            }
            try check((1...256).contains(workers), "workers must be 1 to 256, not \(workers)")
            try check((1...(1 << 28)).contains(connectionsPerWorker), "connections per worker out of range")
            try check((1...(1 << 28)).contains(templatesPerWorker), "templates per worker out of range")
            try check((1...(1 << 28)).contains(replyEntriesPerWorker), "reply entries per worker out of range")
            try check((1...(1 << 28)).contains(templateDirectoryEntriesPerWorker), "template directory entries out of range")
            try check((1...(1 << 24)).contains(counterCells), "counter cells out of range")
            try check((0...1024).contains(localAddresses), "local addresses must be 0 to 1024")
        }

        var description: String {
            "workers \(workers), connections \(connectionsPerWorker), templates \(templatesPerWorker), reply entries "
                + "\(replyEntriesPerWorker), directory entries \(templateDirectoryEntriesPerWorker), cells \(counterCells), "
                + "local addresses \(localAddresses) (per worker where it applies)"
        }
    }

    /// Where each region lies in the file, from the layout alone.
    struct Regions {
        struct Partition {
            var connections = 0, templates = 0, extras = 0, ports = 0, localAddresses = 0
        }
        var realServers = 0, counters = 0, replies = 0, templateDirectory = 0, servers = 0
        var partitions: [Partition] = []
        var fileBytes = 0

        static let localAddressRecordBytes = 32

        init(_ layout: Layout) {
            var offset = ConnectionStateFile.headerBytes
            func take(_ bytes: Int) -> Int {
                let start = offset
                let alignment = ConnectionStateFile.regionAlignment
                offset += (bytes + alignment - 1) / alignment * alignment
                return start
            }
            realServers = take(layout.counterCells * PersistedRealServer.recordBytes)
            counters = take(DestinationCounterStore.byteCount(capacity: layout.counterCells))
            replies = take(SharedFlowTable.byteCount(partitions: layout.workers,
                                                     entriesPerPartition: layout.replyEntriesPerWorker))
            templateDirectory = take(SharedFlowTable.byteCount(partitions: layout.workers,
                                                               entriesPerPartition: layout.templateDirectoryEntriesPerWorker))
            servers = take(FlowServerIndex.byteCount(entries: layout.serverIndexEntries))
            let slots = ConnectionTable.slotCount(capacity: layout.connectionsPerWorker)
            for _ in 0..<layout.workers {
                var partition = Partition()
                partition.connections = take(ConnectionTable.byteCount(capacity: layout.connectionsPerWorker))
                partition.templates = take(ConnectionTable.byteCount(capacity: layout.templatesPerWorker))
                partition.extras = take(MemoryLayout<ConnectionExtra>.stride * slots)
                partition.ports = take(LocalPortAllocator.byteCount(workers: layout.workers, addressCount: layout.localAddresses))
                partition.localAddresses = take(64 + layout.localAddresses * Self.localAddressRecordBytes)
                partitions.append(partition)
            }
            fileBytes = offset
        }
    }

    /// The struct layouts the file depends on (see the type's notes).
    static var structLayout: [Int] {
        var values = [PersistedRealServer.recordBytes, headerBytes, regionAlignment, Regions.localAddressRecordBytes]
        values += ConnectionTable.persistedLayout
        values += DestinationCounterStore.persistedLayout
        values += [MemoryLayout<ConnectionExtra>.size, MemoryLayout<ConnectionExtra>.stride,
                   MemoryLayout<ConnectionExtra>.alignment]
        let extraFields: [PartialKeyPath<ConnectionExtra>] = [\.replyEntry, \.localAddress, \.localPort, \.expires]
        values += extraFields.map { MemoryLayout<ConnectionExtra>.offset(of: $0) ?? -1 }
        values.append(SharedFlowTable.byteCount(partitions: 1, entriesPerPartition: 1))
        values.append(FlowServerIndex.byteCount(entries: 1))
        values.append(LocalPortAllocator.byteCount(workers: 1, addressCount: 1))
        return values
    }

    public let path: String
    public let layout: Layout
    /// True when the file was found with this layout and resumed; false when it was made now (empty).
    public let restored: Bool
    /// The counter cells, over the file: the director's counter store. The cells recorded as held (see
    /// `recordedRealServers`) are taken; `allocate` hands out the others.
    public let counters: DestinationCounterStore
    /// The reply index of NAT and FULLNAT connections, over the file (a partition per worker).
    public let replies: ReplyIndex
    /// The persistence-template directory, over the file (a partition per worker).
    public let templates: SharedFlowTable
    /// Each DR, TUN and NAT connection's real server by flow, over the file (shared by all workers).
    public let servers: FlowServerIndex

    private let descriptor: Int32
    private let base: UnsafeMutableRawPointer
    private let regions: Regions

    /// Maps the file at `path` (its directory is made, mode 0700, where missing; a new file is mode 0600).
    /// Resumes it when its header names this layout (`restored` true). A file with another layout or
    /// version, a truncated or corrupt one, or one that is not a state file is renamed aside (`path` +
    /// `.unknown-<unix time>`) with a warning on `logger` saying why, and a fresh one is made. Throws when
    /// the layout is out of range, the file is locked by another process, or the file cannot be made,
    /// renamed or mapped.
    public init(path: String, layout: Layout, logger: Logger) throws(DataplaneError) {
        try layout.validate()
        let regions = Regions(layout)
        self.path = path
        self.layout = layout
        self.regions = regions
        try Self.makeDirectory(of: path)

        var descriptor = open(path, O_RDWR | O_CLOEXEC)
        if descriptor >= 0 {
            if let error = Self.lock(descriptor, path) {
                close(descriptor)
                throw error
            }
            if let reason = Self.problem(descriptor, layout: layout, regions: regions) {
                close(descriptor)
                descriptor = -1
                let aside = try Self.setAside(path)
                logger.warning("connection state file \(path) set aside as \(aside): \(reason); starting with no connections")
            }
        } else if errno != ENOENT {
            throw DataplaneError("cannot open the connection state file \(path)", errno: errno)
        }

        if descriptor >= 0 {
            guard let mapped = Self.map(descriptor, bytes: regions.fileBytes) else {
                let code = errno
                close(descriptor)
                throw DataplaneError("cannot map the connection state file \(path)", errno: code)
            }
            self.descriptor = descriptor
            base = mapped
            restored = true
        } else {
            (self.descriptor, base) = try Self.create(path, layout: layout, regions: regions)
            restored = false
        }

        // Every region holds a valid (empty or resumed) table: `create` initialised the new ones.
        // The cells the director will give back to their servers (or drain) are taken; a record that does
        // not decode names no server the director could release its cell for, so that cell is free.
        let taken = Set(Self.decodeRealServers(base + regions.realServers, cells: layout.counterCells).keys)
        counters = DestinationCounterStore(capacity: layout.counterCells, memory: base + regions.counters, restoring: true,
                                           taken: taken)
        // A new file's shared tables are holes, blank as they are; a resumed one's are searched for entries
        // left half-written, skipping the holes (never written: reading them would fill them with pages).
        let opened = self.descriptor, restored = self.restored
        func holds(_ region: Int) -> (Int, Int) -> Bool {
            { offset, length in Self.holdsData(opened, from: region + offset, length: length) }
        }
        replies = ReplyIndex(table: SharedFlowTable(
            partitions: layout.workers, entriesPerPartition: layout.replyEntriesPerWorker, memory: base + regions.replies,
            restoring: restored, zeroed: true, mayHoldData: holds(regions.replies)))
        templates = SharedFlowTable(
            partitions: layout.workers, entriesPerPartition: layout.templateDirectoryEntriesPerWorker,
            memory: base + regions.templateDirectory, restoring: restored, zeroed: true,
            mayHoldData: holds(regions.templateDirectory))
        // Any word is valid as found (a single atomic store writes it): nothing to check on resuming.
        servers = FlowServerIndex(entries: layout.serverIndexEntries, memory: base + regions.servers,
                                  restoring: restored, zeroed: true)
    }

    /// Whether the file has data (not a hole) in `length` bytes from `offset`; true when it cannot tell.
    private static func holdsData(_ descriptor: Int32, from offset: Int, length: Int) -> Bool {
        let seekData: Int32 = 3  // SEEK_DATA (Linux; Glibc hides it without _GNU_SOURCE)
        let data = lseek(descriptor, off_t(offset), seekData)
        if data < 0 { return errno != ENXIO }  // ENXIO: no data from there to the end
        return Int(data) < offset + length
    }

    deinit {
        munmap(base, regions.fileBytes)
        close(descriptor)
    }

    /// The raw memory of worker `worker`'s tables, per-slot data and ports, for `ForwardingEngine.init(state:)`
    /// or `Worker.init(state:)`. Give each partition to one engine at a time.
    public func partition(_ worker: Int) -> WorkerStateMemory {
        precondition(worker >= 0 && worker < layout.workers, "no such worker in the connection state file")
        let regions = self.regions.partitions[worker]
        return WorkerStateMemory(file: self, worker: worker, connections: base + regions.connections,
                                 templates: base + regions.templates, extras: base + regions.extras,
                                 ports: base + regions.ports, localAddresses: base + regions.localAddresses)
    }

    /// Every cell recorded as held and the real server holding it (empty for a new file). Records that do
    /// not decode (a torn write) are left out.
    public func recordedRealServers() -> [UInt32: PersistedRealServer] {
        Self.decodeRealServers(base + regions.realServers, cells: layout.counterCells)
    }

    private static func decodeRealServers(_ table: UnsafeMutableRawPointer, cells: Int) -> [UInt32: PersistedRealServer] {
        var result: [UInt32: PersistedRealServer] = [:]
        for cell in 0..<cells {
            if let server = PersistedRealServer(decoding: table + cell * PersistedRealServer.recordBytes) {
                result[UInt32(cell)] = server
            }
        }
        return result
    }

    /// Records which real server holds `cell` (nil: the cell was released), so a restarted director gives
    /// every real server its old cell. The control thread calls it whenever it gives a cell, changes the
    /// holder's settings, or releases one.
    public func record(cell: UInt32, _ server: PersistedRealServer?) {
        precondition(Int(cell) < layout.counterCells, "counter cell out of range")
        let record = base + regions.realServers + Int(cell) * PersistedRealServer.recordBytes
        record.storeBytes(of: 0, as: UInt8.self)  // not held while it is rewritten
        guard let server else { return }
        server.encode(into: record)
        record.storeBytes(of: 1, as: UInt8.self)
    }

    /// Deletes the file (its mapping stays valid until this object goes): for tests and clean-up.
    public func remove() {
        unlink(path)
    }

    // MARK: - Opening

    private static func makeDirectory(of path: String) throws(DataplaneError) {
        guard let slash = path.lastIndex(of: "/"), slash != path.startIndex else { return }
        if let failure = Directories.make(String(path[..<slash]), mode: 0o700) {
            throw DataplaneError("cannot make the directory \(failure.directory) for the connection state file", errno: failure.errno)
        }
    }

    /// Takes the file's lock; the error when another process holds it (or locking failed).
    private static func lock(_ descriptor: Int32, _ path: String) -> DataplaneError? {
        guard flock(descriptor, LOCK_EX | LOCK_NB) != 0 else { return nil }
        if errno == EWOULDBLOCK { return DataplaneError("the connection state file \(path) is in use by another process") }
        return DataplaneError("cannot lock the connection state file \(path)", errno: errno)
    }

    private static func map(_ descriptor: Int32, bytes: Int) -> UnsafeMutableRawPointer? {
        let mapped = mmap(nil, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, descriptor, 0)
        guard let mapped, mapped != MAP_FAILED else { return nil }
        // Huge pages for the tables where the host gives them to shared memory (tmpfs THP, `shmem_enabled`
        // "advise" or "always"): with many connections a lookup then costs a cache miss without a page walk.
        _ = madvise(mapped, bytes, MADV_HUGEPAGE)
        return mapped
    }

    /// Why the open file cannot be resumed with `layout`, or nil when it can.
    static func problem(_ descriptor: Int32, layout: Layout, regions: Regions) -> String? {
        var status = stat()
        guard fstat(descriptor, &status) == 0 else { return "cannot read its size (errno \(errno))" }
        let size = Int(status.st_size)
        if size < headerBytes { return "truncated: \(size) bytes, shorter than its \(headerBytes)-byte header" }
        var header = [UInt8](repeating: 0, count: headerBytes)
        let read = header.withUnsafeMutableBytes { pread(descriptor, $0.baseAddress, headerBytes, 0) }
        guard read == headerBytes else { return "cannot read its header" }
        return header.withUnsafeBytes { raw -> String? in
            let bytes = raw.baseAddress!
            if load64(bytes, HeaderField.magic) != magic { return "not a connection state file (unknown magic number)" }
            let version = load32(bytes, HeaderField.version)
            if version != layoutVersion {
                return "layout version \(version), this director uses version \(layoutVersion)"
            }
            if Int(load32(bytes, HeaderField.headerBytes)) != headerBytes || load64(bytes, HeaderField.checksum) != checksum(bytes) {
                return "corrupt header (checksum mismatch)"
            }
            let recorded = (0..<layout.fields.count).map { Int(truncatingIfNeeded: load64(bytes, HeaderField.layout + 8 * $0)) }
            if recorded != layout.fields {
                let found = Layout(workers: recorded[0], connectionsPerWorker: recorded[1], templatesPerWorker: recorded[2],
                                   replyEntriesPerWorker: recorded[3], templateDirectoryEntriesPerWorker: recorded[4],
                                   counterCells: recorded[5], localAddresses: recorded[6])
                return "made for another layout (\(found.description); this director: \(layout.description))"
            }
            let count = Int(load32(bytes, HeaderField.layoutValueCount))
            let values = count <= maxLayoutValues
                ? (0..<count).map { Int(truncatingIfNeeded: load64(bytes, HeaderField.layoutValues + 8 * $0)) } : []
            if values != structLayout {
                return "written by a build that lays out its tables differently (struct sizes or offsets differ)"
            }
            let fileBytes = Int(truncatingIfNeeded: load64(bytes, HeaderField.fileBytes))
            if fileBytes != regions.fileBytes { return "corrupt header (its size \(fileBytes) does not fit its layout)" }
            if size < fileBytes { return "truncated: \(size) of \(fileBytes) bytes" }
            if size > fileBytes { return "\(size) bytes, longer than the \(fileBytes) its layout needs" }
            return nil
        }
    }

    static var maxLayoutValues: Int { (headerBytes - HeaderField.layoutValues) / 8 }

    /// Renames the file at `path` aside; returns the new name.
    private static func setAside(_ path: String) throws(DataplaneError) -> String {
        let stem = "\(path).unknown-\(time(nil))"
        var aside = stem
        var attempt = 0
        while access(aside, F_OK) == 0 {
            attempt += 1
            aside = "\(stem)-\(attempt)"
        }
        guard rename(path, aside) == 0 else {
            throw DataplaneError("cannot set the connection state file \(path) aside", errno: errno)
        }
        return aside
    }

    /// Makes, initialises and maps a new file, renamed into place once complete.
    private static func create(_ path: String, layout: Layout, regions: Regions)
        throws(DataplaneError) -> (Int32, UnsafeMutableRawPointer) {
        let temporary = "\(path).new-\(getpid())"
        unlink(temporary)
        let descriptor = open(temporary, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard descriptor >= 0 else {
            throw DataplaneError("cannot create the connection state file \(temporary)", errno: errno)
        }
        func fail(_ what: String, _ code: Int32) -> DataplaneError {
            close(descriptor)
            unlink(temporary)
            return DataplaneError(what, errno: code)
        }
        guard flock(descriptor, LOCK_EX | LOCK_NB) == 0 else { throw fail("cannot lock \(temporary)", errno) }
        guard ftruncate(descriptor, off_t(regions.fileBytes)) == 0 else {
            throw fail("cannot size the connection state file \(temporary) to \(regions.fileBytes) bytes", errno)
        }
        guard let base = map(descriptor, bytes: regions.fileBytes) else {
            throw fail("cannot map the connection state file \(temporary)", errno)
        }
        // New pages read as zero: the real-server table, counter cells, shared tables and port tables are
        // blank as they are. Connection tables and per-slot data have other blank states: made here, so the
        // file never holds a table that was not initialised.
        for partition in regions.partitions {
            _ = ConnectionTable(capacity: layout.connectionsPerWorker, memory: base + partition.connections, restoring: false)
            _ = ConnectionTable(capacity: layout.templatesPerWorker, memory: base + partition.templates, restoring: false)
            let slots = ConnectionTable.slotCount(capacity: layout.connectionsPerWorker)
            (base + partition.extras).bindMemory(to: ConnectionExtra.self, capacity: slots)
                .initialize(repeating: ConnectionExtra(), count: slots)
        }
        writeHeader(base, layout: layout, regions: regions)
        guard rename(temporary, path) == 0 else {
            let code = errno
            munmap(base, regions.fileBytes)
            throw fail("cannot move the connection state file into place at \(path)", code)
        }
        return (descriptor, base)
    }

    private static func writeHeader(_ base: UnsafeMutableRawPointer, layout: Layout, regions: Regions) {
        base.initializeMemory(as: UInt8.self, repeating: 0, count: headerBytes)
        store64(base, HeaderField.magic, magic)
        store32(base, HeaderField.version, layoutVersion)
        store32(base, HeaderField.headerBytes, UInt32(headerBytes))
        store64(base, HeaderField.fileBytes, UInt64(regions.fileBytes))
        for (index, value) in layout.fields.enumerated() { store64(base, HeaderField.layout + 8 * index, UInt64(value)) }
        store64(base, HeaderField.created, UInt64(max(time(nil), 0)))
        let values = structLayout
        precondition(values.count <= maxLayoutValues, "too many struct layout values for the header")
        store32(base, HeaderField.layoutValueCount, UInt32(values.count))
        for (index, value) in values.enumerated() {
            store64(base, HeaderField.layoutValues + 8 * index, UInt64(bitPattern: Int64(value)))
        }
        store64(base, HeaderField.checksum, checksum(UnsafeRawPointer(base)))
    }

    /// FNV-1a 64 over the header, its checksum field read as zero.
    static func checksum(_ header: UnsafeRawPointer) -> UInt64 {
        var hash: UInt64 = 0xCBF2_9CE4_8422_2325
        for offset in 0..<headerBytes {
            let byte = (HeaderField.checksum..<HeaderField.checksum + 8).contains(offset) ? 0 : header.load(fromByteOffset: offset, as: UInt8.self)
            hash = (hash ^ UInt64(byte)) &* 0x0000_0100_0000_01B3
        }
        return hash
    }

    static func load64(_ bytes: UnsafeRawPointer, _ offset: Int) -> UInt64 {
        UInt64(bigEndian: bytes.loadUnaligned(fromByteOffset: offset, as: UInt64.self))
    }

    static func load32(_ bytes: UnsafeRawPointer, _ offset: Int) -> UInt32 {
        UInt32(bigEndian: bytes.loadUnaligned(fromByteOffset: offset, as: UInt32.self))
    }

    static func load16(_ bytes: UnsafeRawPointer, _ offset: Int) -> UInt16 {
        UInt16(bigEndian: bytes.loadUnaligned(fromByteOffset: offset, as: UInt16.self))
    }

    static func store64(_ bytes: UnsafeMutableRawPointer, _ offset: Int, _ value: UInt64) {
        bytes.storeBytes(of: value.bigEndian, toByteOffset: offset, as: UInt64.self)
    }

    static func store32(_ bytes: UnsafeMutableRawPointer, _ offset: Int, _ value: UInt32) {
        bytes.storeBytes(of: value.bigEndian, toByteOffset: offset, as: UInt32.self)
    }

    static func store16(_ bytes: UnsafeMutableRawPointer, _ offset: Int, _ value: UInt16) {
        bytes.storeBytes(of: value.bigEndian, toByteOffset: offset, as: UInt16.self)
    }
}

/// One worker's share of a `ConnectionStateFile`: where its connection and template tables, per-slot
/// translation data, FULLNAT ports and local-address list lie. Hand it to `ForwardingEngine.init(state:)`
/// (through `Worker.init(state:)`); it holds the file, so the mapping outlives the engine.
public struct WorkerStateMemory: @unchecked Sendable {
    /// The file the memory lies in (kept mapped while this value or an engine over it lives).
    public let file: ConnectionStateFile
    /// The worker (partition) this memory belongs to.
    public let worker: Int
    let connections: UnsafeMutableRawPointer
    let templates: UnsafeMutableRawPointer
    let extras: UnsafeMutableRawPointer
    let ports: UnsafeMutableRawPointer
    let localAddresses: UnsafeMutableRawPointer

    /// The engine's connection capacity: the file's connections per worker.
    public var connectionCapacity: Int { file.layout.connectionsPerWorker }
    public var templateCapacity: Int { file.layout.templatesPerWorker }
    /// Local addresses the worker keeps FULLNAT ports for.
    public var localAddressCapacity: Int { file.layout.localAddresses }

    /// The local addresses the worker's ports and slots were indexed by when it last recorded them.
    func recordedLocalAddresses() -> [IPAddress] {
        let count = min(Int(ConnectionStateFile.load32(localAddresses, 0)), localAddressCapacity)
        var result: [IPAddress] = []
        for index in 0..<count {
            let record = UnsafeRawPointer(localAddresses + 64 + index * ConnectionStateFile.Regions.localAddressRecordBytes)
            let hi = ConnectionStateFile.load64(record, 8), lo = ConnectionStateFile.load64(record, 16)
            switch record.load(as: UInt8.self) {
            case 4: result.append(.v4(UInt32(truncatingIfNeeded: lo)))
            case 6: result.append(.v6(hi: hi, lo: lo))
            default: return []  // torn: nothing can be followed
            }
        }
        return result
    }

    /// Records the local addresses (the first `localAddressCapacity`) the worker's ports and slots now use.
    func recordLocalAddresses(_ addresses: UnsafeBufferPointer<IPAddress>) {
        let count = min(addresses.count, localAddressCapacity)
        ConnectionStateFile.store32(localAddresses, 0, 0)
        for index in 0..<count {
            let record = localAddresses + 64 + index * ConnectionStateFile.Regions.localAddressRecordBytes
            let (hi, lo) = ReplyIndexView.words(addresses[index])
            record.storeBytes(of: addresses[index].family.rawValue, as: UInt8.self)
            ConnectionStateFile.store64(record, 8, hi)
            ConnectionStateFile.store64(record, 16, lo)
        }
        ConnectionStateFile.store32(localAddresses, 0, UInt32(count))
    }
}

/// A real server holding a counter cell, as a `ConnectionStateFile` records it: enough for a restarted
/// director to give the server its old cell, or to drain it with its last settings when it is no longer
/// configured.
///
/// Stored as a 64-byte record, field by field, multi-byte fields big-endian: 0 held (u8, 1; 0 = empty),
/// 1 service family (4, 6), 2 service protocol, 4 service port (u16), 8 and 16 service address halves
/// (u64, an IPv4 address in the low 32 bits of the second), 24 method (0 direct routing, 1 tunnel,
/// 2 masquerading, 3 FULLNAT), 25 real address family, 26 tunnel type (0 IPIP, 1 GUE, 2 GRE), 27 tunnel
/// checksum (0, 1), 28 real port (u16), 30 tunnel port (u16), 32 and 40 real address halves, 48 weight
/// (i32), 52 upper threshold (u32), 56 lower threshold (u32), 60 reserved (0).
public struct PersistedRealServer: Equatable, Sendable {
    public var service: ServiceKey
    public var route: DestinationRoute
    public var weight: Int32
    public var upperThreshold: UInt32
    public var lowerThreshold: UInt32

    public init(service: ServiceKey, route: DestinationRoute, weight: Int32, upperThreshold: UInt32 = 0,
                lowerThreshold: UInt32 = 0) {
        self.service = service; self.route = route; self.weight = weight
        self.upperThreshold = upperThreshold; self.lowerThreshold = lowerThreshold
    }

    static let recordBytes = 64

    private static func address(_ family: UInt8, _ hi: UInt64, _ lo: UInt64) -> IPAddress? {
        switch family {
        case 4: return .v4(UInt32(truncatingIfNeeded: lo))
        case 6: return .v6(hi: hi, lo: lo)
        default: return nil
        }
    }

    /// Writes every field but the held byte (the caller sets it last).
    func encode(into record: UnsafeMutableRawPointer) {
        record.initializeMemory(as: UInt8.self, repeating: 0, count: Self.recordBytes)
        record.storeBytes(of: service.endpoint.address.family.rawValue, toByteOffset: 1, as: UInt8.self)
        record.storeBytes(of: service.proto.number, toByteOffset: 2, as: UInt8.self)
        ConnectionStateFile.store16(record, 4, service.endpoint.port)
        let (serviceHi, serviceLo) = ReplyIndexView.words(service.endpoint.address)
        ConnectionStateFile.store64(record, 8, serviceHi)
        ConnectionStateFile.store64(record, 16, serviceLo)
        record.storeBytes(of: route.method.rawValue, toByteOffset: 24, as: UInt8.self)
        record.storeBytes(of: route.address.family.rawValue, toByteOffset: 25, as: UInt8.self)
        record.storeBytes(of: route.tunnel.type.rawValue, toByteOffset: 26, as: UInt8.self)
        record.storeBytes(of: route.tunnel.checksum ? 1 : 0, toByteOffset: 27, as: UInt8.self)
        ConnectionStateFile.store16(record, 28, route.port)
        ConnectionStateFile.store16(record, 30, route.tunnel.port)
        let (hi, lo) = ReplyIndexView.words(route.address)
        ConnectionStateFile.store64(record, 32, hi)
        ConnectionStateFile.store64(record, 40, lo)
        ConnectionStateFile.store32(record, 48, UInt32(bitPattern: weight))
        ConnectionStateFile.store32(record, 52, upperThreshold)
        ConnectionStateFile.store32(record, 56, lowerThreshold)
    }

    /// The server a held record names; nil for an empty record or one that does not decode.
    init?(decoding record: UnsafeRawPointer) {
        typealias File = ConnectionStateFile
        guard record.load(as: UInt8.self) == 1,
              let serviceAddress = Self.address(record.load(fromByteOffset: 1, as: UInt8.self),
                                                File.load64(record, 8), File.load64(record, 16)),
              let proto = L4Protocol(number: record.load(fromByteOffset: 2, as: UInt8.self)),
              let method = ForwardingMethod(rawValue: record.load(fromByteOffset: 24, as: UInt8.self)),
              let realAddress = Self.address(record.load(fromByteOffset: 25, as: UInt8.self),
                                             File.load64(record, 32), File.load64(record, 40)),
              let tunnelType = TunnelType(rawValue: record.load(fromByteOffset: 26, as: UInt8.self))
        else { return nil }
        service = ServiceKey(proto: proto, address: serviceAddress, port: File.load16(record, 4))
        route = DestinationRoute(method: method, address: realAddress, port: File.load16(record, 28),
                                 tunnel: TunnelParameters(type: tunnelType, port: File.load16(record, 30),
                                                          checksum: record.load(fromByteOffset: 27, as: UInt8.self) != 0))
        weight = Int32(bitPattern: File.load32(record, 48))
        upperThreshold = File.load32(record, 52)
        lowerThreshold = File.load32(record, 56)
    }
}
