import Foundation
import PackagePlugin

/// Compiles the BPF programs a target carries with the toolchain's clang (`-target bpf`) during
/// `swift build`, and embeds each object in the target as a generated Swift source, so binaries need no
/// path to find them. Which programs a target carries follows from its name:
///   Dataplane → bpf/*.bpf.c (the director's XDP program), Topology → bpf/lab/*.bpf.c (helpers for the
///   labs' real servers), any other target → Bench/bpf/*.bpf.c (the benchmark's sink and reflector).
/// Each `NAME.bpf.c` becomes `EmbeddedBPFObjects.NAME` (base64 of the ELF object; `-` and `.` become `_`).
@main
struct BPFObjectPlugin: BuildToolPlugin {
    func createBuildCommands(context: PluginContext, target: Target) throws -> [Command] {
        let root = context.package.directoryURL
        let programs: URL
        switch target.name {
        case "Dataplane": programs = root.appending(path: "bpf")
        case "Topology": programs = root.appending(path: "bpf/lab")
        default: programs = root.appending(path: "Bench/bpf")
        }
        let bpfDirectory = root.appending(path: "bpf")
        let sharedInclude = root.appending(path: "Sources/CXDirectorShared/include")
        let files = { (directory: URL) throws -> [URL] in
            try FileManager.default.contentsOfDirectory(at: directory, includingPropertiesForKeys: nil)
        }
        let sources = try files(programs).filter { $0.lastPathComponent.hasSuffix(".bpf.c") }
            .sorted { $0.lastPathComponent < $1.lastPathComponent }
        let headers = try Set([bpfDirectory, sharedInclude, programs]).flatMap { try files($0) }
            .filter { $0.pathExtension == "h" }
        let output = context.pluginWorkDirectoryURL.appending(path: "EmbeddedBPFObjects.swift")
        let clang = try context.tool(named: "clang").url
        let includes = [sharedInclude.path, bpfDirectory.path, programs.path]
        return [
            .buildCommand(
                displayName: "Compiling and embedding the BPF programs of \(target.name)",
                executable: try context.tool(named: "BPFEmbed").url,
                arguments: [clang.path, output.path] + includes.flatMap { ["-I", $0] } + sources.map(\.path),
                inputFiles: sources + headers,
                outputFiles: [output]
            ),
        ]
    }
}
