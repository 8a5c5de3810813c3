// Compiled into the fuzz builds' partial Dataplane and Control modules: in the package, other files of those
// modules import Foundation, whose members the included files use.
import Foundation
