import CXDP
import CXDirectorShared
import Glibc

/// The XDP program attached to an interface, as a starting director sees it before touching anything: whose
/// it is decides whether the start is refused (a foreign program, or a live director's) or takes over
/// (a program whose director died).
public struct AttachedProgram: Sendable {
    public var id: UInt32
    public var name: String
    public var mode: XDPProgram.AttachMode
    /// The director recorded in the program's `director` map; nil when it has none (not a director's program).
    public var owner: ProcessIdentity?

    /// The program on interface `index`, or nil when none is attached.
    public static func inspect(interfaceIndex index: UInt32) -> AttachedProgram? {
        var id: UInt32 = 0
        var attachMode: UInt8 = 0
        guard cxdp_xdp_query(Int32(index), &id, &attachMode) == 0, id != 0 else { return nil }
        let mode: XDPProgram.AttachMode = attachMode == UInt8(XDP_ATTACHED_SKB) ? .generic : .native
        let fd = bpf_prog_get_fd_by_id(id)
        guard fd >= 0 else { return AttachedProgram(id: id, name: "?", mode: mode, owner: nil) }
        defer { close(fd) }
        var mapIDs = [UInt32](repeating: 0, count: 64)
        var info = bpf_prog_info()
        var length = UInt32(MemoryLayout<bpf_prog_info>.size)
        let read = mapIDs.withUnsafeMutableBufferPointer { ids -> Bool in
            info.nr_map_ids = UInt32(ids.count)
            info.map_ids = UInt64(UInt(bitPattern: ids.baseAddress))
            return bpf_obj_get_info_by_fd(fd, &info, &length) == 0
        }
        guard read else { return AttachedProgram(id: id, name: "?", mode: mode, owner: nil) }
        let name = withUnsafeBytes(of: info.name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        let owner = name == XD_PROG_NAME
            ? mapIDs.prefix(Int(min(info.nr_map_ids, UInt32(mapIDs.count)))).lazy.compactMap(Self.director).first
            : nil
        return AttachedProgram(id: id, name: name, mode: mode, owner: owner)
    }

    /// The owner recorded in map `id` when it is a director's `director` map.
    private static func director(mapID id: UInt32) -> ProcessIdentity? {
        let fd = bpf_map_get_fd_by_id(id)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var info = bpf_map_info()
        var length = UInt32(MemoryLayout<bpf_map_info>.size)
        guard bpf_obj_get_info_by_fd(fd, &info, &length) == 0,
              withUnsafeBytes(of: info.name, { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }) == XD_MAP_DIRECTOR,
              info.value_size == UInt32(MemoryLayout<xd_director>.size) else { return nil }
        var key: UInt32 = 0
        var value = xd_director()
        guard bpf_map_lookup_elem(fd, &key, &value) == 0, value.pid != 0 else { return nil }
        return ProcessIdentity(pid: Int32(bitPattern: value.pid), startTime: value.start_time)
    }
}
