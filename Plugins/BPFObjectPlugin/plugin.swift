import Foundation
import PackagePlugin

/// Compiles `bpf/xdirector.bpf.c` with the toolchain's clang (`-target bpf`) during `swift build`, and
/// embeds the object in the target as a generated Swift source, so the binary needs no path to find it.
@main
struct BPFObjectPlugin: BuildToolPlugin {
    func createBuildCommands(context: PluginContext, target: Target) throws -> [Command] {
        let root = context.package.directoryURL
        let bpfDirectory = root.appending(path: "bpf")
        let sharedInclude = root.appending(path: "Sources/CXDirectorShared/include")
        let source = bpfDirectory.appending(path: "xdirector.bpf.c")
        let headers = try [bpfDirectory, sharedInclude].flatMap { directory in
            try FileManager.default.contentsOfDirectory(at: directory, includingPropertiesForKeys: nil)
                .filter { $0.pathExtension == "h" }
        }
        let output = context.pluginWorkDirectoryURL.appending(path: "EmbeddedBPFObject.swift")
        let clang = try context.tool(named: "clang").url
        return [
            .buildCommand(
                displayName: "Compiling and embedding the XDP program",
                executable: try context.tool(named: "BPFEmbed").url,
                arguments: [clang.path, source.path, output.path, sharedInclude.path, bpfDirectory.path],
                inputFiles: [source] + headers,
                outputFiles: [output]
            ),
        ]
    }
}
