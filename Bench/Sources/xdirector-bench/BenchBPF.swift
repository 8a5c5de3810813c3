import CXDP
import Foundation

/// Constants of Bench/bpf/bench_shared.h, repeated for Swift (the header is not a Swift module).
enum BenchBPF {
    static let rx: UInt32 = 0, rxBytes: UInt32 = 1, ok: UInt32 = 2, bad: UInt32 = 3, probes: UInt32 = 4, maxNanoseconds: UInt32 = 5
    /// Frames that matched expected entry i are counted at `hits + i`.
    static let hits: UInt32 = 6
    static let counterCount: UInt32 = 14
    static let latencyBuckets: UInt32 = 8192
    static let expectSlots: UInt32 = 8
    static let probeMagic: UInt32 = 0x5042_4458
}

struct BenchError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// One of the benchmark's embedded BPF programs, opened and loaded (not attached), with its maps.
final class LoadedProgram {
    let object: OpaquePointer
    let programFD: Int32

    init(base64 elf: String, program: String) throws {
        guard let bytes = Data(base64Encoded: elf) else { throw BenchError("the embedded BPF object \(program) is corrupt") }
        let opened: OpaquePointer? = bytes.withUnsafeBytes { raw in
            cxdp_object_open_mem(raw.baseAddress, raw.count, program)
        }
        guard let opened else { throw BenchError("cannot open the BPF object \(program)") }
        guard bpf_object__load(opened) == 0,
              let found = bpf_object__find_program_by_name(opened, program) else {
            bpf_object__close(opened)
            throw BenchError("the kernel refused the BPF program \(program)")
        }
        object = opened
        programFD = bpf_program__fd(found)
    }

    deinit { bpf_object__close(object) }

    func mapFD(_ name: String) -> Int32 {
        guard let map = bpf_object__find_map_by_name(object, name) else { return -1 }
        return bpf_map__fd(map)
    }
}

/// One of the benchmark's embedded XDP programs, loaded and attached to an interface of the calling
/// process's network namespace; `close()` detaches it only if it is still the one attached.
final class AttachedProgram {
    let interfaceIndex: Int32
    private var loaded: LoadedProgram?
    private var flags: UInt32 = 0

    init(base64 elf: String, program: String, interface: String) throws {
        interfaceIndex = Int32(if_nametoindex(interface))
        guard interfaceIndex > 0 else { throw BenchError("no interface \(interface)") }
        let loaded = try LoadedProgram(base64: elf, program: program)
        // Native first (veth has it); generic where the driver has none.
        for mode in [UInt32(XDP_FLAGS_DRV_MODE), UInt32(XDP_FLAGS_SKB_MODE)] {
            if bpf_xdp_attach(interfaceIndex, loaded.programFD, mode, nil) == 0 {
                flags = mode
                self.loaded = loaded
                return
            }
        }
        throw BenchError("cannot attach \(program) to \(interface)")
    }

    deinit { close() }

    var attachedNatively: Bool { flags == UInt32(XDP_FLAGS_DRV_MODE) }

    func mapFD(_ name: String) -> Int32 { loaded?.mapFD(name) ?? -1 }

    func close() {
        guard let loaded else { return }
        _ = cxdp_xdp_detach(interfaceIndex, flags, loaded.programFD)
        self.loaded = nil
    }

    /// Sums a per-CPU array's entries over CPUs (or takes the maximum, for high-water marks).
    static func perCPU(fd: Int32, keys: Range<UInt32>, maximum: Set<UInt32> = []) -> [UInt64] {
        let cpus = Int(max(libbpf_num_possible_cpus(), 1))
        var values = [UInt64](repeating: 0, count: cpus)
        return keys.map { index in
            var key = index
            guard bpf_map_lookup_elem(fd, &key, &values) == 0 else { return 0 }
            return maximum.contains(index) ? (values.max() ?? 0) : values.reduce(0, &+)
        }
    }

    static func update(fd: Int32, key: UInt32, value: UInt64) -> Bool {
        var key = key, value = value
        return bpf_map_update_elem(fd, &key, &value, UInt64(BPF_ANY)) == 0
    }

    static func update32(fd: Int32, key: UInt32, value: UInt32) -> Bool {
        var key = key, value = value
        return bpf_map_update_elem(fd, &key, &value, UInt64(BPF_ANY)) == 0
    }
}

/// Blocks SIGINT and SIGTERM so a helper process can take them synchronously between units of work.
struct StopSignals {
    private var set = sigset_t()

    init() {
        signal(SIGINT, SIG_DFL)
        signal(SIGTERM, SIG_DFL)
        sigemptyset(&set)
        sigaddset(&set, SIGINT)
        sigaddset(&set, SIGTERM)
        pthread_sigmask(SIG_BLOCK, &set, nil)
    }

    /// Waits up to `milliseconds` for SIGINT or SIGTERM; true when one came.
    mutating func wait(milliseconds: Int) -> Bool {
        var timeout = timespec(tv_sec: milliseconds / 1000, tv_nsec: (milliseconds % 1000) * 1_000_000)
        return sigtimedwait(&set, nil, &timeout) > 0
    }
}

/// CLOCK_MONOTONIC in nanoseconds: the clock bpf_ktime_get_ns() reads, so probes compare across the two.
@inline(__always)
func monotonicNanoseconds() -> UInt64 {
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC, &now)
    return UInt64(now.tv_sec) &* 1_000_000_000 &+ UInt64(now.tv_nsec)
}

/// A small text file of numbers that a helper rewrites atomically (write + rename) and the bench reads:
/// "<monotonic ns> <value>...". Only two readings matter, around the measured window.
enum StatsFile {
    static func write(_ path: String, _ values: [UInt64]) {
        let line = ([monotonicNanoseconds()] + values).map(String.init).joined(separator: " ") + "\n"
        let temporary = path + ".tmp"
        guard FileManager.default.createFile(atPath: temporary, contents: Data(line.utf8)) else { return }
        rename(temporary, path)
    }

    /// (time in ns, values), or nil when the file is not there yet.
    static func read(_ path: String) -> (UInt64, [UInt64])? {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return nil }
        let numbers = text.split(whereSeparator: { $0 == " " || $0 == "\n" }).compactMap { UInt64($0) }
        guard let first = numbers.first else { return nil }
        return (first, Array(numbers.dropFirst()))
    }
}
